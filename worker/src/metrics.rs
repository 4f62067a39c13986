//! The worker's Prometheus metrics, served on `--metrics-listen`: its
//! tasks as they end, and its memory, disk and executors when scraped.
//! With a token configured, a scrape must carry it as a bearer token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;
use tone_proto::security::Token;
use tone_proto::v1::{task_status, ErrorKind, TaskStatus};

pub struct WorkerMetrics {
    registry: Registry,
    task_attempts: IntCounterVec,
    task_duration: Histogram,
    pub tasks_running: IntGauge,
    shuffle_written: IntCounter,
    shuffle_fetched: IntCounter,
    fetch_failures: IntCounter,
    pub memory_used: IntGauge,
    pub memory_limit: IntGauge,
    pub spilled: IntGauge,
    pub shuffle_disk: IntGauge,
    pub executors: IntGauge,
}

impl WorkerMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let task_attempts = IntCounterVec::new(
            Opts::new(
                "tone_worker_task_attempts_total",
                "Task attempts this worker ended, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(task_attempts.clone()))?;
        let task_duration = Histogram::with_opts(
            HistogramOpts::new(
                "tone_worker_task_duration_seconds",
                "Run time of this worker's task attempts",
            )
            .buckets(prometheus::exponential_buckets(0.001, 4.0, 11)?),
        )?;
        registry.register(Box::new(task_duration.clone()))?;
        Ok(Self {
            task_attempts,
            task_duration,
            tasks_running: gauge(
                "tone_worker_tasks_running",
                "Task attempts running here now",
            )?,
            shuffle_written: counter(
                "tone_worker_shuffle_written_bytes_total",
                "Bytes of output this worker's tasks wrote",
            )?,
            shuffle_fetched: counter(
                "tone_worker_shuffle_fetched_bytes_total",
                "Shuffle bytes this worker's tasks fetched from other workers",
            )?,
            fetch_failures: counter(
                "tone_worker_fetch_failures_total",
                "Task attempts that failed because a map output could not be fetched",
            )?,
            memory_used: gauge(
                "tone_worker_memory_used_bytes",
                "Bytes reserved in the memory pool",
            )?,
            memory_limit: gauge(
                "tone_worker_memory_limit_bytes",
                "The memory pool's limit (0: none)",
            )?,
            spilled: gauge(
                "tone_worker_spilled_bytes",
                "Bytes operators spilled to disk since the worker started",
            )?,
            shuffle_disk: gauge(
                "tone_worker_shuffle_disk_bytes",
                "Bytes of shuffle files on disk",
            )?,
            executors: gauge(
                "tone_worker_executors",
                "Executor processes running or stopping",
            )?,
            registry,
        })
    }

    /// Counts an attempt that ended after `seconds`.
    pub fn task_ended(&self, status: &TaskStatus, seconds: f64) {
        let outcome = match &status.outcome {
            Some(task_status::Outcome::Succeeded(done)) => {
                self.shuffle_written.inc_by(done.bytes);
                self.shuffle_fetched.inc_by(done.remote_fetch_bytes);
                "succeeded"
            }
            Some(task_status::Outcome::Failed(failed)) => {
                if failed.kind == ErrorKind::FetchFailed as i32 {
                    self.fetch_failures.inc();
                }
                "failed"
            }
            None => "unknown",
        };
        self.task_attempts.with_label_values(&[outcome]).inc();
        self.task_duration.observe(seconds);
    }

    fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "metrics could not be encoded");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// Sets the gauges read when scraped.
pub type Refresh = Arc<dyn Fn(&WorkerMetrics) + Send + Sync>;

#[derive(Clone)]
struct Scrape {
    metrics: Arc<WorkerMetrics>,
    refresh: Refresh,
    token: Option<Token>,
}

/// Serves `/metrics` on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<WorkerMetrics>,
    refresh: Refresh,
    token: Option<Token>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(Scrape {
            metrics,
            refresh,
            token,
        });
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(%error, "the metrics server failed");
    }
}

async fn scrape(State(scrape): State<Scrape>, headers: HeaderMap) -> Response {
    if let Some(token) = &scrape.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if !presented.is_some_and(|secret| token.matches(secret)) {
            return (
                StatusCode::UNAUTHORIZED,
                "this worker's metrics need its token as a bearer token\n",
            )
                .into_response();
        }
    }
    (scrape.refresh)(&scrape.metrics);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        scrape.metrics.render(),
    )
        .into_response()
}
