//! Flight SQL with real clients: the ADBC driver (adbc-driver-flightsql
//! from PyPI, through its DB-API) and pyarrow.flight sending raw Flight SQL
//! commands, against a `tone local-cluster --secure` (TLS and tokens) of
//! two workers. Answers are compared with the embedded engine's.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use arrow::array::RecordBatch;
use serde_json::Value;
use tone::cluster::ClusterClient;
use tone_proto::security::{ClientSecurity, ClientTls, Token};
use tone_proto::v1 as pb;

use crate::common::compare::same_answer;
use crate::common::venv::python_with;
use crate::common::{tone, tone_engine, tpch_data, tpch_queries, wait_for};

const WITHIN: Duration = Duration::from_secs(120);

/// A `tone local-cluster` in its own process group, killed on drop.
struct LocalCluster {
    child: Child,
    master: String,
    ca: PathBuf,
    token: String,
    flight_sql: String,
}

impl LocalCluster {
    fn start(proxy: bool) -> Self {
        let mut command = tone();
        command
            .args([
                "local-cluster",
                "--secure",
                "--workers",
                "2",
                "--slots",
                "2",
            ])
            .args(["--port", "0", "--flight-sql-listen", "127.0.0.1:0"])
            .args(proxy.then_some("--flight-sql-proxy"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("tone local-cluster starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut reader = BufReader::new(stdout);
        let mut value = |prefix: &str| {
            let mut line = String::new();
            reader.read_line(&mut line).expect("reads a line");
            line.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected {prefix}, got {line:?}"))
                .to_string()
        };
        let master = value("master: ");
        let ca = PathBuf::from(value("tls-ca: "));
        let token_file = value("token-file: ");
        let _ui = value("ui: ");
        let flight_sql = value("flight-sql: ");
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let token = std::fs::read_to_string(&token_file)
            .expect("client token")
            .trim()
            .to_string();
        Self {
            child,
            master,
            ca,
            token,
            flight_sql,
        }
    }

    async fn client(&self) -> ClusterClient {
        let security = ClientSecurity {
            tls: Some(ClientTls::load(&self.ca, None).expect("CA loads")),
            token: Some(Token::parse(&self.token).expect("token parses")),
        };
        ClusterClient::connect_with(&self.master, &security)
            .await
            .expect("coordinator reachable")
    }

    /// Waits until the cluster's two workers are registered.
    async fn ready(&self) {
        let client = self.client().await;
        wait_for(WITHIN, "two workers registered", || {
            let client = &client;
            async move {
                client
                    .workers()
                    .await
                    .is_ok_and(|workers| workers.len() == 2)
            }
        })
        .await;
    }

    /// Runs the client script in `mode`; its report.
    fn run_client(&self, mode: &str, queries: &[(String, String)], out: &Path) -> Value {
        let python = python();
        let config = serde_json::json!({
            "uri": self.flight_sql,
            "token": self.token,
            "ca": self.ca,
            "data": tpch_data(),
            "queries": queries.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "out": out,
        });
        let config_path = out.join(format!("{mode}.json"));
        std::fs::write(&config_path, config.to_string()).expect("config written");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flight_sql/client.py");
        let mut command = Command::new(python);
        command.arg(script).arg(mode).arg(&config_path);
        let output = crate::common::output_within(&mut command, Duration::from_secs(600), mode);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "client.py {mode} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|error| panic!("{error}: {stdout}"))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // SIGTERM first: the local cluster stops its workers and removes
        // their work dirs (a SIGKILL would leave them behind).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return; // Gone and reaped: its pid is not ours to signal.
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// The venv's python with pyarrow and the ADBC Flight SQL driver.
fn python() -> PathBuf {
    python_with("pyarrow", "pyarrow.flight");
    python_with("adbc-driver-manager", "adbc_driver_manager");
    python_with("adbc-driver-flightsql", "adbc_driver_flightsql")
}

fn read_arrow(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
    arrow::ipc::reader::FileReader::try_new(file, None)
        .expect("an Arrow file")
        .collect::<Result<Vec<_>, _>>()
        .expect("batches")
}

/// Each query's result file `{prefix}{name}.arrow` against the embedded
/// engine's answer.
async fn check_answers(queries: &[(String, String)], out: &Path, prefix: &str) {
    let engine = tone_engine(2).await;
    for (name, sql) in queries {
        let expected = engine.sql(sql).await.expect("embedded answer");
        let actual = read_arrow(&out.join(format!("{prefix}{name}.arrow")));
        same_answer(sql, &expected, &actual)
            .unwrap_or_else(|difference| panic!("{prefix}{name}: {difference}"));
    }
}

fn error_message(report: &Value, key: &str) -> String {
    let error = &report[key];
    assert!(error.is_object(), "{key}: expected an error, got {error}");
    error["message"].as_str().unwrap_or_default().to_string()
}

/// Waits until the coordinator lists no running job and one cancelled
/// job more than `before`.
async fn cancelled_and_idle(cluster: &LocalCluster, before: u64) {
    let client = cluster.client().await;
    wait_for(
        WITHIN,
        "the cancelled job ended and freed its slots",
        || {
            let client = &client;
            async move {
                let running = client.list_jobs(0, Some(pb::JobState::Running)).await;
                let cancelled = client.list_jobs(0, Some(pb::JobState::Cancelled)).await;
                matches!((running, cancelled), (Ok((_, 0)), Ok((_, n))) if n > before)
            }
        },
    )
    .await;
}

async fn cancelled_count(cluster: &LocalCluster) -> u64 {
    let client = cluster.client().await;
    client
        .list_jobs(0, Some(pb::JobState::Cancelled))
        .await
        .expect("jobs listed")
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_runs_tpch_prepared_statements_metadata_errors_and_cancel() {
    let queries = tpch_queries();
    let cluster = LocalCluster::start(false);
    cluster.ready().await;
    let out = tempfile::tempdir().expect("temp dir");
    let cancelled_before = cancelled_count(&cluster).await;
    let report = cluster.run_client("adbc", &queries, out.path());
    check_answers(&queries, out.path(), "").await;
    let prepared = [
        ("prepared_30_air", "SELECT l_returnflag, count(*) AS n FROM lineitem WHERE l_quantity > 30 AND l_shipmode = 'AIR' GROUP BY l_returnflag"),
        ("prepared_45_mail", "SELECT l_returnflag, count(*) AS n FROM lineitem WHERE l_quantity > 45 AND l_shipmode = 'MAIL' GROUP BY l_returnflag"),
    ]
    .map(|(name, sql)| (name.to_string(), sql.to_string()));
    check_answers(&prepared, out.path(), "").await;
    // Metadata: every table the DDL made, with its columns.
    let tables = report["tables"].as_array().expect("tables");
    for name in [
        "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
    ] {
        let table = tables
            .iter()
            .find(|table| table["table"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {tables:?}"));
        assert!(
            !table["columns"].as_array().expect("columns").is_empty(),
            "{table}"
        );
    }
    let lineitem = report["lineitem_schema"].as_array().expect("schema");
    assert_eq!(lineitem.len(), 16, "{lineitem:?}");
    assert!(report["table_types"]
        .as_array()
        .expect("types")
        .iter()
        .any(|t| t == "TABLE"));
    assert_eq!(report["vendor_name"], "tone");
    // Errors name their cause; the service answered afterwards.
    assert!(
        error_message(&report, "syntax_error").contains("SELEC"),
        "{report}"
    );
    assert!(
        error_message(&report, "unknown_table").contains("no_such_table"),
        "{report}"
    );
    assert!(
        error_message(&report, "failing_job")
            .to_lowercase()
            .contains("cast"),
        "{report}"
    );
    assert_eq!(report["after_errors"], 25);
    assert_eq!(report["copy_rows"], 25);
    assert_eq!(report["copied_file_exists"], true);
    assert_eq!(report["update_count"], 5);
    assert_eq!(report["bearer_count"], 5);
    assert!(
        error_message(&report, "bad_token")
            .to_lowercase()
            .contains("token"),
        "{report}"
    );
    // Cancel: the call ended with the client's cancel, the job was
    // cancelled on the cluster and its slots are free again.
    let cancel = error_message(&report, "cancelled");
    assert!(cancel.to_lowercase().contains("cancel"), "{cancel}");
    assert!(
        report["cancel_seconds"].as_f64().expect("seconds") < 60.0,
        "{report}"
    );
    cancelled_and_idle(&cluster, cancelled_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_flight_sends_raw_commands_direct_from_workers_and_bad_input_is_refused() {
    let queries: Vec<_> = tpch_queries()
        .into_iter()
        .filter(|(name, _)| ["q01", "q03", "q13", "q18"].contains(&name.as_str()))
        .collect();
    let cluster = LocalCluster::start(false);
    cluster.ready().await;
    let out = tempfile::tempdir().expect("temp dir");
    register_tables(&cluster).await;
    let cancelled_before = cancelled_count(&cluster).await;
    let report = cluster.run_client("raw", &queries, out.path());
    check_answers(&queries, out.path(), "raw_").await;
    raw_report_holds(&report);
    // Direct: every endpoint is at a worker, not at the Flight SQL address.
    let locations = report["locations"].as_array().expect("locations");
    assert!(!locations.is_empty());
    for location in locations {
        let location = location.as_str().unwrap_or_default();
        assert!(location.starts_with("grpc+tls://127.0.0.1:"), "{location}");
        assert!(!cluster
            .flight_sql
            .ends_with(location.trim_start_matches("grpc+tls://")));
    }
    cancelled_and_idle(&cluster, cancelled_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_proxy_results_stream_through_the_coordinator() {
    let queries: Vec<_> = tpch_queries()
        .into_iter()
        .filter(|(name, _)| ["q01", "q03", "q13", "q18"].contains(&name.as_str()))
        .collect();
    let cluster = LocalCluster::start(true);
    cluster.ready().await;
    let out = tempfile::tempdir().expect("temp dir");
    register_tables(&cluster).await;
    let report = cluster.run_client("raw", &queries, out.path());
    check_answers(&queries, out.path(), "raw_").await;
    raw_report_holds(&report);
    // No endpoint names a location: the client reads them here.
    assert_eq!(
        report["locations"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{report}"
    );
}

/// The TPC-H tables, registered through the Jobs API (the ADBC test
/// registers them through Flight SQL DDL).
async fn register_tables(cluster: &LocalCluster) {
    let client = cluster.client().await;
    for table in [
        "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
    ] {
        let path = tpch_data().join(table);
        let sql = format!(
            "CREATE EXTERNAL TABLE {table} STORED AS PARQUET LOCATION '{}/'",
            path.display()
        );
        client.sql(&sql, &[], 0).await.expect("table registered");
    }
}

fn raw_report_holds(report: &Value) {
    assert!(
        report["handshake_header"]
            .as_str()
            .unwrap_or_default()
            .eq_ignore_ascii_case("authorization"),
        "{report}"
    );
    assert!(
        error_message(report, "no_token")
            .to_lowercase()
            .contains("token"),
        "{report}"
    );
    assert_eq!(report["empty_rows"], 0);
    assert_eq!(report["empty_columns"], serde_json::json!(["n_name"]));
    let tables = report["raw_tables"].as_array().expect("tables");
    assert!(tables.iter().any(|table| table == "lineitem"), "{report}");
    assert!(report["raw_catalogs"].as_u64().unwrap_or(0) >= 1);
    assert!(report["raw_table_types"]
        .as_array()
        .expect("types")
        .iter()
        .any(|t| t == "TABLE"));
    assert!(
        report["raw_sql_info_rows"].as_u64().unwrap_or(0) > 5,
        "{report}"
    );
    for key in ["garbage_command", "bad_inner_command", "bad_ticket"] {
        let message = error_message(report, key);
        assert!(
            message.contains("invalid argument")
                && message.contains("malformed Flight SQL command"),
            "{key}: {message}"
        );
    }
    let unknown = error_message(report, "unknown_command");
    assert!(
        unknown.contains("does not support") && unknown.contains("CommandNoSuchThing"),
        "{unknown}"
    );
    assert!(
        error_message(report, "unknown_handle").contains("no prepared statement"),
        "{report}"
    );
    assert_eq!(report["prepared_rows"], serde_json::json!(["EUROPE"]));
    assert!(
        error_message(report, "oversized_parameters").contains("exceed"),
        "{report}"
    );
    assert_eq!(
        report["prepared_after_oversized"],
        serde_json::json!(["EUROPE"])
    );
    assert!(
        error_message(report, "closed_handle").contains("no prepared statement"),
        "{report}"
    );
    // DoPutUpdateResult { record_count: 25 }: field 1, varint 25.
    assert_eq!(
        report["update_result_bytes"],
        serde_json::json!([8, 25]),
        "{report}"
    );
    // CancelFlightInfoResult { status: CANCELLED }, and the results gone.
    assert_eq!(
        report["cancel_flight_info"],
        serde_json::json!([8, 1]),
        "{report}"
    );
    assert!(
        error_message(report, "read_after_cancel").contains("released"),
        "{report}"
    );
    // ActionCancelQueryResult { result: CANCELLED }.
    assert_eq!(
        report["cancel_query"],
        serde_json::json!([8, 1]),
        "{report}"
    );
    assert_eq!(report["ddl_query_endpoints"], 0, "{report}");
    assert_eq!(report["ddl_view_rows"], serde_json::json!([25]), "{report}");
    // gRPC reports an expired client deadline as DEADLINE_EXCEEDED or, when
    // the client's own timer fires first, as CANCELLED "Timeout expired".
    let deadline = error_message(report, "deadline").to_lowercase();
    assert!(
        deadline.contains("deadline") || deadline.contains("timeout expired"),
        "{deadline}"
    );
}
