#!/usr/bin/env bash
# One command from a fresh Debian machine to a passing test suite:
# installs missing packages, builds rlobj with its tests (Release), runs ctest.
#   scripts/test.sh            # everything
#   RLOBJ_BUILD_DIR=/tmp/b scripts/test.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${RLOBJ_BUILD_DIR:-$root/build/test}"
jobs="${RLOBJ_JOBS:-$(nproc)}"

"$root/scripts/install_deps.sh"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DRLOBJ_BUILD_TESTS=ON -DRLOBJ_BUILD_EXAMPLES=ON -DRLOBJ_BUILD_BENCHMARKS=ON
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs"
