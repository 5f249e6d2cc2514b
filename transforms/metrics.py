"""Evaluation metrics of the paper's protocol (DESIGN.md, "Evaluation protocol").

Three levels, each as an accumulator (``update`` per image, ``merge`` for distributed
combining, ``compute`` at the end) and a one-call function over whole datasets:

- pixel level: :class:`PixelMetrics` / :func:`pixel_metrics` -> AP, FPR95, AUROC, equal to
  scikit-learn's ``average_precision_score`` / ``roc_curve`` / ``roc_auc_score`` over all
  non-ignored pixels, ties included;
- instance level: :class:`InstanceMetrics` / :func:`instance_ap` -> AP (overlaps
  0.50:0.05:0.95) and AP50, equal to ``cityscapesscripts``' ``evalInstanceLevelSemanticLabeling``
  with every prediction of one class and ``minRegionSizes = [min_region_size]``;
- point level (Table 4): :class:`PointMetrics` / :func:`point_metrics` -> precision and
  recall of prompt points.

Inputs may be NumPy arrays or torch tensors (any device); everything is computed in NumPy on
the CPU. Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Cityscapes' overlap thresholds, bit for bit: np.arange(0.5, 1.0, 0.05) (0.6000000000000001
# etc.); matching is "IoU > threshold", so the exact floats matter.
CITYSCAPES_OVERLAPS: np.ndarray = np.arange(0.5, 1.0, 0.05)

ArrayLike = Any  # np.ndarray | torch.Tensor; torch is not imported by this module


def _to_numpy(value: ArrayLike, name: str) -> np.ndarray:
    """A NumPy view/copy of an array or torch tensor (bf16/fp16 tensors become float32)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing it
        tensor = value.detach().cpu()
        if tensor.is_floating_point() and tensor.element_size() < 4:
            tensor = tensor.float()  # NumPy has no bfloat16; float16/bf16 -> float32 is exact
        return tensor.numpy()
    try:
        return np.asarray(value)
    except Exception as error:  # e.g. ragged nested lists
        raise ValueError(f"{name} is not array-like: {error}") from None


def _score_array(value: ArrayLike, name: str) -> np.ndarray:
    """Scores as float32 or float64 without changing any value (so ties stay ties)."""
    array = _to_numpy(value, name)
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype.kind in "biu":
        array = array.astype(np.float64)  # exact for |ints| < 2**53
    elif array.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be real numbers, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


# --------------------------------------------------------------------------------------------
# Pixel level
# --------------------------------------------------------------------------------------------


