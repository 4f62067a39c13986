//! A job as its events tell it, and the JSON the REST API answers with.
//!
//! Everything a page shows is derived here from the events (stage state,
//! counts, bytes), so the live coordinator and the history server, which
//! fold the same events, answer alike.

use std::collections::BTreeMap;

use super::events::{AttemptEnd, EndState, JobEvent, JobKind, StageOutline};
pub use super::json::{
    FailureJson, InputJson, JobDetail, JobSummary, OperatorJson, StageJson, TaskJson,
};

/// Why an event does not fit the job it is about (a damaged log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("the first event of a job must be `submitted`")]
    NotSubmitted,
    #[error("stage {0} is not in the job's plan")]
    UnknownStage(u32),
    #[error("attempt {attempt} of stage {stage} task {partition} never started")]
    UnknownAttempt {
        stage: u32,
        partition: u32,
        attempt: u32,
    },
}

#[derive(Debug, Clone)]
pub struct JobView {
    pub id: String,
    name: String,
    kind: JobKind,
    submitted_ms: u64,
    ended: Option<(u64, EndState, String)>,
    stages: Vec<StageView>,
}

#[derive(Debug, Clone)]
struct StageView {
    outline: StageOutline,
    /// In the order they started.
    attempts: Vec<AttemptView>,
    /// When it was last done, and how many attempts had started by then:
    /// an attempt started since means it runs again (events, not clocks,
    /// decide: two can share a millisecond).
    done: Option<(u64, usize)>,
    /// Operator figures summed over its succeeded attempts, in plan order.
    operators: Vec<BTreeMap<String, u64>>,
    /// Set when it was laid out again before it started.
    laid_out: Option<String>,
}

#[derive(Debug, Clone)]
struct AttemptView {
    partition: u32,
    attempt: u32,
    worker: String,
    started_ms: u64,
    ended_ms: Option<u64>,
    end: Option<AttemptEnd>,
}

impl JobView {
    /// A job from its first event.
    pub fn start(t: u64, event: &JobEvent) -> Result<Self, ViewError> {
        let JobEvent::Submitted { job, name, kind } = event else {
            return Err(ViewError::NotSubmitted);
        };
        Ok(Self {
            id: job.clone(),
            name: name.clone(),
            kind: *kind,
            submitted_ms: t,
            ended: None,
            stages: Vec::new(),
        })
    }

    pub fn has_ended(&self) -> bool {
        self.ended.is_some()
    }

    /// The attempts running on `worker`: they are lost with it.
    pub fn running_on(&self, worker: &str) -> Vec<(u32, u32, u32)> {
        self.stages
            .iter()
            .flat_map(|stage| {
                stage.attempts.iter().filter_map(move |a| {
                    (a.end.is_none() && a.worker == worker).then_some((
                        stage.outline.id,
                        a.partition,
                        a.attempt,
                    ))
                })
            })
            .collect()
    }

    /// When a running attempt started, and whether its stage is the final
    /// one; none for an attempt that has ended (its first end is the one
    /// that counts, as in the view).
    pub fn running_since(&self, stage: u32, partition: u32, attempt: u32) -> Option<(u64, bool)> {
        let view = self.stages.get(stage as usize)?;
        let found = view
            .attempts
            .iter()
            .rev()
            .find(|a| a.partition == partition && a.attempt == attempt)
            .filter(|a| a.end.is_none())?;
        Some((found.started_ms, view.outline.output.is_none()))
    }

    pub fn apply(&mut self, t: u64, event: &JobEvent) -> Result<(), ViewError> {
        match event {
            JobEvent::Submitted { .. } => {}
            JobEvent::Planned { stages } => {
                self.stages = stages
                    .iter()
                    .map(|outline| StageView {
                        operators: vec![BTreeMap::new(); outline.plan.len()],
                        outline: outline.clone(),
                        attempts: Vec::new(),
                        done: None,
                        laid_out: None,
                    })
                    .collect();
            }
            JobEvent::TaskStarted {
                stage,
                partition,
                attempt,
                worker,
            } => self.stage_mut(*stage)?.attempts.push(AttemptView {
                partition: *partition,
                attempt: *attempt,
                worker: worker.clone(),
                started_ms: t,
                ended_ms: None,
                end: None,
            }),
            JobEvent::TaskEnded {
                stage,
                partition,
                attempt,
                end,
            } => self.end_attempt(t, *stage, *partition, *attempt, end)?,
            JobEvent::StageLaidOut {
                stage,
                tasks,
                decision,
            } => {
                let view = self.stage_mut(*stage)?;
                view.outline.partitions = *tasks;
                view.laid_out = Some(decision.clone());
            }
            JobEvent::StageDone { stage } => {
                let view = self.stage_mut(*stage)?;
                view.done = Some((t, view.attempts.len()));
            }
            JobEvent::Ended { state, error } => {
                // Whatever still runs is stopped with the job.
                for stage in &mut self.stages {
                    for attempt in stage.attempts.iter_mut().filter(|a| a.end.is_none()) {
                        attempt.end = Some(AttemptEnd::Cancelled);
                        attempt.ended_ms = Some(t);
                    }
                }
                self.ended = Some((t, *state, error.clone()));
            }
        }
        Ok(())
    }

