//! Choosing a join order, and building the plan that joins in it.
//!
//! The order is greedy (Fegaras' GOO): of all pairs of joined sets that an
//! equality connects, join the pair estimated to give the fewest rows,
//! until one set is left. Trees may be bushy; a hash join builds on its
//! smaller input either way. The cost of an order is the rows its joins
//! produce below the last one, whose result every order shares.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::{JoinConstraint, NullEquality, Result};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, Filter, Join, JoinType, LogicalPlan, Projection};

use super::estimate::Estimate;
use super::graph::{single, JoinGraph, Leaves};

/// The joins to make, bottom up: the sets each joins, the left one first.
pub(super) type Merges = Vec<(Leaves, Leaves)>;

/// The rows that the joins of `merges` produce below the last, or `None`
/// when a merge names a set not built before it.
pub(super) fn cost(
    graph: &JoinGraph,
    leaves: &[Estimate],
    merges: &[(Leaves, Leaves)],
) -> Option<f64> {
    let mut known: HashMap<Leaves, Estimate> = leaves
        .iter()
        .enumerate()
        .map(|(index, estimate)| (1 << index, estimate.clone()))
        .collect();
    let mut total = 0.0;
    for (step, (left, right)) in merges.iter().enumerate() {
        let joined = join(graph, known.get(left)?, *left, known.get(right)?, *right);
        if step + 1 < merges.len() {
            total += joined.rows;
        }
        known.insert(left | right, joined);
    }
    Some(total)
}

/// The greedy order, or `None` when some sets are joined by no equality
/// (the query has a cross join, which keeps its written place).
pub(super) fn greedy(graph: &JoinGraph, leaves: &[Estimate]) -> Option<Merges> {
    let mut sets: Vec<(Leaves, Estimate)> = leaves
        .iter()
        .enumerate()
        .map(|(index, estimate)| (1 << index, estimate.clone()))
        .collect();
    let mut merges = Vec::new();
    while sets.len() > 1 {
        let mut best: Option<(usize, usize, Estimate)> = None;
        for i in 0..sets.len() {
            for j in i + 1..sets.len() {
                let ((a, a_estimate), (b, b_estimate)) = (&sets[i], &sets[j]);
                if keys(graph, *a, *b).is_empty() {
                    continue;
                }
                let joined = join(graph, a_estimate, *a, b_estimate, *b);
                if best
                    .as_ref()
                    .is_none_or(|(_, _, so_far)| joined.rows < so_far.rows)
                {
                    best = Some((i, j, joined));
                }
            }
        }
        let (i, j, joined) = best?;
        let (b, b_estimate) = sets.swap_remove(j);
        let (a, a_estimate) = sets.swap_remove(i);
        let smaller_first = if a_estimate.rows <= b_estimate.rows {
            (a, b)
        } else {
            (b, a)
        };
        merges.push(smaller_first);
        sets.push((a | b, joined));
    }
    Some(merges)
}

fn join(
    graph: &JoinGraph,
    a: &Estimate,
    a_leaves: Leaves,
    b: &Estimate,
    b_leaves: Leaves,
) -> Estimate {
    a.join(b, &keys(graph, a_leaves, b_leaves))
}

/// The equalities between `left` and `right`, each as (a key of `left`,
/// a key of `right`).
fn keys(graph: &JoinGraph, left: Leaves, right: Leaves) -> Vec<(&Expr, &Expr)> {
    let within = |leaves: Leaves, leaf: usize| leaves & (1 << leaf) != 0;
    graph
        .edges
        .iter()
        .filter_map(|edge| {
            if within(left, edge.left_leaf) && within(right, edge.right_leaf) {
                Some((&edge.left, &edge.right))
            } else if within(left, edge.right_leaf) && within(right, edge.left_leaf) {
                Some((&edge.right, &edge.left))
            } else {
                None
            }
        })
        .collect()
}

/// The plan that joins `graph`'s leaves in `merges`' order, with the
/// written tree's columns in its order.
pub(super) fn build(graph: &JoinGraph, merges: &[(Leaves, Leaves)]) -> Result<LogicalPlan> {
    let mut built: HashMap<Leaves, LogicalPlan> = HashMap::new();
    for (index, leaf) in graph.leaves.iter().enumerate() {
        let own = conditions_where(graph, |leaves| single(leaves) == Some(index));
        built.insert(1 << index, filtered(leaf.clone(), own)?);
    }
    for (left, right) in merges {
        let missing = || {
            datafusion::error::DataFusionError::Internal("join order names an unbuilt set".into())
        };
        let left_plan = built.remove(left).ok_or_else(missing)?;
        let right_plan = built.remove(right).ok_or_else(missing)?;
        let both = left | right;
        let on = keys(graph, *left, *right)
            .into_iter()
            .map(|(l, r)| (l.clone(), r.clone()))
            .collect();
        let filter = conjunction(conditions_where(graph, |leaves| {
            leaves.count_ones() > 1
                && leaves & !both == 0
                && leaves & !left != 0
                && leaves & !right != 0
        }));
        let join = Join::try_new(
            Arc::new(left_plan),
            Arc::new(right_plan),
            on,
            filter,
            JoinType::Inner,
            JoinConstraint::On,
            NullEquality::NullEqualsNothing,
            false,
        )?;
        built.insert(both, LogicalPlan::Join(join));
    }
    let joined = built
        .into_values()
        .next()
        .filter(|_| !merges.is_empty())
        .ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("join order joined nothing".into())
        })?;
    let constant = conditions_where(graph, |leaves| leaves == 0);
    let joined = filtered(joined, constant)?;
    let columns = graph
        .schema
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        columns,
        Arc::new(joined),
    )?))
}

fn conditions_where(graph: &JoinGraph, wanted: impl Fn(Leaves) -> bool) -> Vec<Expr> {
    graph
        .conditions
        .iter()
        .filter(|condition| wanted(condition.leaves))
        .map(|condition| condition.expr.clone())
        .collect()
}

fn filtered(plan: LogicalPlan, conditions: Vec<Expr>) -> Result<LogicalPlan> {
    match conjunction(conditions) {
        Some(predicate) => Ok(LogicalPlan::Filter(Filter::try_new(
            predicate,
            Arc::new(plan),
        )?)),
        None => Ok(plan),
    }
}
