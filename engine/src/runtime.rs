//! The embedded runtime: runs a job's stage DAG inside this process.
//!
//! Each stage is serialized and deserialized before it runs (the same bytes
//! a worker would receive), its tasks run concurrently, and a stage starts
//! once every stage it reads has finished.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::task::JoinSet;

use crate::adaptive::layout::{self, InputSizes, StageLayout};
use crate::codec::{decode_plan, encode_plan};
use crate::cpu::panic_message;
use crate::error::{EngineError, Result};
use crate::ids::{JobId, StageId};
use crate::limits::OperatorSpills;
use crate::runtime_filter::{self, RuntimeFilter};
use crate::shuffle::{ShuffleStore, ShuffleWriteSummary, ShuffleWriterExec};
use crate::stage::{check_stage_plan, Stage, StageDag};
use crate::task_limit;

/// The plans a run executed, by stage: their metrics are what ran
/// (`tone explain --analyze`). The final stage's fill in as its stream is
/// read.
#[derive(Default)]
pub struct ExecutedStages {
    plans: std::sync::Mutex<std::collections::BTreeMap<StageId, Arc<dyn ExecutionPlan>>>,
    layouts: std::sync::Mutex<Vec<StageLayout>>,
}

impl ExecutedStages {
    fn insert(&self, stage: StageId, plan: Arc<dyn ExecutionPlan>) {
        self.plans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(stage, plan);
    }

    pub fn get(&self, stage: StageId) -> Option<Arc<dyn ExecutionPlan>> {
        self.plans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&stage)
            .cloned()
    }

    fn laid_out(&self, layout: StageLayout) {
        self.layouts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(layout);
    }

    /// The stages laid out again from their inputs' sizes, by stage.
    pub fn layouts(&self) -> Vec<StageLayout> {
        let mut layouts = self
            .layouts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        layouts.sort_by_key(|layout| layout.stage);
        layouts
    }
}

/// What the stages that finished wrote: each one's task count and the
/// bytes of each reduce partition of each of its map tasks. A stage is
/// laid out from its inputs' figures.
#[derive(Default)]
struct Written {
    maps: HashMap<StageId, usize>,
    sizes: HashMap<StageId, InputSizes>,
}

impl Written {
    /// `stage`'s plan with its readers told how many tasks each input ran
    /// as, and laid out again when its session's settings say so; and how
    /// many of its tasks may run at once.
    fn laid_out(
        &self,
        stage: &Stage,
        context: &TaskContext,
        executed: Option<&Arc<ExecutedStages>>,
    ) -> Result<(Arc<dyn ExecutionPlan>, usize)> {
        let at_once = task_limit::tasks_at_once(context);
        let plan = layout::with_map_counts(Arc::clone(&stage.plan), &self.maps)?;
        let config = context.session_config();
        let memory = match context.runtime_env().memory_pool.memory_limit() {
            MemoryLimit::Finite(bytes) => Some(layout::TaskMemory {
                pool_bytes: bytes as u64,
                tasks_at_once: at_once,
            }),
            MemoryLimit::Infinite | MemoryLimit::Unknown => None,
        };
        let settings =
            crate::adaptive::options_of(config).layout(config.target_partitions(), memory);
        let Some(decided) = layout::decide(stage.id, &plan, &self.sizes, &settings) else {
            // As planned, every task runs at once: the partitions of one
            // plan instance may wait for each other (a hash join's
            // dynamic filter waits for every partition's build side).
            let tasks = plan.output_partitioning().partition_count();
            return Ok((plan, tasks));
        };
        tracing::debug!(%decided, "stage laid out");
        let plan = layout::apply(plan, &decided)?;
        // A laid-out stage's tasks read readers' slices and never wait
        // for each other (its leaves are all readers, which take no
        // dynamic filter), so the limit cannot stall it.
        let at_once = decided
            .tasks_at_once
            .unwrap_or(at_once.max(decided.partitions));
        if let Some(executed) = executed {
            executed.laid_out(decided);
        }
        Ok((plan, at_once))
    }
}

