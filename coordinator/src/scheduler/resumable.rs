//! What the state store keeps of a running job so that a restarted
//! coordinator resumes it, and how it is read back: its stage plans (as
//! workers get them, without reader locations) and, per finished stage,
//! where the map outputs are.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use tone_engine::adaptive::layout::StageLayout;
use tone_engine::codec::encode_plan;
use tone_engine::stage::Stage;
use tone_engine::{EngineError, JobId, StageDag, StageId};
use tone_proto::v1 as pb;

use super::model::WorkerId;
use crate::binaries::BinaryPin;
use crate::state::RunningJob;

/// A job an earlier coordinator ran, read back from the state store.
pub struct Resumption {
    pub job_id: JobId,
    pub sql: String,
    pub dag: StageDag,
    pub result_schema: Vec<u8>,
    /// Counted again from the resume.
    pub timeout: Option<Duration>,
    pub executor: Option<pb::ExecutorSpec>,
    /// Keeps the job's binary and replayed results stored.
    pub binary: Vec<BinaryPin>,
    /// Finished stages: each map output's worker and its address.
    pub finished: BTreeMap<StageId, Vec<(WorkerId, String)>>,
    /// How the finished stages that were laid out again ran.
    pub layouts: BTreeMap<StageId, StageLayout>,
}

/// The record of a job that starts.
pub fn record(
    job_id: &JobId,
    sql: &str,
    dag: &StageDag,
    result_schema: &[u8],
    timeout: Option<Duration>,
    executor: Option<pb::ExecutorSpec>,
) -> Result<pb::ResumableJob, EngineError> {
    let stages = dag
        .stages
        .iter()
        .map(|stage| {
            Ok(pb::StoredStage {
                plan: encode_plan(Arc::clone(&stage.plan))?,
                inputs: stage.inputs.iter().map(|input| input.0).collect(),
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    Ok(pb::ResumableJob {
        job_id: job_id.0.clone(),
        sql: sql.to_string(),
        stages,
        result_schema: result_schema.to_vec(),
        timeout_ms: timeout.map_or(0, |limit| limit.as_millis().max(1) as u64),
        executor,
        keeps_lineage: !dag.writes_files(),
    })
}

/// Reads a recorded job back. `decode` turns a stage's plan bytes into a
/// plan (closures as placeholders), `pin` keeps a stored binary. The
/// error says why the job cannot resume.
pub fn resumption(
    running: RunningJob,
    decode: impl Fn(&[u8]) -> Result<Arc<dyn ExecutionPlan>, EngineError>,
    pin: impl Fn(&str) -> Result<BinaryPin, String>,
) -> Result<Resumption, String> {
    let RunningJob { record, finished } = running;
    let job_id = JobId(record.job_id.clone());
    let mut stages = Vec::with_capacity(record.stages.len());
    for (index, stored) in record.stages.iter().enumerate() {
        let plan = decode(&stored.plan)
            .map_err(|error| format!("its plan for stage {index} cannot be read: {error}"))?;
        if let Some(gone) = missing_file(&plan) {
            return Err(format!("its input {gone} is gone"));
        }
        stages.push(Stage {
            id: StageId(index as u32),
            plan,
            inputs: stored.inputs.iter().copied().map(StageId).collect(),
        });
    }
    let mut binary = Vec::new();
    if let Some(executor) = &record.executor {
        for sha256 in std::iter::once(&executor.binary_sha256).chain(&executor.results) {
            binary.push(pin(sha256).map_err(|error| format!("its binary is gone: {error}"))?);
        }
    }
    let mut layouts = BTreeMap::new();
    let finished = finished
        .into_iter()
        .map(|(stage, outputs)| {
            let stage = StageId(stage);
            if let Some(layout) = outputs.layout {
                layouts.insert(stage, super::edge::layout_from_proto(stage, layout));
            }
            let located = outputs
                .outputs
                .into_iter()
                .map(|output| (WorkerId(output.worker_id), output.address))
                .collect();
            (stage, located)
        })
        .collect();
    Ok(Resumption {
        dag: StageDag {
            job_id: job_id.clone(),
            stages,
        },
        job_id,
        sql: record.sql,
        result_schema: record.result_schema,
        timeout: (record.timeout_ms > 0).then(|| Duration::from_millis(record.timeout_ms)),
        executor: record.executor,
        binary,
        finished,
        layouts,
    })
}

/// A local file the plan scans that no longer exists (files in object
/// stores are not checked here: a task that cannot read one fails saying
/// so).
fn missing_file(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    if let Some(source) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<DataSourceExec>() {
        let data = source.data_source().as_ref() as &dyn std::any::Any;
        if let Some(scan) = data.downcast_ref::<FileScanConfig>() {
            if scan.object_store_url.as_str().starts_with("file://") {
                let files = scan.file_groups.iter().flat_map(|group| group.files());
                for file in files {
                    let path = format!("/{}", file.object_meta.location);
                    if !Path::new(&path).exists() {
                        return Some(path);
                    }
                }
            }
        }
    }
    plan.children().into_iter().find_map(missing_file)
}
