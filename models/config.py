"""Typed configuration of the models and of the UGainS method (docs/method.md steps 1-10).

These sections are part of the one mining-config schema (``pipelines.config.MiningConfig``):
unknown keys are rejected, and every constant of the method is a field whose default is
the paper's value.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.zoo import resolve_zoo_path


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


Mask2FormerFormat = Literal["auto", "huggingface", "rba", "ugains", "random"]
Mask2FormerArchitecture = Literal["swin_b_1dl", "swin_l_1dl", "tiny_1dl"]


class Mask2FormerConfig(StrictModel):
    """The in-distribution model (docs/method.md step 1).

    ``format`` says how ``checkpoint`` is read: a Hugging Face model directory, an RbA
    model-zoo ``model_final.pth`` (detectron2 keys), the UGainS Lightning ``.ckpt``, or
    ``random`` for an untrained, randomly initialised model (tests and the demo only).
    ``auto`` detects the format from the path where that is unambiguous.
    """

    format: Mask2FormerFormat = "auto"
    checkpoint: str | None = None
    architecture: Mask2FormerArchitecture = "swin_b_1dl"
    num_classes: int = Field(19, ge=1)
    num_queries: int = Field(100, ge=1)
    seed: int = 0  # initialisation seed for format "random"
    # Run the model under bf16 autocast on CUDA (outputs stay float32); CPU always runs fp32.
    autocast_bf16: bool = True
    # torch.compile the model on CUDA (ignored on the CPU). The first call per batch shape
    # compiles for minutes (docs/engineering.md: 107-182 s on an H100): keep batches fixed and set
    # TORCHINDUCTOR_CACHE_DIR to a persistent directory so later workers reuse the kernels.
    compile: bool = False

    @field_validator("checkpoint")
    @classmethod
    def _shipped_checkpoint(cls, checkpoint: str | None) -> str | None:
        return resolve_zoo_path(checkpoint)  # zoo:<name> -> the packaged file

    @model_validator(mode="after")
    def _checkpoint_given(self) -> Mask2FormerConfig:
        if self.format != "random" and not self.checkpoint:
            raise ValueError(f"checkpoint is required when format is {self.format!r}")
        return self


# vit_tiny: a two-block encoder at 1024 (tests, demo); vit_tiny_512: the same at a 512 input
# (32x32 grid), the model `ugains train sam` trains on the world.
SamModelType = Literal["vit_h", "vit_l", "vit_b", "vit_tiny", "vit_tiny_512"]


class SamConfig(StrictModel):
    """Segment Anything (docs/method.md step 6). ``checkpoint`` null = random init (tests, demo)."""

    model_type: SamModelType = "vit_h"
    checkpoint: str | None = None  # a .pth state dict, or zoo:<name> for a shipped one
    seed: int = 0
    # None = on where it pays: bf16 + SDPA attention on CUDA, fp32 reference path on CPU.
    fast_path: bool | None = None
    compile: bool = False  # torch.compile the image encoder (CUDA only; slow first call)
    # How a frame becomes the encoder input: "official" = the UGainS code (normalise the float
    # frame, then plain bilinear resize); "antialiased" = SamPredictor (antialiased resize of
    # the uint8 frame, then normalise), less aliasing when large frames are shrunk.
    preprocess: Literal["official", "antialiased"] = "official"

    @field_validator("checkpoint")
    @classmethod
    def _shipped_checkpoint(cls, checkpoint: str | None) -> str | None:
        return resolve_zoo_path(checkpoint)  # zoo:<name> -> the packaged file


ScoreName = Literal["rba_nls", "rba", "max_softmax", "entropy", "max_logit", "energy"]
SamplerName = Literal["fps", "kmeans", "random", "oracle"]
ModeName = Literal["ugains", "rba", "dense_grid", "oracle"]


class MethodConfig(StrictModel):
    """Constants of one UGainS step; the defaults are the paper's (docs/method.md)."""

    # "ugains": the full method; "rba": pixel scores only (no SAM, no instances);
    # "dense_grid": SAM on a grid_size x grid_size point grid, RbA mask scoring + NMS;
    # "oracle": one prompt per ground-truth instance (needs instance ids).
    mode: ModeName = "ugains"
    score: ScoreName = "rba_nls"
    reference_size: tuple[int, int] = (1024, 2048)  # (H, W) frames are resized to
    ignore_mask: str | None = None  # .png/.npy/.pt(h) file, nonzero = ignored (hood, borders)
    ignore_value: float = -30.0
    candidate_threshold: float = -0.15
    fallback_threshold: float = -15.0
    sampler: SamplerName = "fps"
    num_points: int = Field(50, ge=1)
    sampler_seed: int = 0  # random and k-means samplers
    grid_size: int = Field(32, ge=1)
    empty_mask_score: float = -1.0
    nms_iou_threshold: float = Field(0.7, ge=0.0, le=1.0)
    ignore_max_pixels: int = Field(100, ge=1)
    fusion_empty_value: float = -1.0
    # Skip SAM (and the fallback threshold) on frames with no pixel above candidate_threshold.
    # None = the command's default: on for `ugains mine`, off for `ugains evaluate` (the
    # paper runs SAM on every frame). The step itself treats None as off.
    frame_gating: bool | None = None

    def for_command(self, command: Literal["mine", "evaluate"]) -> MethodConfig:
        """These constants with the settings left to the command resolved.

        ``frame_gating``: ``None`` means on for ``mine``; ``evaluate`` always turns it off, as
        the paper runs SAM on every frame (gated frames would have no instances, fused score
        ``U - 1``, and every metric would change).
        """
        if command == "evaluate":
            gating = False
        else:
            gating = True if self.frame_gating is None else self.frame_gating
        if gating == self.frame_gating:
            return self
        return self.model_copy(update={"frame_gating": gating})


class ModelsConfig(StrictModel):
    """Everything needed to build one UGainS step."""

    mask2former: Mask2FormerConfig = Mask2FormerConfig(format="random")
    sam: SamConfig = SamConfig()
    method: MethodConfig = MethodConfig()
    device: str = "auto"  # "auto" = CUDA if present, else CPU; or "cpu", "cuda", "cuda:1"

    def weight_files(self) -> dict[str, str]:
        """The files the models read, by role (``mask2former``, ``sam``, ``ignore_mask``),
        for those set: what the fingerprint hashes, remote runs stage and the check reads."""
        files = {
            "mask2former": self.mask2former.checkpoint,
            "sam": self.sam.checkpoint,
            "ignore_mask": self.method.ignore_mask,
        }
        return {role: str(path) for role, path in files.items() if path}
