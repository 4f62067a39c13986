//! Join reordering: multi-way inner joins run their selective joins first.
//!
//! DataFusion joins in the order the SQL text gives, only swapping the
//! build and probe sides of each join. A query that joins two big tables
//! on a non-selective key before its selective dimension joins then makes
//! a huge intermediate result, which tone would shuffle whole between
//! stages. The session's planner (`adaptive::AdaptivePlanner`) reorders
//! every query it plans: for each tree of inner joins it estimates each
//! input's rows from DataFusion's statistics (Parquet row counts and
//! min/max) and a filtered table's rows from a sample ([`sample`]),
//! chooses a greedy order ([`order`]) and takes it when its estimated
//! intermediate rows are at most half the written order's. Otherwise, and
//! whenever an input has no row count, the written order stays.
//!
//! `SET tone.join_reorder = false` (or `--aqe off`) turns it off.

mod cache;
mod estimate;
mod graph;
mod order;
mod sample;

use datafusion::common::Result;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{LogicalPlan, PlanType, StringifiedPlan};
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::{OptimizerContext, OptimizerRule};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use futures::future::BoxFuture;
use futures::FutureExt;

pub use cache::EstimateCache;
use estimate::Estimate;
use graph::JoinGraph;

/// How much fewer intermediate rows a new order must promise before it
/// replaces the written one: estimates are rough, and the written order is
/// often the one a person chose with care.
const GAIN_REQUIRED: f64 = 2.0;

/// What the planner decided for one tree of inner joins.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinOrderDecision {
    /// The tables (or aliases) the tree joins, as written.
    pub inputs: Vec<String>,
    /// Estimated rows of the joins below the last, as written.
    pub written_rows: f64,
    /// The same for the greedy order.
    pub greedy_rows: f64,
    /// Whether the greedy order replaced the written one.
    pub reordered: bool,
}

impl std::fmt::Display for JoinOrderDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.reordered {
            "reordered"
        } else {
            "kept as written"
        };
        write!(
            f,
            "join order of {}: {verdict} (estimated intermediate rows {:.0} as written, {:.0} reordered)",
            self.inputs.join(", "),
            self.written_rows,
            self.greedy_rows
        )
    }
}

type Decisions = std::sync::Mutex<Vec<JoinOrderDecision>>;

/// What the planner decides for each tree of inner joins in `plan`, an
/// optimized logical plan.
pub async fn decisions(plan: &LogicalPlan, state: &SessionState) -> Result<Vec<JoinOrderDecision>> {
    let decided = Decisions::default();
    reorder_within(plan, state, &decided).await?;
    Ok(decided
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// `plan` with every join tree in it reordered where that pays, its
/// columns pruned again; `None` when nothing changed.
pub async fn reorder(plan: &LogicalPlan, state: &SessionState) -> Result<Option<LogicalPlan>> {
    let decided = Decisions::default();
    let Some(plan) = reorder_within(plan, state, &decided).await? else {
        return Ok(None);
    };
    // Intermediate column selections of the written tree are gone.
    let pruned = OptimizeProjections::new().rewrite(plan, &OptimizerContext::new())?;
    Ok(Some(pruned.data))
}

fn reorder_within<'a>(
    plan: &'a LogicalPlan,
    state: &'a SessionState,
    decided: &'a Decisions,
) -> BoxFuture<'a, Result<Option<LogicalPlan>>> {
    async move {
        if graph::is_join_tree(plan) {
            if let Some(graph) = graph::flatten(plan) {
                return reorder_graph(graph, state, decided).await;
            }
        }
        let mut changed = false;
        let mut inputs = Vec::new();
        for input in plan.inputs() {
            match reorder_within(input, state, decided).await? {
                Some(new) => {
                    changed = true;
                    inputs.push(new);
                }
                None => inputs.push(input.clone()),
            }
        }
        if !changed {
            return Ok(None);
        }
        Ok(Some(plan.with_new_exprs(plan.expressions(), inputs)?))
    }
    .boxed()
}

