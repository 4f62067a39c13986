//! Fixtures shared by the integration tests: generated TPC-H data, the
//! oracle (plain DataFusion) and result comparison.

pub mod compare;
pub mod http;
pub mod netns;
pub mod node;
pub mod s3;
pub mod venv;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use tone::{Engine, EngineConfig};

/// Scale of the TPC-H data the tests use.
pub const TPCH_SCALE: &str = "0.1";

/// The `tone` binary under test.
/// A port that was free a moment ago (bound to 0, then let go), for a
/// process that must listen where the test knows.
/// Never the same port twice in this test process: tests run in
/// parallel, and two of them handed one port would race to bind it.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<std::sync::Mutex<std::collections::HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        let mut handed_out = handed_out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if handed_out.insert(port) {
            return port;
        }
    }
}

pub fn tone() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tone"))
}

/// Runs `tone` with `args` and returns its output.
pub fn run_tone(args: &[&str]) -> Output {
    tone().args(args).output().expect("the tone binary runs")
}

/// Runs `command` (in its own process group) to its end and returns its
/// output; if it is still running after `within`, kills it and fails
/// naming `what`. For "fails promptly, never hangs": a generous deadline
/// on the command ending, not a bound on how long it took.
pub fn output_within(command: &mut Command, within: std::time::Duration, what: &str) -> Output {
    use std::os::unix::process::CommandExt;
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("the command starts");
    let group = format!("-{}", child.id());
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(within) {
        Ok(output) => output.expect("the command's output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            panic!("waiting for {what} to end: still running after {within:?}")
        }
    }
}

/// The address a coordinator started with piped stdout prints on its
/// first line (`coordinator: listening on ADDRESS`).
pub fn listen_address(coordinator: &mut Child) -> String {
    let stdout = coordinator.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reads the listen line");
    line.trim()
        .strip_prefix("coordinator: listening on ")
        .unwrap_or_else(|| panic!("the coordinator did not start: {line}"))
        .to_string()
}

/// TPC-H data at [`TPCH_SCALE`], generated once by `tone gen tpch` and kept
/// under the cargo target tmp dir between runs.
pub fn tpch_data() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| generated_tpch(TPCH_SCALE))
}

/// TPC-H data at scale 0.01, for tests that run many small queries.
pub fn tiny_tpch_data() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| generated_tpch("0.01"))
}

/// Generates TPC-H data at `scale` unless an earlier run of the same
/// generator left it complete; data of other generator versions is
/// removed.
fn generated_tpch(scale: &str) -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let name = format!("tpch-sf{scale}-{}", generator_key());
    let dir = tmp.join(&name);
    let done = dir.join(".complete");
    if !done.exists() {
        let stale = format!("tpch-sf{scale}");
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let entry_name = entry.file_name().to_string_lossy().into_owned();
            let older = entry_name == stale || entry_name.starts_with(&format!("{stale}-"));
            if older && entry_name != name {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        let out = dir.to_str().expect("utf-8 temp path");
        let output = run_tone(&[
            "gen", "tpch", "--scale", scale, "--out", out, "--parts", "2",
        ]);
        assert!(
            output.status.success(),
            "tone gen failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(&done, b"").expect("mark data complete");
    }
    dir
}

/// What the generated data depends on: the locked versions of the
/// generator crates and tone's code that drives them.
fn generator_key() -> String {
    use std::hash::{Hash, Hasher};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).expect("Cargo.lock");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("name = \"tpchgen") {
            (line, lines.next()).hash(&mut hasher);
        }
    }
    for source in ["src/tpch.rs", "src/cli/gen.rs"] {
        let text = std::fs::read_to_string(root.join(source)).expect("generator source");
        text.hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

/// The 22 TPC-H query texts.
pub fn tpch_queries() -> Vec<(String, String)> {
    tone_cli::tpch::QUERIES
        .iter()
        .map(|(name, sql)| (name.to_string(), sql.to_string()))
        .collect()
}

/// An embedded tone engine over the TPC-H tables.
pub async fn tone_engine(partitions: usize) -> Engine {
    tone_engine_over(partitions, tpch_data()).await
}

/// An embedded tone engine over the tables in `dir`.
pub async fn tone_engine_over(partitions: usize, dir: &Path) -> Engine {
    let config = EngineConfig {
        partitions,
        ..EngineConfig::default()
    };
    tone_engine_with(config, dir).await
}

/// An embedded tone engine with `config`, over the tables in `dir`.
pub async fn tone_engine_with(config: EngineConfig, dir: &Path) -> Engine {
    let engine = Engine::new(config).expect("engine starts");
    engine
        .register_data_dir(dir)
        .await
        .expect("tables register");
    engine
}

/// The oracle: plain single-process DataFusion over the same tables.
pub async fn oracle_context() -> SessionContext {
    oracle_context_over(tpch_data()).await
}

/// Plain DataFusion over the tables in `dir`.
pub async fn oracle_context_over(dir: &Path) -> SessionContext {
    oracle_context_with(SessionContext::new(), dir).await
}

/// Plain DataFusion at `partitions` target partitions, over `dir`.
pub async fn oracle_context_at(partitions: usize, dir: &Path) -> SessionContext {
    let config = datafusion::prelude::SessionConfig::new().with_target_partitions(partitions);
    oracle_context_with(SessionContext::new_with_config(config), dir).await
}

async fn oracle_context_with(context: SessionContext, dir: &Path) -> SessionContext {
    tone_engine::session::register_data_dir(&context, dir)
        .await
        .expect("tables register");
    context
}

pub async fn oracle_answer(context: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    context
        .sql(sql)
        .await
        .expect("oracle plans")
        .collect()
        .await
        .expect("oracle runs")
}

/// Waits until `condition` holds, checking every 50 ms; fails naming
/// `what` if it does not within `within` (a generous deadline, not a
/// bound on how long it took).
pub async fn wait_for<F, Fut>(within: std::time::Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "waiting for {what}: not within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Follows a submitted job from another task, as a client waiting on it
/// would: every status it sees goes to the receiver; the task ends with
/// the final status and the rows (the job released).
pub fn follow_job(
    client: &tone::cluster::ClusterClient,
    job_id: &str,
) -> (
    tokio::task::JoinHandle<
        Result<(tone_proto::v1::JobStatus, Vec<RecordBatch>), tone::cluster::ClusterError>,
    >,
    tokio::sync::mpsc::UnboundedReceiver<tone_proto::v1::JobStatus>,
) {
    use futures::TryStreamExt;
    let (seen, statuses) = tokio::sync::mpsc::unbounded_channel();
    let (client, job_id) = (client.clone(), job_id.to_string());
    let follower = tokio::spawn(async move {
        let status = client
            .wait(&job_id, |status| {
                let _ = seen.send(status.clone());
            })
            .await?;
        let rows: Vec<RecordBatch> =
            client
                .results(&status)?
                .try_collect()
                .await
                .map_err(|error| tone::cluster::ClusterError::Results {
                    message: error.to_string(),
                })?;
        client.release(&job_id).await?;
        Ok((status, rows))
    });
    (follower, statuses)
}

/// The first status from `statuses` with at least `stages` stages done.
pub async fn when_stages_done(
    statuses: &mut tokio::sync::mpsc::UnboundedReceiver<tone_proto::v1::JobStatus>,
    stages: u32,
    within: std::time::Duration,
) -> tone_proto::v1::JobStatus {
    loop {
        let status = tokio::time::timeout(within, statuses.recv())
            .await
            .expect("the job progresses")
            .expect("the job runs until then");
        if status.stages_done >= stages {
            return status;
        }
    }
}
