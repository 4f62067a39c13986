//! The check every stage plan passes after splitting: each operator gets
//! the ordering and distribution it requires from its children.
//!
//! Splitting replaces exchanges with readers and writers; if a reader
//! promised less than the exchange did (an ordering, a constant, an
//! equivalence), an operator above it would run against a wrong premise and
//! fail mid-job or, worse, answer wrongly. DataFusion's own sanity checker
//! finds that before any task runs.

use std::sync::Arc;

use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{EngineError, Result};
use crate::ids::StageId;

/// Fails, naming the stage and the operator, when an operator in `plan`
/// does not get what it requires from its children.
pub fn check_stage_plan(stage: StageId, plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    SanityCheckPlan::new()
        .optimize(Arc::clone(plan), &ConfigOptions::default())
        .map(|_| ())
        .map_err(|error| {
            EngineError::internal(format!(
                "stage {stage} was planned wrong, before it ran: {}",
                error.strip_backtrace()
            ))
        })
}
