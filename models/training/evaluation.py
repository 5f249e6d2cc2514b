"""Quick held-out numbers for a trained Mask2Former: pixel accuracy, mIoU and RbA score margins.

Not the paper's evaluation (``ugains evaluate``): a sanity check printed after training and
written to the model card. Frames run at their own size, in eval mode, through the same
:class:`models.mask2former.Mask2FormerSegmenter` the pipelines use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from models.mask2former import Mask2FormerSegmenter
from transforms.scores import rba_scores, semantic_segmentation

__all__ = ["ANOMALOUS_IDS", "evaluate_frames"]

ANOMALOUS_IDS = (253, 254)  # the world's anomalies (val/test) and pasted outliers (ood)


@torch.no_grad()
def evaluate_frames(
    segmenter: Mask2FormerSegmenter,
    frames: Sequence[tuple[Tensor, Tensor]],
    *,
    num_classes: int = 19,
    threshold: float = -0.15,
    batch_size: int = 2,
) -> dict[str, float]:
    """Metrics over ``frames`` (``image [3, H, W]`` uint8, ``labels [H, W]`` integer).

    Returns a dict of floats: ``pixel_accuracy`` and ``miou`` over inlier pixels (labels
    ``< num_classes``; mIoU over the classes present in the ground truth), the mean UGainS score
    ``U`` (negative logit sum, docs/method.md step 2) on inlier and on anomalous pixels
    (:data:`ANOMALOUS_IDS`), and the fraction of each at or above ``threshold`` (the method's
    candidate threshold). Keys of a pixel kind absent from ``frames`` are NaN.
    """
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    sums = {"inlier": [0.0, 0, 0], "anomaly": [0.0, 0, 0]}  # score sum, above, count
    for first in range(0, len(frames), batch_size):
        chunk = [frames[i] for i in range(first, min(len(frames), first + batch_size))]
        images = torch.stack([image for image, _ in chunk])
        labels = torch.stack([label.long() for _, label in chunk])
        class_logits, mask_logits = segmenter(images)
        predicted = semantic_segmentation(class_logits, mask_logits).cpu()
        scores = rba_scores(class_logits, mask_logits).cpu()
        inlier = (labels >= 0) & (labels < num_classes)
        confusion += torch.bincount(
            labels[inlier] * num_classes + predicted[inlier], minlength=num_classes**2
        ).view(num_classes, num_classes)
        anomalous = torch.isin(labels, torch.tensor(ANOMALOUS_IDS))
        for kind, where in (("inlier", inlier), ("anomaly", anomalous)):
            sums[kind][0] += float(scores[where].double().sum())
            sums[kind][1] += int((scores[where] >= threshold).sum())
            sums[kind][2] += int(where.sum())
    total = int(confusion.sum())
    correct = int(confusion.diag().sum())
    gt = confusion.sum(dim=1)
    union = gt + confusion.sum(dim=0) - confusion.diag()
    present = gt > 0
    iou = confusion.diag()[present].double() / union[present].double()
    nan = float("nan")
    result = {
        "frames": float(len(frames)),
        "pixel_accuracy": correct / total if total else nan,
        "miou": float(iou.mean()) if bool(present.any()) else nan,
    }
    for kind, (score_sum, above, count) in sums.items():
        result[f"{kind}_pixels"] = float(count)
        result[f"{kind}_mean_score"] = score_sum / count if count else nan
        result[f"{kind}_fraction_above_threshold"] = above / count if count else nan
    return result
