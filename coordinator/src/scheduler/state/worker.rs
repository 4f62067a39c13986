//! A worker as the scheduler sees it.

use std::collections::BTreeSet;
use std::time::Instant;

use tone_engine::JobId;

use crate::scheduler::model::{TaskKey, WorkerFigures};

/// One worker session: its number, and the key the worker process drew.
#[derive(Debug, Clone)]
pub struct Session {
    /// Distinguishes a worker's sessions: a reconnecting worker keeps its
    /// id, and the end of its old session must not end the new one.
    pub number: u64,
    pub key: Vec<u8>,
}

impl Session {
    /// Constant time: the key is a secret of the worker process.
    pub fn same_key(&self, key: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        !self.key.is_empty() && bool::from(self.key.as_slice().ct_eq(key))
    }
}

#[derive(Debug)]
pub struct Worker {
    pub address: String,
    pub slots: usize,
    /// The tasks running here; the number of busy slots is its size, so
    /// it cannot drift from what runs.
    running: BTreeSet<TaskKey>,
    pub tasks_done: u64,
    pub last_seen: Instant,
    pub session: Session,
    /// Shutting down gracefully (or unreachable): no new tasks.
    pub draining: bool,
    pub figures: WorkerFigures,
    /// `--max-executors` of the worker; 0: no limit.
    pub max_executors: usize,
    /// Closure jobs given tasks here and not released since: each has (or
    /// had) an executor process here until its release stops it.
    pub executors: BTreeSet<JobId>,
}

impl Worker {
    pub fn new(session: Session, address: String, slots: usize, now: Instant) -> Self {
        Self {
            address,
            slots,
            running: BTreeSet::new(),
            tasks_done: 0,
            last_seen: now,
            session,
            draining: false,
            figures: WorkerFigures::default(),
            max_executors: 0,
            executors: BTreeSet::new(),
        }
    }

    pub fn with_max_executors(mut self, max_executors: usize) -> Self {
        self.max_executors = max_executors;
        self
    }

    pub fn running(&self) -> &BTreeSet<TaskKey> {
        &self.running
    }

    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// True when a new task may come here.
    pub fn has_free_slot(&self) -> bool {
        !self.draining && self.running.len() < self.slots
    }

    /// A task starts here.
    pub fn start(&mut self, key: TaskKey) {
        debug_assert!(
            self.running.len() < self.slots,
            "a worker never runs more tasks than its slots"
        );
        let new = self.running.insert(key);
        debug_assert!(new, "a task runs at most once on a worker");
    }

    /// A task stopped running here (reported, cancelled, re-queued).
    pub fn finish(&mut self, key: &TaskKey) {
        self.running.remove(key);
    }

    /// The job ended: its tasks here stop with its release.
    pub fn forget_job(&mut self, job: &JobId) {
        self.running.retain(|key| &key.job != job);
    }

    /// True when a task of closure job `job` may come here: the job has
    /// an executor here already, or one more fits. The worker's own count
    /// counts too (executors of jobs this coordinator does not know,
    /// processes still stopping); it lags by a heartbeat.
    pub fn executor_room(&self, job: &JobId) -> bool {
        let running = self.executors.len().max(self.figures.executors as usize);
        self.max_executors == 0 || self.executors.contains(job) || running < self.max_executors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(max_executors: usize) -> Worker {
        let session = Session {
            number: 1,
            key: vec![1; 32],
        };
        Worker::new(session, "127.0.0.1:1".into(), 2, Instant::now())
            .with_max_executors(max_executors)
    }

    fn job(name: &str) -> JobId {
        JobId(name.into())
    }

    #[test]
    fn a_closure_job_goes_where_it_has_an_executor_or_one_fits() {
        let mut full = worker(1);
        full.executors.insert(job("job-a"));
        assert!(
            full.executor_room(&job("job-a")),
            "its own executor is there"
        );
        assert!(
            !full.executor_room(&job("job-b")),
            "no room for a second one"
        );

        // The worker's own count covers executors the coordinator does not
        // know of (an earlier coordinator's jobs, one still stopping).
        let mut busy = worker(2);
        busy.executors.insert(job("job-a"));
        busy.figures.executors = 2;
        assert!(!busy.executor_room(&job("job-b")));
        busy.figures.executors = 1;
        assert!(busy.executor_room(&job("job-b")));

        let unlimited = worker(0);
        assert!(
            unlimited.executor_room(&job("job-b")),
            "0: a worker without the limit"
        );
    }

    #[test]
    fn a_session_key_matches_only_itself_and_never_when_empty() {
        let session = Session {
            number: 1,
            key: vec![7; 32],
        };
        assert!(session.same_key(&[7; 32]));
        assert!(!session.same_key(&[8; 32]));
        let empty = Session {
            number: 1,
            key: Vec::new(),
        };
        assert!(!empty.same_key(&[]));
    }
}
