#!/usr/bin/env bash
# Sourced by the build scripts: picks the LibTorch to build against, from RLOBJ_TORCH:
#   debian (default)   Debian's libtorch-dev (LibTorch 1.13.1, CPU), installed if missing
#   pip                the PyPI torch wheel (LibTorch 2.x, a CUDA build that also runs on the
#                      CPU), installed into a virtual environment (never the system Python):
#                      $RLOBJ_VENV, default ~/.cache/rlobj/torch-venv; version $RLOBJ_PIP_TORCH
#   /path/to/libtorch  an unpacked official LibTorch download (or any CMAKE_PREFIX_PATH
#                      holding TorchConfig.cmake)
# Sets RLOBJ_TORCH_NAME (for build-dir names) and RLOBJ_CMAKE_ARGS; installs Debian packages.
# ccache, when installed, is used as the compiler launcher (rebuilds after a branch switch).
rlobj_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RLOBJ_TORCH="${RLOBJ_TORCH:-debian}"
RLOBJ_CMAKE_ARGS=()
if command -v ccache >/dev/null 2>&1; then RLOBJ_CMAKE_ARGS+=("-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"); fi
# The build tools, fmt for Debian's LibTorch, and what the tests, examples and benchmarks use.
rlobj_common=(g++ make cmake catch2 libcli11-dev libbenchmark-dev nlohmann-json3-dev libgloo-dev)
case "$RLOBJ_TORCH" in
  debian)
    RLOBJ_TORCH_NAME=debian
    "$rlobj_root/scripts/install_deps.sh" libtorch-dev libopenblas0-openmp libfmt-dev "${rlobj_common[@]}"
    # The Python side of the interop test: Debian's python3-torch (the same LibTorch 1.13;
    # scripts/test.sh installs it).
    RLOBJ_CMAKE_ARGS+=("-DRLOBJ_PYTHON=/usr/bin/python3")
    ;;
  pip)
    RLOBJ_TORCH_NAME=pip
    "$rlobj_root/scripts/install_deps.sh" libfmt-dev "${rlobj_common[@]}"
    venv="${RLOBJ_VENV:-$HOME/.cache/rlobj/torch-venv}"
    spec="${RLOBJ_PIP_TORCH:-torch==2.15.0}"
    # A venv holding another version than asked for (torch==X.Y.Z) is upgraded in place.
    want="${spec#torch==}"
    have="$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
    if [ -z "$have" ] || { [ "$want" != "$spec" ] && [ "$have" != "$want" ]; }; then
      if [ "${RLOBJ_NO_INSTALL:-0}" = 1 ]; then
        echo "error: $venv has no $spec (found: ${have:-none}); RLOBJ_NO_INSTALL=1 is set, so rlobj installs" \
             "nothing: create it with python3 -m venv $venv && $venv/bin/pip install $spec, or point" \
             "RLOBJ_TORCH at a LibTorch directory" >&2
        exit 1
      fi
      if ! python3 -m venv --help >/dev/null 2>&1; then
        "$rlobj_root/scripts/install_deps.sh" python3 python3-venv
      fi
      echo "rlobj: installing $spec with pip into the virtual environment $venv (a few GB: LibTorch with" \
           "its CUDA libraries; RLOBJ_NO_INSTALL=1 skips this)"
      python3 -m venv "$venv"
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$spec"
    fi
    prefix="$("$venv/bin/python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
    [ -n "$prefix" ] && [ -d "$prefix" ] || { echo "error: no LibTorch CMake prefix in $venv" >&2; exit 1; }
    RLOBJ_CMAKE_ARGS+=("-DCMAKE_PREFIX_PATH=$prefix" "-DRLOBJ_PYTHON=$venv/bin/python")
    ;;
  *)
    [ -d "$RLOBJ_TORCH" ] || { echo "error: RLOBJ_TORCH=$RLOBJ_TORCH: expected debian, pip or a LibTorch directory" >&2; exit 2; }
    RLOBJ_TORCH_NAME="$(basename "$RLOBJ_TORCH")"
    "$rlobj_root/scripts/install_deps.sh" libfmt-dev "${rlobj_common[@]}"
    RLOBJ_CMAKE_ARGS+=("-DCMAKE_PREFIX_PATH=$(cd "$RLOBJ_TORCH" && pwd)")
    ;;
esac
