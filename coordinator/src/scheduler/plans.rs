//! Stage plans of a submitted job: encoded once per stage run, with each
//! shuffle reader told where its map outputs are.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan};
use tone_engine::codec::encode_plan;
use tone_engine::shuffle::ShuffleReaderExec;
use tone_engine::{EngineError, StageDag, StageId};

use super::state::{StagePlans, StageShape};

/// A job's stage DAG as the scheduler's state holds it.
pub struct DagPlans(pub StageDag);

impl DagPlans {
    /// What each stage reads and how many tasks it has.
    pub fn shapes(&self) -> Vec<StageShape> {
        self.0
            .stages
            .iter()
            .map(|stage| StageShape {
                inputs: stage.inputs.clone(),
                partitions: stage.partitions(),
            })
            .collect()
    }
}

impl StagePlans for DagPlans {
    fn encode(
        &self,
        stage: StageId,
        locations: &BTreeMap<StageId, Vec<String>>,
    ) -> Result<Bytes, String> {
        let plan = self
            .0
            .stage(stage)
            .ok_or_else(|| format!("the job has no stage {stage}"))?;
        let plan = with_locations(Arc::clone(&plan.plan), locations).map_err(|e| e.to_string())?;
        let bytes = encode_plan(plan).map_err(|e| e.to_string())?;
        Ok(Bytes::from(bytes))
    }
}

/// The plan with each shuffle reader told where its map outputs are.
fn with_locations(
    plan: Arc<dyn ExecutionPlan>,
    locations: &BTreeMap<StageId, Vec<String>>,
) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
    if let Some(reader) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<ShuffleReaderExec>()
    {
        let addresses = locations
            .get(&reader.stage_id())
            .cloned()
            .unwrap_or_default();
        return Ok(Arc::new(reader.with_locations(addresses)?));
    }
    let children = plan
        .children()
        .into_iter()
        .map(|child| with_locations(Arc::clone(child), locations))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(replace_children_if_necessary(plan, children)?)
}
