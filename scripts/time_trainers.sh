#!/usr/bin/env bash
# CPU and wall time of whole training runs, side by side: builds the example trainers in
# Release and runs `ddpg_pendulum` (defaults, 20k frames), `td3_pendulum --preset rltools`
# (RLtools' TD3 configuration, 10k steps) and `sac_pendulum` with RLtools' SAC configuration
# (10k steps, batch 100, 64-64 ReLU, alpha 0.5, 100 random steps), each on the update path the
# trainers pick and op by op (--update-engine op-by-op), in interleaved rounds on one thread;
# then prints each one's median CPU seconds (user + system) and wall seconds. Any other program
# given with --also (repeatable; a quoted command line) joins the rounds, e.g. RLtools binaries
# you built yourself:
#   scripts/time_trainers.sh --runs 3 --also "/path/to/rltools_td3_benchmark" --also "..."
# Every run uses OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 and this machine's OpenBLAS core
# type (printed; set OPENBLAS_CORETYPE to force one for every program alike). --only-ours
# leaves out the op-by-op runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${RLOBJ_BUILD_DIR:-$root/build/trainers}"
jobs="${RLOBJ_JOBS:-$(nproc)}"
runs=5
only_ours=0
others=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --also) others+=("$2"); shift 2 ;;
    --only-ours) only_ours=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "time_trainers.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "time_trainers.sh: --runs must be a positive integer" >&2; exit 2; }

"$root/scripts/install_deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DRLOBJ_BUILD_TESTS=OFF -DRLOBJ_BUILD_EXAMPLES=ON -DRLOBJ_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target ddpg_pendulum td3_pendulum sac_pendulum

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
echo "OpenBLAS core type: $(python3 -c 'import ctypes, ctypes.util
lib = ctypes.CDLL("libopenblas.so.0"); lib.openblas_get_corename.restype = ctypes.c_char_p
print(lib.openblas_get_corename().decode())' 2>/dev/null || echo unknown)"

sac_rltools="--total-frames 10000 --batch-size 100 --num-cells 64 64 --activation relu --alpha-init 0.5 \
--init-random-frames 100 --buffer-size 10000 --lr-actor 1e-3 --lr-critic 1e-3 --lr-alpha 1e-3"
names=("ddpg_pendulum" "td3_pendulum --preset rltools" "sac_pendulum (RLtools' configuration)")
cmds=("$build/examples/ddpg_pendulum --quiet" "$build/examples/td3_pendulum --preset rltools --quiet"
      "$build/examples/sac_pendulum $sac_rltools --quiet")
if [[ $only_ours == 0 ]]; then
  n=${#cmds[@]}
  for ((i = 0; i < n; ++i)); do
    names+=("${names[$i]}, op by op")
    cmds+=("${cmds[$i]} --update-engine op-by-op")
  done
fi
for o in "${others[@]}"; do names+=("$o"); cmds+=("$o"); done
declare -A cpu wall
TIMEFORMAT='%R %U %S'
for ((r = 1; r <= runs; ++r)); do
  for i in "${!cmds[@]}"; do
    read -r w u s < <({ time bash -c "${cmds[$i]}" >/dev/null; } 2>&1 | tail -1)
    c=$(awk -v u="$u" -v s="$s" 'BEGIN {printf "%.3f", u + s}')
    cpu[$i]="${cpu[$i]:-} $c"
    wall[$i]="${wall[$i]:-} $w"
    printf 'round %d  %-62s cpu %6.2f s  wall %6.2f s\n' "$r" "${names[$i]}" "$c" "$w"
  done
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo
printf '%-62s %10s %10s\n' "program ($runs rounds, medians)" "cpu (s)" "wall (s)"
for i in "${!cmds[@]}"; do
  printf '%-62s %10.2f %10.2f\n' "${names[$i]}" "$(median "${cpu[$i]}")" "$(median "${wall[$i]}")"
done
