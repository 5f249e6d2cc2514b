"""Instance embeddings: SAM's image features pooled inside each mask (docs/method.md, "Curation").

SAM's image encoder has already run on every frame that has instances (step 6), so an
embedding per instance costs two small matrix products and no extra model call. The encoder
saw the frame resized to longest side ``S`` and zero-padded at the bottom / right; its
``[C, g, g]`` feature map has one cell per ``S / g`` resized pixels. Each frame pixel belongs
to the cell its centre falls into after that resize, so a mask's embedding is the
pixel-count-weighted sum of the cells it covers, L2-normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from transforms._validate import check_bool, check_count, check_float, check_same_device

__all__ = ["cell_of_pixels", "mask_embeddings"]

# Largest float copy (elements) of a block of masks, as in mask_scores.
_MAX_BLOCK_ELEMENTS = 1 << 27


def cell_of_pixels(length: int, scale: float, cell: float, device: torch.device) -> torch.Tensor:
    """Feature-grid cell of each of ``length`` frame pixels along one axis: ``[length]`` int64.

    Pixel ``i`` (centre ``i + 0.5``) lands at ``(i + 0.5) * scale`` in the resized frame, in
    cell ``floor((i + 0.5) * scale / cell)``.
    """
    centres = (torch.arange(length, device=device, dtype=torch.float64) + 0.5) * scale
    return torch.floor(centres / cell).long()


def _one_hot_cells(length: int, scale: float, cell: float, cells: int, device) -> torch.Tensor:
    index = cell_of_pixels(length, scale, cell, device).clamp(max=cells - 1)
    return F.one_hot(index, cells).float()  # [length, cells]


def mask_embeddings(features: torch.Tensor, masks: torch.Tensor, image_size: int) -> torch.Tensor:
    """L2-normalised mean of SAM's image features inside each mask.

    Args:
        features: ``[C, g, g]`` float, SAM's image embedding of one frame (``g = S / 16``).
        masks: ``[M, H, W]`` bool, the frame's instance masks at the frame's size.
        image_size: ``S``, SAM's square encoder input; the frame was resized to longest side
            ``S`` (``max(H, W)`` pixels -> ``S``) and padded at the bottom / right.

    Returns:
        ``[M, C]`` float32, unit rows (an empty mask gives a zero row). Runs on ``features``'
        device; the float copy of the masks is made in blocks of <= 2**27 elements.
    """
    features = check_float("features", features, ndim=3)
    masks = check_bool("masks", masks, ndim=3)
    check_same_device("masks", masks, "features", features)
    image_size = check_count("image_size", image_size, minimum=1)
    channels, grid_h, grid_w = features.shape
    if grid_h != grid_w:
        raise ValueError(f"features must be square [C, g, g], got shape {tuple(features.shape)}")
    count, height, width = masks.shape
    out = torch.zeros((count, channels), dtype=torch.float32, device=features.device)
    if count == 0 or height == 0 or width == 0:
        return out
    scale = image_size / max(height, width)
    cell = image_size / grid_h
    flat_features = features.float().reshape(channels, grid_h * grid_w)
    block = max(1, _MAX_BLOCK_ELEMENTS // (height * width))
    pixels = cell / scale  # frame pixels per cell side
    if pixels == int(pixels) and height % int(pixels) == 0 and width % int(pixels) == 0:
        # Cells tile the frame exactly (1024x2048 at S = 1024: 32 px; the world: 16 px): count
        # each cell's pixels with a reshape and a sum, no float copy of the masks.
        p = int(pixels)
        # Row runs of p pixels first (contiguous, small integers), then p of those per cell.
        runs = (
            masks.view(torch.uint8).reshape(count, height, width // p, p).sum(-1, dtype=torch.int16)
        )
        counts = runs.reshape(count, height // p, p, width // p).sum(2, dtype=torch.int32)
        weights = torch.zeros((count, grid_h, grid_w), dtype=torch.float32, device=masks.device)
        weights[:, : height // p, : width // p] = counts.float()
        out = weights.flatten(1) @ flat_features.T
        return F.normalize(out, dim=1)
    rows = _one_hot_cells(height, scale, cell, grid_h, features.device)  # [H, g]
    cols = _one_hot_cells(width, scale, cell, grid_w, features.device)  # [W, g]
    for start in range(0, count, block):
        part = masks[start : start + block].float()
        # Pixels per cell: [m, g, H] @ [m, H, W] @ [W, g] -> [m, g, g].
        weights = rows.T @ part @ cols
        out[start : start + part.shape[0]] = weights.flatten(1) @ flat_features.T
    return F.normalize(out, dim=1)
