//! `tone coordinator`, `tone worker` and `tone local-cluster`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use clap::Args;
use tone_coordinator::{CoordinatorConfig, CoordinatorSecurity, DEFAULT_LISTEN};
use tone_engine::paths::PathRoots;
use tone_proto::security::{tokens, ClientSecurity, ClientTls, ServerTls, TokenSet};
use tone_worker::{WorkerConfig, WorkerSecurity};

use super::CliError;
use tone_engine::limits::parse_size;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  tone coordinator --listen 127.0.0.1:50050")]
pub struct CoordinatorArgs {
    /// Address to serve clients and workers on (port 0: any free port).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Folder for durable job and catalog state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Delete a stored job binary once it has not been uploaded, checked,
    /// fetched or named by a job for this long; never while a job that
    /// names it has not ended.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub binary_ttl: u64,
    /// Space the stored job binaries (and Rust jobs' replayed results) may
    /// take, e.g. 16G; an upload past it is refused and removed.
    #[arg(long, value_name = "SIZE", default_value = "16G", value_parser = parse_size)]
    pub binary_store_limit: u64,
    /// Store job binaries in this folder, which every coordinator of a
    /// high-availability group must reach [default: DIR/binaries of
    /// --state-dir, else a temporary folder].
    #[arg(long, value_name = "DIR")]
    pub binary_store: Option<PathBuf>,
    #[command(flatten)]
    pub ui: UiArgs,
    #[command(flatten)]
    pub flight_sql: super::flight_sql::FlightSqlArgs,
    #[command(flatten)]
    pub ha: HaArgs,
    #[command(flatten)]
    pub security: CoordinatorSecurityArgs,
    #[command(flatten)]
    pub failures: FailureArgs,
    #[command(flatten)]
    pub planning: PlanningArgs,
}

/// The web UI, `/metrics` and the event log.
#[derive(Debug, Clone, Args)]
pub struct UiArgs {
    /// Serve the web UI, its JSON API and Prometheus `/metrics` here
    /// [default: the port after --listen's, or any free port when that is 0].
    #[arg(long, value_name = "ADDR", conflicts_with = "no_ui")]
    pub ui_listen: Option<SocketAddr>,
    /// Serve no web UI (and no `/metrics`).
    #[arg(long)]
    pub no_ui: bool,
    /// Ended jobs whose pages the web UI keeps.
    #[arg(long, value_name = "N", default_value_t = tone_coordinator::DEFAULT_RETAINED_JOBS)]
    pub ui_retained_jobs: usize,
    /// Write every job's events (submitted, planned, tasks, end) to
    /// <job id>.jsonl in a folder or under an object-store URL
    /// (`s3://bucket/logs`: put whole again at most every second) as it
    /// runs, for `tone history`.
    #[arg(long, value_name = "DIR|URL")]
    pub event_log: Option<String>,
}

/// High availability: several coordinators, one leading, on etcd.
#[derive(Debug, Clone, Args)]
pub struct HaArgs {
    /// etcd client URLs (http://HOST:PORT, comma-separated): this
    /// coordinator joins a group there, leads or stands by, and keeps job
    /// state in etcd instead of --state-dir.
    #[arg(
        long,
        value_name = "URLS",
        value_delimiter = ',',
        conflicts_with = "state_dir"
    )]
    pub ha_etcd: Vec<String>,
    /// The group's keys in etcd.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "/tone/default",
        requires = "ha_etcd"
    )]
    pub ha_prefix: String,
    /// Seconds the leader's etcd lease lives without a refresh: a dead or
    /// frozen leader is replaced within about this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=60), requires = "ha_etcd")]
    pub ha_lease_ttl: u64,
    /// The URL clients and workers reach this coordinator at, told to
    /// them by standbys [default: http://LISTEN address].
    #[arg(long, value_name = "URL", requires = "ha_etcd")]
    pub advertise: Option<String>,
}

