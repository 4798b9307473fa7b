#!/usr/bin/env bash
# Starts N copies of a command as one torch.distributed job on this machine, the way
# `torchrun --nproc_per_node N` does, for machines without Python: each copy gets RANK,
# LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT (and, as torchrun,
# OMP_NUM_THREADS=1 unless it is set). When one copy fails,
# the others get --grace seconds to notice (rlobj's collectives fail fast and name the rank)
# before they are killed; the launcher exits with the first failure's status.
#
#   scripts/launch.sh -n 3 -- build/examples/td3_pendulum --collectors 2
#   scripts/launch.sh -n 2 --port 29600 -- ./my_trainer --flag
#
# Options: -n|--nproc N (1 to 64 per CPU), --port P (default: a free port from 29500 up), --addr A
# (default 127.0.0.1), --grace S (default 30).
set -uo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
if [ "${BASH_VERSINFO[0]}" -lt 5 ] || { [ "${BASH_VERSINFO[0]}" -eq 5 ] && [ "${BASH_VERSINFO[1]}" -lt 1 ]; }; then
  echo "launch.sh: needs bash >= 5.1 (wait -n -p), this is $BASH_VERSION" >&2
  exit 2
fi
value() { [ $# -ge 2 ] || { echo "launch.sh: $1 needs a value" >&2; exit 2; }; }
nproc=""
port=""
addr="127.0.0.1"
grace=30
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--nproc) value "$@"; nproc="$2"; shift 2 ;;
    --port) value "$@"; port="$2"; shift 2 ;;
    --addr) value "$@"; addr="$2"; shift 2 ;;
    --grace) value "$@"; grace="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "launch.sh: unknown option '$1' (the command goes after --)" >&2; exit 2 ;;
  esac
done
[[ "$nproc" =~ ^[1-9][0-9]*$ ]] || { echo "launch.sh: -n needs a positive number of processes, got '$nproc'" >&2; exit 2; }
# At most 64 processes per CPU of this machine (and never more than the user's process limit):
# beyond that a typo, not a job. Compared as text first, so that a huge -n cannot wrap around.
max_nproc=$((64 * $(getconf _NPROCESSORS_ONLN)))
user_limit="$(ulimit -u)"
if [[ "$user_limit" =~ ^[0-9]+$ ]] && [ "$user_limit" -lt "$max_nproc" ]; then max_nproc=$user_limit; fi
if [ "${#nproc}" -gt "${#max_nproc}" ] || [ "$nproc" -gt "$max_nproc" ]; then
  echo "launch.sh: -n $nproc is more than this machine can run (at most $max_nproc: 64 per CPU, within ulimit -u)" >&2
  exit 2
fi
[[ "$grace" =~ ^[0-9]+$ ]] || { echo "launch.sh: --grace needs a number of seconds, got '$grace'" >&2; exit 2; }
[ $# -gt 0 ] || { echo "launch.sh: no command given (scripts/launch.sh -n N -- command args...)" >&2; exit 2; }

port_in_use() { (exec 3<>"/dev/tcp/$addr/$1") 2>/dev/null; }
if [ -z "$port" ]; then
  port=29500
  while port_in_use "$port"; do port=$((port + 1)); done
fi
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] ||
  { echo "launch.sh: --port needs a TCP port (1..65535), got '$port'" >&2; exit 2; }

# As torchrun: one intra-op thread per process unless OMP_NUM_THREADS says otherwise (N
# processes with a thread per core each would oversubscribe the machine).
if [ "$nproc" -gt 1 ] && [ -z "${OMP_NUM_THREADS:-}" ]; then export OMP_NUM_THREADS=1; fi

pids=()
for ((rank = 0; rank < nproc; ++rank)); do
  RANK=$rank LOCAL_RANK=$rank WORLD_SIZE=$nproc LOCAL_WORLD_SIZE=$nproc MASTER_ADDR=$addr MASTER_PORT=$port \
    "$@" &
  pids+=($!)
done
killer=""
stop_all() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done; }
on_signal() {
  [ -n "$killer" ] && kill "$killer" 2>/dev/null
  stop_all
  wait
  exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

rank_of() { for i in "${!pids[@]}"; do [ "${pids[$i]}" = "$1" ] && echo "$i"; done; }
status=0
running=("${pids[@]}")
while [ "${#running[@]}" -gt 0 ]; do
  finished=""
  # wait -n -p (bash >= 5.1) names the process that ended.
  wait -n -p finished "${running[@]}"
  code=$?
  [ -n "$finished" ] || continue
  still=()
  for pid in "${running[@]}"; do [ "$pid" = "$finished" ] || still+=("$pid"); done
  running=("${still[@]}")
  rank=$(rank_of "$finished")
  if [ "$code" -ne 0 ]; then
    echo "launch.sh: rank $rank exited with status $code" >&2
    if [ "$status" -eq 0 ]; then
      status=$code
      # The others get --grace seconds to notice and exit on their own.
      (trap 'kill "$sp" 2>/dev/null; exit 0' TERM
       sleep "$grace" & sp=$!
       wait "$sp"
       echo "launch.sh: ranks still running ${grace} s after the first failure; stopping them" >&2
       for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done) &
      killer=$!
    fi
  fi
done
[ -n "$killer" ] && kill "$killer" 2>/dev/null
exit "$status"
