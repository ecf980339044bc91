"""Mixed precision for the attacks' model queries (the robustness evaluator's ``precision``).

The model runs under ``torch.autocast`` in bfloat16 or float16, its logits returned in float32,
so every attack still works on float32 inputs, steps, projections and losses: only the
model's own arithmetic is lower precision. Off by default: it changes a point's logits in their
last bits, and with them which points break on the edge of an eps (benchmarks/throughput.py
measures the speed and the robust accuracy it costs, per device).
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


def queried(model: nn.Module, precision: str) -> nn.Module:
    """The model as the attacks query it at ``precision`` (float32: as it is)."""
    return model if precision == "float32" else Autocast(model, DTYPES[precision])
