//! Statements with parameters (prepared statements): what one returns and
//! takes, planned without running, and its plan with values bound.
//!
//! Clients write parameters as `$1, $2, …` (DataFusion's style) or as `?`
//! (JDBC's and ADBC's DB-API style); each `?` becomes the next `$n` in the
//! order the statement is written.

use std::ops::ControlFlow;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Expr, Value};

use crate::engine::{parse_statements, reads_only_the_catalog};
use crate::error::{EngineError, Result};
use crate::Engine;

/// What a statement returns and the parameters it takes, in order.
#[derive(Debug, Clone)]
pub struct StatementShape {
    /// The rows' schema; empty for DDL, which returns none.
    pub schema: SchemaRef,
    /// `$1, $2, …`: each parameter's type where the statement fixes it
    /// (`Null` where it does not).
    pub parameters: SchemaRef,
    /// DDL (and `SET`): it changes the catalog and returns nothing.
    pub is_ddl: bool,
}

impl Engine {
    /// `sql`'s shape, planned without running anything (DDL included).
    pub async fn describe_statement(&self, sql: &str) -> Result<StatementShape> {
        let plan = self.logical_plan(sql, 1).await?;
        let is_ddl = matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_));
        let schema = if is_ddl {
            SchemaRef::new(Schema::empty())
        } else {
            SchemaRef::new(plan.schema().as_arrow().clone())
        };
        let mut types = plan.get_parameter_types()?.into_iter().collect::<Vec<_>>();
        // `$10` after `$9`: by number, not by text.
        types.sort_by_key(|(name, _)| position(name));
        let fields = types
            .into_iter()
            .map(|(name, kind)| Field::new(name, kind.unwrap_or(DataType::Null), true))
            .collect::<Vec<_>>();
        Ok(StatementShape {
            schema,
            parameters: SchemaRef::new(Schema::new(fields)),
            is_ddl,
        })
    }

    /// [`Engine::plan_statement`] with `values` bound to the statement's
    /// parameters first.
    pub async fn plan_statement_with(
        &self,
        sql: &str,
        partitions: usize,
        values: Option<ParamValues>,
    ) -> Result<Option<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>> {
        let mut plan = self.logical_plan(sql, partitions).await?;
        if let Some(values) = values {
            plan = plan.with_param_values(values)?;
        }
        self.physical_of(plan, partitions).await
    }

    /// The one statement in `sql` as a logical plan, `?` parameters
    /// numbered, its locations checked against the path roots.
    pub(crate) async fn logical_plan(&self, sql: &str, partitions: usize) -> Result<LogicalPlan> {
        let mut statements = parse_statements(sql)?;
        if statements.len() != 1 {
            return Err(EngineError::Plan {
                message: format!("expected one statement, found {}", statements.len()),
            });
        }
        let mut statement = statements.remove(0);
        number_question_marks(&mut statement);
        let mut state = self.session().state();
        state.config_mut().options_mut().execution.target_partitions = partitions.max(1);
        let plan = state.statement_to_plan(statement).await?;
        self.path_roots().check_logical(&plan)?;
        Ok(plan)
    }

    /// Runs DDL (`None`), answers catalog queries here, and plans the rest.
    pub(crate) async fn physical_of(
        &self,
        plan: LogicalPlan,
        partitions: usize,
    ) -> Result<Option<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>> {
        let mut state = self.session().state();
        state.config_mut().options_mut().execution.target_partitions = partitions.max(1);
        match plan {
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => {
                self.session().execute_logical_plan(plan).await?;
                Ok(None)
            }
            // The catalog is this session's: answered here, its rows
            // travel as an in-memory scan (on a cluster, to a worker).
            plan if reads_only_the_catalog(&plan) => {
                let frame = datafusion::dataframe::DataFrame::new(state, plan);
                let schema = std::sync::Arc::clone(frame.schema().inner());
                let rows = frame.collect().await?;
                let plan = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
                    &[rows],
                    schema,
                    None,
                )?;
                Ok(Some(plan))
            }
            plan => {
                let frame = datafusion::dataframe::DataFrame::new(state.clone(), plan);
                let plan = frame.create_physical_plan().await?;
                let plan = crate::sink::fix_sink_file_names(plan, &state).await?;
                self.path_roots().check_plan(&plan)?;
                Ok(Some(plan))
            }
        }
    }
}

/// `$n`'s n (names that are not numbers last).
fn position(name: &str) -> usize {
    name.trim_start_matches('$').parse().unwrap_or(usize::MAX)
}

/// Rewrites each `?` placeholder into the next `$n`, in the order written.
fn number_question_marks(statement: &mut Statement) {
    let Statement::Statement(inner) = statement else {
        return;
    };
    let mut next = 0usize;
    let _ = visit_expressions_mut(inner.as_mut(), |expr| {
        if let Expr::Value(value) = expr {
            if matches!(&value.value, Value::Placeholder(text) if text == "?") {
                next += 1;
                value.value = Value::Placeholder(format!("${next}"));
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(sql: &str) -> String {
        let mut statements = parse_statements(sql).expect("parses");
        number_question_marks(&mut statements[0]);
        statements[0].to_string()
    }

    #[test]
    fn question_marks_become_numbered_parameters_in_order() {
        let text = numbered("SELECT a FROM t WHERE a > ? AND b = ? OR c IN (SELECT ? )");
        assert!(text.contains("a > $1"), "{text}");
        assert!(text.contains("b = $2"), "{text}");
        assert!(text.contains("SELECT $3"), "{text}");
    }

    #[tokio::test]
    async fn a_statements_shape_lists_its_parameters_by_number() {
        let engine = Engine::new(crate::EngineConfig::default()).expect("engine");
        engine
            .sql("CREATE TABLE t (a INT, b VARCHAR) AS VALUES (1, 'x')")
            .await
            .expect("table");
        let shape = engine
            .describe_statement("SELECT b FROM t WHERE a = ? AND b <> ?")
            .await
            .expect("described");
        assert!(!shape.is_ddl);
        assert_eq!(shape.schema.fields().len(), 1);
        let names: Vec<_> = shape
            .parameters
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["$1", "$2"]);
        assert_eq!(shape.parameters.field(0).data_type(), &DataType::Int32);
        // The session maps SQL strings to Utf8View.
        assert!(matches!(
            shape.parameters.field(1).data_type(),
            DataType::Utf8 | DataType::Utf8View
        ));
        let ddl = engine
            .describe_statement("CREATE TABLE u (x INT)")
            .await
            .expect("described");
        assert!(ddl.is_ddl);
        // Describing DDL does not run it.
        assert!(engine.session().table_exist("u").expect("lookup") == false);
    }
}
