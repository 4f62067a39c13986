//! `tone explain`: print the stage DAG of a query; with `--analyze`, run
//! it (embedded or on a cluster) and print each stage with its operators'
//! metrics, like EXPLAIN ANALYZE but per stage across the cluster.

use std::fmt::Write;
use std::time::Instant;

use clap::Args;
use datafusion::physical_plan::ExecutionPlanProperties;
use futures::TryStreamExt;
use serde_json::{json, Value};
use tone_engine::plan_figures::{exchange_kind, operator_figures, outline};
use tone_engine::{render_dag, StageDag};

use super::sql::SqlSource;
use super::tables::TableArgs;
use super::CliError;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  tone explain --data /tmp/tpch \"select l_returnflag, count(*) from lineitem group by 1\"\n  \
                  tone explain --analyze --data /tmp/tpch -f q05.sql\n  \
                  tone explain --analyze --master http://127.0.0.1:50050 --data /shared/tpch -f q05.sql"
)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub tables: TableArgs,
    #[command(flatten)]
    pub source: SqlSource,
    /// Run the query and print every stage's operators with the metrics
    /// DataFusion collected (rows, compute time, spill), summed over the
    /// stage's tasks.
    #[arg(long)]
    pub analyze: bool,
    /// With --analyze: run on the cluster whose coordinator is at URL
    /// [default: embedded].
    #[arg(long, env = "TONE_MASTER", value_name = "URL", requires = "analyze")]
    pub master: Option<String>,
    #[command(flatten)]
    pub security: super::security::ClientSecurityArgs,
}

pub async fn run(args: ExplainArgs) -> Result<(), CliError> {
    let sql = args.source.read()?;
    if !args.analyze {
        let engine = args.tables.engine().await?;
        let sql = run_all_but_the_last(&engine, &sql).await?;
        let plan = engine.physical_plan(&sql).await?;
        let dag = engine.stage_dag(plan)?;
        print!("{}", render_decisions(&engine, &sql).await?);
        print!("{}", render_dag(&dag));
        return Ok(());
    }
    let detail = match &args.master {
        Some(master) => analyze_on_cluster(&args, master, &sql).await?,
        None => analyze_embedded(&args, &sql).await?,
    };
    print!("{}", render_analyzed(&detail));
    Ok(())
}

/// Runs the query embedded and describes it as the cluster's
/// `/api/jobs/{id}` does, from the plans each stage ran.
async fn analyze_embedded(args: &ExplainArgs, sql: &str) -> Result<Value, CliError> {
    let engine = args.tables.engine().await?;
    let sql = &run_all_but_the_last(&engine, sql).await?;
    let decisions = render_decisions(&engine, sql).await?;
    let plan = engine.physical_plan(sql).await?;
    let started = Instant::now();
    let (dag, executed, stream) = engine.execute_analyzed(plan).await?;
    let batches: Vec<arrow::array::RecordBatch> = stream
        .try_collect()
        .await
        .map_err(|error| CliError::Engine(error.into()))?;
    let rows: usize = batches.iter().map(|batch| batch.num_rows()).sum();
    let stages: Vec<Value> = dag
        .stages
        .iter()
        .map(|stage| {
            let ran = executed.get(stage.id).unwrap_or_else(|| stage.plan.clone());
            stage_json(&dag, stage, &ran)
        })
        .collect();
    Ok(json!({
        "id": dag.job_id.0,
        "state": "succeeded",
        "duration_ms": started.elapsed().as_millis() as u64,
        "rows": rows,
        "stages": stages,
        "decisions": decisions
            .lines()
            .map(str::to_string)
            .chain(executed.layouts().iter().map(|layout| format!("Adaptive: {layout}")))
            .collect::<Vec<_>>(),
    }))
}

/// Runs every statement of `sql` but the last (settings, DDL) and gives
/// the last one's text: the statement to explain.
async fn run_all_but_the_last(engine: &tone_engine::Engine, sql: &str) -> Result<String, CliError> {
    let mut statements = engine.parse(sql)?;
    let last = statements
        .pop()
        .ok_or_else(|| CliError::Usage("no statement to explain".into()))?;
    for statement in statements {
        if let tone_engine::StatementOutput::Rows(_) = engine.run_statement(statement).await? {
            return Err(CliError::Usage(
                "only the last statement may be a query; the others set up (SET, CREATE …)".into(),
            ));
        }
    }
    Ok(last.to_string())
}

