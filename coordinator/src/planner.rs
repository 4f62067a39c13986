//! Planning jobs against the coordinator's catalog.

use std::path::Path;
use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use tone_engine::shuffle::ShuffleWriterExec;
use tone_engine::{Engine, EngineConfig, EngineError, JobId, StageDag};
use tone_proto::v1::SubmitJobRequest;

/// What a submitted statement turned into.
pub enum Planned {
    /// DDL: the catalog changed; nothing to run.
    CatalogChange,
    /// A job to schedule.
    Job {
        dag: StageDag,
        schema: arrow::datatypes::SchemaRef,
    },
}

/// Holds the catalog (tables stay registered across jobs) and plans SQL.
pub struct Planner {
    engine: Engine,
}

impl Planner {
    pub fn new() -> Result<Self, EngineError> {
        Ok(Self {
            engine: Engine::new(EngineConfig::default())?,
        })
    }

    /// Registers the request's tables, then plans its statement into a
    /// stage DAG whose every stage, the final one included, ends in a
    /// shuffle writer (the final stage's output is the job's result).
    pub async fn plan(
        &self,
        job_id: &JobId,
        request: &SubmitJobRequest,
        partitions: usize,
    ) -> Result<Planned, EngineError> {
        for table in &request.tables {
            self.engine
                .register_table(&table.name, Path::new(&table.path))
                .await?;
        }
        let Some(plan) = self.engine.plan_statement(&request.sql, partitions).await? else {
            return Ok(Planned::CatalogChange);
        };
        // Uncorrelated scalar subqueries and recursive CTEs run here, before
        // the job is cut into stages.
        let plan = self.engine.prepare_plan(plan).await?;
        let schema = plan.schema();
        let mut dag = StageDag::split(job_id.clone(), plan)?;
        let final_stage = dag.stages.last_mut().ok_or_else(|| EngineError::Internal {
            message: "empty stage DAG".into(),
        })?;
        let writer = ShuffleWriterExec::try_new(
            job_id.clone(),
            final_stage.id,
            Arc::clone(&final_stage.plan),
            Partitioning::UnknownPartitioning(1),
        )?;
        final_stage.plan = Arc::new(writer) as Arc<dyn ExecutionPlan>;
        Ok(Planned::Job { dag, schema })
    }
}
