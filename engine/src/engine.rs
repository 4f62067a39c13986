//! [`Engine`]: a session plus the embedded runtime, the entry point for
//! running SQL and physical plans in this process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::analyze::AnalyzeExec;
use datafusion::physical_plan::collect;
use datafusion::physical_plan::explain::ExplainExec;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement};

use datafusion::error::DataFusionError;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;

use crate::adaptive::Adaptive;
use crate::closure::ClosureRegistry;
use crate::error::{EngineError, Result};
use crate::ids::JobId;
use crate::limits::{name_memory_limit, runtime_env, MemorySplit, OperatorSpills};
use crate::paths::PathRoots;
use crate::runtime::{run_dag, ExecutedStages};
use crate::session::{new_session, register_data_dir, register_table};
use crate::shuffle::{LocalShuffleStore, ShuffleEnv, ShuffleStore};
use crate::sql_location::snippet;
use crate::stage::StageDag;

/// Settings of an embedded engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Partitions per stage (`tone.partitions`); defaults to the core count.
    pub partitions: usize,
    /// Shuffle bytes kept in memory before writers spill to disk
    /// (`tone.shuffle.memory_bytes_max`).
    pub shuffle_memory_bytes_max: u64,
    /// Parent directory for spill files; the system temp dir when unset.
    pub spill_dir: Option<PathBuf>,
    /// Memory for the whole engine (`--memory-limit`); unbounded when unset.
    /// A quarter (at most `shuffle_memory_bytes_max`) holds shuffle
    /// segments; DataFusion's operators and the shuffle writers' open
    /// segments share the rest in a fair spilling pool, so sorts,
    /// aggregates and joins spill to disk instead of failing.
    pub memory_limit_bytes: Option<u64>,
    /// Where statements may read and write (`--allow-path`); anywhere when
    /// empty. DDL is checked before it runs, plans before they run.
    pub path_roots: PathRoots,
    /// The adaptive decisions made by default (`--aqe`); statements may
    /// change each (`SET tone.join_reorder = false`).
    pub adaptive: Adaptive,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            partitions: std::thread::available_parallelism().map_or(2, |count| count.get()),
            shuffle_memory_bytes_max: 2 * 1024 * 1024 * 1024,
            spill_dir: None,
            memory_limit_bytes: None,
            path_roots: PathRoots::default(),
            adaptive: Adaptive::default(),
        }
    }
}

/// What running one statement produced.
pub enum StatementOutput {
    /// A query (or COPY/INSERT): rows to show.
    Rows(SendableRecordBatchStream),
    /// DDL or a setting: done, nothing to show.
    Done,
}

/// An embedded tone engine: a DataFusion session for planning and the stage
/// runtime for execution.
pub struct Engine {
    context: SessionContext,
    store: Arc<LocalShuffleStore>,
    next_job: AtomicU64,
    memory_limit_bytes: Option<u64>,
    spills: Arc<OperatorSpills>,
    closures: Arc<ClosureRegistry>,
    path_roots: PathRoots,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Self> {
        if config.partitions == 0 {
            return Err(EngineError::Plan {
                message: "partitions must be at least 1".into(),
            });
        }
        let (pool_bytes, shuffle_bytes) = match config.memory_limit_bytes {
            Some(limit) => {
                let split = MemorySplit::of(limit, config.shuffle_memory_bytes_max);
                (Some(split.pool_bytes), split.shuffle_bytes)
            }
            None => (None, config.shuffle_memory_bytes_max),
        };
        let store = Arc::new(LocalShuffleStore::new(
            shuffle_bytes,
            config.spill_dir.as_deref(),
        )?);
        // Operator spill files go next to the shuffle's, and go with them.
        let runtime = runtime_env(pool_bytes, store.spill_dir().to_path_buf(), None)?;
        let env = ShuffleEnv::local(Arc::clone(&store) as Arc<dyn ShuffleStore>);
        let closures = Arc::new(ClosureRegistry::default());
        Ok(Self {
            context: new_session(
                config.partitions,
                env,
                runtime,
                Arc::clone(&closures),
                config.adaptive,
            ),
            closures,
            store,
            next_job: AtomicU64::new(1),
            memory_limit_bytes: config.memory_limit_bytes,
            spills: Arc::default(),
            path_roots: config.path_roots,
        })
    }

