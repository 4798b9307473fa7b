#!/usr/bin/env bash
# The scale-out measurements of the README's "Scaling out" section, in one run:
#  1. bench/distributed_bench.cpp (Google Benchmark, medians of 5 repetitions) on 1, 2 and 4
#     processes: all-reduce cost by size, batch shipping, collection frames/s (Pendulum alone,
#     and a simulated 500 us/step simulator), data-parallel updates/s;
#  2. td3_pendulum end to end, 6000 frames: one process, then --collectors 1, 2, 3.
# Builds what it needs in $RLOBJ_BUILD_DIR (default build/bench-dist). Usage:
#   scripts/bench_distributed.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${RLOBJ_BUILD_DIR:-$root/build/bench-dist}"
source "$root/scripts/torch_env.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${RLOBJ_CMAKE_ARGS[@]}" \
  -DRLOBJ_BUILD_TESTS=OFF -DRLOBJ_BUILD_EXAMPLES=ON -DRLOBJ_BUILD_BENCHMARKS=ON >/dev/null
cmake --build "$build" -j "${RLOBJ_JOBS:-$(nproc)}" --target rlobj_dist_bench td3_pendulum

for n in 1 2 4; do
  echo "=== rlobj_dist_bench on $n process(es)"
  "$root/scripts/launch.sh" -n "$n" -- "$build/bench/rlobj_dist_bench" --benchmark_report_aggregates_only=true \
    | grep -E "world_size|_median"
done

echo "=== td3_pendulum, 6000 frames (wall time from its summary)"
flags=(--total-frames 6000 --quiet)
OMP_NUM_THREADS=1 "$build/examples/td3_pendulum" "${flags[@]}" | sed 's/^/one process:  /'
for c in 1 2 3; do
  for k in 1 10; do
    "$root/scripts/launch.sh" -n $((c + 1)) -- "$build/examples/td3_pendulum" "${flags[@]}" --collectors "$c" \
      --weights-every "$k" | grep summary | sed "s/^/--collectors $c --weights-every $k:  /"
  done
done
