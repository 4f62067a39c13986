//! User closures inside stage plans: [`ClosureExec`] and the per-job
//! [`ClosureRegistry`] that resolves a closure id to code.
//!
//! Closures cannot be serialized, yet every stage runs from a plan decoded
//! from bytes. So a plan node carries only the closure's id (its position in
//! the order the job registered closures) and its name (where it was
//! defined); the decoder finds the code in the registry of the session that
//! decodes the plan. A process that builds the same pipeline in the same
//! order (the driver embedded, or the job's executor process on a cluster)
//! has the same registry, so id `i` names the same code in every process.
//! The name is checked on decode, so a process whose pipeline diverged
//! fails with a clear error instead of running the wrong closure.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

use crate::cpu::run_cpu;
use crate::error::{EngineError, Result};

/// Position of a closure in its job's registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClosureId(pub u32);

impl fmt::Display for ClosureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Code that turns one partition's batches into output batches.
///
/// [`PartitionFn::open`] is called once per task; the state it returns
/// sees every input batch of the partition in order, then `finish`.
/// Both run on tone's CPU pool, one whole batch at a time.
pub trait PartitionFn: Send + Sync {
    /// Starts a task's state. `argument` is the data the plan node carries
    /// for this use of the closure (e.g. a sort's split points): code is
    /// found by id, data travels in the plan. `partition` is the task's
    /// partition of the node, the same for every attempt of the task.
    fn open(&self, argument: &[u8], partition: usize) -> Result<Box<dyn PartitionState>>;
}

/// One task's state of a [`PartitionFn`].
pub trait PartitionState: Send {
    /// Consumes one input batch; may emit an output batch at once.
    fn push(&mut self, batch: RecordBatch) -> Result<Option<RecordBatch>>;

    /// Called after the last input batch; may emit a final batch.
    fn finish(self: Box<Self>) -> Result<Option<RecordBatch>>;
}

/// A registered closure: its code, its name and its output schema.
#[derive(Clone)]
pub struct ClosureEntry {
    /// Where and what: `map@examples/wordcount.rs:20:10`. Checked on decode.
    pub name: String,
    /// Schema of the batches the closure emits.
    pub schema: SchemaRef,
    /// The code.
    pub function: Arc<dyn PartitionFn>,
}

impl fmt::Debug for ClosureEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClosureEntry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Closures most recently registered by one job (one driver program), in
/// registration order; a session config extension, so the codec finds it.
///
/// **Invariant:** entries are only appended, and a closure's id is its
/// index, so ids depend only on the order the program built its pipeline.
#[derive(Debug, Default)]
pub struct ClosureRegistry {
    entries: Mutex<Vec<ClosureEntry>>,
    placeholder: bool,
}

impl ClosureRegistry {
    /// A registry for a process that plans and schedules closure jobs but
    /// never runs them (the coordinator): every closure node decodes to a
    /// placeholder whose schema comes from the plan and whose code fails
    /// with `NotOnCluster` if it is ever run.
    pub fn placeholders() -> Self {
        Self {
            entries: Mutex::default(),
            placeholder: true,
        }
    }

    /// True for [`ClosureRegistry::placeholders`].
    pub fn is_placeholder(&self) -> bool {
        self.placeholder
    }

    /// Appends a closure and returns its id.
    pub fn register(&self, entry: ClosureEntry) -> ClosureId {
        let mut entries = self.lock();
        entries.push(entry);
        ClosureId((entries.len() - 1) as u32)
    }

    /// The closure with id `id`, checked against the name the plan carries.
    pub fn resolve(&self, id: ClosureId, name: &str) -> Result<ClosureEntry> {
        let entries = self.lock();
        match entries.get(id.0 as usize) {
            Some(entry) if entry.name == name => Ok(entry.clone()),
            Some(entry) => Err(EngineError::Plan {
                message: format!(
                    "closure {id} is '{}' in this process but '{name}' in the plan: the \
                     program built its pipeline in a different order (it must be deterministic \
                     and get the same arguments)",
                    entry.name
                ),
            }),
            None => Err(EngineError::Plan {
                message: format!(
                    "closure {id} ('{name}') is not registered in this process ({} are): the \
                     program built a different pipeline",
                    entries.len()
                ),
            }),
        }
    }

