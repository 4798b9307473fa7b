#!/usr/bin/env bash
# Per-action latency of a deployed DDPG Pendulum policy ([64, 64] and [256, 256]) in each runtime:
# the rlobj actor, TorchScript, the plain-C export (float32 and int8), and ONNX Runtime (through
# its Python binding, from the venv scripts/onnx_env.sh makes). Builds bench/deploy_bench.cpp in
# Release, runs it with repetitions in random interleaved order (medians), then
# bench/onnxruntime_latency.py on the models it wrote. One thread everywhere.
#   scripts/bench_deploy.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${RLOBJ_BUILD_DIR:-$root/build/bench}"
jobs="${RLOBJ_JOBS:-$(nproc)}"
source "$root/scripts/torch_env.sh"
source "$root/scripts/onnx_env.sh"
export OMP_NUM_THREADS=1
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${RLOBJ_CMAKE_ARGS[@]}" \
  -DRLOBJ_BUILD_TESTS=OFF -DRLOBJ_BUILD_EXAMPLES=OFF -DRLOBJ_BUILD_BENCHMARKS=ON >/dev/null
cmake --build "$build" -j "$jobs" --target rlobj_deploy_bench
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
RLOBJ_DEPLOY_BENCH_DIR="$dir" "$build/bench/rlobj_deploy_bench" --benchmark_repetitions="${RLOBJ_BENCH_REPS:-10}" \
  --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true --benchmark_min_time=0.2 "$@"
python="${RLOBJ_ONNXRUNTIME_PYTHON:-$HOME/.cache/rlobj/onnx-venv/bin/python}"
if ls "$dir"/policy_*.onnx >/dev/null 2>&1 && "$python" -c 'import onnxruntime' 2>/dev/null; then
  "$python" "$root/bench/onnxruntime_latency.py" "$dir"
else
  echo "bench_deploy.sh: ONNX Runtime not timed (no rlobj::onnx or no Python with onnxruntime)"
fi
