"""Frames/s of the real mining pipeline (DirectRunner), including decode, Parquet and PNG I/O.

Used by ``python -m benchmarks.throughput --pipeline-frames N``; runs alone as
``python -m benchmarks.pipeline_throughput --frames 200``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.scenes import draw_scene
from models.untrained import write_untrained_checkpoints
from pipelines.config import parse_config
from pipelines.mining.run import mine


def run_pipeline(setting, frames: int, device: torch.device, batch_size: int) -> str:
    """Mine ``frames`` synthetic frames at ``setting.size``; returns a one-line report."""
    with tempfile.TemporaryDirectory(prefix="ugains-bench-") as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        log = root / "log"
        log.mkdir()
        for index in range(frames):
            cv2.imwrite(str(log / f"frame_{index:06d}.png"), draw_scene(rng, setting.size))
        m2f_dir, sam_path = write_untrained_checkpoints(root, setting.mask2former, setting.sam)
        config = parse_config(
            {
                "name": "pipeline-benchmark",
                "sources": [{"kind": "images", "path": str(log)}],
                "models": {
                    "device": str(device),
                    "mask2former": {"format": "huggingface", "checkpoint": str(m2f_dir)},
                    "sam": {"model_type": setting.sam, "checkpoint": str(sam_path)},
                    "method": {"reference_size": list(setting.size)},
                },
                "inference": {"min_batch_size": batch_size, "max_batch_size": batch_size},
                "output": {"root": str(root / "out"), "incremental": False},
                # One GPU: one worker process holds the one model copy.
                "runner": {"direct_num_workers": 1, "direct_running_mode": "in_memory"},
            }
        )
        started = time.perf_counter()
        result = mine(config)
        seconds = time.perf_counter() - started
    return (
        f"DirectRunner pipeline: {frames} frames {setting.size[0]}x{setting.size[1]} in "
        f"{seconds:.1f} s = {frames / seconds:.2f} frames/s end to end (model loading, decode, "
        f"inference, rows, Parquet; counts {result.counts})"
    )


def main() -> None:
    from benchmarks.settings import choose_setting

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", help="HxW (default 1024x2048 on CUDA, reduced on CPU)")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(run_pipeline(choose_setting(device, args.size), args.frames, device, args.batch_size))


if __name__ == "__main__":
    main()
