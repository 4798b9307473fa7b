#!/usr/bin/env bash
# One command from a fresh Debian machine to rlobj's main job: installs missing packages,
# builds in Release and runs the example. Extra arguments go to the example.
#   scripts/demo.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${RLOBJ_BUILD_DIR:-$root/build/release}"
jobs="${RLOBJ_JOBS:-$(nproc)}"

"$root/scripts/install_deps.sh"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DRLOBJ_BUILD_TESTS=OFF -DRLOBJ_BUILD_EXAMPLES=ON -DRLOBJ_BUILD_BENCHMARKS=OFF
cmake --build "$build" -j "$jobs" --target quickstart
"$build/examples/quickstart" "$@"
