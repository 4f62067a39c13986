//! A plan tree as the UI and the event log show it: its operators in
//! pre-order with their nesting, and what each measured while it ran.
//!
//! Both walks visit the same nodes in the same order, so the n-th figure
//! of a task belongs to the n-th line of its stage's outline.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::physical_plan::{displayable, ExecutionPlan, Partitioning};

/// One operator of a plan, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlineLine {
    /// 0 for the root.
    pub depth: u32,
    pub name: String,
    /// The operator's one-line description (`displayable(..).one_line()`).
    pub detail: String,
}

/// One operator of a plan that ran, with DataFusion's metrics summed over
/// its partitions: counts and bytes, and times in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorFigures {
    pub depth: u32,
    pub name: String,
    pub values: BTreeMap<String, u64>,
}

/// Metrics that are points in time, not amounts: summing them means
/// nothing.
const TIMESTAMPS: [&str; 2] = ["start_timestamp", "end_timestamp"];

pub fn outline(plan: &Arc<dyn ExecutionPlan>) -> Vec<OutlineLine> {
    let mut lines = Vec::new();
    walk(plan, 0, &mut |node, depth| {
        lines.push(OutlineLine {
            depth,
            name: node.name().to_string(),
            detail: displayable(node.as_ref())
                .one_line()
                .to_string()
                .trim_end()
                .to_string(),
        })
    });
    lines
}

/// What every operator of a plan that ran measured.
pub fn operator_figures(plan: &Arc<dyn ExecutionPlan>) -> Vec<OperatorFigures> {
    let mut figures = Vec::new();
    walk(plan, 0, &mut |node, depth| {
        let mut values = BTreeMap::new();
        if let Some(metrics) = node.metrics() {
            for metric in metrics.aggregate_by_name().iter() {
                let name = metric.value().name();
                if TIMESTAMPS.contains(&name) {
                    continue;
                }
                *values.entry(name.to_string()).or_insert(0) += metric.value().as_usize() as u64;
            }
        }
        figures.push(OperatorFigures {
            depth,
            name: node.name().to_string(),
            values,
        })
    });
    figures
}

/// How a stage's output is exchanged: `hash`, `range`, `round_robin` or
/// `single`.
pub fn exchange_kind(partitioning: &Partitioning) -> &'static str {
    match partitioning {
        Partitioning::Hash(..) => "hash",
        Partitioning::Range(..) => "range",
        Partitioning::RoundRobinBatch(_) => "round_robin",
        Partitioning::UnknownPartitioning(_) => "single",
    }
}

fn walk(
    plan: &Arc<dyn ExecutionPlan>,
    depth: u32,
    visit: &mut dyn FnMut(&Arc<dyn ExecutionPlan>, u32),
) {
    visit(plan, depth);
    for child in plan.children() {
        walk(child, depth + 1, visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn figures_line_up_with_the_outline_and_count_rows() {
        let context = SessionContext::new();
        let frame = context
            .sql("SELECT a % 2 AS k, count(*) FROM (VALUES (1), (2), (3)) AS t(a) GROUP BY a % 2")
            .await
            .expect("plans");
        let plan = frame.create_physical_plan().await.expect("physical plan");
        let lines = outline(&plan);
        assert!(lines.len() >= 2, "{lines:?}");
        assert_eq!(lines[0].depth, 0);
        datafusion::physical_plan::collect(Arc::clone(&plan), context.task_ctx())
            .await
            .expect("runs");
        let figures = operator_figures(&plan);
        let names: Vec<_> = figures.iter().map(|f| (f.depth, f.name.clone())).collect();
        let outlined: Vec<_> = lines.iter().map(|l| (l.depth, l.name.clone())).collect();
        assert_eq!(names, outlined);
        // The root emitted the two groups.
        assert_eq!(
            figures[0].values.get("output_rows"),
            Some(&2),
            "{figures:?}"
        );
        assert!(figures
            .iter()
            .all(|f| !f.values.contains_key("start_timestamp")));
    }
}
