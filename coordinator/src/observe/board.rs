//! The live coordinator's views of recent jobs, fed by the scheduler's
//! event loop and read by the web UI.
//!
//! The loop calls in with short, non-blocking updates under a std mutex
//! (no await while held); readers take a snapshot as JSON. A version
//! number, bumped on every change, wakes the UI's live streams.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::event_log::EventLogWriter;
use super::events::{AttemptEnd, JobEvent, Logged};
use super::metrics::CoordinatorMetrics;
use super::view::{JobDetail, JobSummary, JobView};

/// Ended jobs whose views are kept (Spark keeps 1,000 too).
pub const DEFAULT_RETAINED_JOBS: usize = 1000;
/// Workers that went away, kept for the workers page.
const RETAINED_DEPARTED_WORKERS: usize = 100;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A worker that left (drained) or was lost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DepartedWorker {
    pub id: String,
    pub address: String,
    pub state: &'static str,
    pub departed_unix_ms: u64,
}

pub struct Board {
    inner: Mutex<Inner>,
    version: watch::Sender<u64>,
    log: Option<EventLogWriter>,
    pub metrics: CoordinatorMetrics,
}

struct Inner {
    jobs: HashMap<String, Entry>,
    /// Submission order: number → job id.
    order: BTreeMap<u64, String>,
    next_number: u64,
    /// Ended jobs, oldest first, for eviction.
    ended: VecDeque<String>,
    retained: usize,
    departed: VecDeque<DepartedWorker>,
}

struct Entry {
    number: u64,
    view: JobView,
}

/// Which jobs a listing wants (the REST API's query).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub state: Option<String>,
    pub limit: usize,
    pub before: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobSummary>,
    pub total: usize,
    pub next_before: u64,
}

impl Board {
    pub fn new(retained: usize, log: Option<EventLogWriter>, metrics: CoordinatorMetrics) -> Self {
        Self {
            inner: Mutex::new(Inner {
                jobs: HashMap::new(),
                order: BTreeMap::new(),
                next_number: 1,
                ended: VecDeque::new(),
                retained,
                departed: VecDeque::new(),
            }),
            version: watch::channel(0).0,
            log,
            metrics,
        }
    }

    /// A board of jobs read back from an event log (`tone history`).
    pub fn from_views(views: Vec<JobView>, metrics: CoordinatorMetrics) -> Self {
        let board = Self::new(views.len().max(1), None, metrics);
        {
            let mut inner = super::lock(&board.inner);
            for view in views {
                let number = inner.next_number;
                inner.next_number += 1;
                inner.order.insert(number, view.id.clone());
                if view.has_ended() {
                    inner.ended.push_back(view.id.clone());
                }
                inner.jobs.insert(view.id.clone(), Entry { number, view });
            }
        }
        board
    }

    /// A receiver that changes whenever anything does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Records one event of `job` (its first must be `Submitted`).
    pub fn record(&self, job: &str, event: JobEvent) {
        let logged = Logged { t: now_ms(), event };
        self.count(job, &logged);
        {
            let mut inner = super::lock(&self.inner);
            inner.apply(job, &logged);
        }
        if let Some(log) = &self.log {
            log.append(job, &logged);
        }
        self.version.send_modify(|version| *version += 1);
    }

    /// A worker went away: its running attempts are lost.
    pub fn worker_departed(&self, id: &str, address: &str, drained: bool) {
        let running: Vec<(String, Vec<(u32, u32, u32)>)> = {
            let mut inner = super::lock(&self.inner);
            inner.departed.push_back(DepartedWorker {
                id: id.to_string(),
                address: address.to_string(),
                state: if drained { "left" } else { "lost" },
                departed_unix_ms: now_ms(),
            });
            while inner.departed.len() > RETAINED_DEPARTED_WORKERS {
                inner.departed.pop_front();
            }
            inner
                .jobs
                .values()
                .filter(|entry| !entry.view.has_ended())
                .map(|entry| (entry.view.id.clone(), entry.view.running_on(id)))
                .collect()
        };
        for (job, attempts) in running {
            for (stage, partition, attempt) in attempts {
                let end = AttemptEnd::Lost;
                self.record(
                    &job,
                    JobEvent::TaskEnded {
                        stage,
                        partition,
                        attempt,
                        end,
                    },
                );
            }
        }
        self.version.send_modify(|version| *version += 1);
    }

