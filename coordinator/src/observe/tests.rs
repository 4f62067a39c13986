//! The board's fold of job events: what the UI shows follows from the
//! events alone, and each attempt's first end is the one that counts.

use super::board::Board;
use super::events::{AttemptEnd, EndState, Exchange, JobEvent, JobKind, PlanLine, StageOutline};
use super::metrics::CoordinatorMetrics;

fn board() -> Board {
    Board::new(10, None, CoordinatorMetrics::new().expect("metrics"))
}

fn stage(id: u32, partitions: u32, inputs: Vec<u32>, last: bool) -> StageOutline {
    StageOutline {
        id,
        partitions,
        inputs,
        output: (!last).then(|| Exchange {
            exchange: "hash".into(),
            partitioning: "Hash([a@0], 2)".into(),
        }),
        plan: vec![PlanLine {
            depth: 0,
            name: "ShuffleWriterExec".into(),
            detail: "ShuffleWriterExec".into(),
        }],
    }
}

fn submit(board: &Board) {
    board.record(
        "job-1",
        JobEvent::Submitted {
            job: "job-1".into(),
            name: "SELECT 1".into(),
            kind: JobKind::Sql,
        },
    );
    board.record(
        "job-1",
        JobEvent::Planned {
            stages: vec![stage(0, 2, vec![], false), stage(1, 1, vec![0], true)],
        },
    );
}

fn started(board: &Board, stage: u32, partition: u32, attempt: u32, worker: &str) {
    board.record(
        "job-1",
        JobEvent::TaskStarted {
            stage,
            partition,
            attempt,
            worker: worker.into(),
        },
    );
}

fn ended(board: &Board, stage: u32, partition: u32, attempt: u32, end: AttemptEnd) {
    board.record(
        "job-1",
        JobEvent::TaskEnded {
            stage,
            partition,
            attempt,
            end,
        },
    );
}

fn succeeded(rows: u64, bytes_out: u64) -> AttemptEnd {
    AttemptEnd::Succeeded {
        rows,
        bytes_in: 0,
        bytes_out,
        spilled_bytes: 0,
        operators: Vec::new(),
    }
}

fn attempts_counted(board: &Board, outcome: &str) -> u64 {
    board
        .metrics
        .task_attempts
        .with_label_values(&[outcome])
        .get()
}

#[test]
fn a_late_report_of_a_cancelled_attempt_changes_nothing() {
    let board = board();
    submit(&board);
    started(&board, 0, 0, 0, "w1");
    ended(&board, 0, 0, 0, AttemptEnd::Cancelled);
    ended(&board, 0, 0, 0, succeeded(5, 50));
    let detail = board.detail("job-1").expect("job");
    assert_eq!(detail.stages[0].tasks[0].state, "cancelled");
    assert_eq!(detail.stages[0].tasks_done, 0);
    assert_eq!(attempts_counted(&board, "cancelled"), 1);
    assert_eq!(attempts_counted(&board, "succeeded"), 0);
}

#[test]
fn a_stage_made_again_runs_again_and_counts_each_partition_once() {
    let board = board();
    submit(&board);
    for partition in 0..2 {
        started(&board, 0, partition, 0, "w1");
        ended(&board, 0, partition, 0, succeeded(10, 100));
    }
    board.record("job-1", JobEvent::StageDone { stage: 0 });
    let detail = board.detail("job-1").expect("job");
    assert_eq!(detail.stages[0].state, "done");
    assert_eq!(detail.stages[1].inputs[0].bytes, 200);
    // Partition 1's output was lost with its worker: it runs again.
    started(&board, 0, 1, 1, "w2");
    let detail = board.detail("job-1").expect("job");
    assert_eq!(detail.stages[0].state, "running");
    ended(&board, 0, 1, 1, succeeded(10, 120));
    board.record("job-1", JobEvent::StageDone { stage: 0 });
    let detail = board.detail("job-1").expect("job");
    assert_eq!(detail.stages[0].state, "done");
    assert_eq!(detail.stages[0].tasks_done, 2);
    assert_eq!(
        detail.stages[0].rows, 20,
        "the latest success per partition"
    );
    assert_eq!(detail.stages[0].bytes_written, 220);
    assert_eq!(detail.summary.bytes_shuffled, 220);
}

#[test]
fn a_departed_worker_loses_its_running_attempts_and_the_end_stops_the_rest() {
    let board = board();
    submit(&board);
    started(&board, 0, 0, 0, "w1");
    started(&board, 0, 1, 0, "w2");
    board.worker_departed("w1", "127.0.0.1:1", false);
    let detail = board.detail("job-1").expect("job");
    assert_eq!(detail.stages[0].tasks[0].state, "lost");
    assert_eq!(detail.stages[0].tasks[1].state, "running");
    assert_eq!(detail.summary.tasks_running, 1);
    assert_eq!(board.departed_workers()[0].state, "lost");
    board.record(
        "job-1",
        JobEvent::Ended {
            state: EndState::Failed,
            error: "boom".into(),
        },
    );
    let detail = board.detail("job-1").expect("job");
    assert_eq!(detail.summary.state, "failed");
    assert_eq!(detail.summary.error, "boom");
    assert_eq!(detail.stages[0].tasks[1].state, "cancelled");
    assert_eq!(detail.summary.tasks_running, 0);
}
