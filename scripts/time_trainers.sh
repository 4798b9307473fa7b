#!/usr/bin/env bash
# Wall time of whole training runs, side by side: builds the example trainers in Release and
# runs `ddpg_pendulum` (defaults, 20k frames) and `td3_pendulum --preset rltools` (RLtools'
# TD3 configuration, 10k steps) in interleaved rounds on one thread, then prints each one's
# median. Any other program given with --also (repeatable; a quoted command line) joins the
# rounds, e.g. an RLtools Pendulum TD3 binary you built yourself:
#   scripts/time_trainers.sh --runs 5 --also "/path/to/rl_environments_pendulum_td3_blas"
# Every run uses OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 and this machine's OpenBLAS core
# type (printed; set OPENBLAS_CORETYPE to force one for every program alike).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${RLOBJ_BUILD_DIR:-$root/build/trainers}"
jobs="${RLOBJ_JOBS:-$(nproc)}"
runs=5
others=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --also) others+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "time_trainers.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "time_trainers.sh: --runs must be a positive integer" >&2; exit 2; }

"$root/scripts/install_deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DRLOBJ_BUILD_TESTS=OFF -DRLOBJ_BUILD_EXAMPLES=ON -DRLOBJ_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target ddpg_pendulum td3_pendulum

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
echo "OpenBLAS core type: $(python3 -c 'import ctypes, ctypes.util
lib = ctypes.CDLL("libopenblas.so.0"); lib.openblas_get_corename.restype = ctypes.c_char_p
print(lib.openblas_get_corename().decode())' 2>/dev/null || echo unknown)"

names=("ddpg_pendulum" "td3_pendulum --preset rltools")
cmds=("$build/examples/ddpg_pendulum --quiet" "$build/examples/td3_pendulum --preset rltools --quiet")
for o in "${others[@]}"; do names+=("$o"); cmds+=("$o"); done
declare -A times
for ((r = 1; r <= runs; ++r)); do
  for i in "${!cmds[@]}"; do
    start=$(date +%s%N)
    bash -c "${cmds[$i]}" >/dev/null
    end=$(date +%s%N)
    t=$(awk -v ns=$((end - start)) 'BEGIN {printf "%.3f", ns / 1e9}')
    times[$i]="${times[$i]:-} $t"
    printf 'round %d  %-60s %6.2f s\n' "$r" "${names[$i]}" "$t"
  done
done
echo
printf '%-60s %s\n' "program" "median wall time (s)"
for i in "${!cmds[@]}"; do
  median=$(tr ' ' '\n' <<<"${times[$i]}" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
  printf '%-60s %.2f\n' "${names[$i]}" "$median"
done
