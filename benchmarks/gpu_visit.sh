#!/usr/bin/env bash
# The GPU checks the CPU-only CI cannot do, for one visit to a GPU machine whose Python has
# CUDA torch, transformers, OpenCV, pyarrow, scikit-learn and pytest but not the rest of
# ugains' dependencies and no network (the `device` tool's H100/H200 image).
#
#   here (with network to PyPI):  bash benchmarks/gpu_visit.sh download
#                                 (then keep .whl/ out of git: echo /.whl/ >> .git/info/exclude)
#   there, one stage per call:    bash benchmarks/gpu_visit.sh tests        # ~5 min
#                                 bash benchmarks/gpu_visit.sh throughput   # ~8 min
#                                 bash benchmarks/gpu_visit.sh compiled     # ~8 min (compiles)
#
# Each stage installs the carried wheels into /tmp/site, prints what it ran on, and tees its
# output into $OUT (or ./gpu_results) for benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=benchmarks/gpu_wheels.txt
OUT_DIR=${OUT:-gpu_results}
PYTHON=${PYTHON:-python3}

download() {
    # The GPU image runs CPython 3.12 on x86-64 manylinux; --no-deps because everything else
    # needed is already there (benchmarks/gpu_wheels.txt says why each one is carried).
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl -r "$WHEELS"
    du -sh .whl
}

install() {
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/: run '$0 download' first and carry .whl"; exit 2; }
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    mkdir -p "$OUT_DIR"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
    "$PYTHON" -c "import torch, transformers, apache_beam; print('torch', torch.__version__, \
'cuda', torch.version.cuda, '| transformers', transformers.__version__, '| beam', \
apache_beam.__version__)" | tee -a "$OUT_DIR/gpu.txt"
}

case "${1:-}" in
download)
    download
    ;;
tests)
    install
    # The CUDA parametrisations of the transform and model tests (CUDA == CPU, bf16 fast
    # paths), then the SAM encoder and transform timings of DESIGN.md's table.
    "$PYTHON" -m pytest -q -m cuda tests/transforms tests/models tests/pipelines 2>&1 |
        tee "$OUT_DIR/cuda_tests.txt"
    "$PYTHON" -m benchmarks.transforms_bench --device cuda 2>&1 | tee "$OUT_DIR/transforms_bench.txt"
    "$PYTHON" -m benchmarks.sam_bench --model-type vit_h --batch 4 2>&1 | tee "$OUT_DIR/sam_bench.txt"
    ;;
throughput)
    install
    "$PYTHON" -m benchmarks.throughput --batch-size 4 --frames 32 --pipeline-frames 300 2>&1 |
        tee "$OUT_DIR/throughput.txt"
    ;;
compiled)
    install
    "$PYTHON" -m benchmarks.throughput --batch-size 4 --frames 32 --compile 2>&1 |
        tee "$OUT_DIR/throughput_compiled.txt"
    ;;
*)
    echo "usage: $0 download|tests|throughput|compiled" >&2
    exit 2
    ;;
esac