def _merge_tables(
    tables: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge ``(values ascending unique, positives, negatives)`` tables into one such table."""
    dtype = np.result_type(*[values.dtype for values, _, _ in tables])
    values = np.concatenate([t[0].astype(dtype, copy=False) for t in tables])
    positives = np.concatenate([t[1] for t in tables])
    negatives = np.concatenate([t[2] for t in tables])
    # Stable sort of a concatenation of sorted runs is a cheap run merge (timsort).
    order = np.argsort(values, kind="stable")
    values = values[order]
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    return (
        values[starts],
        np.add.reduceat(positives[order], starts),
        np.add.reduceat(negatives[order], starts),
    )


def _empty_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64))


class PixelMetrics:
    """Exact, memory-bounded pixel-level AP / FPR95 / AUROC over a whole dataset.

    Instead of keeping every score, the accumulator keeps a histogram keyed by the exact score
    value: ``(value, #anomaly pixels, #in-distribution pixels)`` per distinct value, sorted.
    Because scikit-learn's curves only depend on these counts (tied scores form one
    threshold), the metrics are identical to running scikit-learn on all pixels at once, while
    memory grows with the number of *distinct* scores (fusion fills with -1, ignore regions
    with -30, float32 scores have limited resolution), not with the number of pixels.

    Labels: ``1`` = anomaly (positive), ``0`` = in-distribution, ``ignore_label`` = skipped;
    any other value is an error. Scores keep their dtype (float16 is widened to float32,
    integers to float64), so ties are exactly the input's ties.
    """

    def __init__(self, ignore_label: int = 255) -> None:
        self.ignore_label = int(ignore_label)
        self._table = _empty_table()
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        """Add one image (or any batch of pixels).

        Args:
            scores: ``[H, W]`` (any shape) float, higher = more anomalous.
            labels: same shape, integer in ``{0, 1, ignore_label}``.
        """
        scores_np = _score_array(scores, "scores")
        labels_np = _to_numpy(labels, "labels")
        if scores_np.shape != labels_np.shape:
            raise ValueError(
                f"scores and labels must have the same shape, got {scores_np.shape} "
                f"and {labels_np.shape}"
            )
        if labels_np.dtype.kind not in "biu":
            raise ValueError(f"labels must be integers, got dtype {labels_np.dtype}")
        keep = labels_np != self.ignore_label
        kept_labels = labels_np[keep]
        positive = kept_labels == 1
        if not (positive | (kept_labels == 0)).all():
            bad = np.setdiff1d(np.unique(kept_labels), [0, 1])
            raise ValueError(
                f"labels must be 0 (in-distribution), 1 (anomaly) or {self.ignore_label} "
                f"(ignored); found {bad[:10].tolist()}"
            )
        values, inverse = np.unique(scores_np[keep], return_inverse=True)
        inverse = inverse.reshape(-1)
        pos = np.bincount(inverse[positive], minlength=values.size).astype(np.int64)
        neg = np.bincount(inverse[~positive], minlength=values.size).astype(np.int64)
        self._pending.append((values, pos, neg))
        self._pending_size += values.size
        # Log-structured merging: fold pending tables in once they outgrow the main table,
        # so each distinct value is re-merged O(log #updates) times, not once per update.
        if self._pending_size >= max(self._table[0].size, 1 << 16):
            self._compact()

    def _compact(self) -> None:
        if self._pending:
            self._table = _merge_tables([self._table, *self._pending])
            self._pending = []
            self._pending_size = 0

    def merge(self, other: PixelMetrics) -> PixelMetrics:
        """Fold ``other``'s pixels into this accumulator (in place); returns ``self``."""
        if other.ignore_label != self.ignore_label:
            raise ValueError(
                f"cannot merge PixelMetrics with ignore labels {self.ignore_label} "
                f"and {other.ignore_label}"
            )
        other._compact()
        self._pending.append(other._table)
        self._pending_size += other._table[0].size
        self._compact()
        return self

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values [T] ascending unique, positives [T] int64, negatives [T] int64)``."""
        self._compact()
        return self._table

    @property
    def num_positive(self) -> int:
        return int(self.counts()[1].sum())

    @property
    def num_negative(self) -> int:
        return int(self.counts()[2].sum())

    def compute(self) -> dict[str, float]:
        """``{"ap", "fpr95", "auroc"}`` as fractions in [0, 1].

        Raises:
            ValueError: if no anomaly or no in-distribution pixel was seen (the metrics are
                undefined; scikit-learn warns and returns NaN or a meaningless value).
        """
        _, positives, negatives = self.counts()
        return _ranking_metrics(positives[::-1], negatives[::-1])


def _ranking_metrics(positives: np.ndarray, negatives: np.ndarray) -> dict[str, float]:
    """AP, FPR95 and AUROC from per-threshold counts sorted by *descending* score.

    Reproduces scikit-learn 1.9 operation by operation: ``tps``/``fps`` are its cumulative
    counts at the distinct thresholds; AP is ``-sum(diff(recall) * precision[:-1])`` over the
    reversed curve with the (recall 0, precision 1) end point; the ROC keeps only the points
    ``roc_curve(drop_intermediate=True)`` keeps (a corner in fps or tps), which matters for
    FPR95 ("first ROC point with TPR > 0.95"), then prepends (0, 0).
    """
    tps = np.cumsum(positives, dtype=np.float64)
    fps = np.cumsum(negatives, dtype=np.float64)
    if tps.size == 0 or tps[-1] == 0:
        raise ValueError("no anomaly pixels (label 1) among the evaluated pixels")
    if fps[-1] == 0:
        raise ValueError("no in-distribution pixels (label 0) among the evaluated pixels")

    # Average precision (precision_recall_curve has drop_intermediate=False by default).
    precision = tps / (tps + fps)  # every threshold holds >= 1 pixel, so no 0/0
    recall = tps / tps[-1]
    precision = np.concatenate((precision[::-1], [1.0]))
    recall = np.concatenate((recall[::-1], [0.0]))
    ap = float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))

    # ROC curve as roc_curve returns it.
    if fps.size > 2:
        corner = np.logical_or(np.diff(fps, 2), np.diff(tps, 2))
        keep = np.flatnonzero(np.concatenate(([True], corner, [True])))
        fps, tps = fps[keep], tps[keep]
    fps = np.concatenate(([0.0], fps))
    tps = np.concatenate(([0.0], tps))
    fpr = fps / fps[-1]
    tpr = tps / tps[-1]
    auroc = float(np.trapezoid(tpr, fpr))
    # tpr is non-decreasing and ends at 1, so a point with TPR > 0.95 exists.
    fpr95 = float(fpr[np.searchsorted(tpr, 0.95, side="right")])
    return {"ap": ap, "fpr95": fpr95, "auroc": auroc}


def pixel_metrics(
    scores: ArrayLike, labels: ArrayLike, ignore_label: int = 255
) -> dict[str, float]:
    """Pixel-level ``{"ap", "fpr95", "auroc"}`` of one array of scores (any shape).

    Args:
        scores: float array, higher = more anomalous; e.g. ``[N, H, W]`` for a dataset.
        labels: integer array of the same shape in ``{0, 1, ignore_label}``.
    """
    accumulator = PixelMetrics(ignore_label)
    accumulator.update(scores, labels)
    return accumulator.compute()


# --------------------------------------------------------------------------------------------
# Instance level (Cityscapes protocol)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Point level (Table 4)
# --------------------------------------------------------------------------------------------


class PointMetrics:
    """Precision / recall of prompt points against anomaly instances.

    precision = (points on a pixel with ``instance_ids > 0``) / (all points);
    recall = (instances containing at least one point) / (all instances). Every instance
    counts, whatever its size. Points are ``(x, y)`` pixel coordinates; fractional
    coordinates are rounded to the nearest pixel.
    """

    def __init__(self) -> None:
        self.points = 0
        self.points_on_anomaly = 0
        self.instances = 0
        self.instances_hit = 0

    def update(self, points: ArrayLike, instance_ids: ArrayLike) -> None:
        """Add one image: ``points [N, 2]`` (x, y), ``instance_ids [H, W]`` int."""
        ids = _to_numpy(instance_ids, "instance_ids")
        if ids.ndim != 2 or ids.dtype.kind not in "biu":
            raise ValueError(
                f"instance_ids must be an integer [H, W] array, got {ids.dtype} {ids.shape}"
            )
        xy = _to_numpy(points, "points")
        if xy.size == 0:
            xy = xy.reshape(0, 2)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"points must be [N, 2] (x, y), got shape {xy.shape}")
        xy = np.rint(xy).astype(np.int64)
        height, width = ids.shape
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
        if not inside.all():
            raise ValueError(
                f"points outside the {width}x{height} image: {xy[~inside][:5].tolist()}"
            )
        hit = ids[xy[:, 1], xy[:, 0]]
        instance_values = np.unique(ids[ids > 0])
        self.points += int(xy.shape[0])
        self.points_on_anomaly += int(np.count_nonzero(hit > 0))
        self.instances += int(instance_values.size)
        self.instances_hit += int(np.intersect1d(instance_values, hit).size)

    def merge(self, other: PointMetrics) -> PointMetrics:
        """Add ``other``'s counts (in place); returns ``self``."""
        self.points += other.points
        self.points_on_anomaly += other.points_on_anomaly
        self.instances += other.instances
        self.instances_hit += other.instances_hit
        return self

    def compute(self) -> dict[str, float]:
        """``{"precision", "recall"}``; NaN where the denominator is zero."""
        return {
            "precision": self.points_on_anomaly / self.points if self.points else float("nan"),
            "recall": self.instances_hit / self.instances if self.instances else float("nan"),
        }


