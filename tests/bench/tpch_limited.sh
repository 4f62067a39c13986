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
# shellcheck source=lib/cluster.sh
source "$(dirname "$0")/lib/cluster.sh"
start_cluster "$LIMIT" 2
spilled() {
  "$T" workers --master "$MASTER" | sed -E 's/.*operator_spilled_bytes=([0-9]+).*/\1/' |
    awk '{ s += $1 } END { print s + 0 }'
}

mkdir -p "$DIR/answers"
echo "== TPC-H $DATA on 2 workers at --memory-limit $LIMIT (2 slots each)"
for file in "$QUERIES"/q*.sql; do
  name=$(basename "$file" .sql)
  before=$(spilled)
  sample_peaks 0.25
  sampler=$SAMPLER
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
