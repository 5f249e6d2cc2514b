"""Time the SAM adapter: image encoder naive vs fast path, decoder batched vs per prompt.

    python benchmarks/sam_bench.py                       # CUDA if present, else reduced CPU run
    python benchmarks/sam_bench.py --compile --batch 4   # add torch.compile (CUDA only)

Prints a Markdown table of milliseconds on the device found. Random weights (speed does not
depend on the values). On CUDA the defaults are the paper's setting (ViT-H, 1024x2048 frames,
50 prompts); on a CPU they are reduced (vit_tiny, 8 prompts, 2 repeats) so that the script ends
in about a minute, and the output says so. ``--compile`` pays the compilation on the warm-up
call (minutes for ViT-H), which is excluded from the timings; set ``TORCHINDUCTOR_CACHE_DIR``
to reuse it across runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from models.config import SamConfig
from models.sam import SAM_ARCHITECTURES, SamPrompter, build_sam


def _milliseconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` in ms after one warm-up call, synchronising CUDA."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:N")
    parser.add_argument("--model-type", choices=sorted(SAM_ARCHITECTURES), default=None)
    parser.add_argument("--batch", type=int, default=1, help="frames per encoder call")
    parser.add_argument("--prompts", type=int, default=None, help="point prompts per frame")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast encoder")
    args = parser.parse_args(argv)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    cuda = device.type == "cuda"
    model_type = args.model_type or ("vit_h" if cuda else "vit_tiny")
    prompts = args.prompts or (50 if cuda else 8)
    repeats = args.repeats or (10 if cuda else 2)
    if not cuda:
        print(
            f"NOTE: no CUDA device: reduced CPU run ({model_type}, {prompts} prompts, "
            f"{repeats} repeats); not comparable with the H100 figures in benchmarks/RESULTS.md."
        )
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(
        f"device: {name}, model: {model_type}, batch {args.batch}, frames "
        f"{args.height}x{args.width}, {prompts} prompts, median of {repeats}"
    )

    sam = build_sam(SamConfig(model_type=model_type)).to(device)
    generator = torch.Generator().manual_seed(0)
    size = (args.height, args.width)
    images = torch.randint(0, 256, (args.batch, 3, *size), dtype=torch.uint8, generator=generator)
    images = images.to(device)
    points = torch.stack(
        [
            torch.randint(0, args.width, (prompts,), generator=generator),
            torch.randint(0, args.height, (prompts,), generator=generator),
        ],
        dim=1,
    ).to(device)

    rows: list[tuple[str, float]] = []
    naive = SamPrompter(sam, fast_path=False)
    rows.append(
        (
            "encoder, naive (fp32, SAM attention), per image",
            _milliseconds(lambda: naive.encode(images), device, repeats) / args.batch,
        )
    )
    embedding = naive.encode(images[:1])[0]
    rows.append(
        (
            f"decoder, {prompts} prompts in one call (low-res)",
            _milliseconds(
                lambda: naive.segment(embedding, points, size, output="low"), device, repeats
            ),
        )
    )
    rows.append(
        (
            f"decoder, {prompts} calls of one prompt (low-res)",
            _milliseconds(
                lambda: [naive.segment(embedding, p[None], size, output="low") for p in points],
                device,
                repeats,
            ),
        )
    )
    rows.append(
        (
            f"decoder, {prompts} prompts in one call + upsample to {size[0]}x{size[1]}",
            _milliseconds(lambda: naive.segment(embedding, points, size), device, repeats),
        )
    )
    fast = SamPrompter(sam, fast_path=True, compile=args.compile)
    label = "bf16 + SDPA" if cuda else "fp32 + SDPA"
    if fast.compiled:
        label += " + torch.compile"
    rows.append(
        (
            f"encoder, fast path ({label}), per image",
            _milliseconds(lambda: fast.encode(images), device, repeats) / args.batch,
        )
    )
    rows.append(
        (
            f"decoder, fast path, {prompts} prompts in one call (low-res)",
            _milliseconds(
                lambda: fast.segment(embedding, points, size, output="low"), device, repeats
            ),
        )
    )

    width = max(len(stage) for stage, _ in rows)
    print(f"| {'stage':<{width}} | {'ms':>8} |")
    print(f"| {'-' * width} | {'-' * 8} |")
    for stage, ms in rows:
        print(f"| {stage:<{width}} | {ms:>8.1f} |")


if __name__ == "__main__":
    main()