def point_metrics(
    points: Sequence[ArrayLike], instance_ids: Sequence[ArrayLike]
) -> dict[str, float]:
    """Point ``{"precision", "recall"}`` over images (see :class:`PointMetrics`).

    Args:
        points: per image ``[N, 2]`` (x, y) pixel coordinates.
        instance_ids: per image ``[H, W]`` int, 0 = no anomaly.
    """
    if len(points) != len(instance_ids):
        raise ValueError(f"got {len(points)} point sets but {len(instance_ids)} label maps")
    accumulator = PointMetrics()
    for image_points, ids in zip(points, instance_ids, strict=True):
        accumulator.update(image_points, ids)
    return accumulator.compute()


# --------------------------------------------------------------------------------------------
# Component level (SegmentMeIfYouCan)
# --------------------------------------------------------------------------------------------

# sIoU thresholds of SegmentMeIfYouCan's mean F1: np.linspace(0.25, 0.75, 11), bit for bit.
SMIYC_SIOU_THRESHOLDS: np.ndarray = np.linspace(0.25, 0.75, 11, endpoint=True)


def _components(mask: np.ndarray) -> np.ndarray:
    """8-connected components of a bool ``[H, W]`` map as int32 ids (0 = background)."""
    import cv2  # local: the rest of this module needs no OpenCV

    _, ids = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return ids