    /// Plans from now on for a cluster, where each task runs its own plan
    /// instance: operators that coordinate the partitions of one instance
    /// are turned off. A hash join's (and aggregate's) dynamic filter waits
    /// for every partition of its plan instance to build; on a cluster that
    /// barrier would never open.
    pub fn plan_for_tasks(&self) {
        let state = self.context.state_ref();
        let mut state = state.write();
        let optimizer = &mut state.config_mut().options_mut().optimizer;
        optimizer.enable_join_dynamic_filter_pushdown = false;
        optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    }

    /// The DataFusion session: catalog, functions, settings.
    pub fn session(&self) -> &SessionContext {
        &self.context
    }

    pub fn shuffle_store(&self) -> &Arc<LocalShuffleStore> {
        &self.store
    }

    /// The registry that resolves the closure ids of this engine's plans;
    /// a typed job registers its closures here in construction order.
    pub fn closures(&self) -> &Arc<ClosureRegistry> {
        &self.closures
    }

    /// What DataFusion operators spilled to disk in this engine's jobs.
    pub fn operator_spills(&self) -> &OperatorSpills {
        &self.spills
    }

    /// Registers every child of `dir` (a folder, or an object-store prefix
    /// such as `s3://bucket/tpch/`) as a table; returns their names.
    pub async fn register_data_dir(&self, dir: &Path) -> Result<Vec<String>> {
        match dir.to_str().filter(|text| text.contains("://")) {
            Some(url) => crate::store_tables::register_data_url(&self.context, url).await,
            None => register_data_dir(&self.context, dir).await,
        }
    }

    /// Registers one file or folder as table `name`.
    pub async fn register_table(&self, name: &str, path: &Path) -> Result<()> {
        register_table(&self.context, name, path).await
    }

