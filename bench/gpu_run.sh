#!/usr/bin/env bash
# The whole GPU check of the fused kernels, for one call on a GPU machine with CUDA torch and nvcc
# (bench/README.md): build cnbert._C with CUDA kernels for this card, run the CUDA kernel tests,
# then check and time everything with bench/gpu_kernels.py. Logs and gpu_kernels.json go to $OUT
# (default: the repository root). Exit status: non-zero if the build, a test or a check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD}
mkdir -p "$OUT"

# Machine code for this card alone: the fastest build, and what the card runs.
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())') || exit 1
fi
export TORCH_CUDA_ARCH_LIST
export MAX_JOBS=${MAX_JOBS:-16} CNBERT_CUDA=1 CNBERT_REQUIRE_KERNELS=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

echo "== build for compute capability $TORCH_CUDA_ARCH_LIST"
start=$SECONDS
if ! python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  exit 1
fi
echo "   ($((SECONDS - start)) s)"

echo "== CUDA kernel tests"
python3 -m pytest -q -p no:cacheprovider -k cuda \
  tests/test_kernels_gelu.py tests/test_kernels_softmax.py tests/test_kernels_api.py \
  > "$OUT/cuda_tests.log" 2>&1
tests=$?
tail -15 "$OUT/cuda_tests.log"

python3 bench/gpu_kernels.py --json "$OUT/gpu_kernels.json" 2>&1 | tee "$OUT/gpu_kernels.log"
bench=${PIPESTATUS[0]}

echo "build ok; CUDA kernel tests exit $tests; gpu_kernels.py exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
