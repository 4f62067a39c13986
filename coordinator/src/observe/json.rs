//! The JSON the REST API answers with (`docs/api/openapi.yaml`): what
//! `view.rs` derives from a job's events.

use std::collections::BTreeMap;

use serde::Serialize;

use super::events::JobKind;

/// A job in the jobs listing (`/api/jobs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSummary {
    pub id: String,
    pub name: String,
    pub kind: JobKind,
    pub state: &'static str,
    pub submitted_unix_ms: u64,
    pub duration_ms: u64,
    pub stages_done: usize,
    pub stages_total: usize,
    pub tasks_running: usize,
    pub tasks_done: usize,
    pub tasks_total: usize,
    pub rows: u64,
    pub bytes_read: u64,
    pub bytes_shuffled: u64,
    pub error: String,
}

/// A job's page (`/api/jobs/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub stages: Vec<StageJson>,
    pub failures: Vec<FailureJson>,
    /// Adaptive decisions made while it ran, one line each.
    pub decisions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageJson {
    pub id: u32,
    pub partitions: u32,
    pub state: &'static str,
    pub inputs: Vec<InputJson>,
    pub output: Option<super::events::Exchange>,
    pub tasks_done: usize,
    pub tasks_total: usize,
    pub rows: u64,
    pub bytes_written: u64,
    pub spilled_bytes: u64,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub plan: Vec<super::events::PlanLine>,
    pub operators: Vec<OperatorJson>,
    pub tasks: Vec<TaskJson>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputJson {
    pub stage: u32,
    pub exchange: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperatorJson {
    pub depth: u32,
    pub name: String,
    pub output_rows: u64,
    pub elapsed_compute_ms: f64,
    pub spilled_bytes: u64,
    pub metrics: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskJson {
    pub partition: u32,
    pub attempt: u32,
    pub worker: String,
    pub state: &'static str,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub duration_ms: u64,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub spilled_bytes: u64,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureJson {
    pub stage: u32,
    pub partition: u32,
    pub attempt: u32,
    pub worker: String,
    pub kind: String,
    pub message: String,
}
