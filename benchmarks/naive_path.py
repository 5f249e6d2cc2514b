"""The official UGainS inference glue, re-expressed for timing: the baseline of throughput.py.

It does what the official code does per frame (the "naive path"): fp32, batch 1,
Python loops for mask scores, a pairwise bincount mask NMS, a per-mask ignore filter and the
fusion on the CPU. It exists only to be measured against; the product uses ``transforms``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def loop_mask_scores(anomaly: Tensor, masks: Tensor, empty_value: float = -1.0) -> Tensor:
    """Mean anomaly score inside each mask, one mask at a time: ``[M]``."""
    values = []
    for mask in masks:
        score = anomaly[mask].mean()
        values.append(torch.full_like(score, empty_value) if score.isnan() else score)
    return torch.stack(values) if values else anomaly.new_zeros(0)


def pairwise_bincount_nms(masks: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy mask NMS with one bincount pass per mask pair (the official algorithm)."""
    order = torch.sort(scores, descending=True).indices.tolist()
    removed: set[int] = set()
    flat = masks.reshape(masks.shape[0], -1).long()
    for best in order:
        if best in removed:
            continue
        for other in order:
            if other == best or other in removed:
                continue
            counts = torch.bincount(flat[other] + 2 * flat[best], minlength=4)
            intersection = counts[3]
            if intersection == 0:
                continue
            iou = intersection / (counts[1] + counts[2] + counts[3])
            if iou > iou_threshold:
                removed.add(other)
    kept = [index for index in order if index not in removed]
    return torch.tensor(kept, dtype=torch.long)


def loop_ignore_filter(masks: Tensor, ignore: Tensor, max_pixels: int) -> Tensor:
    """Keep-flags of masks with fewer than ``max_pixels`` pixels in ``ignore``, one at a time."""
    return torch.tensor(
        [bool((mask & ignore).sum() < max_pixels) for mask in masks], dtype=torch.bool
    )


def cpu_fusion(anomaly: Tensor, masks: Tensor, scores: Tensor, empty_value: float) -> Tensor:
    """``I + U`` computed on the CPU, as the official code does after moving masks there."""
    instance = torch.einsum("q,qhw->hw", scores.cpu(), masks.float().cpu())
    instance[instance == 0] = empty_value
    return instance + anomaly.cpu()
