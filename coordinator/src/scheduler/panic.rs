//! What a panic inside the event loop does. A coordinator whose loop died
//! would still answer (the services run on) but never schedule again, so
//! the loop catches panics: the job being handled fails with an internal
//! error and the loop goes on; a panic that belongs to no job stops the
//! coordinator (non-zero exit) for a supervisor to restart it.
//!
//! `TONE_FAULT_SCHEDULER_PANIC` plants one for tests: `submit:TEXT`
//! panics while submitting a job whose SQL holds TEXT; `list_jobs`
//! panics while listing jobs (a panic no job owns).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use std::time::Instant;

use tone_engine::JobId;

use super::event_loop::Scheduler;
use super::Event;

/// The planted panic, read once.
fn planted() -> Option<&'static str> {
    static PLANTED: OnceLock<Option<String>> = OnceLock::new();
    PLANTED
        .get_or_init(|| std::env::var("TONE_FAULT_SCHEDULER_PANIC").ok())
        .as_deref()
}

/// Panics when the test fault names this submission.
pub(super) fn planted_in_submit(sql: &str) {
    if let Some(text) = planted().and_then(|fault| fault.strip_prefix("submit:")) {
        if sql.contains(text) {
            panic!("injected fault: scheduler panic while submitting");
        }
    }
}

/// Panics when the test fault names the job listing.
pub(super) fn planted_in_list_jobs() {
    if planted() == Some("list_jobs") {
        panic!("injected fault: scheduler panic while listing jobs");
    }
}

impl Event {
    /// The job an event is about, if any.
    fn job_id(&self) -> Option<JobId> {
        match self {
            Event::Submit(submission) => Some(submission.job_id.clone()),
            Event::CatalogChange { job_id, .. } => Some(job_id.clone()),
            Event::Cancel { job_id, .. }
            | Event::Release { job_id }
            | Event::Watch { job_id, .. } => Some(JobId(job_id.clone())),
            Event::TaskStatus { status, .. } => {
                status.task.as_ref().map(|task| JobId(task.job_id.clone()))
            }
            _ => None,
        }
    }
}

impl Scheduler {
    /// Handles one event; `Err` when the loop must stop.
    pub(super) fn step(&mut self, event: Event) -> Result<(), String> {
        let name = event.name();
        self.state.set_in_hand(event.job_id());
        let outcome = catch_unwind(AssertUnwindSafe(|| self.handle(event)));
        let Err(panic) = outcome else {
            self.state.set_in_hand(None);
            return Ok(());
        };
        let message = tone_engine::cpu::panic_message(&panic);
        let Some(job_id) = self.state.take_in_hand() else {
            return Err(format!("the scheduler panicked handling {name}: {message}"));
        };
        tracing::error!(%job_id, event = name, %message, "scheduler panic; failing the job");
        let recovered = catch_unwind(AssertUnwindSafe(|| {
            let now = Instant::now();
            self.state.fail_for_panic(&job_id, name, &message, now);
            self.carry_out(now);
        }));
        self.state.set_in_hand(None);
        recovered.map_err(|again| {
            format!(
                "the scheduler panicked handling {name} ({message}) and again while failing \
                 job {job_id}: {}",
                tone_engine::cpu::panic_message(&again)
            )
        })
    }
}
