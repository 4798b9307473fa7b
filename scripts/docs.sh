#!/usr/bin/env bash
# Builds rlobj's API reference with Doxygen (docs/Doxyfile) from the headers' `///` comments:
# HTML in $RLOBJ_DOCS_DIR/html (default build/docs/html), Doxygen's warnings in
# $RLOBJ_DOCS_DIR/warnings.log. Installs doxygen if it is missing (Debian package, through
# scripts/install_deps.sh, which says what it installs). Prints the number of warnings and
# exits non-zero if there is any (an undocumented public item is one). Builds no C++.
#   scripts/docs.sh
#   RLOBJ_DOCS_DIR=/tmp/rlobj-docs scripts/docs.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v doxygen >/dev/null 2>&1; then
  if [ "${RLOBJ_NO_INSTALL:-0}" = 1 ]; then
    echo "docs.sh: doxygen is not installed (RLOBJ_NO_INSTALL=1: not installing it); apt-get install doxygen" >&2
    exit 1
  fi
  "$root/scripts/install_deps.sh" doxygen
fi

out="${RLOBJ_DOCS_DIR:-$root/build/docs}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -rf "$out/html"
log="$out/warnings.log"
: >"$log"

version="$(sed -n 's/^#define RLOBJ_VERSION_STRING "\(.*\)"$/\1/p' "$root/include/rlobj/version.h")"
cd "$root"
RLOBJ_DOCS_DIR="$out" RLOBJ_DOCS_VERSION="$version" doxygen docs/Doxyfile

warnings="$(grep -c 'warning:' "$log" || true)"
echo "docs.sh: API reference in $out/html/index.html"
echo "docs.sh: $warnings Doxygen warning(s) (log: $log)"
if [ "$warnings" -ne 0 ]; then
  # Per header folder, then the first few, so that the failure says where to look.
  grep 'warning:' "$log" | sed -e "s|^$root/||" -e 's|^include/rlobj/\([^/:]*/\)\{0,1\}.*|\1|' \
    | sed 's|^$|(top level)|' | sort | uniq -c | sed 's/^/  /'
  grep 'warning:' "$log" | sed "s|^$root/||" | head -n 20
  exit 1
fi
