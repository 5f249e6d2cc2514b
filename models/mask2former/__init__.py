"""Mask2Former, the in-distribution model of UGainS (docs/method.md step 1).

- :mod:`~models.mask2former.architecture`: the configurable-level pixel decoder, the model
  class and the named presets.
- :mod:`~models.mask2former.segmenter`: the segmenter UGainS runs (normalise, pad, logits).
- :mod:`~models.mask2former.conversion`: RbA / UGainS checkpoints renamed to transformers'
  parameter names.
- :mod:`~models.mask2former.loading`: :func:`build_mask2former` from a config, strict loading.

Imports flow architecture -> segmenter / conversion -> loading: no loop.
"""

from models.errors import CheckpointError
from models.mask2former.architecture import (
    ARCHITECTURES,
    ENCODER_FEATURE_LEVELS,
    IGNORED_KEY_SUFFIXES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPTIONAL_KEYS,
    Mask2FormerMultiLevelForUniversalSegmentation,
    MultiLevelPixelDecoder,
    architecture_config,
    encoder_feature_levels,
)
from models.mask2former.loading import (
    build_mask2former,
    load_strict,
    no_progress_bars,
    resolve_format,
)
from models.mask2former.segmenter import Mask2FormerSegmenter, favour_no_object

__all__ = [
    "ARCHITECTURES",
    "ENCODER_FEATURE_LEVELS",
    "IGNORED_KEY_SUFFIXES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OPTIONAL_KEYS",
    "CheckpointError",
    "Mask2FormerMultiLevelForUniversalSegmentation",
    "Mask2FormerSegmenter",
    "MultiLevelPixelDecoder",
    "architecture_config",
    "build_mask2former",
    "encoder_feature_levels",
    "favour_no_object",
    "load_strict",
    "no_progress_bars",
    "resolve_format",
]