    pub fn departed_workers(&self) -> Vec<DepartedWorker> {
        super::lock(&self.inner).departed.iter().cloned().collect()
    }

    pub fn detail(&self, job: &str) -> Option<JobDetail> {
        let inner = super::lock(&self.inner);
        inner.jobs.get(job).map(|entry| entry.view.detail(now_ms()))
    }

    pub fn list(&self, query: &ListQuery) -> JobList {
        let inner = super::lock(&self.inner);
        let now = now_ms();
        let wanted = |entry: &&Entry| {
            query
                .state
                .as_deref()
                .is_none_or(|state| entry.view.state() == state)
        };
        let total = inner.jobs.values().filter(wanted).count();
        let mut jobs = Vec::new();
        let mut next_before = 0;
        let upper = query.before.unwrap_or(u64::MAX);
        for (number, id) in inner.order.range(..upper).rev() {
            let Some(entry) = inner.jobs.get(id).filter(|entry| wanted(entry)) else {
                continue;
            };
            if jobs.len() == query.limit {
                next_before = *number + 1;
                break;
            }
            jobs.push(entry.view.summary(now));
        }
        JobList {
            jobs,
            total,
            next_before,
        }
    }

    /// Jobs by state, for the metrics.
    pub fn states(&self) -> BTreeMap<&'static str, i64> {
        let inner = super::lock(&self.inner);
        let mut states = BTreeMap::new();
        for entry in inner.jobs.values() {
            *states.entry(entry.view.state()).or_insert(0) += 1;
        }
        states
    }

    /// Tasks running and waiting in jobs that have not ended.
    pub fn task_counts(&self) -> (i64, i64) {
        let inner = super::lock(&self.inner);
        let now = now_ms();
        inner
            .jobs
            .values()
            .filter(|entry| !entry.view.has_ended())
            .map(|entry| entry.view.summary(now))
            .fold((0, 0), |(running, queued), job| {
                let waiting = job
                    .tasks_total
                    .saturating_sub(job.tasks_done + job.tasks_running);
                (running + job.tasks_running as i64, queued + waiting as i64)
            })
    }

    fn count(&self, job: &str, logged: &Logged) {
        match &logged.event {
            JobEvent::TaskStarted { attempt, .. } if *attempt > 0 => {
                self.metrics.task_retries.inc();
            }
            JobEvent::TaskEnded {
                stage,
                partition,
                attempt,
                end,
            } => {
                let inner = super::lock(&self.inner);
                let Some(view) = inner.jobs.get(job).map(|entry| &entry.view) else {
                    return;
                };
                if let Some((started, final_stage)) =
                    view.running_since(*stage, *partition, *attempt)
                {
                    let seconds = logged.t.saturating_sub(started) as f64 / 1000.0;
                    self.metrics.attempt_ended(end, seconds, final_stage);
                }
            }
            _ => {}
        }
    }
}

impl Inner {
    fn apply(&mut self, job: &str, logged: &Logged) {
        if let JobEvent::Submitted { .. } = logged.event {
            match JobView::start(logged.t, &logged.event) {
                Ok(view) => {
                    let number = self.next_number;
                    self.next_number += 1;
                    self.order.insert(number, job.to_string());
                    self.jobs.insert(job.to_string(), Entry { number, view });
                }
                Err(error) => tracing::warn!(job_id = job, %error, "job event not shown"),
            }
            return;
        }
        let Some(entry) = self.jobs.get_mut(job) else {
            return;
        };
        if let Err(error) = entry.view.apply(logged.t, &logged.event) {
            tracing::warn!(job_id = job, %error, "job event not shown");
        }
        if entry.view.has_ended() && matches!(logged.event, JobEvent::Ended { .. }) {
            self.ended.push_back(job.to_string());
            while self.ended.len() > self.retained {
                if let Some(old) = self.ended.pop_front() {
                    if let Some(entry) = self.jobs.remove(&old) {
                        self.order.remove(&entry.number);
                    }
                }
            }
        }
    }
}
