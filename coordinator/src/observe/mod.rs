//! What the coordinator shows about its jobs and workers: the web UI's
//! views, the Prometheus metrics and the event log.
//!
//! - `events`: the closed set of job events, one JSON line each;
//! - `view`: a job folded from its events; `json`: the REST API's JSON;
//! - `board`: the live coordinator's recent views, fed by the scheduler;
//! - `event_log`: events appended per job as files, and read back by
//!   `tone history`;
//! - `metrics`: the Prometheus registry.

pub mod board;
pub mod event_log;
pub mod events;
pub mod grpc;
mod json;
pub mod metrics;
#[cfg(test)]
mod tests;
pub mod view;

use std::sync::{Mutex, MutexGuard};

use tone_engine::plan_figures::{exchange_kind, outline};
use tone_engine::StageDag;

use events::{Exchange, PlanLine, StageOutline};

/// A poisoned lock still guards consistent data here: every update under
/// it is a single fold step.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A planned DAG as the `planned` event records it.
pub fn outline_dag(dag: &StageDag) -> Vec<StageOutline> {
    let last = dag.final_stage().id;
    dag.stages
        .iter()
        .map(|stage| StageOutline {
            id: stage.id.0,
            partitions: stage.partitions() as u32,
            inputs: stage.inputs.iter().map(|input| input.0).collect(),
            // The final stage's output is the result (on a cluster also
            // written by a shuffle writer, which the client reads).
            output: stage
                .writer()
                .filter(|_| stage.id != last)
                .map(|writer| Exchange {
                    exchange: exchange_kind(writer.shuffle_partitioning()).to_string(),
                    partitioning: tone_engine::shuffle::describe_partitioning(
                        writer.shuffle_partitioning(),
                    ),
                }),
            plan: outline(&stage.plan)
                .into_iter()
                .map(|line| PlanLine {
                    depth: line.depth,
                    name: line.name,
                    detail: line.detail,
                })
                .collect(),
        })
        .collect()
}
