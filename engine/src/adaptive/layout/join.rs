//! A partitioned hash join whose build side will not fit its task's share
//! of the memory limit.
//!
//! DataFusion's hash join holds its whole build side in memory and cannot
//! spill: past the memory limit the task fails. Once the join's inputs are
//! done, the exact bytes each task's build side reads are known. When one,
//! times [`BUILD_MEMORY_FACTOR`], is over the memory a task may use, the
//! build side is split into pieces that fit or, where it may not be split,
//! both sides are sorted on the keys (a sort spills) and merged, which
//! holds one key's rows at a time.
//!
//! Splitting comes first, and the switch is kept for a build side that
//! cannot fit the whole pool: DataFusion's sorts under a fair pool hold a
//! sorted run's memory unspillable until it is merged, and reserve
//! `sort_spill_reservation_bytes` (10 MB) each, so a sort-merge join needs
//! more memory than the hash join it replaces (measured on TPC-H SF0.1
//! orders ⋈ lineitem at 4 and 8 partitions: the hash join ran at 24 MiB,
//! the sort-merge join failed below 48 MiB).

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::Schema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, JoinSide};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::joins::{HashJoinExec, SortMergeJoinExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan};

use std::ops::Range;

use super::shape::SplittableJoin;
use super::{map_ranges, InputSizes, LayoutSettings, Split};
use crate::error::{EngineError, Result};
use crate::shuffle::Slice;

/// Memory a hash join's build side is allowed, as a multiple of the
/// Arrow bytes its map tasks wrote for it: the batches as read back, the
/// hash table, and room for the probe batches and other operators sharing
/// the pool. (Measured on TPC-H orders with their comments: builds of
/// 2.1 MB held 3.7 MB embedded at SF0.1, of 1.65 MB 4.4 MB on a worker,
/// and of 7 MB 30 MB embedded at SF1: the join counts each read batch's
/// shared string buffers again.)
pub const BUILD_MEMORY_FACTOR: u64 = 4;

/// Why a stage's hash join runs as a sort-merge join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinSwitch {
    /// Shuffle bytes of the largest build side one task reads.
    pub build_bytes: u64,
    /// The memory pool the task runs in.
    pub pool_bytes: u64,
}

/// The memory a stage's partitioned hash join may hold, when a memory
/// limit is set.
///
/// A build side that may be split (its rows meet the probe side's in one
/// piece only: inner and left-hand joins) is split by ranges of its map
/// outputs into pieces that fit, each reading the probe partition whole,
/// so the join stays a hash join. One that may not (right-hand and full
/// joins) runs as a sort-merge join only when a task's build side will not
/// fit even the whole pool: DataFusion's merge join needs more memory than
/// a hash join that fits (see the module's note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JoinMemory {
    pub task_budget_bytes: u64,
    pool_bytes: u64,
    tasks_at_once: usize,
    build_splittable: bool,
}

impl JoinMemory {
    /// The budget of `plan`'s tasks, when it is a partitioned hash join
    /// (`join` its shape).
    pub fn of(
        plan: &Arc<dyn ExecutionPlan>,
        join: Option<SplittableJoin>,
        settings: &LayoutSettings,
    ) -> Option<Self> {
        let memory = settings.task_memory.filter(|_| settings.spillable_join)?;
        super::shape::switchable_hash_join(plan)?;
        Some(Self {
            task_budget_bytes: memory.pool_bytes / memory.tasks_at_once.max(1) as u64,
            pool_bytes: memory.pool_bytes,
            tasks_at_once: memory.tasks_at_once,
            // Reader 0 is the join's left side, which a hash join builds.
            build_splittable: join.is_some_and(|join| join.sides[0]),
        })
    }

    /// The most build-side shuffle bytes a task may read.
    pub fn build_cap(&self) -> u64 {
        (self.task_budget_bytes / BUILD_MEMORY_FACTOR).max(1)
    }

    /// Pieces of partition `reduce`'s build side, when it will not fit a
    /// task and may be split.
    pub fn split(&self, reduce: usize, build: &InputSizes) -> Option<(Vec<Range<u32>>, Split)> {
        let bytes = build.partition(reduce);
        if !self.build_splittable || bytes <= self.build_cap() {
            return None;
        }
        let pieces = map_ranges(build, reduce, self.build_cap());
        (pieces.len() > 1).then(|| {
            let record = Split {
                partition: reduce as u32,
                bytes,
                median: 0,
                pieces: pieces.len(),
                memory_budget: Some(self.task_budget_bytes),
            };
            (pieces, record)
        })
    }

    /// Fewer tasks at once than the pool is shared by, when the largest
    /// task's build side (split as finely as its maps allow) still will
    /// not fit a share: as many as fit the pool, at least one. Honoured
    /// embedded (`task_limit`); a worker runs its slots' worth.
    pub fn tasks_at_once(&self, build_tasks: &[Vec<Slice>], build: &InputSizes) -> Option<usize> {
        let largest = largest_task(build_tasks, build)?.saturating_mul(BUILD_MEMORY_FACTOR);
        if largest <= self.task_budget_bytes {
            return None;
        }
        let fit = (self.pool_bytes / largest.max(1)).max(1) as usize;
        (fit < self.tasks_at_once).then_some(fit)
    }

