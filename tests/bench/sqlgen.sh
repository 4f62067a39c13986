#!/usr/bin/env bash
# The differential SQL generator at volume: QUERIES generated queries
# (default 20,000) from seed FIRST (default 0), each on plain DataFusion and
# on tone embedded at 1, 2 and 7 partitions, one in six also on a 2-worker
# cluster. Runs in chunks so that a failure names its seeds early; prints
# each chunk's tally and the total time.
#
# Usage: tests/bench/sqlgen.sh [QUERIES] [FIRST]
# Replay one failure: TONE_SQLGEN_SEED=N cargo test --test tests sql_generated -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/../.."
QUERIES=${1:-20000}
FIRST=${2:-0}
CHUNK=${CHUNK:-1000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tone-target}"
cargo test --workspace --no-run 2>/dev/null
start=$(date +%s)
status=0
for ((from = FIRST; from < FIRST + QUERIES; from += CHUNK)); do
  count=$(( FIRST + QUERIES - from < CHUNK ? FIRST + QUERIES - from : CHUNK ))
  log=$(mktemp)
  if TONE_SQLGEN_FIRST=$from TONE_SQLGEN_QUERIES=$count cargo test --workspace --test tests \
      sql_generated::generated_queries -- --nocapture >"$log" 2>&1; then
    grep '^sqlgen:' "$log"
  else
    status=1
    grep -E '^sqlgen:|^seed [0-9]+ \(' "$log" || tail -40 "$log"
  fi
  rm -f "$log"
done
echo "total: $QUERIES queries from seed $FIRST in $(( $(date +%s) - start )) s; $([ $status = 0 ] && echo clean || echo 'DISAGREEMENTS above')"
exit $status
