"""Mask helpers for the later stages: boxes, COCO RLE, context crops."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from transforms._validate import INT_DTYPES, check_bool, check_count, check_float, check_tensor

__all__ = [
    "best_of_multimask",
    "crop_box_with_margin",
    "decode_rle",
    "encode_rle",
    "masks_to_xywh",
    "rle_areas_and_boxes",
]


def best_of_multimask(
    logits: torch.Tensor, predicted_iou: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's choice among its candidate masks: per prompt, the one with the highest predicted IoU.

    Args:
        logits: ``[N, K, h, w]`` float mask logits of ``K`` candidates per prompt (``K = 3``
            with ``multimask_output=True``).
        predicted_iou: ``[N, K]`` float, SAM's IoU prediction of each candidate.

    Returns:
        ``logits`` ``[N, h, w]`` of the chosen candidates and their ``iou`` ``[N]`` (same
        dtypes and device); ties go to the lowest index.
    """
    check_float("logits", logits, ndim=4)
    check_float("predicted_iou", predicted_iou, ndim=2)
    if tuple(predicted_iou.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"predicted_iou must have shape [N, K] = {tuple(logits.shape[:2])}, "
            f"got {tuple(predicted_iou.shape)}"
        )
    best = predicted_iou.argmax(dim=1)
    rows = torch.arange(best.shape[0], device=best.device)
    return logits[rows, best], predicted_iou[rows, best]


def masks_to_xywh(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes of masks as ``(x, y, w, h)`` (COCO's convention; torchvision's
    ``masks_to_boxes`` returns ``(x0, y0, x1, y1)``).

    Args:
        masks: ``[M, H, W]`` bool.

    Returns:
        ``[M, 4]`` int64 ``(x, y, w, h)``: the mask's columns are ``[x, x + w)`` and rows
        ``[y, y + h)``; an empty mask gives ``(0, 0, 0, 0)``.
    """
    check_bool("masks", masks, ndim=3)
    m, height, width = masks.shape
    if height == 0 or width == 0:
        return torch.zeros(m, 4, dtype=torch.int64, device=masks.device)
    as_bytes = masks.view(torch.uint8)  # amax of bytes: ~10x a bool any() on the CPU
    cols = as_bytes.amax(dim=1) > 0  # [M, W]
    rows = as_bytes.amax(dim=2) > 0  # [M, H]

    def extent(hits: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        # argmax of a 0/1 row = its first 1 (PyTorch returns the first maximal index).
        first = hits.to(torch.uint8).argmax(dim=1)
        last_from_end = hits.flip(1).to(torch.uint8).argmax(dim=1)
        nonempty = hits.any(dim=1)
        length = size - last_from_end - first
        return torch.where(nonempty, first, 0), torch.where(nonempty, length, 0)

    x, w = extent(cols, width)
    y, h = extent(rows, height)
    return torch.stack([x, y, w, h], dim=1).to(torch.int64)


def encode_rle(masks: torch.Tensor) -> list[str]:
    """COCO compressed RLE ``counts`` strings of masks (compressed by ``pycocotools``).

    Args:
        masks: ``[M, H, W]`` bool (any device; only the columns a mask touches are copied to
            the CPU).

    Returns:
        ``M`` ASCII strings, the ``counts`` of ``{"size": [H, W], "counts": ...}``
        (column-major, as COCO defines it).
    """
    check_bool("masks", masks, ndim=3)
    count, height, width = masks.shape
    if count == 0:
        return []
    if height == 0 or width == 0:
        return [_compress([0], height, width)] * count
    # COCO runs go down the columns, so every column outside a mask's own band of columns is
    # one run of zeros: only the band is scanned (a few % of the frame for most instances,
    # ~20x less than transposing whole frames).
    touched = masks.view(torch.uint8).amax(dim=1) > 0  # [M, W]; 10x a bool any() on CPU
    first = touched.to(torch.uint8).argmax(dim=1)
    last = width - touched.flip(1).to(torch.uint8).argmax(dim=1)
    bands = torch.stack([first, last], dim=1).where(touched.any(dim=1, keepdim=True), 0).tolist()
    strings = []
    for index, (x0, x1) in enumerate(bands):
        runs = _column_runs(masks[index, :, x0:x1].cpu().numpy())
        runs[0] += x0 * height  # the zero columns before the band...
        if len(runs) % 2 == 1:  # ...and after it (an odd count ends on a run of zeros)
            runs[-1] += (width - x1) * height
        elif x1 < width:
            runs.append((width - x1) * height)
        strings.append(_compress(runs, height, width))
    return strings


def _compress(runs: list[int], height: int, width: int) -> str:
    """COCO's compressed ``counts`` string of uncompressed ``runs`` (pycocotools' encoder)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
    return rle["counts"].decode("ascii")


