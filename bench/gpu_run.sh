#!/usr/bin/env bash
# The whole GPU check of the fused kernels, for one call on a GPU machine with CUDA torch and nvcc
# (bench/README.md). Steps, in this order (default: all four):
#   build     cnbert._C with CUDA kernels for this card, in place
#   tests     the CUDA kernel tests
#   bench     bench/gpu_kernels.py: every op checked, then timed against eager and torch.compile
#   sanitize  the check again under compute-sanitizer (memcheck, racecheck, initcheck, synccheck),
#             our kernels alone instrumented, as many tools as time allows
# Usage: OUT=folder bash bench/gpu_run.sh [STEP ...]. Logs and gpu_kernels.json go to $OUT (default:
# the repository root). The machine's tool stops a command after 600 s, so a sanitizer tool that
# cannot finish before GPU_RUN_SECONDS (default 570) from the start is skipped, and says so.
# Exit status: non-zero if the build, a test, a check or a sanitizer tool failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD}
mkdir -p "$OUT"
deadline=$((SECONDS + ${GPU_RUN_SECONDS:-570}))
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(build tests bench sanitize)
for step in "${steps[@]}"; do
  case $step in
    build | tests | bench | sanitize) ;;
    *) echo "unknown step '$step' (steps: build tests bench sanitize)"; exit 2 ;;
  esac
done

export MAX_JOBS=${MAX_JOBS:-16} CNBERT_CUDA=1 CNBERT_REQUIRE_KERNELS=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

# The benchmark's imports, checked before minutes of building: the GPU machine has its own
# packages, and a model the benchmark cannot import loses its comparison.
if [[ " ${steps[*]} " == *" bench "* ]]; then
  if ! CNBERT_REQUIRE_KERNELS=0 python3 -c 'import transformers, cnbert.torch' > "$OUT/preflight.log" 2>&1; then
    echo "the benchmark cannot import what it times (preflight.log):"
    tail -3 "$OUT/preflight.log"
    exit 1
  fi
fi

build() {
  # Machine code for this card alone: the fastest build, and what the card runs.
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST=$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())') || return 1
  fi
  export TORCH_CUDA_ARCH_LIST
  echo "== build for compute capability $TORCH_CUDA_ARCH_LIST"
  # Only the extension is built, from a copy of setup.py and csrc/ alone: pyproject.toml's
  # metadata needs setuptools >= 77, and the machine's setuptools may be older.
  local start=$SECONDS stage
  stage=$(mktemp -d) || return 1
  cp -r setup.py csrc "$stage"/ && mkdir "$stage/cnbert" || return 1
  if ! (cd "$stage" && python3 setup.py build_ext --inplace) > "$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    return 1
  fi
  rm -f cnbert/_C*.so
  cp "$stage"/cnbert/_C*.so cnbert/ || return 1
  echo "   ($((SECONDS - start)) s)"
}

tests() {
  echo "== CUDA kernel tests"
  # Without CUDA kernels, "-k cuda" would select only tests that skip, and pass.
  python3 -c 'import sys, cnbert.kernels as k; sys.exit(0 if k.cuda_available() else "no CUDA kernels: " + k.extension_status())' ||
    return 1
  # The kernel tests need no TensorFlow, which the GPU machine lacks.
  CNBERT_TESTS_WITHOUT_TENSORFLOW=1 python3 -m pytest -q -p no:cacheprovider -k cuda \
    tests/test_kernels_gelu.py tests/test_kernels_softmax.py tests/test_kernels_api.py \
    > "$OUT/cuda_tests.log" 2>&1
  local status=$?
  tail -15 "$OUT/cuda_tests.log"
  return $status
}

bench() {
  # No timed row starts in the last 75 s of the call (the longest row, compile included, takes
  # about a minute), so the run ends with its tables and JSON rather than being killed.
  python3 bench/gpu_kernels.py --json "$OUT/gpu_kernels.json" --time-limit "$((deadline - SECONDS - 75))" 2>&1 |
    tee "$OUT/gpu_kernels.log"
  return "${PIPESTATUS[0]}"
}

find_sanitizer() {
  local candidate
  for candidate in "${COMPUTE_SANITIZER:-}" "$(command -v compute-sanitizer)" \
      "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  # CUDA from pip wheels (nvidia-cuda-sanitizer-api) keeps it beside the Python packages.
  python3 - <<'EOF'
import glob, site, sys
for root in site.getsitepackages():
    for path in sorted(glob.glob(f"{root}/nvidia/**/bin/compute-sanitizer", recursive=True)):
        print(path)
        sys.exit(0)
sys.exit(1)
EOF
}

# Each tool reruns the check section's "paths" cases with only cnbert's kernels instrumented
# (their mangled names hold the namespace "cnbert"). Without PyTorch's caching allocator every
# tensor is its own allocation, so memcheck sees an access past a tensor's end, and --padding keeps
# such an access from landing in the next tensor.
sanitize() {
  echo "== compute-sanitizer"
  local sanitizer
  sanitizer=$(find_sanitizer) || { echo "   compute-sanitizer not found (set COMPUTE_SANITIZER)"; return 1; }
  echo "   $sanitizer"
  local status=0 finished=0 tool left rc options
  for tool in memcheck racecheck initcheck synccheck; do
    left=$((deadline - SECONDS))
    if [ "$left" -lt 90 ]; then
      echo "   $tool: skipped, ${left} s left of this call (next: GPU_RUN_SECONDS=<the call's limit - 30>" \
        "bash bench/gpu_run.sh build sanitize; a fresh machine has no build)"
      continue
    fi
    options=(--tool "$tool" --kernel-name kns=cnbert --error-exitcode 3 --print-limit 20)
    [ "$tool" = memcheck ] && options+=(--padding 512)
    echo "== $tool" >> "$OUT/sanitize.log"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "$((left - 10))" "$sanitizer" "${options[@]}" \
      python3 bench/gpu_kernels.py --sections check --check-set paths --json "$OUT/sanitize_$tool.json" \
      >> "$OUT/sanitize.log" 2>&1
    rc=$?
    [ "$rc" -eq 124 ] || finished=$((finished + 1))
    case $rc in
      0) echo "   $tool: no errors, all checks passed" ;;
      3) echo "   $tool: ERRORS (sanitize.log)"; status=1 ;;
      1)
        # the tool found nothing, but the check failed: a wrong value (which the other tools may
        # still explain, so they run), or it could not import or run (then each fails in seconds)
        echo "   $tool: no sanitizer errors, but the check failed (sanitize.log, sanitize_$tool.json)"
        status=1 ;;
      124) echo "   $tool: did not finish in time (sanitize.log)" ;;
      *)
        # not a finding: the tool itself could not run the check (a device or driver it does not
        # support), and the next tool would fail the same way
        echo "   $tool: exit $rc (sanitize.log); the other tools are not run"
        status=1
        break ;;
    esac
  done
  [ -f "$OUT/sanitize.log" ] && grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitize.log" | sed 's/^/   /'
  echo "   $finished of 4 tools ran to the end"
  return $status
}

summary=()
failed=0
for step in "${steps[@]}"; do
  "$step"
  rc=$?
  summary+=("$step exit $rc")
  if [ "$rc" -ne 0 ]; then
    failed=1
    [ "$step" = build ] && break  # nothing after it can run without the extension
  fi
done
echo "${summary[*]}"
exit $failed
