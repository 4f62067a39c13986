//! A seeded simulation of the scheduler's state machine: workers join,
//! die, freeze and come back; reports arrive late, twice or out of order;
//! inputs go missing; jobs of up to 50 stages are submitted, cancelled
//! and timed out; the coordinator restarts on its state store (`store.rs`
//! models what it holds, `restart.rs` the restart). After every step the
//! invariants are checked:
//!
//! - the state's own (`SchedulerState::check`): slots, one worker per
//!   running attempt;
//! - a report counts only if it is of the attempt running on its worker,
//!   made under the current coordinator (so no task is counted twice);
//! - no worker process runs more attempts than its slots;
//! - a worker excluded from a job gets none of its tasks while another
//!   can take them;
//! - a succeeded job's results name every final partition exactly once,
//!   each where that output was made;
//! - after a restart, an output the store recorded done is not run again
//!   while its holder, which rejoined holding it, stays reachable;
//! - every job ends (succeeded, failed with a reason, or cancelled) within
//!   a bounded number of steps once the faults stop, and a job submitted
//!   then succeeds.
//!
//! `TONE_SIM_SEED=N` replays one seed exactly; `TONE_SIM_SEEDS=N` runs
//! seeds 0..N (`tests/bench/simulate.sh` runs 100,000).

mod actions;
mod dags;
mod restart;
mod run;
mod store;
mod world;

use std::collections::BTreeSet;

pub use run::{Kind, Simulation};

/// Seeds the test runs by default: enough that every event kind happens.
const DEFAULT_SEEDS: u64 = 64;

fn seeds() -> Vec<u64> {
    let number = |name: &str| {
        std::env::var(name).ok().map(|value| {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={value} is not a number"))
        })
    };
    if let Some(seed) = number("TONE_SIM_SEED") {
        return vec![seed];
    }
    (0..number("TONE_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect()
}

#[test]
fn seeded_simulations_keep_every_invariant() {
    let seeds = seeds();
    let mut seen = BTreeSet::new();
    let mut steps = 0;
    for &seed in &seeds {
        match Simulation::new(seed).run() {
            Ok(report) => {
                seen.extend(report.seen);
                steps += report.steps;
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    println!(
        "{} seeds, {steps} steps, event kinds: {seen:?}",
        seeds.len()
    );
    if seeds.len() as u64 >= DEFAULT_SEEDS {
        let missing: Vec<Kind> = Kind::ALL
            .iter()
            .copied()
            .filter(|kind| !seen.contains(kind))
            .collect();
        assert!(missing.is_empty(), "no seed exercised {missing:?}");
    }
}

#[test]
fn a_seed_replays_exactly() {
    let first = Simulation::new(7)
        .run()
        .expect("seed 7 keeps the invariants");
    let again = Simulation::new(7)
        .run()
        .expect("seed 7 keeps the invariants");
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.steps, again.steps);
}
