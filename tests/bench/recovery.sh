#!/usr/bin/env bash
# Recovery cost: TPC-H q09 and q18 on a coordinator and 2 workers (1 slot
# each), 3 runs without a failure, then 3 runs with one worker killed
# (kill -9) halfway through the median time; prints the times, whether each
# answer equals the failure-free one, and the ratio of medians.
#
# Usage: tests/bench/recovery.sh DATA_DIR [TONE_BINARY]
#   DATA_DIR: TPC-H data (tone gen tpch --scale 1 --out DIR --parts 2)
set -u
DATA=${1:?usage: recovery.sh DATA_DIR [TONE_BINARY]}
T=${2:-target/debug/tone}
Q=$(dirname "$0")/../../src/tpch_queries
$T coordinator --listen 127.0.0.1:0 > /tmp/rc.out 2>/tmp/rc.err < /dev/null &
sleep 1
A=$(head -1 /tmp/rc.out | sed 's/coordinator: listening on //')
M=http://$A
declare -a W
start_worker() { $T worker --coordinator $M --slots 1 >/dev/null 2>&1 & echo $!; }
W=( $(start_worker) $(start_worker) )
sleep 1.5
run() { local s=$(date +%s.%N); $T sql --master $M --data $DATA --partitions 2 --format csv -f $Q/$1.sql > /tmp/rc-$1.csv 2>/tmp/rc-$1.err; local rc=$?; local e=$(date +%s.%N); echo "$(echo "$e - $s" | bc) $rc"; }
for q in q09 q18; do
  run $q > /dev/null  # warm
  base=(); for i in 1 2 3; do base+=( $(run $q | cut -d' ' -f1) ); done
  med=$(printf "%s\n" "${base[@]}" | sort -n | sed -n 2p)
  cp /tmp/rc-$q.csv /tmp/rc-$q-expected.csv
  killed=()
  for i in 1 2 3; do
    half=$(echo "$med / 2" | bc -l)
    ( sleep $half; kill -9 ${W[0]} ) & K=$!
    out=$(run $q); killed+=( "$(echo $out | cut -d' ' -f1)" )
    rc=$(echo $out | cut -d' ' -f2)
    wait $K
    same=$(cmp -s /tmp/rc-$q.csv /tmp/rc-$q-expected.csv && echo same || echo DIFFERENT)
    echo "$q killed run $i: ${killed[-1]} s rc=$rc answer=$same"
    W=( ${W[1]} $(start_worker) ); sleep 1.5
  done
  kmed=$(printf "%s\n" "${killed[@]}" | sort -n | sed -n 2p)
  echo "$q: no failure median ${med}s (${base[*]}); one worker killed at half time median ${kmed}s (${killed[*]}); ratio $(echo "$kmed / $med" | bc -l | cut -c1-4)"
done
kill ${W[@]} $(pgrep -P $$ -f "tone coordinator") 2>/dev/null