/// The graph's tree in a better order, its leaves reordered within; `None`
/// when neither changed.
async fn reorder_graph(
    mut graph: JoinGraph,
    state: &SessionState,
    decided: &Decisions,
) -> Result<Option<LogicalPlan>> {
    let mut leaves_changed = false;
    for leaf in &mut graph.leaves {
        if let Some(new) = reorder_within(leaf, state, decided).await? {
            *leaf = new;
            leaves_changed = true;
        }
    }
    let mut estimates = Vec::with_capacity(graph.leaves.len());
    for leaf in &graph.leaves {
        match estimate_leaf(leaf, state).await? {
            Some(estimate) => estimates.push(estimate),
            None => return written(graph, leaves_changed),
        }
    }
    let chosen = order::greedy(&graph, &estimates).and_then(|merges| {
        let greedy_rows = order::cost(&graph, &estimates, &merges)?;
        let written_rows = order::cost(&graph, &estimates, &graph.written)?;
        let decision = JoinOrderDecision {
            inputs: graph.leaves.iter().map(leaf_name).collect(),
            written_rows,
            greedy_rows,
            reordered: greedy_rows * GAIN_REQUIRED <= written_rows,
        };
        tracing::debug!(%decision, "join order");
        let reordered = decision.reordered;
        decided
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(decision);
        reordered.then_some(merges)
    });
    match chosen {
        Some(merges) => order::build(&graph, &merges).map(Some),
        None => written(graph, leaves_changed),
    }
}

/// The written order, rebuilt only when a leaf changed.
fn written(graph: JoinGraph, leaves_changed: bool) -> Result<Option<LogicalPlan>> {
    if !leaves_changed {
        return Ok(None);
    }
    order::build(&graph, &graph.written).map(Some)
}

/// A leaf as a person would name it: its alias or its first table.
fn leaf_name(leaf: &LogicalPlan) -> String {
    match leaf {
        LogicalPlan::SubqueryAlias(alias) => alias.alias.to_string(),
        LogicalPlan::TableScan(scan) => scan.table_name.to_string(),
        other => other
            .inputs()
            .first()
            .map_or_else(|| other.display().to_string(), |input| leaf_name(input)),
    }
}

async fn estimate_leaf(leaf: &LogicalPlan, state: &SessionState) -> Result<Option<Estimate>> {
    let cache = state.config().get_extension::<EstimateCache>();
    let key = leaf.display_indent().to_string();
    if let Some(known) = cache.as_ref().and_then(|cache| cache.get(&key)) {
        return Ok(Some(known));
    }
    let estimate = estimate_anew(leaf, state).await?;
    if let (Some(cache), Some(estimate)) = (cache, &estimate) {
        cache.put(key, estimate.clone());
    }
    Ok(estimate)
}

async fn estimate_anew(leaf: &LogicalPlan, state: &SessionState) -> Result<Option<Estimate>> {
    // DataFusion's own planner: the leaf's join trees are ordered already.
    let plan = DefaultPhysicalPlanner::default()
        .create_physical_plan(leaf, state)
        .await?;
    let statistics = StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new())?;
    let measured = sample::filtered_rows(leaf, &plan, state).await?;
    Ok(Estimate::of_leaf(leaf.schema(), &statistics, measured))
}

/// EXPLAIN shows the reordered plan as the final logical plan, and in
/// VERBOSE as a pass of its own.
pub(crate) fn show_in_explain(plans: &mut Vec<StringifiedPlan>, reordered: &LogicalPlan) {
    let text = reordered.display_indent().to_string();
    for plan in plans.iter_mut() {
        if plan.plan_type == PlanType::FinalLogicalPlan {
            *plan = StringifiedPlan::new(PlanType::FinalLogicalPlan, text.clone());
        }
    }
    plans.push(StringifiedPlan::new(
        PlanType::OptimizedLogicalPlan {
            optimizer_name: "tone_join_order".into(),
        },
        text,
    ));
}
