//! Running one assigned task.

use std::sync::Arc;

use datafusion::execution::TaskContext;
use datafusion::prelude::SessionContext;
use tokio::task::AbortHandle;
use tone_engine::codec::decode_plan;
use tone_engine::limits::{name_memory_limit, plan_metric_sum, plan_spilled_bytes, OperatorSpills};
use tone_engine::paths::PathRoots;
use tone_engine::plan_figures::operator_figures;
use tone_engine::shuffle::{ShuffleEnv, ShuffleWriterExec};
use tone_engine::stage::check_stage_plan;
use tone_engine::EngineError;
use tone_proto::v1::{
    task_status, AssignTask, ErrorKind, FetchFailure, OperatorMetrics, TaskFailed, TaskStatus,
    TaskSucceeded,
};

use crate::faults::Point;

/// What every task of this worker shares.
#[derive(Clone)]
pub struct Runner {
    pub session: SessionContext,
    pub memory_limit_bytes: Option<u64>,
    /// What finished tasks' operators spilled; reported in heartbeats.
    pub spills: Arc<OperatorSpills>,
    /// Fetches from other workers; each task adds its grants.
    pub remote: crate::remote::FlightRemote,
    /// `--allow-path`: every decoded plan is checked before it runs.
    pub path_roots: PathRoots,
}

/// Runs the task and reports how it went; never panics the worker (a
/// panicking task is reported as a failed one).
pub async fn run(assign: AssignTask, runner: Runner) -> TaskStatus {
    let task = assign.task.clone();
    let limit = runner.memory_limit_bytes;
    // Every line the task logs names its job, stage, task and attempt.
    let span = match &task {
        Some(key) => tracing::info_span!(
            "task",
            job_id = %key.job_id,
            stage = key.stage_id,
            task = key.partition,
            attempt = key.attempt
        ),
        None => tracing::info_span!("task"),
    };
    let handle = tokio::spawn(tracing::Instrument::instrument(
        execute(assign, runner),
        span,
    ));
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
                fetch: None,
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
    crate::faults::panic_in_stage(key.stage_id, key.attempt);
    if crate::faults::fires(Point::BeforeTask, key.stage_id) {
        return Err(EngineError::Execution {
            message: format!(
                "injected fault: stage {} task failed before it started",
                key.stage_id
            ),
        });
    }
    if crate::faults::fires(Point::Stall, key.stage_id) {
        tokio::time::sleep(crate::faults::STALL).await;
    }
    if let Some(delay) = crate::faults::slowdown(key.stage_id) {
        tokio::time::sleep(delay).await;
    }
    let started = std::time::Instant::now();
    let context = task_context(&runner, assign.grants)?;
    let plan = decode_plan(&assign.plan, &context)?;
    // What arrived must still give each operator what it requires.
    check_stage_plan(tone_engine::ids::StageId(key.stage_id), &plan)?;
    runner.path_roots.check_plan(&plan)?;
    let decoded = started.elapsed();
    let writer = (plan.as_ref() as &dyn std::any::Any)
        .downcast_ref::<ShuffleWriterExec>()
        .ok_or_else(|| EngineError::Internal {
            message: format!("stage {} plan has no shuffle writer on top", key.stage_id),
        })?;
    let written = writer.write(key.partition as usize, context).await;
    runner.spills.record(&plan);
    let summary = written?;
    if crate::faults::fires(Point::AfterWrite, key.stage_id) {
        // A crash between writing the output and reporting it.
        std::process::abort();
    }
    tracing::debug!(job_id = %key.job_id, stage_id = key.stage_id, partition = key.partition, rows = summary.rows, decode_ms = decoded.as_millis() as u64, elapsed_ms = started.elapsed().as_millis() as u64, "task done");
    Ok(TaskSucceeded {
        rows: summary.rows,
        bytes: summary.bytes,
        remote_fetch_bytes: plan_metric_sum(&plan, "remote_fetch_bytes"),
        spilled_bytes: plan_spilled_bytes(&plan),
        partition_bytes: summary.partition_bytes,
        operators: operator_figures(&plan)
            .into_iter()
            .map(|figures| OperatorMetrics {
                depth: figures.depth,
                name: figures.name,
                values: figures.values.into_iter().collect(),
            })
            .collect(),
    })
}

/// The session's task context with a shuffle env whose remote fetches
/// carry this task's grants.
fn task_context(
    runner: &Runner,
    grants: Vec<tone_proto::v1::FetchGrant>,
) -> Result<Arc<TaskContext>, EngineError> {
    let base = runner.session.task_ctx();
    let env = base
        .session_config()
        .get_extension::<ShuffleEnv>()
        .ok_or_else(|| EngineError::Internal {
            message: "the worker session has no shuffle env".into(),
        })?;
    let env = ShuffleEnv {
        remote: Some(Arc::new(runner.remote.with_grants(grants))),
        ..ShuffleEnv::clone(&env)
    };
    let config = base.session_config().clone().with_extension(Arc::new(env));
    Ok(Arc::new(TaskContext::new(
        base.task_id(),
        base.session_id(),
        config,
        base.scalar_functions().clone(),
        base.higher_order_functions().clone(),
        base.aggregate_functions().clone(),
        base.window_functions().clone(),
        base.runtime_env(),
    )))
}

/// The error as the coordinator needs it: its kind decides whether the
/// task is retried, and a fetch failure names the map output to recompute.
fn failure(error: &EngineError) -> TaskFailed {
    let kind = match error {
        error if error.is_user_error() => ErrorKind::User,
        EngineError::Internal { .. } => ErrorKind::Internal,
        EngineError::ResourcesExhausted { .. } => ErrorKind::Resources,
        EngineError::FetchFailed { .. } => ErrorKind::FetchFailed,
        _ => ErrorKind::Execution,
    };
    let fetch = match error {
        EngineError::FetchFailed {
            stage,
            map,
            address,
            ..
        } => Some(FetchFailure {
            stage_id: *stage,
            map: *map,
            address: address.clone(),
        }),
        _ => None,
    };
    TaskFailed {
        kind: kind as i32,
        message: error.to_string(),
        fetch,
    }
}