/// Runs `dag` and streams the final stage's output. Intermediate stages run
/// to completion first; the final stage runs as the stream is polled.
/// The job's shuffle data is released when the stream is dropped.
/// Operator spill metrics of every stage go to `spills` (the final stage's
/// when its stream is dropped).
pub async fn run_dag(
    dag: StageDag,
    store: Arc<dyn ShuffleStore>,
    context: Arc<TaskContext>,
    spills: Arc<OperatorSpills>,
    executed: Option<Arc<ExecutedStages>>,
) -> Result<SendableRecordBatchStream> {
    let mut guard = JobGuard {
        job_id: dag.job_id.clone(),
        store: Arc::clone(&store),
        final_plan: None,
        spills: Arc::clone(&spills),
    };
    let written = run_map_stages(&dag, &store, &context, &spills, executed.as_ref()).await?;
    let final_stage = dag.final_stage();
    let (plan, at_once) = written.laid_out(final_stage, &context, executed.as_ref())?;
    let plan = round_trip(final_stage.id, &plan, &context)?;
    if let Some(executed) = &executed {
        executed.insert(final_stage.id, Arc::clone(&plan));
    }
    let partitions = plan.output_partitioning().partition_count();
    guard.final_plan = Some(Arc::clone(&plan));
    let stream = if partitions > at_once {
        // Laid out as more tasks than run at once.
        task_limit::merge_partitions(plan, context, at_once)
    } else if partitions > 1 {
        let merged: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(plan));
        guard.final_plan = Some(Arc::clone(&merged));
        merged.execute(0, context)?
    } else {
        plan.execute(0, context)?
    };
    Ok(Box::pin(GuardedStream {
        inner: stream,
        _guard: guard,
    }))
}

/// Runs every stage but the final one, each as soon as its inputs are done.
async fn run_map_stages(
    dag: &StageDag,
    store: &Arc<dyn ShuffleStore>,
    context: &Arc<TaskContext>,
    spills: &Arc<OperatorSpills>,
    executed: Option<&Arc<ExecutedStages>>,
) -> Result<Written> {
    let map_stages = &dag.stages[..dag.stages.len() - 1];
    let filters = match crate::adaptive::options_of(context.session_config()).runtime_filters {
        true => runtime_filter::plan(dag),
        false => Vec::new(),
    };
    let mut done: HashSet<StageId> = HashSet::new();
    let mut written = Written::default();
    let mut ran: HashMap<StageId, Stage> = HashMap::new();
    let mut running = FuturesUnordered::new();
    loop {
        for stage in map_stages {
            // A probe stage also waits for its runtime filters' builds.
            let own: Vec<&RuntimeFilter> = filters
                .iter()
                .filter(|filter| filter.probe_stage == stage.id)
                .collect();
            let ready = stage.inputs.iter().all(|input| done.contains(input))
                && own.iter().all(|filter| done.contains(&filter.build_stage));
            if ready && !ran.contains_key(&stage.id) {
                // A build stage's keys are read from the tasks it ran as.
                let own = own
                    .into_iter()
                    .filter_map(|filter| {
                        Some((filter.clone(), ran.get(&filter.build_stage)?.clone()))
                    })
                    .collect();
                let (plan, at_once) = written.laid_out(stage, context, executed)?;
                let stage = Stage {
                    plan,
                    ..stage.clone()
                };
                ran.insert(stage.id, stage.clone());
                running.push(run_map_stage(
                    (stage, at_once),
                    Arc::clone(context),
                    Arc::clone(spills),
                    executed.cloned(),
                    (Arc::clone(store), own),
                ));
            }
        }
        let Some(finished) = running.next().await else {
            break;
        };
        let (stage, sizes) = finished?;
        done.insert(stage);
        written.maps.insert(stage, sizes.by_map.len());
        written.sizes.insert(stage, sizes);
        release_consumed(dag, &done, store.as_ref());
    }
    if done.len() != map_stages.len() {
        return Err(EngineError::internal(
            "stage DAG has a cycle or a missing input",
        ));
    }
    Ok(written)
}

/// Frees the outputs of stages whose consumers have all finished.
fn release_consumed(dag: &StageDag, done: &HashSet<StageId>, store: &dyn ShuffleStore) {
    let final_id = dag.final_stage().id;
    for stage in &dag.stages {
        let consumers = dag.consumers(stage.id);
        let all_done = !consumers.is_empty()
            && consumers
                .iter()
                .all(|consumer| *consumer != final_id && done.contains(consumer));
        if all_done {
            store.remove_stage(&dag.job_id, stage.id);
        }
    }
}

