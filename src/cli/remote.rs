//! Commands that talk to a cluster: `sql --master`, `submit`, `jobs`,
//! `status`, `cancel`, `workers`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tone_engine::engine::parse_statements;
use tone_proto::v1 as pb;

use super::output::{print_stream, OutputFormat};
use super::progress::StageBars;
use super::security::ClientSecurityArgs;
use super::tables::TableArgs;
use super::CliError;
use tone::cluster::{absolute, tables_in_dir, ClusterClient, ClusterError, TableRef};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    tone submit --master http://127.0.0.1:50050 --data /tmp/tpch q01.sql\n  \
    TONE_MASTER=http://127.0.0.1:50050 tone submit --detach report.sql")]
pub struct SubmitArgs {
    /// The coordinator's URL.
    #[arg(long, env = "TONE_MASTER", value_name = "URL")]
    pub master: String,
    #[command(flatten)]
    pub security: ClientSecurityArgs,
    #[command(flatten)]
    pub tables: TableArgs,
    /// Print each job's id and return without waiting.
    #[arg(long)]
    pub detach: bool,
    /// Output format of result rows.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// A job running longer than this many seconds fails.
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// File of SQL statements separated by ';'.
    #[arg(required_unless_present = "bin", conflicts_with = "bin")]
    pub file: Option<PathBuf>,
    /// A Rust job instead: the program (linking tone) to run as the job's
    /// driver with the cluster as its master; it ships itself to the
    /// workers, which run it as the job's executors.
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Arguments for the program given with --bin (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// Runs the Rust job `bin` as the driver (client mode, like Spark's): with
/// `TONE_MASTER` set its `Context::from_args()` connects to the cluster and
/// uploads the binary itself at its first action, so the binary that runs
/// the executors is always the driver's very build. Its exit code is ours.
async fn submit_binary(
    master: &str,
    security: &ClientSecurityArgs,
    bin: &Path,
    args: &[String],
) -> Result<(), CliError> {
    // Checked here, so a bad file is named before the program runs.
    security.load()?;
    let status = tokio::process::Command::new(bin)
        .args(args)
        .env(tone::context::MASTER_ENV, master)
        .envs(security.to_env())
        .status()
        .await
        .map_err(|error| CliError::Usage(format!("cannot run {}: {error}", bin.display())))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(2) => Err(CliError::Usage(format!(
            "{} exited with status 2",
            bin.display()
        ))),
        _ => Err(CliError::JobFailed(format!(
            "{} failed ({status})",
            bin.display()
        ))),
    }
}

/// `--timeout SECONDS`: a positive number of seconds, at most the
/// coordinator's bound (a year).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let max = tone_coordinator::limits::MAX_JOB_TIMEOUT;
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!(
            "the timeout must be a positive number of seconds, got {text}"
        ));
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(timeout) if timeout <= max => Ok(timeout.max(Duration::from_millis(1))),
        _ => Err(format!(
            "the timeout must be at most {} seconds (a year), got {text}",
            max.as_secs()
        )),
    }
}

#[derive(Debug, Args)]
pub struct MasterArgs {
    /// The coordinator's URL.
    #[arg(long, env = "TONE_MASTER", value_name = "URL")]
    pub master: String,
    #[command(flatten)]
    pub security: ClientSecurityArgs,
}

impl MasterArgs {
    /// A client of the coordinator, with the TLS and token settings given.
    pub async fn client(&self) -> Result<ClusterClient, CliError> {
        Ok(ClusterClient::connect_with(&self.master, &self.security.load()?).await?)
    }
}

#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub master: MasterArgs,
    /// The job's id (from `tone jobs` or `tone submit --detach`).
    pub job: String,
}

impl From<ClusterError> for CliError {
    fn from(error: ClusterError) -> Self {
        if error.is_user_error() {
            CliError::Usage(error.to_string())
        } else {
            CliError::JobFailed(error.to_string())
        }
    }
}

