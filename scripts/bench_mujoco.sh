#!/usr/bin/env bash
# Batched HalfCheetah-v5 steps per second, rlobj beside EnvPool and gymnasium's SyncVectorEnv, in
# one run (bench/mujoco_peers.py: interleaved rounds, medians). Not part of CI: it installs
# envpool, gymnasium and mujoco (with their Python dependencies) into a virtual environment of
# its own, $RLOBJ_PEERS_VENV (default ~/.cache/rlobj/peers-venv).
#   scripts/bench_mujoco.sh [BUILD_DIR] [--rounds 3] [--seconds 1]
# BUILD_DIR: a Release build with rlobj::mujoco (default build/test-debian, what scripts/test.sh
# builds); its rlobj_mujoco_bench is built if missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build/test-debian}"
shift || true
venv="${RLOBJ_PEERS_VENV:-$HOME/.cache/rlobj/peers-venv}"
if ! "$venv/bin/python" -c 'import envpool, gymnasium, mujoco, imageio' 2>/dev/null; then
  echo "bench_mujoco.sh: installing envpool, gymnasium==1.4.0, mujoco==3.17.0 into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check envpool gymnasium==1.4.0 mujoco==3.17.0 imageio
fi
cmake --build "$build" --target rlobj_mujoco_bench
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
lscpu | grep -E "Model name|^CPU\(s\)" || true
"$venv/bin/python" -c 'import envpool, gymnasium, mujoco; print("envpool", envpool.__version__, "gymnasium", gymnasium.__version__, "mujoco", mujoco.__version__)'
"$venv/bin/python" "$root/bench/mujoco_peers.py" --rlobj "$build/bench/rlobj_mujoco_bench" "$@"
