//! A correction of what DataFusion 55 claims after a grouping-set
//! aggregate (ROLLUP, CUBE, GROUPING SETS), applied to every reader that
//! stands for such an aggregate's output.
//!
//! A group key that its input holds constant (`WHERE k = 1`) stays
//! constant in such an aggregate's output, though the grouping sets make
//! it NULL in some rows (the family of apache/datafusion#24421). DataFusion
//! planned the final aggregate before it learnt that, and streams it over
//! unsorted input. A final aggregate that tone rebuilds over a reader
//! claiming the constant would instead take its key as sorted, emit groups
//! early and give the grand total twice. The reader therefore forgets
//! what the grouping sets make untrue.

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::{ExecutionPlan, PlanProperties};

/// `planned` (what holds after an exchange over `input`) without the
/// equalities, constants and orderings on group keys that `input`'s
/// grouping sets make NULL in some rows.
pub(super) fn without_nulled_group_keys(
    input: &Arc<dyn ExecutionPlan>,
    planned: &PlanProperties,
) -> Result<PlanProperties> {
    let any = input.as_ref() as &dyn std::any::Any;
    let Some(aggregate) = any.downcast_ref::<AggregateExec>() else {
        return Ok(planned.clone());
    };
    let group_by = aggregate.group_expr();
    if !group_by.has_grouping_set() {
        return Ok(planned.clone());
    }
    // The group keys come first in an aggregate's output.
    let nulled: Vec<usize> = (0..group_by.expr().len())
        .filter(|&key| group_by.groups().iter().any(|set| set[key]))
        .collect();
    if nulled.is_empty() {
        return Ok(planned.clone());
    }
    let is_nulled = |expr: &Arc<dyn PhysicalExpr>| {
        let any = expr.as_ref() as &dyn std::any::Any;
        any.downcast_ref::<Column>()
            .is_some_and(|column| nulled.contains(&column.index()))
    };
    let old = &planned.eq_properties;
    let orderings = old
        .oeq_class()
        .iter()
        .filter(|ordering| !ordering.iter().any(|sort| is_nulled(&sort.expr)))
        .cloned();
    let mut properties = EquivalenceProperties::new_with_orderings(old.schema().clone(), orderings)
        .with_constraints(old.constraints().clone());
    let tainted = |expr: &Arc<dyn PhysicalExpr>| {
        old.eq_group()
            .iter()
            .any(|class| class.contains(expr) && class.iter().any(is_nulled))
    };
    for class in old.eq_group().iter() {
        if class.iter().any(is_nulled) {
            continue;
        }
        let members: Vec<&Arc<dyn PhysicalExpr>> = class.iter().collect();
        if let Some((first, rest)) = members.split_first() {
            for other in rest {
                properties.add_equal_conditions(Arc::clone(first), Arc::clone(other))?;
            }
        }
    }
    let constants = old.constants().into_iter();
    properties.add_constants(constants.filter(|constant| !tainted(&constant.expr)))?;
    Ok(planned.clone().with_eq_properties(properties))
}
