//! Planning jobs against the coordinator's catalog.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::ParamValues;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    replace_children_if_necessary, ExecutionPlan, ExecutionPlanProperties, Partitioning,
};
use tone_engine::parameters::StatementShape;
use tone_engine::shuffle::ShuffleWriterExec;
use tone_engine::{Engine, EngineConfig, EngineError, JobId, StageDag};
use tone_proto::v1::SubmitJobRequest;

use crate::state::{CatalogEntry, StateStore};

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
    /// Where catalog changes are recorded, with `--state-dir`.
    state: Option<Arc<StateStore>>,
    /// Paths of the tables jobs registered, by name. Held while a job
    /// registers tables and plans, so concurrent submissions see one
    /// consistent catalog.
    registered: tokio::sync::Mutex<HashMap<String, String>>,
}

impl Planner {
    /// A planner whose statements may only touch `roots` (all paths when
    /// empty).
    pub fn new(
        state: Option<Arc<StateStore>>,
        roots: tone_engine::paths::PathRoots,
        adaptive: tone_engine::adaptive::Adaptive,
    ) -> Result<Self, EngineError> {
        let engine = Engine::new(EngineConfig {
            path_roots: roots,
            adaptive,
            ..EngineConfig::default()
        })?;
        engine.plan_for_tasks();
        Ok(Self {
            engine,
            state,
            registered: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Replays the catalog an earlier coordinator recorded. An entry that no
    /// longer applies (its files are gone) is skipped with a warning.
    pub async fn restore(&self, catalog: &[CatalogEntry]) {
        let mut registered = self.registered.lock().await;
        for entry in catalog {
            let outcome = match entry {
                CatalogEntry::Table { name, path } => {
                    let replaced = self.replace_table(name, path).await;
                    if replaced.is_ok() {
                        registered.insert(name.clone(), path.clone());
                    }
                    replaced
                }
                CatalogEntry::Statement { sql } => {
                    self.engine.plan_statement(sql, 1).await.map(|_| ())
                }
            };
            if let Err(error) = outcome {
                tracing::warn!(?entry, %error, "catalog entry not restored");
            }
        }
    }

    async fn replace_table(&self, name: &str, path: &str) -> Result<(), EngineError> {
        // Registration lists and reads the files: checked before.
        self.engine.path_roots().check("table", path)?;
        // A job's tables replace same-named ones.
        self.engine.session().deregister_table(name)?;
        self.engine.register_table(name, Path::new(path)).await
    }

    async fn record(&self, entry: CatalogEntry) {
        if let Some(state) = &self.state {
            state.add_catalog(entry).await;
        }
    }

    /// What a prepared statement returns and takes, without running it.
    pub async fn describe(&self, sql: &str) -> Result<StatementShape, EngineError> {
        self.engine.describe_statement(sql).await
    }

    /// The `tone.` settings in force (`--aqe`, then any `SET tone.…`).
    pub fn tone_options(&self) -> tone_engine::adaptive::ToneOptions {
        tone_engine::adaptive::options(&self.engine.session().state())
    }

    /// The catalog's session (tables, schemas), for metadata queries.
    pub fn session(&self) -> &datafusion::prelude::SessionContext {
        self.engine.session()
    }

    /// Registers the request's tables, then plans its statement into a
    /// stage DAG whose every stage, the final one included, ends in a
    /// shuffle writer (the final stage's output is the job's result).
    /// `values` are bound to the statement's parameters first.
    pub async fn plan_with(
        &self,
        job_id: &JobId,
        request: &SubmitJobRequest,
        partitions: usize,
        values: Option<ParamValues>,
    ) -> Result<Planned, EngineError> {
        let mut registered = self.registered.lock().await;
        for table in &request.tables {
            if registered.get(&table.name) == Some(&table.path) {
                continue;
            }
            self.replace_table(&table.name, &table.path).await?;
            registered.insert(table.name.clone(), table.path.clone());
            self.record(CatalogEntry::Table {
                name: table.name.clone(),
                path: table.path.clone(),
            })
            .await;
        }
        let planned = self
            .engine
            .plan_statement_with(&request.sql, partitions, values)
            .await?;
        let Some(plan) = planned else {
            self.record(CatalogEntry::Statement {
                sql: request.sql.clone(),
            })
            .await;
            return Ok(Planned::CatalogChange);
        };
        let plan = cluster_rewrites(plan)?;
        // Uncorrelated scalar subqueries and recursive CTEs run here, before
        // the job is cut into stages.
        let plan = self.engine.prepare_plan(plan).await?;
        job_of(job_id, plan)
    }

    /// Plans `sql` as `plan` does, up to the stage cut, without running
    /// anything: scalar subqueries are left in place (for fuzzing, where
    /// running them could take unbounded time).
    pub(crate) async fn plan_without_running(
        &self,
        job_id: &JobId,
        sql: &str,
        partitions: usize,
    ) -> Result<Option<Planned>, EngineError> {
        let Some(plan) = self.engine.plan_statement(sql, partitions).await? else {
            return Ok(None);
        };
        job_of(job_id, cluster_rewrites(plan)?).map(Some)
    }

    /// An encoded plan, decoded with placeholder closures (their code runs
    /// in executor processes): a driver's plan, or a stage plan the state
    /// store kept for a resume.
    pub fn decode(&self, bytes: &[u8]) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
        // Its own session: the catalog's has a real (empty) closure
        // registry. It shares the catalog's runtime, whose object-store
        // registry lets scans of `s3://` decode (decoding makes no request).
        let config = datafusion::prelude::SessionConfig::new().with_extension(Arc::new(
            tone_engine::closure::ClosureRegistry::placeholders(),
        ));
        let session = datafusion::prelude::SessionContext::new_with_config_rt(
            config,
            self.engine.session().runtime_env(),
        );
        Ok(tone_engine::codec::decode_plan(bytes, &session.task_ctx())?)
    }

    /// A physical plan a driver program planned and encoded (a DataFrame
    /// or Dataset job): decoded with placeholder closures (their code runs
    /// in executor processes), given the same cluster rewrites as SQL
    /// (whole-file scan groups, joins independent per task) and cut into
    /// stages. Scalar subqueries already ran in the driver. A plan with
    /// closures must come with an executor (`has_executor`), and one
    /// without must not: the executor spec is only for closures.
    pub fn plan_encoded(
        &self,
        job_id: &JobId,
        bytes: &[u8],
        has_executor: bool,
    ) -> Result<Planned, EngineError> {
        let plan = self.decode(bytes)?;
        match (has_closures(&plan), has_executor) {
            (true, false) => {
                return Err(EngineError::Plan {
                    message: "the plan holds Rust closures but names no executor to run them"
                        .into(),
                })
            }
            (false, true) => {
                return Err(EngineError::Plan {
                    message: "a plan without Rust closures (SQL, DataFrames) cannot carry an \
                              executor"
                        .into(),
                })
            }
            _ => {}
        }
        self.engine.path_roots().check_plan(&plan)?;
        job_of(job_id, cluster_rewrites(plan)?)
    }
}

/// The rewrites every cluster plan gets: whole-file scan groups, and joins
/// that would coordinate across tasks made independent per task.
fn cluster_rewrites(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
    let plan = crate::file_groups::balance_file_groups(plan)?;
    // See `coordinating_join`: such joins become independent per task.
    if has_coordinating_join(&plan) {
        independent_joins(plan)
    } else {
        Ok(plan)
    }
}

/// True when `plan` runs Rust closures somewhere.
fn has_closures(plan: &Arc<dyn ExecutionPlan>) -> bool {
    (plan.as_ref() as &dyn std::any::Any).is::<tone_engine::closure::ClosureExec>()
        || plan.children().into_iter().any(has_closures)
}

/// `plan` cut into stages, the final one also ending in a shuffle writer
/// (its output is the job's result, read by the client from the workers).
fn job_of(job_id: &JobId, plan: Arc<dyn ExecutionPlan>) -> Result<Planned, EngineError> {
    {
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

/// Rewrites every join that `coordinating_join` flags so each probe
/// partition can run alone: a hash join becomes a partitioned hash join
/// (both sides hash-repartitioned on the join keys, so each task builds
/// from its own share), other joins, and null-aware anti joins (whose
/// answer depends on any NULL in the whole build side), get a single probe
/// partition.
fn independent_joins(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
    let children = plan
        .children()
        .into_iter()
        .map(|child| independent_joins(Arc::clone(child)))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = replace_children_if_necessary(plan, children)?;
    // Children are already rewritten, so only this operator can be one.
    if !coordinating_join(&plan) {
        return Ok(plan);
    }
    if let Some(join) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<HashJoinExec>() {
        if !join.null_aware {
            return Ok(partitioned(join)?);
        }
    }
    let children = plan.children();
    let (left, right) = (Arc::clone(children[0]), Arc::clone(children[1]));
    let right: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(right));
    Ok(replace_children_if_necessary(plan, vec![left, right])?)
}

/// `join` as a partitioned hash join with as many partitions as its probe.
fn partitioned(join: &HashJoinExec) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    let partitions = join.right().output_partitioning().partition_count();
    // The build side was merged into one partition for broadcasting.
    let left = match (join.left().as_ref() as &dyn std::any::Any)
        .downcast_ref::<CoalescePartitionsExec>()
    {
        Some(coalesce) => Arc::clone(coalesce.input()),
        None => Arc::clone(join.left()),
    };
    let (left_keys, right_keys): (Vec<_>, Vec<_>) = join.on().iter().cloned().unzip();
    let left: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        left,
        Partitioning::Hash(left_keys, partitions),
    )?);
    let right: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        Arc::clone(join.right()),
        Partitioning::Hash(right_keys, partitions),
    )?);
    join.builder()
        .with_partition_mode(PartitionMode::Partitioned)
        .with_new_children(vec![left, right])?
        .build_exec()
}

/// A join whose build side is shared by several probe partitions and which
/// emits unmatched build rows (left, full, semi, anti, mark joins): it counts
/// matches across all the probe partitions of its plan instance and the last
/// one to finish emits the rest. Cluster tasks run separate instances, so
/// such a join would emit nothing or too much.
fn coordinating_join(plan: &Arc<dyn ExecutionPlan>) -> bool {
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
        return shared_build && probes > 1 && emits_unmatched_build_rows(join.join_type());
    }
    if let Some(join) = any.downcast_ref::<NestedLoopJoinExec>() {
        let probes = join.right().output_partitioning().partition_count();
        return probes > 1 && emits_unmatched_build_rows(join.join_type());
    }
    false
}

/// True when `plan` or any operator below it is a `coordinating_join`.
fn has_coordinating_join(plan: &Arc<dyn ExecutionPlan>) -> bool {
    coordinating_join(plan) || plan.children().into_iter().any(has_coordinating_join)
}
