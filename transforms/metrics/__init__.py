"""Evaluation metrics of the paper's protocol (docs/method.md, "Evaluation"), one module per level.

Each level is an accumulator (``update`` per image, ``merge`` for distributed
combining, ``compute`` at the end) and a one-call function over whole datasets:

- pixel level: :class:`PixelMetrics` / :func:`pixel_metrics` -> AP, FPR95, AUROC, equal to
  scikit-learn's ``average_precision_score`` / ``roc_curve`` / ``roc_auc_score`` over all
  non-ignored pixels, ties included;
- instance level: :class:`InstanceMetrics` / :func:`instance_ap` -> AP (overlaps
  0.50:0.05:0.95) and AP50, equal to ``cityscapesscripts``' ``evalInstanceLevelSemanticLabeling``
  with every prediction of one class and ``minRegionSizes = [min_region_size]``;
- point level (Table 4): :class:`PointMetrics` / :func:`point_metrics` -> precision and
  recall of prompt points;
- component level (SegmentMeIfYouCan): :class:`ComponentMetrics` -> sIoU, PPV, mean F1.

Inputs may be NumPy arrays or torch tensors (any device); everything is computed in NumPy on
the CPU. Pure functions: no I/O.
"""

from transforms.metrics.component import SMIYC_SIOU_THRESHOLDS, ComponentMetrics
from transforms.metrics.instance import CITYSCAPES_OVERLAPS, InstanceMetrics, instance_ap
from transforms.metrics.pixel import PixelMetrics, pixel_metrics
from transforms.metrics.point import PointMetrics, point_metrics

__all__ = [
    "CITYSCAPES_OVERLAPS",
    "SMIYC_SIOU_THRESHOLDS",
    "ComponentMetrics",
    "InstanceMetrics",
    "PixelMetrics",
    "PointMetrics",
    "instance_ap",
    "pixel_metrics",
    "point_metrics",
]
