//! Running one assigned task.

use std::sync::Arc;

use datafusion::prelude::SessionContext;
use tokio::task::AbortHandle;
use tone_engine::codec::decode_plan;
use tone_engine::limits::{name_memory_limit, plan_metric_sum, OperatorSpills};
use tone_engine::shuffle::ShuffleWriterExec;
use tone_engine::EngineError;
use tone_proto::v1::{task_status, AssignTask, ErrorKind, TaskFailed, TaskStatus, TaskSucceeded};

/// What every task of this worker shares.
#[derive(Clone)]
pub struct Runner {
    pub session: SessionContext,
    pub memory_limit_bytes: Option<u64>,
    /// What finished tasks' operators spilled; reported in heartbeats.
    pub spills: Arc<OperatorSpills>,
}

/// Runs the task and reports how it went; never panics the worker (a
/// panicking task is reported as a failed one).
pub async fn run(assign: AssignTask, runner: Runner) -> TaskStatus {
    let task = assign.task.clone();
    let limit = runner.memory_limit_bytes;
    let handle = tokio::spawn(execute(assign, runner));
    // Aborting this future (cancel, release) must stop the task itself,
    // or it would go on writing shuffle files nobody will delete.
    let _stop = AbortOnDrop(handle.abort_handle());
    let joined = handle.await;
    let outcome = match joined {
        Ok(Ok(succeeded)) => task_status::Outcome::Succeeded(succeeded),
        Ok(Err(error)) => task_status::Outcome::Failed(failure(&name_memory_limit(error, limit))),
        Err(join_error) => {
            let message = if join_error.is_panic() {
                let panic = join_error.into_panic();
                format!("task panicked: {}", tone_engine::cpu::panic_message(&panic))
            } else {
                "task was cancelled".to_string()
            };
            task_status::Outcome::Failed(TaskFailed {
                kind: ErrorKind::Execution as i32,
                message,
            })
        }
    };
    TaskStatus {
        task,
        outcome: Some(outcome),
    }
}

struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn execute(assign: AssignTask, runner: Runner) -> Result<TaskSucceeded, EngineError> {
    let key = assign.task.ok_or_else(|| EngineError::Internal {
        message: "task assignment without a task key".into(),
    })?;
    inject_fault(key.stage_id);
    let context = runner.session.task_ctx();
    let plan = decode_plan(&assign.plan, &context)?;
    let writer = (plan.as_ref() as &dyn std::any::Any)
        .downcast_ref::<ShuffleWriterExec>()
        .ok_or_else(|| EngineError::Internal {
            message: format!("stage {} plan has no shuffle writer on top", key.stage_id),
        })?;
    let written = writer.write(key.partition as usize, context).await;
    runner.spills.record(&plan);
    let summary = written?;
    tracing::debug!(job_id = %key.job_id, stage_id = key.stage_id, partition = key.partition, rows = summary.rows, "task done");
    Ok(TaskSucceeded {
        rows: summary.rows,
        bytes: summary.bytes,
        remote_fetch_bytes: plan_metric_sum(&plan, "remote_fetch_bytes"),
    })
}

fn failure(error: &EngineError) -> TaskFailed {
    let kind = match error {
        error if error.is_user_error() => ErrorKind::User,
        EngineError::Internal { .. } => ErrorKind::Internal,
        _ => ErrorKind::Execution,
    };
    TaskFailed {
        kind: kind as i32,
        message: error.to_string(),
    }
}

/// Deterministic fault injection for tests: `TONE_FAULT_PANIC_IN_STAGE=N`
/// makes every task of stage N panic, as a bug in an operator would.
fn inject_fault(stage_id: u32) {
    let target = std::env::var("TONE_FAULT_PANIC_IN_STAGE")
        .ok()
        .and_then(|value| value.parse::<u32>().ok());
    if target == Some(stage_id) {
        tracing::warn!(stage_id, "injected fault: panicking");
        panic!("injected fault: a task of stage {stage_id} panicked");
    }
}
