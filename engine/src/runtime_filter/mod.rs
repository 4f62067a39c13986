//! Runtime filters across stages (sideways information passing).
//!
//! A partitioned hash join reads its build side from one stage and its
//! probe side from another, both shuffled on the join keys. DataFusion's
//! dynamic filters prune the probe scan inside one pipeline, once the join
//! has built; across a stage boundary the probe stage has run and
//! shuffled every row before any join exists. Here the probe stage waits
//! for the build stage instead, and its rows pass a filter made of the
//! build keys before they are shuffled: the keys' min/max and, when the
//! build side has at most [`MAX_SET_ROWS`] rows, the set of them.
//!
//! A probe row whose key is not among the build keys meets no build row,
//! so it is dropped only where the join would drop it: inner, left, left
//! semi/anti/mark and right semi joins that take NULL as unequal.
//!
//! Embedded only: on a cluster the build keys live on the workers.
//! `SET tone.runtime_filters = false` (or `--aqe off`) turns them off.

mod exec;
mod keys;

use std::sync::Arc;

use datafusion::common::stats::Precision;
use datafusion::common::{JoinType, NullEquality};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::ExecutionPlan;

pub use exec::RuntimeFilterExec;
pub use keys::{build_filter, BuiltFilter};

use crate::error::{EngineError, Result};
use crate::ids::{JobId, StageId};
use crate::shuffle::{ReadMode, ShuffleReaderExec, ShuffleStore, ShuffleWriterExec};
use crate::stage::{Stage, StageDag};

/// The most build rows whose keys become a set; past it only their
/// min/max filter.
pub const MAX_SET_ROWS: usize = 256 * 1024;

/// The most rows a build stage may be estimated to give, or may have
/// written, for its keys to be read: past it the filter is not made.
pub const MAX_BUILD_ROWS: usize = 4 * MAX_SET_ROWS;

/// The fewest rows a probe stage must be estimated to give for it to wait
/// for its build stage: waiting costs the two stages' overlap, which only
/// a large probe side repays.
const MIN_PROBE_ROWS: usize = 100_000;

/// A filter on one stage's output (the probe side of a join), made from
/// another stage's output (its build side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFilter {
    pub build_stage: StageId,
    /// Key columns in the build stage's output.
    pub build_keys: Vec<usize>,
    pub probe_stage: StageId,
    /// The matching key columns in the probe stage's output.
    pub probe_keys: Vec<usize>,
}

/// The runtime filters worth making for `dag`: one per partitioned hash
/// join that reads both sides straight from stages, whose probe side is
/// estimated large and its build side (where DataFusion can tell; a
/// join's output it often cannot) at most half of it.
pub fn plan(dag: &StageDag) -> Vec<RuntimeFilter> {
    let mut found = Vec::new();
    for stage in &dag.stages {
        collect(&stage.plan, dag, &mut found);
    }
    // A probe stage waits for its build stage; a filter that would close
    // a cycle of waits is left out.
    let mut kept: Vec<RuntimeFilter> = Vec::new();
    for filter in found {
        if !waits_for(dag, &kept, filter.build_stage, filter.probe_stage) {
            kept.push(filter);
        }
    }
    kept
}

/// Whether `stage` waits, through inputs and `filters`, for `other`.
fn waits_for(dag: &StageDag, filters: &[RuntimeFilter], stage: StageId, other: StageId) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut pending = vec![stage];
    while let Some(next) = pending.pop() {
        if next == other {
            return true;
        }
        if !seen.insert(next) {
            continue;
        }
        if let Some(found) = dag.stage(next) {
            pending.extend(found.inputs.iter().copied());
        }
        let built_first = filters.iter().filter(|filter| filter.probe_stage == next);
        pending.extend(built_first.map(|filter| filter.build_stage));
    }
    false
}

fn collect(plan: &Arc<dyn ExecutionPlan>, dag: &StageDag, found: &mut Vec<RuntimeFilter>) {
    if let Some(join) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<HashJoinExec>() {
        if let Some(filter) = filter_for(join, dag) {
            found.push(filter);
        }
    }
    for child in plan.children() {
        collect(child, dag, found);
    }
}

