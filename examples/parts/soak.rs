//! The coordinator soak: many small jobs (mixed SQL, failures, cancels)
//! through one coordinator, printing its resident memory and the time per
//! job after every block of jobs, so both curves can be read.
//!
//! `bench soak --master URL --coordinator-pid PID [--jobs 20000] [--dir DIR]`

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tone::cluster::{ClusterClient, ClusterError, TableRef};

/// Jobs per printed point of the curves.
const BLOCK: u64 = 1_000;
/// Jobs in flight at once: enough to keep two one-slot workers busy.
const IN_FLIGHT: u64 = 4;

/// What one job of the mix is meant to do.
#[derive(Clone, Copy)]
enum Mix {
    Succeed(&'static str),
    Fail(&'static str),
    Cancel(&'static str),
}

/// Twenty jobs: sixteen that succeed, two that fail while running and two
/// cancelled right after their submission.
const MIX: [Mix; 20] = {
    const GROUP: &str = "SELECT k % 7 AS g, count(*), sum(v) FROM t GROUP BY g ORDER BY g";
    const JOIN: &str = "SELECT count(*) FROM t a JOIN t b ON a.k = b.k + 1 WHERE a.v > 10";
    const TOP: &str = "SELECT k, v FROM t ORDER BY v DESC, k LIMIT 5";
    const COUNT: &str = "SELECT count(DISTINCT v) FROM t";
    const BAD_CAST: &str = "SELECT CAST(name AS INT) FROM t";
    // Bounded work, so a cancel that lands after the tasks started never
    // holds a slot for long.
    const SLOW: &str = "SELECT a.v, count(*) FROM t a JOIN t b ON a.v = b.v GROUP BY a.v";
    [
        Mix::Succeed(GROUP),
        Mix::Succeed(JOIN),
        Mix::Succeed(TOP),
        Mix::Succeed(COUNT),
        Mix::Fail(BAD_CAST),
        Mix::Succeed(GROUP),
        Mix::Succeed(JOIN),
        Mix::Succeed(TOP),
        Mix::Succeed(COUNT),
        Mix::Cancel(SLOW),
        Mix::Succeed(GROUP),
        Mix::Succeed(JOIN),
        Mix::Succeed(TOP),
        Mix::Succeed(COUNT),
        Mix::Fail(BAD_CAST),
        Mix::Succeed(GROUP),
        Mix::Succeed(JOIN),
        Mix::Succeed(TOP),
        Mix::Succeed(COUNT),
        Mix::Cancel(SLOW),
    ]
};

/// How the soak's jobs ended.
#[derive(Default)]
struct Tally {
    succeeded: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    /// Cancels that came after their job had already succeeded.
    ended_before_cancel: AtomicU64,
    unexpected: AtomicU64,
}

/// Writes the soak's one small table: 2,000 rows of `k, v, name`.
fn write_table(dir: &Path) -> std::io::Result<Vec<TableRef>> {
    let table = dir.join("t");
    std::fs::create_dir_all(&table)?;
    let mut text = String::from("k,v,name\n");
    for k in 0..2_000u64 {
        text.push_str(&format!("{k},{},n{}\n", k * 7919 % 101, k % 13));
    }
    std::fs::write(table.join("part-0.csv"), text)?;
    tone::cluster::tables_in_dir(dir)
}

/// The coordinator's resident set in KiB, from /proc.
fn resident_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

async fn run_one(client: &ClusterClient, tables: &[TableRef], mix: Mix, tally: &Tally) {
    let outcome = match mix {
        Mix::Succeed(sql) | Mix::Fail(sql) => client.sql(sql, tables, 2).await.map(|_| ()),
        Mix::Cancel(sql) => match client.submit(sql, tables, 2).await {
            Ok(submitted) => {
                let _ = client.cancel(&submitted.job_id).await;
                let ended = client.wait(&submitted.job_id, |_| {}).await.map(|_| ());
                if ended.is_ok() {
                    let _ = client.release(&submitted.job_id).await;
                }
                ended
            }
            Err(error) => Err(error),
        },
    };
    let counter = match (mix, outcome) {
        (Mix::Succeed(_), Ok(())) => &tally.succeeded,
        (Mix::Fail(_), Err(ClusterError::JobFailed { .. })) => &tally.failed,
        (Mix::Cancel(_), Err(ClusterError::JobCancelled { .. })) => &tally.cancelled,
        (Mix::Cancel(_), Ok(())) => &tally.ended_before_cancel,
        (_, outcome) => {
            if let Err(error) = outcome {
                eprintln!("soak: unexpected: {error}");
            }
            &tally.unexpected
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Runs `jobs` jobs, `IN_FLIGHT` at a time, printing a point per block.
pub async fn run(master: &str, pid: u32, jobs: u64, dir: &Path) -> Result<(), ClusterError> {
    let tables = write_table(dir).map_err(|error| ClusterError::Refused {
        message: format!("soak table in {}: {error}", dir.display()),
        user_error: true,
    })?;
    let client = ClusterClient::connect(master).await?;
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicU64::new(0));
    let mut points: Vec<(u64, u64, f64)> = Vec::new();
    println!("jobs,coordinator_rss_kib,ms_per_job");
    for block in 0..jobs.div_ceil(BLOCK) {
        let end = ((block + 1) * BLOCK).min(jobs);
        let started = Instant::now();
        let runners: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (client, tables, tally, next) =
                    (client.clone(), tables.clone(), tally.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= end {
                            next.fetch_min(end, Ordering::Relaxed);
                            break;
                        }
                        run_one(&client, &tables, MIX[(n % 20) as usize], &tally).await;
                    }
                })
            })
            .collect();
        for runner in runners {
            let _ = runner.await;
        }
        let done = end - block * BLOCK;
        let ms_per_job = started.elapsed().as_secs_f64() * 1000.0 / done as f64;
        let rss = resident_kib(pid).map_err(|error| ClusterError::Refused {
            message: error.to_string(),
            user_error: true,
        })?;
        println!("{end},{rss},{ms_per_job:.2}");
        points.push((end, rss, ms_per_job));
    }
    let (listed, total) = client.list_jobs(100, None).await?;
    println!(
        "succeeded {} failed {} cancelled {} (ended before the cancel {}) unexpected {}; \
         tone jobs lists {} of {total}",
        tally.succeeded.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.cancelled.load(Ordering::Relaxed),
        tally.ended_before_cancel.load(Ordering::Relaxed),
        tally.unexpected.load(Ordering::Relaxed),
        listed.len(),
    );
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        println!(
            "rss after {} jobs {} KiB, after {} jobs {} KiB: ratio {:.3}; ms/job {:.2} then {:.2}: ratio {:.3}",
            first.0,
            first.1,
            last.0,
            last.1,
            last.1 as f64 / first.1 as f64,
            first.2,
            last.2,
            last.2 / first.2,
        );
    }
    match tally.unexpected.load(Ordering::Relaxed) {
        0 => Ok(()),
        unexpected => Err(ClusterError::Refused {
            message: format!("{unexpected} jobs did not end as the mix meant"),
            user_error: false,
        }),
    }
}
