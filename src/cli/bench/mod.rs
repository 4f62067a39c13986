//! `tone bench tpch`: per-query and total median times, against plain
//! DataFusion in the same binary as the baseline; `tone bench latency`:
//! the cluster's time for a trivial query (`latency.rs`).

mod latency;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::Serialize;
use tone_engine::limits::{parse_size, runtime_env};
use tone_engine::session::register_data_dir;
use tone_engine::{Engine, EngineConfig, EngineError};

use super::CliError;
use crate::tpch::QUERIES;
use tone::cluster::{tables_in_dir, ClusterClient, TableRef};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The 22 TPC-H queries over data made by `tone gen tpch`.
    #[command(
        after_help = "Example:\n  tone bench tpch --data /tmp/tpch-sf1 --engine tone --engine datafusion --iterations 3"
    )]
    Tpch(TpchBenchArgs),
    /// The cluster's end-to-end time for a trivial query
    /// (`SELECT count(*) FROM nation`) from one connected client.
    #[command(after_help = "Example:
  tone bench latency --master http://127.0.0.1:50050 --data /tmp/tpch-sf1 --runs 200")]
    Latency(latency::LatencyArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// tone's stage engine, embedded.
    Tone,
    /// tone embedded with its adaptive decisions off (`--aqe off`): the
    /// plans DataFusion makes, for the adaptive gain in one run.
    #[value(name = "tone-static")]
    #[serde(rename = "tone-static")]
    ToneStatic,
    /// Plain single-process DataFusion: the baseline.
    Datafusion,
    /// tone on the cluster named by `--master`.
    Cluster,
}

#[derive(Debug, Args)]
pub struct TpchBenchArgs {
    /// Folder with one sub-folder per TPC-H table, or an object-store
    /// prefix of them (`s3://bucket/tpch/`).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Folder of q01.sql … q22.sql [default: the built-in TPC-H texts].
    #[arg(long, value_name = "DIR")]
    pub queries: Option<PathBuf>,
    /// Runs per query; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub iterations: usize,
    /// Untimed runs of each query first (caches, connections).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Engines to run, in order; give it twice to compare in one run
    /// [default: cluster with --master, else tone].
    #[arg(long = "engine", value_enum)]
    pub engines: Vec<EngineKind>,
    /// Partitions per stage [default: number of cores].
    #[arg(long)]
    pub partitions: Option<usize>,
    /// Memory for the tone and datafusion engines, e.g. 512M (the same
    /// fair spilling pool for both); a cluster's workers have their own
    /// `--memory-limit` [default: unlimited].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: Option<u64>,
    /// Coordinator URL for `--engine cluster`.
    #[arg(long, value_name = "URL")]
    pub master: Option<String>,
    #[command(flatten)]
    pub security: super::security::ClientSecurityArgs,
    /// Only these queries (e.g. q01,q18).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Write the figures as JSON (with several engines: one object each, in
    /// an array).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct QueryFigures {
    median_s: f64,
    rows: usize,
}

#[derive(Debug, Serialize)]
struct EngineFigures {
    engine: EngineKind,
    total_median_s: f64,
    queries: BTreeMap<String, QueryFigures>,
}

pub async fn run(command: BenchCommand) -> Result<(), CliError> {
    match command {
        BenchCommand::Tpch(args) => tpch(args).await,
        BenchCommand::Latency(args) => latency::run(args).await,
    }
}

async fn tpch(mut args: TpchBenchArgs) -> Result<(), CliError> {
    if args.engines.is_empty() {
        // A --master means the cluster, as for every other command.
        let engine = match args.master {
            Some(_) => EngineKind::Cluster,
            None => EngineKind::Tone,
        };
        args.engines.push(engine);
    }
    if args.iterations == 0 {
        return Err(CliError::Usage("--iterations must be at least 1".into()));
    }
    if args.master.is_none() && args.engines.contains(&EngineKind::Cluster) {
        return Err(CliError::Usage(
            "--engine cluster needs --master URL".into(),
        ));
    }
    let queries = load_queries(args.queries.as_deref(), &args.only)?;
    let mut all = Vec::new();
    for engine in &args.engines {
        eprintln!(
            "engine {engine:?}: {} queries × {} iterations after {} warm-up",
            queries.len(),
            args.iterations,
            args.warmup
        );
        // A cluster engine without --master was refused above.
        let runner = match (&args.master, engine) {
            (Some(master), EngineKind::Cluster) => {
                Runner::cluster(master, &args.security, &args.data, args.partitions).await?
            }
            _ => Runner::new(*engine, &args.data, args.partitions, args.memory_limit).await?,
        };
        let mut figures = EngineFigures {
            engine: *engine,
            total_median_s: 0.0,
            queries: BTreeMap::new(),
        };
        for (name, sql) in &queries {
            let mut times = Vec::with_capacity(args.iterations);
            let mut rows = 0;
            for _ in 0..args.warmup {
                runner.run(sql).await.map_err(|error| {
                    CliError::Usage(format!("{name} failed on {engine:?}: {error}"))
                })?;
            }
            for _ in 0..args.iterations {
                let started = Instant::now();
                rows = runner.run(sql).await.map_err(|error| {
                    CliError::Usage(format!("{name} failed on {engine:?}: {error}"))
                })?;
                times.push(started.elapsed().as_secs_f64());
            }
            let median_s = median(&mut times);
            eprintln!("  {name}: {median_s:.3}s ({rows} rows)");
            figures.total_median_s += median_s;
            figures
                .queries
                .insert(name.clone(), QueryFigures { median_s, rows });
        }
        all.push(figures);
    }
    print_report(&all);
    match (&args.json, all.as_slice()) {
        (Some(path), [one]) => write_json(path, one),
        (Some(path), all) => write_json(path, &all),
        (None, _) => Ok(()),
    }
}

