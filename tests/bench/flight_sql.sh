#!/usr/bin/env bash
# Flight SQL's overhead: TPC-H through ADBC from Python against `tone bench
# tpch --engine cluster` on the same 2-worker local cluster in the same
# run (medians of ITERATIONS after a warm-up for ADBC; medians of
# ITERATIONS for the bench), per query and in total; and rows/s of a
# whole `SELECT * FROM lineitem` streamed to the Python client, with
# results read from the workers and through the coordinator
# (--flight-sql-proxy).
#
# Usage: tests/bench/flight_sql.sh DATA_DIR [ITERATIONS] [TONE_BINARY] [PYTHON]
#   DATA_DIR: TPC-H data from `tone gen tpch` (scale 1: lineitem has 6 M rows).
#   PYTHON: a python with adbc-driver-flightsql and pyarrow
#           [default: the tests' venv, ~/.cache/tone-venv].
set -eu
DATA=$(realpath "$1")
ITERATIONS=${2:-3}
T=$(realpath "${3:-target/release/tone}")
PY=${4:-$HOME/.cache/tone-venv/bin/python3}
HERE=$(dirname "$0")
"$PY" -c "import adbc_driver_flightsql, pyarrow" 2>/dev/null ||
  "$(dirname "$PY")/pip" install --quiet adbc-driver-flightsql adbc-driver-manager pyarrow
WORK=$(mktemp -d)
GROUP=0
stop() { [ "$GROUP" != 0 ] && kill -TERM -- -"$GROUP" 2>/dev/null; GROUP=0; sleep 1; }
trap 'stop; rm -rf "$WORK"' EXIT

# Starts a local cluster with Flight SQL (extra flags: $1); sets MASTER, FLIGHT.
start() {
  setsid bash -c '"$1" local-cluster --workers 2 --port 0 --flight-sql-listen 127.0.0.1:0 $3 \
    > "$2/cluster.out" 2> "$2/cluster.err"' flight_sql "$T" "$WORK" "${1:-}" &
  GROUP=$!
  for _ in $(seq 300); do grep -q "^flight-sql: " "$WORK/cluster.out" 2>/dev/null && break; sleep 0.1; done
  MASTER=$(sed -n 's/^master: //p' "$WORK/cluster.out")
  FLIGHT=$(sed -n 's/^flight-sql: //p' "$WORK/cluster.out")
  for _ in $(seq 300); do
    [ "$("$T" workers --master "$MASTER" 2>/dev/null | grep -c slots)" -ge 2 ] && break; sleep 0.1
  done
}

start
"$T" bench tpch --engine cluster --master "$MASTER" --data "$DATA" \
  --iterations "$ITERATIONS" --json "$WORK/cluster.json" > /dev/null
"$PY" "$HERE/flight_sql_bench.py" "$FLIGHT" "$DATA" src/tpch_queries "$ITERATIONS" > "$WORK/adbc.json"
stop
start --flight-sql-proxy
"$PY" "$HERE/flight_sql_bench.py" "$FLIGHT" "$DATA" src/tpch_queries 1 > "$WORK/proxy.json"
stop

"$PY" - "$WORK/cluster.json" "$WORK/adbc.json" "$WORK/proxy.json" <<'PY'
import json, sys
cluster = json.load(open(sys.argv[1]))["queries"]
adbc = json.load(open(sys.argv[2]))
proxy = json.load(open(sys.argv[3]))
print(f"{'query':<6} {'bench s':>8} {'adbc s':>8} {'overhead ms':>12} {'ratio':>6}")
total_c = total_a = 0.0
for name, figures in sorted(adbc["queries"].items()):
    c, a = cluster[name]["median_s"], figures["median_s"]
    total_c += c; total_a += a
    print(f"{name:<6} {c:8.3f} {a:8.3f} {1000 * (a - c):12.1f} {a / c:6.2f}")
print(f"{'total':<6} {total_c:8.3f} {total_a:8.3f} {1000 * (total_a - total_c):12.1f} {total_a / total_c:6.2f}")
for label, run in (("from workers", adbc), ("through proxy", proxy)):
    print(f"SELECT * FROM lineitem {label}: {run['scan_rows']} rows in {run['scan_s']:.2f} s "
          f"= {run['scan_rows_per_s'] / 1e6:.2f} M rows/s")
PY