/// The adaptive planning decisions for `sql`, one per line.
async fn render_decisions(engine: &tone_engine::Engine, sql: &str) -> Result<String, CliError> {
    let mut out = String::new();
    for decision in engine.join_order_decisions(sql).await? {
        let _ = writeln!(out, "Adaptive: {decision}");
    }
    Ok(out)
}

fn stage_json(
    dag: &StageDag,
    stage: &tone_engine::Stage,
    ran: &std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
) -> Value {
    let last = dag.final_stage().id;
    let plan: Vec<Value> = outline(ran)
        .into_iter()
        .map(|line| json!({ "depth": line.depth, "name": line.name, "detail": line.detail }))
        .collect();
    let operators: Vec<Value> = operator_figures(ran)
        .into_iter()
        .map(|figures| {
            let get = |name: &str| figures.values.get(name).copied().unwrap_or(0);
            json!({
                "depth": figures.depth,
                "name": figures.name,
                "output_rows": get("output_rows"),
                "elapsed_compute_ms": get("elapsed_compute") as f64 / 1e6,
                "spilled_bytes": get("spilled_bytes"),
                "metrics": figures.values,
            })
        })
        .collect();
    let output = stage
        .writer()
        .filter(|_| stage.id != last)
        .map(|writer| json!({ "exchange": exchange_kind(writer.shuffle_partitioning()) }));
    json!({
        "id": stage.id.0,
        "partitions": ran.output_partitioning().partition_count(),
        "inputs": stage.inputs.iter().map(|input| json!({ "stage": input.0 })).collect::<Vec<_>>(),
        "output": output,
        "plan": plan,
        "operators": operators,
    })
}

/// Runs the query on the cluster, then asks the coordinator for what its
/// stages' tasks measured.
async fn analyze_on_cluster(
    args: &ExplainArgs,
    master: &str,
    sql: &str,
) -> Result<Value, CliError> {
    let client = tone::cluster::ClusterClient::connect_with(master, &args.security.load()?).await?;
    let tables = super::remote::table_refs(&args.tables).await?;
    let partitions = args.tables.partitions.unwrap_or(0);
    let submitted = client.submit(sql, &tables, partitions).await?;
    let status = client.wait(&submitted.job_id, |_| {}).await?;
    if submitted.has_results {
        let rows: Vec<arrow::array::RecordBatch> = client
            .results(&status)?
            .try_collect()
            .await
            .map_err(|error| CliError::JobFailed(error.to_string()))?;
        drop(rows);
        client.release(&submitted.job_id).await?;
    }
    let json = client.detail(&submitted.job_id).await?;
    serde_json::from_str(&json)
        .map_err(|error| CliError::JobFailed(format!("the coordinator's job detail: {error}")))
}

/// The DAG with each stage's operators and their metrics.
pub fn render_analyzed(job: &Value) -> String {
    let mut out = String::new();
    let stages = job["stages"].as_array().cloned().unwrap_or_default();
    // Writing into a String cannot fail.
    let _ = writeln!(
        out,
        "Job {}: {}, {} stage(s), {} row(s) in {:.3} s",
        job["id"].as_str().unwrap_or("?"),
        job["state"].as_str().unwrap_or("?"),
        stages.len(),
        job["rows"],
        job["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0
    );
    for decision in job["decisions"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "{}", decision.as_str().unwrap_or(""));
    }
    for stage in &stages {
        let inputs: Vec<String> = stage["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|input| format!("stage {}", input["stage"]))
            .collect();
        let output = match stage["output"]["exchange"].as_str() {
            Some(exchange) => format!("{exchange} shuffle"),
            None => "result".to_string(),
        };
        let _ = writeln!(
            out,
            "\nStage {} — {} task(s), input: {}, output: {output}",
            stage["id"],
            stage["partitions"],
            if inputs.is_empty() {
                "sources".to_string()
            } else {
                inputs.join(", ")
            },
        );
        let plan = stage["plan"].as_array().cloned().unwrap_or_default();
        let operators = stage["operators"].as_array().cloned().unwrap_or_default();
        for (line, operator) in plan.iter().zip(&operators) {
            let depth = line["depth"].as_u64().unwrap_or(0) as usize;
            // A runtime filter says what it removed.
            let removed = match operator["metrics"]["rows_removed"].as_u64() {
                Some(rows) => format!(", removed={rows}"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {}{}  [rows={}{removed}, compute={:.3} ms, spilled={} B]",
                "  ".repeat(depth),
                line["detail"].as_str().unwrap_or(""),
                operator["output_rows"],
                operator["elapsed_compute_ms"].as_f64().unwrap_or(0.0),
                operator["spilled_bytes"],
            );
        }
    }
    out
}
