#!/usr/bin/env bash
# Sourced by scripts/test.sh after scripts/torch_env.sh: ONNX export (rlobj::onnx,
# rlobj/deploy/onnx.h) and its runtime check. Installs Debian's ONNX library and protobuf
# (libonnx-dev, libprotobuf-dev: the ONNX protobuf classes and checker rlobj writes models with)
# and the pinned onnxruntime==1.32.0 wheel into a virtual environment of its own (the ctest entry
# deploy.onnxruntime runs the exported models in it), and passes them to CMake:
#   RLOBJ_ONNX=off        build without ONNX export (its tests are skipped and say so)
#   RLOBJ_ONNX_VENV=DIR   the virtual environment (default ~/.cache/rlobj/onnx-venv)
#   RLOBJ_NO_INSTALL=1    installs nothing: without them, builds without ONNX and says so
# With pip's LibTorch, ONNX export is off: Debian's libonnx links Debian's protobuf, and a
# process holding both it and the wheel's LibTorch (built with its own protobuf) is not a
# combination rlobj has tested.
rlobj_onnx_wheels=(onnxruntime==1.32.0)
if [ "${RLOBJ_ONNX:-on}" = off ]; then
  echo "rlobj: RLOBJ_ONNX=off: building without ONNX export"
  RLOBJ_CMAKE_ARGS+=("-DRLOBJ_WITH_ONNX=OFF")
elif [ "$RLOBJ_TORCH_NAME" != debian ]; then
  echo "rlobj: ONNX export is built with Debian's LibTorch only (RLOBJ_TORCH=$RLOBJ_TORCH_NAME): building without it"
  RLOBJ_CMAKE_ARGS+=("-DRLOBJ_WITH_ONNX=OFF")
else
  if [ "${RLOBJ_NO_INSTALL:-0}" = 1 ]; then
    if ! dpkg-query -W -f='${Status}' libonnx-dev 2>/dev/null | grep -q "install ok installed"; then
      echo "rlobj: libonnx-dev is not installed and RLOBJ_NO_INSTALL=1 is set: building without ONNX export" >&2
    fi
  else
    "$rlobj_root/scripts/install_deps.sh" libonnx-dev libprotobuf-dev
  fi
  onnx_venv="${RLOBJ_ONNX_VENV:-$HOME/.cache/rlobj/onnx-venv}"
  onnx_have() { "$onnx_venv/bin/python" -c 'import onnxruntime' >/dev/null 2>&1; }
  if ! onnx_have; then
    if [ "${RLOBJ_NO_INSTALL:-0}" = 1 ]; then
      echo "rlobj: $onnx_venv has no onnxruntime; RLOBJ_NO_INSTALL=1 is set, so deploy.onnxruntime will be" \
           "skipped (install it with: python3 -m venv $onnx_venv && $onnx_venv/bin/pip install" \
           "${rlobj_onnx_wheels[*]})" >&2
    else
      if ! python3 -m venv --help >/dev/null 2>&1; then
        "$rlobj_root/scripts/install_deps.sh" python3 python3-venv
      fi
      echo "rlobj: installing ${rlobj_onnx_wheels[*]} with pip into the virtual environment $onnx_venv"
      python3 -m venv "$onnx_venv"
      "$onnx_venv/bin/python" -m pip install --quiet --disable-pip-version-check "${rlobj_onnx_wheels[@]}"
    fi
  fi
  if onnx_have; then RLOBJ_CMAKE_ARGS+=("-DRLOBJ_ONNXRUNTIME_PYTHON=$onnx_venv/bin/python"); fi
fi