/// Runs `stage`, at most `at_once` of its tasks at a time.
async fn run_map_stage(
    (stage, at_once): (Stage, usize),
    context: Arc<TaskContext>,
    spills: Arc<OperatorSpills>,
    executed: Option<Arc<ExecutedStages>>,
    (store, filters): (Arc<dyn ShuffleStore>, Vec<(RuntimeFilter, Stage)>),
) -> Result<(StageId, InputSizes)> {
    let started = std::time::Instant::now();
    let plan = round_trip(stage.id, &stage.plan, &context)?;
    let job = stage
        .writer()
        .map(|writer| writer.job_id().clone())
        .ok_or_else(|| EngineError::internal("map stage without a shuffle writer"))?;
    let plan = runtime_filter::apply(plan, &store, &job, &filters).await?;
    let tasks = plan.output_partitioning().partition_count();
    let writer: Arc<dyn ExecutionPlan> = plan;
    let permits = Arc::new(tokio::sync::Semaphore::new(at_once.max(1)));
    let mut set = JoinSet::new();
    for partition in 0..tasks {
        let writer = Arc::clone(&writer);
        let context = Arc::clone(&context);
        let permits = Arc::clone(&permits);
        set.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|_| EngineError::internal("a stage's task permits were closed"))?;
            let writer = (writer.as_ref() as &dyn std::any::Any)
                .downcast_ref::<ShuffleWriterExec>()
                .ok_or_else(|| EngineError::internal("map stage without a shuffle writer"))?;
            let summary = writer.write(partition, context).await?;
            Ok::<_, EngineError>((partition, summary))
        });
    }
    let mut written = ShuffleWriteSummary::default();
    let mut sizes = InputSizes {
        by_map: vec![Vec::new(); tasks],
    };
    // Dropping the set on the first error aborts the stage's other tasks.
    while let Some(joined) = set.join_next().await {
        let (partition, summary) = joined.map_err(|error| join_error(stage.id, error))??;
        written.rows += summary.rows;
        written.bytes += summary.bytes;
        written.spilled_bytes += summary.spilled_bytes;
        sizes.by_map[partition] = summary.partition_bytes;
    }
    spills.record(&writer);
    spills.record_shuffle_rows(written.rows);
    if let Some(executed) = executed {
        executed.insert(stage.id, Arc::clone(&writer));
    }
    tracing::info!(
        stage_id = stage.id.0,
        tasks,
        rows = written.rows,
        bytes = written.bytes,
        spilled_bytes = written.spilled_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "stage done"
    );
    Ok((stage.id, sizes))
}

fn join_error(stage: StageId, error: tokio::task::JoinError) -> EngineError {
    if error.is_panic() {
        let panic = error.into_panic();
        EngineError::execution(format!(
            "a task of stage {stage} panicked: {}",
            panic_message(&panic)
        ))
    } else {
        EngineError::execution(format!("a task of stage {stage} was cancelled"))
    }
}

/// Serializes and deserializes a stage plan: the plan that runs is always
/// the one decoded from bytes, as on a worker, and checked again as a
/// worker checks it.
pub fn round_trip(
    stage: StageId,
    plan: &Arc<dyn ExecutionPlan>,
    context: &TaskContext,
) -> Result<Arc<dyn ExecutionPlan>> {
    let bytes = encode_plan(Arc::clone(plan))?;
    let decoded = decode_plan(&bytes, context)?;
    check_stage_plan(stage, &decoded)?;
    Ok(decoded)
}

/// Releases a job's shuffle data when its result stream goes away, and
/// records what the final stage's operators spilled.
struct JobGuard {
    job_id: JobId,
    store: Arc<dyn ShuffleStore>,
    final_plan: Option<Arc<dyn ExecutionPlan>>,
    spills: Arc<OperatorSpills>,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        self.store.remove_job(&self.job_id);
        if let Some(plan) = &self.final_plan {
            self.spills.record(plan);
        }
    }
}

struct GuardedStream {
    inner: SendableRecordBatchStream,
    _guard: JobGuard,
}

impl Stream for GuardedStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl RecordBatchStream for GuardedStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

/// Drains a stream into batches.
pub async fn collect_stream(stream: SendableRecordBatchStream) -> Result<Vec<RecordBatch>> {
    Ok(stream.try_collect().await?)
}
