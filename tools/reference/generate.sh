#!/usr/bin/env bash
# Regenerates TorchRL reference files for rlobj's parity tests with the real TorchRL 0.14.1.
#
#   tools/reference/generate.sh [--out DIR] [CASE ...]
#
# Default DIR: tests/data/reference/torchrl-0.14.1; default: every case (ddpg td3 td3_bc sac dqn
# dqn_double gae ppo a2c reinforce policies replay_buffer). Makes (once) a virtual environment with the pinned
# requirements.txt, sets the determinism environment and runs generate.py, which writes
# <case>_torchrl.json and DIR/README.md (provenance and checksums).
#
# Environment:
#   RLOBJ_REFERENCE_VENV  the virtual environment (default $HOME/.cache/rlobj/reference-venv)
#   RLOBJ_NO_INSTALL=1    never install: fail, saying what is missing, if the venv lacks a pin
#   RLOBJ_PYTHON          the Python that creates the venv (default python3; 3.10-3.13)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${RLOBJ_REFERENCE_VENV:-$HOME/.cache/rlobj/reference-venv}"
req="$here/requirements.txt"
python="${RLOBJ_PYTHON:-python3}"

for a in "$@"; do
  case "$a" in
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  esac
done

# Which pins does the venv lack? (name==version lines of requirements.txt against pip freeze)
missing_pins() {
  local frozen
  frozen="$("$venv/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-')" || frozen=""
  grep -E '^[A-Za-z0-9]' "$req" | sed 's/[[:space:]]*#.*//' | while read -r pin; do
    [ -n "$pin" ] || continue
    local norm
    norm="$(printf '%s' "$pin" | tr 'A-Z_' 'a-z-')"
    printf '%s\n' "$frozen" | grep -qxF "$norm" || printf '%s\n' "$pin"
  done
}

if [ ! -x "$venv/bin/python" ]; then
  if [ "${RLOBJ_NO_INSTALL:-0}" = "1" ]; then
    echo "generate.sh: no virtual environment at $venv and RLOBJ_NO_INSTALL=1: not creating one." >&2
    echo "  It needs: $(grep -E '^(torchrl|tensordict|torch|numpy)==' "$req" | tr '\n' ' ')(and the rest of $req)." >&2
    echo "  Create it with: $python -m venv '$venv' && '$venv/bin/pip' install -r '$req'" >&2
    exit 2
  fi
  echo "generate.sh: creating the virtual environment $venv ($("$python" --version 2>&1))"
  "$python" -m venv "$venv"
fi

missing="$(missing_pins)"
if [ -n "$missing" ]; then
  if [ "${RLOBJ_NO_INSTALL:-0}" = "1" ]; then
    echo "generate.sh: $venv lacks these pinned packages and RLOBJ_NO_INSTALL=1: not installing." >&2
    printf '  %s\n' $missing >&2
    echo "  Install them with: '$venv/bin/pip' install -r '$req'" >&2
    exit 2
  fi
  echo "generate.sh: installing into $venv (about 5 GB: torch's PyPI wheel brings the CUDA libraries; it runs on the CPU):"
  printf '  %s\n' $missing
  "$venv/bin/python" -m pip install --disable-pip-version-check -r "$req"
fi

# Determinism: one thread everywhere, ATen's AVX2 kernels and MKL's AVX2 code path whatever
# the CPU (with AVX-512 and MKL's default dispatch the numbers move at rounding level).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2
export PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 CUDA_VISIBLE_DEVICES=""
cd "$repo"
exec "$venv/bin/python" "$here/generate.py" "$@"
