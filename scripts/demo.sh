#!/usr/bin/env bash
# One command from a fresh Debian machine to rlobj's main job: installs missing packages,
# builds in Release and trains DDPG on Pendulum (examples/ddpg_pendulum). Extra arguments go
# to the trainer (see scripts/demo.sh --help). RLOBJ_EXAMPLE=td3_pendulum or sac_pendulum
# runs TD3 or SAC instead (same flags).
#   scripts/demo.sh
#   scripts/demo.sh --seed 1 --log-csv returns.csv
#   RLOBJ_EXAMPLE=sac_pendulum scripts/demo.sh --seed 2
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="${RLOBJ_JOBS:-$(nproc)}"

source "$root/scripts/torch_env.sh"   # RLOBJ_TORCH=debian (default) | pip | /path/to/libtorch
build="${RLOBJ_BUILD_DIR:-$root/build/release-$RLOBJ_TORCH_NAME}"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${RLOBJ_CMAKE_ARGS[@]}" \
  -DRLOBJ_BUILD_TESTS=OFF -DRLOBJ_BUILD_EXAMPLES=ON -DRLOBJ_BUILD_BENCHMARKS=OFF
example="${RLOBJ_EXAMPLE:-ddpg_pendulum}"
case "$example" in
  ddpg_pendulum | td3_pendulum | sac_pendulum) ;;
  *) echo "demo.sh: RLOBJ_EXAMPLE must be ddpg_pendulum, td3_pendulum or sac_pendulum, got \"$example\"" >&2; exit 2 ;;
esac
cmake --build "$build" -j "$jobs" --target "$example"
"$build/examples/$example" "$@"
