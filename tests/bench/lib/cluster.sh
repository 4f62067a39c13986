# Shared by the bench scripts that start a local cluster: source it, then
# call `start_cluster LIMIT [SLOTS]`. It sets DIR (a temp folder, removed
# on exit with every process started), MASTER and WORKERS (the worker pids).
# Needs T, the tone binary.

DIR=$(mktemp -d /tmp/tone-bench.XXXXXX)
PIDS=()
WORKERS=()
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# Resident KiB of a process and all its descendants (a worker and its
# executor processes).
tree_rss() {
  local pid=$1 total child
  total=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
  for child in $(pgrep -P "$pid" 2>/dev/null); do
    total=$((total + $(tree_rss "$child")))
  done
  echo "$total"
}

# A coordinator and 2 workers at --memory-limit $1 (with $2 slots each when
# given); returns once both workers are registered.
start_cluster() {
  local limit=$1 slots=${2:-} n
  "$T" coordinator --listen 127.0.0.1:0 >"$DIR/coordinator.out" 2>"$DIR/coordinator.err" </dev/null &
  PIDS+=($!)
  for _ in $(seq 100); do
    grep -q "listening on" "$DIR/coordinator.out" 2>/dev/null && break
    sleep 0.1
  done
  MASTER=http://$(head -1 "$DIR/coordinator.out" | sed 's/.*listening on //')
  for n in 1 2; do
    mkdir -p "$DIR/worker$n"
    "$T" worker --coordinator "$MASTER" --memory-limit "$limit" ${slots:+--slots "$slots"} \
      --work-dir "$DIR/worker$n" >"$DIR/worker$n.log" 2>&1 </dev/null &
    PIDS+=($!)
    WORKERS+=($!)
  done
  until [ "$("$T" workers --master "$MASTER" 2>/dev/null | grep -c .)" -ge 2 ]; do sleep 0.2; done
}

# Samples the peak tree RSS of each worker into $DIR/peaks every $1
# seconds, in the background; SAMPLER is its pid.
sample_peaks() {
  (
    local peaks=(0 0) i rss
    while true; do
      for i in 0 1; do
        rss=$(tree_rss "${WORKERS[$i]}")
        [ "$rss" -gt "${peaks[$i]}" ] && peaks[$i]=$rss
      done
      echo "${peaks[*]}" >"$DIR/peaks"
      sleep "$1"
    done
  ) &
  SAMPLER=$!
  PIDS+=($SAMPLER)
}
