"""Component level: SegmentMeIfYouCan's sIoU, PPV and mean F1 of thresholded scores."""

from __future__ import annotations

import numpy as np

from transforms.metrics._arrays import ArrayLike, _score_array, _to_numpy

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
