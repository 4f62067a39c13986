#!/usr/bin/env bash
# The scheduler simulation over many seeds (default 100,000), in a release
# build of the coordinator's unit tests. Prints the seeds, the steps taken,
# the event kinds reached and the time; a broken invariant prints its seed
# and the steps that led to it (replay one with TONE_SIM_SEED=N).
#
# Usage: tests/bench/simulate.sh [SEEDS]
set -eu
SEEDS=${1:-100000}
cd "$(dirname "$0")/../.."
start=$(date +%s)
TONE_SIM_SEEDS=$SEEDS cargo test --release -p tone-coordinator --lib \
  scheduler::simulation::seeded_simulations_keep_every_invariant -- --nocapture
echo "simulated $SEEDS seeds in $(( $(date +%s) - start )) s (build included)"
