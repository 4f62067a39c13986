//! The JSON API behind the pages (`docs/api/openapi.yaml`), and the
//! Prometheus text at `/metrics`.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::oneshot;
use tone_proto::v1 as pb;

use super::live;
use super::UiState;
use crate::observe::board::{DepartedWorker, ListQuery};
use crate::scheduler::Event;

/// The most jobs one page lists.
const MAX_PAGE: usize = 500;
const DEFAULT_PAGE: usize = 50;
const STATES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/events", get(live::jobs))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/events", get(live::job))
        .route("/api/workers", get(workers))
        .route("/api/workers/events", get(live::workers))
}

#[derive(Debug, serde::Deserialize, Default)]
pub struct JobsParams {
    state: Option<String>,
    limit: Option<usize>,
    before: Option<u64>,
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// A listing query from the URL's, checked.
pub fn list_query(params: JobsParams) -> Result<ListQuery, Response> {
    if let Some(state) = &params.state {
        if !STATES.contains(&state.as_str()) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("unknown job state {state:?}; one of {}", STATES.join(", ")),
            ));
        }
    }
    Ok(ListQuery {
        state: params.state,
        limit: params.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
        before: params.before.filter(|before| *before > 0),
    })
}

async fn jobs(State(state): State<UiState>, Query(params): Query<JobsParams>) -> Response {
    match list_query(params) {
        Ok(query) => Json(state.board.list(&query)).into_response(),
        Err(response) => response,
    }
}

async fn job(State(state): State<UiState>, Path(id): Path<String>) -> Response {
    match state.board.detail(&id) {
        Some(detail) => Json(detail).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no job {id:?} is known here"),
        ),
    }
}

/// A worker as `/api/workers` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerJson {
    id: String,
    address: String,
    state: &'static str,
    slots: u32,
    running_tasks: u32,
    tasks_done: u64,
    memory_used_bytes: u64,
    memory_limit_bytes: u64,
    shuffle_disk_bytes: u64,
    operator_spilled_bytes: u64,
    executors: u32,
    max_executors: u32,
    heartbeat_age_ms: u64,
    excluded_from: Vec<String>,
    departed_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerList {
    workers: Vec<WorkerJson>,
}

/// The scheduler's workers now, then those that went away.
pub async fn worker_list(state: &UiState) -> Result<WorkerList, Response> {
    let live = match &state.scheduler {
        Some(scheduler) => live_workers(scheduler).await?,
        None => Vec::new(),
    };
    let mut workers: Vec<WorkerJson> = live.into_iter().map(live_json).collect();
    let departed: Vec<WorkerJson> = state
        .board
        .departed_workers()
        .into_iter()
        .rev()
        .filter(|gone| !workers.iter().any(|w| w.id == gone.id))
        .map(departed_json)
        .collect();
    workers.extend(departed);
    Ok(WorkerList { workers })
}

async fn live_workers(
    scheduler: &crate::scheduler::EventSender,
) -> Result<Vec<pb::WorkerInfo>, Response> {
    let (reply, answer) = oneshot::channel();
    let stopped = || error(StatusCode::SERVICE_UNAVAILABLE, "the scheduler has stopped");
    scheduler
        .send(Event::ListWorkers { reply })
        .await
        .map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())
}

fn live_json(info: pb::WorkerInfo) -> WorkerJson {
    let state = match (info.draining, info.excluded_from.is_empty()) {
        (true, _) => "draining",
        (false, false) => "excluded",
        (false, true) => "live",
    };
    WorkerJson {
        id: info.worker_id,
        address: info.flight_address,
        state,
        slots: info.slots,
        running_tasks: info.running_tasks,
        tasks_done: info.tasks_done,
        memory_used_bytes: info.memory_used_bytes,
        memory_limit_bytes: info.memory_limit_bytes,
        shuffle_disk_bytes: info.shuffle_disk_bytes,
        operator_spilled_bytes: info.operator_spilled_bytes,
        executors: info.executors,
        max_executors: info.max_executors,
        heartbeat_age_ms: info.heartbeat_age_ms,
        excluded_from: info.excluded_from,
        departed_unix_ms: 0,
    }
}

fn departed_json(gone: DepartedWorker) -> WorkerJson {
    WorkerJson {
        id: gone.id,
        address: gone.address,
        state: gone.state,
        slots: 0,
        running_tasks: 0,
        tasks_done: 0,
        memory_used_bytes: 0,
        memory_limit_bytes: 0,
        shuffle_disk_bytes: 0,
        operator_spilled_bytes: 0,
        executors: 0,
        max_executors: 0,
        heartbeat_age_ms: 0,
        excluded_from: Vec::new(),
        departed_unix_ms: gone.departed_unix_ms,
    }
}

async fn workers(State(state): State<UiState>) -> Response {
    match worker_list(&state).await {
        Ok(list) => Json(list).into_response(),
        Err(response) => response,
    }
}

/// Sets the gauges from the state now, then renders every metric.
pub async fn metrics(State(state): State<UiState>) -> Response {
    let metrics = &state.board.metrics;
    for name in STATES {
        metrics.jobs.with_label_values(&[name]).set(0);
    }
    for (name, count) in state.board.states() {
        metrics.jobs.with_label_values(&[name]).set(count);
    }
    let (running, queued) = state.board.task_counts();
    metrics.tasks_running.set(running);
    metrics.tasks_queued.set(queued);
    if let Some(scheduler) = &state.scheduler {
        let Ok(workers) = live_workers(scheduler).await else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the scheduler has stopped");
        };
        metrics.set_workers(&workers);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}
