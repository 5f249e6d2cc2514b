"""Instance level: Cityscapes AP (overlaps 0.50:0.05:0.95) and AP50, as cityscapesscripts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transforms.metrics._arrays import ArrayLike, _score_array, _to_numpy

# Cityscapes' overlap thresholds, bit for bit: np.arange(0.5, 1.0, 0.05) (0.6000000000000001
# etc.); matching is "IoU > threshold", so the exact floats matter.
CITYSCAPES_OVERLAPS: np.ndarray = np.arange(0.5, 1.0, 0.05)


class InstanceMetrics:
    """Cityscapes instance-level AP / AP50 with every prediction in one class.

    Per image only compact statistics are kept: pixel counts of predictions and ground-truth
    instances, each prediction's overlap with void, and the non-zero prediction x instance
    intersections. ``compute`` then follows ``evaluateMatches`` of ``cityscapesscripts``:

    - ground-truth instances smaller than ``min_region_size`` pixels are not evaluated; a
      prediction matching one (IoU > threshold) is neither a true nor a false positive;
    - a ground-truth instance matched (IoU > threshold) by several predictions is one true
      positive with the highest score, the others are false positives;
    - an unmatched prediction is a false positive unless more than ``threshold`` of its pixels
      lie on void or on too-small instances; empty predictions are dropped;
    - AP per threshold is Cityscapes' precision-recall integral (central-difference step
      widths, artificial end point (recall 0, precision 1)); unmatched instances are false
      negatives. AP = mean over ``CITYSCAPES_OVERLAPS``, AP50 = the 0.5 entry.

    One case where ``cityscapesscripts`` raises ``IndexError`` (ground truth and predictions
    exist, but every prediction is ignored and no instance is matched) gives AP 0 here.
    """

    def __init__(self, min_region_size: int = 10) -> None:
        if min_region_size < 0:
            raise ValueError(f"min_region_size must be >= 0, got {min_region_size}")
        self.min_region_size = int(min_region_size)
        self._pred_pixels: list[np.ndarray] = []  # [M] int64 per image
        self._pred_scores: list[np.ndarray] = []  # [M] float64
        self._pred_void: list[np.ndarray] = []  # [M] int64 pixels on void
        self._gt_pixels: list[np.ndarray] = []  # [G] int64
        self._pairs: list[np.ndarray] = []  # [K, 3] int64: (pred, gt, intersection), global ids
        self._num_pred = 0
        self._num_gt = 0

    def update(
        self,
        masks: ArrayLike,
        scores: ArrayLike,
        instance_ids: ArrayLike,
        void: ArrayLike | None = None,
    ) -> None:
        """Add one image.

        Args:
            masks: ``[M, H, W]`` bool (nonzero = inside), the predicted instances.
            scores: ``[M]`` float confidences.
            instance_ids: ``[H, W]`` int, 0 = no anomaly, ``k > 0`` = anomaly instance ``k``.
            void: ``[H, W]`` bool, pixels Cityscapes would treat as void (never part of an
                instance); ``None`` = no void.
        """
        ids = _to_numpy(instance_ids, "instance_ids")
        if ids.ndim != 2 or ids.dtype.kind not in "biu":
            raise ValueError(
                f"instance_ids must be an integer [H, W] array, got {ids.dtype} {ids.shape}"
            )
        if ids.size and ids.min() < 0:
            raise ValueError("instance_ids must be >= 0 (0 = not anomalous)")
        masks_np = _to_numpy(masks, "masks")
        if masks_np.ndim != 3 or masks_np.shape[1:] != ids.shape:
            raise ValueError(
                f"masks must be [M, H, W] with (H, W) = {ids.shape}, got {masks_np.shape}"
            )
        scores_np = _score_array(scores, "scores").astype(np.float64).reshape(-1)
        if scores_np.size != masks_np.shape[0]:
            raise ValueError(f"got {masks_np.shape[0]} masks but {scores_np.size} scores")
        if void is None:
            void_np = np.zeros(ids.shape, dtype=bool)
        else:
            void_np = _to_numpy(void, "void").astype(bool, copy=False)
            if void_np.shape != ids.shape:
                raise ValueError(f"void must have shape {ids.shape}, got {void_np.shape}")
            if (void_np & (ids > 0)).any():
                raise ValueError("void pixels must not belong to an instance (instance_ids > 0)")

        flat_masks = masks_np.reshape(masks_np.shape[0], ids.size).astype(bool, copy=False)
        pred_pixels = np.count_nonzero(flat_masks, axis=1).astype(np.int64)
        nonempty = pred_pixels > 0  # Cityscapes skips empty predictions entirely
        flat_masks, pred_pixels, scores_np = (
            flat_masks[nonempty],
            pred_pixels[nonempty],
            scores_np[nonempty],
        )

        gt_values, gt_index, gt_counts = np.unique(
            ids.reshape(-1), return_inverse=True, return_counts=True
        )
        is_instance = gt_values > 0
        num_gt = int(is_instance.sum())
        # Column per pixel: instance j -> j (0..G-1), void -> G, anything else -> -1.
        instance_column = np.cumsum(is_instance) - 1
        column = np.where(is_instance[gt_index.reshape(-1)], instance_column[gt_index], -1)
        column[void_np.reshape(-1)] = num_gt
        relevant = np.flatnonzero(column >= 0)
        # Intersections of every prediction with every instance and with void, counting only
        # the (few) relevant pixels: one nonzero + bincount, no loop over masks.
        mask_index, pixel = np.nonzero(flat_masks[:, relevant])
        table = np.bincount(
            mask_index * (num_gt + 1) + column[relevant][pixel],
            minlength=flat_masks.shape[0] * (num_gt + 1),
        ).reshape(flat_masks.shape[0], num_gt + 1)
        pred_ids, gt_ids = np.nonzero(table[:, :num_gt])
        pairs = np.stack(
            (pred_ids + self._num_pred, gt_ids + self._num_gt, table[pred_ids, gt_ids]), axis=1
        ).astype(np.int64)

        self._pred_pixels.append(pred_pixels)
        self._pred_scores.append(scores_np)
        self._pred_void.append(table[:, num_gt].astype(np.int64))
        self._gt_pixels.append(gt_counts[is_instance].astype(np.int64))
        self._pairs.append(pairs.reshape(-1, 3))
        self._num_pred += pred_pixels.size
        self._num_gt += num_gt

    def merge(self, other: InstanceMetrics) -> InstanceMetrics:
        """Append ``other``'s images to this accumulator (in place); returns ``self``."""
        if other.min_region_size != self.min_region_size:
            raise ValueError("cannot merge InstanceMetrics with different min_region_size")
        offset = np.array([self._num_pred, self._num_gt, 0], dtype=np.int64)
        self._pred_pixels += other._pred_pixels
        self._pred_scores += other._pred_scores
        self._pred_void += other._pred_void
        self._gt_pixels += other._gt_pixels
        self._pairs += [pairs + offset for pairs in other._pairs]
        self._num_pred += other._num_pred
        self._num_gt += other._num_gt
        return self

    def ap_per_overlap(self) -> np.ndarray:
        """``[10]`` float64: AP at each of ``CITYSCAPES_OVERLAPS`` (NaN without ground truth)."""

        def cat(parts: list[np.ndarray], dtype: type, width: int = 0) -> np.ndarray:
            shape = (0, width) if width else (0,)
            return np.concatenate(parts) if parts else np.empty(shape, dtype)

        pred_pixels = cat(self._pred_pixels, np.int64)
        pred_scores = cat(self._pred_scores, np.float64)
        pred_void = cat(self._pred_void, np.int64)
        gt_pixels = cat(self._gt_pixels, np.int64)
        pairs = cat(self._pairs, np.int64, 3)
        pair_pred, pair_gt, pair_inter = pairs[:, 0], pairs[:, 1], pairs[:, 2]

        evaluated_gt = gt_pixels >= self.min_region_size
        num_evaluated = int(evaluated_gt.sum())
        if num_evaluated == 0:
            return np.full(CITYSCAPES_OVERLAPS.size, np.nan)
        if pred_pixels.size == 0:
            return np.zeros(CITYSCAPES_OVERLAPS.size)

        iou = pair_inter / (gt_pixels[pair_gt] + pred_pixels[pair_pred] - pair_inter)
        # Pixels of a prediction that Cityscapes discounts: void + too-small instances.
        ignored = pred_void + np.bincount(
            pair_pred,
            weights=np.where(evaluated_gt[pair_gt], 0, pair_inter),
            minlength=pred_pixels.size,
        )
        ignored_fraction = ignored / pred_pixels

        aps = np.empty(CITYSCAPES_OVERLAPS.size)
        for index, threshold in enumerate(CITYSCAPES_OVERLAPS):
            match = iou > threshold  # for threshold >= 0.5 a prediction matches <= 1 instance
            matched_pred = np.zeros(pred_pixels.size, dtype=bool)
            matched_pred[pair_pred[match]] = True
            on_evaluated = match & evaluated_gt[pair_gt]
            scores = pred_scores[pair_pred[on_evaluated]]
            gts = pair_gt[on_evaluated]
            # Per instance, its best-scoring match is the true positive; the rest are false.
            order = np.lexsort((-scores, gts))
            scores, gts = scores[order], gts[order]
            is_true = np.concatenate(([True], gts[1:] != gts[:-1])) if gts.size else gts > 0
            hard_false_negatives = num_evaluated - int(is_true.sum())
            false_positive = ~matched_pred & (ignored_fraction <= threshold)
            y_score = np.concatenate((scores, pred_scores[false_positive]))
            y_true = np.concatenate((is_true, np.zeros(int(false_positive.sum()), dtype=bool)))
            aps[index] = _cityscapes_average_precision(y_true, y_score, hard_false_negatives)
        return aps

    def compute(self) -> dict[str, float]:
        """``{"ap", "ap50"}`` as fractions (NaN if no instance reaches ``min_region_size``)."""
        aps = self.ap_per_overlap()
        return {"ap": float(np.mean(aps)), "ap50": float(aps[0])}


