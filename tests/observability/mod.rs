//! Observability with real processes: a coordinator serving its web UI,
//! JSON API, /metrics and event log; workers serving /metrics; `tone
//! history` replaying the log; and the UI driven in a real browser
//! (Debian's chromium through playwright-core).

mod cluster;
mod history;
mod live;

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{tiny_tpch_data, tone};

use cluster::Processes;

/// A query of several stages over the tiny TPC-H data (TPC-H q3).
const QUERY: &str = "SELECT l_orderkey, SUM(l_extendedprice * (1 - l_discount)) AS revenue, \
    o_orderdate, o_shippriority FROM customer, orders, lineitem \
    WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey AND l_orderkey = o_orderkey \
    AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15' \
    GROUP BY l_orderkey, o_orderdate, o_shippriority ORDER BY revenue DESC, o_orderdate LIMIT 10";
/// The stage of QUERY whose first task on the first worker stalls, so the
/// job is certainly running while the test looks; the failing job has no
/// such stage.
const STALL_STAGE: &str = "stall@3";
const WITHIN: Duration = Duration::from_secs(120);

#[test]
fn explain_analyze_embedded_prints_each_stage_with_its_operators_metrics() {
    let output = tone()
        .args(["explain", "--analyze", "--partitions", "2", "--data"])
        .arg(tiny_tpch_data())
        .arg("SELECT n_regionkey, count(*) AS n FROM nation GROUP BY n_regionkey")
        .output()
        .expect("tone explain runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("5 row(s)"), "{text}");
    assert!(
        text.contains("Stage 0") && text.contains("hash shuffle"),
        "{text}"
    );
    // The scan read the 25 nations; the final aggregate emitted 5 groups.
    assert!(
        text.contains("DataSourceExec") && text.contains("[rows=25,"),
        "{text}"
    );
    assert!(text.contains("[rows=5,"), "{text}");
}

#[test]
fn the_ui_is_served_over_tls_with_the_coordinators_certificate() {
    let certs = tempfile::tempdir().expect("temp dir");
    let made = tone()
        .args([
            "cert",
            "generate",
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
            "--out",
        ])
        .arg(certs.path())
        .output()
        .expect("tone cert runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut processes = Processes::default();
    let index = processes.start(
        tone()
            .args([
                "coordinator",
                "--listen",
                "127.0.0.1:0",
                "--ui-listen",
                "127.0.0.1:0",
            ])
            .arg("--tls-cert")
            .arg(certs.path().join("node.pem"))
            .arg("--tls-key")
            .arg(certs.path().join("node-key.pem"))
            .stdout(Stdio::piped()),
    );
    let lines = processes.lines(index, 2);
    let ui = lines[1]
        .strip_prefix("ui: listening on ")
        .unwrap_or_else(|| panic!("no UI line: {lines:?}"));
    assert!(ui.starts_with("https://"), "{ui}");
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20"])
            .args(args)
            .output()
            .expect("curl runs (apt-get install curl; .ci/run installs it)")
    };
    let ca = certs.path().join("ca.pem").display().to_string();
    let answer = curl(&["--cacert", &ca, &format!("{ui}/api/jobs")]);
    let body = String::from_utf8_lossy(&answer.stdout);
    assert!(
        answer.status.success(),
        "{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    assert!(body.contains("\"jobs\""), "{body}");
    // Without the CA the certificate is not trusted; plain HTTP gets no
    // answer.
    assert!(!curl(&[&format!("{ui}/api/jobs")]).status.success());
    let plain = ui.replacen("https://", "http://", 1);
    let refused = curl(&[&format!("{plain}/api/jobs")]);
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("\"jobs\""));
}

#[test]
fn no_ui_serves_no_web_ui() {
    let mut processes = Processes::default();
    let index = processes.start(
        tone()
            .args(["coordinator", "--listen", "127.0.0.1:0", "--no-ui"])
            .stdout(Stdio::piped()),
    );
    let stdout = processes.take_stdout(index);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first = lines.next().expect("a line").expect("reads");
    let address = first
        .strip_prefix("coordinator: listening on ")
        .unwrap_or_else(|| panic!("the coordinator did not start: {first}"));
    let health = tone()
        .args(["health", "--url", &format!("http://{address}")])
        .output()
        .expect("tone health runs");
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    // Serving, and it announced no UI: nothing follows the first line.
    processes.kill(index);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.is_empty(), "{rest:?}");
}
