#!/usr/bin/env bash
# TPC-H on a 2-worker local cluster whose workers run under a memory limit
# (issue 18's SF30 run: data from `tone gen tpch --scale 30`, 4G each).
# For each query: its time, the peak RSS of each worker with its executor
# processes, and what the workers spilled meanwhile (operator spills, from
# `tone workers`). Then every answer is checked against DuckDB with
# ../shared/scripts/oracle.py (needs `duckdb` in PYTHON's packages).
#
# Usage: tests/bench/tpch_limited.sh DATA_DIR [LIMIT] [TONE] [PYTHON] [ORACLE]
#   defaults: 4G, target/release/tone, python3, ../shared/scripts/oracle.py
set -eu
DATA=$(realpath "$1")
LIMIT=${2:-4G}
T=$(realpath "${3:-target/release/tone}")
PYTHON=${4:-python3}
ORACLE=$(realpath "${5:-../shared/scripts/oracle.py}")
QUERIES=$(realpath "${QUERIES:-$(dirname "$0")/../../src/tpch_queries}")
DIR=$(mktemp -d /tmp/tone-tpch-limited.XXXXXX)
PIDS=()
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

tree_rss() {
  local pid=$1 total child
  total=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
  for child in $(pgrep -P "$pid" 2>/dev/null); do
    total=$((total + $(tree_rss "$child")))
  done
  echo "$total"
}

"$T" coordinator --listen 127.0.0.1:0 >"$DIR/coordinator.out" 2>"$DIR/coordinator.err" </dev/null &
PIDS+=($!)
for _ in $(seq 100); do
  grep -q "listening on" "$DIR/coordinator.out" 2>/dev/null && break
  sleep 0.1
done
MASTER=http://$(head -1 "$DIR/coordinator.out" | sed 's/.*listening on //')
WORKERS=()
for n in 1 2; do
  mkdir -p "$DIR/worker$n"
  "$T" worker --coordinator "$MASTER" --slots 2 --memory-limit "$LIMIT" \
    --work-dir "$DIR/worker$n" >"$DIR/worker$n.log" 2>&1 </dev/null &
  PIDS+=($!)
  WORKERS+=($!)
done
until [ "$("$T" workers --master "$MASTER" 2>/dev/null | grep -c .)" -ge 2 ]; do sleep 0.2; done
spilled() {
  "$T" workers --master "$MASTER" | sed -E 's/.*operator_spilled_bytes=([0-9]+).*/\1/' |
    awk '{ s += $1 } END { print s + 0 }'
}

mkdir -p "$DIR/answers"
echo "== TPC-H $DATA on 2 workers at --memory-limit $LIMIT (2 slots each)"
for file in "$QUERIES"/q*.sql; do
  name=$(basename "$file" .sql)
  before=$(spilled)
  (
    peaks=(0 0)
    while true; do
      for i in 0 1; do
        rss=$(tree_rss "${WORKERS[$i]}")
        [ "$rss" -gt "${peaks[$i]}" ] && peaks[$i]=$rss
      done
      echo "${peaks[*]}" >"$DIR/peaks"
      sleep 0.25
    done
  ) &
  sampler=$!
  start=$(date +%s%N)
  status=ok
  "$T" sql --master "$MASTER" --data "$DATA" --format csv -f "$file" \
    >"$DIR/answers/$name.csv" 2>"$DIR/$name.err" || status="failed: $(tail -1 "$DIR/$name.err" | cut -c1-160)"
  end=$(date +%s%N)
  kill "$sampler"
  wait "$sampler" 2>/dev/null || true
  read -r peak1 peak2 <"$DIR/peaks"
  echo "$name: $(((end - start) / 1000000)) ms; peak RSS $((peak1 / 1024)) MiB, $((peak2 / 1024)) MiB; spilled $(($(spilled) - before)) B; $status"
done

echo "== answers against DuckDB"
"$PYTHON" "$ORACLE" --data "$DATA" --queries "$QUERIES" --timeout 1800 \
  --tone "cat $DIR/answers/\$(basename {file} .sql).csv"