def _cityscapes_average_precision(
    y_true: np.ndarray, y_score: np.ndarray, hard_false_negatives: int
) -> float:
    """Cityscapes' AP of scored detections plus ``hard_false_negatives`` missed instances.

    At each distinct score ``t`` (ascending): tp/fp = true/false detections scoring >= t,
    precision = tp / (tp + fp), recall = tp / (#true detections + #missed). An artificial
    point (recall 0, precision 1) ends the curve; each precision is weighted by half the
    recall difference of its two neighbours (the first point's left neighbour is itself).
    """
    if y_score.size == 0:
        return 0.0  # no detection counted at all: recall 0 everywhere
    order = np.argsort(y_score, kind="stable")
    sorted_scores = y_score[order]
    true_cumsum = np.cumsum(y_true[order], dtype=np.float64)
    _, first_index = np.unique(sorted_scores, return_index=True)
    num_true = true_cumsum[-1]
    true_below = np.concatenate(([0.0], true_cumsum))[first_index]
    tp = num_true - true_below
    fp = sorted_scores.size - first_index - tp
    fn = true_below + hard_false_negatives
    precision = np.concatenate((tp / (tp + fp), [1.0]))
    recall = np.concatenate((tp / (tp + fn), [0.0]))
    padded = np.concatenate((recall[:1], recall, [0.0]))
    step_widths = 0.5 * padded[:-2] - 0.5 * padded[2:]
    return float(np.dot(precision, step_widths))


def instance_ap(
    predictions: Sequence[tuple[ArrayLike, ArrayLike]],
    targets: Sequence[tuple[ArrayLike, ArrayLike | None]],
    *,
    min_region_size: int = 10,
) -> dict[str, float]:
    """Cityscapes instance ``{"ap", "ap50"}`` of a dataset (see :class:`InstanceMetrics`).

    Args:
        predictions: per image ``(masks [M, H, W] bool, scores [M] float)``.
        targets: per image ``(instance_ids [H, W] int, void [H, W] bool or None)``.
        min_region_size: smallest evaluated instance, in pixels (the paper: 10).
    """
    if len(predictions) != len(targets):
        raise ValueError(f"got {len(predictions)} predictions but {len(targets)} targets")
    accumulator = InstanceMetrics(min_region_size)
    for (masks, scores), (instance_ids, void) in zip(predictions, targets, strict=True):
        accumulator.update(masks, scores, instance_ids, void)
    return accumulator.compute()
