"""The host path as it was before the host-cost work: the baseline of ``host_cost.py``.

Same outputs as the product code (``host_cost.py`` checks that), slower: every mask is
RLE-encoded in compaction through ``np.asfortranarray``, then decoded, boxed, summed and
encoded again in rows; the fused map is PNG-encoded for every frame; and frames of a failed
batch are retried by a second RunInference joined to the first by a ``Flatten``, which keeps
the runner from fusing inference with rows. It exists only to be measured against.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np
import torch
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from pipelines.elements import DecodedFrame, FrameInference, dead_letter_failures
from pipelines.geometry import points_to_frame, resize_nearest
from pipelines.mining.inference import UGainSModelHandler, encode_score_map
from pipelines.mining.rows import RunContext, _crop_png, _identity, row_embeddings
from transforms.masks import crop_box_with_margin, decode_rle, masks_to_xywh


def fortran_encode_rle(masks: torch.Tensor) -> list[str]:
    """``encode_rle`` through ``np.asfortranarray`` (48 of its 54 ms at 1024x2048)."""
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    array = np.asfortranarray(masks.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
    return [rle["counts"].decode("ascii") for rle in mask_utils.encode(array)]


def compact_result(
    result: Any, *, store_semantic: bool = False, store_maps: bool = True
) -> FrameInference:
    """Compaction with the fused-map PNG made for every frame (``store_maps`` is not read)."""
    import cv2

    fused = result.fused_score.numpy()
    fused_png, low, high = encode_score_map(fused)
    semantic = None
    if store_semantic:
        semantic = cv2.imencode(".png", result.semantic.numpy())[1].tobytes()
    return FrameInference(
        size=tuple(fused.shape),
        mask_rles=tuple(fortran_encode_rle(result.masks)),
        scores=result.scores.numpy().astype(np.float32),
        sam_iou=result.sam_iou.numpy().astype(np.float32),
        points=result.points.numpy().astype(np.int64).reshape(-1, 2),
        max_anomaly_score=float(result.anomaly_score.max()),
        max_fused_score=high,
        fused_png=fused_png,
        fused_min=low,
        fused_max=high,
        semantic_png=semantic,
        gated=bool(result.gated),
        timings=dict(result.timings),
        embeddings=None
        if result.embeddings is None
        else result.embeddings.numpy().astype(np.float16),
    )


def instance_rows(
    frame: DecodedFrame, result: FrameInference, ctx: RunContext
) -> list[dict[str, Any]]:
    """Rows with each mask decoded, resized, boxed, summed and encoded again."""
    size = frame.size
    embeddings = row_embeddings(result)
    rows: list[dict[str, Any]] = []
    for i, counts in enumerate(result.mask_rles):
        small = decode_rle(counts, *result.size).numpy()
        mask = torch.from_numpy(resize_nearest(small, size))[None]
        area = int(mask.sum())
        if area == 0:
            continue
        box = masks_to_xywh(mask)
        crop = crop_box_with_margin(box, size, ctx.crop_margin, ctx.min_crop_margin)[0].tolist()
        x, y, w, h = box[0].tolist()
        point = np.asarray(result.points[i]).reshape(1, 2)
        point_x, point_y = points_to_frame(point, result.size, size)[0].tolist()
        index = len(rows)
        rows.append(
            {
                **_identity(ctx, frame.ref),
                "frame_height": size[0],
                "frame_width": size[1],
                "instance_index": index,
                "instance_id": f"{frame.ref.key}#{index}",
                "score": float(result.scores[i]),
                "sam_iou": float(result.sam_iou[i]),
                "area": area,
                "bbox_x": x,
                "bbox_y": y,
                "bbox_w": w,
                "bbox_h": h,
                "point_x": point_x,
                "point_y": point_y,
                "mask_rle": fortran_encode_rle(mask)[0],
                "crop_png": _crop_png(frame.image, tuple(crop)),
                "crop_x": crop[0],
                "crop_y": crop[1],
                "crop_w": crop[2],
                "crop_h": crop[3],
                "embedding": embeddings[i],
                "track_id": None,
                **ctx.provenance(),
            }
        )
    return rows


class FlattenRetryRunUGainS(beam.PTransform):
    """Batched RunInference, then a one-by-one RunInference of failed batches, Flattened."""

    def __init__(self, handler: UGainSModelHandler, model_identifier: str) -> None:
        super().__init__()
        self.handler = handler
        self.model_identifier = model_identifier

    def expand(self, frames: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        keyed = frames | "KeyByFrame" >> beam.Map(lambda frame: (frame.ref.key, frame))
        results, dead = (
            keyed
            | "Batched"
            >> RunInference(
                KeyedModelHandler(self.handler), model_identifier=self.model_identifier
            ).with_exception_handling()
        )
        retried, still_dead = (
            dead.failed_inferences
            | "UnbatchFailed" >> beam.FlatMap(lambda bad: list(bad[0]))
            | "OneByOne"
            >> RunInference(
                KeyedModelHandler(self.handler), model_identifier=self.model_identifier
            ).with_exception_handling()
        )
        failures = still_dead.failed_inferences | "InferenceFailures" >> beam.FlatMap(
            lambda bad: dead_letter_failures("inference", [f.ref for _, f in bad[0]], bad[1])
        )
        merged = (results, retried) | "AllResults" >> beam.Flatten()
        return merged, failures
