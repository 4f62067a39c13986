//! Stage splitting: a physical plan becomes a DAG of stages cut at every
//! exchange.
//!
//! - A `RepartitionExec` (hash, range or round robin) becomes a
//!   [`ShuffleWriterExec`] at the top of the producing stage and a
//!   [`ShuffleReaderExec`] at the leaf of the consuming stage.
//! - A merge of several partitions into one (`CoalescePartitionsExec`,
//!   `SortPreservingMergeExec`) makes its input a stage of its own whose map
//!   tasks each write one partition; the merge reads them all.
//!
//! Stages are numbered in dependency order; the last one is the final stage,
//! whose output is the job's result.

mod check;
mod display;
mod grouping;

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::limit::GlobalLimitExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    replace_children_if_necessary, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};

pub use check::check_stage_plan;
pub use display::render_dag;

use crate::error::Result;
use crate::ids::{JobId, StageId};
use crate::shuffle::{ReadMode, ShuffleReaderExec, ShuffleWriterExec};

/// One stage: a plan whose partitions run as independent tasks.
#[derive(Debug, Clone)]
pub struct Stage {
    pub id: StageId,
    /// A [`ShuffleWriterExec`] on top for every stage but the final one.
    pub plan: Arc<dyn ExecutionPlan>,
    /// Stages whose output this stage reads.
    pub inputs: Vec<StageId>,
}

impl Stage {
    /// Number of tasks: one per partition of the stage's plan.
    pub fn partitions(&self) -> usize {
        self.plan.output_partitioning().partition_count()
    }

    /// The writer on top, unless this is the final stage.
    pub fn writer(&self) -> Option<&ShuffleWriterExec> {
        (self.plan.as_ref() as &dyn std::any::Any).downcast_ref::<ShuffleWriterExec>()
    }
}

/// The stages of one job in dependency order; the last is the final stage.
#[derive(Debug, Clone)]
pub struct StageDag {
    pub job_id: JobId,
    pub stages: Vec<Stage>,
}

impl StageDag {
    /// Cuts `plan` at every exchange.
    pub fn split(job_id: JobId, plan: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let mut splitter = Splitter {
            job_id: job_id.clone(),
            stages: Vec::new(),
        };
        let root = splitter.cut(plan)?;
        let inputs = reader_stages(&root);
        let id = StageId(splitter.stages.len() as u32);
        splitter.stages.push(Stage {
            id,
            plan: root,
            inputs,
        });
        for stage in &splitter.stages {
            check_stage_plan(stage.id, &stage.plan)?;
        }
        Ok(Self {
            job_id,
            stages: splitter.stages,
        })
    }

    pub fn final_stage(&self) -> &Stage {
        // `split` always pushes the final stage last.
        self.stages.last().expect("a stage DAG has a final stage")
    }

    pub fn stage(&self, id: StageId) -> Option<&Stage> {
        self.stages.get(id.0 as usize)
    }

    /// Whether the job writes files (`COPY`, `INSERT`, a DataFrame
    /// write): once it committed, running a task of it again would write
    /// after the commit.
    pub fn writes_files(&self) -> bool {
        fn writes(plan: &Arc<dyn ExecutionPlan>) -> bool {
            let any = plan.as_ref() as &dyn std::any::Any;
            any.is::<crate::sink::FileSinkExec>()
                || any.is::<datafusion::datasource::sink::DataSinkExec>()
                || plan.children().into_iter().any(writes)
        }
        self.stages.iter().any(|stage| writes(&stage.plan))
    }

    /// The stages that read `id`'s output.
    pub fn consumers(&self, id: StageId) -> Vec<StageId> {
        self.stages
            .iter()
            .filter(|stage| stage.inputs.contains(&id))
            .map(|stage| stage.id)
            .collect()
    }
}

struct Splitter {
    job_id: JobId,
    stages: Vec<Stage>,
}

