"""Throughput of one UGainS frame: the official path against ours, same process, same frames.

    python -m benchmarks.throughput                 # CUDA: 1024x2048, Swin-B + ViT-H
    python -m benchmarks.throughput --frames 8      # CPU: a reduced size, said in the output

Prints ms/frame per stage, frames/s, peak GPU memory, the speed-up, the agreement of the two
paths' instances (mask IoU of matched instances, instance counts), the frame-gating
throughput on a log where only ``--candidate-fraction`` of frames has candidate pixels, and
optionally (``--pipeline-frames N``) the DirectRunner pipeline end to end including I/O.

The naive path is what the official UGainS code does per frame (benchmarks/naive_path.py):
fp32, batch 1, Mask2Former -> NLS -> FPS -> SAM with one batched decoder call and full-
resolution masks, Python loops for mask scores, pairwise bincount mask NMS and the ignore
filter, fusion on the CPU. Ours is the production configuration: batched frames, bf16 autocast
and SDPA attention on CUDA (optionally torch.compile), vectorised GPU scores / NMS / fusion.
Weights are random (speed does not depend on their values); the untrained Mask2Former gets the
"no object" bias of a trained one so frames have candidate regions, as real frames do.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict

import numpy as np
import torch

from benchmarks.naive_path import (
    cpu_fusion,
    loop_ignore_filter,
    loop_mask_scores,
    pairwise_bincount_nms,
)
from benchmarks.settings import Setting, choose_setting
from models.config import Mask2FormerConfig, MethodConfig, SamConfig
from models.mask2former import build_mask2former, favour_no_object
from models.sam import SamPrompter, build_sam
from models.ugains import FrameResult, StageClock, UGainS
from pipelines.mining.inference import compact_result
from transforms import sampling, scores
from transforms.nms import mask_iou

STAGES = ["decode", "mask2former", "score+sampling", "sam_encoder", "sam_decoder", "nms+fusion"]
STAGES += ["crops/rows"]


def synthetic_frames(count: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """PNG-encoded road scenes (the demo's generator) at ``size``."""
    import cv2

    from benchmarks.scenes import draw_scene

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        ok, png = cv2.imencode(".png", draw_scene(rng, size))
        assert ok
        frames.append(png.tobytes())
    return frames


def decode(png: bytes) -> torch.Tensor:
    """``[3, H, W]`` uint8 RGB from PNG bytes (the decode stage of both paths)."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)


def hood_mask(size: tuple[int, int], fraction: float) -> torch.Tensor:
    """An ignore mask over the bottom ``fraction`` of the frame (a car hood).

    The default is 0 (an empty mask: the ignore filter still runs over every kept mask):
    untrained SAM masks are speckle spread over the whole frame, so any hood would remove
    them all and leave nothing to compare between the paths.
    """
    ignore = torch.zeros(size, dtype=torch.bool)
    ignore[size[0] - round(size[0] * fraction) :] = True
    return ignore


def build_paths(
    setting: Setting, device: torch.device, compile_sam: bool, points: int, hood: float
):
    """Two copies of the same random weights: the naive (fp32) and the fast configuration."""

    def segmenter(autocast: bool):
        config = Mask2FormerConfig(
            format="random", architecture=setting.mask2former, autocast_bf16=autocast
        )
        return favour_no_object(build_mask2former(config)).to(device).eval()

    def prompter(fast: bool, compile_: bool):
        sam = build_sam(SamConfig(model_type=setting.sam, seed=0)).to(device).eval()
        return SamPrompter(sam, fast_path=fast, compile=compile_)

    method = MethodConfig(reference_size=setting.size, num_points=points)
    ignore = hood_mask(setting.size, hood)
    naive = (segmenter(False), prompter(False, False), method, ignore)
    fast_step = UGainS(segmenter(True), prompter(None, compile_sam), method, ignore=ignore)
    return naive, fast_step


@torch.inference_mode()
def run_naive(naive, pngs: list[bytes], device: torch.device) -> tuple[list, StageClock]:
    segmenter, prompter, method, ignore = naive
    ignore = ignore.to(device)
    clock = StageClock(device)
    outputs = []
    for png in pngs:
        clock.restart()
        image = decode(png)[None].to(device)
        size = tuple(image.shape[-2:])
        clock.lap("decode")
        class_logits, mask_logits = segmenter(image, output_size=size)
        clock.lap("mask2former")
        anomaly = scores.rba_scores(class_logits, mask_logits)[0]
        del mask_logits
        candidates = sampling.candidate_points(anomaly, ignore=ignore)
        prompts = candidates[sampling.farthest_point_sampling(candidates, method.num_points)]
        clock.lap("score+sampling")
        embedding = prompter.encode(image)[0]
        clock.lap("sam_encoder")
        masks, _ = prompter.segment(embedding, prompts, size)
        clock.lap("sam_decoder")
        mask_scores = loop_mask_scores(anomaly, masks)
        keep = pairwise_bincount_nms(masks, mask_scores, method.nms_iou_threshold)
        keep = keep[loop_ignore_filter(masks[keep], ignore, method.ignore_max_pixels)]
        fused = cpu_fusion(anomaly, masks[keep], mask_scores[keep], method.fusion_empty_value)
        clock.lap("nms+fusion")
        outputs.append((masks[keep].cpu(), mask_scores[keep].cpu(), fused))
        compact_result(_as_result(anomaly, fused, masks[keep], mask_scores[keep]))
        clock.lap("crops/rows")
    return outputs, clock


def _as_result(anomaly, fused, masks, mask_scores) -> FrameResult:
    count = masks.shape[0]
    return FrameResult(
        semantic=torch.zeros(anomaly.shape, dtype=torch.uint8),
        anomaly_score=anomaly.cpu(),
        fused_score=fused.cpu(),
        masks=masks.cpu(),
        scores=mask_scores.cpu(),
        sam_iou=torch.zeros(count),
        points=torch.zeros((count, 2), dtype=torch.long),
        prompt_points=torch.zeros((0, 2), dtype=torch.long),
    )


def run_fast(step: UGainS, pngs: list[bytes], batch_size: int) -> tuple[list, StageClock]:
    clock = StageClock(step.device)
    outputs: list[FrameResult] = []
    stage_ms: dict[str, float] = defaultdict(float)
    for start in range(0, len(pngs), batch_size):
        clock.restart()
        images = torch.stack([decode(png) for png in pngs[start : start + batch_size]])
        clock.lap("decode")
        results = step(images)
        clock.lap("_model")
        for result in results:
            for stage, ms in result.timings.items():
                stage_ms[stage] += ms
            compact_result(result)
        clock.lap("crops/rows")
        outputs.extend(results)
    clock.timings.pop("_model")
    clock.timings["mask2former"] = stage_ms["mask2former"]
    clock.timings["score+sampling"] = stage_ms["score"] + stage_ms["sampling"]
    clock.timings["sam_encoder"] = stage_ms["sam_encoder"]
    clock.timings["sam_decoder"] = stage_ms["sam_decoder"]
    clock.timings["nms+fusion"] = stage_ms["postprocess"]
    return outputs, clock


def agreement(naive_outputs, fast_outputs: list[FrameResult]) -> dict[str, float]:
    """Mask IoU of each naive instance with its best fast match; instance-count difference."""
    ious, count_diffs = [], []
    for (masks, _, _), fast in zip(naive_outputs, fast_outputs, strict=True):
        count_diffs.append(abs(masks.shape[0] - fast.masks.shape[0]))
        if masks.shape[0] and fast.masks.shape[0]:
            both = torch.cat([masks, fast.masks])
            pairwise = mask_iou(both)[: masks.shape[0], masks.shape[0] :]
            ious.extend(pairwise.max(dim=1).values.tolist())
    return {
        "matched_mean_iou": statistics.fmean(ious) if ious else float("nan"),
        "matched_min_iou": min(ious) if ious else float("nan"),
        "share_iou_ge_0.98": (sum(i >= 0.98 for i in ious) / len(ious)) if ious else float("nan"),
        "mean_count_difference": statistics.fmean(count_diffs) if count_diffs else 0.0,
    }


def gated_log_fps(step: UGainS, pngs: list[bytes], batch_size: int, fraction: float) -> float:
    """Frames/s on a log where only ``fraction`` of frames has candidate pixels.

    The frames without candidates are emulated with a candidate threshold no pixel reaches
    (U <= 0 < 1), so frame gating skips SAM on them exactly as it does on empty road.
    """
    empty = UGainS(
        step.segmenter,
        step.prompter,
        step.method.model_copy(update={"candidate_threshold": 1.0, "frame_gating": True}),
        ignore=step.ignore,
    )
    with_candidates = max(1, round(len(pngs) * fraction))
    clock = StageClock(step.device)
    run_fast(step, pngs[:with_candidates], batch_size)
    run_fast(empty, pngs[with_candidates:], batch_size)
    clock.lap("log")
    return len(pngs) / (clock.timings["log"] / 1e3)


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--size", help="HxW of the frames (default 1024x2048 on CUDA)")
    parser.add_argument("--frames", type=int, default=None, help="measured frames per path")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured frames first")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--compile", action="store_true", help="torch.compile SAM's encoder")
    parser.add_argument("--candidate-fraction", type=float, default=0.1)
    parser.add_argument("--hood", type=float, default=0.0, help="ignored bottom fraction")
    parser.add_argument("--pipeline-frames", type=int, default=0, help="also run `mine` on N")
    args = parser.parse_args(argv)

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    setting = choose_setting(device, args.size)
    frames = args.frames or (32 if device.type == "cuda" else 4)
    torch.manual_seed(0)
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}")
    print(
        f"frames {setting.size[0]}x{setting.size[1]}, Mask2Former {setting.mask2former}, "
        f"SAM {setting.sam}, {args.points} prompts, batch {args.batch_size}, {frames} frames"
    )
    if setting.reduced:
        print("REDUCED SIZE: not the 1024x2048 Swin-B + ViT-H setting of the targets")

    pngs = synthetic_frames(frames + args.warmup, setting.size)
    naive, fast = build_paths(setting, device, args.compile, args.points, args.hood)

    run_naive(naive, pngs[: args.warmup], device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    naive_out, naive_clock = run_naive(naive, pngs[args.warmup :], device)
    naive_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0

    run_fast(fast, pngs[: max(args.warmup, args.batch_size)], args.batch_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fast_out, fast_clock = run_fast(fast, pngs[args.warmup :], args.batch_size)
    fast_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0

    rows = [("stage (ms/frame)", "naive", "ours")]
    for stage in STAGES:
        naive_ms = naive_clock.timings.get(stage, 0.0) / frames
        fast_ms = fast_clock.timings.get(stage, 0.0) / frames
        rows.append((stage, f"{naive_ms:.1f}", f"{fast_ms:.1f}"))
    naive_total = sum(naive_clock.timings.values()) / frames
    fast_total = sum(fast_clock.timings.values()) / frames
    rows.append(("total", f"{naive_total:.1f}", f"{fast_total:.1f}"))
    rows.append(("frames/s", f"{1e3 / naive_total:.2f}", f"{1e3 / fast_total:.2f}"))
    if device.type == "cuda":
        rows.append(
            ("peak GPU memory (GiB)", f"{naive_peak / 2**30:.2f}", f"{fast_peak / 2**30:.2f}")
        )
    print()
    print(table(rows))
    print(f"\nspeed-up: {naive_total / fast_total:.2f}x")

    agree = agreement(naive_out, fast_out)
    print("agreement of instances (naive vs ours):")
    for key, value in agree.items():
        print(f"  {key}: {value:.4f}")

    fps = gated_log_fps(fast, pngs[args.warmup :], args.batch_size, args.candidate_fraction)
    print(
        f"frame gating, {args.candidate_fraction:.0%} of frames with candidates: {fps:.2f} frames/s"
    )
    if args.pipeline_frames:
        from benchmarks.pipeline_throughput import run_pipeline

        print(run_pipeline(setting, args.pipeline_frames, device, args.batch_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