def _column_runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO runs of one ``[H, W]`` bool mask: lengths of alternating runs down
    the columns (column-major order), the first a run of zeros (of length 0 if the mask starts
    with a one). A ``H x 0`` mask gives ``[0]``."""
    import cv2

    if mask.size == 0:
        return [0]
    flat = cv2.transpose(mask.view(np.uint8)).reshape(-1)  # column-major, ~5x np.asfortranarray
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(edges).tolist()
    return [0, *runs] if flat[0] else runs


def decode_rle(counts: str, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`encode_rle` for one mask: ``[height, width]`` bool on the CPU."""
    from pycocotools import mask as mask_utils

    if not isinstance(counts, str):
        raise ValueError(f"counts must be a str, got {type(counts).__name__}")
    check_count("height", height)
    check_count("width", width)
    rle = {"size": [height, width], "counts": counts.encode("ascii")}
    invalid = f"counts is not a valid COCO RLE of a {height}x{width} mask"
    try:
        decoded = mask_utils.decode(rle)
    except Exception as error:  # pycocotools raises on some corrupt strings...
        raise ValueError(f"{invalid}: {error}") from None
    # ...and silently returns garbage for others (e.g. runs not summing to H*W). The encoding
    # is canonical, so a valid string is exactly the re-encoding of its decoded mask.
    binary = decoded.astype(bool)
    if (decoded != binary).any() or encode_rle(torch.from_numpy(binary)[None])[0] != counts:
        raise ValueError(invalid)
    return torch.from_numpy(np.ascontiguousarray(binary))


def rle_areas_and_boxes(
    counts: Sequence[str], height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel counts and tight boxes of masks given as RLE, without decoding them.

    Args:
        counts: ``M`` COCO compressed RLE strings of ``height`` x ``width`` masks
            (:func:`encode_rle`'s output).

    Returns:
        ``areas`` ``[M]`` int64 and ``boxes`` ``[M, 4]`` int64 ``(x, y, w, h)``, equal to
        ``masks.sum((1, 2))`` and :func:`masks_to_xywh` of the decoded masks (an empty mask
        gives ``(0, 0, 0, 0)``).
    """
    from pycocotools import mask as mask_utils

    check_count("height", height)
    check_count("width", width)
    if len(counts) == 0:
        return torch.zeros(0, dtype=torch.int64), torch.zeros((0, 4), dtype=torch.int64)
    rles = [{"size": [height, width], "counts": c.encode("ascii")} for c in counts]
    areas = torch.from_numpy(mask_utils.area(rles).astype(np.int64))
    boxes = torch.from_numpy(np.rint(mask_utils.toBbox(rles)).astype(np.int64))
    return areas, boxes


def crop_box_with_margin(
    boxes: torch.Tensor,
    frame_size: Sequence[int],
    margin: float = 0.0,
    min_margin: int = 0,
) -> torch.Tensor:
    """Grow boxes by a context margin on every side, clipped to the frame.

    The margin on each side is ``max(ceil(margin * w), min_margin)`` horizontally and
    ``max(ceil(margin * h), min_margin)`` vertically.

    Args:
        boxes: ``[M, 4]`` integer ``(x, y, w, h)``.
        frame_size: ``(H, W)`` of the frame.
        margin: fraction of the box size added per side, >= 0.
        min_margin: minimum margin per side in pixels, >= 0.

    Returns:
        ``[M, 4]`` int64 ``(x, y, w, h)`` inside ``[0, W) x [0, H)``.
    """
    check_tensor("boxes", boxes, ndim=2, dtypes=INT_DTYPES, kind="integer")
    if boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [M, 4] (x, y, w, h), got {tuple(boxes.shape)}")
    if len(frame_size) != 2:
        raise ValueError(f"frame_size must be (H, W), got {frame_size!r}")
    height = check_count("frame_size[0]", int(frame_size[0]), minimum=1)
    width = check_count("frame_size[1]", int(frame_size[1]), minimum=1)
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    check_count("min_margin", min_margin)
    b = boxes.to(torch.int64)
    x, y, w, h = b.unbind(dim=1)
    mx = torch.ceil(w.double() * margin).long().clamp(min=min_margin)
    my = torch.ceil(h.double() * margin).long().clamp(min=min_margin)
    x0 = (x - mx).clamp(0, width)
    y0 = (y - my).clamp(0, height)
    x1 = (x + w + mx).clamp(0, width)
    y1 = (y + h + my).clamp(0, height)
    return torch.stack([x0, y0, x1 - x0, y1 - y0], dim=1)