    fn end_attempt(
        &mut self,
        t: u64,
        stage: u32,
        partition: u32,
        attempt: u32,
        end: &AttemptEnd,
    ) -> Result<(), ViewError> {
        let view = self.stage_mut(stage)?;
        let found = view
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.partition == partition && a.attempt == attempt)
            .ok_or(ViewError::UnknownAttempt {
                stage,
                partition,
                attempt,
            })?;
        if found.end.is_some() {
            return Ok(());
        }
        found.end = Some(end.clone());
        found.ended_ms = Some(t);
        if let AttemptEnd::Succeeded { operators, .. } = end {
            for (sum, line) in view.operators.iter_mut().zip(operators) {
                for (name, value) in &line.values {
                    let total = sum.entry(name.clone()).or_insert(0);
                    *total = total.saturating_add(*value);
                }
            }
        }
        Ok(())
    }

    fn stage_mut(&mut self, stage: u32) -> Result<&mut StageView, ViewError> {
        self.stages
            .get_mut(stage as usize)
            .ok_or(ViewError::UnknownStage(stage))
    }

    pub fn state(&self) -> &'static str {
        match &self.ended {
            Some((_, EndState::Succeeded, _)) => "succeeded",
            Some((_, EndState::Failed, _)) => "failed",
            Some((_, EndState::Cancelled, _)) => "cancelled",
            None if self.stages.iter().any(|s| !s.attempts.is_empty()) => "running",
            None => "queued",
        }
    }

    pub fn submitted_ms(&self) -> u64 {
        self.submitted_ms
    }

    pub fn summary(&self, now_ms: u64) -> JobSummary {
        let tasks = |state: &dyn Fn(&StageView) -> usize| self.stages.iter().map(state).sum();
        let final_rows = saturating_sum(
            self.stages
                .iter()
                .filter(|stage| stage.outline.output.is_none())
                .map(StageView::rows),
        );
        JobSummary {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.kind,
            state: self.state(),
            submitted_unix_ms: self.submitted_ms,
            duration_ms: self
                .ended
                .as_ref()
                .map_or(now_ms, |(t, _, _)| *t)
                .saturating_sub(self.submitted_ms),
            stages_done: self.stages.iter().filter(|s| s.is_done()).count(),
            stages_total: self.stages.len(),
            tasks_running: tasks(&|s| s.attempts.iter().filter(|a| a.end.is_none()).count()),
            tasks_done: tasks(&|s| s.latest_successes().count()),
            tasks_total: tasks(&|s| s.outline.partitions as usize),
            rows: final_rows,
            bytes_read: saturating_sum(
                self.stages
                    .iter()
                    .flat_map(|s| &s.operators)
                    .filter_map(|values| values.get("bytes_scanned").copied()),
            ),
            bytes_shuffled: saturating_sum(
                self.stages
                    .iter()
                    .filter(|s| s.outline.output.is_some())
                    .map(StageView::bytes_written),
            ),
            error: self
                .ended
                .as_ref()
                .map(|(_, _, e)| e.clone())
                .unwrap_or_default(),
        }
    }

    pub fn detail(&self, now_ms: u64) -> JobDetail {
        let stages = self
            .stages
            .iter()
            .map(|stage| stage.detail(self, now_ms))
            .collect();
        let failures = self
            .stages
            .iter()
            .flat_map(|stage| {
                stage.attempts.iter().filter_map(move |a| match &a.end {
                    Some(AttemptEnd::Failed { kind, message }) => Some(FailureJson {
                        stage: stage.outline.id,
                        partition: a.partition,
                        attempt: a.attempt,
                        worker: a.worker.clone(),
                        kind: kind.clone(),
                        message: message.clone(),
                    }),
                    _ => None,
                })
            })
            .collect();
        JobDetail {
            summary: self.summary(now_ms),
            stages,
            failures,
            decisions: self
                .stages
                .iter()
                .filter_map(|stage| stage.laid_out.as_ref())
                .map(|decision| format!("Adaptive: {decision}"))
                .collect(),
        }
    }

    /// Bytes a stage wrote for `consumer`'s input, for the DAG's edges.
    fn stage_bytes(&self, stage: u32) -> u64 {
        self.stages
            .get(stage as usize)
            .map_or(0, StageView::bytes_written)
    }
}

impl StageView {
    fn is_done(&self) -> bool {
        self.done
            .is_some_and(|(_, started)| started == self.attempts.len())
    }