impl HaArgs {
    fn config(&self, listening: SocketAddr, tls: bool) -> Option<tone_coordinator::HaConfig> {
        if self.ha_etcd.is_empty() {
            return None;
        }
        let scheme = if tls { "https" } else { "http" };
        Some(tone_coordinator::HaConfig {
            endpoints: self.ha_etcd.clone(),
            prefix: self.ha_prefix.trim_end_matches('/').to_string(),
            lease_ttl: std::time::Duration::from_secs(self.ha_lease_ttl),
            advertise: self
                .advertise
                .clone()
                .unwrap_or_else(|| format!("{scheme}://{listening}")),
        })
    }
}

/// TLS, tokens and path roots of the coordinator.
#[derive(Debug, Clone, Args)]
pub struct CoordinatorSecurityArgs {
    /// Serve TLS with this certificate (PEM) [default: plaintext].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: clients and workers must present a certificate signed
    /// by this CA.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Tokens (one per line) that let a process register as a worker.
    #[arg(long, value_name = "FILE", requires = "client_token_file")]
    pub worker_token_file: Option<PathBuf>,
    /// Tokens (one per line) that let a client submit, list, cancel and
    /// read results.
    #[arg(long, value_name = "FILE", requires = "worker_token_file")]
    pub client_token_file: Option<PathBuf>,
    /// With tokens: let client tokens upload Rust job binaries and run jobs
    /// with executors (off by default: that runs the client's code on
    /// every worker). Without tokens anyone may, as anyone may do anything.
    #[arg(long)]
    pub allow_binaries: bool,
    /// Jobs may only read, write and work under these paths or object-store
    /// prefixes (repeat it) [default: anywhere].
    #[arg(long = "allow-path", value_name = "PREFIX")]
    pub allow_paths: Vec<String>,
}

impl CoordinatorSecurityArgs {
    fn load(&self) -> Result<CoordinatorSecurity, CliError> {
        let usage = |error: tone_proto::security::SecurityError| CliError::Usage(error.to_string());
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(ServerTls::load(cert, key, self.tls_client_ca.as_deref()).map_err(usage)?)
            }
            _ => None,
        };
        let read = |path: &Option<PathBuf>| match path {
            Some(path) => tokens::read_token_file(path).map_err(usage),
            None => Ok(Vec::new()),
        };
        let tokens = TokenSet::new(
            &read(&self.worker_token_file)?,
            &read(&self.client_token_file)?,
        )
        .map_err(usage)?;
        Ok(CoordinatorSecurity {
            tls,
            tokens,
            allow_binaries: self.allow_binaries,
            path_roots: path_roots(&self.allow_paths)?,
        })
    }
}

fn path_roots(prefixes: &[String]) -> Result<PathRoots, CliError> {
    PathRoots::new(prefixes).map_err(|error| CliError::Usage(error.to_string()))
}

/// How the coordinator treats lost workers and failed tasks.
#[derive(Debug, Clone, Args)]
pub struct FailureArgs {
    /// A worker without a heartbeat for this long is taken as lost.
    #[arg(long, default_value_t = 10_000)]
    pub heartbeat_timeout_ms: u64,
    /// Attempts of one task before its job fails.
    #[arg(long, default_value_t = 4)]
    pub max_task_attempts: u32,
    /// A job that has work but no worker for this long fails.
    #[arg(long, default_value_t = 30_000)]
    pub no_worker_grace_ms: u64,
    /// Ended jobs the coordinator keeps listing; older ones are dropped
    /// from memory (the state store keeps them).
    #[arg(long, default_value_t = tone_coordinator::DEFAULT_JOB_HISTORY, value_name = "N")]
    pub job_history: usize,
    /// Backup attempts for stragglers: a task running longer than 1.5× its
    /// stage's median (and at least 1 s) once 75% of the stage is done
    /// gets a second attempt on another worker; the first to finish wins.
    #[arg(long, value_enum, default_value = "on", value_name = "on|off")]
    pub speculation: Switch,
}

