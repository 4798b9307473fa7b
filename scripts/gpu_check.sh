#!/usr/bin/env bash
# The CUDA checks, for a machine with an NVIDIA GPU: builds rlobj's tests and ddpg_pendulum
# against pip's LibTorch 2.x (a CUDA build), runs the suite's CUDA tests (hidden from the
# default run: tag [.cuda]) and a short ddpg_pendulum run on the GPU.
#   scripts/gpu_check.sh
#   RLOBJ_TORCH=/opt/libtorch-cuda scripts/gpu_check.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RLOBJ_TORCH="${RLOBJ_TORCH:-pip}"
source "$root/scripts/torch_env.sh"
build="${RLOBJ_BUILD_DIR:-$root/build/gpu-$RLOBJ_TORCH_NAME}"
jobs="${RLOBJ_JOBS:-$(nproc)}"

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${RLOBJ_CMAKE_ARGS[@]}" \
  -DRLOBJ_BUILD_TESTS=ON -DRLOBJ_BUILD_EXAMPLES=ON -DRLOBJ_BUILD_BENCHMARKS=OFF
cmake --build "$build" -j "$jobs" --target rlobj_tests ddpg_pendulum
"$build/tests/rlobj_tests" "[cuda]"
"$build/examples/ddpg_pendulum" --device cuda --total-frames 3000
