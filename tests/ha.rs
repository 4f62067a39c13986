//! High availability with real processes: a real etcd (Debian's
//! `etcd-server`, installed on first use when missing), two coordinators
//! in one group and two workers that know both. The leader is killed
//! (SIGKILL) or frozen (SIGSTOP) in the middle of TPC-H q18; the standby
//! takes over and resumes the job, and the same client gets the oracle's
//! answer. A frozen leader that wakes is deposed: it exits by itself.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tone::cluster::{tables_in_dir, ClusterClient};
use tone_proto::v1 as pb;

use crate::common::compare::same_answer;
use crate::common::{
    follow_job, free_port, oracle_answer, oracle_context, tone, tpch_data, tpch_queries, wait_for,
    when_stages_done,
};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// The leader's lease in these tests: a dead leader is replaced within
/// about this long.
const LEASE_TTL_S: u64 = 3;

/// Children stopped (thawed, then killed with their process group) on
/// drop, even when the test fails.
struct Processes(Vec<Child>);

impl Processes {
    fn start(&mut self, command: &mut Command) -> usize {
        let child = command
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("the process starts");
        self.0.push(child);
        self.0.len() - 1
    }

    fn pid(&self, index: usize) -> u32 {
        self.0[index].id()
    }

    fn signal(&self, index: usize, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.pid(index).to_string()])
            .status();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Already reaped: its pid may be another test's process now.
            if !matches!(child.try_wait(), Ok(None)) {
                continue;
            }
            let group = format!("-{}", child.id());
            for signal in ["-CONT", "-KILL"] {
                let _ = Command::new("kill")
                    .args([signal, "--", &group])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = child.wait();
        }
    }
}

/// The etcd server binary, installed from Debian when missing.
fn etcd_binary() -> PathBuf {
    let path = PathBuf::from("/usr/bin/etcd");
    if !path.exists() {
        let installed = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server",
            ])
            .status()
            .expect("apt-get runs");
        assert!(installed.success(), "installing etcd-server failed");
    }
    path
}

/// A group: etcd, coordinators A (leading) and B (standing by), two
/// workers that know both.
struct Group {
    processes: Processes,
    coordinators: [usize; 2],
    urls: [String; 2],
    etcd: String,
    logs: tempfile::TempDir,
    _etcd_data: tempfile::TempDir,
}

impl Group {
    async fn start() -> Self {
        let mut processes = Processes(Vec::new());
        let etcd_data = tempfile::tempdir().expect("etcd dir");
        let logs = tempfile::tempdir().expect("log dir");
        let (client_port, peer_port) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        processes.start(
            Command::new(etcd_binary())
                .args(["--name", "test", "--data-dir"])
                .arg(etcd_data.path())
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("test={peer_url}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for(Duration::from_secs(30), "etcd to serve", || {
            etcd_healthy(client_port)
        })
        .await;
        let binaries = logs.path().join("binaries");
        let ports = [free_port(), free_port()];
        let urls = ports.map(|port| format!("http://127.0.0.1:{port}"));
        let mut coordinators = [0; 2];
        for (index, port) in ports.iter().enumerate() {
            let log = std::fs::File::create(logs.path().join(format!("coordinator-{index}.log")))
                .expect("log file");
            coordinators[index] = processes.start(
                tone()
                    .args(["coordinator", "--listen", &format!("127.0.0.1:{port}")])
                    .args(["--ha-etcd", &client_url, "--ha-prefix", "/tone/test"])
                    .args(["--ha-lease-ttl", &LEASE_TTL_S.to_string()])
                    .arg("--binary-store")
                    .arg(&binaries)
                    .stdout(Stdio::null())
                    .stderr(log),
            );
            // A leads before B starts.
            if index == 0 {
                let url = urls[0].clone();
                wait_for(Duration::from_secs(30), "coordinator A to lead", || {
                    leads(url.clone())
                })
                .await;
            }
        }
        let standby = urls[1].clone();
        wait_for(Duration::from_secs(30), "coordinator B to answer", || {
            let standby = standby.clone();
            async move { pb::jobs_client::JobsClient::connect(standby).await.is_ok() }
        })
        .await;
        let group = Self {
            processes,
            coordinators,
            urls,
            etcd: client_url,
            logs,
            _etcd_data: etcd_data,
        };
        group
    }

    fn master(&self) -> String {
        self.urls.join(",")
    }

