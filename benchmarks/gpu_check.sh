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
timeout 240 "$py" -m pytest -q -m gpu -p no:cacheprovider tests benchmarks 2>&1 | tee "$out/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}
if [ "$tests_rc" -eq 5 ] && [ "$device" = cpu ]; then tests_rc=0; fi  # dry run: no GPU tests to collect

echo "== sweeps =="
# name|arguments: the fused-kernel sweep, then the GPU issue's targets (784-512-512-10 at 256 in
# fp32; the large model at 8192 in tf32, in fp16 against PyTorch AMP and in bf16 against PyTorch
# autocast(bfloat16)).
sweeps=(
  "mnist|--preset mnist --batch-sizes 256,1024,4096 --impls xpnet,reference,torch"
  "small-fp32|--sizes 784,512,512,10 --batch-sizes 256 --impls xpnet,torch"
  "large-tf32|--preset large --batch-sizes 1024,8192 --impls xpnet,torch --precision tf32"
  "large-fp16|--preset large --batch-sizes 8192 --impls xpnet,torch --precision fp16"
  "large-bf16|--preset large --batch-sizes 8192 --impls xpnet,torch --precision bf16"
)
if [ "$device" = cpu ]; then  # dry run: the same logic on small CPU-sized sweeps
  sweeps=("mnist|--preset mnist --batch-sizes 64 --impls xpnet,reference,torch"
          "small-fp32|--sizes 256,128,10 --batch-sizes 64 --impls xpnet,torch")
fi
sweep_rc=0
for entry in "${sweeps[@]}"; do
  name=${entry%%|*}
  # shellcheck disable=SC2086  # the arguments are meant to split
  timeout 60 "$py" -m xpnet bench --device "$device" ${entry#*|} --rounds 5 --min-time 0.1 --quiet --out "$out/$name" \
    >"$out/$name.txt" 2>&1
  rc=$?
  echo "$name: exit $rc" >>"$out/sweeps.status"
  [ "$rc" -eq 0 ] || sweep_rc=$rc
done

graph_rc=0
if [ "$device" = cuda ]; then  # the CUDA-graph question: what launches cost at small batch (GPU only)
  timeout 60 "$py" benchmarks/cuda_graph_probe.py >"$out/cuda-graph-probe.txt" 2>&1
  graph_rc=$?
fi

dist_rc=0
# data-parallel (xpnet.distributed): 1 rank over NCCL, and one rank per GPU when there are several;
# needs mpi4py + mpiexec (pip install -e '.[dist,cuda12]'); skipped, and said so, without them
mpiexec=$(command -v mpiexec || echo "$(dirname "$(command -v "$py")")/mpiexec")
if "$py" -c "import mpi4py" 2>/dev/null && [ -x "$mpiexec" ]; then
  gpus=1 dist_args="--preset mnist --batch-sizes 256,4096 --steps 20"
  if [ "$device" = cuda ]; then gpus=$(nvidia-smi -L 2>/dev/null | wc -l); fi
  if [ "$device" = cpu ]; then dist_args="--preset small --batch-sizes 64 --steps 5"; fi  # dry run
  for n in $(printf '%s\n' 1 "$gpus" | sort -un); do
    [ "$n" -ge 1 ] || continue
    # shellcheck disable=SC2086  # the arguments are meant to split
    timeout 120 "$mpiexec" -n "$n" "$py" -m xpnet bench --distributed --device "$device" $dist_args --rounds 3 \
      >"$out/distributed-$n.txt" 2>&1
    rc=$?; echo "distributed-$n: exit $rc" >>"$out/sweeps.status"; [ "$rc" -eq 0 ] || dist_rc=$rc
  done
  # correctness: N ranks (dropout + sample weights) train to one process's float64 weights
  timeout 300 "$py" benchmarks/dist_equality_check.py --device "$device" --ranks "1,$gpus" \
    >"$out/distributed-equality.txt" 2>&1
  rc=$?; echo "distributed-equality: exit $rc" >>"$out/sweeps.status"; [ "$rc" -eq 0 ] || dist_rc=$rc
else
  echo "mpi4py or mpiexec missing: distributed check skipped" >"$out/distributed-1.txt"
fi

{
  echo "xpnet GPU check, $(date -u +%Y-%m-%d), $(( $(date +%s) - start )) s"
  echo "GPU tests: $(grep -E ' in [0-9.]+s' "$out/gpu-tests.log" | tail -n 1) (exit $tests_rc)"
  for entry in "${sweeps[@]}"; do
    name=${entry%%|*}
    echo "-- $name: ${entry#*|} ($(grep "^$name:" "$out/sweeps.status"))"
    grep -v "^results written" "$out/$name.txt"
  done
  for f in "$out"/distributed-*.txt; do echo "-- $(basename "$f" .txt)"; cat "$f"; done
  if [ -f "$out/cuda-graph-probe.txt" ]; then
    echo "-- CUDA-graph probe (exit $graph_rc)"; tail -n 4 "$out/cuda-graph-probe.txt"
  fi
} >"$out/summary.txt"
cat "$out/summary.txt"
[ "$tests_rc" -eq 0 ] && [ "$sweep_rc" -eq 0 ] && [ "$graph_rc" -eq 0 ] && [ "$dist_rc" -eq 0 ]
