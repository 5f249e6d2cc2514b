"""``ugains review``: turn a mining run into a FiftyOne dataset, review it, export the result.

Subcommands::

    ugains review build  --run RUN_DIR [--dataset NAME]      create or update the dataset
    ugains review export --dataset NAME --tag confirmed --format coco|cvat|fiftyone --out DIR
    ugains review pool   --dataset NAME --out DIR            confirmed crops + masks + manifest
    ugains review app    --dataset NAME [--host 127.0.0.1]   the FiftyOne App, local only

The dataset (persistent) has one sample per frame with candidates. Its fields:

- ``anomalies`` (``fo.Detections``, label ``"anomaly"``): normalised box, instance mask
  cropped to the box, ``confidence`` = the instance's mean anomaly score, and the attributes
  ``rank`` (in its run), ``sam_iou``, ``area`` (mask pixels) and ``mined_instance_id``
  (the tables' ``instance_id``; FiftyOne reserves that name);
- ``anomaly_map`` (``fo.Heatmap``): the fused score in score units (``range`` = the frame's
  ``[score_min, score_max]``, so the App's colour bar and hover values are scores), stored as
  a float map of at most 512 pixels a side; ``png_path`` is the run's full-resolution 8-bit
  PNG, which ``heatmap_scores`` maps back to scores;
- ``semantic`` (``fo.Segmentation``, Cityscapes train ids) when the run stored it;
- ``log_id``, ``frame_key``, ``frame_index``, ``timestamp``, ``frame_uri``, ``run_id``,
  ``max_score`` (best candidate), ``max_anomaly_score``, ``max_fused_score``.

Saved views: ``top-<K>`` (the K highest-scoring detections), ``log-<log id>`` per log, and
``anomaly-patches`` (one patch per detection, best first).

Review tags, set in the App on detections ("label tags") or on whole frames ("sample tags"):

- ``confirmed``: a real rare object; goes to ``export`` and to the outlier ``pool``;
- ``rejected``: a false positive (texture, shadow, in-distribution object);
- ``relabel``: a real object whose mask or box needs fixing by an annotator.

A detection carries a tag when it has the tag itself, or when its frame has the tag and the
detection has none of the three (its own tag wins over its frame's).

Rebuilding upserts by frame key: frames whose rows did not change are not written at all;
changed frames are replaced by the new run's rows, and a new detection inherits the tags
(and the id) of the old detection it overlaps with mask IoU >= 0.5. Old detections that
carry tags but match nothing are kept, so no review decision is lost. Sample tags are kept.
"""

from pipelines.review.dataset import BuildSummary, build_dataset
from pipelines.review.exports import export_tagged, tagged_view, write_pool
from pipelines.review.fields import (
    ANOMALIES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_MASK_TARGETS,
    EXPORT_FORMATS,
    LABEL,
    PATCHES_VIEW,
    RANKED_VIEW,
    REVIEW_TAGS,
    ReviewError,
)
from pipelines.review.runs import MiningRun, read_run
from pipelines.review.samples import decode_mask, heatmap_scores, mask_iou

__all__ = [
    "ANOMALIES",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_MASK_TARGETS",
    "EXPORT_FORMATS",
    "LABEL",
    "PATCHES_VIEW",
    "RANKED_VIEW",
    "REVIEW_TAGS",
    "BuildSummary",
    "MiningRun",
    "ReviewError",
    "build_dataset",
    "decode_mask",
    "export_tagged",
    "heatmap_scores",
    "mask_iou",
    "read_run",
    "tagged_view",
    "write_pool",
]
