//! What the event loop tells the board (web UI, metrics, event log): each
//! call turns something the loop did into a job event.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tone_engine::{JobId, StageDag, StageId};
use tone_proto::v1 as pb;

use super::model::{Attempt, ErrorKind, JobState, TaskKey, WorkerId};
use super::state::{job::Job, SchedulerState};
use crate::observe::board::Board;
use crate::observe::events::{AttemptEnd, EndState, JobEvent, JobKind, OperatorLine};
use crate::observe::outline_dag;

pub struct Observer {
    board: Arc<Board>,
    /// The workers of the last look, with address and whether draining:
    /// one missing now has left or was lost.
    workers: BTreeMap<WorkerId, (String, bool)>,
    /// Jobs whose end is recorded: one that succeeded stays in the state
    /// until its results are read, but it ended for those watching.
    ended: HashSet<JobId>,
}

impl Observer {
    pub fn new(board: Arc<Board>) -> Self {
        Self {
            board,
            workers: BTreeMap::new(),
            ended: HashSet::new(),
        }
    }

    /// A job taken in (submitted, or resumed after a restart).
    pub fn admitted(&self, job: &JobId, name: &str, program: bool, dag: &StageDag) {
        let kind = if program {
            JobKind::Program
        } else {
            JobKind::Sql
        };
        self.board.record(
            &job.0,
            JobEvent::Submitted {
                job: job.0.clone(),
                name: name.to_string(),
                kind,
            },
        );
        let stages = outline_dag(dag);
        self.board.record(&job.0, JobEvent::Planned { stages });
    }

    pub fn started(&self, worker: &WorkerId, task: &TaskKey, attempt: Attempt) {
        self.board.record(
            &task.job.0,
            JobEvent::TaskStarted {
                stage: task.stage.0,
                partition: task.partition,
                attempt: attempt.0,
                worker: worker.0.clone(),
            },
        );
    }

    /// A worker's report of an attempt.
    pub fn reported(&self, key: &pb::TaskKey, outcome: &pb::task_status::Outcome) {
        let end = match outcome {
            pb::task_status::Outcome::Succeeded(done) => AttemptEnd::Succeeded {
                rows: done.rows,
                bytes_in: done.remote_fetch_bytes,
                bytes_out: done.bytes,
                spilled_bytes: done.spilled_bytes,
                operators: bounded_operators(&done.operators),
            },
            pb::task_status::Outcome::Failed(failed) => AttemptEnd::Failed {
                kind: kind_name(super::edge::error_kind_from_proto(failed.kind)).to_string(),
                message: failed.message.clone(),
            },
        };
        self.board.record(
            &key.job_id,
            JobEvent::TaskEnded {
                stage: key.stage_id,
                partition: key.partition,
                attempt: key.attempt,
                end,
            },
        );
    }

    pub fn cancelled(&self, task: &TaskKey, attempt: Attempt) {
        self.board.record(
            &task.job.0,
            JobEvent::TaskEnded {
                stage: task.stage.0,
                partition: task.partition,
                attempt: attempt.0,
                end: AttemptEnd::Cancelled,
            },
        );
    }

    /// A stage was laid out again before it started: `tasks` tasks.
    pub fn laid_out(&self, job: &JobId, stage: StageId, tasks: u32, decision: String) {
        self.board.record(
            &job.0,
            JobEvent::StageLaidOut {
                stage: stage.0,
                tasks,
                decision,
            },
        );
    }

    pub fn stage_done(&self, job: &JobId, stage: StageId) {
        self.board
            .record(&job.0, JobEvent::StageDone { stage: stage.0 });
    }

    /// A job's status changed: its end is recorded once it has one.
    pub fn changed(&mut self, job: &Job) {
        if !job.is_active() && self.ended.insert(job.id.clone()) {
            self.record_end(job);
        }
    }

    /// A job left the state.
    pub fn ended(&mut self, job: &Job) {
        if !self.ended.remove(&job.id) {
            self.record_end(job);
        }
    }

    fn record_end(&self, job: &Job) {
        let state = match job.state {
            JobState::Failed => EndState::Failed,
            JobState::Cancelled => EndState::Cancelled,
            _ => EndState::Succeeded,
        };
        let error = job
            .error
            .as_ref()
            .map(|(_, message)| message.clone())
            .unwrap_or_default();
        self.board
            .record(&job.id.0, JobEvent::Ended { state, error });
    }

    /// Notes the workers that are gone since the last look.
    /// Runs after every event, so it lists the workers again only when
    /// their number changed (one event adds or removes, never both) or
    /// one may have started draining (whether a departure was a drain).
    pub fn look_at_workers(&mut self, state: &SchedulerState, drain: bool) {
        if !drain && state.workers().count() == self.workers.len() {
            return;
        }
        let now: BTreeMap<WorkerId, (String, bool)> = state
            .workers()
            .map(|(id, worker)| (id.clone(), (worker.address.clone(), worker.draining)))
            .collect();
        for (id, (address, draining)) in &self.workers {
            if !now.contains_key(id) {
                self.board.worker_departed(&id.0, address, *draining);
            }
        }
        self.workers = now;
    }
}

/// Operators a report may carry, and metrics per operator: figures from
/// the network are bounded before they are kept.
const MAX_OPERATORS: usize = 1024;
const MAX_METRICS: usize = 64;
const MAX_NAME_CHARS: usize = 128;

fn bounded_operators(operators: &[pb::OperatorMetrics]) -> Vec<OperatorLine> {
    let name = |text: &str| text.chars().take(MAX_NAME_CHARS).collect::<String>();
    operators
        .iter()
        .take(MAX_OPERATORS)
        .map(|operator| OperatorLine {
            depth: operator.depth.min(MAX_OPERATORS as u32),
            name: name(&operator.name),
            values: operator
                .values
                .iter()
                .take(MAX_METRICS)
                .map(|(key, value)| (name(key), *value))
                .collect(),
        })
        .collect()
}

/// An error kind as the UI and the event log name it.
pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::User => "user",
        ErrorKind::Execution => "execution",
        ErrorKind::Internal => "internal",
        ErrorKind::Cancelled => "cancelled",
        ErrorKind::FetchFailed => "fetch_failed",
        ErrorKind::WorkerLost => "worker_lost",
        ErrorKind::Timeout => "timeout",
        ErrorKind::NoWorkers => "no_workers",
        ErrorKind::Resources => "resources",
    }
}
