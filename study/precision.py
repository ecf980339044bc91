"""Mixed precision and memory layout for the attacks' model queries (the robustness evaluator's
``precision`` and ``channels_last``).

The model runs under ``torch.autocast`` in bfloat16 or float16, its logits returned in float32,
so every attack still works on float32 inputs, steps, projections and losses: only the
model's own arithmetic is lower precision. Off by default: it changes a point's logits in their
last bits, and with them which points break on the edge of an eps (benchmarks/throughput.py
measures the speed and the robust accuracy it costs, per device).

``channels_last`` stores image batches and the model's 4-d weights in NHWC order, the layout
tensor-core convolutions want (with bf16 or fp16, the faster GPU kernels). The model computes
the same function; only the kernels differ, so logits may differ in their last bits, as on
another device. It is how an evaluation runs, not what it computes: not in the row keys.
"""

from __future__ import annotations

import torch
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Autocast(nn.Module):
    """``model`` queried under autocast to ``dtype``; logits in float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype
        self.objective = getattr(model, "objective", "cross_entropy")  # study.objectives reads it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x).float()


class ChannelsLast(nn.Module):
    """``model`` with its weights in channels-last memory (converted in place, once) and every
    4-d input batch made channels-last before it runs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)
        self.objective = getattr(model, "objective", "cross_entropy")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)


def queried(model: nn.Module, precision: str, channels_last: bool = False) -> nn.Module:
    """The model as the attacks query it at ``precision`` (float32: as it is), channels-last if asked."""
    model = ChannelsLast(model) if channels_last else model
    return model if precision == "float32" else Autocast(model, DTYPES[precision])
