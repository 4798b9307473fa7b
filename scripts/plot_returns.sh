#!/usr/bin/env bash
# Turns ddpg_pendulum --log-csv files into a PNG learning curve (evaluation return against
# environment steps), one line per CSV. Installs gnuplot if it is missing. RLOBJ_PLOT_TITLE names
# the run (default "rlobj DDPG on Pendulum-v1"); RLOBJ_PLOT_YRANGE (default -1700:0) and
# RLOBJ_PLOT_SOLVED (the dashed "solved" line, default -200) fit other tasks (CartPole: 0:520, 475);
# RLOBJ_PLOT_EPISODES is the number of evaluation episodes behind each point (default 10).
#   scripts/plot_returns.sh returns.png seed0.csv seed1.csv seed2.csv
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 2 ]; then
  echo "usage: $0 OUTPUT.png LOG.csv [LOG.csv ...]" >&2
  exit 2
fi
out="$1"
shift
for csv in "$@"; do
  [ -f "$csv" ] || { echo "error: no such CSV file: $csv" >&2; exit 1; }
done
command -v gnuplot >/dev/null 2>&1 || "$root/scripts/install_deps.sh" gnuplot-nox

plots=()
for csv in "$@"; do
  plots+=("'$csv' using 1:5 with linespoints lw 2 pt 7 ps 0.6 title '$(basename "$csv" .csv)'")
done
joined=$(IFS=,; echo "${plots[*]}")
gnuplot <<GNUPLOT
set terminal pngcairo size 900,540 font "DejaVu Sans,11"
set output '$out'
set datafile separator ','
set key bottom right
set grid
set title '${RLOBJ_PLOT_TITLE:-rlobj DDPG on Pendulum-v1}: mean return of ${RLOBJ_PLOT_EPISODES:-10} deterministic evaluation episodes'
set xlabel 'environment steps'
set ylabel 'evaluation return'
set yrange [${RLOBJ_PLOT_YRANGE:--1700:0}]
plot $joined, ${RLOBJ_PLOT_SOLVED:--200} with lines dt 2 lc rgb '#888888' title 'solved (${RLOBJ_PLOT_SOLVED:--200})'
GNUPLOT
echo "wrote $out"