    /// Number of closures registered so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no closure is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ClosureEntry>> {
        // Registration never panics while holding the lock, so poisoning can
        // only come from a panic elsewhere; the list itself stays valid.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs a registered closure over each partition of its input.
///
/// Output partitioning is unknown (the closure may change keys); the node
/// may declare that each output partition is sorted by one column
/// (`ordered_by`), which a range-partitioned sort uses to merge partitions
/// in order.
#[derive(Debug)]
pub struct ClosureExec {
    input: Arc<dyn ExecutionPlan>,
    id: ClosureId,
    entry: ClosureEntry,
    argument: Arc<Vec<u8>>,
    ordered_by: Option<String>,
    properties: Arc<PlanProperties>,
}

impl ClosureExec {
    /// A node running closure `id` (described by `entry`) over `input`,
    /// opening each task with `argument`.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        id: ClosureId,
        entry: ClosureEntry,
        argument: Arc<Vec<u8>>,
        ordered_by: Option<String>,
    ) -> Result<Self> {
        let schema = Arc::clone(&entry.schema);
        let mut equivalence = EquivalenceProperties::new(Arc::clone(&schema));
        if let Some(column) = &ordered_by {
            let index = schema.index_of(column).map_err(DataFusionError::from)?;
            let sort = PhysicalSortExpr::new_default(Arc::new(Column::new(column, index)));
            if let Some(ordering) = LexOrdering::new(vec![sort]) {
                equivalence.add_ordering(ordering);
            }
        }
        let partitions = input.output_partitioning().partition_count();
        let properties = PlanProperties::new(
            equivalence,
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            input,
            id,
            entry,
            argument,
            ordered_by,
            properties: Arc::new(properties),
        })
    }

    /// The closure's id in its job's registry.
    pub fn id(&self) -> ClosureId {
        self.id
    }

    /// The closure's name (where it was defined).
    pub fn closure_name(&self) -> &str {
        &self.entry.name
    }

    /// The data each task is opened with.
    pub fn argument(&self) -> &[u8] {
        &self.argument
    }

    /// The column each output partition is sorted by, if declared.
    pub fn ordered_by(&self) -> Option<&str> {
        self.ordered_by.as_deref()
    }
}

impl DisplayAs for ClosureExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ClosureExec: {} {}", self.id, self.entry.name)
    }
}

impl ExecutionPlan for ClosureExec {
    fn name(&self) -> &str {
        "ClosureExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("ClosureExec needs one child".into()))?;
        Ok(Arc::new(Self::try_new(
            input,
            self.id,
            self.entry.clone(),
            Arc::clone(&self.argument),
            self.ordered_by.clone(),
        )?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let label = format!("closure {} ({})", self.id, self.entry.name);
        let state = self
            .entry
            .function
            .open(&self.argument, partition)
            .map_err(|error| closure_failed(&label, error))?;
        let schema = Arc::clone(&self.entry.schema);
        let stream = futures::stream::try_unfold(Some((input, state)), move |step| {
            let label = label.clone();
            async move { next_output(step, label).await }
        })
        .filter_map(|item| async move { item.transpose() });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

type Step = Option<(SendableRecordBatchStream, Box<dyn PartitionState>)>;

/// Feeds the next input batch (or the end of input) to the state on the CPU
/// pool. `None` output with `Some` step means "nothing yet, go on".
async fn next_output(step: Step, label: String) -> DfResult<Option<(Option<RecordBatch>, Step)>> {
    let Some((mut input, mut state)) = step else {
        return Ok(None);
    };
    match input.next().await {
        Some(batch) => {
            let batch = batch?;
            let (state, output) = run_cpu(move || {
                let output = state.push(batch);
                (state, output)
            })
            .await
            .map_err(|error| closure_failed(&label, error))?;
            let output = output.map_err(|error| closure_failed(&label, error))?;
            Ok(Some((output, Some((input, state)))))
        }
        None => {
            let output = run_cpu(move || state.finish())
                .await
                .map_err(|error| closure_failed(&label, error))?
                .map_err(|error| closure_failed(&label, error))?;
            Ok(Some((output, None)))
        }
    }
}

fn closure_failed(label: &str, error: EngineError) -> DataFusionError {
    let message = match error {
        EngineError::Execution { message } => message,
        other => other.to_string(),
    };
    DataFusionError::from(EngineError::Execution {
        message: format!("{label} failed: {message}"),
    })
}

/// The registry a task context carries, or a clear error when the process
/// has none (a worker daemon: closures run in the job's executor process).
pub fn registry_of(context: &TaskContext) -> DfResult<Arc<ClosureRegistry>> {
    context
        .session_config()
        .get_extension::<ClosureRegistry>()
        .ok_or_else(|| {
            DataFusionError::from(EngineError::NotOnCluster {
                what: "a plan with Rust closures (a typed Dataset job)".into(),
            })
        })
}

/// The entry a placeholder registry decodes closure `name` to.
pub fn placeholder_entry(name: &str, schema: SchemaRef) -> ClosureEntry {
    ClosureEntry {
        name: name.to_string(),
        schema,
        function: Arc::new(Unresolved {
            name: name.to_string(),
        }),
    }
}

/// The code of a closure in a process that does not have it.
struct Unresolved {
    name: String,
}

impl PartitionFn for Unresolved {
    fn open(&self, _argument: &[u8], _partition: usize) -> Result<Box<dyn PartitionState>> {
        Err(EngineError::NotOnCluster {
            what: format!(
                "closure '{}' (it runs in the job's executor process)",
                self.name
            ),
        })
    }
}

/// Downcasts a plan node to a [`ClosureExec`].
pub fn as_closure(plan: &dyn ExecutionPlan) -> Option<&ClosureExec> {
    (plan as &dyn Any).downcast_ref::<ClosureExec>()
}
