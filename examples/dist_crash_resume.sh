#!/usr/bin/env bash
# A distributed run that loses a collector: td3_pendulum --collectors 2 (3 processes, via
# scripts/launch.sh) checkpoints every 200 frames; once a checkpoint exists, collector rank 1
# is killed with SIGKILL. The learner and the other collector must exit non-zero on their own,
# within the timeout, naming rank 1; then the run resumes from the checkpoint with ONE collector
# and finishes; resuming the finished run with two collectors again stops at once. Usage: dist_crash_resume.sh TD3_PENDULUM LAUNCH_SH WORKDIR
set -uo pipefail
program="$1"
launch="$2"
dir="$3"
mkdir -p "$dir"
ckpt="$dir/dist_crash.pt"
log="$dir/dist_crash.log"
rm -f "$ckpt" "$log"
flags=(--total-frames 3000 --init-random-frames 100 --batch-size 32 --num-cells 16,16 --eval-every 200
       --checkpoint "$ckpt" --dist-timeout 20)
fail() { echo "FAIL: $*"; echo "--- log:"; cat "$log"; exit 1; }

start=$SECONDS
"$launch" -n 3 --grace 30 -- "$program" --collectors 2 "${flags[@]}" >"$log" 2>&1 &
launcher=$!
while [ ! -f "$ckpt" ] && [ $((SECONDS - start)) -lt 60 ]; do sleep 0.2; done
[ -f "$ckpt" ] || fail "no checkpoint after 60 s"
victim=""
for env in /proc/[0-9]*/environ; do
  pid="${env#/proc/}"; pid="${pid%/environ}"
  if { tr '\0' '\n' <"$env"; } 2>/dev/null | grep -qx "RANK=1" &&
     { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q -- "$ckpt"; then
    victim=$pid
  fi
done
[ -n "$victim" ] || fail "collector rank 1 not found"
killed_at=$SECONDS
kill -9 "$victim"
wait "$launcher"
code=$?
noticed=$((SECONDS - killed_at))
[ "$code" -ne 0 ] || fail "the run succeeded although collector rank 1 was killed"
named=$(grep -c "td3_pendulum: error: .*rank 1 stopped" "$log")
[ "$named" -eq 2 ] || fail "$named of the 2 survivors (the learner, collector rank 2) named rank 1"
[ "$noticed" -lt 20 ] || fail "the others took $noticed s to exit"
grep -q "summary:" "$log" && fail "the killed run printed a summary"
echo "killed collector rank 1: the others exited (status $code) after $noticed s, naming it"

# Resume with one collector instead of two.
"$launch" -n 2 -- "$program" --collectors 1 "${flags[@]}" --resume "$ckpt" >"$log" 2>&1 || fail "the resumed run failed"
grep -qE "resumed from .* at frame [0-9]+" "$log" || fail "no resume line"
grep -qE "summary: seed 0 \| wall time [0-9.]+ s \| env steps 3000 \|" "$log" || fail "the resumed run did not reach 3000 frames"
# Resuming the finished run (nothing left to collect) with 2 collectors: evaluates and stops.
"$launch" -n 3 -- "$program" --collectors 2 "${flags[@]}" --resume "$ckpt" >"$log" 2>&1 || fail "resuming a finished run failed"
grep -qE "summary: seed 0 \| wall time [0-9.]+ s \| env steps 3000 \|" "$log" || fail "resuming a finished run collected more"
echo "dist crash test: resumed with 1 collector and finished at 3000 frames; a finished run resumes as finished"
