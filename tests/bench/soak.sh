#!/usr/bin/env bash
# The coordinator soak: 20,000 small jobs (sixteen of every twenty
# succeed, two fail while running, two are cancelled) through one
# coordinator with a state dir and two workers (1 slot each), four jobs in
# flight. Prints the coordinator's resident memory and the time per job
# after every 1,000 jobs, then both ratios (last point against the first).
#
# Usage: tests/bench/soak.sh [JOBS] [JOB_HISTORY] [TONE_BINARY] [BENCH_BINARY]
#   JOB_HISTORY: the coordinator's --job-history (default 1000, its default)
set -eu
JOBS=${1:-20000}
HISTORY=${2:-1000}
T=${3:-target/release/tone}
B=${4:-target/release/examples/bench}
WORK=$(mktemp -d)
GROUP=0
WORKERS=""
trap 'for g in $GROUP $WORKERS; do [ "$g" != 0 ] && kill -TERM -- -"$g" 2>/dev/null; done; rm -rf "$WORK"' EXIT

# The coordinator in its own process group, so one kill stops it.
setsid bash -c '
  "$1" coordinator --listen 127.0.0.1:0 --state-dir "$2/state" --job-history "$3" \
    > "$2/coordinator.out" 2> "$2/coordinator.err" &
  echo $! > "$2/coordinator.pid"
  wait' soak "$T" "$WORK" "$HISTORY" &
GROUP=$!
for _ in $(seq 200); do grep -q "listening on" "$WORK/coordinator.out" 2>/dev/null && break; sleep 0.1; done
MASTER=http://$(sed -n 's/^coordinator: listening on //p' "$WORK/coordinator.out")
PID=$(cat "$WORK/coordinator.pid")
for _ in 1 2; do
  setsid "$T" worker --coordinator "$MASTER" --slots 1 > /dev/null 2>&1 &
  WORKERS+=" $!"
done
for _ in $(seq 200); do
  [ "$("$T" workers --master "$MASTER" 2>/dev/null | grep -c slots)" -ge 2 ] && break; sleep 0.1
done
echo "coordinator pid $PID at $MASTER, --job-history $HISTORY, $JOBS jobs"
"$B" soak --master "$MASTER" --coordinator-pid "$PID" --jobs "$JOBS" --dir "$WORK"
