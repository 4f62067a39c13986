//! Planning jobs against the coordinator's catalog.

use std::collections::HashMap;
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
    /// Paths of the tables jobs registered, by name. Held while a job
    /// registers tables and plans, so concurrent submissions see one
    /// consistent catalog.
    registered: tokio::sync::Mutex<HashMap<String, String>>,
}

impl Planner {
    pub fn new() -> Result<Self, EngineError> {
        let engine = Engine::new(EngineConfig::default())?;
        {
            // Operators that coordinate the partitions of one plan instance
            // cannot run as independent tasks:
            // A hash join's (and aggregate's) dynamic filter waits for every
            // partition of its plan instance to build; on a cluster each task
            // has its own instance, so the barrier would never open.
            let state = engine.session().state_ref();
            let mut state = state.write();
            let optimizer = &mut state.config_mut().options_mut().optimizer;
            optimizer.enable_join_dynamic_filter_pushdown = false;
            optimizer.enable_aggregate_dynamic_filter_pushdown = false;
            // A broadcast (CollectLeft) join that keeps unmatched build rows
            // (left/full/semi/anti) emits them from whichever of its probe
            // partitions finishes last, counting them in its plan instance.
            // Tasks run separate instances, so joins are planned partitioned.
            optimizer.hash_join_single_partition_threshold = 0;
            optimizer.hash_join_single_partition_threshold_rows = 0;
        }
        Ok(Self {
            engine,
            registered: tokio::sync::Mutex::new(HashMap::new()),
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
        let mut registered = self.registered.lock().await;
        for table in &request.tables {
            if registered.get(&table.name) == Some(&table.path) {
                continue;
            }
            // A job's tables replace same-named ones.
            self.engine
                .session()
                .deregister_table(table.name.as_str())?;
            self.engine
                .register_table(&table.name, Path::new(&table.path))
                .await?;
            registered.insert(table.name.clone(), table.path.clone());
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