    /// Per partition, its latest succeeded attempt.
    fn latest_successes(&self) -> impl Iterator<Item = &AttemptView> {
        let mut latest: BTreeMap<u32, &AttemptView> = BTreeMap::new();
        for attempt in &self.attempts {
            if matches!(attempt.end, Some(AttemptEnd::Succeeded { .. })) {
                latest.insert(attempt.partition, attempt);
            }
        }
        latest.into_values()
    }

    fn succeeded_sum(&self, field: fn(&AttemptEnd) -> u64) -> u64 {
        saturating_sum(
            self.latest_successes()
                .filter_map(|a| a.end.as_ref())
                .map(field),
        )
    }

    fn rows(&self) -> u64 {
        self.succeeded_sum(|end| match end {
            AttemptEnd::Succeeded { rows, .. } => *rows,
            _ => 0,
        })
    }

    fn bytes_written(&self) -> u64 {
        self.succeeded_sum(|end| match end {
            AttemptEnd::Succeeded { bytes_out, .. } => *bytes_out,
            _ => 0,
        })
    }

    fn detail(&self, job: &JobView, now_ms: u64) -> StageJson {
        let relative = |t: u64| t.saturating_sub(job.submitted_ms);
        let state = if self.is_done() {
            "done"
        } else if self.attempts.is_empty() {
            "waiting"
        } else {
            "running"
        };
        let started_ms = self.attempts.iter().map(|a| a.started_ms).min();
        StageJson {
            id: self.outline.id,
            partitions: self.outline.partitions,
            state,
            inputs: self
                .outline
                .inputs
                .iter()
                .map(|input| InputJson {
                    stage: *input,
                    exchange: job
                        .stages
                        .get(*input as usize)
                        .and_then(|s| s.outline.output.as_ref())
                        .map_or_else(|| "single".to_string(), |o| o.exchange.clone()),
                    bytes: job.stage_bytes(*input),
                })
                .collect(),
            output: self.outline.output.clone(),
            tasks_done: self.latest_successes().count(),
            tasks_total: self.outline.partitions as usize,
            rows: self.rows(),
            bytes_written: self.bytes_written(),
            spilled_bytes: self.succeeded_sum(|end| match end {
                AttemptEnd::Succeeded { spilled_bytes, .. } => *spilled_bytes,
                _ => 0,
            }),
            started_ms: started_ms.map_or(0, relative),
            ended_ms: match (self.is_done(), self.done) {
                (true, Some((done, _))) => relative(done),
                _ => 0,
            },
            plan: self.outline.plan.clone(),
            operators: self
                .outline
                .plan
                .iter()
                .zip(&self.operators)
                .map(|(line, values)| OperatorJson {
                    depth: line.depth,
                    name: line.name.clone(),
                    output_rows: values.get("output_rows").copied().unwrap_or(0),
                    elapsed_compute_ms: values.get("elapsed_compute").copied().unwrap_or(0) as f64
                        / 1e6,
                    spilled_bytes: values.get("spilled_bytes").copied().unwrap_or(0),
                    metrics: values.clone(),
                })
                .collect(),
            tasks: self
                .attempts
                .iter()
                .map(|a| a.json(job.submitted_ms, now_ms))
                .collect(),
        }
    }
}

impl AttemptView {
    fn json(&self, submitted_ms: u64, now_ms: u64) -> TaskJson {
        let (state, rows, bytes_in, bytes_out, spilled_bytes, error) = match &self.end {
            None => ("running", 0, 0, 0, 0, String::new()),
            Some(AttemptEnd::Succeeded {
                rows,
                bytes_in,
                bytes_out,
                spilled_bytes,
                ..
            }) => (
                "succeeded",
                *rows,
                *bytes_in,
                *bytes_out,
                *spilled_bytes,
                String::new(),
            ),
            Some(AttemptEnd::Failed { message, .. }) => ("failed", 0, 0, 0, 0, message.clone()),
            Some(AttemptEnd::Cancelled) => ("cancelled", 0, 0, 0, 0, String::new()),
            Some(AttemptEnd::Lost) => ("lost", 0, 0, 0, 0, "its worker was lost".to_string()),
        };
        let end = self.ended_ms.unwrap_or(now_ms);
        TaskJson {
            partition: self.partition,
            attempt: self.attempt,
            worker: self.worker.clone(),
            state,
            started_ms: self.started_ms.saturating_sub(submitted_ms),
            ended_ms: self.ended_ms.map_or(0, |t| t.saturating_sub(submitted_ms)),
            duration_ms: end.saturating_sub(self.started_ms),
            rows,
            bytes_in,
            bytes_out,
            spilled_bytes,
            error,
        }
    }
}

/// Figures come from workers' reports: a sum never overflows.
fn saturating_sum(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
}
