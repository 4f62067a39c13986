//! The fuzz targets' inputs kept in the repository (`fuzz/regressions/`:
//! crashes found and fixed; `fuzz/corpus/`: the seeds), replayed through
//! the same in-process coordinator the targets use (see fuzz/README.md).

use std::path::{Path, PathBuf};

use prost::Message;
use tone_coordinator::fuzzing::Harness;
use tone_proto::v1 as pb;

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.is_file() && !path.ends_with(".gitkeep"))
        .collect();
    files.sort();
    files
}

/// Panics on this test's own runtime threads. The scheduler catches its
/// panics (and fails the job), so only a hook sees them; libFuzzer's hook
/// aborts on them, so the suite counts them as failures too.
static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const THREAD: &str = "fuzz-replay";

#[test]
fn fuzz_regressions_and_seeds_leave_the_coordinator_working() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(THREAD) {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        previous(info);
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREAD)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(replay());
    assert_eq!(
        PANICS.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a replayed input panicked"
    );
}

async fn replay() {
    let harness = Harness::start().await;
    let mut replayed = 0;
    for kind in ["regressions", "corpus"] {
        for target in ["requests", "plan", "sql"] {
            for file in inputs(kind, target) {
                let data = std::fs::read(&file).expect("input");
                match target {
                    "requests" => harness.request(&data).await,
                    "plan" => harness.plan(&data),
                    _ => harness.sql(&String::from_utf8_lossy(&data)).await,
                }
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 20, "the seeds are missing: {replayed} inputs");
    assert!(harness.healthy().await, "the coordinator stopped answering");
}

/// Writes the seed corpus into `TONE_WRITE_FUZZ_SEEDS` (a folder) when
/// set: encoded plans of a few queries and one request of each kind.
#[tokio::test(flavor = "multi_thread")]
async fn seeds_for_the_fuzz_targets() {
    let Ok(out) = std::env::var("TONE_WRITE_FUZZ_SEEDS") else {
        return;
    };
    let out = PathBuf::from(out);
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(name), bytes).expect("seed");
    };
    let queries = [
        "select a, sum(c) from t group by a order by a",
        "select t.a, u.e from t join u on t.a = u.a where t.c > 0",
        "select * from t left join u using (a) union all select 1, 'z', 2.0, date '2021-01-01', 'q'",
        "select a, row_number() over (partition by b order by c) from t",
        "select b, count(distinct a) from t group by rollup (b) having count(*) > 0",
        "select * from t where a in (select a from u) and exists (select 1 from u where u.a = t.a)",
        "with x as (select a from t) select * from x, x y limit 2 offset 1",
        "select cast(d as varchar), d + interval '1 day', upper(b), coalesce(c, 0) from t",
    ];
    let engine = tone::Engine::new(tone::EngineConfig {
        partitions: 3,
        ..Default::default()
    })
    .expect("engine");
    engine
        .sql("CREATE TABLE t (a INT, b VARCHAR, c DOUBLE, d DATE) AS VALUES (1, 'a', 1.5, DATE '2020-01-01')")
        .await
        .expect("t");
    engine
        .sql("CREATE TABLE u (a INT, e VARCHAR) AS VALUES (1, 'x')")
        .await
        .expect("u");
    for (index, sql) in queries.iter().enumerate() {
        write("sql", &format!("q{index}"), sql.as_bytes());
        let plan = engine.physical_plan(sql).await.expect("plans");
        let bytes = tone_engine::codec::encode_plan(plan).expect("encodes");
        write("plan", &format!("q{index}"), &bytes);
        let submit = pb::SubmitJobRequest {
            sql: sql.to_string(),
            partitions: 2,
            ..Default::default()
        };
        write(
            "requests",
            &format!("submit{index}"),
            &[&[0u8][..], &submit.encode_to_vec()].concat(),
        );
    }
    let requests: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "status",
            1,
            pb::JobStatusRequest {
                job_id: "job-x".into(),
            }
            .encode_to_vec(),
        ),
        (
            "cancel",
            2,
            pb::CancelJobRequest {
                job_id: "job-x".into(),
            }
            .encode_to_vec(),
        ),
        (
            "release",
            3,
            pb::JobStatusRequest {
                job_id: "job-x".into(),
            }
            .encode_to_vec(),
        ),
        (
            "list",
            4,
            pb::ListJobsRequest {
                limit: 3,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "has",
            5,
            pb::BinaryRef {
                sha256: "ab".repeat(32),
            }
            .encode_to_vec(),
        ),
        (
            "fetch",
            6,
            pb::BinaryRef {
                sha256: "../etc".into(),
            }
            .encode_to_vec(),
        ),
        ("workers", 7, Vec::new()),
        ("report", 9, overflowing_report().encode_to_vec()),
        (
            "heartbeat",
            9,
            pb::WorkerMessage {
                kind: Some(pb::worker_message::Kind::Heartbeat(pb::Heartbeat {
                    running_tasks: u32::MAX,
                    executors: u32::MAX,
                    ..Default::default()
                })),
            }
            .encode_to_vec(),
        ),
    ];
    for (name, kind, bytes) in requests {
        write("requests", name, &[&[kind][..], &bytes].concat());
    }
    // After the submissions (names sort after them): reports of the tasks
    // assigned, oldest first, whose row counts overflow if added plainly.
    let report = overflowing_report();
    for index in 0..24 {
        let name = format!("zz-report-{index:02}");
        write(
            "requests",
            &name,
            &[&[9u8][..], &report.encode_to_vec()].concat(),
        );
    }
}

/// A success report of the oldest task assigned to the stand-in worker,
/// with counts at their largest.
fn overflowing_report() -> pb::WorkerMessage {
    pb::WorkerMessage {
        kind: Some(pb::worker_message::Kind::TaskStatus(pb::TaskStatus {
            task: Some(pb::TaskKey::default()),
            outcome: Some(pb::task_status::Outcome::Succeeded(pb::TaskSucceeded {
                rows: u64::MAX,
                bytes: u64::MAX,
                remote_fetch_bytes: u64::MAX,
                spilled_bytes: u64::MAX,
                partition_bytes: vec![u64::MAX; 3],
                operators: vec![pb::OperatorMetrics {
                    depth: u32::MAX,
                    name: "x".repeat(10_000),
                    values: [("output_rows".to_string(), u64::MAX)].into(),
                }],
            })),
        })),
    }
}
