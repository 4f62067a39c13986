#!/usr/bin/env bash
# TPC-H read from an S3 server against the same data on local disk, on one
# 2-worker local cluster (1 slot each), alternating local and S3 rounds in
# the same run so both see the same machine. The S3 server is moto (from
# the test venv, installed on first use); a counting TCP proxy in front of
# it measures the bytes on the wire, moto's log the requests.
#
# Prints per round the total median of each, then the ratio of the medians
# over rounds, the slowest queries' ratios, and the S3 traffic of one pass
# over the 22 queries (requests by kind, ranged GETs, bytes).
#
# Usage: tests/bench/s3.sh DATA_DIR [TONE_BINARY] [ROUNDS] [ITERATIONS]
#   DATA_DIR: TPC-H data (tone gen tpch --scale 1 --out DIR --parts 2)
set -eu
DATA=$(cd "${1:?usage: s3.sh DATA_DIR [TONE_BINARY] [ROUNDS] [ITERATIONS]}" && pwd)
T=$(realpath "${2:-target/debug/tone}")
ROUNDS=${3:-2}
ITERATIONS=${4:-3}
VENV=${TONE_VENV:-$HOME/.cache/tone-venv}
WORK=$(mktemp -d)
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill -TERM -- -"$pid" 2>/dev/null; done; rm -rf "$WORK"' EXIT

[ -x "$VENV/bin/moto_server" ] || {
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'moto[server]'
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

MOTO_PORT=$(free_port)
setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" > "$WORK/moto.log" 2>&1 &
PIDS+=($!)
# The proxy counts every byte each way; SIGUSR1 zeroes. The file holds
# "sent_to_server received_from_server" as of the last chunk forwarded
# (clients keep their connections open, so waiting for a close would
# miss their bytes).
cat > "$WORK/proxy.py" <<'PY'
import asyncio, signal, sys
listen, target, counts = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
total = [0, 0]
def save():
    with open(counts, "w") as f:
        f.write(f"{total[0]} {total[1]}\n")
def zero(*_):
    total[0] = total[1] = 0
    save()
async def pipe(reader, writer, index):
    try:
        while data := await reader.read(1 << 16):
            total[index] += len(data)
            save()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()
async def serve(client_reader, client_writer):
    server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
    await asyncio.gather(pipe(client_reader, server_writer, 0), pipe(server_reader, client_writer, 1))
async def main():
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, zero)
    zero()
    server = await asyncio.start_server(serve, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY
PROXY_PORT=$(free_port)
setsid python3 "$WORK/proxy.py" "$PROXY_PORT" "$MOTO_PORT" "$WORK/bytes" &
PROXY=$!
PIDS+=($PROXY)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$MOTO_PORT/" > /dev/null 2>&1 && [ -s "$WORK/bytes" ] && break
  sleep 0.2
done

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL="http://127.0.0.1:$PROXY_PORT" AWS_ALLOW_HTTP=true
echo "uploading $DATA to s3://tpch/data/ (moto on port $MOTO_PORT)"
"$VENV/bin/python" - "$DATA" <<'PY'
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
s3.create_bucket(Bucket="tpch")
root = sys.argv[1]
for table in sorted(os.listdir(root)):
    folder = os.path.join(root, table)
    if table.startswith((".", "_")) or not os.path.isdir(folder):
        continue
    for name in sorted(os.listdir(folder)):
        if not name.startswith((".", "_")):
            s3.upload_file(os.path.join(folder, name), "tpch", f"data/{table}/{name}")
PY

setsid "$T" local-cluster --workers 2 --slots 1 --port 0 > "$WORK/cluster.out" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^master: ' "$WORK/cluster.out" 2>/dev/null && break; sleep 0.1; done
MASTER=$(sed -n 's/^master: //p' "$WORK/cluster.out")

# Runs the 22 queries from $1 (a folder or a URL); prints the total median.
bench() {
  "$T" bench tpch --data "$1" --master "$MASTER" --engine cluster --partitions 2 \
    --iterations "$ITERATIONS" --json "$WORK/$2.json" > /dev/null 2> "$WORK/$2.err" || {
      cat "$WORK/$2.err" >&2; exit 1; }
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['total_median_s'])" "$WORK/$2.json"
}

# One pass with the traffic counted from zero.
: > "$WORK/moto.log"
kill -USR1 "$PROXY"
until grep -qx '0 0' "$WORK/bytes"; do sleep 0.05; done
"$T" bench tpch --data s3://tpch/data/ --master "$MASTER" --engine cluster --partitions 2 \
  --iterations 1 > /dev/null 2>&1
# Every response has arrived once the bench returned: the file is current.
read -r SENT RECEIVED < "$WORK/bytes"
cp "$WORK/moto.log" "$WORK/traffic.log"

local_totals=(); s3_totals=()
for round in $(seq "$ROUNDS"); do
  local_totals+=( "$(bench "$DATA" "local-$round")" )
  s3_totals+=( "$(bench s3://tpch/data/ "s3-$round")" )
  echo "round $round: local disk ${local_totals[-1]} s, S3 ${s3_totals[-1]} s"
done

python3 - "$WORK" "$ROUNDS" "${local_totals[*]}" "${s3_totals[*]}" "$SENT" "$RECEIVED" <<'PY'
import collections, json, re, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
local = [float(x) for x in sys.argv[3].split()]
s3 = [float(x) for x in sys.argv[4].split()]
sent, received = int(sys.argv[5]), int(sys.argv[6])
l, s = statistics.median(local), statistics.median(s3)
print(f"TPC-H total, median over rounds: local disk {l:.3f} s, S3 {s:.3f} s, ratio {s / l:.2f}")

def per_query(prefix):
    runs = [json.load(open(f"{work}/{prefix}-{r}.json")) for r in range(1, rounds + 1)]
    rows = {n: q["rows"] for n, q in runs[0]["queries"].items()}
    return rows, {n: statistics.median(run["queries"][n]["median_s"] for run in runs)
                  for n in runs[0]["queries"]}
(lrows, lq), (srows, sq) = per_query("local"), per_query("s3")
if lrows != srows:
    sys.exit(f"row counts differ between local disk and S3: {lrows} vs {srows}")
worst = sorted(lq, key=lambda n: sq[n] - lq[n], reverse=True)[:5]
print("most time added by S3: " + ", ".join(
    f"{n} {lq[n]:.2f} -> {sq[n]:.2f} s (x{sq[n] / lq[n]:.1f})" for n in worst))

kinds = collections.Counter()
plain = re.sub(r"\x1b\[[0-9;]*m", "", open(f"{work}/traffic.log").read())
for line in plain.splitlines():
    match = re.search(r'"(\w+) (\S+) HTTP/[\d.]+" (\d+)', line)
    if not match:
        continue
    method, path, status = match.groups()
    if "list-type=2" in path:
        kinds["LIST"] += 1
    elif method == "GET" and status == "206":
        kinds["ranged GET"] += 1
    else:
        kinds[f"{method} {status}"] += 1
total = sum(kinds.values())
print(f"S3 traffic of one pass over the 22 queries: {total} requests ("
      + ", ".join(f"{k} {v}" for k, v in kinds.most_common()) + f"), "
      f"{received / 2**20:.1f} MiB received, {sent / 2**20:.1f} MiB sent")
PY
