"""Pixel level: AP, FPR95 and AUROC over all non-ignored pixels, exactly as scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transforms.metrics._arrays import ArrayLike, _score_array, _to_numpy


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

    def curves(self, max_points: int = 256) -> dict[str, list[list[float]]]:
        """The PR curve ``[[recall, precision], ...]`` and the ROC curve ``[[fpr, tpr], ...]``,
        each with at most ``max_points`` points (evenly spaced along the curve's thresholds,
        both ends kept): what ``compute`` integrates, for plotting.

        Raises:
            ValueError: as :meth:`compute`.
        """
        _, positives, negatives = self.counts()
        return _ranking_curves(positives[::-1], negatives[::-1], max_points)


def _cumulative_counts(
    positives: np.ndarray, negatives: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives above each threshold (counts by descending score), float64."""
    tps = np.cumsum(positives, dtype=np.float64)
    fps = np.cumsum(negatives, dtype=np.float64)
    if tps.size == 0 or tps[-1] == 0:
        raise ValueError("no anomaly pixels (label 1) among the evaluated pixels")
    if fps[-1] == 0:
        raise ValueError("no in-distribution pixels (label 0) among the evaluated pixels")
    return tps, fps


def _ranking_metrics(positives: np.ndarray, negatives: np.ndarray) -> dict[str, float]:
    """AP, FPR95 and AUROC from per-threshold counts sorted by *descending* score.

    Reproduces scikit-learn 1.9 operation by operation: ``tps``/``fps`` are its cumulative
    counts at the distinct thresholds; AP is ``-sum(diff(recall) * precision[:-1])`` over the
    reversed curve with the (recall 0, precision 1) end point; the ROC keeps only the points
    ``roc_curve(drop_intermediate=True)`` keeps (a corner in fps or tps), which matters for
    FPR95 ("first ROC point with TPR > 0.95"), then prepends (0, 0).
    """
    tps, fps = _cumulative_counts(positives, negatives)

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


def _ranking_curves(
    positives: np.ndarray, negatives: np.ndarray, max_points: int
) -> dict[str, list[list[float]]]:
    """Subsampled PR and ROC curves from per-threshold counts by descending score."""
    tps, fps = _cumulative_counts(positives, negatives)
    keep = np.unique(np.linspace(0, tps.size - 1, min(max_points, tps.size)).round().astype(int))
    tps, fps = tps[keep], fps[keep]
    recall, precision = tps / tps[-1], tps / (tps + fps)
    fpr, tpr = np.concatenate(([0.0], fps / fps[-1])), np.concatenate(([0.0], tps / tps[-1]))
    return {
        "pr": np.stack([recall, precision], axis=1).round(5).tolist(),
        "roc": np.stack([fpr, tpr], axis=1).round(5).tolist(),
    }


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
