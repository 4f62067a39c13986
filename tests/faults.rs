//! Fault tolerance with real processes: a coordinator and workers started
//! one by one (each in its own process group), killed with SIGKILL, frozen
//! with SIGSTOP, drained with SIGTERM, or made to fail at chosen points
//! (`TONE_FAULT`). Every answer is checked against plain DataFusion.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use tone::cluster::{tables_in_dir, ClusterClient, ClusterError, TableRef};
use tone_proto::v1 as pb;

use crate::common::compare::same_answer;
use crate::common::{free_port, oracle_answer, oracle_context, tone, tpch_data, tpch_queries};

/// Any one job must end within this, faults or not.
const JOB_TIMEOUT: Duration = Duration::from_secs(90);
/// The chaos test's seed unless `TONE_CHAOS_SEED` names another.
const CHAOS_SEED: u64 = 0x5eed_c4a0;

/// A coordinator and workers as separate processes, all stopped on drop.
pub struct Cluster {
    coordinator: Option<Child>,
    pub address: String,
    pub master: String,
    coordinator_args: Vec<String>,
    coordinator_env: Vec<(String, String)>,
    workers: Vec<Child>,
    /// The workers' work dirs: a worker killed with SIGKILL cannot remove
    /// a temporary one of its own, so the test owns them.
    work_dirs: tempfile::TempDir,
}

impl Cluster {
    /// Starts a coordinator with `args` (on a free port) and no workers.
    pub fn coordinator(args: &[&str]) -> Self {
        Self::coordinator_with_env(args, &[])
    }

