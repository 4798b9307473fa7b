#!/usr/bin/env bash
# Crash test of ddpg_pendulum's checkpoints (a ctest entry): kill -9 the trainer while it
# checkpoints every few milliseconds, N times, each run resuming from the last checkpoint.
# Every resume must load (CRC-verified) and continue; no temporary file may pile up (at most
# the one findable "<checkpoint>.tmp"); a last run from the last checkpoint finishes.
#   examples/crash_resume.sh path/to/ddpg_pendulum [kills]
set -euo pipefail
bin="$1"
kills="${2:-12}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
ck="$dir/ck.pt"
args=(--total-frames 3000 --init-random-frames 100 --batch-size 32 --eval-every 25 --num-cells 16,16
      --buffer-size 20000 --checkpoint "$ck")

resumes=0
torn=0
last_frame=0
for i in $(seq 1 "$kills"); do
  resume=()
  [ -f "$ck" ] && resume=(--resume "$ck")
  "$bin" "${args[@]}" "${resume[@]}" > "$dir/out" 2>&1 &
  pid=$!
  # Wait (up to 60 s, however loaded the machine) until this run has evaluated, hence
  # checkpointed, twice; then kill it after a deterministic, varied extra delay (0 to 45 ms
  # between checkpoints written every 25 frames, so some kills land mid-write).
  for _ in $(seq 1 1200); do
    [ "$(grep -c '^frames' "$dir/out" || true)" -ge 2 ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  sleep "$(awk -v i="$i" 'BEGIN { printf "%.3f", ((i * 37) % 10) * 0.005 }')"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if grep -q "error" "$dir/out"; then
    echo "run $i failed:"; cat "$dir/out"; exit 1
  fi
  if [ ${#resume[@]} -gt 0 ] && grep -q "resumed from" "$dir/out"; then
    frame="$(sed -n 's/.*resumed from .* at frame \([0-9]*\).*/\1/p' "$dir/out")"
    [ "$frame" -ge "$last_frame" ] || { echo "run $i resumed at frame $frame, before $last_frame"; exit 1; }
    last_frame="$frame"
    resumes=$((resumes + 1))
  fi
  [ -e "$ck.tmp" ] && torn=$((torn + 1))  # this kill interrupted a checkpoint write
  leftovers="$(cd "$dir" && ls | grep -v -x -e ck.pt -e ck.pt.tmp -e out || true)"
  [ -z "$leftovers" ] || { echo "run $i left files behind: $leftovers"; exit 1; }
done
"$bin" "${args[@]}" --resume "$ck" > "$dir/out" 2>&1 || { echo "the final resume failed:"; cat "$dir/out"; exit 1; }
grep -q "resumed from" "$dir/out"
grep -q "env steps 3000" "$dir/out" || { echo "the final run did not finish:"; cat "$dir/out"; exit 1; }
[ ! -e "$ck.tmp" ] || { echo "a temporary file survived a clean run"; exit 1; }
echo "crash test: $kills kills ($torn during a checkpoint write), $resumes resumed runs (last at frame $last_frame), final run finished"
[ "$resumes" -ge $((kills - 1)) ] || { echo "too few runs resumed: $resumes of $((kills - 1))"; exit 1; }
