#!/usr/bin/env bash
# PageRank at scale: 10 iterations over the example's generated graph
# (PAGES pages, about 2 edges a page: 500000 pages make about 1 M edges),
# embedded and on a 2-worker local cluster, each checked rank by rank
# against the same computation in plain Rust (`pagerank --check`: MATCH
# when every rank is within 1e-9). Prints the time of each run.
#
# Usage: tests/bench/pagerank.sh [PAGES] [PAGERANK] [TONE]
#   defaults: 500000, target/release/examples/pagerank, target/release/tone
set -eu
PAGES=${1:-500000}
PAGERANK=$(realpath "${2:-target/release/examples/pagerank}")
T=$(realpath "${3:-target/release/tone}")
OUT=$(mktemp /tmp/tone-pagerank-bench.XXXXXX)
CLUSTER=
cleanup() {
  [ -n "$CLUSTER" ] && kill "$CLUSTER" 2>/dev/null
  wait 2>/dev/null || true
  rm -f "$OUT"
}
trap cleanup EXIT

echo "== embedded"
env -u TONE_MASTER "$PAGERANK" --pages "$PAGES" --check | tail -1

echo "== 2-worker local cluster"
"$T" local-cluster --workers 2 --port 0 >"$OUT" 2>&1 </dev/null &
CLUSTER=$!
for _ in $(seq 200); do
  grep -q "^master: " "$OUT" && break
  sleep 0.1
done
MASTER=$(grep "^master: " "$OUT" | head -1 | sed 's/^master: //')
until [ "$("$T" workers --master "$MASTER" 2>/dev/null | grep -c .)" -ge 2 ]; do sleep 0.2; done
"$PAGERANK" --pages "$PAGES" --check --master "$MASTER" | tail -1