fn filter_for(join: &HashJoinExec, dag: &StageDag) -> Option<RuntimeFilter> {
    let drops_unmatched_probe_rows = matches!(
        join.join_type(),
        JoinType::Inner
            | JoinType::Left
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
            | JoinType::RightSemi
    );
    if *join.partition_mode() != PartitionMode::Partitioned
        || !drops_unmatched_probe_rows
        || join.null_equality() != NullEquality::NullEqualsNothing
    {
        return None;
    }
    let build_stage = read_stage(join.left())?;
    let probe_stage = read_stage(join.right())?;
    let mut build_keys = Vec::new();
    let mut probe_keys = Vec::new();
    for (build, probe) in join.on() {
        build_keys.push(column_index(build)?);
        probe_keys.push(column_index(probe)?);
    }
    // The probe stage's output must feed this join alone.
    if dag.consumers(probe_stage).len() != 1 || build_stage == probe_stage {
        return None;
    }
    let build_rows = estimated_rows(dag, build_stage);
    let probe_rows = estimated_rows(dag, probe_stage);
    tracing::debug!(%build_stage, %probe_stage, ?build_rows, ?probe_rows, "runtime filter candidate");
    let probe_rows = probe_rows?.rows;
    // An exact count means a whole table, unfiltered: a foreign key's
    // values are all among its keys, so its filter would remove nothing.
    let small_build = build_rows.is_none_or(|build| {
        !build.exact && build.rows <= MAX_BUILD_ROWS && build.rows.saturating_mul(2) <= probe_rows
    });
    (probe_rows >= MIN_PROBE_ROWS && small_build).then_some(RuntimeFilter {
        build_stage,
        build_keys,
        probe_stage,
        probe_keys,
    })
}

/// `plan`, a probe stage's writer, with `filters` (each with its build
/// stage, which is done) applied under it.
pub async fn apply(
    plan: Arc<dyn ExecutionPlan>,
    store: &Arc<dyn ShuffleStore>,
    job: &JobId,
    filters: &[(RuntimeFilter, Stage)],
) -> Result<Arc<dyn ExecutionPlan>> {
    if filters.is_empty() {
        return Ok(plan);
    }
    let writer = (plan.as_ref() as &dyn std::any::Any)
        .downcast_ref::<ShuffleWriterExec>()
        .ok_or_else(|| EngineError::internal("a runtime filter's probe stage has no writer"))?;
    let mut input = Arc::clone(writer.input());
    for (filter, build) in filters {
        let schema = input.schema();
        if let Some(built) = build_filter(store, job, filter, build, &schema).await? {
            input = Arc::new(RuntimeFilterExec::new(
                input,
                built.predicate,
                built.description,
            ));
        }
    }
    Ok(datafusion::physical_plan::replace_children_if_necessary(
        plan,
        vec![input],
    )?)
}

/// The stage `plan` reads, when it is a reader of one reduce partition.
fn read_stage(plan: &Arc<dyn ExecutionPlan>) -> Option<StageId> {
    let reader = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<ShuffleReaderExec>()?;
    (reader.mode() == ReadMode::ReducePartition).then(|| reader.stage_id())
}

fn column_index(expr: &Arc<dyn datafusion::physical_expr::PhysicalExpr>) -> Option<usize> {
    let column = (expr.as_ref() as &dyn std::any::Any).downcast_ref::<Column>()?;
    Some(column.index())
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    rows: usize,
    exact: bool,
}

/// DataFusion's estimate of the rows `stage` writes.
fn estimated_rows(dag: &StageDag, stage: StageId) -> Option<Estimate> {
    let writer = dag.stage(stage)?.writer()?;
    let statistics = StatisticsContext::new()
        .compute(writer.input().as_ref(), &StatisticsArgs::new())
        .ok()?;
    match statistics.num_rows {
        Precision::Exact(rows) => Some(Estimate { rows, exact: true }),
        Precision::Inexact(rows) => Some(Estimate { rows, exact: false }),
        Precision::Absent => None,
    }
}
