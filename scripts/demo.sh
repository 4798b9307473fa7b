#!/usr/bin/env bash
# One command from a fresh Debian machine to rlobj's main job: installs missing packages,
# builds in Release and trains DDPG on Pendulum (examples/ddpg_pendulum). Extra arguments go
# to ddpg_pendulum (see scripts/demo.sh --help).
#   scripts/demo.sh
#   scripts/demo.sh --seed 1 --log-csv returns.csv
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="${RLOBJ_JOBS:-$(nproc)}"

source "$root/scripts/torch_env.sh"   # RLOBJ_TORCH=debian (default) | pip | /path/to/libtorch
build="${RLOBJ_BUILD_DIR:-$root/build/release-$RLOBJ_TORCH_NAME}"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${RLOBJ_CMAKE_ARGS[@]}" \
  -DRLOBJ_BUILD_TESTS=OFF -DRLOBJ_BUILD_EXAMPLES=ON -DRLOBJ_BUILD_BENCHMARKS=OFF
cmake --build "$build" -j "$jobs" --target ddpg_pendulum
"$build/examples/ddpg_pendulum" "$@"
