"""Versioned Parquet schemas of a mining run's tables.

A run directory holds::

    instances/   every anomaly instance found (sharded Parquet files)
    candidates.parquet   the global top-N objects (best sighting of each track; or every
                 instance with ``output.rank_by: instance``), ``rank`` 1..N by descending score
    tracks/      one row per object: a log's instances linked across frames
    frames/      one row per processed frame (status, max scores, timings, stored maps)
    errors/      one row per input frame that could not be processed, with the reason
    maps/        optional 8-bit PNG score maps and semantic maps referenced by ``frames``
    run.json     run id, config fingerprint, checkpoints, ugains version, counts
    plan/        units.jsonl: the frames the run set out to mine (read by the workers)

Each table carries its name and version in the Parquet key-value metadata
(``ugains.table`` / ``ugains.schema_version``) so readers can refuse files they do not know.
Version 2 added the ``embedding`` and ``track_id`` columns of instances, the track columns of
candidates and the ``tracks`` table; version-1 runs are read with those columns null
(:func:`pipelines.mining.tables.read_table`; :func:`embedding_matrix` reads a null or zero
embedding as "none"). Column meanings are documented in README.md
("Output tables").
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
EMBEDDING_DIM = 256  # SAM's image-feature channels: every SAM has 256
# Columns a version-1 file lacks; readers fill them with nulls.
ADDED_IN_VERSION_2 = {
    "instances": ("embedding", "track_id"),
    "candidates": ("embedding", "track_id", "track_frames", "duplicate_of"),
}
EMBEDDING_TYPE = pa.list_(pa.float16(), EMBEDDING_DIM)

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


def embedding_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An ``embedding`` column -> ``[N, 256]`` float32; rows without one (null) are zeros."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    out = np.zeros((len(column), EMBEDDING_DIM), np.float32)
    valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), bool)
    if valid.any():
        values = column.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
        out[valid] = values.astype(np.float32).reshape(-1, EMBEDDING_DIM)
    return out


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
        # SAM's image features inside the mask, unit length (float16 x 256); all zeros without
        # SAM. Not nullable: Arrow cannot read back a null in a fixed-size list from Parquet.
        pa.field("embedding", EMBEDDING_TYPE, nullable=False),
        pa.field("track_id", pa.string()),  # the object's track (tracks table); null if off
        *_PROVENANCE_FIELDS,
    ],
)

CANDIDATES_SCHEMA = _with_metadata(
    "candidates",
    [
        pa.field("rank", pa.int32(), nullable=False),
        *INSTANCES_SCHEMA,
        pa.field("track_frames", pa.int32()),  # frames its track was seen in; null by instance
        pa.field("duplicate_of", pa.string()),  # near-duplicate of this track (another log)
    ],
)

TRACKS_SCHEMA = _with_metadata(
    "tracks",
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),  # its first sighting's instance_id
        pa.field("log_id", pa.string(), nullable=False),
        pa.field("first_frame_index", pa.int64(), nullable=False),
        pa.field("last_frame_index", pa.int64(), nullable=False),
        pa.field("frames_seen", pa.int32(), nullable=False),  # frames the object was seen in
        pa.field("instances", pa.int32(), nullable=False),  # its instances (one frame may
        # hold several: the object outlined twice)
        pa.field("best_instance_id", pa.string(), nullable=False),  # highest score
        pa.field("best_score", pa.float32(), nullable=False),
        pa.field("mean_score", pa.float32(), nullable=False),
        pa.field("min_score", pa.float32(), nullable=False),
        # mean of the sightings' embeddings, unit length; all zeros without SAM
        pa.field("embedding", EMBEDDING_TYPE, nullable=False),
        # the best-ranked track of another log this one nearly duplicates, or null
        pa.field("duplicate_of", pa.string()),
        pa.field("config_fingerprint", pa.string(), nullable=False),
    ],
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
    "tracks": TRACKS_SCHEMA,
    "frames": FRAMES_SCHEMA,
    "errors": ERRORS_SCHEMA,
}
