//! A reader's equivalence properties on the wire: its orderings, the
//! columns known equal, the expressions known constant and the columns
//! known unique (a unique prefix satisfies any ordering that extends it).
//!
//! The operators above a reader are rebuilt on the worker from their
//! children, and some (windows, sorted aggregates) fix their execution mode
//! from what their input promises. A reader that arrived with less than it
//! promised at planning would break them, so all of it travels, not only
//! the normalized output ordering.

use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::{Constraint, Constraints, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::{
    AcrossPartitions, ConstExpr, EquivalenceProperties, LexOrdering, PhysicalExpr,
};
use datafusion_proto::physical_plan::from_proto::{
    parse_physical_expr_with_converter, parse_physical_sort_exprs,
};
use datafusion_proto::physical_plan::to_proto::serialize_physical_sort_exprs;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct EquivalenceNode {
    #[prost(message, repeated, tag = "1")]
    orderings: Vec<OrderingNode>,
    #[prost(message, repeated, tag = "2")]
    classes: Vec<ClassNode>,
    #[prost(message, repeated, tag = "3")]
    constants: Vec<ConstantNode>,
    #[prost(message, repeated, tag = "4")]
    constraints: Vec<ConstraintNode>,
}

/// Columns whose values together identify a row. Our own message:
/// datafusion-proto's decoder of constraints panics on bad input.
#[derive(Clone, PartialEq, prost::Message)]
struct ConstraintNode {
    /// A primary key (no NULLs) rather than a unique key.
    #[prost(bool, tag = "1")]
    primary: bool,
    #[prost(uint32, repeated, tag = "2")]
    columns: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OrderingNode {
    #[prost(message, repeated, tag = "1")]
    sort: Vec<protobuf::PhysicalSortExprNode>,
}

/// Expressions known to be equal in every row.
#[derive(Clone, PartialEq, prost::Message)]
struct ClassNode {
    #[prost(message, repeated, tag = "1")]
    exprs: Vec<protobuf::PhysicalExprNode>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ConstantNode {
    #[prost(message, optional, tag = "1")]
    expr: Option<protobuf::PhysicalExprNode>,
    /// The same value in every partition (otherwise constant within each).
    #[prost(bool, tag = "2")]
    uniform: bool,
    #[prost(message, optional, tag = "3")]
    value: Option<protobuf::ScalarValue>,
}

pub(super) fn encode_equivalence(
    properties: &EquivalenceProperties,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> DfResult<EquivalenceNode> {
    // Through the converter's entry point, not `serialize_physical_expr_*`,
    // which skips it for the top expression: a scalar subquery's value is
    // written as a literal only there.
    let expr = |expr: &Arc<dyn PhysicalExpr>| converter.physical_expr_to_proto(expr, codec);
    let orderings = properties
        .oeq_class()
        .iter()
        .map(|ordering| {
            Ok(OrderingNode {
                sort: serialize_physical_sort_exprs(ordering.iter().cloned(), codec, converter)?,
            })
        })
        .collect::<DfResult<_>>()?;
    let classes = properties
        .eq_group()
        .iter()
        .filter(|class| class.len() > 1)
        .map(|class| {
            Ok(ClassNode {
                exprs: class.iter().map(expr).collect::<DfResult<_>>()?,
            })
        })
        .collect::<DfResult<_>>()?;
    let constants = properties
        .constants()
        .iter()
        .map(|constant| {
            let (uniform, value) = match &constant.across_partitions {
                AcrossPartitions::Heterogeneous => (false, None),
                AcrossPartitions::Uniform(value) => (
                    true,
                    value
                        .as_ref()
                        .map(protobuf::ScalarValue::try_from)
                        .transpose()
                        .map_err(|error| DataFusionError::Internal(error.to_string()))?,
                ),
            };
            Ok(ConstantNode {
                expr: Some(expr(&constant.expr)?),
                uniform,
                value,
            })
        })
        .collect::<DfResult<_>>()?;
    let constraints = properties
        .constraints()
        .iter()
        .map(|constraint| {
            let (primary, columns) = match constraint {
                Constraint::PrimaryKey(columns) => (true, columns),
                Constraint::Unique(columns) => (false, columns),
            };
            let columns = columns.iter().map(|&column| column as u32).collect();
            ConstraintNode { primary, columns }
        })
        .collect();
    Ok(EquivalenceNode {
        orderings,
        classes,
        constants,
        constraints,
    })
}

/// The constraints of `node`, each naming only columns of `schema`.
fn decode_constraints(node: &EquivalenceNode, schema: &Schema) -> DfResult<Constraints> {
    let width = schema.fields().len();
    let constraints = node
        .constraints
        .iter()
        .map(|constraint| {
            let columns: Vec<usize> = constraint.columns.iter().map(|&c| c as usize).collect();
            // An empty key is valid: at most one row (an aggregate
            // without GROUP BY).
            if columns.iter().any(|&column| column >= width) {
                return Err(DataFusionError::Internal(format!(
                    "a key on columns {columns:?} of a {width}-column schema"
                )));
            }
            Ok(if constraint.primary {
                Constraint::PrimaryKey(columns)
            } else {
                Constraint::Unique(columns)
            })
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(Constraints::new_unverified(constraints))
}

pub(super) fn decode_equivalence(
    node: &EquivalenceNode,
    schema: &Arc<Schema>,
    ctx: &PhysicalPlanDecodeContext<'_>,
    converter: &dyn PhysicalProtoConverterExtension,
) -> DfResult<EquivalenceProperties> {
    let expr = |node: &protobuf::PhysicalExprNode| {
        parse_physical_expr_with_converter(node, schema, ctx, converter)
    };
    let orderings = node
        .orderings
        .iter()
        .map(|ordering| parse_physical_sort_exprs(&ordering.sort, ctx, schema, converter))
        .collect::<DfResult<Vec<_>>>()?
        .into_iter()
        .filter_map(LexOrdering::new);
    let mut properties = EquivalenceProperties::new_with_orderings(Arc::clone(schema), orderings)
        .with_constraints(decode_constraints(node, schema)?);
    for class in &node.classes {
        let exprs = class.exprs.iter().map(expr).collect::<DfResult<Vec<_>>>()?;
        if let Some((first, rest)) = exprs.split_first() {
            for other in rest {
                properties.add_equal_conditions(Arc::clone(first), Arc::clone(other))?;
            }
        }
    }
    let constants = node
        .constants
        .iter()
        .map(|constant| {
            let proto = constant.expr.as_ref().ok_or_else(|| {
                DataFusionError::Internal("constant without an expression".into())
            })?;
            let across = if constant.uniform {
                let value = constant
                    .value
                    .as_ref()
                    .map(ScalarValue::try_from)
                    .transpose()
                    .map_err(|error| DataFusionError::Internal(error.to_string()))?;
                AcrossPartitions::Uniform(value)
            } else {
                AcrossPartitions::Heterogeneous
            };
            Ok(ConstExpr::new(expr(proto)?, across))
        })
        .collect::<DfResult<Vec<_>>>()?;
    properties.add_constants(constants)?;
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};

    use super::*;

    #[test]
    fn keys_travel_and_a_key_outside_the_schema_is_refused() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Utf8, true),
        ]);
        let key = |primary, columns: Vec<u32>| EquivalenceNode {
            constraints: vec![ConstraintNode { primary, columns }],
            ..Default::default()
        };
        let decoded = decode_constraints(&key(true, vec![0, 1]), &schema).expect("a valid key");
        assert_eq!(&*decoded, &[Constraint::PrimaryKey(vec![0, 1])]);
        let single_row = decode_constraints(&key(false, Vec::new()), &schema).expect("no columns");
        assert_eq!(&*single_row, &[Constraint::Unique(Vec::new())]);
        let error = decode_constraints(&key(false, vec![1, 2]), &schema).expect_err("a bad key");
        assert!(
            error.to_string().contains("[1, 2] of a 2-column schema"),
            "{error}"
        );
    }
}