/// How the coordinator plans queries.
#[derive(Debug, Clone, Args)]
pub struct PlanningArgs {
    /// Adaptive decisions: join reordering when planning, and laying out
    /// each stage from its inputs' sizes (coalescing small partitions,
    /// splitting skewed ones and join build sides too big for a task's
    /// memory) before it runs; a statement may still turn each on or off
    /// (`SET tone.join_reorder = true`).
    #[arg(long, value_enum, default_value = "on", value_name = "on|off")]
    pub aqe: Switch,
}

impl PlanningArgs {
    pub fn adaptive(&self) -> tone_engine::adaptive::Adaptive {
        self.aqe.adaptive()
    }

    fn to_args(&self) -> Vec<String> {
        vec!["--aqe".into(), self.aqe.as_str().into()]
    }
}

/// A feature flag's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    /// The adaptive decisions this switch leaves on.
    pub fn adaptive(self) -> tone_engine::adaptive::Adaptive {
        match self {
            Switch::On => tone_engine::adaptive::Adaptive::ON,
            Switch::Off => tone_engine::adaptive::Adaptive::OFF,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Switch::On => "on",
            Switch::Off => "off",
        }
    }
}

impl FailureArgs {
    fn scheduler(&self) -> tone_coordinator::SchedulerConfig {
        tone_coordinator::SchedulerConfig {
            heartbeat_timeout: std::time::Duration::from_millis(self.heartbeat_timeout_ms.max(1)),
            max_task_attempts: self.max_task_attempts.max(1),
            no_worker_grace: std::time::Duration::from_millis(self.no_worker_grace_ms),
            job_history: self.job_history.max(1),
            speculation: (self.speculation == Switch::On)
                .then(tone_coordinator::Speculation::default),
            ..tone_coordinator::SchedulerConfig::default()
        }
    }