    fn add_workers(&mut self) {
        for _ in 0..2 {
            let master = self.master();
            self.processes.start(
                tone()
                    .args(["worker", "--coordinator", &master, "--slots", "1"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
        }
    }

    fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.logs.path().join(format!("coordinator-{index}.log")))
            .unwrap_or_default()
    }
}

fn etcd_healthy(port: u16) -> impl std::future::Future<Output = bool> {
    async move {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        let mut answer = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.contains("\"health\":\"true\"")
    }
}

/// True when the coordinator at `url` answers as leader (a standby
/// refuses with the leader's address).
async fn leads(url: String) -> bool {
    let Ok(mut client) = pb::jobs_client::JobsClient::connect(url).await else {
        return false;
    };
    client.list_workers(pb::ListWorkersRequest {}).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_names_the_leader() {
    let group = Group::start().await;
    let mut standby = pb::jobs_client::JobsClient::connect(group.urls[1].clone())
        .await
        .expect("the standby is reachable");
    let refusal = standby
        .list_workers(pb::ListWorkersRequest {})
        .await
        .expect_err("a standby does not serve");
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    let named = refusal
        .metadata()
        .get("tone-leader")
        .and_then(|value| value.to_str().ok());
    assert_eq!(named, Some(group.urls[0].as_str()), "{refusal:?}");
    // A client given only the standby is sent to the leader.
    let client = ClusterClient::connect(&group.urls[1])
        .await
        .expect("follows the standby to the leader");
    client.workers().await.expect("the leader answers");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_leader_is_replaced_and_its_running_job_resumes() {
    leader_lost_mid_query(|group| group.processes.signal(group.coordinators[0], "-KILL")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_leader_is_replaced_and_deposed_when_it_wakes() {
    let (group, job_id) =
        leader_lost_mid_query(|group| group.processes.signal(group.coordinators[0], "-STOP")).await;
    // The old leader wakes: it finds its lease gone (or has a write
    // refused) and stops by itself, non-zero, without serving again.
    group.processes.signal(group.coordinators[0], "-CONT");
    let mut group = group;
    let old = group.coordinators[0];
    let mut exit = None;
    wait_for(
        Duration::from_secs(30),
        "the deposed leader to stop",
        || {
            if let Ok(Some(status)) = group.processes.0[old].try_wait() {
                exit = Some(status);
            }
            let stopped = exit.is_some();
            async move { stopped }
        },
    )
    .await;
    let status = exit.expect("stopped");
    assert!(!status.success(), "{status:?}");
    let log = group.log(0);
    assert!(log.contains("no longer the leader"), "{log}");
    // B still leads and serves, and what etcd holds of the job is what
    // B wrote: the old leader's writes were refused.
    assert!(leads(group.urls[1].clone()).await);
    let mut etcd = etcd_client::Client::connect([group.etcd.as_str()], None)
        .await
        .expect("etcd");
    let record = etcd
        .get(format!("/tone/test/jobs/{job_id}"), None)
        .await
        .expect("reads");
    let record = record.kvs().first().expect("the job's record");
    let status = <pb::JobStatus as prost::Message>::decode(record.value()).expect("a status");
    assert_eq!(status.state, pb::JobState::Succeeded as i32, "{status:?}");
    let running = etcd
        .get(format!("/tone/test/running/{job_id}"), None)
        .await
        .expect("reads");
    assert!(
        running.kvs().is_empty(),
        "an ended job keeps no plans to resume"
    );
}

/// Runs q18 on the group, loses the leader with `lose` once two stages
/// are done, and waits for the same client to get the oracle's answer.
/// Prints how long the standby took to lead.
async fn leader_lost_mid_query(lose: impl FnOnce(&Group)) -> (Group, String) {
    let mut group = Group::start().await;
    group.add_workers();
    let client = ClusterClient::connect(&group.master())
        .await
        .expect("the group answers");
    wait_for(Duration::from_secs(30), "two workers", || async {
        client
            .workers()
            .await
            .is_ok_and(|workers| workers.len() == 2)
    })
    .await;
    let sql = tpch_queries()[17].1.clone();
    let expected = oracle_answer(&oracle_context().await, &sql).await;
    let tables = tables_in_dir(tpch_data()).expect("tables");
    let submitted = client.submit(&sql, &tables, 4).await.expect("submits");
    let (follower, mut statuses) = follow_job(&client, &submitted.job_id);
    let at_loss = when_stages_done(&mut statuses, 2, JOB_TIMEOUT).await;
    lose(&group);
    let lost_at = Instant::now();
    assert_eq!(at_loss.state, pb::JobState::Running as i32, "{at_loss:?}");
    let standby = group.urls[1].clone();
    wait_for(Duration::from_secs(30), "the standby to lead", || {
        leads(standby.clone())
    })
    .await;
    eprintln!(
        "takeover: the standby led {:.1} s after the leader was lost (lease TTL {LEASE_TTL_S} s)",
        lost_at.elapsed().as_secs_f64()
    );
    let (status, rows) = tokio::time::timeout(JOB_TIMEOUT, follower)
        .await
        .expect("the resumed job ends in time")
        .expect("the follower runs")
        .expect("the same client gets the answer");
    same_answer(&sql, &expected, &rows).expect("the oracle's answer, each row once");
    eprintln!(
        "resumed {} stages ({} of {} tasks) after {} were done at the loss",
        status.stages_resumed, status.tasks_resumed, status.tasks_total, at_loss.stages_done
    );
    assert!(
        status.stages_resumed >= at_loss.stages_done,
        "stages done before the loss are not run again: {status:?}"
    );
    (group, submitted.job_id)
}
