"""Versioned Parquet schemas of a mining run's tables.

A run directory holds::

    instances/   every anomaly instance found (sharded Parquet files)
    candidates.parquet   the global top-N instances, ``rank`` 1..N by descending score
    frames/      one row per processed frame (status, max scores, timings, stored maps)
    errors/      one row per input frame that could not be processed, with the reason
    maps/        optional 8-bit PNG score maps and semantic maps referenced by ``frames``
    run.json     run id, config fingerprint, checkpoints, ugains version, counts
    plan/        units.jsonl: the frames the run set out to mine (read by the workers)

Each table carries its name and version in the Parquet key-value metadata
(``ugains.table`` / ``ugains.schema_version``) so readers can refuse files they do not know.
Column meanings are documented in README.md ("Output tables").
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

# Columns shared by every per-frame table: where the frame came from.
_FRAME_ID_FIELDS = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("frame_key", pa.string(), nullable=False),  # stable: "<log_id>/<frame index>"
    pa.field("frame_uri", pa.string(), nullable=False),  # image URI, or "<video uri>#frame=<i>"
    pa.field("log_id", pa.string(), nullable=False),
    pa.field("frame_index", pa.int64(), nullable=False),
    pa.field("timestamp", pa.float64()),  # seconds; null when the source has none
]

_PROVENANCE_FIELDS = [
    pa.field("mask2former_checkpoint", pa.string()),
    pa.field("sam_checkpoint", pa.string()),
    pa.field("config_fingerprint", pa.string(), nullable=False),
    pa.field("ugains_version", pa.string(), nullable=False),
]


def _with_metadata(table: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(
        fields,
        metadata={"ugains.table": table, "ugains.schema_version": str(SCHEMA_VERSION)},
    )


INSTANCES_SCHEMA = _with_metadata(
    "instances",
    [
        *_FRAME_ID_FIELDS,
        pa.field("frame_height", pa.int32(), nullable=False),  # original frame pixels
        pa.field("frame_width", pa.int32(), nullable=False),
        pa.field("instance_index", pa.int32(), nullable=False),  # 0.. within the frame
        pa.field("instance_id", pa.string(), nullable=False),  # "<frame_key>#<instance_index>"
        pa.field("score", pa.float32(), nullable=False),  # mean anomaly score inside the mask
        pa.field("sam_iou", pa.float32(), nullable=False),  # SAM's predicted IoU
        pa.field("area", pa.int64(), nullable=False),  # mask pixels, original resolution
        pa.field("bbox_x", pa.int32(), nullable=False),  # xywh, original pixels, inclusive-
        pa.field("bbox_y", pa.int32(), nullable=False),  # exclusive: x in [bbox_x, bbox_x+bbox_w)
        pa.field("bbox_w", pa.int32(), nullable=False),
        pa.field("bbox_h", pa.int32(), nullable=False),
        pa.field("point_x", pa.int32(), nullable=False),  # SAM prompt, original pixels
        pa.field("point_y", pa.int32(), nullable=False),
        pa.field("mask_rle", pa.string(), nullable=False),  # COCO compressed RLE counts,
        # of the full-frame mask, size [frame_height, frame_width] (pycocotools order)
        pa.field("crop_png", pa.binary(), nullable=False),  # RGB crop around bbox + margin
        pa.field("crop_x", pa.int32(), nullable=False),  # the crop's box in frame pixels
        pa.field("crop_y", pa.int32(), nullable=False),
        pa.field("crop_w", pa.int32(), nullable=False),
        pa.field("crop_h", pa.int32(), nullable=False),
        *_PROVENANCE_FIELDS,
    ],
)

CANDIDATES_SCHEMA = _with_metadata(
    "candidates",
    [pa.field("rank", pa.int32(), nullable=False), *INSTANCES_SCHEMA],
)

FRAMES_SCHEMA = _with_metadata(
    "frames",
    [
        *_FRAME_ID_FIELDS,
        pa.field("status", pa.string(), nullable=False),  # "ok" | "gated" (SAM skipped)
        pa.field("frame_height", pa.int32(), nullable=False),
        pa.field("frame_width", pa.int32(), nullable=False),
        pa.field("num_instances", pa.int32(), nullable=False),
        pa.field("max_anomaly_score", pa.float32(), nullable=False),  # max of U
        pa.field("max_fused_score", pa.float32(), nullable=False),  # max of I + U
        # 8-bit PNG of the fused score: value = min + png / 255 * (max - min); null if not stored
        pa.field("fused_map_uri", pa.string()),
        pa.field("fused_map_min", pa.float32()),
        pa.field("fused_map_max", pa.float32()),
        pa.field("semantic_uri", pa.string()),  # 8-bit PNG of Cityscapes train ids, or null
        pa.field("decode_ms", pa.float32(), nullable=False),
        pa.field("inference_ms", pa.float32(), nullable=False),  # batch time / batch size
        # host time of the inference worker's post-processing (mask RLE, fused-map PNG)
        pa.field("compact_ms", pa.float32(), nullable=False),
        pa.field("rows_ms", pa.float32(), nullable=False),  # masks -> RLE, crops, rows
        *_PROVENANCE_FIELDS,
    ],
)

ERRORS_SCHEMA = _with_metadata(
    "errors",
    [
        *_FRAME_ID_FIELDS,
        pa.field("stage", pa.string(), nullable=False),  # "read" | "decode" | "inference" | "rows"
        pa.field("error_type", pa.string(), nullable=False),  # exception class name
        pa.field("reason", pa.string(), nullable=False),  # human-readable message
        pa.field("config_fingerprint", pa.string(), nullable=False),
    ],
)

TABLES: dict[str, pa.Schema] = {
    "instances": INSTANCES_SCHEMA,
    "candidates": CANDIDATES_SCHEMA,
    "frames": FRAMES_SCHEMA,
    "errors": ERRORS_SCHEMA,
}
