"""Point level (the paper's Table 4): precision and recall of prompt points."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transforms.metrics._arrays import ArrayLike, _to_numpy


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