    /// Starts a coordinator with `args` and `env` and no workers.
    pub fn coordinator_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let (child, address) = spawn_coordinator("127.0.0.1:0", &args, &env);
        Self {
            coordinator: Some(child),
            master: format!("http://{address}"),
            address,
            coordinator_args: args,
            coordinator_env: env,
            workers: Vec::new(),
            work_dirs: tempfile::tempdir().expect("a temp dir for work dirs"),
        }
    }

    /// Starts a worker with one slot and `env`; returns its index.
    pub fn add_worker(&mut self, env: &[(&str, &str)]) -> usize {
        self.add_worker_with(env, &[])
    }

    /// Starts a worker with one slot, `env` and more arguments.
    pub fn add_worker_with(&mut self, env: &[(&str, &str)], args: &[&str]) -> usize {
        self.add_worker_logging(env, args, log_sink("worker"))
    }

    /// Starts a worker with one slot, `env` and more arguments, its
    /// stderr going to `stderr`.
    pub fn add_worker_logging(
        &mut self,
        env: &[(&str, &str)],
        args: &[&str],
        stderr: Stdio,
    ) -> usize {
        // Its own, never another worker's: a started worker clears what
        // it finds in its work dir.
        let work_dir = tempfile::Builder::new()
            .prefix("worker-")
            .tempdir_in(self.work_dirs.path())
            .expect("a work dir")
            .keep();
        let child = tone()
            .envs(env.iter().copied())
            .args(["worker", "--coordinator", &self.master, "--slots", "1"])
            .arg("--work-dir")
            .arg(&work_dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .expect("worker starts");
        self.workers.push(child);
        self.workers.len() - 1
    }

    pub fn worker_pid(&self, index: usize) -> u32 {
        self.workers[index].id()
    }

    /// SIGKILLs worker `index` and reaps it.
    pub fn kill_worker(&mut self, index: usize) {
        signal(self.workers[index].id(), "-KILL");
        let _ = self.workers[index].wait();
    }

    /// SIGKILLs the coordinator and starts it again on the same address
    /// with the same arguments (so a `--state-dir` is reused).
    pub fn restart_coordinator(&mut self) {
        self.kill_coordinator();
        self.start_coordinator();
    }

    /// Starts the coordinator (after a kill) on its address, with its
    /// arguments.
    pub fn start_coordinator(&mut self) {
        let (child, _) =
            spawn_coordinator(&self.address, &self.coordinator_args, &self.coordinator_env);
        self.coordinator = Some(child);
    }

    /// SIGKILLs the coordinator and reaps it.
    pub fn kill_coordinator(&mut self) {
        if let Some(mut old) = self.coordinator.take() {
            signal(old.id(), "-KILL");
            let _ = old.wait();
        }
    }

    pub async fn client(&self) -> ClusterClient {
        ClusterClient::connect(&self.master)
            .await
            .expect("coordinator reachable")
    }

    /// Waits until exactly `count` workers are registered.
    pub async fn wait_for_workers(&self, count: usize) {
        wait_until(Duration::from_secs(30), || async {
            match ClusterClient::connect(&self.master).await {
                Ok(client) => client.workers().await.map(|w| w.len()).ok() == Some(count),
                Err(_) => false,
            }
        })
        .await;
    }

    /// Waits for worker `index` to exit by itself and returns how.
    pub fn wait_exit(&mut self, index: usize, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.workers[index].try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker {index} did not exit in {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let children = self.workers.iter_mut().chain(self.coordinator.as_mut());
        for child in children {
            // A child already reaped (killed by the test) is skipped: its
            // pid may belong to another test's process by now.
            if !matches!(child.try_wait(), Ok(None)) {
                continue;
            }
            // Thawed first, in case a test stopped with it frozen.
            signal(child.id(), "-CONT");
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }
}

/// Where a process's stderr goes: nowhere, or with `TONE_TEST_LOGS=DIR`
/// a file there (for looking into a failure).
fn log_sink(name: &str) -> Stdio {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Some(dir) = std::env::var_os("TONE_TEST_LOGS") else {
        return Stdio::null();
    };
    let number = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::path::Path::new(&dir).join(format!("{name}-{number}.log"));
    std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

fn spawn_coordinator(listen: &str, args: &[String], env: &[(String, String)]) -> (Child, String) {
    let mut child = tone()
        .envs(env.iter().map(|(key, value)| (key, value)))
        .args(["coordinator", "--listen", listen])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(log_sink("coordinator"))
        .process_group(0)
        .spawn()
        .expect("coordinator starts");
    let address = crate::common::listen_address(&mut child);
    (child, address)
}

pub async fn wait_until<F, Fut>(within: Duration, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    crate::common::wait_for(within, "the condition", condition).await;
}

fn tpch_tables() -> Vec<TableRef> {
    tables_in_dir(tpch_data()).expect("list tables")
}

/// Runs `sql` to the end; returns its final status and rows.
pub(crate) async fn run_job(
    client: &ClusterClient,
    sql: &str,
    partitions: usize,
) -> Result<(pb::JobStatus, Vec<RecordBatch>), ClusterError> {
    let submitted =
        tokio::time::timeout(JOB_TIMEOUT, client.submit(sql, &tpch_tables(), partitions))
            .await
            .unwrap_or_else(|_| panic!("submission hung: {sql}"))?;
    finish_job(client, &submitted.job_id).await
}

/// Waits for a submitted job, reads its rows and releases it.
async fn finish_job(
    client: &ClusterClient,
    job_id: &str,
) -> Result<(pb::JobStatus, Vec<RecordBatch>), ClusterError> {
    let job = async {
        let status = client.wait(job_id, |_| {}).await?;
        let batches = client
            .results(&status)?
            .try_collect::<Vec<_>>()
            .await
            .map_err(|error| ClusterError::Results {
                message: error.to_string(),
            })?;
        client.release(job_id).await?;
        Ok((status, batches))
    };
    tokio::time::timeout(JOB_TIMEOUT, job)
        .await
        .unwrap_or_else(|_| panic!("job {job_id} hung"))
}

fn kinds(status: &pb::JobStatus) -> Vec<pb::ErrorKind> {
    status
        .failures
        .iter()
        .map(|f| pb::ErrorKind::try_from(f.kind).unwrap_or(pb::ErrorKind::Unspecified))
        .collect()
}

pub(crate) fn query(number: usize) -> String {
    tpch_queries()[number - 1].1.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_faults_fire_and_every_job_still_gets_the_right_answer() {
    let mut cluster = Cluster::coordinator(&[]);
    // Worker 0 dies right after writing its first map output; worker 1
    // fails its first task before it starts and its first remote fetch;
    // worker 2 is healthy.
    let crashing = cluster.add_worker(&[("TONE_FAULT", "after_write@*")]);
    cluster.add_worker(&[("TONE_FAULT", "before_task@*,fetch@*")]);
    cluster.add_worker(&[]);
    cluster.wait_for_workers(3).await;
    let client = cluster.client().await;
    let oracle = oracle_context().await;

    let sql = query(3); // scans, two joins, aggregate: several exchanges
    let (status, actual) = run_job(&client, &sql, 3).await.expect("q03 recovers");
    let expected = oracle_answer(&oracle, &sql).await;
    same_answer(&sql, &expected, &actual).expect("same answer after faults");

    // Each fault fired, and its failure kept its type across the wire.
    let kinds = kinds(&status);
    let messages: Vec<&str> = status.failures.iter().map(|f| f.message.as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("injected fault") && m.contains("failed before it started")),
        "before_task did not fire: {:?}",
        status.failures
    );
    assert!(
        kinds.contains(&pb::ErrorKind::FetchFailed)
            && messages
                .iter()
                .any(|m| m.contains("injected fault: fetch failed")),
        "fetch fault did not fire: {:?}",
        status.failures
    );
    let crash = cluster.wait_exit(crashing, Duration::from_secs(30));
    assert_eq!(
        crash.signal(),
        Some(6),
        "after_write should abort worker 0: {crash:?}"
    );
    assert_eq!(client.workers().await.expect("workers").len(), 2);

    // The next job runs on what is left.
    let sql = query(5);
    let (_, actual) = run_job(&client, &sql, 3).await.expect("q05 runs");
    let expected = oracle_answer(&oracle, &sql).await;
    same_answer(&sql, &expected, &actual).expect("q05 answer");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_task_uses_its_attempts_and_the_error_names_the_first_cause() {
    let mut cluster = Cluster::coordinator(&["--max-task-attempts", "3"]);
    for _ in 0..2 {
        cluster.add_worker(&[("TONE_FAULT_PANIC_IN_STAGE", "1")]);
    }
    cluster.wait_for_workers(2).await;
    let client = cluster.client().await;
    let sql = "select l_returnflag, count(*) from lineitem group by l_returnflag";
    let submitted = client
        .submit(sql, &tpch_tables(), 2)
        .await
        .expect("submits");
    let error = client
        .wait(&submitted.job_id, |_| {})
        .await
        .expect_err("stage 1 always panics");
    // Every attempt panics with its own number: the error is the first's.
    let message = error.to_string();
    assert!(
        message.contains("3 attempt(s)")
            && message.contains("injected fault: attempt 0 of a task")
            && !message.contains("attempt 2 of a task"),
        "{message}"
    );
    let status = client.status(&submitted.job_id).await.expect("status");
    let stage_1: Vec<_> = status.failures.iter().filter(|f| f.stage_id == 1).collect();
    assert!(stage_1.len() >= 3, "{:?}", status.failures);
    assert!(
        stage_1
            .iter()
            .all(|f| f.kind == pb::ErrorKind::Execution as i32 && f.message.contains("panicked")),
        "{stage_1:?}"
    );
    // Each attempt is numbered and kept: one task used all three.
    let attempts = |partition: u32| {
        let mut attempts: Vec<u32> = stage_1
            .iter()
            .filter(|f| f.partition == partition)
            .map(|f| f.attempt)
            .collect();
        attempts.sort_unstable();
        attempts
    };
    assert!(
        (0..2).any(|partition| attempts(partition) == vec![0, 1, 2]),
        "{stage_1:?}"
    );
    // The workers stay up.
    assert_eq!(client.workers().await.expect("workers").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_workers_are_replaced_and_jobs_keep_giving_the_oracle_answer() {
    let mut cluster = Cluster::coordinator(&["--heartbeat-timeout-ms", "2000"]);
    for _ in 0..3 {
        cluster.add_worker(&[]);
    }
    cluster.wait_for_workers(3).await;
    let client = cluster.client().await;
    let oracle = oracle_context().await;
    let picks = [3usize, 5, 9, 18, 21, 10, 7];
    let mut expected = Vec::new();
    for number in picks {
        expected.push(oracle_answer(&oracle, &query(number)).await);
    }

    // The seed alone picks, for every job, after how many of its tasks a
    // worker dies and which one; TONE_CHAOS_SEED=N repeats a run.
    let mut seed = std::env::var("TONE_CHAOS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(CHAOS_SEED);
    eprintln!("chaos seed: {seed} (TONE_CHAOS_SEED={seed} repeats it)");
    let mut random = move |bound: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % bound.max(1)
    };

    let (mut kills, mut recomputed) = (0, 0);
    for (index, &number) in picks.iter().enumerate() {
        let sql = query(number);
        let submitted = client
            .submit(&sql, &tpch_tables(), 3)
            .await
            .unwrap_or_else(|error| panic!("q{number} submits: {error}"));
        let job_id = submitted.job_id;
        let total = client.status(&job_id).await.expect("status").tasks_total;
        // Some of its outputs exist, so a kill can take some away.
        let kill_after = 1 + random(u64::from(total.saturating_sub(1))) as u32;
        let victim = random(cluster.workers.len() as u64) as usize;
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            let status = client.status(&job_id).await.expect("status");
            assert!(
                Instant::now() < deadline,
                "q{number} never did {kill_after} tasks: {status:?}"
            );
            if status.state != pb::JobState::Running as i32 {
                break;
            }
            if status.tasks_done >= kill_after {
                cluster.kill_worker(victim);
                cluster.workers.remove(victim);
                cluster.add_worker(&[]);
                kills += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (status, actual) = finish_job(&client, &job_id)
            .await
            .unwrap_or_else(|error| panic!("q{number} failed under chaos: {error}"));
        same_answer(&sql, &expected[index], &actual)
            .unwrap_or_else(|error| panic!("q{number} under chaos: {error}"));
        recomputed += status.outputs_recomputed;
    }
    eprintln!(
        "chaos: {} jobs correct through {kills} kills, {recomputed} lost outputs recomputed",
        picks.len()
    );
    assert!(kills >= 3, "only {kills} jobs ran long enough for a kill");
    assert!(recomputed > 0, "no kill took an output a job still needed");
    let jobs = picks.len();
    // No job was lost: every one is listed as succeeded.
    let listed = client.jobs(0).await.expect("jobs").0;
    let succeeded = listed
        .iter()
        .filter(|job| job.state == pb::JobState::Succeeded as i32)
        .count();
    assert_eq!(succeeded, jobs, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn results_whose_worker_dies_before_they_are_read_are_made_again() {
    results_survive_losing_their_worker(|cluster, victim| cluster.kill_worker(victim)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn results_whose_worker_freezes_before_they_are_read_are_made_again() {
    // Frozen for good: the fetch must not hang on it (a frozen process
    // still accepts TCP connections), and the coordinator must find it
    // lost by its silence.
    results_survive_losing_their_worker(|cluster, victim| {
        freeze(cluster.worker_pid(victim));
    })
    .await;
}

/// Stops `pid` with SIGSTOP and returns once the kernel shows it stopped:
/// a `kill` that could not run (a fork failing on a loaded machine) is
/// tried again rather than leaving the process running.
fn freeze(pid: u32) {
    let stat = format!("/proc/{pid}/stat");
    let stopped = || {
        std::fs::read_to_string(&stat).is_ok_and(|text| {
            // The state follows the command name's closing parenthesis.
            text.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !stopped() {
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} did not stop: {:?}",
            std::fs::read_to_string(&stat)
        );
        signal(pid, "-STOP");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a query to success, loses the worker that holds its first result
/// partition with `lose`, then reads the result: all of it, each row once,
/// with only the lost outputs made again.
async fn results_survive_losing_their_worker(lose: impl FnOnce(&mut Cluster, usize)) {
    // Stages as planned (`--aqe off`): tiny stages would be coalesced into
    // one task, and the result into one partition.
    let mut cluster = Cluster::coordinator(&["--heartbeat-timeout-ms", "2000", "--aqe", "off"]);
    // Known ports, so the test knows which worker holds which result.
    let ports = [free_port(), free_port()];
    for port in ports {
        cluster.add_worker_with(&[], &["--listen", &format!("127.0.0.1:{port}")]);
    }
    cluster.wait_for_workers(2).await;
    let client = cluster.client().await;
    let oracle = oracle_context().await;
    // No final ORDER BY: the result stays in several partitions.
    let sql = "SELECT l_returnflag, l_linestatus, count(*) AS n, sum(l_quantity) AS q, \
               min(o_orderdate) AS first FROM lineitem JOIN orders ON l_orderkey = o_orderkey \
               GROUP BY l_returnflag, l_linestatus";
    let expected = oracle_answer(&oracle, sql).await;
    let submitted = client
        .submit(sql, &tpch_tables(), 4)
        .await
        .expect("submits");
    let status = client
        .wait(&submitted.job_id, |_| {})
        .await
        .expect("succeeds");
    assert!(status.results.len() > 1, "{:?}", status.results);

    // The worker that holds the first result partition is lost before
    // the client reads anything.
    let address = &status.results[0].flight_address;
    let victim = ports
        .iter()
        .position(|port| address.ends_with(&format!(":{port}")))
        .unwrap_or_else(|| panic!("{address} is none of the workers' {ports:?}"));
    assert!(
        cluster.workers[victim]
            .try_wait()
            .is_ok_and(|exit| exit.is_none()),
        "worker {victim} (port {}) is alive before it is lost",
        ports[victim]
    );
    lose(&mut cluster, victim);
    let read = client
        .results(&status)
        .expect("a result stream")
        .try_collect::<Vec<_>>();
    let actual = tokio::time::timeout(JOB_TIMEOUT, read)
        .await
        .expect("the results are read within the deadline")
        .expect("the whole answer");
    same_answer(sql, &expected, &actual).expect("every row once");

    let after = client.status(&submitted.job_id).await.expect("status");
    assert_eq!(after.state, pb::JobState::Succeeded as i32);
    assert!(after.outputs_recomputed >= 1, "{after:?}");
    let recomputed_tasks = after.tasks_total as usize;
    assert!(
        (after.outputs_recomputed as usize) < recomputed_tasks,
        "only what the lost worker held is made again: {after:?}"
    );
    assert!(
        after.results.iter().all(|result| !result
            .flight_address
            .ends_with(&format!(":{}", ports[victim]))),
        "{:?}",
        after.results
    );
    client.release(&submitted.job_id).await.expect("released");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_frozen_mid_job_is_replaced_and_the_answer_has_no_duplicates() {
    let mut cluster = Cluster::coordinator(&["--heartbeat-timeout-ms", "1500"]);
    let frozen = cluster.add_worker(&[]);
    cluster.add_worker(&[]);
    cluster.wait_for_workers(2).await;
    let client = cluster.client().await;
    let oracle = oracle_context().await;
    let sql = query(18);
    let expected = oracle_answer(&oracle, &sql).await;

    let job = tokio::spawn({
        let client = client.clone();
        let sql = sql.clone();
        async move { run_job(&client, &sql, 8).await }
    });
    // Freeze worker 0 once it runs a task, for longer than the timeout.
    wait_until(Duration::from_secs(30), || async {
        client
            .workers()
            .await
            .is_ok_and(|workers| workers.iter().all(|w| w.running_tasks > 0) || workers.len() < 2)
    })
    .await;
    signal(cluster.worker_pid(frozen), "-STOP");
    // Frozen until the coordinator has given it up.
    wait_until(Duration::from_secs(60), || async {
        client
            .workers()
            .await
            .is_ok_and(|workers| workers.len() == 1)
    })
    .await;
    signal(cluster.worker_pid(frozen), "-CONT");
    let (status, actual) = job.await.expect("joins").expect("q18 finishes");
    same_answer(&sql, &expected, &actual).expect("no wrong or duplicated rows");
    assert!(
        kinds(&status).contains(&pb::ErrorKind::WorkerLost),
        "the frozen worker's task should have been re-run: {:?}",
        status.failures
    );
    // The thawed worker registers again and takes work.
    cluster.wait_for_workers(2).await;
    let (_, actual) = run_job(&client, &sql, 8).await.expect("runs again");
    same_answer(&sql, &expected, &actual).expect("after the thaw");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_workers_a_job_fails_after_the_grace_period_and_time_limits_hold() {
    let mut cluster = Cluster::coordinator(&["--no-worker-grace-ms", "1500"]);
    let only = cluster.add_worker(&[]);
    cluster.wait_for_workers(1).await;
    let client = cluster.client().await;
    let endless =
        "select count(*) from lineitem a, lineitem b where a.l_orderkey + b.l_orderkey < 0";

    // A time limit ends a job that would run for hours.
    let limited = client
        .clone()
        .with_job_timeout(Some(Duration::from_millis(1500)));
    let error = tokio::time::timeout(JOB_TIMEOUT, run_job(&limited, endless, 1))
        .await
        .expect("waiting for the time limit to end the job: it ran on")
        .expect_err("times out");
    assert!(error.to_string().contains("time limit"), "{error}");

    // Every worker gone: the job fails after the grace period, not hangs.
    let submitted = client
        .submit(endless, &tpch_tables(), 1)
        .await
        .expect("submits");
    wait_until(Duration::from_secs(30), || async {
        client
            .status(&submitted.job_id)
            .await
            .is_ok_and(|s| s.tasks_running > 0)
    })
    .await;
    cluster.kill_worker(only);
    let error = tokio::time::timeout(JOB_TIMEOUT, client.wait(&submitted.job_id, |_| {}))
        .await
        .expect("waiting for the job without workers to fail: it hung")
        .expect_err("no workers");
    assert!(error.to_string().contains("no worker"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_a_worker_it_finishes_its_task_and_exits() {
    let mut cluster = Cluster::coordinator(&[]);
    let draining = cluster.add_worker(&[]);
    cluster.add_worker(&[]);
    cluster.wait_for_workers(2).await;
    let client = cluster.client().await;
    let oracle = oracle_context().await;
    let sql = query(21);
    let expected = oracle_answer(&oracle, &sql).await;
    let job = tokio::spawn({
        let client = client.clone();
        let sql = sql.clone();
        async move { run_job(&client, &sql, 4).await }
    });
    wait_until(Duration::from_secs(30), || async {
        client
            .workers()
            .await
            .is_ok_and(|workers| workers.iter().all(|w| w.running_tasks > 0))
    })
    .await;
    signal(cluster.worker_pid(draining), "-TERM");
    let exit = cluster.wait_exit(draining, Duration::from_secs(60));
    assert!(exit.success(), "a drained worker exits cleanly: {exit:?}");
    let (status, actual) = job.await.expect("joins").expect("q21 finishes");
    same_answer(&sql, &expected, &actual).expect("same answer");
    // The task it was running finished there: no attempt was lost.
    assert!(
        !kinds(&status).contains(&pb::ErrorKind::WorkerLost)
            || status
                .failures
                .iter()
                .all(|f| f.message.contains("draining")),
        "{:?}",
        status.failures
    );
    assert_eq!(client.workers().await.expect("workers").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_coordinator_keeps_its_catalog_and_jobs_and_workers_come_back() {
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().to_str().expect("utf-8 path");
    let mut cluster = Cluster::coordinator(&["--state-dir", state_dir]);
    for _ in 0..2 {
        cluster.add_worker(&[]);
    }
    cluster.wait_for_workers(2).await;
    let client = cluster.client().await;

    // A finished job (it registers the TPC-H tables), a catalog statement,
    // and a job still running when the coordinator is killed, over a table
    // whose files go while the coordinator is down.
    let (finished, _) = run_job(&client, "select count(*) from nation", 2)
        .await
        .expect("runs");
    let region = tpch_data().join("region");
    let create = format!(
        "create external table region_copy stored as parquet location '{}'",
        region.display()
    );
    client
        .sql(&create, &[], 1)
        .await
        .expect("creates the table");
    let doomed = tempfile::tempdir().expect("table dir");
    copy_dir(&region, doomed.path());
    let doomed_table = TableRef {
        name: "doomed".into(),
        path: doomed.path().to_str().expect("utf-8 path").into(),
    };
    let endless = "select count(*) from lineitem a, lineitem b, doomed r \
                   where a.l_orderkey + b.l_orderkey + r.r_regionkey < 0";
    let running = client
        .submit(endless, &[doomed_table], 2)
        .await
        .expect("submits");
    wait_until(Duration::from_secs(30), || async {
        client
            .status(&running.job_id)
            .await
            .is_ok_and(|s| s.tasks_running > 0)
    })
    .await;

    cluster.kill_coordinator();
    std::fs::remove_dir_all(doomed.path()).expect("the table's files go");
    cluster.start_coordinator();
    // Workers reconnect by themselves.
    cluster.wait_for_workers(2).await;
    let client = cluster.client().await;
    let jobs = client.jobs(0).await.expect("jobs").0;
    let state_of = |job_id: &str| {
        jobs.iter()
            .find(|job| job.job_id == job_id)
            .unwrap_or_else(|| panic!("{job_id} is not listed after the restart: {jobs:?}"))
    };
    assert_eq!(
        state_of(&finished.job_id).state,
        pb::JobState::Succeeded as i32
    );
    let lost = state_of(&running.job_id);
    assert_eq!(lost.state, pb::JobState::Failed as i32);
    assert!(
        lost.error.contains("cannot resume") && lost.error.contains(&doomed_table_path(&doomed)),
        "the job fails naming the input that is gone: {}",
        lost.error
    );
    let status = client.status(&finished.job_id).await.expect("status");
    assert_eq!(status.job_id, finished.job_id);

    // The catalog is back: no table is named with the query.
    let rows = client
        .sql("select count(*) as n from region_copy", &[], 2)
        .await
        .expect("the created table is still there");
    let count = arrow::util::pretty::pretty_format_batches(&rows)
        .expect("prints")
        .to_string();
    assert!(count.contains("| 5 "), "{count}");
    client
        .sql("select count(*) from lineitem", &[], 2)
        .await
        .expect("a job's table is still there");
}

fn doomed_table_path(dir: &tempfile::TempDir) -> String {
    dir.path().to_str().expect("utf-8 path").to_string()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("table dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copies");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_killed_mid_q18_resumes_it_and_the_client_gets_the_answer() {
    coordinator_killed_mid_query_resumes(18).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_killed_mid_q21_resumes_it_and_the_client_gets_the_answer() {
    coordinator_killed_mid_query_resumes(21).await;
}

/// Runs TPC-H query `number`, SIGKILLs the coordinator once two of its
/// stages are done, and starts it again on the same state dir. The same
/// client, still waiting, gets the oracle's answer; the stages that had
/// finished are not run again.
async fn coordinator_killed_mid_query_resumes(number: usize) {
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().to_str().expect("utf-8 path");
    let mut cluster = Cluster::coordinator(&["--state-dir", state_dir]);
    for _ in 0..2 {
        cluster.add_worker(&[]);
    }
    cluster.wait_for_workers(2).await;
    let client = cluster.client().await;
    let sql = query(number);
    let expected = oracle_answer(&oracle_context().await, &sql).await;
    let submitted = client
        .submit(&sql, &tpch_tables(), 4)
        .await
        .expect("submits");

    // The client follows the job; the test hears every status it sees.
    let (follower, mut statuses) = crate::common::follow_job(&client, &submitted.job_id);
    let at_kill = crate::common::when_stages_done(&mut statuses, 2, JOB_TIMEOUT).await;
    cluster.kill_coordinator();
    assert_eq!(
        at_kill.state,
        pb::JobState::Running as i32,
        "killed while the job ran: {at_kill:?}"
    );
    assert!(at_kill.stages_done < at_kill.stages_total, "{at_kill:?}");
    cluster.start_coordinator();

    let (status, rows) = tokio::time::timeout(JOB_TIMEOUT, follower)
        .await
        .expect("the resumed job ends in time")
        .expect("the follower runs")
        .expect("the same client gets the answer");
    same_answer(&sql, &expected, &rows).expect("the oracle's answer, each row once");
    eprintln!(
        "q{number}: killed with {} of {} stages done; resumed {} stages ({} of {} tasks), \
         recomputed {}",
        at_kill.stages_done,
        at_kill.stages_total,
        status.stages_resumed,
        status.tasks_resumed,
        status.tasks_total,
        status.outputs_recomputed
    );
    assert!(
        status.stages_resumed >= at_kill.stages_done,
        "every stage seen done before the kill is used as it was, not run again: {status:?}"
    );
    assert!(status.tasks_resumed > 0, "{status:?}");
    assert_eq!(
        status.outputs_recomputed, 0,
        "no output was lost: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_keeps_failing_a_job_is_kept_away_from_it() {
    // Stages as planned: coalescing would make stage 1 one task.
    let mut cluster = Cluster::coordinator(&["--aqe", "off"]);
    // Every stage-1 task panics on worker 0 only.
    cluster.add_worker(&[("TONE_FAULT_PANIC_IN_STAGE", "1")]);
    cluster.add_worker(&[]);
    cluster.wait_for_workers(2).await;
    let client = cluster.client().await;
    let oracle = oracle_context().await;
    let sql = "select l_returnflag, l_linestatus, count(*) as n from lineitem \
               group by l_returnflag, l_linestatus";
    // Many tasks, so that without exclusion the fast-failing worker would
    // take (and fail) far more than two of them.
    let (status, actual) = run_job(&client, sql, 16)
        .await
        .expect("the healthy worker finishes the job");
    let expected = oracle_answer(&oracle, sql).await;
    same_answer(sql, &expected, &actual).expect("same answer");
    let failing: Vec<&str> = status
        .failures
        .iter()
        .map(|f| f.worker_id.as_str())
        .collect();
    assert!(!failing.is_empty(), "the fault never fired");
    assert!(
        failing.iter().all(|worker| *worker == failing[0]),
        "{:?}",
        status.failures
    );
    // After its second failure the job sends it nothing more. It may fail
    // only once when the healthy worker takes every other task first.
    assert!(failing.len() <= 2, "{:?}", status.failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_are_reached_at_the_address_they_advertise() {
    let mut cluster = Cluster::coordinator(&[]);
    // Bound on 127.0.0.1, told to others as `localhost` with the bound port.
    for _ in 0..2 {
        cluster.add_worker_with(
            &[],
            &["--listen", "127.0.0.1:0", "--advertise", "localhost"],
        );
    }
    cluster.wait_for_workers(2).await;
    let client = cluster.client().await;
    let workers = client.workers().await.expect("workers");
    for worker in &workers {
        let port = worker
            .flight_address
            .strip_prefix("localhost:")
            .unwrap_or_else(|| panic!("not the advertised host: {workers:?}"));
        assert!(
            port.parse::<u16>().is_ok_and(|port| port > 0),
            "{workers:?}"
        );
    }
    // Shuffle fetches between the workers go to the advertised addresses.
    let oracle = oracle_context().await;
    let sql = "select l_returnflag, count(*) as n, sum(l_quantity) as q from lineitem \
               group by l_returnflag";
    let (_, actual) = run_job(&client, sql, 4).await.expect("the job runs");
    let expected = oracle_answer(&oracle, sql).await;
    same_answer(sql, &expected, &actual).expect("same answer");
}

/// The gRPC health status of `service` at `address`, or why none.
async fn health(address: &str, service: &str) -> Result<i32, String> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| error.to_string())?;
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    HealthClient::new(channel)
        .check(request)
        .await
        .map(|response| response.into_inner().status)
        .map_err(|status| status.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn health_says_live_and_whether_a_worker_is_registered() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    let mut cluster = Cluster::coordinator(&[]);
    assert_eq!(health(&cluster.address, "").await, Ok(serving));
    cluster.add_worker(&[]);
    cluster.wait_for_workers(1).await;
    let worker = cluster.client().await.workers().await.expect("workers")[0]
        .flight_address
        .clone();
    assert_eq!(health(&worker, "").await, Ok(serving));
    assert_eq!(health(&worker, "tone.ready").await, Ok(serving));
    // A name the worker does not serve is refused, not reported healthy.
    assert!(health(&worker, "no.such.service").await.is_err());
    // The probe command says the same in its exit code.
    let probe = |url: &str, service: &str| {
        crate::common::run_tone(&["health", "--url", url, "--service", service])
            .status
            .code()
    };
    let worker_url = format!("http://{worker}");
    assert_eq!(probe(&worker_url, "tone.ready"), Some(0));
    assert_eq!(probe(&cluster.master, ""), Some(0));

    // Without its coordinator the worker is alive but not ready, and ready
    // again once it has registered with the new one.
    cluster.kill_coordinator();
    wait_until(Duration::from_secs(30), || async {
        health(&worker, "tone.ready").await == Ok(not_serving)
    })
    .await;
    assert_eq!(health(&worker, "").await, Ok(serving));
    assert_eq!(probe(&worker_url, "tone.ready"), Some(1));
    assert_eq!(probe(&worker_url, ""), Some(0));
    assert_eq!(probe(&cluster.master, ""), Some(2), "nothing answers");
    cluster.restart_coordinator();
    wait_until(Duration::from_secs(30), || async {
        health(&worker, "tone.ready").await == Ok(serving)
    })
    .await;
}

/// A second SIGTERM stops a draining worker at once: the task it held is
/// not finished there but re-run elsewhere (a first SIGTERM alone would
/// have let it finish).
#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_stops_a_draining_worker_at_once() {
    use tonic_health::pb::health_check_response::ServingStatus;
    // No backup may finish the stalled task: it must be held by the
    // draining worker.
    let mut cluster =
        Cluster::coordinator(&["--heartbeat-timeout-ms", "2000", "--speculation", "off"]);
    // Its first task holds its slot for faults::STALL (20 s).
    let stalled = cluster.add_worker(&[("TONE_FAULT", "stall@*")]);
    cluster.wait_for_workers(1).await;
    let client = cluster.client().await;
    let oracle = oracle_context().await;
    let sql = query(3);
    let expected = oracle_answer(&oracle, &sql).await;
    let job = tokio::spawn({
        let client = client.clone();
        let sql = sql.clone();
        async move { run_job(&client, &sql, 2).await }
    });
    wait_until(Duration::from_secs(30), || async {
        client
            .workers()
            .await
            .is_ok_and(|workers| workers.iter().any(|w| w.running_tasks > 0))
    })
    .await;
    let address = client.workers().await.expect("workers")[0]
        .flight_address
        .clone();
    cluster.add_worker(&[]);
    signal(cluster.worker_pid(stalled), "-TERM");
    // Draining: it says it is no longer ready.
    let not_serving = ServingStatus::NotServing as i32;
    wait_until(Duration::from_secs(30), || async {
        health(&address, "tone.ready").await == Ok(not_serving)
    })
    .await;
    signal(cluster.worker_pid(stalled), "-TERM");
    let exit = cluster.wait_exit(stalled, Duration::from_secs(60));
    assert!(exit.signal().is_none(), "it stopped by itself: {exit:?}");
    let (status, actual) = job.await.expect("joins").expect("q03 finishes");
    same_answer(&sql, &expected, &actual).expect("same answer");
    assert!(
        kinds(&status).contains(&pb::ErrorKind::WorkerLost),
        "the held task was abandoned and re-run: {:?}",
        status.failures
    );
}

/// A shuffle stream that loses its last batch on the way is caught by the
/// reader (the server sends the row count its writer recorded) and read
/// again: the answer is whole. Without the check it would quietly lack
/// rows.
#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_shuffle_stream_is_caught_and_fetched_again() {
    let mut cluster = Cluster::coordinator(&[]);
    cluster.add_worker(&[("TONE_FAULT", "truncate@0")]);
    cluster.add_worker(&[]);
    cluster.wait_for_workers(2).await;
    let client = cluster.client().await;
    let oracle = oracle_context().await;
    let sql = "select l_orderkey, count(*) as n, sum(l_quantity) as q from lineitem \
               group by l_orderkey order by l_orderkey";
    let expected = oracle_answer(&oracle, sql).await;
    let (status, actual) = run_job(&client, sql, 4).await.expect("runs");
    same_answer(sql, &expected, &actual).expect("every row, once");
    let truncated: Vec<_> = status
        .failures
        .iter()
        .filter(|failure| failure.message.contains("rows"))
        .collect();
    assert!(
        kinds(&status).contains(&pb::ErrorKind::FetchFailed) && !truncated.is_empty(),
        "the short stream was noticed: {:?}",
        status.failures
    );
}
