#!/usr/bin/env bash
# The GPU run of issue 13, for a lent NVIDIA machine (no network there, Python 3.12,
# PyTorch's CUDA 13 libraries in the image; see benchmarks/RESULTS.md "GPU").
#
#   bash benchmarks/gpu.sh prepare      # here: wheels into .whl/ (git-ignored locally)
#   bash benchmarks/gpu.sh stage 1|2    # there: keep one half of the mlx-cuda wheel
#   bash benchmarks/gpu.sh run          # there: install, parity tests, 7B benchmarks
#   bash benchmarks/gpu.sh cpu-check    # here: the same test and benchmark commands,
#                                       # tiny sizes, on the CPU (checks this script)
#
# The mlx-cuda-13 wheel (90 MB) is larger than what one device call carries
# (64 MiB), so it travels as two halves in two calls on the same warm machine:
# `stage 1` with carry [".whl/a"], then `stage 2 && run` with carry [".whl/b"];
# each call first runs `echo /.whl/ >> .git/info/exclude` here once. What `run`
# prints and writes goes to $OUT (JSON of each benchmark, the pytest log).
set -euo pipefail
cd "$(dirname "$0")/.."

MLX_VERSION=0.32.4
KYUTAI_MOSHI_MLX=0.3.0
STAGE=/tmp/moshi-gpu-wheels
OUT=${OUT:-benchmarks/out/gpu}
LEVELS=(bf16 q8 q4)

download() {  # wheels for the device's Python 3.12, no dependencies
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_35_x86_64 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform any -d .whl "$@"
}

case "${1:-}" in
prepare)
    mkdir -p .whl/a .whl/b
    download "mlx==$MLX_VERSION" "mlx-cuda-13==$MLX_VERSION"
    python3 -m pip download -q --no-deps -d .whl "moshi_mlx==$KYUTAI_MOSHI_MLX"
    split -b 45M .whl/mlx_cuda_13-*.whl .whl/cuda-part-
    mv .whl/cuda-part-aa .whl/a/ && mv .whl/cuda-part-ab .whl/b/
    mv .whl/mlx-*.whl .whl/moshi_mlx-*.whl .whl/b/
    rm .whl/mlx_cuda_13-*.whl
    du -sh .whl/a .whl/b
    ;;
stage)
    mkdir -p "$STAGE"
    cp -r .whl/"$([ "${2:-}" = 1 ] && echo a || echo b)"/. "$STAGE"/
    ls -la "$STAGE"
    ;;
run)
    mkdir -p "$OUT"
    cat "$STAGE"/cuda-part-* > "$STAGE/mlx_cuda_13-$MLX_VERSION-py3-none-manylinux_2_35_x86_64.whl"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target /tmp/site "$STAGE"/*.whl
    export PYTHONPATH=/tmp/site:$PWD
    nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv | tee "$OUT/gpu.txt"
    python3 -c "import mlx.core as mx; print(mx.__version__, mx.default_device())" \
        | tee -a "$OUT/gpu.txt"
    # (a) parity tests: on the GPU they take the compiled depformer and bf16 scales
    python3 -m pytest -q -p no:cacheprovider tests/test_mimi.py tests/test_conv.py \
        tests/test_attention.py tests/test_lm.py tests/test_lm_generate.py \
        tests/test_lm_stt.py tests/test_lm_float32.py tests/test_stt.py \
        2>&1 | tee "$OUT/pytest.log" || true
    # (b) the full 7B config at full depth, random weights: LM frame per level,
    # next to Kyutai's moshi_mlx (same MLX, same GPU), then whole frames with Mimi
    python3 benchmarks/lm.py --layers 32 --steps 40 --warmup 5 --rounds 4 \
        --levels "${LEVELS[@]}" --reference-python python3 --json "$OUT/lm_7b.json"
    python3 benchmarks/pipeline.py --lm-layers 32 --rounds 4 --block 20 \
        --json "$OUT/frame_7b.json"
    python3 benchmarks/mimi.py --blas system --frames 200 --json "$OUT/mimi.json"
    python3 benchmarks/lm.py --weight-floor --json "$OUT/floor.json"
    ;;
cpu-check)
    OUT=$(mktemp -d)
    uv run pytest -q tests/test_attention.py tests/test_lm_float32.py
    uv run python benchmarks/lm.py --layers 2 --steps 2 --warmup 1 --rounds 2 \
        --levels bf16 --json "$OUT/lm.json"
    uv run python benchmarks/pipeline.py --rounds 1 --block 2 --json "$OUT/frame.json"
    uv run python benchmarks/mimi.py --blas system --frames 3 --warmup 1 \
        --json "$OUT/mimi.json"
    uv run python benchmarks/lm.py --weight-floor --json "$OUT/floor.json"
    echo "cpu-check: the commands of 'run' work (outputs in $OUT)"
    ;;
*)
    sed -n 2,15p "$0"
    exit 2
    ;;
esac
