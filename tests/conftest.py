"""Shared fixtures: ``device`` runs a test on the CPU and, when one is present, on CUDA."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.cuda,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
            ],
        ),
    ]
)
def device(request: pytest.FixtureRequest) -> torch.device:
    """The torch device a test runs on, as tensors report it: CUDA with its index, because
    ``torch.device("cuda") != torch.device("cuda:0")`` and tests compare ``got.device == device``.
    """
    if request.param == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(request.param)
