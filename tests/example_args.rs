//! The examples take their arguments through clap: `--help` lists every
//! flag (with those `Context::from_args` reads from the same arguments)
//! and exits 0; a flag an example does not know exits 2 with clap's
//! error.

use std::process::{Command, Output};

use crate::spmd::example;

/// The flags `Context::from_args` reads; an example that calls it must
/// accept them, since executors re-run it with the driver's arguments.
const CONTEXT_FLAGS: [&str; 5] = [
    "--master",
    "--tls-ca",
    "--tls-cert",
    "--tls-key",
    "--token-file",
];

/// (example, subcommand, its own flags, whether it reads the context
/// flags through `Context::from_args`).
const EXAMPLES: [(&str, Option<&str>, &[&str], bool); 12] = [
    (
        "wordcount",
        None,
        &["--input", "--output", "--master"],
        false,
    ),
    ("inverted_index", None, &["--input", "--master"], false),
    (
        "terasort",
        None,
        &["--bytes", "--dir", "--master", "--memory-limit"],
        false,
    ),
    ("pagerank", None, &["--pages", "--check"], true),
    ("kmeans", None, &["--points", "--k"], true),
    ("typed_join", None, &["--customers"], true),
    ("tpch_dataframe", None, &["--data"], true),
    ("export", None, &["--input", "--output", "--format"], true),
    (
        "spmd_faults",
        None,
        &["--panic-on", "--sleep-ms", "--again-after-ms", "--diverge"],
        true,
    ),
    ("bench", Some("wordcount"), &["--bytes", "--dir"], true),
    (
        "bench",
        Some("terasort"),
        &["--bytes", "--dir", "--master", "--memory-limit"],
        false,
    ),
    (
        "bench",
        Some("soak"),
        &["--master", "--coordinator-pid", "--jobs", "--dir"],
        false,
    ),
];

fn run(name: &str, subcommand: Option<&str>, args: &[&str]) -> Output {
    Command::new(example(name))
        .args(subcommand)
        .args(args)
        .env_remove("TONE_MASTER")
        .output()
        .expect("example runs")
}

#[test]
fn every_example_lists_its_flags_on_help() {
    for (name, subcommand, flags, reads_context) in EXAMPLES {
        let output = run(name, subcommand, &["--help"]);
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name} {subcommand:?} --help: {output:?}"
        );
        let context: &[&str] = if reads_context { &CONTEXT_FLAGS } else { &[] };
        for flag in flags.iter().chain(context) {
            assert!(
                help.contains(flag),
                "{name} {subcommand:?} --help does not name {flag}:\n{help}"
            );
        }
    }
}

#[test]
fn every_example_refuses_a_flag_it_does_not_know() {
    for (name, subcommand, _, _) in EXAMPLES {
        let output = run(name, subcommand, &["--no-such-flag"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{name} {subcommand:?}: {stderr}"
        );
        assert!(
            stderr.contains("unexpected argument '--no-such-flag'"),
            "{name} {subcommand:?}: {stderr}"
        );
    }
}

/// The TLS and token flags parse, as an executor re-running the driver's
/// arguments needs; without `--master` the job runs embedded and they go
/// unused.
#[test]
fn an_example_accepts_the_flags_context_from_args_reads() {
    let output = run(
        "typed_join",
        None,
        &[
            "--customers",
            "20",
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "client.pem",
            "--tls-key",
            "client.key",
            "--token-file",
            "token",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("customers without orders"), "{stdout}");
}
