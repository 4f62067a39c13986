#!/usr/bin/env bash
# A hash join whose build side will not fit a task's share of the memory
# limit, in one run on the same machine: TPC-H orders (with comments, the
# build side) joined to lineitem, embedded at 4 partitions,
# 1. with no limit (the baseline),
# 2. under LIMIT with the build side split for memory (the default),
# 3. under LIMIT as planned (`SET tone.spillable_join = false`),
# each a median of ITERATIONS wall-clock times with the peak RSS of the
# last run, and the layout `tone explain --analyze` reports.
#
# Usage: tests/bench/spillable_join.sh TPCH_DIR [LIMIT] [ITERATIONS] [TONE]
#   TPCH_DIR: TPC-H data from `tone gen tpch` (scale 1 for the notes'
#   figures); LIMIT: `--memory-limit` (default 128M).
set -eu
DATA=$(realpath "$1")
LIMIT=${2:-128M}
ITERATIONS=${3:-3}
T=$(realpath "${4:-target/release/tone}")
JOIN="select o_orderpriority, count(*), sum(length(l_comment) + length(o_comment))
  from orders join lineitem on l_orderkey = o_orderkey group by o_orderpriority"
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# Runs the join ITERATIONS times with ARGS; prints "median_ms rss_kb status".
run() {
  local times=() rss=0 status=ok
  for _ in $(seq "$ITERATIONS"); do
    local start end
    start=$(date +%s%N)
    if ! /usr/bin/time -f "%M" -o /tmp/spillable_join.rss \
      "$T" sql --partitions 4 --data "$DATA" "$@" >/dev/null 2>/tmp/spillable_join.err; then
      status="failed: $(grep -o 'resources exhausted[^:]*' /tmp/spillable_join.err | head -1)"
    fi
    end=$(date +%s%N)
    times+=($(((end - start) / 1000000)))
    rss=$(tail -1 /tmp/spillable_join.rss)
  done
  echo "$(printf '%s\n' "${times[@]}" | median) ms, peak RSS $((rss / 1024)) MiB, $status"
}

echo "== orders ⋈ lineitem at 4 partitions ($DATA)"
echo "no limit:                $(run "$JOIN")"
echo "$LIMIT, split for memory: $(run --memory-limit "$LIMIT" "$JOIN")"
echo "$LIMIT, as planned:       $(run --memory-limit "$LIMIT" "SET tone.spillable_join = false; $JOIN")"
"$T" explain --analyze --partitions 4 --data "$DATA" --memory-limit "$LIMIT" "$JOIN" |
  grep '^Adaptive' | cut -c1-220
