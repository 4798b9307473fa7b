#!/usr/bin/env bash
# Sourced by scripts/test.sh and scripts/sanitize.sh after scripts/torch_env.sh: MuJoCo for the
# rlobj::mujoco target (rlobj/envs/mujoco.h) and its tests. Installs the pinned wheels
# mujoco==3.17.0 (MuJoCo's C library and headers) and gymnasium==1.4.0 (the robots' XML files)
# into a virtual environment of their own, without their Python dependencies (rlobj uses only
# their files), and passes their folder to CMake:
#   RLOBJ_MUJOCO=off       build without MuJoCo (its tests are skipped and say so)
#   RLOBJ_MUJOCO_DIR=DIR   use this MuJoCo (a folder with include/mujoco/mujoco.h and
#                          libmujoco.so*; RLOBJ_GYMNASIUM_ASSETS=DIR for the models): installs nothing
#   RLOBJ_MUJOCO_VENV=DIR  the virtual environment (default ~/.cache/rlobj/mujoco-venv)
#   RLOBJ_NO_INSTALL=1     installs nothing: without the wheels, builds without MuJoCo and says so
rlobj_mujoco_wheels=(mujoco==3.17.0 gymnasium==1.4.0)
if [ "${RLOBJ_MUJOCO:-on}" = off ]; then
  echo "rlobj: RLOBJ_MUJOCO=off: building without MuJoCo"
elif [ -n "${RLOBJ_MUJOCO_DIR:-}" ]; then
  RLOBJ_CMAKE_ARGS+=("-DRLOBJ_MUJOCO_DIR=$RLOBJ_MUJOCO_DIR")
  if [ -n "${RLOBJ_GYMNASIUM_ASSETS:-}" ]; then RLOBJ_CMAKE_ARGS+=("-DRLOBJ_GYMNASIUM_ASSETS=$RLOBJ_GYMNASIUM_ASSETS"); fi
else
  mj_venv="${RLOBJ_MUJOCO_VENV:-$HOME/.cache/rlobj/mujoco-venv}"
  mj_site() { "$mj_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true; }
  mj_have() {
    local site
    site="$(mj_site)"
    [ -n "$site" ] && [ -d "$site/mujoco-3.17.0.dist-info" ] && [ -d "$site/gymnasium-1.4.0.dist-info" ]
  }
  if ! mj_have; then
    if [ "${RLOBJ_NO_INSTALL:-0}" = 1 ]; then
      echo "rlobj: $mj_venv has no ${rlobj_mujoco_wheels[*]}; RLOBJ_NO_INSTALL=1 is set, so building without" \
           "MuJoCo (install them with: python3 -m venv $mj_venv && $mj_venv/bin/pip install --no-deps" \
           "${rlobj_mujoco_wheels[*]})" >&2
    else
      if ! python3 -m venv --help >/dev/null 2>&1; then
        "$rlobj_root/scripts/install_deps.sh" python3 python3-venv
      fi
      echo "rlobj: installing ${rlobj_mujoco_wheels[*]} with pip (--no-deps: their files only, about 10 MB)" \
           "into the virtual environment $mj_venv"
      python3 -m venv "$mj_venv"
      "$mj_venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${rlobj_mujoco_wheels[@]}"
    fi
  fi
  if mj_have; then RLOBJ_CMAKE_ARGS+=("-DRLOBJ_MUJOCO_DIR=$(mj_site)/mujoco"); fi
fi