    /// The switch to a sort-merge join, when a task's build side (over
    /// `build_tasks`, reader 0's slices per task) will not fit the pool
    /// and may not be split.
    pub fn switch(&self, build_tasks: &[Vec<Slice>], build: &InputSizes) -> Option<JoinSwitch> {
        if self.build_splittable {
            return None;
        }
        let build_bytes = largest_task(build_tasks, build)?;
        (build_bytes.saturating_mul(BUILD_MEMORY_FACTOR) > self.pool_bytes).then_some(JoinSwitch {
            build_bytes,
            pool_bytes: self.pool_bytes,
        })
    }
}

/// The build bytes of the task (`build_tasks`: reader 0's slices per
/// task) that reads the most.
fn largest_task(build_tasks: &[Vec<Slice>], build: &InputSizes) -> Option<u64> {
    build_tasks
        .iter()
        .map(|slices| {
            slices
                .iter()
                .map(|slice| build.slice(slice))
                .fold(0, u64::saturating_add)
        })
        .max()
}

/// `plan` with its partitioned hash join (under row-by-row operators)
/// replaced by a sort-merge join of the same output.
pub fn to_sort_merge(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(join) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<HashJoinExec>() {
        return sort_merge_of(join);
    }
    let child = match plan.children().as_slice() {
        [child] => Arc::clone(child),
        _ => {
            return Err(EngineError::internal(
                "a stage switched to a sort-merge join has no hash join under row operators",
            ))
        }
    };
    let child = to_sort_merge(child)?;
    Ok(replace_children_if_necessary(plan, vec![child])?)
}

fn sort_merge_of(join: &HashJoinExec) -> Result<Arc<dyn ExecutionPlan>> {
    // Ascending, NULLs first: what DataFusion plans a sort-merge join with.
    let options = SortOptions::default();
    let sorted = |input: &Arc<dyn ExecutionPlan>, keys: Vec<Arc<dyn PhysicalExpr>>| {
        let ordering = LexOrdering::new(
            keys.into_iter()
                .map(|expr| PhysicalSortExpr::new(expr, options)),
        )
        .ok_or_else(|| EngineError::internal("a hash join without keys"))?;
        let sort = SortExec::new(ordering, Arc::clone(input)).with_preserve_partitioning(true);
        Ok::<_, EngineError>(Arc::new(sort) as Arc<dyn ExecutionPlan>)
    };
    let left = sorted(
        &join.left,
        join.on.iter().map(|(left, _)| Arc::clone(left)).collect(),
    )?;
    let right = sorted(
        &join.right,
        join.on.iter().map(|(_, right)| Arc::clone(right)).collect(),
    )?;
    let merge: Arc<dyn ExecutionPlan> = Arc::new(SortMergeJoinExec::try_new(
        left,
        right,
        join.on.clone(),
        join.filter.as_ref().map(left_columns_first).transpose()?,
        join.join_type,
        vec![options; join.on.len()],
        join.null_equality,
    )?);
    let Some(projection) = &join.projection else {
        return Ok(merge);
    };
    // The hash join projected its output itself; the merge join cannot.
    let schema = merge.schema();
    let columns = projection
        .iter()
        .map(|&index| {
            let field = schema.fields().get(index).ok_or_else(|| {
                EngineError::internal(format!("a hash join projects missing column {index}"))
            })?;
            let name = field.name().clone();
            Ok((
                Arc::new(Column::new(&name, index)) as Arc<dyn PhysicalExpr>,
                name,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(ProjectionExec::try_new(columns, merge)?))
}

/// `filter` with its left side's columns before its right side's.
/// DataFusion's sort-merge join builds a filter's input that way whatever
/// order the filter lists them in (a hash join follows the list), so a
/// filter planned with a right-side column first would compare the wrong
/// columns.
fn left_columns_first(filter: &JoinFilter) -> Result<JoinFilter> {
    let indices = filter.column_indices();
    let order: Vec<usize> = (0..indices.len())
        .filter(|&i| indices[i].side == JoinSide::Left)
        .chain((0..indices.len()).filter(|&i| indices[i].side != JoinSide::Left))
        .collect();
    // new_position[old] = where column `old` of the filter's input goes.
    let mut new_position = vec![0; order.len()];
    for (new, &old) in order.iter().enumerate() {
        new_position[old] = new;
    }
    let expression = Arc::clone(filter.expression())
        .transform(|expr| {
            let Some(column) = (expr.as_ref() as &dyn std::any::Any).downcast_ref::<Column>()
            else {
                return Ok(Transformed::no(expr));
            };
            let index = new_position.get(column.index()).copied().ok_or_else(|| {
                DataFusionError::Internal(format!("a join filter reads column {}", column.index()))
            })?;
            Ok(Transformed::yes(
                Arc::new(Column::new(column.name(), index)) as Arc<dyn PhysicalExpr>,
            ))
        })?
        .data;
    let schema = filter.schema();
    let fields: Vec<_> = order
        .iter()
        .map(|&old| Arc::clone(&schema.fields()[old]))
        .collect();
    let columns = order.iter().map(|&old| indices[old].clone()).collect();
    Ok(JoinFilter::new(
        expression,
        columns,
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
    ))
}
