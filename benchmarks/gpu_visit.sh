#!/usr/bin/env bash
# Everything owed on a GPU, in ONE call of at most 8 minutes: the device tool lends one H200
# for 15 minutes per session in all (its start included), at most 10 minutes per command, no
# network there, and nothing is kept between visits. The machine's Python has CUDA torch,
# transformers, OpenCV, pyarrow, scikit-learn and pytest, but not the rest of ugains'
# dependencies: they travel as wheels.
#
#   here (with network to PyPI):  bash benchmarks/gpu_visit.sh download
#                                 (then keep .whl/ out of git: echo /.whl/ >> .git/info/exclude)
#   there, in one call:           bash benchmarks/gpu_visit.sh        (= visit; carry .whl)
#
# The visit runs its parts in order, each under a time limit, and stops starting parts once
# the 8-minute budget would be exceeded (VISIT_SECONDS overrides it):
#   1. install the wheels, print the device and versions                        ~20 s
#   2. the CUDA tests, a reduced selection: CUDA == CPU for the transforms,
#      the SAM/Mask2Former fast paths (bf16, SDPA), the UGainS step             <= 120 s
#   3. throughput at 1024x2048, Swin-B (1dl) + ViT-H, 50 prompts, naive vs
#      ours, with peak memory and the frame-gated log figure                    <= 210 s
#   4. one compiled run (SAM encoder), only if >= 150 s remain: compiling
#      ViT-H takes minutes and nothing is kept for a next visit                 rest
# Outputs are tee'd into $OUT (or ./gpu_results) for benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=benchmarks/gpu_wheels.txt
OUT_DIR=${OUT:-gpu_results}
PYTHON=${PYTHON:-python3}
BUDGET=${VISIT_SECONDS:-480}
STARTED=$SECONDS

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

left() { echo $((BUDGET - (SECONDS - STARTED))); }

# part NAME LIMIT_SECONDS COMMAND...: run COMMAND under min(LIMIT, time left), tee'd.
part() {
    local name=$1 limit=$2
    shift 2
    local remaining
    remaining=$(left)
    ((remaining < limit)) && limit=$remaining
    if ((limit < 30)); then
        echo "[$name] skipped: ${remaining}s of the visit left" | tee "$OUT_DIR/$name.txt"
        return
    fi
    echo "[$name] up to ${limit}s ($(left)s of the visit left)"
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"
    echo "[$name] exit ${PIPESTATUS[0]} after $((SECONDS - STARTED))s of the visit"
}

visit() {
    install
    part cuda_tests 120 "$PYTHON" -m pytest -q -x -m cuda -p no:cacheprovider \
        tests/transforms tests/models/test_sam.py tests/models/test_mask2former.py \
        tests/models/test_ugains.py
    part throughput 210 "$PYTHON" -m benchmarks.throughput --batch-size 4 --frames 16 \
        --warmup 2 --candidate-fraction 0.1
    if (($(left) >= 150)); then
        part throughput_compiled "$(left)" "$PYTHON" -m benchmarks.throughput --batch-size 4 \
            --frames 16 --warmup 2 --compile
    else
        echo "[throughput_compiled] skipped: $(left)s left, compiling ViT-H needs minutes" |
            tee "$OUT_DIR/throughput_compiled.txt"
    fi
    echo "visit done in $((SECONDS - STARTED))s; results in $OUT_DIR"
}

case "${1:-visit}" in
download) download ;;
visit) visit ;;
*)
    echo "usage: $0 [visit|download]" >&2
    exit 2
    ;;
esac
