//! `tone explain`: print the stage DAG of a query.

use clap::Args;
use tone_engine::render_dag;

use super::sql::SqlSource;
use super::tables::TableArgs;
use super::CliError;

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  tone explain --data /tmp/tpch \"select l_returnflag, count(*) from lineitem group by 1\""
)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub tables: TableArgs,
    #[command(flatten)]
    pub source: SqlSource,
}

pub async fn run(args: ExplainArgs) -> Result<(), CliError> {
    let sql = args.source.read()?;
    let engine = args.tables.engine().await?;
    let plan = engine.physical_plan(&sql).await?;
    let dag = engine.stage_dag(plan)?;
    print!("{}", render_dag(&dag));
    Ok(())
}
