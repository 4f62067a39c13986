#!/usr/bin/env bash
# What the web UI costs the coordinator: the same TPC-H queries run on a
# 2-worker local cluster twice in one run, with the UI closed, then with
# each running job's page open (its live stream followed, as the page
# does, plus the jobs list stream). Prints the coordinator's CPU seconds
# (utime+stime from /proc) and the wall time of the queries in each mode,
# and the ratios open/closed.
#
# Usage: tests/bench/ui_cost.sh DATA_DIR [ROUNDS] [TONE_BINARY]
#   DATA_DIR: TPC-H data from `tone gen tpch` (e.g. scale 1).
set -eu
DATA=$1
ROUNDS=${2:-3}
T=${3:-target/release/tone}
QUERIES="q01 q03 q05 q09 q18"
WORK=$(mktemp -d)
GROUP=0
trap '[ "$GROUP" != 0 ] && kill -TERM -- -"$GROUP" 2>/dev/null; rm -rf "$WORK"' EXIT

setsid bash -c '"$1" local-cluster --workers 2 --port 0 > "$2/cluster.out" 2> "$2/cluster.err"' \
  ui_cost "$T" "$WORK" &
GROUP=$!
for _ in $(seq 300); do grep -q "^ui: " "$WORK/cluster.out" 2>/dev/null && break; sleep 0.1; done
MASTER=$(sed -n 's/^master: //p' "$WORK/cluster.out")
UI=$(sed -n 's/^ui: //p' "$WORK/cluster.out")
PORT=${MASTER##*:}
PID=$(ss -ltnp "sport = :$PORT" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
for _ in $(seq 300); do
  [ "$("$T" workers --master "$MASTER" 2>/dev/null | grep -c slots)" -ge 2 ] && break; sleep 0.1
done
TICKS=$(getconf CLK_TCK)
cpu() { awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$PID/stat"; }

# Runs every query ROUNDS times; with "open", follows each job's page
# stream and the jobs list stream while it runs.
run() {
  local mode=$1 list=0
  if [ "$mode" = open ]; then
    curl -sN "$UI/api/jobs/events" > /dev/null & list=$!
  fi
  local cpu0 start
  cpu0=$(cpu); start=$(date +%s.%N)
  for _ in $(seq "$ROUNDS"); do
    for q in $QUERIES; do
      id=$("$T" submit --master "$MASTER" --detach --data "$DATA" "src/tpch_queries/$q.sql" | tail -1)
      follower=0
      if [ "$mode" = open ]; then curl -sN "$UI/api/jobs/$id/events" > /dev/null & follower=$!; fi
      until "$T" status --master "$MASTER" "$id" 2>/dev/null | grep -qE "succeeded|failed|cancelled"; do
        sleep 0.05
      done
      "$T" status --master "$MASTER" "$id" | grep -q succeeded || { echo "job $id ($q) did not succeed" >&2; exit 1; }
      [ "$follower" != 0 ] && kill "$follower" 2>/dev/null
    done
  done
  local wall
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  [ "$list" != 0 ] && kill "$list" 2>/dev/null
  echo "$mode $(echo "$(cpu) - $cpu0" | bc) $wall"
}

echo "coordinator pid $PID, UI $UI, queries: $QUERIES x $ROUNDS"
run closed > "$WORK/closed"
run open > "$WORK/open"
run closed > "$WORK/closed2"
read -r _ c1 w1 < "$WORK/closed"
read -r _ c2 w2 < "$WORK/open"
read -r _ c3 w3 < "$WORK/closed2"
printf "%-8s %12s %10s\n" mode coord_cpu_s wall_s
printf "%-8s %12s %10.2f\n" closed "$c1" "$w1"
printf "%-8s %12s %10.2f\n" open "$c2" "$w2"
printf "%-8s %12s %10.2f\n" closed "$c3" "$w3"
echo "ratio open/closed (mean of both closed runs): cpu $(echo "scale=3; 2 * $c2 / ($c1 + $c3)" | bc), wall $(echo "scale=3; 2 * $w2 / ($w1 + $w3)" | bc)"