/// The tables named by the table flags, with absolute paths.
pub async fn table_refs(args: &TableArgs) -> Result<Vec<TableRef>, CliError> {
    if args.memory_limit.is_some() {
        return Err(CliError::Usage(
            "--memory-limit applies to the embedded engine; on a cluster give it to each \
             worker (tone worker --memory-limit SIZE)"
                .into(),
        ));
    }
    let mut tables = Vec::new();
    let data_url = args
        .data
        .as_ref()
        .and_then(|dir| dir.to_str())
        .filter(|dir| dir.contains("://"));
    if let Some(url) = data_url {
        // Listed with this process's credentials; the workers read the
        // tables with their own.
        let stores = tone_engine::stores::ObjectStores::new();
        for (name, path) in tone_engine::store_tables::tables_under(&stores, url).await? {
            tables.push(TableRef { name, path });
        }
    } else if let Some(dir) = &args.data {
        if !dir.is_dir() {
            return Err(CliError::Usage(format!(
                "--data folder '{}' does not exist or is not a folder",
                dir.display()
            )));
        }
        tables = tables_in_dir(dir).map_err(|source| CliError::Io {
            context: format!("listing {}", dir.display()),
            source,
        })?;
    }
    for table in &args.tables {
        let (name, path) = table
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--table expects NAME=PATH, got '{table}'")))?;
        // URLs (object stores) go as they are; paths become absolute.
        let path = if path.contains("://") {
            std::path::PathBuf::from(path)
        } else {
            absolute(Path::new(path)).map_err(|source| CliError::Io {
                context: format!("resolving {path}"),
                source,
            })?
        };
        tables.push(TableRef {
            name: name.to_string(),
            path: path.to_string_lossy().into_owned(),
        });
    }
    Ok(tables)
}

/// How to run a script on a cluster.
pub struct Script<'a> {
    pub master: &'a str,
    pub security: &'a ClientSecurityArgs,
    pub tables: &'a TableArgs,
    pub format: OutputFormat,
    pub show_progress: bool,
    pub timeout: Option<Duration>,
}

impl Script<'_> {
    /// Runs each statement of `sql` on the cluster in order and prints rows.
    pub async fn run(&self, sql: &str) -> Result<(), CliError> {
        let (format, show_progress) = (self.format, self.show_progress);
        let statements = parse_statements(sql)?;
        let refs = table_refs(self.tables).await?;
        let client = ClusterClient::connect_with(self.master, &self.security.load()?)
            .await?
            .with_job_timeout(self.timeout);
        let partitions = self.tables.partitions.unwrap_or(0);
        for statement in statements {
            let text = tone_engine::engine::statement_text(&statement);
            let submitted = client.submit(&text, &refs, partitions).await?;
            if !submitted.has_results {
                continue;
            }
            let progress =
                show_progress.then(|| StageBars::start(client.clone(), submitted.job_id.clone()));
            let status = client.wait(&submitted.job_id, |_| {}).await;
            if let Some(bars) = progress {
                bars.finish().await;
            }
            let status = status?;
            print_stream(client.results(&status)?, format).await?;
            client.release(&submitted.job_id).await?;
        }
        Ok(())
    }
}

pub async fn submit(args: SubmitArgs) -> Result<(), CliError> {
    if let Some(bin) = &args.bin {
        return submit_binary(&args.master, &args.security, bin, &args.args).await;
    }
    let Some(file) = &args.file else {
        return Err(CliError::Usage(
            "submit needs a SQL file or --bin PATH".into(),
        ));
    };
    let sql = std::fs::read_to_string(file).map_err(|error| {
        CliError::Usage(format!(
            "cannot read SQL file '{}': {error}",
            file.display()
        ))
    })?;
    if !args.detach {
        let script = Script {
            master: &args.master,
            security: &args.security,
            tables: &args.tables,
            format: args.format,
            show_progress: true,
            timeout: args.timeout,
        };
        return script.run(&sql).await;
    }
    let refs = table_refs(&args.tables).await?;
    let client = ClusterClient::connect_with(&args.master, &args.security.load()?)
        .await?
        .with_job_timeout(args.timeout);
    for statement in parse_statements(&sql)? {
        let submitted = client
            .submit(
                &tone_engine::engine::statement_text(&statement),
                &refs,
                args.tables.partitions.unwrap_or(0),
            )
            .await?;
        emit(format_args!("{}", submitted.job_id))?;
    }
    Ok(())
}

/// Prints a line of output; a reader that went away (`| head`) ends the
/// command quietly instead of panicking.
fn emit(line: std::fmt::Arguments) -> Result<(), CliError> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}").map_err(|source| CliError::Io {
        context: "writing output".into(),
        source,
    })
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn state_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Queued) => "queued",
        Ok(pb::JobState::Running) => "running",
        Ok(pb::JobState::Succeeded) => "succeeded",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn one_line(sql: &str, width: usize) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > width {
        format!("{}…", flat.chars().take(width).collect::<String>())
    } else {
        flat
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  tone jobs --master http://127.0.0.1:50050 --state failed --limit 20"
)]
pub struct JobsArgs {
    #[command(flatten)]
    pub master: MasterArgs,
    /// Show the newest N jobs (0: every job the coordinator lists).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
    /// Only jobs in this state.
    #[arg(long, value_enum)]
    pub state: Option<JobStateArg>,
}

