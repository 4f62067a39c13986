//! The `tone` command line, run as a user would: output formats, scripts,
//! explain, gen, shell, bench, and clear errors with exit code 2.

use std::io::Write;
use std::process::Stdio;

use crate::common::{run_tone, tone, tpch_data};

fn data() -> &'static str {
    tpch_data().to_str().expect("utf-8 path")
}

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a bad-input failure: exit code 2, the message on stderr, no panic.
fn assert_input_error(output: &std::process::Output, needles: &[&str]) {
    let stderr = stderr_of(output);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.starts_with("tone: error: "), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["sql", "--help"],
        vec!["explain", "--help"],
        vec!["gen", "tpch", "--help"],
        vec!["shell", "--help"],
        vec!["bench", "tpch", "--help"],
    ] {
        let output = run_tone(&args);
        assert!(output.status.success(), "{args:?}: {}", stderr_of(&output));
        assert!(stdout_of(&output).contains("Usage"), "{args:?}");
    }
}

#[test]
fn csv_output_is_a_header_and_rows_only() {
    let output = run_tone(&[
        "sql",
        "--data",
        data(),
        "--format",
        "csv",
        "select n_name from nation where n_regionkey = 0 order by n_name",
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    // The five African nations of the TPC-H specification.
    assert_eq!(
        stdout_of(&output),
        "n_name\nALGERIA\nETHIOPIA\nKENYA\nMOROCCO\nMOZAMBIQUE\n"
    );
}

#[test]
fn json_and_table_output() {
    let output = run_tone(&[
        "sql",
        "--data",
        data(),
        "--format",
        "json",
        "select r_regionkey, r_name from region order by r_regionkey",
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let rows = rows.as_array().expect("an array of rows");
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[1]["r_name"], "AMERICA");

    let output = run_tone(&["sql", "--data", data(), "select count(*) as n from region"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let table = stdout_of(&output);
    assert!(
        table.contains("| n |") && table.contains("| 5 |"),
        "{table}"
    );
}

#[test]
fn script_with_ddl_view_select_and_copy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let copied = dir.path().join("copied.parquet");
    let script = dir.path().join("script.sql");
    let nation = tpch_data().join("nation");
    std::fs::write(
        &script,
        format!(
            "create external table nations stored as parquet location '{}';\n\
             create view african as select n_name from nations where n_regionkey = 0;\n\
             select count(*) as africans from african;\n\
             copy (select * from african order by n_name) to '{}' stored as parquet;",
            nation.display(),
            copied.display()
        ),
    )
    .expect("write script");
    let output = run_tone(&[
        "sql",
        "--format",
        "csv",
        "-f",
        script.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(
        stdout_of(&output).starts_with("africans\n5\n"),
        "{}",
        stdout_of(&output)
    );

    let table = format!("copied={}", copied.display());
    let output = run_tone(&[
        "sql",
        "--table",
        &table,
        "--format",
        "csv",
        "select n_name from copied order by n_name",
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(
        stdout_of(&output),
        "n_name\nALGERIA\nETHIOPIA\nKENYA\nMOROCCO\nMOZAMBIQUE\n"
    );
}

#[test]
fn explain_prints_the_stage_dag() {
    let output = run_tone(&[
        "explain",
        "--data",
        data(),
        "--partitions",
        "3",
        "select o_orderpriority, count(*) from orders group by o_orderpriority order by 1",
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let text = stdout_of(&output);
    for needle in [
        "Stage 0",
        "Stage 1",
        "3 partition(s)",
        "ShuffleWriterExec",
        "ShuffleReaderExec",
        "shuffle Hash(",
        "→ stage 1",
        "result",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn gen_writes_csv_tables() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().to_str().expect("utf-8");
    let output = run_tone(&[
        "gen", "tpch", "--scale", "0.01", "--out", out, "--format", "csv", "--parts", "2",
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(dir.path().join("lineitem/lineitem.2.csv").exists());
    assert!(dir.path().join("nation/nation.1.csv").exists());
    let output = run_tone(&[
        "sql",
        "--data",
        out,
        "--format",
        "csv",
        "select count(*) as n from nation",
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "n\n25\n");
}

#[test]
fn shell_runs_multi_line_statements_and_survives_errors() {
    let home = tempfile::tempdir().expect("temp home");
    let mut child = tone()
        .args(["shell", "--data", data(), "--format", "csv"])
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shell starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(b"select count(*) as n\n  from region;\nselect nope from region;\nselect 40 + 2 as answer;\n\\q\n")
        .expect("write to shell");
    drop(stdin);
    let output = child.wait_with_output().expect("shell exits");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(stdout.contains("n\n5\n"), "{stdout}");
    assert!(
        stdout.contains("answer\n42\n"),
        "the shell stopped after an error: {stdout}"
    );
    assert!(
        stderr_of(&output).contains("nope"),
        "{}",
        stderr_of(&output)
    );
    let history = std::fs::read_to_string(home.path().join(".tone_history")).expect("history");
    assert!(history.contains("from region;"), "{history}");
}

#[test]
fn bench_reports_both_engines_as_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let queries = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tpch_queries");
    let output = run_tone(&[
        "bench",
        "tpch",
        "--data",
        data(),
        "--queries",
        queries,
        "--iterations",
        "1",
        "--only",
        "q01,q06",
        "--engine",
        "tone",
        "--engine",
        "tone-static",
        "--engine",
        "datafusion",
        "--json",
        json.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(
        stdout_of(&output).contains("ratio Tone/Datafusion"),
        "{}",
        stdout_of(&output)
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("valid JSON");
    let tone_figures = &figures[0];
    assert_eq!(tone_figures["engine"], "tone");
    assert!(tone_figures["total_median_s"].as_f64().expect("a number") > 0.0);
    assert_eq!(tone_figures["queries"]["q01"]["rows"], 4);
    // tone with its adaptive decisions off, for their gain in one run.
    assert_eq!(figures[1]["engine"], "tone-static");
    assert_eq!(figures[1]["queries"]["q01"]["rows"], 4);
    assert_eq!(figures[2]["engine"], "datafusion");

    let output = run_tone(&["bench", "tpch", "--data", data(), "--engine", "cluster"]);
    assert_input_error(&output, &["--master"]);
}

#[test]
fn syntax_error_names_line_and_column() {
    let output = run_tone(&[
        "sql",
        "--data",
        data(),
        "select n_name\nfrom nation where n_regionkey = = 0",
    ]);
    assert_input_error(&output, &["line 2, column", "n_regionkey = = 0", "^"]);
}

#[test]
fn unknown_table_and_column_are_named() {
    let output = run_tone(&["sql", "--data", data(), "select * from no_such_table"]);
    assert_input_error(&output, &["no_such_table"]);
    let output = run_tone(&["sql", "--data", data(), "select no_such_column from nation"]);
    assert_input_error(&output, &["no_such_column"]);
}

#[test]
fn missing_data_folder_is_named() {
    let output = run_tone(&["sql", "--data", "/no/such/folder", "select 1"]);
    assert_input_error(&output, &["/no/such/folder"]);
}

#[test]
fn corrupt_parquet_file_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let table = dir.path().join("broken");
    std::fs::create_dir(&table).expect("table dir");
    std::fs::copy(
        tpch_data().join("region/region.1.parquet"),
        table.join("good.parquet"),
    )
    .expect("copy");
    std::fs::write(table.join("bad.parquet"), b"this is not parquet at all").expect("write junk");
    let output = run_tone(&[
        "sql",
        "--data",
        dir.path().to_str().expect("utf-8"),
        "select count(*) from broken",
    ]);
    assert_input_error(&output, &["bad.parquet"]);
}

#[test]
fn tables_can_be_object_store_urls() {
    let url = format!("n=file://{}/", tpch_data().join("nation").display());
    let output = run_tone(&[
        "sql",
        "--table",
        &url,
        "--format",
        "csv",
        "select count(*) as n from n",
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "n\n25\n");
    let output = run_tone(&[
        "sql",
        "--table",
        "x=file:///no/such/folder/",
        "select 1 from x",
    ]);
    assert_input_error(&output, &["file:///no/such/folder/"]);
}

#[test]
fn sql_plans_with_the_partitions_it_is_given() {
    for partitions in ["3", "5"] {
        let output = run_tone(&[
            "sql",
            "--data",
            data(),
            "--partitions",
            partitions,
            "--format",
            "csv",
            "explain select o_orderpriority, count(*) from orders group by o_orderpriority",
        ]);
        assert!(output.status.success(), "{}", stderr_of(&output));
        let plan = stdout_of(&output);
        let hash = format!("Hash([o_orderpriority@0], {partitions})");
        assert!(plan.contains(&hash), "no {hash} in:\n{plan}");
    }
}

#[test]
fn explain_shows_a_single_partition_exchange_for_a_global_sort() {
    let output = run_tone(&[
        "explain",
        "--data",
        data(),
        "--partitions",
        "3",
        "select * from orders order by o_orderkey limit 3",
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let text = stdout_of(&output);
    for needle in [
        "shuffle single → stage 1",
        "partitioning=single",
        "Stage 1 — 1 partition(s)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

/// `\d` and SHOW TABLES read the session's catalog, which runs in the
/// session itself (no stage can carry it).
#[test]
fn the_shell_lists_tables_and_sql_shows_them() {
    let home = tempfile::tempdir().expect("temp home");
    let mut child = tone()
        .args(["shell", "--data", data(), "--format", "csv"])
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shell starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(b"\\d\n\\q\n").expect("write to shell");
    drop(stdin);
    let output = child.wait_with_output().expect("shell exits");
    assert!(output.status.success(), "{}", stderr_of(&output));
    let listed = stdout_of(&output);
    for table in [
        "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
    ] {
        assert!(
            listed.contains(&format!(",{table},")),
            "{table} not in:\n{listed}"
        );
    }
    assert!(stderr_of(&output).is_empty(), "{}", stderr_of(&output));
    let output = run_tone(&[
        "sql",
        "--data",
        data(),
        "--format",
        "csv",
        "select table_name from information_schema.tables where table_schema = 'public' order by 1",
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(
        stdout_of(&output),
        "table_name\ncustomer\nlineitem\nnation\norders\npart\npartsupp\nregion\nsupplier\n"
    );
}
