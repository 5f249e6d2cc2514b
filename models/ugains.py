"""One UGainS inference step: Mask2Former -> anomaly score -> point prompts -> SAM -> fusion.

This module only composes: the models come from :mod:`models.mask2former` and
:mod:`models.sam`, every operation on tensors from :mod:`transforms`. docs/method.md steps 1-10.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from models.config import MethodConfig, ModelsConfig
from transforms import fusion, nms, sampling, scores
from transforms.embeddings import mask_embeddings
from transforms.ignore import ignore_filter
from transforms.mask_scores import mask_scores

__all__ = [
    "FrameResult",
    "StageClock",
    "UGainS",
    "build_ugains",
    "load_ignore_mask",
    "resolve_device",
]


@dataclass(frozen=True)
class FrameResult:
    """The outputs of one frame, on the CPU, at the resolution the frame was given in.

    Attributes:
        semantic: ``[H, W]`` uint8, in-distribution class per pixel (argmax over K classes).
        anomaly_score: ``[H, W]`` float32, the per-pixel score ``U`` (no ignore applied).
        fused_score: ``[H, W]`` float32, ``I + U`` with ``I`` the instance map (step 10).
        masks: ``[M, H, W]`` bool, the kept anomaly instances, by descending score.
        scores: ``[M]`` float32, mean of ``U`` inside each mask.
        sam_iou: ``[M]`` float32, SAM's predicted IoU of each mask.
        points: ``[M, 2]`` int64 ``(x, y)``, the prompt that produced each mask.
        prompt_points: ``[P, 2]`` int64 ``(x, y)``, every prompt given to SAM.
        gated: True when frame gating skipped SAM (no pixel above the threshold).
        timings: milliseconds per stage (the batch's time divided by its size).
        embeddings: ``[M, C]`` float32, unit rows: SAM's image features pooled inside each
            mask (:func:`transforms.embeddings.mask_embeddings`; ``C`` = 256 for SAM); None
            when the step has no SAM (``mode: rba``).
    """

    semantic: Tensor
    anomaly_score: Tensor
    fused_score: Tensor
    masks: Tensor
    scores: Tensor
    sam_iou: Tensor
    points: Tensor
    prompt_points: Tensor
    gated: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    embeddings: Tensor | None = None

    @property
    def num_instances(self) -> int:
        return int(self.masks.shape[0])


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None = the current CUDA device if there is one, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_ignore_mask(path: str | Path) -> Tensor:
    """Read a camera rig's ignore mask: an image or array file, nonzero = ignored.

    Accepts ``.png``/``.jpg`` images, ``.npy`` arrays, and ``.pt``/``.pth`` tensors (the
    official UGainS release ships its mask as a saved tensor; read with ``weights_only``).

    Returns a ``[H, W]`` bool tensor. Raises ``ValueError`` naming the file if it cannot be
    read or is not two-dimensional after dropping colour channels.
    """
    import cv2
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ignore mask {path} does not exist")
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif path.suffix in {".pt", ".pth"}:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, Tensor):
            raise ValueError(f"ignore mask {path} must hold one tensor, got {type(loaded)}")
        array = loaded.numpy()
    else:
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise ValueError(f"ignore mask {path} is not a readable image")
    if array.ndim == 3:
        array = array.max(axis=2)
    if array.ndim != 2:
        raise ValueError(f"ignore mask {path} must be 2-D, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array != 0))


class UGainS:
    """UGainS on a batch of frames: ``step(images) -> list[FrameResult]``.

    Args:
        segmenter: Mask2Former returning ``(class_logits [B,Q,K+1], mask_logits [B,Q,H,W])``.
        prompter: a :class:`models.sam.SamPrompter`; may be None in ``mode="rba"``.
        method: the method's constants (the paper's defaults, docs/method.md).
        ignore: ``[H, W]`` bool ignore mask of the camera rig, or None; resized (nearest) to
            the frames' size when it differs.
    """

    def __init__(
        self,
        segmenter: torch.nn.Module,
        prompter: object | None,
        method: MethodConfig,
        *,
        ignore: Tensor | None = None,
    ) -> None:
        if prompter is None and method.mode != "rba":
            raise ValueError(f"mode {method.mode!r} needs a SAM prompter")
        self.segmenter = segmenter
        self.prompter = prompter
        self.method = method
        self.ignore = ignore
        self.score_fn = scores.SCORE_FUNCTIONS[method.score]

    @property
    def device(self) -> torch.device:
        return next(self.segmenter.parameters()).device

    @property
    def model_size(self) -> tuple[int, int]:
        return tuple(self.method.reference_size)

    def _ignore_for(self, size: tuple[int, int]) -> Tensor | None:
        if self.ignore is None:
            return None
        ignore = self.ignore.to(self.device)
        if tuple(ignore.shape) != size:
            ignore = torch.nn.functional.interpolate(
                ignore[None, None].float(), size=size, mode="nearest"
            )[0, 0].bool()
        return ignore

    @torch.inference_mode()
    def __call__(
        self, images: Tensor, instance_ids: Sequence[Tensor] | None = None
    ) -> list[FrameResult]:
        """Run the method on ``images`` ``[B, 3, H, W]`` uint8 RGB (any device).

        ``instance_ids`` (``[H, W]`` int per frame, 0 = background) is needed only by the
        oracle sampler / mode.
        """
        return self.run_methods(images, [self.method], instance_ids)[0]

    @torch.inference_mode()
    def run_methods(
        self,
        images: Tensor,
        methods: Sequence[MethodConfig],
        instance_ids: Sequence[Tensor] | None = None,
        *,
        embed: bool = True,
    ) -> list[list[FrameResult]]:
        """Several method settings on the same frames, the encoders run once for all.

        Mask2Former, the per-pixel score and SAM's image embeddings do not depend on the
        mode, sampler or number of points, so an evaluation table (Tables 2, 4, 5) computes
        them once per frame. Each method's results equal ``UGainS(..., method)(images)``.

        ``embed=False`` skips the instance embeddings (``FrameResult.embeddings`` is None): the
        evaluation does not use them.

        Returns:
            one list of :class:`FrameResult` per method (in ``methods`` order), each with
            one result per frame.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 RGB, got {images.dtype}")
        for method in methods:
            if method.score != self.method.score:
                raise ValueError(
                    f"method score {method.score!r} differs from the step's "
                    f"{self.method.score!r}: the shared per-pixel score would be wrong"
                )
            if self.prompter is None and method.mode != "rba":
                raise ValueError(f"mode {method.mode!r} needs a SAM prompter")
        needs_ids = any(m.mode == "oracle" or m.sampler == "oracle" for m in methods)
        if needs_ids and (instance_ids is None or len(instance_ids) != images.shape[0]):
            raise ValueError("the oracle sampler needs instance_ids for every frame")
        batch, _, height, width = images.shape
        size = (height, width)
        images = images.to(self.device, non_blocking=True)
        clock = StageClock(self.device)

        class_logits, mask_logits = self.segmenter(images, output_size=size)
        clock.lap("mask2former")
        anomaly = self.score_fn(class_logits, mask_logits).float()
        semantic = scores.semantic_segmentation(class_logits, mask_logits)
        del mask_logits
        ignore = self._ignore_for(size)
        ids = [t.to(self.device) for t in instance_ids] if needs_ids else None
        clock.lap("score")

        embeddings: dict[int, Tensor] = {}  # frame index -> SAM embedding, shared by methods
        per_method = []
        for method in methods:
            prompts, gated = [], []
            for index in range(batch):
                frame_prompts, frame_gated = self._prompts(
                    method, anomaly[index], ignore, ids[index] if ids else None
                )
                prompts.append(frame_prompts)
                gated.append(frame_gated)
            clock.lap("sampling")
            segmented = self._segment(images, prompts, size, clock, embeddings)
            per_method.append(
                [
                    self._finish(
                        method,
                        anomaly[index],
                        semantic[index],
                        ignore,
                        *segmented[index],
                        embed=embed,
                    )
                    | {"prompt_points": prompts[index].long().cpu(), "gated": gated[index]}
                    for index in range(batch)
                ]
            )
            clock.lap("postprocess")
        per_frame = {stage: ms / batch for stage, ms in clock.timings.items()}
        return [
            [FrameResult(**fields, timings=dict(per_frame)) for fields in results]
            for results in per_method
        ]

    def _prompts(
        self,
        method: MethodConfig,
        anomaly: Tensor,
        ignore: Tensor | None,
        instance_ids: Tensor | None,
    ) -> tuple[Tensor, bool]:
        """The point prompts of one frame ``[P, 2]`` (x, y), and whether it was gated."""
        empty = torch.zeros((0, 2), dtype=torch.long, device=anomaly.device)
        if method.mode == "rba":
            return empty, False
        if method.mode == "dense_grid":
            height, width = anomaly.shape
            grid = sampling.grid_points(height, width, method.grid_size, device=anomaly.device)
            return grid, False
        if method.mode == "oracle" or method.sampler == "oracle":
            return sampling.oracle_points(instance_ids).to(anomaly.device), False
        gating = bool(method.frame_gating)
        candidates = sampling.candidate_points(
            anomaly,
            threshold=method.candidate_threshold,
            # Frame gating: no fallback, so a frame with nothing above the threshold is skipped.
            fallback_threshold=method.candidate_threshold if gating else method.fallback_threshold,
            ignore=ignore,
            ignore_value=method.ignore_value,
        )
        if candidates.shape[0] == 0:
            return empty, gating
        k = method.num_points
        if method.sampler == "fps":
            return candidates[sampling.farthest_point_sampling(candidates, k)], False
        if method.sampler == "random":
            return candidates[
                sampling.random_points(candidates, k, seed=method.sampler_seed)
            ], False
        return sampling.kmeans_points(candidates, k, seed=method.sampler_seed), False

    def _segment(
        self,
        images: Tensor,
        prompts: list[Tensor],
        size: tuple[int, int],
        clock: StageClock,
        embeddings: dict[int, Tensor],
    ) -> list[tuple[Tensor, Tensor, Tensor, Tensor | None]]:
        """SAM masks ``[N, H, W]``, predicted IoU ``[N]``, prompts ``[N, 2]`` and the image
        embedding ``[C, g, g]`` (None when SAM did not run) per frame.

        Frames get their image embedding from ``embeddings`` or, once, from one batched
        encoder call over the frames that lack one (added to ``embeddings``).
        """
        device = images.device
        no_masks = (
            torch.zeros((0, *size), dtype=torch.bool, device=device),
            torch.zeros(0, device=device),
        )
        wanted = [i for i, points in enumerate(prompts) if points.shape[0] > 0]
        out = [(*no_masks, prompts[i], None) for i in range(len(prompts))]
        if not wanted:
            return out
        missing = [i for i in wanted if i not in embeddings]
        if missing:
            embeddings.update(zip(missing, self.prompter.encode(images[missing]), strict=True))
            clock.lap("sam_encoder")
        for index in wanted:
            masks, iou = self.prompter.segment(embeddings[index], prompts[index], size)
            out[index] = (masks, iou.float(), prompts[index], embeddings[index])
        clock.lap("sam_decoder")
        return out

    def _finish(
        self,
        method: MethodConfig,
        anomaly: Tensor,
        semantic: Tensor,
        ignore: Tensor | None,
        masks: Tensor,
        sam_iou: Tensor,
        points: Tensor,
        features: Tensor | None,
        *,
        embed: bool = True,
    ) -> dict:
        """Steps 7-10 for one frame: score, de-duplicate, drop ignored, fuse; and the kept
        masks' embeddings."""
        scores_of_masks = mask_scores(anomaly, masks, empty_value=method.empty_mask_score)
        keep = nms.mask_nms(masks, scores_of_masks, iou_threshold=method.nms_iou_threshold)
        if ignore is not None and keep.numel() > 0:
            outside = ignore_filter(masks[keep], ignore, max_pixels=method.ignore_max_pixels)
            keep = keep[outside]
        masks, scores_of_masks = masks[keep], scores_of_masks[keep]
        if method.mode == "rba":
            fused = anomaly.clone()
        else:
            fused = fusion.fuse_scores(
                anomaly, masks, scores_of_masks, empty_value=method.fusion_empty_value
            )
        return {
            "semantic": semantic.to(torch.uint8).cpu(),
            "anomaly_score": anomaly.cpu(),
            "fused_score": fused.float().cpu(),
            "masks": masks.cpu(),
            "scores": scores_of_masks.float().cpu(),
            "sam_iou": sam_iou[keep].cpu(),
            "points": points[keep].long().cpu(),
            "embeddings": self._embeddings(features, masks) if embed else None,
        }

    def _embeddings(self, features: Tensor | None, masks: Tensor) -> Tensor | None:
        if self.prompter is None:
            return None
        if features is None:  # SAM did not run on this frame, so it has no masks
            return torch.zeros((masks.shape[0], self.prompter.embedding_shape[0]))
        return mask_embeddings(features, masks, self.prompter.image_size).cpu()