impl Splitter {
    /// Rewrites `plan` bottom-up, turning each exchange into a new stage and
    /// a reader in its place.
    fn cut(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        let children = plan
            .children()
            .into_iter()
            .map(|child| self.cut(Arc::clone(child)))
            .collect::<Result<Vec<_>>>()?;
        // What DataFusion planned the operators above against. Rebuilding
        // over readers recomputes properties, and may lose some: a filter
        // finds constants from its input's statistics, which a reader
        // does not have. Readers therefore take the planned properties.
        let planned = Arc::clone(plan.properties());
        let planned_input = plan
            .children()
            .first()
            .map(|child| Arc::clone(child.properties()));
        let plan = replace_children_if_necessary(plan, children)?;
        let any = plan.as_ref() as &dyn std::any::Any;

        if let Some(repartition) = any.downcast_ref::<RepartitionExec>() {
            return self.cut_repartition(repartition, &planned);
        }
        if let Some(coalesce) = any.downcast_ref::<CoalescePartitionsExec>() {
            if coalesce.input().output_partitioning().partition_count() > 1 {
                return self.cut_coalesce(coalesce, &planned);
            }
        }
        if let Some(merge) = any.downcast_ref::<SortPreservingMergeExec>() {
            if merge.input().output_partitioning().partition_count() > 1 {
                let planned_input =
                    planned_input.unwrap_or_else(|| Arc::clone(merge.input().properties()));
                return self.cut_merge(&plan, merge, &planned_input);
            }
        }
        Ok(plan)
    }

    fn cut_repartition(
        &mut self,
        repartition: &RepartitionExec,
        planned: &PlanProperties,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = Arc::clone(repartition.input());
        let partitioning = repartition.partitioning().clone();
        let stage_id = self.push_stage(Arc::clone(&input), partitioning)?;
        let planned = grouping::without_nulled_group_keys(&input, planned)?;
        // The exchange's own properties say what holds after it (orderings
        // only when it preserves order, constants only when uniform across
        // partitions), so the operators above see exactly what DataFusion
        // planned them against.
        let reader = ShuffleReaderExec::new(
            self.job_id.clone(),
            stage_id,
            input.output_partitioning().partition_count(),
            ReadMode::ReducePartition,
            planned.clone(),
        );
        // A sort-preserving exchange merges the sorted map outputs, as
        // `RepartitionExec` merges its sorted input partitions.
        match planned.output_ordering() {
            Some(ordering) if repartition.preserve_order() => {
                Ok(Arc::new(reader.with_merge_ordering(ordering.clone())))
            }
            _ => Ok(Arc::new(reader)),
        }
    }

    fn cut_coalesce(
        &mut self,
        coalesce: &CoalescePartitionsExec,
        planned: &PlanProperties,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = Arc::clone(coalesce.input());
        let stage_id = self.push_stage(Arc::clone(&input), Partitioning::UnknownPartitioning(1))?;
        let planned = grouping::without_nulled_group_keys(&input, planned)?;
        let reader: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::new(
            self.job_id.clone(),
            stage_id,
            input.output_partitioning().partition_count(),
            ReadMode::ReducePartition,
            planned,
        ));
        match coalesce.fetch() {
            Some(fetch) => Ok(Arc::new(GlobalLimitExec::new(reader, 0, Some(fetch)))),
            None => Ok(reader),
        }
    }

    fn cut_merge(
        &mut self,
        plan: &Arc<dyn ExecutionPlan>,
        merge: &SortPreservingMergeExec,
        planned_input: &PlanProperties,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = Arc::clone(merge.input());
        let map_partitions = input.output_partitioning().partition_count();
        let stage_id = self.push_stage(Arc::clone(&input), Partitioning::UnknownPartitioning(1))?;
        // Each map task's output stays one sorted partition for the merge.
        let properties = grouping::without_nulled_group_keys(&input, planned_input)?
            .with_partitioning(Partitioning::UnknownPartitioning(map_partitions));
        let reader: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::new(
            self.job_id.clone(),
            stage_id,
            map_partitions,
            ReadMode::PerMap,
            properties,
        ));
        Ok(replace_children_if_necessary(
            Arc::clone(plan),
            vec![reader],
        )?)
    }

    fn push_stage(
        &mut self,
        input: Arc<dyn ExecutionPlan>,
        partitioning: Partitioning,
    ) -> Result<StageId> {
        let id = StageId(self.stages.len() as u32);
        let inputs = reader_stages(&input);
        let writer = ShuffleWriterExec::try_new(self.job_id.clone(), id, input, partitioning)?;
        self.stages.push(Stage {
            id,
            plan: Arc::new(writer),
            inputs,
        });
        Ok(id)
    }
}

/// The stages that the readers inside `plan` read from, in order.
pub fn reader_stages(plan: &Arc<dyn ExecutionPlan>) -> Vec<StageId> {
    let mut found = BTreeSet::new();
    collect_readers(plan, &mut found);
    found.into_iter().collect()
}

fn collect_readers(plan: &Arc<dyn ExecutionPlan>, found: &mut BTreeSet<StageId>) {
    if let Some(reader) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<ShuffleReaderExec>()
    {
        found.insert(reader.stage_id());
    }
    for child in plan.children() {
        collect_readers(child, found);
    }
}
