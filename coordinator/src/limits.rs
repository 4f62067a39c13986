//! Bounds on the numbers and names that arrive from the network, checked
//! in the services before anything is planned, stored or scheduled.

use std::time::Duration;

use tone_proto::binary::is_sha256;
use tone_proto::v1 as pb;
use tonic::Status;

/// Partitions (tasks per stage) one job may ask for.
pub const MAX_PARTITIONS_PER_JOB: u32 = 4096;
/// Task slots one worker may offer.
pub const MAX_SLOTS_PER_WORKER: u32 = 1024;
/// Executor processes one worker may say it runs at once.
pub const MAX_EXECUTORS_PER_WORKER: u32 = 1024;
/// Tables one submission may register.
pub const MAX_TABLES_PER_JOB: usize = 1024;
/// Longest time limit a job may ask for.
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
/// Arguments of a Rust job's executor, and their total bytes.
pub const MAX_EXECUTOR_ARGS: usize = 4096;
pub const MAX_EXECUTOR_ARG_BYTES: usize = 1024 * 1024;
/// Earlier results one Rust job may replay.
pub const MAX_REPLAYED_RESULTS: usize = 100_000;
/// Jobs one `ListJobs` page holds at most; `tone jobs` pages through more.
pub const MAX_LISTED_JOBS: usize = 1_000;
/// SQL text a listed job carries at most (`Status` has the whole text), so
/// a full page stays far below the message limit.
pub const MAX_LISTED_SQL_BYTES: usize = 4096;
/// Map outputs one registering worker may say it holds.
pub const MAX_HELD_OUTPUTS: usize = 1_000_000;
/// Longest worker id and Flight address.
pub const MAX_WORKER_ID_CHARS: usize = 128;
/// A plan job's name (`SubmitJobRequest.name`).
pub const MAX_JOB_NAME_CHARS: usize = 256;
pub const MAX_ADDRESS_CHARS: usize = 256;

/// Checks a submission's numbers: partitions, tables, time limit.
pub fn check_submit(request: &pb::SubmitJobRequest) -> Result<(), Status> {
    if request.partitions > MAX_PARTITIONS_PER_JOB {
        return Err(Status::invalid_argument(format!(
            "{} partitions asked for; a job may have at most {MAX_PARTITIONS_PER_JOB}",
            request.partitions
        )));
    }
    if request.tables.len() > MAX_TABLES_PER_JOB {
        return Err(Status::invalid_argument(format!(
            "{} tables given; a job may register at most {MAX_TABLES_PER_JOB}",
            request.tables.len()
        )));
    }
    if Duration::from_millis(request.timeout_ms) > MAX_JOB_TIMEOUT {
        return Err(Status::invalid_argument(format!(
            "a time limit of {} ms is longer than the most allowed, {} s",
            request.timeout_ms,
            MAX_JOB_TIMEOUT.as_secs()
        )));
    }
    if !request.sql.is_empty() && !request.plan.is_empty() {
        return Err(Status::invalid_argument(
            "a job is either SQL text or an encoded plan, not both",
        ));
    }
    if request.name.chars().count() > MAX_JOB_NAME_CHARS {
        return Err(Status::invalid_argument(format!(
            "a job name of {} characters; at most {MAX_JOB_NAME_CHARS} are allowed",
            request.name.chars().count()
        )));
    }
    if request.executor.is_some() && request.plan.is_empty() {
        return Err(Status::invalid_argument(
            "a SQL job cannot carry an executor: only a Rust job's plan with closures runs in one",
        ));
    }
    if let Some(spec) = &request.executor {
        check_spec(spec)?;
    }
    Ok(())
}

fn check_spec(spec: &pb::ExecutorSpec) -> Result<(), Status> {
    if !is_sha256(&spec.binary_sha256) {
        return Err(Status::invalid_argument(
            "the executor's binary must be named by its SHA-256 in lowercase hex",
        ));
    }
    if let Some(bad) = spec.results.iter().find(|sha256| !is_sha256(sha256)) {
        return Err(Status::invalid_argument(format!(
            "replayed result '{}' is not a SHA-256 in lowercase hex",
            bad.chars().take(80).collect::<String>()
        )));
    }
    if spec.results.len() > MAX_REPLAYED_RESULTS {
        return Err(Status::invalid_argument(format!(
            "{} replayed results; at most {MAX_REPLAYED_RESULTS}",
            spec.results.len()
        )));
    }
    let arg_bytes: usize = spec.args.iter().map(String::len).sum();
    if spec.args.len() > MAX_EXECUTOR_ARGS || arg_bytes > MAX_EXECUTOR_ARG_BYTES {
        return Err(Status::invalid_argument(format!(
            "the executor's arguments ({} of them, {arg_bytes} bytes) pass the bounds \
             ({MAX_EXECUTOR_ARGS}, {MAX_EXECUTOR_ARG_BYTES} bytes)",
            spec.args.len()
        )));
    }
    if spec.partitions > MAX_PARTITIONS_PER_JOB {
        return Err(Status::invalid_argument(format!(
            "the executor plans with {} partitions; at most {MAX_PARTITIONS_PER_JOB}",
            spec.partitions
        )));
    }
    Ok(())
}

