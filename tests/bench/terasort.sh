#!/usr/bin/env bash
# TeraSort at scale, in one run on the same machine:
# 1. embedded, BYTES of records with no limit and under --memory-limit
#    LIMIT: sort time, MB/s, peak RSS and peak RSS over the input;
# 2. a coordinator and 2 workers (2 slots each, --memory-limit
#    WORKER_LIMIT), CLUSTER_BYTES of records: sort time, GB/min per node
#    against the Spark 2014 record's rate (100 TB on 206 nodes in 23 min,
#    about 20.7 GB/min per node), and the peak RSS of each worker with its
#    executor processes.
# Every run validates its output (sorted; count and checksum equal to the
# input's) and prints VALID or INVALID.
#
# Usage: tests/bench/terasort.sh [BYTES] [LIMIT] [CLUSTER_BYTES] [WORKER_LIMIT] [BENCH] [TONE]
#   defaults: 1G 1G 10G 4G, target/release/examples/bench, target/release/tone
#   (the notes' figures: the dev profile, which is optimized).
set -eu
BYTES=${1:-1G}
LIMIT=${2:-1G}
CLUSTER_BYTES=${3:-10G}
WORKER_LIMIT=${4:-4G}
BENCH=$(realpath "${5:-target/release/examples/bench}")
T=$(realpath "${6:-target/release/tone}")
# shellcheck source=lib/cluster.sh
source "$(dirname "$0")/lib/cluster.sh"

# Embedded: "report line; peak RSS" for the given extra flags.
embedded() {
  /usr/bin/time -f "%M" -o "$DIR/rss" \
    "$BENCH" terasort --bytes "$BYTES" --dir "$DIR/embedded" "$@" 2>&1 | grep terasort
  local rss input
  rss=$(tail -1 "$DIR/rss")
  input=$(du -sk "$DIR/embedded/terasort/input" | cut -f1)
  echo "  peak RSS $((rss / 1024)) MiB = $(echo "scale=2; $rss / $input" | bc)x the input"
  rm -rf "$DIR/embedded"
}

echo "== embedded, $BYTES"
echo "no limit:"
embedded
echo "--memory-limit $LIMIT:"
embedded --memory-limit "$LIMIT"

echo "== 2 workers (2 slots, --memory-limit $WORKER_LIMIT each), $CLUSTER_BYTES"
start_cluster "$WORKER_LIMIT" 2
# Peak RSS of each worker with its executors, sampled every half second.
sample_peaks 0.5
LINE=$("$BENCH" terasort --bytes "$CLUSTER_BYTES" --dir "$DIR/cluster" --master "$MASTER" 2>&1 | grep terasort)
kill "$SAMPLER"
echo "$LINE"
read -r peak1 peak2 <"$DIR/peaks"
echo "  peak RSS per worker (with its executors): $((peak1 / 1024)) MiB, $((peak2 / 1024)) MiB"
SECONDS_TAKEN=$(echo "$LINE" | sed -E 's/.* in ([0-9.]+) s.*/\1/')
MB=$(echo "$LINE" | sed -E 's/.*records, ([0-9.]+) MB.*/\1/')
RATE=$(echo "scale=3; $MB / 1000 / ($SECONDS_TAKEN / 60) / 2" | bc)
echo "  $RATE GB/min per node; Spark 2014 record: 20.7 GB/min per node ($(echo "scale=3; $RATE / 20.7" | bc)x)"
