"""Host CPU per frame: what runs outside the models, before and after, in one run.

At 30 frames/s per GPU everything outside the two models runs on the host's cores. This
builds the workload of a busy frame (a real 1024x2048 road frame from the world, as PNG and
JPEG; a model result with 10 instances from 9 px to 5 % of the frame), calls the pipeline's own
functions on it, then runs ``ugains mine``'s pipeline over a folder of such frames with the
model stubbed (the model returns that result at once), and prints CPU milliseconds per frame
by stage with the cores one GPU needs at 30 frames/s. "before" is the host path the project
had (``benchmarks/host_baseline.py``); the script checks that both write the same rows.

    python -m benchmarks.host_cost [--frames 24] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks import host_baseline
from models.ugains import FrameResult
from pipelines.config import parse_config
from pipelines.elements import DecodedFrame, FrameRef
from pipelines.mining import inference as inference_module
from pipelines.mining import rows as rows_module
from pipelines.mining import run as mine_module
from pipelines.mining.decode import decode_image
from pipelines.mining.inference import CompactUGainS, UGainSModelHandler, compact_result
from pipelines.mining.rows import RunContext, instance_rows
from pipelines.mining.schema import EMBEDDING_DIM, INSTANCES_SCHEMA
from pipelines.world.generate import split_frame
from transforms.embeddings import mask_embeddings

SIZE = (1024, 2048)
FPS = 30.0
CTX = RunContext("bench", "/tmp/unused", "fp", "0", "m2f", "sam")
_IMAGE = split_frame(0, "test", 0, SIZE)[0]
FRAME = DecodedFrame(FrameRef("log/000000", "frame.png", "log", 0), _IMAGE, _IMAGE, 0.0)


def busy_result(size: tuple[int, int], count: int = 10, seed: int = 0) -> FrameResult:
    """A model result: ``count`` elliptic instances, areas log-spaced 9 px .. 5 % of the frame,
    each with a unit embedding."""
    rng = np.random.default_rng(seed)
    height, width = size
    areas = np.geomspace(9, 0.05 * height * width, count)[::-1]
    masks = np.zeros((count, height, width), np.uint8)
    for index, area in enumerate(areas):
        a = max(int(np.sqrt(area / np.pi) * 1.4), 1)
        b = max(int(area / (np.pi * a)), 1)
        centre = (int(rng.integers(a, width - a)), int(rng.integers(height // 2, height - b)))
        cv2.ellipse(masks[index], centre, (a, b), 0, 0, 360, 1, -1)
    anomaly = torch.from_numpy(rng.uniform(-1, 0, size).astype(np.float32))
    middle = [np.argwhere(m)[len(np.argwhere(m)) // 2][::-1] for m in masks]
    points = torch.from_numpy(np.array(middle, np.int64).reshape(-1, 2))
    return FrameResult(
        semantic=torch.from_numpy(rng.integers(0, 19, size, dtype=np.uint8)),
        anomaly_score=anomaly,
        fused_score=anomaly + 0.5,
        masks=torch.from_numpy(masks.astype(bool)),
        scores=torch.linspace(-0.1, -0.9, count),
        sam_iou=torch.full((count,), 0.9),
        points=points,
        prompt_points=points,
        gated=False,
        timings={"stub": 0.0},
        embeddings=torch.nn.functional.normalize(
            torch.from_numpy(rng.normal(size=(count, EMBEDDING_DIM)).astype(np.float32)), dim=1
        ),
    )


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "embedding": np.asarray(row["embedding"]).tolist()} for row in rows]


def cpu_ms(call: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median process CPU milliseconds of ``call`` over ``repeats`` calls (after a warm-up)."""
    result = call()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        result = call()
        times.append((time.process_time() - start) * 1e3)
    return statistics.median(times), result


def parquet_bytes(rows: list[dict[str, Any]]) -> int:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=INSTANCES_SCHEMA), sink, compression="zstd")
    return sink.tell()


class _StubStep:
    """The UGainS step's interface, returning a fixed result at once (the model is not timed)."""

    def __init__(self, result: FrameResult) -> None:
        self.result = result
        self.model_size = tuple(result.fused_score.shape)

    def __call__(self, batch: torch.Tensor) -> list[FrameResult]:
        return [self.result] * batch.shape[0]


def stub_handler(result: FrameResult) -> type[UGainSModelHandler]:
    class StubHandler(UGainSModelHandler):
        def load_model(self) -> CompactUGainS:
            return CompactUGainS(
                _StubStep(result), store_semantic=self.store_semantic, store_maps=self.store_maps
            )

    return StubHandler


def pipeline_cpu_ms(
    folder: Path, frames: int, result: FrameResult, before: bool, tracks: bool = True
) -> float:
    """CPU ms of a whole ``mine`` run (in-process DirectRunner) with a stubbed model; with
    ``tracks`` off the run ranks sightings and writes no tracks table."""
    with tempfile.TemporaryDirectory(prefix="host-cost-run-") as root:
        return _run_cpu_ms(folder, Path(root), frames, result, before, tracks)