    fn to_args(&self) -> Vec<String> {
        vec![
            "--heartbeat-timeout-ms".into(),
            self.heartbeat_timeout_ms.to_string(),
            "--max-task-attempts".into(),
            self.max_task_attempts.to_string(),
            "--no-worker-grace-ms".into(),
            self.no_worker_grace_ms.to_string(),
            "--job-history".into(),
            self.job_history.to_string(),
            "--speculation".into(),
            self.speculation.as_str().into(),
        ]
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  tone worker --coordinator http://127.0.0.1:50050 --slots 2")]
pub struct WorkerArgs {
    /// The coordinator's URL.
    #[arg(long, env = "TONE_MASTER", value_name = "URL")]
    pub coordinator: String,
    /// Address of this worker's shuffle service (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The address the coordinator and other workers reach this worker at,
    /// when it differs from --listen (NAT, containers): HOST keeps the
    /// bound port, HOST:PORT sets both.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub advertise: Option<String>,
    /// Tasks run at once [default: number of cores].
    #[arg(long)]
    pub slots: Option<usize>,
    /// Folder for shuffle files [default: a temporary folder].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Compression of shuffle files.
    #[arg(long, value_enum, default_value = "lz4")]
    pub shuffle_compression: ShuffleCompression,
    #[command(flatten)]
    pub limits: WorkerLimitArgs,
    #[command(flatten)]
    pub security: WorkerSecurityArgs,
    /// Serve Prometheus `/metrics` here: tasks, shuffle bytes, memory,
    /// spill, disk and executors (with --token-file, scrapes must send
    /// that token as a bearer token).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

/// TLS, the token and path roots of a worker.
#[derive(Debug, Clone, Args)]
pub struct WorkerSecurityArgs {
    /// Serve the worker's shuffle service with TLS, and present this
    /// certificate to the coordinator and other workers (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA that signed the coordinator's and the other workers' certificates.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: readers of the shuffle service must present a
    /// certificate signed by this CA.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// File holding the worker's token [default: TONE_TOKEN_FILE, or the
    /// token itself in TONE_TOKEN].
    #[arg(long, env = "TONE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Tasks may only read, write and work under these paths or
    /// object-store prefixes (repeat it) [default: anywhere].
    #[arg(long = "allow-path", value_name = "PREFIX")]
    pub allow_paths: Vec<String>,
}

impl WorkerSecurityArgs {
    fn load(&self) -> Result<WorkerSecurity, CliError> {
        let usage = |error: tone_proto::security::SecurityError| CliError::Usage(error.to_string());
        let (tls, client_tls) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let server =
                    ServerTls::load(cert, key, self.tls_client_ca.as_deref()).map_err(usage)?;
                let client = match &self.tls_ca {
                    Some(ca) => Some(ClientTls::load(ca, Some((cert, key))).map_err(usage)?),
                    None => None,
                };
                (Some(server), client)
            }
            _ => (
                None,
                match &self.tls_ca {
                    Some(ca) => Some(ClientTls::load(ca, None).map_err(usage)?),
                    None => None,
                },
            ),
        };
        Ok(WorkerSecurity {
            tls,
            client: ClientSecurity {
                tls: client_tls,
                token: tokens::client_token(self.token_file.as_deref()).map_err(usage)?,
            },
            path_roots: path_roots(&self.allow_paths)?,
        })
    }
}

/// Memory, disk and executor limits of a worker (also given to
/// local-cluster's).
#[derive(Debug, Clone, Args)]
pub struct WorkerLimitArgs {
    /// Memory for running tasks, e.g. 512M or 4G: sorts, aggregates and
    /// joins spill to disk past it, and work that still does not fit fails
    /// with a resources error [default: unlimited].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: Option<u64>,
    /// Disk for shuffle files, e.g. 20G: a task whose output would pass it
    /// fails with a resources error [default: unlimited].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub disk_limit: Option<u64>,
    /// Executor processes (jobs with Rust closures) run at once: a job
    /// that needs one more waits until a job's release stops one.
    #[arg(long, value_name = "N", default_value_t = tone_worker::DEFAULT_MAX_EXECUTORS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_executors: usize,
    /// Job binaries kept in the worker's cache; the least recently used
    /// ones no executor runs are deleted when a new one is fetched.
    #[arg(long, value_name = "N", default_value_t = tone_worker::DEFAULT_BINARY_CACHE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub binary_cache: usize,
}

impl WorkerLimitArgs {
    /// The same flags, for a worker process started by local-cluster.
    fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(bytes) = self.memory_limit {
            args.extend(["--memory-limit".to_string(), bytes.to_string()]);
        }
        if let Some(bytes) = self.disk_limit {
            args.extend(["--disk-limit".to_string(), bytes.to_string()]);
        }
        args.extend([
            "--max-executors".to_string(),
            self.max_executors.to_string(),
        ]);
        args.extend(["--binary-cache".to_string(), self.binary_cache.to_string()]);
        args
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShuffleCompression {
    None,
    Lz4,
    Zstd,
}

impl ShuffleCompression {
    fn codec(self) -> Option<arrow::ipc::CompressionType> {
        match self {
            ShuffleCompression::None => None,
            ShuffleCompression::Lz4 => Some(arrow::ipc::CompressionType::LZ4_FRAME),
            ShuffleCompression::Zstd => Some(arrow::ipc::CompressionType::ZSTD),
        }
    }

