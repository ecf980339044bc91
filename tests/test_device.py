"""`resources.device`: which torch device a trial uses."""

from __future__ import annotations

import pytest
import torch

from study.trial import select_device


def test_auto_and_cpu_stay_on_the_cpu_without_a_gpu_share():
    assert select_device("auto", 0).type == "cpu"
    assert select_device("cpu", 1).type == "cpu"


def test_auto_uses_cuda_only_when_a_gpu_was_given_and_works():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto", 0.25).type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_device_is_a_clear_error():
    with pytest.raises(RuntimeError, match="resources.device is cuda"):
        select_device("cuda", 1)
