//! The one place where the scheduler's domain types meet protobuf: what
//! comes in from workers and clients is converted here, and what goes
//! out is built here.

use std::collections::BTreeSet;
use std::time::Instant;

use tone_engine::adaptive::layout::{JoinSwitch, Split, StageLayout};
use tone_engine::shuffle::Slice;
use tone_engine::{JobId, StageId};
use tone_proto::v1 as pb;

use super::model::{
    Attempt, AttemptFailure, ErrorKind, JobState, LostOutput, Outcome, TaskKey, WorkerFigures,
    WorkerId,
};
use super::state::{Job, Worker};

pub fn error_kind_from_proto(kind: i32) -> ErrorKind {
    match pb::ErrorKind::try_from(kind) {
        Ok(pb::ErrorKind::User) => ErrorKind::User,
        Ok(pb::ErrorKind::Internal) => ErrorKind::Internal,
        Ok(pb::ErrorKind::Cancelled) => ErrorKind::Cancelled,
        Ok(pb::ErrorKind::FetchFailed) => ErrorKind::FetchFailed,
        Ok(pb::ErrorKind::WorkerLost) => ErrorKind::WorkerLost,
        Ok(pb::ErrorKind::Timeout) => ErrorKind::Timeout,
        Ok(pb::ErrorKind::NoWorkers) => ErrorKind::NoWorkers,
        Ok(pb::ErrorKind::Resources) => ErrorKind::Resources,
        // A kind this coordinator does not know is an ordinary failure.
        Ok(pb::ErrorKind::Execution | pb::ErrorKind::Unspecified) | Err(_) => ErrorKind::Execution,
    }
}

pub fn error_kind_to_proto(kind: ErrorKind) -> pb::ErrorKind {
    match kind {
        ErrorKind::User => pb::ErrorKind::User,
        ErrorKind::Execution => pb::ErrorKind::Execution,
        ErrorKind::Internal => pb::ErrorKind::Internal,
        ErrorKind::Cancelled => pb::ErrorKind::Cancelled,
        ErrorKind::FetchFailed => pb::ErrorKind::FetchFailed,
        ErrorKind::WorkerLost => pb::ErrorKind::WorkerLost,
        ErrorKind::Timeout => pb::ErrorKind::Timeout,
        ErrorKind::NoWorkers => pb::ErrorKind::NoWorkers,
        ErrorKind::Resources => pb::ErrorKind::Resources,
    }
}

