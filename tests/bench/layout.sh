#!/usr/bin/env bash
# Adaptive stage layout's effect, in one run on the same machine:
# 1. a skewed join (3 rows in 4 share one key), embedded at 8 partitions,
#    with skew splitting on (the default thresholds) and off: medians of
#    ITERATIONS, and the layout `tone explain --analyze` reports;
# 2. TPC-H on a 2-worker local cluster, coalescing and skew splitting on
#    and then off (`SET` on the coordinator), medians of ITERATIONS after a
#    warm-up, per query and in total.
#
# Usage: tests/bench/layout.sh TPCH_DIR [ITERATIONS] [TONE_BINARY] [ROWS]
#   TPCH_DIR: TPC-H data from `tone gen tpch` (scale 1 for the figures in
#   the notes); ROWS: rows of the skewed table (default 16 M).
set -eu
DATA=$(realpath "$1")
ITERATIONS=${2:-3}
T=$(realpath "${3:-target/release/tone}")
ROWS=${4:-16000000}
WORK=$(mktemp -d)
trap 'kill -- -$CLUSTER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
CLUSTER_PID=

echo "== skewed join: $ROWS rows, 3 in 4 with the key 7, in 8 files"
mkdir -p "$WORK/skew/facts" "$WORK/skew/dims"
for part in $(seq 0 7); do
  "$T" sql "COPY (SELECT CASE WHEN value % 4 = 0 THEN value % 100000 ELSE 7 END AS k, value AS v
    FROM generate_series(1, $ROWS) WHERE value % 8 = $part)
    TO '$WORK/skew/facts/part-$part.parquet' STORED AS PARQUET" >/dev/null
done
"$T" sql "COPY (SELECT value AS k, value * 3 AS w FROM generate_series(1, 100000))
  TO '$WORK/skew/dims/part-0.parquet' STORED AS PARQUET" >/dev/null
JOIN="SELECT count(*), sum(v), sum(w) FROM facts JOIN dims ON facts.k = dims.k"
PARTITIONED="SET datafusion.optimizer.hash_join_single_partition_threshold = 0;
  SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0"
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
for skew in true false; do
  times=()
  for _ in $(seq "$ITERATIONS"); do
    start=$(date +%s%N)
    "$T" sql --partitions 8 --data "$WORK/skew" \
      "$PARTITIONED; SET tone.skew_join = $skew; $JOIN" >/dev/null
    times+=($(( ($(date +%s%N) - start) / 1000000 )))
  done
  echo "skew_join=$skew: median $(printf '%s\n' "${times[@]}" | median) ms of ${times[*]}"
done
"$T" explain --analyze --partitions 8 --data "$WORK/skew" "$PARTITIONED; $JOIN" \
  | grep '^Adaptive: stage' || echo "(no stage laid out)"

echo "== TPC-H on a 2-worker local cluster: layout on, then off"
setsid "$T" local-cluster --workers 2 --port 0 >"$WORK/cluster.out" 2>"$WORK/cluster.err" &
CLUSTER_PID=$!
for _ in $(seq 300); do grep -q "^master: " "$WORK/cluster.out" 2>/dev/null && break; sleep 0.1; done
MASTER=$(sed -n 's/^master: //p' "$WORK/cluster.out")
for _ in $(seq 300); do
  [ "$("$T" workers --master "$MASTER" 2>/dev/null | grep -c slots)" -ge 2 ] && break; sleep 0.1
done
for layout in true false; do
  for setting in coalesce_partitions skew_join; do
    "$T" sql --master "$MASTER" "SET tone.$setting = $layout" >/dev/null
  done
  echo "-- layout $layout"
  "$T" bench tpch --engine cluster --master "$MASTER" --data "$DATA" --iterations "$ITERATIONS" \
    --json "$WORK/layout-$layout.json" 2>/dev/null | tail -3
done
python3 - "$WORK/layout-true.json" "$WORK/layout-false.json" <<'EOF'
import json, sys
on, off = (json.load(open(path)) for path in sys.argv[1:3])
def totals(report):
    return {name: q["median_s"] for name, q in report["queries"].items()}
a, b = totals(on), totals(off)
for query in sorted(a):
    print(f"{query}: {a[query]:.3f} s on, {b[query]:.3f} s off ({a[query] / b[query]:.2f}x)")
print(f"total: {sum(a.values()):.3f} s on, {sum(b.values()):.3f} s off "
      f"({sum(a.values()) / sum(b.values()):.2f}x)")
EOF