/// Writes `figures` as pretty JSON to `path` (`--json`).
pub(super) fn write_json(path: &Path, figures: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(figures)
        .map_err(|error| CliError::Usage(format!("cannot encode JSON: {error}")))?;
    std::fs::write(path, text).map_err(|source| CliError::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

enum Runner {
    Tone(Engine),
    DataFusion(SessionContext),
    /// Tables are registered once when the runner starts.
    Cluster {
        client: ClusterClient,
        partitions: usize,
    },
}

impl Runner {
    async fn cluster(
        master: &str,
        security: &super::security::ClientSecurityArgs,
        data: &Path,
        partitions: Option<usize>,
    ) -> Result<Self, CliError> {
        let client = ClusterClient::connect_with(master, &security.load()?).await?;
        let tables = match data.to_str().and_then(tone_engine::stores::object_url) {
            // Listed here, read by the workers with their own credentials.
            Some(url) => {
                let stores = tone_engine::stores::ObjectStores::new();
                tone_engine::store_tables::tables_under(&stores, url)
                    .await?
                    .into_iter()
                    .map(|(name, path)| TableRef { name, path })
                    .collect()
            }
            None => tables_in_dir(data).map_err(|source| CliError::Io {
                context: format!("listing {}", data.display()),
                source,
            })?,
        };
        // Register the tables once, so the timed queries measure queries.
        client.sql("select 1", &tables, 1).await?;
        Ok(Self::Cluster {
            client,
            partitions: partitions.unwrap_or(0),
        })
    }

    async fn new(
        kind: EngineKind,
        data: &Path,
        partitions: Option<usize>,
        memory_limit_bytes: Option<u64>,
    ) -> Result<Self, CliError> {
        let mut config = EngineConfig::default();
        if let Some(partitions) = partitions {
            config.partitions = partitions;
        }
        config.memory_limit_bytes = memory_limit_bytes;
        if kind == EngineKind::ToneStatic {
            config.adaptive = tone_engine::adaptive::Adaptive::OFF;
        }
        match kind {
            EngineKind::Tone | EngineKind::ToneStatic | EngineKind::Cluster => {
                let engine = Engine::new(config)?;
                engine.register_data_dir(data).await?;
                Ok(Self::Tone(engine))
            }
            EngineKind::Datafusion => {
                let runtime = runtime_env(memory_limit_bytes, std::env::temp_dir(), None)?;
                let context = SessionContext::new_with_config_rt(
                    SessionConfig::new().with_target_partitions(config.partitions),
                    runtime,
                );
                register_data_dir(&context, data).await?;
                Ok(Self::DataFusion(context))
            }
        }
    }

    async fn run(&self, sql: &str) -> Result<usize, EngineError> {
        let batches = match self {
            Runner::Tone(engine) => engine.sql(sql).await?,
            Runner::DataFusion(context) => context.sql(sql).await?.collect().await?,
            Runner::Cluster { client, partitions } => client
                .sql(sql, &[], *partitions)
                .await
                .map_err(|error| EngineError::Execution {
                    message: error.to_string(),
                })?,
        };
        Ok(batches.iter().map(|batch| batch.num_rows()).sum())
    }
}

/// The queries to run: from `dir` when given, else the built-in texts.
fn load_queries(dir: Option<&Path>, only: &[String]) -> Result<Vec<(String, String)>, CliError> {
    if let Some(unknown) = only
        .iter()
        .find(|name| !QUERIES.iter().any(|(known, _)| known == *name))
    {
        return Err(CliError::Usage(format!(
            "--only: no query named '{unknown}' (q01 … q22)"
        )));
    }
    let mut queries = Vec::new();
    for (name, builtin) in QUERIES {
        if !only.is_empty() && !only.iter().any(|wanted| wanted == name) {
            continue;
        }
        let sql = match dir {
            None => builtin.to_string(),
            Some(dir) => {
                let path = dir.join(format!("{name}.sql"));
                std::fs::read_to_string(&path).map_err(|error| {
                    CliError::Usage(format!("cannot read query {}: {error}", path.display()))
                })?
            }
        };
        queries.push((name.to_string(), sql));
    }
    Ok(queries)
}

pub(super) fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    let middle = times.len() / 2;
    if times.len() % 2 == 0 {
        (times[middle - 1] + times[middle]) / 2.0
    } else {
        times[middle]
    }
}

fn print_report(all: &[EngineFigures]) {
    let Some(first) = all.first() else { return };
    let header: Vec<String> = all
        .iter()
        .map(|figures| format!("{:?}", figures.engine))
        .collect();
    println!(
        "{:<6} {}",
        "query",
        header
            .iter()
            .map(|h| format!("{h:>12}"))
            .collect::<String>()
    );
    for name in first.queries.keys() {
        let cells: String = all
            .iter()
            .map(|figures| {
                figures.queries.get(name).map_or_else(
                    || format!("{:>12}", "-"),
                    |q| format!("{:>11.3}s", q.median_s),
                )
            })
            .collect();
        println!("{name:<6} {cells}");
    }
    let totals: String = all
        .iter()
        .map(|figures| format!("{:>11.3}s", figures.total_median_s))
        .collect();
    println!("{:<6} {totals}", "total");
    if all.len() > 1 {
        let baseline = all[all.len() - 1].total_median_s;
        for figures in &all[..all.len() - 1] {
            println!(
                "ratio {:?}/{:?}: {:.2}×",
                figures.engine,
                all[all.len() - 1].engine,
                figures.total_median_s / baseline
            );
        }
    }
}
