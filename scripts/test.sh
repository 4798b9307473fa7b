#!/usr/bin/env bash
# One command from a fresh Debian machine to a passing test suite: installs what is missing,
# builds rlobj with its tests, examples and benchmarks (Release), runs ctest.
#   scripts/test.sh                        # against Debian's LibTorch 1.13 (default)
#   RLOBJ_TORCH=pip scripts/test.sh        # against pip's LibTorch 2.x (in a virtualenv)
#   RLOBJ_TORCH=/opt/libtorch scripts/test.sh
#   RLOBJ_BUILD_DIR=/tmp/b scripts/test.sh
#   RLOBJ_CMAKE_OPTIONS="-DRLOBJ_CHECK_HEADERS=OFF" scripts/test.sh   # extra CMake options
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/torch_env.sh"
source "$root/scripts/mujoco_env.sh"  # RLOBJ_MUJOCO=off | RLOBJ_MUJOCO_DIR=...
source "$root/scripts/onnx_env.sh"    # RLOBJ_ONNX=off
# The interop test's Python side (torch.load / torch.jit.load of what rlobj writes): Debian's
# python3-torch for Debian's LibTorch; the pip wheel's venv brings its own.
if [ "$RLOBJ_TORCH_NAME" = debian ]; then "$root/scripts/install_deps.sh" python3-torch; fi
build="${RLOBJ_BUILD_DIR:-$root/build/test-$RLOBJ_TORCH_NAME}"
jobs="${RLOBJ_JOBS:-$(nproc)}"

# shellcheck disable=SC2086  # RLOBJ_CMAKE_OPTIONS is a list of words
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${RLOBJ_CMAKE_ARGS[@]}" \
  -DRLOBJ_BUILD_TESTS=ON -DRLOBJ_BUILD_EXAMPLES=ON -DRLOBJ_BUILD_BENCHMARKS=ON ${RLOBJ_CMAKE_OPTIONS:-}
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs"
