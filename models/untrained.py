"""Random-init checkpoints of the real architectures, written to disk like real ones.

Tests and benchmarks load them through the real loading code; speed does not depend on the
weights' values. Every file and folder is named ``UNTRAINED_*`` so that no one mistakes them
for trained weights.
"""

from __future__ import annotations

from pathlib import Path

MASK2FORMER_DIR = "UNTRAINED_mask2former_tiny_1dl"
SAM_FILE = "UNTRAINED_sam_vit_tiny.pth"


def write_untrained_checkpoints(
    root: Path,
    mask2former_architecture: str = "tiny_1dl",
    sam_model_type: str = "vit_tiny",
    seed: int = 0,
) -> tuple[Path, Path]:
    """Random-init Mask2Former (Hugging Face directory) and SAM (state dict) under ``root``.

    The Mask2Former gets a trained model's "no object" habit (``favour_no_object``): without
    it every pixel scores far below the method's thresholds and no SAM prompt is ever drawn.
    Returns ``(mask2former_dir, sam_path)``, both named ``UNTRAINED_*``.
    """
    import torch

    from models.config import Mask2FormerConfig, SamConfig
    from models.mask2former import build_mask2former, favour_no_object, no_progress_bars
    from models.sam import build_sam

    m2f_dir = root / f"UNTRAINED_mask2former_{mask2former_architecture}"
    sam_path = root / f"UNTRAINED_sam_{sam_model_type}.pth"
    config = Mask2FormerConfig(format="random", architecture=mask2former_architecture, seed=seed)
    with no_progress_bars():
        favour_no_object(build_mask2former(config)).model.save_pretrained(m2f_dir)
    sam = build_sam(SamConfig(model_type=sam_model_type, seed=seed))
    torch.save(sam.state_dict(), sam_path)
    return m2f_dir, sam_path


def write_checkpoints(root: Path, seed: int = 0) -> None:
    """The demo's untrained tiny checkpoints (``MASK2FORMER_DIR``, ``SAM_FILE``)."""
    write_untrained_checkpoints(root, "tiny_1dl", "vit_tiny", seed)