    /// Splits SQL text into statements; syntax errors point at the position.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        parse_statements(sql)
    }

    /// Runs one parsed statement. DDL runs at once; queries run on the stage
    /// runtime and stream their rows.
    pub async fn run_statement(&self, statement: Statement) -> Result<StatementOutput> {
        let state = self.context.state();
        let plan = state.statement_to_plan(statement).await?;
        match plan {
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => {
                self.context.execute_logical_plan(plan).await?;
                Ok(StatementOutput::Done)
            }
            // DataFusion answers these directly: EXPLAIN describes a plan
            // and reads no data (`tone explain` shows the stage DAG), and
            // the catalog (SHOW TABLES, information_schema) lives in this
            // session, as tables no stage can carry.
            plan if matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_))
                || reads_only_the_catalog(&plan) =>
            {
                let frame = self.context.execute_logical_plan(plan).await?;
                Ok(StatementOutput::Rows(frame.execute_stream().await?))
            }
            plan => {
                let frame = self.context.execute_logical_plan(plan).await?;
                let physical = frame.create_physical_plan().await?;
                let physical = crate::sink::fix_sink_file_names(physical, &state).await?;
                Ok(StatementOutput::Rows(self.execute(physical).await?))
            }
        }
    }

    /// Runs every statement in `sql` and returns the rows of the last one
    /// that produced rows.
    pub async fn sql(&self, sql: &str) -> Result<Vec<arrow::array::RecordBatch>> {
        let mut last = Vec::new();
        for statement in self.parse(sql)? {
            if let StatementOutput::Rows(stream) = self.run_statement(statement).await? {
                last = crate::runtime::collect_stream(stream).await?;
            }
        }
        Ok(last)
    }

    /// Plans a single SQL query into DataFusion's physical plan, with this
    /// engine's partitions per stage.
    pub async fn physical_plan(&self, sql: &str) -> Result<Arc<dyn ExecutionPlan>> {
        let partitions = self.context.state().config().target_partitions();
        self.plan_statement(sql, partitions)
            .await?
            .ok_or_else(|| EngineError::Plan {
                message: "the statement changes the catalog or a setting; it has no plan to show"
                    .into(),
            })
    }

    /// Plans one statement with `partitions` per stage. DDL and settings run
    /// at once and give `None`; anything that produces rows gives its
    /// physical plan.
    pub async fn plan_statement(
        &self,
        sql: &str,
        partitions: usize,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let plan = self.logical_plan(sql, partitions).await?;
        self.physical_of(plan, partitions).await
    }

    /// The join orders the planner chooses for `sql`'s trees of inner
    /// joins, when reordering is on (`tone explain` shows them).
    pub async fn join_order_decisions(
        &self,
        sql: &str,
    ) -> Result<Vec<crate::join_order::JoinOrderDecision>> {
        let partitions = self.context.state().config().target_partitions();
        let plan = self.logical_plan(sql, partitions).await?;
        let state = self.context.state();
        if matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_))
            || !crate::adaptive::options(&state).join_reorder
        {
            return Ok(Vec::new());
        }
        let plan = state.optimize(&plan)?;
        Ok(crate::join_order::decisions(&plan, &state).await?)
    }

    /// Where statements may read and write.
    pub fn path_roots(&self) -> &PathRoots {
        &self.path_roots
    }

    /// Cuts a physical plan into stages under a fresh job id.
    pub fn stage_dag(&self, plan: Arc<dyn ExecutionPlan>) -> Result<StageDag> {
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        StageDag::split(JobId(format!("job-{job}")), plan)
    }

    /// Runs a physical plan stage by stage and streams its result.
    pub async fn execute(&self, plan: Arc<dyn ExecutionPlan>) -> Result<SendableRecordBatchStream> {
        let plan = self.prepare_plan(plan).await?;
        let dag = self.stage_dag(plan)?;
        self.run(dag, None).await
    }

    /// Runs a plan as [`Engine::execute`] does, and also gives its stage
    /// DAG and the plans each stage ran, whose metrics fill in as the
    /// stream is read (`tone explain --analyze`).
    pub async fn execute_analyzed(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> Result<(StageDag, Arc<ExecutedStages>, SendableRecordBatchStream)> {
        let plan = self.prepare_plan(plan).await?;
        let dag = self.stage_dag(plan)?;
        let executed = Arc::new(ExecutedStages::default());
        let stream = self.run(dag.clone(), Some(Arc::clone(&executed))).await?;
        Ok((dag, executed, stream))
    }

    async fn run(
        &self,
        dag: StageDag,
        executed: Option<Arc<ExecutedStages>>,
    ) -> Result<SendableRecordBatchStream> {
        let store = Arc::clone(&self.store) as Arc<dyn ShuffleStore>;
        let limit = self.memory_limit_bytes;
        let stream = run_dag(
            dag,
            store,
            self.context.task_ctx(),
            Arc::clone(&self.spills),
            executed,
        )
        .await
        .map_err(|error| name_memory_limit(error, limit))?;
        let schema = stream.schema();
        let named = stream.map_err(move |error| match error.find_root() {
            DataFusionError::ResourcesExhausted(_) => {
                DataFusionError::from(name_memory_limit(EngineError::from(error), limit))
            }
            _ => error,
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, named)))
    }

    /// Runs the parts of a plan that cannot be cut into stages before the
    /// rest, and puts their results in their place:
    ///
    /// - Each uncorrelated scalar subquery runs as a job of its own; its value
    ///   is recorded where the plan's expressions read it, and the
    ///   `ScalarSubqueryExec` that would have run it is removed. The codec
    ///   then ships the value as a literal, so no stage depends on another
    ///   stage's subquery.
    /// - A recursive CTE iterates over a work table shared in memory between
    ///   its terms, which no stage boundary or serialization can carry; it
    ///   runs in this process and its rows replace it as an in-memory scan.
    /// - EXPLAIN (and EXPLAIN ANALYZE) describe a plan: they run here too.
    pub fn prepare_plan(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> futures::future::BoxFuture<'_, Result<Arc<dyn ExecutionPlan>>> {
        Box::pin(async move {
            let any = plan.as_ref() as &dyn std::any::Any;
            if let Some(exec) = any.downcast_ref::<ScalarSubqueryExec>() {
                for link in exec.subqueries() {
                    let value = self.scalar_value(Arc::clone(&link.plan)).await?;
                    exec.results().set(link.index, value)?;
                }
                return self.prepare_plan(Arc::clone(exec.input())).await;
            }
            let describes_a_plan = any.downcast_ref::<ExplainExec>().is_some()
                || any.downcast_ref::<AnalyzeExec>().is_some();
            if describes_a_plan || any.downcast_ref::<RecursiveQueryExec>().is_some() {
                let schema = plan.schema();
                let batches = collect(plan, self.context.task_ctx()).await?;
                let scan: Arc<dyn ExecutionPlan> =
                    MemorySourceConfig::try_new_exec(&[batches], schema, None)?;
                return Ok(scan);
            }
            let mut children = Vec::new();
            for child in plan.children() {
                children.push(self.prepare_plan(Arc::clone(child)).await?);
            }
            Ok(replace_children_if_necessary(plan, children)?)
        })
    }

    /// The single value a scalar subquery returns: NULL for no rows, an
    /// error for more than one.
    async fn scalar_value(&self, plan: Arc<dyn ExecutionPlan>) -> Result<ScalarValue> {
        let schema = plan.schema();
        let [field] = schema.fields().as_ref() else {
            return Err(EngineError::Plan {
                message: format!(
                    "a scalar subquery must return one column, not {}",
                    schema.fields().len()
                ),
            });
        };
        let batches = crate::runtime::collect_stream(self.execute(plan).await?).await?;
        let rows: usize = batches.iter().map(|batch| batch.num_rows()).sum();
        match rows {
            0 => Ok(ScalarValue::try_from(field.data_type())?),
            1 => {
                let batch = batches
                    .iter()
                    .find(|batch| batch.num_rows() == 1)
                    .ok_or_else(|| EngineError::internal("scalar subquery row vanished"))?;
                Ok(ScalarValue::try_from_array(batch.column(0), 0)?)
            }
            _ => Err(EngineError::Execution {
                message: format!(
                    "a scalar subquery returned {rows} rows; it may return at most one"
                ),
            }),
        }
    }
}

