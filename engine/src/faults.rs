//! Deterministic fault injection for tests, set by environment variables
//! so a test can make chosen workers fail at chosen points:
//!
//! - `TONE_FAULT_PANIC_IN_STAGE=N`: every task of stage N panics, as a bug
//!   in an operator would (every attempt: the job fails after its retries).
//! - `TONE_FAULT=POINT@STAGE[,POINT@STAGE…]`, each firing once per worker
//!   process, on a task of stage STAGE (`*`: of any stage):
//!   - `before_task`: the task fails before it starts;
//!   - `after_write`: the worker process dies right after the task wrote
//!     its shuffle output, before reporting it (a crash: the output is
//!     lost with the process);
//!   - `fetch`: the task's first remote shuffle fetch fails;
//!   - `truncate`: the first shuffle partition of stage STAGE this worker
//!     serves loses its last batch on the way (the reader must notice);
//!   - `stall`: the task waits [`STALL`] before it starts, holding its
//!     slot, so a test can act while a job is certainly mid-run;
//!   - `slow` (written `slow@STAGE:MS`): every task of stage STAGE on
//!     this worker waits MS milliseconds before it starts, not just once:
//!     a slow machine, for speculation to back up;
//!   - `stall_upload` (stage `*` only: a sink does not know its stage): a
//!     write to an object store waits [`STALL`] once it has handed the
//!     upload more than one part, so a multipart upload is certainly in
//!     progress and incomplete.
//!
//! Every fault that fires says so on stderr and in the task's error, so a
//! test can check that it really fired.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// How long a `stall` fault holds its task.
pub const STALL: Duration = Duration::from_secs(20);

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    BeforeTask,
    AfterWrite,
    Fetch,
    Stall,
    StallUpload,
    Truncate,
    Slow,
}

impl Point {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "before_task" => Some(Self::BeforeTask),
            "after_write" => Some(Self::AfterWrite),
            "fetch" => Some(Self::Fetch),
            "stall" => Some(Self::Stall),
            "stall_upload" => Some(Self::StallUpload),
            "truncate" => Some(Self::Truncate),
            "slow" => Some(Self::Slow),
            _ => None,
        }
    }
}

struct Fault {
    point: Point,
    /// `None`: any stage.
    stage: Option<u32>,
    /// How long a `slow` fault holds each task.
    delay: Duration,
    fired: AtomicBool,
}

fn faults() -> &'static [Fault] {
    static FAULTS: OnceLock<Vec<Fault>> = OnceLock::new();
    FAULTS.get_or_init(|| {
        std::env::var("TONE_FAULT")
            .map(|spec| parse(&spec))
            .unwrap_or_default()
    })
}

fn parse(spec: &str) -> Vec<Fault> {
    spec.split(',')
        .filter_map(|item| {
            let (point, stage) = item.trim().split_once('@')?;
            let point = Point::parse(point)?;
            let (stage, delay) = match (point, stage.split_once(':')) {
                (Point::Slow, Some((stage, ms))) => {
                    (stage, Duration::from_millis(ms.parse().ok()?))
                }
                (Point::Slow, None) | (_, Some(_)) => return None,
                (_, None) => (stage, Duration::ZERO),
            };
            let fault = Fault {
                point,
                stage: match stage {
                    "*" => None,
                    number => Some(number.parse().ok()?),
                },
                delay,
                fired: AtomicBool::new(false),
            };
            Some(fault)
        })
        .collect()
}

/// True (once per process) when a fault is set at `point` for `stage`.
pub fn fires(point: Point, stage: u32) -> bool {
    let fired = faults().iter().any(|fault| {
        fault.point == point
            && fault.stage.is_none_or(|wanted| wanted == stage)
            && !fault.fired.swap(true, Ordering::SeqCst)
    });
    if fired {
        tracing::warn!(?point, stage, "injected fault fires");
        eprintln!("tone worker: injected fault {point:?} fires in stage {stage}");
    }
    fired
}

/// How long a task of `stage` waits before it starts: a `slow` fault
/// holds every task of its stage, not once.
pub fn slowdown(stage: u32) -> Option<Duration> {
    let fault = faults().iter().find(|fault| {
        fault.point == Point::Slow && fault.stage.is_none_or(|wanted| wanted == stage)
    })?;
    if !fault.fired.swap(true, Ordering::SeqCst) {
        tracing::warn!(
            stage,
            delay_ms = fault.delay.as_millis() as u64,
            "injected slowness"
        );
        eprintln!(
            "tone worker: injected fault Slow holds every task of stage {stage} for {:?}",
            fault.delay
        );
    }
    Some(fault.delay)
}

/// True (once per process) when a fault is set at `point` for any stage
/// (`POINT@*`), for points that do not know their stage.
pub fn fires_in_any_stage(point: Point) -> bool {
    let fired = faults().iter().any(|fault| {
        fault.point == point && fault.stage.is_none() && !fault.fired.swap(true, Ordering::SeqCst)
    });
    if fired {
        tracing::warn!(?point, "injected fault fires");
        eprintln!("tone: injected fault {point:?} fires");
    }
    fired
}

/// `TONE_FAULT_PANIC_IN_STAGE=N` makes every task of stage N panic; the
/// message names the attempt, so a test can tell the first cause from the
/// last.
pub fn panic_in_stage(stage_id: u32, attempt: u32) {
    let target = std::env::var("TONE_FAULT_PANIC_IN_STAGE")
        .ok()
        .and_then(|value| value.parse::<u32>().ok());
    if target == Some(stage_id) {
        tracing::warn!(stage_id, attempt, "injected fault: panicking");
        panic!("injected fault: attempt {attempt} of a task of stage {stage_id} panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_items_are_skipped() {
        let faults = parse(
            "before_task@1, fetch@*,bogus@2,after_write@x,after_write@0,stall@3,\
             slow@2:1500,slow@2,stall@3:10,slow@1:x",
        );
        let points: Vec<(Point, Option<u32>, u128)> = faults
            .iter()
            .map(|f| (f.point, f.stage, f.delay.as_millis()))
            .collect();
        assert_eq!(
            points,
            vec![
                (Point::BeforeTask, Some(1), 0),
                (Point::Fetch, None, 0),
                (Point::AfterWrite, Some(0), 0),
                (Point::Stall, Some(3), 0),
                (Point::Slow, Some(2), 1500)
            ]
        );
    }
}