class StageClock:
    """Wall-clock milliseconds per stage; synchronises CUDA so stages are not blurred.

    ``lap(stage)`` adds the time since the previous lap (or ``restart``) to ``timings[stage]``.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.timings: dict[str, float] = {}
        self._last = self.now()

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def restart(self) -> None:
        """Start the next lap now: time since the last lap is counted in no stage."""
        self._last = self.now()

    def lap(self, stage: str) -> None:
        now = self.now()
        self.timings[stage] = self.timings.get(stage, 0.0) + (now - self._last) * 1e3
        self._last = now


def build_ugains(config: ModelsConfig, device: str | torch.device | None = None) -> UGainS:
    """Build and load every model named by ``config`` and return the composed step.

    A checkpoint that cannot be loaded raises here, once, with the loader's message.
    """
    from models.mask2former import build_mask2former
    from models.sam import SamPrompter, build_sam

    target = resolve_device(config.device if device is None else device)
    segmenter = build_mask2former(config.mask2former).to(target).eval()
    if config.mask2former.compile and target.type == "cuda":
        # In place (nn.Module.compile), so parameter names and checkpoints are unchanged.
        segmenter.model.compile(dynamic=False)
    prompter = None
    if config.method.mode != "rba":
        sam = build_sam(config.sam).to(target).eval()
        prompter = SamPrompter(
            sam,
            fast_path=config.sam.fast_path,
            compile=config.sam.compile,
            preprocess=config.sam.preprocess,
        )
    ignore = load_ignore_mask(config.method.ignore_mask) if config.method.ignore_mask else None
    return UGainS(segmenter, prompter, config.method, ignore=ignore)
