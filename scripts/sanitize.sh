#!/usr/bin/env bash
# The test suite and the multi-process cases under AddressSanitizer + UndefinedBehaviorSanitizer, then the libFuzzer
# targets for a bounded time (Clang, Debug -O0 with line tables; the fuzzers -O1, against Debian's LibTorch unless RLOBJ_TORCH
# says otherwise). Fails on any sanitizer report; LibTorch's own known reports are suppressed
# in sanitizers/*.supp, each with the reason.
#   scripts/sanitize.sh
#   RLOBJ_FUZZ_SECONDS=600 scripts/sanitize.sh      # fuzz longer (default 60 s per target)
#   RLOBJ_SANITIZE_TESTS='[tensordict]' scripts/sanitize.sh   # a Catch2 test spec
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/torch_env.sh"
source "$root/scripts/mujoco_env.sh"  # RLOBJ_MUJOCO=off | RLOBJ_MUJOCO_DIR=...
# libclang-rt-14-dev holds the sanitizer and libFuzzer runtimes (only a Recommends of clang's,
# which install_deps.sh does not install); llvm-14 the symbolizer for readable reports.
"$root/scripts/install_deps.sh" clang libclang-rt-14-dev llvm-14
build="${RLOBJ_BUILD_DIR:-$root/build/sanitize-$RLOBJ_TORCH_NAME}"
jobs="${RLOBJ_JOBS:-$(nproc)}"
seconds="${RLOBJ_FUZZ_SECONDS:-60}"

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-gline-tables-only -O0" "${RLOBJ_CMAKE_ARGS[@]}" \
  -DRLOBJ_SANITIZE=address,undefined -DRLOBJ_BUILD_FUZZERS=ON -DRLOBJ_BUILD_TESTS=ON \
  -DRLOBJ_BUILD_EXAMPLES=OFF -DRLOBJ_BUILD_BENCHMARKS=OFF -DRLOBJ_CHECK_HEADERS=OFF \
  -DRLOBJ_INSTALL=OFF -DRLOBJ_WITH_ONNX=OFF
# (-DRLOBJ_WITH_ONNX=OFF: ONNX export's protobuf and libonnx are not instrumented; the exporter's
# own code is rlobj/deploy/program.h, which the plain-C export tests run here.)
cmake --build "$build" -j "$jobs" --target rlobj_tests rlobj_fuzz_tensordict rlobj_fuzz_state_dict \
  rlobj_fuzz_sampler rlobj_distributed_test

# Any report fails the run: halt on the first one, with a stack.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_init_order=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions='$root/sanitizers/ubsan.supp'${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export LSAN_OPTIONS="suppressions='$root/sanitizers/lsan.supp'${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
if [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi

# The suite's test cases are dealt round-robin into one shard per job and the shards run side by
# side (a sanitized test is mostly single-threaded CPU work). Each shard must select exactly its
# own names: nothing is run twice or left out.
echo "== sanitize: test suite under ASan + UBSan (up to $jobs shards)"
(
  cd "$build/tests"
  # (Catch2 exits with the number of names it listed: the counts below are the check.)
  { ./rlobj_tests ${RLOBJ_SANITIZE_TESTS:+"$RLOBJ_SANITIZE_TESTS"} --list-test-names-only || true; } | sed '/^$/d' > shards-all.txt
  total=$(wc -l < shards-all.txt)
  [ "$total" -gt 0 ] || { echo "sanitize: no test case matches '${RLOBJ_SANITIZE_TESTS:-}'" >&2; exit 1; }
  shards=$((total < jobs ? total : jobs))
  pids=()
  for ((i = 0; i < shards; i++)); do
    # Catch2 reads a comma or backslash in a listed name as syntax unless escaped.
    awk -v n="$shards" -v i="$i" 'NR % n == i' shards-all.txt | sed -e 's/\\/\\\\/g' -e 's/,/\\,/g' > "shard-$i.txt"
    named=$(wc -l < "shard-$i.txt")
    selected=$({ ./rlobj_tests -f "shard-$i.txt" --list-test-names-only || true; } | sed '/^$/d' | wc -l)
    if [ "$selected" -ne "$named" ]; then
      echo "sanitize: shard $i names $named test cases but selects $selected" >&2
      exit 1
    fi
    ./rlobj_tests -f "shard-$i.txt" --reporter compact > "shard-$i.log" 2>&1 &
    pids+=($!)
  done
  status=0
  for ((i = 0; i < shards; i++)); do
    wait "${pids[$i]}" || status=1
    echo "-- shard $i of $shards:"
    cat "shard-$i.log"
  done
  echo "sanitize: $total test cases in $shards shards"
  exit "$status"
)

echo "== sanitize: the multi-process cases (tests/distributed) under ASan + UBSan"
ctest --test-dir "$build" -R '^distributed\.' --output-on-failure -j "$jobs"

for fuzzer in "$build"/fuzz/rlobj_fuzz_*; do
  name="$(basename "$fuzzer")"
  name="${name#rlobj_fuzz_}"
  seeds="$root/fuzz/corpus/$name"
  corpus="$build/fuzz/corpus-$name"  # grows here; the committed seeds stay as they are
  mkdir -p "$corpus"
  echo "== sanitize: fuzzing $name for ${seconds}s (seeds: fuzz/corpus/$name)"
  # -seed fixes the mutation sequence; -timeout turns a hang into a finding.
  "$fuzzer" -seed=1 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$build/fuzz/$name-" "$corpus" "$seeds"
done
echo "sanitize: passed"
