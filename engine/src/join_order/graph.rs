//! A tree of inner joins flattened into a join graph: the inputs it joins
//! (leaves), the equalities between two leaves (edges), and every other
//! condition with the leaves it reads.

use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Column, DFSchemaRef, NullEquality};
use datafusion::logical_expr::utils::split_conjunction_owned;
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan};

/// A set of leaves, one bit per leaf index.
pub(super) type Leaves = u64;

/// The most leaves one graph may have: a set of them is a [`Leaves`].
pub(super) const MAX_LEAVES: usize = 64;

/// `left = right`, where each side reads one leaf.
#[derive(Debug, Clone)]
pub(super) struct Edge {
    pub left: Expr,
    pub right: Expr,
    pub left_leaf: usize,
    pub right_leaf: usize,
}

/// A condition that is not an edge, and the leaves it reads.
#[derive(Debug, Clone)]
pub(super) struct Condition {
    pub expr: Expr,
    pub leaves: Leaves,
}

#[derive(Debug)]
pub(super) struct JoinGraph {
    pub leaves: Vec<LogicalPlan>,
    pub edges: Vec<Edge>,
    pub conditions: Vec<Condition>,
    /// The joins as the query wrote them, bottom up: the leaves each one
    /// joined on its left and on its right.
    pub written: Vec<(Leaves, Leaves)>,
    /// What the tree produced, in its column order.
    pub schema: DFSchemaRef,
}

/// Whether `plan` is the top of a tree of at least two inner joins, seen
/// through the filters and column selections between them.
pub(super) fn is_join_tree(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Join(join) if is_plain_inner(join) => {
            reaches_join(&join.left) || reaches_join(&join.right)
        }
        LogicalPlan::Filter(filter) if movable(&filter.predicate) => is_join_tree(&filter.input),
        LogicalPlan::Projection(projection) if only_columns(&projection.expr) => {
            is_join_tree(&projection.input)
        }
        _ => false,
    }
}

/// Flattens the join tree at `plan`; `None` when a condition reads a
/// column no leaf has, or the tree has more than [`MAX_LEAVES`] leaves.
pub(super) fn flatten(plan: &LogicalPlan) -> Option<JoinGraph> {
    let mut flattening = Flattening::default();
    flattening.visit(plan);
    if flattening.leaves.len() > MAX_LEAVES {
        return None;
    }
    let leaves = flattening.leaves;
    let mut edges = Vec::new();
    let mut conditions = Vec::new();
    for (left, right) in flattening.equalities {
        let (left_leaves, right_leaves) = (leaves_of(&left, &leaves)?, leaves_of(&right, &leaves)?);
        match (single(left_leaves), single(right_leaves)) {
            (Some(left_leaf), Some(right_leaf)) if left_leaf != right_leaf => edges.push(Edge {
                left,
                right,
                left_leaf,
                right_leaf,
            }),
            _ => conditions.push(Condition {
                leaves: left_leaves | right_leaves,
                expr: left.eq(right),
            }),
        }
    }
    for expr in flattening.conditions {
        conditions.push(Condition {
            leaves: leaves_of(&expr, &leaves)?,
            expr,
        });
    }
    Some(JoinGraph {
        leaves,
        edges,
        conditions,
        written: flattening.written,
        schema: plan.schema().clone(),
    })
}

#[derive(Default)]
struct Flattening {
    leaves: Vec<LogicalPlan>,
    equalities: Vec<(Expr, Expr)>,
    conditions: Vec<Expr>,
    written: Vec<(Leaves, Leaves)>,
}

impl Flattening {
    /// Adds the leaves under `plan`; returns them.
    fn visit(&mut self, plan: &LogicalPlan) -> Leaves {
        match plan {
            LogicalPlan::Join(join) if is_plain_inner(join) => {
                let left = self.visit(&join.left);
                let right = self.visit(&join.right);
                self.written.push((left, right));
                self.equalities.extend(join.on.iter().cloned());
                if let Some(filter) = &join.filter {
                    self.conditions
                        .extend(split_conjunction_owned(filter.clone()));
                }
                left | right
            }
            LogicalPlan::Filter(filter)
                if movable(&filter.predicate) && reaches_join(&filter.input) =>
            {
                let leaves = self.visit(&filter.input);
                self.conditions
                    .extend(split_conjunction_owned(filter.predicate.clone()));
                leaves
            }
            LogicalPlan::Projection(projection)
                if only_columns(&projection.expr) && reaches_join(&projection.input) =>
            {
                self.visit(&projection.input)
            }
            leaf => {
                let index = self.leaves.len();
                self.leaves.push(leaf.clone());
                // Past the limit the graph is dropped, so the bit is moot.
                1u64.checked_shl(index as u32).unwrap_or(0)
            }
        }
    }
}

/// An inner join that drops rows whose keys are NULL, as `=` does.
fn is_plain_inner(join: &Join) -> bool {
    join.join_type == JoinType::Inner
        && join.null_equality == NullEquality::NullEqualsNothing
        && !join.null_aware
}

/// Whether a join of the tree is at or below `plan`.
fn reaches_join(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Join(join) => is_plain_inner(join),
        LogicalPlan::Filter(filter) => movable(&filter.predicate) && reaches_join(&filter.input),
        LogicalPlan::Projection(projection) => {
            only_columns(&projection.expr) && reaches_join(&projection.input)
        }
        _ => false,
    }
}

/// A condition that gives the same rows wherever it is evaluated: no
/// randomness, no subquery.
fn movable(predicate: &Expr) -> bool {
    !predicate.is_volatile()
        && !predicate
            .exists(|expr| {
                Ok(matches!(
                    expr,
                    Expr::ScalarSubquery(_)
                        | Expr::Exists(_)
                        | Expr::InSubquery(_)
                        | Expr::OuterReferenceColumn(..)
                ))
            })
            .unwrap_or(true)
}

fn only_columns(exprs: &[Expr]) -> bool {
    exprs.iter().all(|expr| matches!(expr, Expr::Column(_)))
}

/// The leaves whose columns `expr` reads; `None` if one is in no leaf.
fn leaves_of(expr: &Expr, leaves: &[LogicalPlan]) -> Option<Leaves> {
    let mut found: Leaves = 0;
    for column in expr.column_refs() {
        found |= 1 << leaf_of(column, leaves)?;
    }
    Some(found)
}

fn leaf_of(column: &Column, leaves: &[LogicalPlan]) -> Option<usize> {
    leaves
        .iter()
        .position(|leaf| leaf.schema().has_column(column))
}

/// The one leaf in `leaves`, if there is exactly one.
pub(super) fn single(leaves: Leaves) -> Option<usize> {
    (leaves.count_ones() == 1).then(|| leaves.trailing_zeros() as usize)
}
