"""Timings of the per-frame transforms (docs/method.md steps 2-10) on the available device.

    .venv/bin/python benchmarks/transforms_bench.py [--device cuda] [--repeats 20]

Prints one table row per case: median and min wall time over ``--repeats`` runs after a
warm-up run, synchronising CUDA around each run. Inputs are random (speed does not depend on
the values, except NMS, whose greedy pass is independent of overlaps here by construction).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from transforms.fusion import fuse_scores
from transforms.ignore import ignore_filter
from transforms.mask_scores import mask_scores
from transforms.nms import mask_nms
from transforms.sampling import candidate_points, farthest_point_sampling
from transforms.scores import rba_scores


def _time(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up (allocator, kernels, lazy imports)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def _rectangle_masks(m: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """``m`` overlapping rectangles covering up to a quarter of the frame each."""
    gen = torch.Generator().manual_seed(0)
    masks = torch.zeros(m, height, width, dtype=torch.bool)
    for i in range(m):
        y0 = int(torch.randint(0, height * 3 // 4, (1,), generator=gen))
        x0 = int(torch.randint(0, width * 3 // 4, (1,), generator=gen))
        h = int(torch.randint(1, height // 4 + 1, (1,), generator=gen))
        w = int(torch.randint(1, width // 4 + 1, (1,), generator=gen))
        masks[i, y0 : y0 + h, x0 : x0 + w] = True
    return masks.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default, help=f"torch device (default {default})")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per case")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    height, width = 1024, 2048
    points = torch.randint(0, width, (200_000, 2), device=device)
    score = torch.randn(height, width, device=device) - 3.0
    cls = torch.randn(1, 100, 20, device=device)
    low_res_logits = torch.randn(1, 100, height // 4, width // 4, device=device)
    ignore = torch.zeros(height, width, dtype=torch.bool, device=device)
    ignore[-200:] = True
    small = _rectangle_masks(50, 256, 512, device)
    full = _rectangle_masks(50, height, width, device)
    scores50 = torch.rand(50, device=device)

    cases: list[tuple[str, Callable[[], object]]] = [
        ("FPS 200k points -> 50", lambda: farthest_point_sampling(points, 50)),
        (
            "candidates + FPS, 1024x2048 map",
            lambda: farthest_point_sampling(candidate_points(score, ignore=ignore), 50),
        ),
        ("RbA NLS score, 100 queries, 256x512 logits", lambda: rba_scores(cls, low_res_logits)),
        ("mask NMS, 50 masks 256x512", lambda: mask_nms(small, scores50)),
        ("mask NMS, 50 masks 1024x2048", lambda: mask_nms(full, scores50)),
        ("ignore filter, 50 masks 1024x2048", lambda: ignore_filter(full, ignore)),
        ("mask scores, 50 masks 1024x2048", lambda: mask_scores(score, full)),
        ("fusion, 50 masks 1024x2048", lambda: fuse_scores(score, full, scores50)),
    ]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"{'case':<46} {'median ms':>10} {'min ms':>10}")
    for label, fn in cases:
        median, best = _time(fn, device, args.repeats)
        print(f"{label:<46} {median:>10.2f} {best:>10.2f}")


if __name__ == "__main__":
    main()