/// A job state, as `tone jobs --state` takes it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum JobStateArg {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStateArg {
    fn to_proto(self) -> pb::JobState {
        match self {
            JobStateArg::Queued => pb::JobState::Queued,
            JobStateArg::Running => pb::JobState::Running,
            JobStateArg::Succeeded => pb::JobState::Succeeded,
            JobStateArg::Failed => pb::JobState::Failed,
            JobStateArg::Cancelled => pb::JobState::Cancelled,
        }
    }
}

pub async fn jobs(args: JobsArgs) -> Result<(), CliError> {
    let client = args.master.client().await?;
    let state = args.state.map(JobStateArg::to_proto);
    let (jobs, total) = client.list_jobs(args.limit, state).await?;
    let older = total.saturating_sub(jobs.len() as u64);
    if older > 0 {
        eprintln!("({older} older jobs not shown; --limit N shows more)");
    }
    emit(format_args!(
        "{:<18} {:<10} {:>7} {:>9}  sql",
        "job", "state", "stages", "elapsed"
    ))?;
    for job in jobs {
        emit(format_args!(
            "{:<18} {:<10} {:>3}/{:<3} {:>8.2}s  {}",
            job.job_id,
            state_name(job.state),
            job.stages_done,
            job.stages_total,
            job.elapsed_s,
            one_line(&job.sql, 60)
        ))?;
    }
    Ok(())
}

pub async fn status(args: JobArgs) -> Result<(), CliError> {
    let client = args.master.client().await?;
    let job = client.status(&args.job).await?;
    emit(format_args!("job:      {}", job.job_id))?;
    emit(format_args!("state:    {}", state_name(job.state)))?;
    emit(format_args!(
        "stages:   {}/{}",
        job.stages_done, job.stages_total
    ))?;
    emit(format_args!(
        "tasks:    {} running, {}/{} done, {} lost outputs recomputed, {} backup attempts",
        job.tasks_running,
        job.tasks_done,
        job.tasks_total,
        job.outputs_recomputed,
        job.backup_attempts
    ))?;
    emit(format_args!(
        "written:  {} rows, {}",
        job.rows,
        human_bytes(job.bytes)
    ))?;
    emit(format_args!(
        "fetched:  {} from other workers",
        human_bytes(job.remote_fetch_bytes)
    ))?;
    emit(format_args!("elapsed:  {:.3}s", job.elapsed_s))?;
    if !job.error.is_empty() {
        emit(format_args!("error:    {}", job.error))?;
    }
    for failure in &job.failures {
        let kind = pb::ErrorKind::try_from(failure.kind)
            .map(|kind| kind.as_str_name())
            .unwrap_or("ERROR_KIND_UNSPECIFIED");
        emit(format_args!(
            "failed:   stage {} task {} attempt {} on {}: {} {}",
            failure.stage_id,
            failure.partition,
            failure.attempt,
            failure.worker_id,
            kind.trim_start_matches("ERROR_KIND_").to_lowercase(),
            one_line(&failure.message, 200)
        ))?;
    }
    emit(format_args!("sql:      {}", one_line(&job.sql, 200)))?;
    Ok(())
}

pub async fn cancel(args: JobArgs) -> Result<(), CliError> {
    let client = args.master.client().await?;
    let job = client.cancel(&args.job).await?;
    emit(format_args!("{} {}", job.job_id, state_name(job.state)))?;
    Ok(())
}

pub async fn workers(args: MasterArgs) -> Result<(), CliError> {
    let client = args.client().await?;
    for worker in client.workers().await? {
        emit(format_args!(
            "{} {} slots={} running={} shuffle_disk_bytes={} operator_spilled_bytes={} executors={}/{}",
            worker.worker_id,
            worker.flight_address,
            worker.slots,
            worker.running_tasks,
            worker.shuffle_disk_bytes,
            worker.operator_spilled_bytes,
            worker.executors,
            executor_limit(worker.max_executors)
        ))?;
    }
    Ok(())
}

/// A worker's `--max-executors` as `tone workers` prints it (0: no limit,
/// a worker older than the flag).
fn executor_limit(max: u32) -> String {
    if max == 0 {
        "unlimited".into()
    } else {
        max.to_string()
    }
}