    fn name(self) -> &'static str {
        match self {
            ShuffleCompression::None => "none",
            ShuffleCompression::Lz4 => "lz4",
            ShuffleCompression::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  tone local-cluster --workers 2 --port 0")]
pub struct LocalClusterArgs {
    /// Number of worker processes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Slots per worker [default: cores / workers, at least 1].
    #[arg(long)]
    pub slots: Option<usize>,
    /// Coordinator port (0: any free port).
    #[arg(long, default_value_t = 50050)]
    pub port: u16,
    /// Compression of the workers' shuffle files.
    #[arg(long, value_enum, default_value = "lz4")]
    pub shuffle_compression: ShuffleCompression,
    /// TLS everywhere and tokens: certificates and a worker and a client
    /// token are made in a temporary folder; what a client needs is printed.
    #[arg(long)]
    pub secure: bool,
    /// Let clients run Rust job binaries (with --secure; see `tone
    /// coordinator --allow-binaries`).
    #[arg(long)]
    pub allow_binaries: bool,
    /// Serve Arrow Flight SQL here (see `tone coordinator
    /// --flight-sql-listen`).
    #[arg(long, value_name = "ADDR")]
    pub flight_sql_listen: Option<SocketAddr>,
    /// Stream Flight SQL results through the coordinator.
    #[arg(long, requires = "flight_sql_listen")]
    pub flight_sql_proxy: bool,
    #[command(flatten)]
    pub failures: FailureArgs,
    #[command(flatten)]
    pub planning: PlanningArgs,
    #[command(flatten)]
    pub limits: WorkerLimitArgs,
}

/// The certificates and tokens of a `local-cluster --secure`.
struct SecureFiles {
    dir: tempfile::TempDir,
    certs: tone_proto::security::certs::CertificateFiles,
    worker_token: PathBuf,
    client_token: PathBuf,
}

impl SecureFiles {
    fn create() -> Result<Self, CliError> {
        use tone_proto::security::{certs, Token};
        let usage = |error: tone_proto::security::SecurityError| CliError::Usage(error.to_string());
        let dir = tempfile::Builder::new()
            .prefix("tone-secure-")
            .tempdir()
            .map_err(|source| CliError::Io {
                context: "creating the folder for certificates".into(),
                source,
            })?;
        let set = certs::generate(&["localhost".into(), "127.0.0.1".into()]).map_err(usage)?;
        let files = certs::write(&set, dir.path()).map_err(usage)?;
        let token = |name: &str| -> Result<PathBuf, CliError> {
            let path = dir.path().join(name);
            let token = Token::generate().map_err(usage)?;
            certs::write_file(&path, &format!("{}\n", token.secret()), true).map_err(usage)?;
            Ok(path)
        };
        Ok(Self {
            certs: files,
            worker_token: token("worker.token")?,
            client_token: token("client.token")?,
            dir,
        })
    }

    fn coordinator_args(&self) -> Vec<std::ffi::OsString> {
        [
            ("--tls-cert", &self.certs.node_cert),
            ("--tls-key", &self.certs.node_key),
            ("--worker-token-file", &self.worker_token),
            ("--client-token-file", &self.client_token),
        ]
        .into_iter()
        .flat_map(|(flag, path)| [flag.into(), path.as_os_str().to_owned()])
        .collect()
    }

    fn worker_args(&self) -> Vec<std::ffi::OsString> {
        [
            ("--tls-cert", &self.certs.node_cert),
            ("--tls-key", &self.certs.node_key),
            ("--tls-ca", &self.certs.ca_cert),
            ("--token-file", &self.worker_token),
        ]
        .into_iter()
        .flat_map(|(flag, path)| [flag.into(), path.as_os_str().to_owned()])
        .collect()
    }
}

pub async fn coordinator(args: CoordinatorArgs) -> Result<(), CliError> {
    // Before anything is made that a signal would leave behind.
    let mut signals = ShutdownSignals::install().map_err(|source| CliError::Io {
        context: "installing the Ctrl-C handler".into(),
        source,
    })?;
    let mut config = CoordinatorConfig {
        listen: args.listen,
        state_dir: args.state_dir,
        scheduler: args.failures.scheduler(),
        binary_ttl: std::time::Duration::from_secs(args.binary_ttl),
        binary_store_limit_bytes: args.binary_store_limit,
        security: args.security.load()?,
        binary_store: args.binary_store,
        ha: None,
        ui: None,
        event_log: args.ui.event_log,
        ui_retained_jobs: args.ui.ui_retained_jobs,
        flight_sql: None,
        adaptive: args.planning.adaptive(),
    };
    let (address, listener) = tone_coordinator::bind(&config)
        .await
        .map_err(daemon_error)?;
    config.ha = args.ha.config(address, config.security.tls.is_some());
    // The first stdout line tells scripts (and local-cluster) where we
    // are, the second where the web UI is; one write, so a reader that
    // takes the first line and closes the pipe cannot fail a later one.
    let mut announce = format!("coordinator: listening on {address}\n");
    if !args.ui.no_ui {
        let (ui_address, ui) = bind_ui(args.ui.ui_listen, args.listen, address)?;
        config.ui = Some(ui);
        let scheme = if config.security.tls.is_some() {
            "https"
        } else {
            "http"
        };
        announce.push_str(&format!("ui: listening on {scheme}://{ui_address}\n"));
    }
    let tls_files = match (&args.security.tls_cert, &args.security.tls_key) {
        (Some(cert), Some(key)) => Some((cert, key, args.security.tls_client_ca.as_ref())),
        _ => None,
    };
    if let Some((flight_address, flight_sql)) = args.flight_sql.bind(tls_files)? {
        config.flight_sql = Some(flight_sql);
        let scheme = if tls_files.is_some() {
            "grpc+tls"
        } else {
            "grpc+tcp"
        };
        announce.push_str(&format!(
            "flight-sql: listening on {scheme}://{flight_address}\n"
        ));
    }
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let written = stdout
            .write_all(announce.as_bytes())
            .and_then(|()| stdout.flush());
        written.map_err(|source| CliError::Io {
            context: "announcing the listen address".into(),
            source,
        })?;
    }
    let secure = &config.security;
    if let Some(warning) = tone_proto::security::exposure_warning(
        address,
        secure.tls.is_some(),
        secure.tokens.enabled(),
    ) {
        eprintln!("tone: {warning}");
    }
    tone_coordinator::serve(&config, listener, async move { signals.recv().await })
        .await
        .map_err(daemon_error)
}

/// The web UI's listener: where --ui-listen says (an error when that is
/// taken), else the port after the gRPC one, or any free port when that
/// one is taken too (said on stderr; the stdout line names it).
fn bind_ui(
    wanted: Option<SocketAddr>,
    listen: SocketAddr,
    bound: SocketAddr,
) -> Result<(SocketAddr, tone_coordinator::UiListener), CliError> {
    if let Some(wanted) = wanted {
        return tone_coordinator::UiListener::bind(wanted).map_err(daemon_error);
    }
    // Port 0 asked for any port: so does the UI.
    let next = match listen.port() {
        0 => SocketAddr::new(bound.ip(), 0),
        _ => tone_coordinator::default_ui_address(bound),
    };
    tone_coordinator::UiListener::bind(next).or_else(|error| {
        eprintln!("tone: {error}; the web UI takes any free port instead (--ui-listen sets one)");
        tone_coordinator::UiListener::bind(SocketAddr::new(next.ip(), 0)).map_err(daemon_error)
    })
}

pub async fn worker(args: WorkerArgs) -> Result<(), CliError> {
    // Before the work dir exists: a signal from now on removes it.
    // SIGTERM drains (finish running tasks, take no new ones); Ctrl-C, or
    // a second SIGTERM, stops at once.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|source| CliError::Io {
        context: "installing the Ctrl-C handler".into(),
        source,
    })?;
    let (first_term, second_term) = terminate_signals();
    let cores = std::thread::available_parallelism().map_or(2, |count| count.get());
    // Kept alive until the worker stops; a temporary work dir goes with it.
    let (work_dir, _temporary) = match &args.work_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("tone-worker-")
                .tempdir()
                .map_err(|source| CliError::Io {
                    context: "creating the work dir".into(),
                    source,
                })?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    let config = WorkerConfig {
        coordinator_url: args.coordinator,
        listen: args.listen,
        advertise: args.advertise,
        slots: args.slots.unwrap_or(cores),
        work_dir,
        shuffle_compression: args.shuffle_compression.codec(),
        memory_limit_bytes: args.limits.memory_limit,
        disk_limit_bytes: args.limits.disk_limit,
        max_executors: args.limits.max_executors,
        binary_cache: args.limits.binary_cache,
        security: args.security.load()?,
        metrics_listen: args.metrics_listen,
    };
    let secure = &config.security;
    if let Some(warning) = tone_proto::security::exposure_warning(
        args.listen,
        secure.tls.is_some(),
        secure.client.token.is_some(),
    ) {
        eprintln!("tone: {warning}");
    }
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = second_term => {}
        }
    };
    tone_worker::run(config, shutdown, first_term)
        .await
        .map_err(daemon_error)
}