class ComponentMetrics:
    """SegmentMeIfYouCan's component-level metrics: mean sIoU, mean PPV and mean F1.

    Per frame, as the benchmark's ``default_instancer`` and ``segment_metrics`` do: predicted
    components are the 8-connected components of ``scores > threshold`` off void; those under
    ``min_segment_size`` pixels are dropped. Ground-truth components (8-connected, label 1)
    under ``min_instance_size`` pixels become void. On the remaining (non-void) pixels:

    - sIoU of a ground-truth component ``k`` = ``|k ∩ P| / (|k| + |P \\ (all GT)|)`` with
      ``P`` the union of predicted components touching ``k`` (the benchmark's adjusted union:
      other ground-truth components' pixels do not count against ``k``);
    - PPV of a predicted component ``p`` = ``|p ∩ GT| / |p|``;
    - at each sIoU threshold ``t`` of :data:`SMIYC_SIOU_THRESHOLDS`: TP = components with
      sIoU >= t, FN = the others, FP = predicted components with PPV < t;
      F1(t) = 2 TP / (2 TP + FN + FP); mean F1 = mean over ``t``.

    The benchmark's defaults are ``min_segment_size=500, min_instance_size=100`` (anomaly
    track) and ``50, 10`` (obstacle track). ``threshold`` is the benchmark's ``thresh_p``.
    """

    def __init__(
        self,
        threshold: float,
        *,
        min_segment_size: int = 500,
        min_instance_size: int = 100,
        ignore_label: int = 255,
    ) -> None:
        self.threshold = float(threshold)
        self.min_segment_size = int(min_segment_size)
        self.min_instance_size = int(min_instance_size)
        self.ignore_label = int(ignore_label)
        self._siou_gt: list[np.ndarray] = []
        self._siou_pred: list[np.ndarray] = []
        self._ppv: list[np.ndarray] = []

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        """Add one frame: ``scores [H, W]`` float, ``labels [H, W]`` in {0, 1, ignore}."""
        scores_np = _score_array(scores, "scores")
        labels_np = _to_numpy(labels, "labels")
        if scores_np.ndim != 2 or scores_np.shape != labels_np.shape:
            raise ValueError(
                f"scores and labels must be equal [H, W] arrays, got {scores_np.shape} "
                f"and {labels_np.shape}"
            )
        valid = labels_np != self.ignore_label
        gt_ids = _components(labels_np == 1)
        pred_ids = _components((scores_np > self.threshold) & valid)
        small_pred = np.bincount(pred_ids.reshape(-1)) < self.min_segment_size
        small_pred[0] = False
        pred_ids[small_pred[pred_ids]] = 0
        # The benchmark voids small ground-truth components, including (index 0) the whole
        # background when it is smaller than min_instance_size.
        small_gt = np.bincount(gt_ids.reshape(-1)) < self.min_instance_size
        roi = valid & ~small_gt[gt_ids]
        gt, pred = gt_ids[roi], pred_ids[roi]
        num_gt, num_pred = int(gt_ids.max()) + 1, int(pred_ids.max()) + 1
        table = np.bincount(gt * num_pred + pred, minlength=num_gt * num_pred).reshape(
            num_gt, num_pred
        )
        gt_present = table[1:].sum(axis=1) > 0
        pred_present = table[:, 1:].sum(axis=0) > 0
        overlap = table[1:, 1:][gt_present][:, pred_present]  # [G, P] pixels in common
        touching = (overlap > 0).astype(np.int64)
        background_of_pred = table[0, 1:][pred_present]  # predicted pixels on no GT
        gt_uncovered = table[1:, 0][gt_present]  # GT pixels under no prediction
        gt_size = overlap.sum(axis=1) + gt_uncovered
        pred_size = overlap.sum(axis=0) + background_of_pred
        gt_hit = overlap.sum(axis=1)
        pred_hit = overlap.sum(axis=0)
        self._siou_gt.append(gt_hit / (gt_size + touching @ background_of_pred))
        self._siou_pred.append(pred_hit / (pred_size + touching.T @ gt_uncovered))
        self._ppv.append(pred_hit / pred_size)

    def merge(self, other: ComponentMetrics) -> ComponentMetrics:
        """Append ``other``'s frames (in place); returns ``self``."""
        self._siou_gt += other._siou_gt
        self._siou_pred += other._siou_pred
        self._ppv += other._ppv
        return self

    def compute(self) -> dict[str, float]:
        """``{"siou", "ppv", "mean_f1"}`` as fractions (NaN where nothing was counted)."""
        siou = np.concatenate(self._siou_gt) if self._siou_gt else np.empty(0)
        ppv = np.concatenate(self._ppv) if self._ppv else np.empty(0)
        tp = (siou[None, :] >= SMIYC_SIOU_THRESHOLDS[:, None]).sum(axis=1)
        fn = siou.size - tp
        fp = (ppv[None, :] < SMIYC_SIOU_THRESHOLDS[:, None]).sum(axis=1)
        denominator = 2 * tp + fn + fp
        f1 = np.divide(2 * tp, denominator, out=np.full(tp.shape, np.nan), where=denominator > 0)
        return {
            "siou": float(siou.mean()) if siou.size else float("nan"),
            "ppv": float(ppv.mean()) if ppv.size else float("nan"),
            "mean_f1": float(f1.mean()),
        }
