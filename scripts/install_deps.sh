#!/usr/bin/env bash
# Installs the Debian packages named on the command line, skipping those already present.
# Used by scripts/torch_env.sh (which names what each LibTorch choice needs); safe to run again.
# Says what it will install before it does; RLOBJ_NO_INSTALL=1 installs nothing and fails with
# the list of what is missing (for users who manage their packages themselves).
#
# libopenblas0-openmp (with Debian's LibTorch): Debian resolves libtorch's BLAS to the
# reference (netlib) BLAS when no optimised one is installed, which makes every matmul ~10-20x
# slower (measured: 256^3 addmm 7.7 ms with netlib vs 0.34 ms with OpenBLAS).
set -euo pipefail

missing=()
for pkg in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "${RLOBJ_NO_INSTALL:-0}" = 1 ]; then
  echo "error: missing Debian packages: ${missing[*]}" >&2
  echo "       RLOBJ_NO_INSTALL=1 is set, so rlobj installs nothing; install them with:" >&2
  echo "       apt-get install ${missing[*]}" >&2
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "error: missing Debian packages: ${missing[*]}" >&2
  echo "       run this script as root, or install sudo, or install them yourself with:" >&2
  echo "       apt-get install ${missing[*]}" >&2
  exit 1
fi

echo "rlobj: installing missing Debian packages with apt-get: ${missing[*]} (RLOBJ_NO_INSTALL=1 skips this)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "rlobj: packages installed"
