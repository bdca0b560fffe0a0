#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU and CuPy, run the GPU test subset and a short
# benchmark sweep (xpnet vs PyTorch, a few batch sizes, two model presets) in under 8 minutes.
# Full results go to OUT_DIR; a short table is printed last.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Needs: python3 with numpy, cupy, torch, pytest, tqdm; array-api-compat (installed from carried
# wheels in .whl/ when missing, see CONTRIBUTING.md). XPNET_GPU_CHECK_DEVICE=cpu dry-runs the
# script's logic on a machine without a GPU.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.." || exit 2
py=${PYTHON:-python3}
device=${XPNET_GPU_CHECK_DEVICE:-cuda}
export PYTHONUNBUFFERED=1 CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/xpnet-cupy-cache}

if ! "$py" -c "import array_api_compat" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/xpnet-site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/xpnet-site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "array-api-compat is missing: pip install -e '.[cuda13,test]' (or carry wheels in .whl/)" >&2
    exit 2
  fi
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
start=$(date +%s)

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi";
  "$py" -m xpnet info; } >"$out/environment.txt" 2>&1
cat "$out/environment.txt"

echo "== GPU tests (pytest -m gpu) =="
timeout 300 "$py" -m pytest -q -m gpu -p no:cacheprovider tests benchmarks 2>&1 | tee "$out/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}
if [ "$tests_rc" -eq 5 ] && [ "$device" = cpu ]; then tests_rc=0; fi  # dry run: no GPU tests to collect

echo "== sweeps =="
mnist_batches=256,1024,4096 large=(--preset large --batch-sizes 1024,8192)
if [ "$device" = cpu ]; then mnist_batches=64 large=(--sizes 256,512,512,64 --batch-sizes 64); fi  # dry run: small
timeout 150 "$py" -m xpnet bench --device "$device" --preset mnist --batch-sizes "$mnist_batches" \
  --impls xpnet,reference,torch --rounds 5 --quiet --out "$out/mnist" >"$out/mnist.txt" 2>&1
mnist_rc=$?
timeout 150 "$py" -m xpnet bench --device "$device" "${large[@]}" \
  --impls xpnet,torch --rounds 5 --quiet --out "$out/large" >"$out/large.txt" 2>&1
large_rc=$?

{
  echo "xpnet GPU check, $(date -u +%Y-%m-%d), $(( $(date +%s) - start )) s"
  echo "GPU tests: $(grep -E ' in [0-9.]+s' "$out/gpu-tests.log" | tail -n 1) (exit $tests_rc)"
  echo "-- preset mnist, batch sizes $mnist_batches, float32 (exit $mnist_rc)"; cat "$out/mnist.txt"
  echo "-- ${large[*]}, float32 (exit $large_rc)"; cat "$out/large.txt"
} >"$out/summary.txt"
cat "$out/summary.txt"
[ "$tests_rc" -eq 0 ] && [ "$mnist_rc" -eq 0 ] && [ "$large_rc" -eq 0 ]
