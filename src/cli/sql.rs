//! `tone sql`: run SQL statements from the command line or a file.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use tone_engine::{Engine, StatementOutput};

use super::output::{print_stream, OutputFormat};
use super::tables::TableArgs;
use super::CliError;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    tone sql --data /tmp/tpch \"select count(*) from lineitem\"\n  \
    tone sql --table t=data.parquet --format csv \"select * from t limit 5\"\n  \
    tone sql --data /tmp/tpch -f q01.sql")]
pub struct SqlArgs {
    #[command(flatten)]
    pub tables: TableArgs,
    #[command(flatten)]
    pub source: SqlSource,
    /// Output format of result rows.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Run on the cluster whose coordinator is at URL [default: embedded].
    #[arg(long, env = "TONE_MASTER", value_name = "URL")]
    pub master: Option<String>,
    #[command(flatten)]
    pub security: super::security::ClientSecurityArgs,
    /// On a cluster: a job running longer than this many seconds fails.
    #[arg(long, value_name = "SECONDS", requires = "master", value_parser = super::remote::parse_timeout)]
    pub timeout: Option<std::time::Duration>,
}

/// Where the SQL comes from: `-f FILE` or the QUERY argument.
#[derive(Debug, Args)]
pub struct SqlSource {
    /// Read the SQL from FILE (several statements may be separated by ';').
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "query"
    )]
    pub file: Option<PathBuf>,
    /// The SQL (several statements may be separated by ';').
    #[arg(allow_hyphen_values = true)]
    pub query: Option<String>,
}

impl SqlSource {
    pub fn read(&self) -> Result<String, CliError> {
        match (&self.file, &self.query) {
            (Some(file), _) => std::fs::read_to_string(file).map_err(|error| {
                CliError::Usage(format!(
                    "cannot read SQL file '{}': {error}",
                    file.display()
                ))
            }),
            (None, Some(query)) => Ok(query.clone()),
            (None, None) => Err(CliError::Usage(
                "give a query or -f FILE (see --help)".into(),
            )),
        }
    }
}

pub async fn run(args: SqlArgs) -> Result<(), CliError> {
    let sql = args.source.read()?;
    if let Some(master) = &args.master {
        let script = super::remote::Script {
            master,
            security: &args.security,
            tables: &args.tables,
            format: args.format,
            show_progress: false,
            timeout: args.timeout,
        };
        return script.run(&sql).await;
    }
    let engine = args.tables.engine().await?;
    run_script(&engine, &sql, args.format).await
}

/// Runs each statement of `sql` in order, printing the rows of those that
/// return rows. Stops at the first failing statement.
pub async fn run_script(engine: &Engine, sql: &str, format: OutputFormat) -> Result<(), CliError> {
    for statement in engine.parse(sql)? {
        let started = Instant::now();
        match engine.run_statement(statement).await? {
            StatementOutput::Rows(stream) => {
                let rows = print_stream(stream, format).await?;
                tracing::info!(
                    rows,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "statement done"
                );
                if format == OutputFormat::Table {
                    eprintln!("{rows} row(s) in {:.3}s", started.elapsed().as_secs_f64());
                }
            }
            StatementOutput::Done => {
                if format == OutputFormat::Table {
                    eprintln!("ok in {:.3}s", started.elapsed().as_secs_f64());
                }
            }
        }
    }
    Ok(())
}
