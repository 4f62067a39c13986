//! Which stages may be laid out again, read off their plans.
//!
//! Coalescing hands a task several whole reduce partitions: every operator
//! still sees all rows of a key together, so any plan whose leaves are all
//! hash-partitioned reduce readers may be coalesced. Splitting a partition
//! gives one key's rows to several tasks, which only a join can take, and
//! only on the side whose rows it emits on their own.

use std::sync::Arc;

use datafusion::common::{JoinType, NullEquality};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode, SortMergeJoinExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

use crate::closure::ClosureExec;
use crate::shuffle::{ReadMode, ShuffleReaderExec, ShuffleWriterExec};

/// The stage's readers, in pre-order, when it may be coalesced: every leaf
/// is a reader of one reduce partition per task from a hash partitioning,
/// all with the same partition count, which is the stage's task count,
/// and no user closure runs in it (one may depend on its partition).
pub fn coalescible_readers(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<&ShuffleReaderExec>> {
    let mut readers = Vec::new();
    collect_leaves(plan.as_ref(), &mut readers)?;
    let partitions = readers.first()?.reduce_partitions();
    let fits = |reader: &&ShuffleReaderExec| {
        reader.mode() == ReadMode::ReducePartition
            && reader.tasks().is_none()
            && matches!(reader.properties().partitioning, Partitioning::Hash(..))
            && reader.reduce_partitions() == partitions
    };
    (readers.iter().all(fits) && plan.output_partitioning().partition_count() == partitions)
        .then_some(readers)
}

fn collect_leaves<'a>(
    plan: &'a dyn ExecutionPlan,
    readers: &mut Vec<&'a ShuffleReaderExec>,
) -> Option<()> {
    let any = plan as &dyn std::any::Any;
    if any.is::<ClosureExec>() {
        return None;
    }
    if let Some(reader) = any.downcast_ref::<ShuffleReaderExec>() {
        readers.push(reader);
        return Some(());
    }
    let children = plan.children();
    if children.is_empty() {
        return None;
    }
    for child in children {
        collect_leaves(child.as_ref(), readers)?;
    }
    Some(())
}

/// A join a skewed partition may be split under: the stage is this join
/// with only row-by-row operators (or a partial aggregate) above it and
/// between it and each of its two readers (reader 0 its left side, reader
/// 1 its right side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplittableJoin {
    /// Whether each side (left, right) may be split, the other being read
    /// whole by every piece.
    pub sides: [bool; 2],
}

/// The stage's one partitioned join, when skew may be split under it.
pub fn splittable_join(plan: &Arc<dyn ExecutionPlan>) -> Option<SplittableJoin> {
    let join = below_row_operators(plan)?;
    let any = join.as_ref() as &dyn std::any::Any;
    let join_type = if let Some(hash) = any.downcast_ref::<HashJoinExec>() {
        (hash.partition_mode() == &PartitionMode::Partitioned
            && hash.null_equality() == NullEquality::NullEqualsNothing)
            .then_some(*hash.join_type())?
    } else if let Some(merge) = any.downcast_ref::<SortMergeJoinExec>() {
        merge.join_type()
    } else {
        return None;
    };
    for child in join.children() {
        let leaf = below_row_operators(child)?;
        (leaf.as_ref() as &dyn std::any::Any).downcast_ref::<ShuffleReaderExec>()?;
    }
    Some(SplittableJoin {
        sides: splittable_sides(join_type),
    })
}

/// The stage's one partitioned hash join, when it may run as a sort-merge
/// join: it is the stage's join as [`splittable_join`] finds it, compares
/// keys the way a merge join can (NULL equal to nothing, not the null-aware
/// anti join of `NOT IN`) and has no row limit of its own.
pub fn switchable_hash_join(plan: &Arc<dyn ExecutionPlan>) -> Option<&HashJoinExec> {
    splittable_join(plan)?;
    let join = below_row_operators(plan)?;
    let hash = (join.as_ref() as &dyn std::any::Any).downcast_ref::<HashJoinExec>()?;
    let plain = hash.partition_mode() == &PartitionMode::Partitioned
        && hash.null_equality() == NullEquality::NullEqualsNothing
        && !hash.null_aware
        && hash.fetch().is_none();
    plain.then_some(hash)
}

/// A side may be split when each of its rows meets the other side's rows
/// in one piece only and nothing is emitted for the other side's rows on
/// their own: inner joins, and the side an outer, semi, anti or mark join
/// keeps.
fn splittable_sides(join_type: JoinType) -> [bool; 2] {
    match join_type {
        JoinType::Inner => [true, true],
        JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
            [true, false]
        }
        JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
            [false, true]
        }
        JoinType::Full => [false, false],
    }
}

/// The first node under `plan` that is not a row-by-row operator. A
/// partial aggregate counts as one: its groups are merged after an
/// exchange, so pieces of a partition may each make some.
fn below_row_operators(plan: &Arc<dyn ExecutionPlan>) -> Option<&Arc<dyn ExecutionPlan>> {
    let any = plan.as_ref() as &dyn std::any::Any;
    let row_by_row = any.is::<ShuffleWriterExec>()
        || any.is::<ProjectionExec>()
        || any.is::<FilterExec>()
        || any
            .downcast_ref::<AggregateExec>()
            .is_some_and(|aggregate| *aggregate.mode() == AggregateMode::Partial);
    if !row_by_row {
        return Some(plan);
    }
    match plan.children().as_slice() {
        [child] => below_row_operators(child),
        _ => None,
    }
}
