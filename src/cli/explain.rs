//! `tone explain`: print the stage DAG of a query.

use std::path::PathBuf;

use clap::Args;
use tone_engine::render_dag;

use super::sql::read_sql;
use super::tables::TableArgs;
use super::CliError;

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  tone explain --data /tmp/tpch \"select l_returnflag, count(*) from lineitem group by 1\""
)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub tables: TableArgs,
    /// Read the query from FILE.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "query"
    )]
    pub file: Option<PathBuf>,
    /// The query to explain.
    #[arg(allow_hyphen_values = true)]
    pub query: Option<String>,
}

pub async fn run(args: ExplainArgs) -> Result<(), CliError> {
    let sql = read_sql(args.file.as_deref(), args.query.as_deref())?;
    let engine = args.tables.engine().await?;
    let plan = engine.physical_plan(&sql).await?;
    let dag = engine.stage_dag(plan)?;
    print!("{}", render_dag(&dag));
    Ok(())
}