/// Two futures: the first SIGTERM, and the second.
fn terminate_signals() -> (
    impl std::future::Future<Output = ()>,
    impl std::future::Future<Output = ()>,
) {
    let (first_sender, first) = tokio::sync::oneshot::channel::<()>();
    let (second_sender, second) = tokio::sync::oneshot::channel::<()>();
    if let Ok(mut signal) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::spawn(async move {
            signal.recv().await;
            let _ = first_sender.send(());
            signal.recv().await;
            let _ = second_sender.send(());
        });
    }
    let wait = |receiver: tokio::sync::oneshot::Receiver<()>| async move {
        if receiver.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    (wait(first), wait(second))
}

fn daemon_error(error: impl std::fmt::Display) -> CliError {
    CliError::Usage(error.to_string())
}

/// Ctrl-C and SIGTERM, caught from the moment they are installed (a
/// signal before then would end the process with its children left).
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Child processes that are stopped, and their work dirs removed, however
/// the local cluster ends.
struct Processes {
    children: Vec<Child>,
    _work_dirs: Vec<tempfile::TempDir>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

pub async fn local_cluster(args: LocalClusterArgs) -> Result<(), CliError> {
    if args.workers == 0 {
        return Err(CliError::Usage("--workers must be at least 1".into()));
    }
    let cores = std::thread::available_parallelism().map_or(2, |count| count.get());
    let slots = args.slots.unwrap_or((cores / args.workers).max(1));
    // Before any child starts: a Ctrl-C from now on stops them all.
    let mut signals = ShutdownSignals::install().map_err(|source| CliError::Io {
        context: "installing the Ctrl-C handler".into(),
        source,
    })?;
    let program = std::env::current_exe().map_err(|source| CliError::Io {
        context: "finding the tone binary".into(),
        source,
    })?;
    let mut processes = Processes {
        children: Vec::new(),
        _work_dirs: Vec::new(),
    };
    let secure = args.secure.then(SecureFiles::create).transpose()?;
    let mut coordinator = Command::new(&program)
        .args([
            "coordinator",
            "--listen",
            &format!("127.0.0.1:{}", args.port),
        ])
        .args(args.failures.to_args())
        .args(args.planning.to_args())
        .args(secure.iter().flat_map(SecureFiles::coordinator_args))
        .args(args.allow_binaries.then_some("--allow-binaries"))
        .args(flight_sql_args(&args, secure.as_ref()))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| CliError::Io {
            context: "starting the coordinator".into(),
            source,
        })?;
    let stdout = coordinator.stdout.take();
    processes.children.push(coordinator);
    let (address, ui, flight_sql) = read_listen_address(stdout, args.flight_sql_listen.is_some())?;
    let scheme = if secure.is_some() { "https" } else { "http" };
    let master = format!("{scheme}://{address}");
    // Scripts read these lines (master, then tls-ca and token-file when
    // secure, then ui) and may close the pipe: one write, and a reader
    // that went away does not stop the cluster.
    let mut announce = format!("master: {master}\n");
    if let Some(secure) = &secure {
        announce.push_str(&format!(
            "tls-ca: {}\ntoken-file: {}\n",
            secure.certs.ca_cert.display(),
            secure.client_token.display()
        ));
        eprintln!(
            "clients: TONE_MASTER={master} TONE_TLS_CA={} TONE_TOKEN_FILE={} tone jobs \
             (files in {}, removed when the cluster stops)",
            secure.certs.ca_cert.display(),
            secure.client_token.display(),
            secure.dir.path().display()
        );
    }
    if let Some(ui) = ui {
        announce.push_str(&format!("ui: {ui}\n"));
    }
    if let Some(flight_sql) = flight_sql {
        announce.push_str(&format!("flight-sql: {flight_sql}\n"));
    }
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_all(announce.as_bytes())
            .and_then(|()| stdout.flush());
    }
    for index in 0..args.workers {
        let work_dir = tempfile::Builder::new()
            .prefix(&format!("tone-local-worker-{index}-"))
            .tempdir()
            .map_err(|source| CliError::Io {
                context: "creating a work dir".into(),
                source,
            })?;
        let child = Command::new(&program)
            .arg("worker")
            .args(["--coordinator", &master])
            .args(["--slots", &slots.to_string()])
            .args(["--shuffle-compression", args.shuffle_compression.name()])
            .args(args.limits.to_args())
            .args(secure.iter().flat_map(SecureFiles::worker_args))
            .arg("--work-dir")
            .arg(work_dir.path())
            .spawn()
            .map_err(|source| CliError::Io {
                context: "starting a worker".into(),
                source,
            })?;
        processes.children.push(child);
        processes._work_dirs.push(work_dir);
    }
    eprintln!(
        "local cluster: coordinator at {address}, {} worker(s) × {slots} slot(s); Ctrl-C stops it",
        args.workers
    );
    signals.recv().await;
    eprintln!("stopping the local cluster");
    drop(processes);
    Ok(())
}