/// Checks a worker's registration: its id, address and numbers.
pub fn check_register(register: &pb::Register) -> Result<(), Status> {
    if !is_plain_name(&register.worker_id, MAX_WORKER_ID_CHARS) {
        return Err(Status::invalid_argument(format!(
            "a worker id is 1 to {MAX_WORKER_ID_CHARS} letters, digits, '-', '_' or '.'"
        )));
    }
    if register.slots == 0 || register.slots > MAX_SLOTS_PER_WORKER {
        return Err(Status::invalid_argument(format!(
            "a worker has 1 to {MAX_SLOTS_PER_WORKER} slots, not {}",
            register.slots
        )));
    }
    if register.max_executors > MAX_EXECUTORS_PER_WORKER {
        return Err(Status::invalid_argument(format!(
            "a worker runs at most {MAX_EXECUTORS_PER_WORKER} executors, not {}",
            register.max_executors
        )));
    }
    if !is_address(&register.flight_address) {
        return Err(Status::invalid_argument(format!(
            "the worker's Flight address must be HOST:PORT (at most {MAX_ADDRESS_CHARS} characters)"
        )));
    }
    if register.session_key.len() > 64 {
        return Err(Status::invalid_argument(
            "a session key has at most 64 bytes",
        ));
    }
    let held: usize = register
        .held_outputs
        .iter()
        .map(|stage| stage.maps.len())
        .sum();
    if held > MAX_HELD_OUTPUTS {
        return Err(Status::invalid_argument(format!(
            "a worker reports at most {MAX_HELD_OUTPUTS} held map outputs, not {held}"
        )));
    }
    Ok(())
}

/// Letters, digits, `-`, `_` and `.` (not only dots): safe as a file name.
pub fn is_plain_name(name: &str, max_chars: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_chars
        && name.bytes().any(|byte| byte != b'.')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

/// `host:port` with a plausible host (name, IPv4 or bracketed IPv6).
fn is_address(address: &str) -> bool {
    if address.len() > MAX_ADDRESS_CHARS {
        return false;
    }
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    port.parse::<u16>().is_ok()
        && !host.is_empty()
        && host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(id: &str, address: &str, slots: u32) -> pb::Register {
        pb::Register {
            worker_id: id.into(),
            flight_address: address.into(),
            slots,
            max_executors: 4,
            session_key: vec![0; 32],
            held_outputs: Vec::new(),
            memory_limit_bytes: 0,
        }
    }

    #[test]
    fn registrations_are_bounded_and_named_plainly() {
        assert!(check_register(&register("worker-1a", "127.0.0.1:5000", 2)).is_ok());
        assert!(check_register(&register("w", "host-a.example:5000", 2)).is_ok());
        assert!(check_register(&register("w", "[::1]:5000", 2)).is_ok());
        for (id, address, slots) in [
            ("", "127.0.0.1:1", 1),
            ("../etc", "127.0.0.1:1", 1),
            ("..", "127.0.0.1:1", 1),
            ("w", "127.0.0.1:1", 0),
            ("w", "127.0.0.1:1", MAX_SLOTS_PER_WORKER + 1),
            ("w", "no-port", 1),
            ("w", "bad host:1", 1),
            ("w", "h:99999", 1),
        ] {
            assert!(
                check_register(&register(id, address, slots)).is_err(),
                "{id} {address} {slots}"
            );
        }
        let mut long = register(&"w".repeat(MAX_WORKER_ID_CHARS + 1), "127.0.0.1:1", 1);
        assert!(check_register(&long).is_err());
        long.worker_id = "w".into();
        long.max_executors = MAX_EXECUTORS_PER_WORKER + 1;
        assert!(check_register(&long).is_err());
    }

    #[test]
    fn submissions_are_bounded() {
        let sql = |partitions, timeout_ms| pb::SubmitJobRequest {
            sql: "select 1".into(),
            partitions,
            timeout_ms,
            ..Default::default()
        };
        assert!(check_submit(&sql(8, 1000)).is_ok());
        assert!(check_submit(&sql(MAX_PARTITIONS_PER_JOB + 1, 0)).is_err());
        assert!(check_submit(&sql(1, u64::MAX)).is_err());
        let mut with_executor = sql(1, 0);
        with_executor.executor = Some(pb::ExecutorSpec {
            binary_sha256: "ab".repeat(32),
            ..Default::default()
        });
        let refused = check_submit(&with_executor).expect_err("SQL with an executor");
        assert!(refused.message().contains("cannot carry an executor"));
        let spec = |binary: &str, results: Vec<String>| pb::SubmitJobRequest {
            plan: vec![1],
            executor: Some(pb::ExecutorSpec {
                binary_sha256: binary.into(),
                results,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(check_submit(&spec(&"ab".repeat(32), vec!["cd".repeat(32)])).is_ok());
        assert!(check_submit(&spec("../bin", Vec::new())).is_err());
        assert!(check_submit(&spec(&"ab".repeat(32), vec!["x".into()])).is_err());
    }
}
