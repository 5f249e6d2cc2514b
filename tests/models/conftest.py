"""Fixtures of the model tests: small random-init Mask2Formers of the real structure."""

from __future__ import annotations

import pytest
import torch

from models.config import Mask2FormerConfig
from models.mask2former import Mask2FormerSegmenter, build_mask2former


@pytest.fixture(scope="session")
def tiny_config() -> Mask2FormerConfig:
    """The checkpoints' structure (res5-only encoder, one decoder layer) at toy sizes."""
    return Mask2FormerConfig(format="random", architecture="tiny_1dl", seed=0)


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_config: Mask2FormerConfig) -> Mask2FormerSegmenter:
    """A seeded random-init ``tiny_1dl`` segmenter on the CPU (do not modify it in a test)."""
    return build_mask2former(tiny_config)


@pytest.fixture
def frames() -> torch.Tensor:
    """Two seeded uint8 RGB frames ``[2, 3, 64, 128]``."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 3, 64, 128), dtype=torch.uint8, generator=generator)
