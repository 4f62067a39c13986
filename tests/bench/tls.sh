#!/usr/bin/env bash
# What TLS and tokens cost: TPC-H on a 2-worker local cluster (1 slot
# each), plaintext against `--secure` (TLS on every connection, tokens on
# every call, signed tickets), alternating A B A B in the same run so both
# see the same machine. Prints each round's total median and the ratio of
# the medians over rounds.
#
# Usage: tests/bench/tls.sh DATA_DIR [TONE_BINARY] [ROUNDS] [ITERATIONS]
#   DATA_DIR: TPC-H data (tone gen tpch --scale 1 --out DIR --parts 2)
set -eu
DATA=${1:?usage: tls.sh DATA_DIR [TONE_BINARY] [ROUNDS] [ITERATIONS]}
T=${2:-target/debug/tone}
ROUNDS=${3:-2}
ITERATIONS=${4:-3}
WORK=$(mktemp -d)
trap 'kill -TERM -- -$CLUSTER 2>/dev/null; rm -rf "$WORK"' EXIT
CLUSTER=0

# Runs the benchmark on a fresh cluster started with "$@"; prints the total.
bench() {
  local mode=$1; shift
  setsid "$T" local-cluster --workers 2 --slots 1 --port 0 "$@" > "$WORK/cluster.out" 2>/dev/null &
  CLUSTER=$!
  for _ in $(seq 100); do [ -s "$WORK/cluster.out" ] && break; sleep 0.1; done
  sleep 0.5
  local master ca token
  master=$(sed -n 's/^master: //p' "$WORK/cluster.out")
  ca=$(sed -n 's/^tls-ca: //p' "$WORK/cluster.out")
  token=$(sed -n 's/^token-file: //p' "$WORK/cluster.out")
  local security=()
  [ -n "$ca" ] && security=(--tls-ca "$ca" --token-file "$token")
  "$T" bench tpch --data "$DATA" --master "$master" "${security[@]}" --engine cluster \
    --partitions 2 --iterations "$ITERATIONS" --json "$WORK/$mode.json" > /dev/null 2>&1
  kill -TERM -- -$CLUSTER 2>/dev/null; wait $CLUSTER 2>/dev/null || true
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['total_median_s'])" "$WORK/$mode.json"
}

plain=(); secure=()
for round in $(seq "$ROUNDS"); do
  plain+=( "$(bench plain)" )
  secure+=( "$(bench secure --secure)" )
  echo "round $round: plaintext ${plain[-1]} s, TLS + tokens ${secure[-1]} s"
done
python3 - "${plain[*]}" "${secure[*]}" <<'PY'
import statistics, sys
plain = [float(x) for x in sys.argv[1].split()]
secure = [float(x) for x in sys.argv[2].split()]
p, s = statistics.median(plain), statistics.median(secure)
print(f"TPC-H total, median over rounds: plaintext {p:.3f} s, TLS + tokens {s:.3f} s, "
      f"ratio {s / p:.3f} (overhead {100 * (s / p - 1):+.1f}%)")
PY