/// The coordinator's Flight SQL flags of a local cluster.
fn flight_sql_args(
    args: &LocalClusterArgs,
    secure: Option<&SecureFiles>,
) -> Vec<std::ffi::OsString> {
    let Some(listen) = args.flight_sql_listen else {
        return Vec::new();
    };
    let mut flags: Vec<std::ffi::OsString> =
        vec!["--flight-sql-listen".into(), listen.to_string().into()];
    if args.flight_sql_proxy {
        flags.push("--flight-sql-proxy".into());
    }
    if let Some(secure) = secure {
        flags.push("--workers-tls-ca".into());
        flags.push(secure.certs.ca_cert.as_os_str().to_owned());
    }
    flags
}

/// Reads the coordinator's first lines: `coordinator: listening on ADDR`,
/// `ui: listening on URL` (the coordinator runs with its UI) and, with
/// `flight_sql`, `flight-sql: listening on URL`.
fn read_listen_address(
    stdout: Option<std::process::ChildStdout>,
    flight_sql: bool,
) -> Result<(String, Option<String>, Option<String>), CliError> {
    let stdout = stdout.ok_or_else(|| CliError::Usage("the coordinator has no stdout".into()))?;
    let mut reader = BufReader::new(stdout);
    let mut read = || {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|source| CliError::Io {
                context: "reading the coordinator's address".into(),
                source,
            })
            .map(|_| line)
    };
    let line = read()?;
    let address = line
        .trim()
        .strip_prefix("coordinator: listening on ")
        .map(str::to_string)
        .ok_or_else(|| CliError::Usage(format!("the coordinator did not start: {line}")))?;
    let ui = read()?
        .trim()
        .strip_prefix("ui: listening on ")
        .map(str::to_string);
    let flight = match flight_sql {
        true => read()?
            .trim()
            .strip_prefix("flight-sql: listening on ")
            .map(str::to_string),
        false => None,
    };
    Ok((address, ui, flight))
}
