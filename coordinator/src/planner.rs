//! Planning jobs against the coordinator's catalog.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::{
    replace_children_if_necessary, ExecutionPlan, ExecutionPlanProperties, Partitioning,
};
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
        let Some(mut plan) = self.engine.plan_statement(&request.sql, partitions).await? else {
            return Ok(Planned::CatalogChange);
        };
        if coordinating_join(&plan).is_some() {
            // Plan every join partitioned instead; see `coordinating_join`.
            plan = self
                .engine
                .plan_statement_with(&request.sql, partitions, |options| {
                    options.optimizer.hash_join_single_partition_threshold = 0;
                    options.optimizer.hash_join_single_partition_threshold_rows = 0;
                })
                .await?
                .ok_or_else(|| EngineError::Internal {
                    message: "a query re-planned as DDL".into(),
                })?;
            // What is left (nested loop joins) runs its probe side as one
            // partition.
            plan = single_probe_partition(plan)?;
        }
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

/// Gives every join that `coordinating_join` flags a single probe
/// partition, so one task sees all of them.
fn single_probe_partition(
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
    let children = plan
        .children()
        .into_iter()
        .map(|child| single_probe_partition(Arc::clone(child)))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = replace_children_if_necessary(plan, children)?;
    let flagged = coordinating_join(&plan).is_some()
        && plan
            .children()
            .iter()
            .all(|child| coordinating_join(child).is_none());
    if !flagged {
        return Ok(plan);
    }
    let children = plan.children();
    let (left, right) = (Arc::clone(children[0]), Arc::clone(children[1]));
    let right: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(right));
    Ok(replace_children_if_necessary(plan, vec![left, right])?)
}

/// A join whose build side is shared by several probe partitions and which
/// emits unmatched build rows (left, full, semi, anti, mark joins): it counts
/// matches across all the probe partitions of its plan instance and the last
/// one to finish emits the rest. Cluster tasks run separate instances, so
/// such a join would emit nothing or too much.
fn coordinating_join(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    let any = plan.as_ref() as &dyn std::any::Any;
    let emits_unmatched_build_rows = |join_type: &JoinType| {
        matches!(
            join_type,
            JoinType::Left
                | JoinType::LeftSemi
                | JoinType::LeftAnti
                | JoinType::LeftMark
                | JoinType::Full
        )
    };
    if let Some(join) = any.downcast_ref::<HashJoinExec>() {
        let shared_build = *join.partition_mode() == PartitionMode::CollectLeft;
        let probes = join.right().output_partitioning().partition_count();
        if shared_build && probes > 1 && emits_unmatched_build_rows(join.join_type()) {
            return Some(format!(
                "HashJoinExec ({:?}, CollectLeft)",
                join.join_type()
            ));
        }
    }
    if let Some(join) = any.downcast_ref::<NestedLoopJoinExec>() {
        let probes = join.right().output_partitioning().partition_count();
        if probes > 1 && emits_unmatched_build_rows(join.join_type()) {
            return Some(format!("NestedLoopJoinExec ({:?})", join.join_type()));
        }
    }
    plan.children().into_iter().find_map(coordinating_join)
}
