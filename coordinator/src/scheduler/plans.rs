//! Stage plans of a submitted job: encoded once per stage run, with each
//! shuffle reader told where its map outputs are.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan};
use tone_engine::adaptive::layout::{self, InputSizes, LayoutSettings, StageLayout};
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
        layout: Option<&StageLayout>,
    ) -> Result<Bytes, String> {
        let maps = locations
            .iter()
            .map(|(input, addresses)| (*input, addresses.len()))
            .collect();
        let mut plan = self.with_map_counts(stage, &maps)?;
        if let Some(layout) = layout {
            plan = layout::apply(plan, layout).map_err(|e| e.to_string())?;
        }
        let plan = with_locations(plan, locations).map_err(|e| e.to_string())?;
        let bytes = encode_plan(plan).map_err(|e| e.to_string())?;
        Ok(Bytes::from(bytes))
    }

    fn lay_out(
        &self,
        stage: StageId,
        sizes: &HashMap<StageId, InputSizes>,
        settings: &LayoutSettings,
    ) -> Option<StageLayout> {
        let maps = sizes
            .iter()
            .map(|(input, sizes)| (*input, sizes.by_map.len()))
            .collect();
        let plan = self.with_map_counts(stage, &maps).ok()?;
        layout::decide(stage, &plan, sizes, settings)
    }
}

impl DagPlans {
    /// The stage's plan, its readers told how many tasks each input ran
    /// as (an input laid out again ran as more or fewer than planned).
    fn with_map_counts(
        &self,
        stage: StageId,
        maps: &HashMap<StageId, usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, String> {
        let plan = self
            .0
            .stage(stage)
            .ok_or_else(|| format!("the job has no stage {stage}"))?;
        layout::with_map_counts(Arc::clone(&plan.plan), maps).map_err(|e| e.to_string())
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
