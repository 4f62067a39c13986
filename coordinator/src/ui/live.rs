//! The live streams (Server-Sent Events): a page gets the current answer
//! at once, then a new one whenever it changed, at most a few a second.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

use super::api::{error, list_query, worker_list, JobsParams};
use super::UiState;

/// The least time between two messages of one stream.
const PACE: Duration = Duration::from_millis(250);
/// Workers change with heartbeats, not job events: looked at this often.
const WORKERS_EVERY: Duration = Duration::from_secs(1);

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn message(name: &str, json: String) -> Result<Event, Infallible> {
    Ok(Event::default().event(name).data(json))
}

pub async fn job(State(state): State<UiState>, Path(id): Path<String>) -> Response {
    if state.board.detail(&id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no job {id:?} is known here"),
        );
    }
    let mut changes = state.board.subscribe();
    let stream = async_stream(move |sender| async move {
        let mut last = String::new();
        loop {
            let Some(detail) = state.board.detail(&id) else {
                return;
            };
            let ended = !matches!(detail.summary.state, "queued" | "running");
            let json = serde_json::to_string(&detail).unwrap_or_default();
            if json != last {
                if sender.send(message("job", json.clone())).await.is_err() {
                    return;
                }
                last = json;
            }
            if ended || changes.changed().await.is_err() {
                return;
            }
            tokio::time::sleep(PACE).await;
        }
    });
    sse(stream)
}

pub async fn jobs(State(state): State<UiState>, Query(params): Query<JobsParams>) -> Response {
    let query = match list_query(params) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let mut changes = state.board.subscribe();
    let stream = async_stream(move |sender| async move {
        let mut last = String::new();
        loop {
            let json = serde_json::to_string(&state.board.list(&query)).unwrap_or_default();
            if json != last {
                if sender.send(message("jobs", json.clone())).await.is_err() {
                    return;
                }
                last = json;
            }
            if changes.changed().await.is_err() {
                return;
            }
            tokio::time::sleep(PACE).await;
        }
    });
    sse(stream)
}

pub async fn workers(State(state): State<UiState>) -> Response {
    let stream = async_stream(move |sender| async move {
        let mut last = String::new();
        let mut every = tokio::time::interval(WORKERS_EVERY);
        loop {
            every.tick().await;
            let Ok(list) = worker_list(&state).await else {
                return;
            };
            let json = serde_json::to_string(&list).unwrap_or_default();
            if json != last {
                if sender.send(message("workers", json.clone())).await.is_err() {
                    return;
                }
                last = json;
            }
        }
    });
    sse(stream)
}

/// A stream fed by a task: it ends when the task does, and the task ends
/// when the client goes away (its next send fails).
fn async_stream<F, Fut>(produce: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(sender));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}