def _run_cpu_ms(
    folder: Path, root: Path, frames: int, result: FrameResult, before: bool, tracks: bool
) -> float:
    output = {"root": str(root)}
    if not tracks:
        output |= {"rank_by": "instance", "tracks": {"enabled": False}}
    config = parse_config(
        {
            "name": "host-cost",
            "sources": [{"kind": "images", "path": str(folder)}],
            "models": {
                "device": "cpu",
                "mask2former": {"format": "random", "architecture": "tiny_1dl"},
                "sam": {"model_type": "vit_tiny"},
                "method": {"reference_size": list(SIZE)},
            },
            "inference": {"min_batch_size": 1, "max_batch_size": 4},
            "output": output,
        }
    )
    args = ["--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    with ExitStack() as patches:
        patches.enter_context(
            mock.patch.object(inference_module, "UGainSModelHandler", stub_handler(result))
        )
        if before:
            patches.enter_context(
                mock.patch.object(
                    inference_module, "RunUGainS", host_baseline.FlattenRetryRunUGainS
                )
            )
            patches.enter_context(
                mock.patch.object(inference_module, "compact_result", host_baseline.compact_result)
            )
            patches.enter_context(
                mock.patch.object(rows_module, "instance_rows", host_baseline.instance_rows)
            )
        start = resource.getrusage(resource.RUSAGE_SELF)
        outcome = mine_module.mine(config, beam_args=args, check_models=False)
        end = resource.getrusage(resource.RUSAGE_SELF)
    assert outcome.counts["frames"] == frames, outcome.counts
    return ((end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)) * 1e3


def marginal_run_ms(
    png: bytes, frames: int, result: FrameResult, before: bool, tracks: bool = True
) -> float:
    """CPU ms per additional frame: runs of ``frames`` and ``2 * frames`` frames, differenced,
    so that the run's fixed costs (Beam start-up, tables, ledger) cancel."""
    spent = []
    for count in (frames, 2 * frames):
        with tempfile.TemporaryDirectory(prefix="host-cost-frames-") as folder:
            for index in range(count):
                Path(folder, f"{index:06d}.png").write_bytes(png)
            spent.append(pipeline_cpu_ms(Path(folder), count, result, before, tracks))
    return (spent[1] - spent[0]) / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24, help="frames of the pipeline runs")
    parser.add_argument("--repeats", type=int, default=7, help="calls per stage measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenCV threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    image = _IMAGE
    bgr = np.ascontiguousarray(image[..., ::-1])
    png = cv2.imencode(".png", bgr)[1].tobytes()
    jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    result = busy_result(SIZE)
    frame = FRAME
    reps = args.repeats

    decode_png, _ = cpu_ms(lambda: decode_image(png, "frame.png", min_side=1, max_side=8192), reps)
    decode_jpeg, _ = cpu_ms(lambda: decode_image(jpeg, "f.jpg", min_side=1, max_side=8192), reps)
    compact_before, old = cpu_ms(lambda: host_baseline.compact_result(result), reps)
    compact_after, new = cpu_ms(lambda: compact_result(result), reps)
    empty = busy_result(SIZE, count=0)
    compact_empty_before, _ = cpu_ms(lambda: host_baseline.compact_result(empty), reps)
    compact_empty_after, _ = cpu_ms(lambda: compact_result(empty), reps)
    rows_before, old_rows = cpu_ms(lambda: host_baseline.instance_rows(frame, old, CTX), reps)
    rows_after, new_rows = cpu_ms(lambda: instance_rows(frame, new, CTX), reps)
    same_rows = _comparable(old_rows) == _comparable(new_rows)
    if old.mask_rles != new.mask_rles or not same_rows or old.fused_png != new.fused_png:
        raise SystemExit("before and after disagree: the optimised host path changed outputs")
    parquet, _ = cpu_ms(lambda: parquet_bytes(new_rows), reps)

    run_before = marginal_run_ms(png, args.frames, result, before=True)
    run_after = marginal_run_ms(png, args.frames, result, before=False)

    stages_before = decode_png + compact_before + rows_before + parquet
    stages_after = decode_png + compact_after + rows_after + parquet
    table = [
        (
            "decode, PNG (JPEG)",
            f"{decode_png:.1f} ({decode_jpeg:.1f})",
            f"{decode_png:.1f} ({decode_jpeg:.1f})",
        ),
        ("compact_result (RLE, fused PNG)", f"{compact_before:.1f}", f"{compact_after:.1f}"),
        (
            "  same, frame without instances",
            f"{compact_empty_before:.1f}",
            f"{compact_empty_after:.1f}",
        ),
        ("rows (10 instances, crops)", f"{rows_before:.1f}", f"{rows_after:.1f}"),
        ("Parquet", f"{parquet:.1f}", f"{parquet:.1f}"),
        ("host stages, sum", f"{stages_before:.1f}", f"{stages_after:.1f}"),
        (
            "  same, JPEG frames",
            f"{stages_before - decode_png + decode_jpeg:.1f}",
            f"{stages_after - decode_png + decode_jpeg:.1f}",
        ),
        ("`mine` run, stubbed model, per extra frame", f"{run_before:.1f}", f"{run_after:.1f}"),
        (
            "  runner overhead (run - stages)",
            f"{run_before - stages_before:.1f}",
            f"{run_after - stages_after:.1f}",
        ),
        (
            "cores per GPU at 30 frames/s (run)",
            f"{run_before * FPS / 1e3:.2f}",
            f"{run_after * FPS / 1e3:.2f}",
        ),
    ]
    print(
        f"Host CPU ms per frame, {SIZE[0]}x{SIZE[1]}, 10 instances, torch/OpenCV threads "
        f"{args.threads}; runs of {args.frames} and {2 * args.frames} frames differenced; "
        f"{os.cpu_count()} CPUs; before and after write identical rows"
    )
    width = max(len(row[0]) for row in table)
    print(f"| {'stage':<{width}} | before | after |")
    print(f"| {'-' * width} | ---: | ---: |")
    for name, before, after in table:
        print(f"| {name:<{width}} | {before} | {after} |")
    print()
    print_curation_cost(png, result, args.frames, reps, stages_after)


def linking_ms(frames: int, per_frame: int, repeats: int) -> tuple[float, float]:
    """CPU ms per frame to link a log of ``frames`` frames with ``per_frame`` instances each
    (boxes drifting and growing as road objects do, random unit embeddings), and to flag
    near-duplicates among its tracks."""
    from pipelines.config import TracksConfig
    from pipelines.mining.tracks import flag_near_duplicates, tracks_of_log

    rng = np.random.default_rng(0)
    rows = []
    for frame in range(frames):
        for index in range(per_frame):
            size = 10.0 * 1.15 ** (frame % 8) + index
            vector = rng.normal(size=EMBEDDING_DIM)
            rows.append(
                {
                    "instance_id": f"log/{frame:06d}#{index}",
                    "frame_index": frame,
                    "score": float(rng.uniform(-1, 0)),
                    "bbox_x": 100 * index + 3 * (frame % 8),
                    "bbox_y": 500 + 4 * (frame % 8),
                    "bbox_w": int(size),
                    "bbox_h": int(size),
                    "embedding": (vector / np.linalg.norm(vector)).astype(np.float16),
                }
            )
    config = TracksConfig()
    link, (_, tracks) = cpu_ms(lambda: tracks_of_log("log", rows, config, "r", "fp"), repeats)
    other = [{**t, "log_id": "other", "track_id": "o" + t["track_id"]} for t in tracks]
    flag, _ = cpu_ms(lambda: flag_near_duplicates(tracks + other, 0.95), repeats)
    return link / frames, flag / (2 * frames)


def print_curation_cost(
    png: bytes, result: FrameResult, frames: int, repeats: int, stages: float
) -> None:
    """What embeddings and tracks add per frame (issue: <= 5 % of the host time)."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn((EMBEDDING_DIM, 64, 64), generator=generator)  # SAM at S = 1024
    pooling, _ = cpu_ms(lambda: mask_embeddings(features, result.masks, 1024), repeats)
    no_embedding = dataclasses.replace(result, embeddings=None)
    rows_with, rows = cpu_ms(lambda: instance_rows(FRAME, compact_result(result), CTX), repeats)
    rows_without, bare = cpu_ms(
        lambda: instance_rows(FRAME, compact_result(no_embedding), CTX), repeats
    )
    bytes_with, bytes_without = parquet_bytes(rows), parquet_bytes(bare)
    link, flag = linking_ms(200, 10, repeats)
    runs_on = [marginal_run_ms(png, frames, result, before=False) for _ in range(2)]
    runs_off = [marginal_run_ms(png, frames, result, before=False, tracks=False) for _ in range(2)]
    on, off = statistics.median(runs_on), statistics.median(runs_off)
    added = max(rows_with - rows_without, 0.0) + link + flag
    print("Embeddings and tracks, CPU ms per frame (10 instances):")
    table = [
        ("mask pooling of the embeddings (model step; on the GPU there)", f"{pooling:.1f}"),
        ("compact + rows, without / with embeddings", f"{rows_without:.1f} / {rows_with:.1f}"),
        ("Parquet bytes of the frame's rows, without / with", f"{bytes_without} / {bytes_with}"),
        ("link tracks (a 200-frame log), per frame", f"{link:.2f}"),
        ("near-duplicates over its tracks (two logs), per frame", f"{flag:.2f}"),
        (
            "host time added (rows + linking + near-duplicates), share of the host stages",
            f"{added:.2f} ({added / stages * 100:.1f} %)",
        ),
        (
            "`mine` run per extra frame, tracks off / on (2 runs each, median; noisy)",
            f"{off:.1f} / {on:.1f}",
        ),
    ]
    width = max(len(row[0]) for row in table)
    print(f"| {'what':<{width}} | value |")
    print(f"| {'-' * width} | ---: |")
    for name, value in table:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    main()
