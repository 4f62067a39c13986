//! Running one assigned task.

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use tone_engine::codec::decode_plan;
use tone_engine::shuffle::ShuffleWriterExec;
use tone_engine::EngineError;
use tone_proto::v1::{task_status, AssignTask, ErrorKind, TaskFailed, TaskStatus, TaskSucceeded};

/// Runs the task and reports how it went; never panics the worker (a
/// panicking task is reported as a failed one).
pub async fn run(assign: AssignTask, session: SessionContext) -> TaskStatus {
    let task = assign.task.clone();
    let joined = tokio::spawn(execute(assign, session)).await;
    let outcome = match joined {
        Ok(Ok(succeeded)) => task_status::Outcome::Succeeded(succeeded),
        Ok(Err(error)) => task_status::Outcome::Failed(failure(&error)),
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

async fn execute(
    assign: AssignTask,
    session: SessionContext,
) -> Result<TaskSucceeded, EngineError> {
    let key = assign.task.ok_or_else(|| EngineError::Internal {
        message: "task assignment without a task key".into(),
    })?;
    inject_fault(key.stage_id);
    let context = session.task_ctx();
    let plan = decode_plan(&assign.plan, &context)?;
    let writer = (plan.as_ref() as &dyn std::any::Any)
        .downcast_ref::<ShuffleWriterExec>()
        .ok_or_else(|| EngineError::Internal {
            message: format!("stage {} plan has no shuffle writer on top", key.stage_id),
        })?;
    let summary = writer.write(key.partition as usize, context).await?;
    tracing::debug!(job_id = %key.job_id, stage_id = key.stage_id, partition = key.partition, rows = summary.rows, "task done");
    Ok(TaskSucceeded {
        rows: summary.rows,
        bytes: summary.bytes,
        remote_fetch_bytes: remote_fetch_bytes(&plan) as u64,
    })
}

/// Shuffle bytes the task's readers fetched from other workers.
fn remote_fetch_bytes(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = plan
        .metrics()
        .and_then(|metrics| metrics.sum_by_name("remote_fetch_bytes"))
        .map_or(0, |value| value.as_usize());
    own + plan
        .children()
        .into_iter()
        .map(remote_fetch_bytes)
        .sum::<usize>()
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
