//! The session's query planner: DataFusion's, with tone's adaptive
//! decisions around it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

use crate::join_order::{reorder, show_in_explain};

/// Reorders joins in the logical plan (`join_order`) when its setting
/// says so, then plans it with DataFusion.
#[derive(Debug, Default)]
pub struct AdaptivePlanner;

impl AdaptivePlanner {
    /// `builder` planning through this planner.
    pub fn install(builder: SessionStateBuilder) -> SessionStateBuilder {
        builder.with_query_planner(Arc::new(Self))
    }
}

#[async_trait]
impl QueryPlanner for AdaptivePlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let planner = DefaultPhysicalPlanner::default();
        let Some(state) = session.as_any().downcast_ref::<SessionState>() else {
            return planner.create_physical_plan(logical_plan, session).await;
        };
        let options = super::options(state);
        let reordered = match logical_plan {
            _ if !options.join_reorder => None,
            LogicalPlan::Explain(explain) => {
                reorder(explain.plan.as_ref(), state).await?.map(|inner| {
                    let mut explain = explain.clone();
                    show_in_explain(&mut explain.stringified_plans, &inner);
                    explain.plan = Arc::new(inner);
                    LogicalPlan::Explain(explain)
                })
            }
            plan => reorder(plan, state).await?,
        };
        planner
            .create_physical_plan(reordered.as_ref().unwrap_or(logical_plan), session)
            .await
    }
}