/// True when `plan` scans tables and every one is in `information_schema`.
pub fn reads_only_the_catalog(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let (mut scans, mut catalog) = (0, 0);
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scans += 1;
            if scan.table_name.schema() == Some("information_schema") {
                catalog += 1;
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    scans > 0 && scans == catalog
}

/// Splits SQL text into statements; syntax errors point at the position.
pub fn parse_statements(sql: &str) -> Result<Vec<Statement>> {
    crate::sql_guard::check_before_parsing(sql)?;
    DFParser::parse_sql(sql).map(Vec::from).map_err(|error| {
        with_snippet(
            EngineError::from(datafusion::error::DataFusionError::from(error)),
            sql,
        )
    })
}

/// A statement as SQL text that parses back to it, for sending it to a
/// cluster. DataFusion prints a `COPY … TO` target without its quotes
/// (`TO /tmp/out.csv`, which does not parse); it is quoted here.
pub fn statement_text(statement: &Statement) -> String {
    let text = statement.to_string();
    let Statement::CopyTo(copy) = statement else {
        return text;
    };
    let bare = format!(" TO {}", copy.target);
    let quoted = format!(" TO '{}'", copy.target.replace('\'', "''"));
    text.replacen(&bare, &quoted, 1)
}

/// Adds the offending source line to a syntax error.
fn with_snippet(error: EngineError, sql: &str) -> EngineError {
    match error {
        EngineError::SqlSyntax {
            message,
            line,
            column,
            ..
        } => EngineError::SqlSyntax {
            snippet: snippet(sql, line, column),
            message,
            line,
            column,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_print_as_sql_that_parses_back() {
        for sql in [
            "COPY (select 1 as x) TO '/tmp/o''dd dir/out.csv'",
            "COPY t TO 'out.parquet' STORED AS PARQUET",
            "select 1",
        ] {
            let statement = parse_statements(sql).expect("parses").remove(0);
            let text = statement_text(&statement);
            let again = parse_statements(&text).expect("parses back").remove(0);
            assert_eq!(again, statement, "{text}");
        }
    }
}
