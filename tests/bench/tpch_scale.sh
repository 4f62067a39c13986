#!/usr/bin/env bash
# How TPC-H scales on a 2-worker local cluster (issue 18's SF10 run), in one
# session: `tone bench tpch` on the cluster at SF1 and at SF10, and plain
# DataFusion embedded at SF10 as the baseline. Prints each run's table and
# the SF10/SF1 ratio of the cluster's totals.
#
# Usage: tests/bench/tpch_scale.sh SF1_DIR SF10_DIR [LIMIT] [ITERATIONS] [WARMUP] [TONE]
#   data from `tone gen tpch --scale 1|10 --parts 8`; LIMIT: each worker's
#   --memory-limit (default 8G); ITERATIONS: runs per query, median
#   reported (default 1), after WARMUP untimed runs (default 1).
set -eu
SF1=$(realpath "$1")
SF10=$(realpath "$2")
LIMIT=${3:-8G}
ITERATIONS=${4:-1}
WARMUP=${5:-1}
T=$(realpath "${6:-target/release/tone}")
# shellcheck source=lib/cluster.sh
source "$(dirname "$0")/lib/cluster.sh"
# Slots per worker as `tone local-cluster --workers 2` gives them: the
# cores shared between the two workers.
start_cluster "$LIMIT" "$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))"

bench() {
  "$T" bench tpch --iterations "$ITERATIONS" --warmup "$WARMUP" "$@"
}
echo "== SF1, cluster"
bench --data "$SF1" --master "$MASTER" | tee "$DIR/sf1"
echo "== SF10, cluster and plain DataFusion"
bench --data "$SF10" --master "$MASTER" --engine cluster --engine datafusion | tee "$DIR/sf10"
one=$(awk '/^total/ { print $2 }' "$DIR/sf1" | tr -d s)
ten=$(awk '/^total/ { print $2 }' "$DIR/sf10" | tr -d s)
echo "cluster SF10 / SF1 total: $(echo "scale=2; $ten / $one" | bc)x (target 10.5x)"
