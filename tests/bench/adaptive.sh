#!/usr/bin/env bash
# Adaptive planning's effect, in one run on the same data:
# 1. TPC-H: plain DataFusion, tone embedded (adaptive decisions on) and
#    tone embedded with them off (`--engine tone-static`), medians of
#    ITERATIONS after a warm-up, per query and in total, with the ratios;
# 2. a query written in a bad join order (lineitem ⋈ partsupp on partkey
#    first), with reordering on and off, and the decisions and runtime
#    filters `tone explain --analyze` reports for each TPC-H query.
#
# Usage: tests/bench/adaptive.sh DATA_DIR [ITERATIONS] [TONE_BINARY]
#   DATA_DIR: TPC-H data from `tone gen tpch` (scale 1 for the figures in
#   the notes).
set -eu
DATA=$(realpath "$1")
ITERATIONS=${2:-3}
T=$(realpath "${3:-target/release/tone}")
QUERIES=$(dirname "$(realpath "$0")")/../../../shared/tpch/queries

echo "== TPC-H: datafusion, tone, tone-static"
"$T" bench tpch --data "$DATA" --iterations "$ITERATIONS" \
  --engine datafusion --engine tone --engine tone-static 2>/dev/null

BAD="SELECT count(*) AS n, sum(l_extendedprice) AS revenue FROM lineitem
  JOIN partsupp ON l_partkey = ps_partkey JOIN orders ON l_orderkey = o_orderkey
  JOIN customer ON o_custkey = c_custkey
  WHERE c_mktsegment = 'BUILDING' AND o_orderdate = DATE '1995-03-15'"
echo "== a bad join order, median of $ITERATIONS"
for aqe in on off; do
  times=()
  for _ in $(seq "$ITERATIONS"); do
    start=$(date +%s.%N)
    "$T" sql --aqe "$aqe" --data "$DATA" "$BAD" > /dev/null 2>&1
    times+=("$(echo "$(date +%s.%N) - $start" | bc)")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (ITERATIONS + 1) / 2 ))p")
  echo "aqe $aqe: ${median}s"
done

echo "== decisions per TPC-H query (runtime filters: rows kept / removed)"
for file in "$QUERIES"/q*.sql; do
  name=$(basename "$file" .sql)
  out=$("$T" explain --analyze --data "$DATA" -f "$file")
  decisions=$(echo "$out" | sed -n 's/^Adaptive: join order of [^:]*: \([a-z ]*[a-z]\) (.*/\1/p' | paste -sd, -)
  filters=$(echo "$out" | grep "RuntimeFilterExec" |
    sed -n 's/.*\[rows=\([0-9]*\), removed=\([0-9]*\).*/\1 kept, \2 removed/p' | paste -sd';' -)
  echo "$name: join order: ${decisions:-none}; runtime filters: ${filters:-none}"
done
