#!/usr/bin/env bash
# Builds rlobj's benchmarks in Release and runs them: every benchmark repeated (10 times by
# default) in random interleaved order, medians reported, and a closing table of rlobj /
# hand-written LibTorch ratios. Extra arguments go to Google Benchmark, e.g.
#   scripts/bench.sh --benchmark_filter=DDPGUpdate
#   RLOBJ_BENCH_REPS=20 scripts/bench.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${RLOBJ_BUILD_DIR:-$root/build/bench}"
jobs="${RLOBJ_JOBS:-$(nproc)}"

"$root/scripts/install_deps.sh"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DRLOBJ_BUILD_TESTS=OFF -DRLOBJ_BUILD_EXAMPLES=OFF -DRLOBJ_BUILD_BENCHMARKS=ON >/dev/null
cmake --build "$build" -j "$jobs" --target rlobj_bench
"$build/bench/rlobj_bench" --benchmark_repetitions="${RLOBJ_BENCH_REPS:-10}" \
  --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true \
  --benchmark_min_time=0.2 "$@"