pub fn job_state_to_proto(state: JobState) -> pb::JobState {
    match state {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

pub fn task_key_from_proto(key: &pb::TaskKey) -> (TaskKey, Attempt) {
    let task = TaskKey {
        job: JobId(key.job_id.clone()),
        stage: StageId(key.stage_id),
        partition: key.partition,
    };
    (task, Attempt(key.attempt))
}

pub fn task_key_to_proto(key: &TaskKey, attempt: Attempt) -> pb::TaskKey {
    pb::TaskKey {
        job_id: key.job.0.clone(),
        stage_id: key.stage.0,
        partition: key.partition,
        attempt: attempt.0,
    }
}

/// Reduce partitions a report may size; a longer list (from a bad or
/// hostile worker) is dropped, and its stage's consumers run as planned.
pub const MAX_REPORTED_PARTITIONS: usize = 1 << 16;

pub fn outcome_from_proto(outcome: pb::task_status::Outcome) -> Outcome {
    match outcome {
        pb::task_status::Outcome::Succeeded(done) => Outcome::Succeeded {
            rows: done.rows,
            bytes: done.bytes,
            remote_fetch_bytes: done.remote_fetch_bytes,
            partition_bytes: match done.partition_bytes.len() <= MAX_REPORTED_PARTITIONS {
                true => done.partition_bytes,
                false => Vec::new(),
            },
        },
        pb::task_status::Outcome::Failed(failed) => Outcome::Failed {
            kind: error_kind_from_proto(failed.kind),
            message: failed.message,
            lost_output: failed.fetch.map(|fetch| LostOutput {
                stage: StageId(fetch.stage_id),
                map: fetch.map,
                address: fetch.address,
            }),
        },
    }
}

pub fn figures_from_proto(heartbeat: &pb::Heartbeat) -> WorkerFigures {
    WorkerFigures {
        shuffle_disk_bytes: heartbeat.shuffle_disk_bytes,
        operator_spilled_bytes: heartbeat.operator_spilled_bytes,
        executors: heartbeat.executors,
        memory_used_bytes: heartbeat.memory_used_bytes,
        memory_limit_bytes: heartbeat.memory_limit_bytes,
    }
}

fn failure_to_proto(failure: &AttemptFailure) -> pb::TaskAttemptFailure {
    pb::TaskAttemptFailure {
        stage_id: failure.stage.0,
        partition: failure.partition,
        attempt: failure.attempt.0,
        worker_id: failure.worker.0.clone(),
        kind: error_kind_to_proto(failure.kind) as i32,
        message: failure.message.clone(),
    }
}

/// The job's status as clients see it. `result_schema` is the result's
/// Arrow IPC schema, held by the event loop.
pub fn job_status(job: &Job, result_schema: &[u8], now: Instant) -> pb::JobStatus {
    let (error_kind, error) = match &job.error {
        Some((kind, message)) => (error_kind_to_proto(*kind), message.clone()),
        None => (pb::ErrorKind::Unspecified, String::new()),
    };
    let (running, done, total) = job.task_counts();
    let results = job
        .results
        .iter()
        .map(|location| pb::ResultPartition {
            flight_address: location.address.clone(),
            ticket: Some(pb::ShuffleTicket {
                job_id: job.id.0.clone(),
                stage_id: location.stage.0,
                map: location.map,
                reduce: 0,
                // Signed by the service each time it hands them out.
                ..Default::default()
            }),
        })
        .collect();
    let (tasks_resumed, stages_resumed) = job.resumed_counts();
    pb::JobStatus {
        job_id: job.id.0.clone(),
        state: job_state_to_proto(job.state) as i32,
        sql: job.sql.clone(),
        stages_done: job.stages_done() as u32,
        stages_total: job.stages.len() as u32,
        tasks_running: running as u32,
        tasks_done: done as u32,
        tasks_total: total as u32,
        rows: job.rows,
        bytes: job.bytes,
        remote_fetch_bytes: job.remote_fetch_bytes,
        error,
        error_kind: error_kind as i32,
        results,
        result_schema: result_schema.to_vec(),
        elapsed_s: job.elapsed(now).as_secs_f64(),
        outputs_recomputed: job.outputs_recomputed(),
        backup_attempts: job.backup_attempts(),
        tasks_resumed: tasks_resumed as u32,
        stages_resumed: stages_resumed as u32,
        failures: job.failures.iter().map(failure_to_proto).collect(),
    }
}

/// The map outputs a registering worker says it holds, as task keys
/// (those of map tasks whose outputs they are).
pub fn held_from_proto(held: &[pb::HeldOutputs]) -> BTreeSet<TaskKey> {
    held.iter()
        .flat_map(|stage| {
            stage.maps.iter().map(|map| TaskKey {
                job: JobId(stage.job_id.clone()),
                stage: StageId(stage.stage_id),
                partition: *map,
            })
        })
        .collect()
}

/// Where a finished stage's outputs are, as the state store keeps them.
pub fn stage_outputs(
    outputs: &[(WorkerId, String)],
    layout: Option<&StageLayout>,
) -> pb::StageOutputs {
    pb::StageOutputs {
        outputs: outputs
            .iter()
            .map(|(worker, address)| pb::OutputLocation {
                worker_id: worker.0.clone(),
                address: address.clone(),
            })
            .collect(),
        layout: layout.map(layout_to_proto),
    }
}

fn layout_to_proto(layout: &StageLayout) -> pb::StageLayoutRecord {
    pb::StageLayoutRecord {
        partitions: layout.partitions as u32,
        readers: layout
            .readers
            .iter()
            .map(|tasks| pb::ReaderTasks {
                tasks: tasks
                    .iter()
                    .map(|slices| pb::TaskSlices {
                        slices: slices
                            .iter()
                            .map(|slice| pb::SliceRecord {
                                reduce: slice.reduce,
                                map_start: slice.maps.start,
                                map_end: slice.maps.end,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
        splits: layout
            .splits
            .iter()
            .map(|split| pb::SplitRecord {
                partition: split.partition,
                bytes: split.bytes,
                median: split.median,
                pieces: split.pieces as u32,
                memory_budget_bytes: split.memory_budget.unwrap_or(0),
            })
            .collect(),
        join_switch: layout.join_switch.map(|switch| pb::JoinSwitchRecord {
            build_bytes: switch.build_bytes,
            pool_bytes: switch.pool_bytes,
        }),
    }
}

/// A recorded layout of `stage`. Its slices are checked against the
/// stage's readers when its plan is encoded.
pub fn layout_from_proto(stage: StageId, record: pb::StageLayoutRecord) -> StageLayout {
    StageLayout {
        stage,
        partitions: record.partitions as usize,
        readers: record
            .readers
            .into_iter()
            .map(|reader| {
                reader
                    .tasks
                    .into_iter()
                    .map(|task| {
                        task.slices
                            .into_iter()
                            .map(|slice| Slice {
                                reduce: slice.reduce,
                                maps: slice.map_start..slice.map_end,
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect(),
        splits: record
            .splits
            .into_iter()
            .map(|split| Split {
                partition: split.partition,
                bytes: split.bytes,
                median: split.median,
                pieces: split.pieces as usize,
                memory_budget: (split.memory_budget_bytes > 0).then_some(split.memory_budget_bytes),
            })
            .collect(),
        join_switch: record.join_switch.map(|switch| JoinSwitch {
            build_bytes: switch.build_bytes,
            pool_bytes: switch.pool_bytes,
        }),
        // A worker runs its slots' worth of tasks whatever the layout.
        tasks_at_once: None,
    }
}

/// A worker as listings show it; `excluded_from` are the jobs that keep
/// their tasks away from it.
pub fn worker_info(
    id: &WorkerId,
    worker: &Worker,
    excluded_from: Vec<String>,
    now: std::time::Instant,
) -> pb::WorkerInfo {
    pb::WorkerInfo {
        worker_id: id.0.clone(),
        flight_address: worker.address.clone(),
        slots: worker.slots as u32,
        running_tasks: worker.running_count() as u32,
        tasks_done: worker.tasks_done,
        shuffle_disk_bytes: worker.figures.shuffle_disk_bytes,
        operator_spilled_bytes: worker.figures.operator_spilled_bytes,
        executors: worker.figures.executors,
        max_executors: worker.max_executors as u32,
        heartbeat_age_ms: now.saturating_duration_since(worker.last_seen).as_millis() as u64,
        draining: worker.draining,
        memory_used_bytes: worker.figures.memory_used_bytes,
        memory_limit_bytes: worker.figures.memory_limit_bytes,
        excluded_from,
    }
}

pub fn release(job: &JobId) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage {
        kind: Some(pb::coordinator_message::Kind::ReleaseJob(pb::ReleaseJob {
            job_id: job.0.clone(),
        })),
    }
}

pub fn cancel_task(key: &TaskKey, attempt: Attempt) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage {
        kind: Some(pb::coordinator_message::Kind::CancelTask(pb::CancelTask {
            task: Some(task_key_to_proto(key, attempt)),
        })),
    }
}

/// True once the job's state can no longer change.
pub fn has_ended(status: &pb::JobStatus) -> bool {
    matches!(
        pb::JobState::try_from(status.state),
        Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)
    )
}

/// The result schema as an Arrow IPC stream with no batches.
pub fn schema_bytes(schema: &arrow::datatypes::SchemaRef) -> Vec<u8> {
    let mut writer = match arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema) {
        Ok(writer) => writer,
        Err(_) => return Vec::new(),
    };
    if writer.finish().is_err() {
        return Vec::new();
    }
    writer.into_inner().unwrap_or_default()
}
