//! How many tasks of one stage the embedded runtime runs at once.
//!
//! A cluster worker runs at most its slots' worth of tasks, which share its
//! memory pool. Embedded, a stage laid out as more tasks than planned
//! (split skewed or too-big partitions) runs at most its planned
//! partitions (or the session's target partitions, if more) at once, the
//! extra ones as earlier ones finish, so a split for memory lowers the
//! memory held at once. A stage run as planned runs every task at once:
//! the partitions of one DataFusion plan may wait for each other. A layout may lower it
//! further for one stage (`StageLayout::tasks_at_once`).

use std::sync::Arc;

use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::StreamExt;
use tokio::sync::Semaphore;

/// Batches buffered from the final stage's tasks.
const MERGE_BUFFER_BATCHES: usize = 2;

/// The most tasks of one stage that run at once under `context`.
pub fn tasks_at_once(context: &TaskContext) -> usize {
    context.session_config().target_partitions().max(1)
}

/// All partitions of `plan`, merged in whatever order they come, with at
/// most `at_once` of them running at a time.
pub fn merge_partitions(
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    at_once: usize,
) -> SendableRecordBatchStream {
    let partitions = plan.output_partitioning().partition_count();
    let mut builder = RecordBatchReceiverStreamBuilder::new(plan.schema(), MERGE_BUFFER_BATCHES);
    let permits = Arc::new(Semaphore::new(at_once.max(1)));
    for partition in 0..partitions {
        let plan = Arc::clone(&plan);
        let context = Arc::clone(&context);
        let permits = Arc::clone(&permits);
        let sender = builder.tx();
        builder.spawn(async move {
            // The semaphore is never closed: no permit means no task runs.
            let Ok(_permit) = permits.acquire_owned().await else {
                return Ok(());
            };
            let mut stream = plan.execute(partition, context)?;
            while let Some(batch) = stream.next().await {
                // The receiver went away: the result is no longer wanted.
                if sender.send(batch).await.is_err() {
                    break;
                }
            }
            Ok(())
        });
    }
    builder.build()
}
