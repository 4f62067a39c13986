//! The coordinator's Prometheus metrics. Counters move as events are
//! recorded; gauges are set from the scheduler's state when scraped.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::events::AttemptEnd;

/// Task and RPC durations, in seconds: 1 ms to about 17 minutes.
fn duration_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 4.0, 11).unwrap_or_default()
}

pub struct CoordinatorMetrics {
    registry: Registry,
    pub jobs: IntGaugeVec,
    pub tasks_running: IntGauge,
    pub tasks_queued: IntGauge,
    pub task_attempts: IntCounterVec,
    pub task_retries: IntCounter,
    pub task_duration: Histogram,
    pub shuffle_written_bytes: IntCounter,
    pub shuffle_fetched_bytes: IntCounter,
    pub fetch_failures: IntCounter,
    pub workers: IntGaugeVec,
    pub worker_slots: IntGauge,
    pub worker_heartbeat_age: prometheus::GaugeVec,
    pub worker_memory_used: IntGaugeVec,
    pub worker_spilled: IntGaugeVec,
    pub worker_shuffle_disk: IntGaugeVec,
    pub executors: IntGaugeVec,
    pub grpc_requests: IntCounterVec,
    pub grpc_duration: HistogramVec,
}

impl CoordinatorMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| -> Result<_, prometheus::Error> {
            let gauge = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let counter = |name: &str, help: &str| -> Result<_, prometheus::Error> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        let gauge = |name: &str, help: &str| -> Result<_, prometheus::Error> {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let task_attempts = IntCounterVec::new(
            Opts::new(
                "tone_task_attempts_total",
                "Task attempts ended, by how they ended",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(task_attempts.clone()))?;
        let task_duration = Histogram::with_opts(
            HistogramOpts::new(
                "tone_task_duration_seconds",
                "Run time of ended task attempts",
            )
            .buckets(duration_buckets()),
        )?;
        registry.register(Box::new(task_duration.clone()))?;
        let worker_heartbeat_age = prometheus::GaugeVec::new(
            Opts::new(
                "tone_worker_heartbeat_age_seconds",
                "Seconds since each worker's last heartbeat",
            ),
            &["worker"],
        )?;
        registry.register(Box::new(worker_heartbeat_age.clone()))?;
        let grpc_requests = IntCounterVec::new(
            Opts::new(
                "tone_grpc_requests_total",
                "gRPC requests served, by method and status",
            ),
            &["method", "code"],
        )?;
        registry.register(Box::new(grpc_requests.clone()))?;
        let grpc_duration = HistogramVec::new(
            HistogramOpts::new(
                "tone_grpc_request_duration_seconds",
                "Time to answer gRPC requests (to the first response of a stream)",
            )
            .buckets(duration_buckets()),
            &["method"],
        )?;
        registry.register(Box::new(grpc_duration.clone()))?;
        Ok(Self {
            jobs: gauge_vec(
                "tone_jobs",
                "Jobs the coordinator lists, by state",
                &["state"],
            )?,
            tasks_running: gauge("tone_tasks_running", "Task attempts running now")?,
            tasks_queued: gauge(
                "tone_tasks_queued",
                "Tasks of started jobs waiting for a slot or for their inputs",
            )?,
            task_attempts,
            task_retries: counter(
                "tone_task_retries_total",
                "Task attempts started after an earlier attempt of the same task",
            )?,
            task_duration,
            shuffle_written_bytes: counter(
                "tone_shuffle_written_bytes_total",
                "Bytes map tasks wrote for later stages",
            )?,
            shuffle_fetched_bytes: counter(
                "tone_shuffle_fetched_bytes_total",
                "Shuffle bytes tasks fetched from other workers",
            )?,
            fetch_failures: counter(
                "tone_fetch_failures_total",
                "Task attempts that failed because a map output could not be fetched",
            )?,
            workers: gauge_vec("tone_workers", "Workers, by state", &["state"])?,
            worker_slots: gauge("tone_worker_slots", "Task slots of the live workers")?,
            worker_heartbeat_age,
            worker_memory_used: gauge_vec(
                "tone_worker_memory_used_bytes",
                "Bytes reserved in each worker's memory pool",
                &["worker"],
            )?,
            worker_spilled: gauge_vec(
                "tone_worker_spilled_bytes",
                "Bytes each worker's operators spilled since it started",
                &["worker"],
            )?,
            worker_shuffle_disk: gauge_vec(
                "tone_worker_shuffle_disk_bytes",
                "Bytes of shuffle files on each worker's disk",
                &["worker"],
            )?,
            executors: gauge_vec(
                "tone_executors",
                "Executor processes on each worker",
                &["worker"],
            )?,
            grpc_requests,
            grpc_duration,
            registry,
        })
    }

    /// Counts an ended attempt.
    pub fn attempt_ended(&self, end: &AttemptEnd, seconds: f64, final_stage: bool) {
        let outcome = match end {
            AttemptEnd::Succeeded {
                bytes_in,
                bytes_out,
                ..
            } => {
                if !final_stage {
                    self.shuffle_written_bytes.inc_by(*bytes_out);
                }
                self.shuffle_fetched_bytes.inc_by(*bytes_in);
                "succeeded"
            }
            AttemptEnd::Failed { kind, .. } => {
                if kind == "fetch_failed" {
                    self.fetch_failures.inc();
                }
                "failed"
            }
            AttemptEnd::Cancelled => "cancelled",
            AttemptEnd::Lost => "lost",
        };
        self.task_attempts.with_label_values(&[outcome]).inc();
        self.task_duration.observe(seconds);
    }

    /// Sets the worker gauges from the scheduler's workers now; workers
    /// that went away drop out.
    pub fn set_workers(&self, workers: &[tone_proto::v1::WorkerInfo]) {
        self.workers.reset();
        self.worker_heartbeat_age.reset();
        self.worker_memory_used.reset();
        self.worker_spilled.reset();
        self.worker_shuffle_disk.reset();
        self.executors.reset();
        let draining = workers.iter().filter(|w| w.draining).count() as i64;
        self.workers
            .with_label_values(&["live"])
            .set(workers.len() as i64 - draining);
        self.workers.with_label_values(&["draining"]).set(draining);
        let slots: u64 = workers.iter().map(|w| u64::from(w.slots)).sum();
        self.worker_slots.set(slots as i64);
        for worker in workers {
            let id = [worker.worker_id.as_str()];
            self.worker_heartbeat_age
                .with_label_values(&id)
                .set(worker.heartbeat_age_ms as f64 / 1000.0);
            self.worker_memory_used
                .with_label_values(&id)
                .set(worker.memory_used_bytes as i64);
            self.worker_spilled
                .with_label_values(&id)
                .set(worker.operator_spilled_bytes as i64);
            self.worker_shuffle_disk
                .with_label_values(&id)
                .set(worker.shuffle_disk_bytes as i64);
            self.executors
                .with_label_values(&id)
                .set(i64::from(worker.executors));
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec fails only on a malformed metric family.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "metrics could not be encoded");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}
