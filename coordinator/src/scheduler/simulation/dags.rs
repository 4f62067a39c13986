//! Random stage DAGs, and plans that carry only what a simulated worker
//! needs: where each input's map outputs are.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::Rng;
use tone_engine::{JobId, StageId};

use crate::scheduler::state::{JobSpec, StagePlans, StageShape};

/// Encodes the reader locations as JSON: `[[stage, [address, …]], …]`.
pub struct LocationPlans;

impl StagePlans for LocationPlans {
    fn encode(
        &self,
        _stage: StageId,
        locations: &BTreeMap<StageId, Vec<String>>,
        _layout: Option<&tone_engine::adaptive::layout::StageLayout>,
    ) -> Result<Bytes, String> {
        let listed: Vec<(u32, &Vec<String>)> = locations
            .iter()
            .map(|(stage, addresses)| (stage.0, addresses))
            .collect();
        serde_json::to_vec(&listed)
            .map(Bytes::from)
            .map_err(|error| error.to_string())
    }
}

/// The locations a [`LocationPlans`] plan carries.
pub fn locations(plan: &[u8]) -> Vec<(StageId, Vec<String>)> {
    let listed: Vec<(u32, Vec<String>)> =
        serde_json::from_slice(plan).expect("the simulator's own plans decode");
    listed
        .into_iter()
        .map(|(stage, addresses)| (StageId(stage), addresses))
        .collect()
}

/// A job as the simulator submits it: what the state store keeps of it
/// (the real one keeps the encoded stage plans), so a restarted
/// coordinator can be given the same job again.
#[derive(Debug, Clone)]
pub struct SimJob {
    pub id: JobId,
    pub stages: Vec<StageShape>,
    pub timeout: Option<Duration>,
    pub closures: bool,
    pub keeps_lineage: bool,
}

impl SimJob {
    pub fn spec(&self) -> JobSpec {
        JobSpec {
            sql: format!("simulated job of {} stages", self.stages.len()),
            id: self.id.clone(),
            stages: self.stages.clone(),
            plans: Box::new(LocationPlans),
            timeout: self.timeout,
            closures: self.closures,
            keeps_lineage: self.keeps_lineage,
            layout: None,
        }
    }
}

/// A random job: mostly a few stages, sometimes up to 50; each stage reads
/// up to two earlier ones, and the final stage reads every stage no other
/// stage reads, so every stage feeds the result.
pub fn random_job(rng: &mut StdRng, id: JobId) -> SimJob {
    let count = if rng.random_bool(0.15) {
        rng.random_range(10..=50)
    } else {
        rng.random_range(1..=6)
    };
    let mut unread: Vec<StageId> = Vec::new();
    let mut stages = Vec::new();
    for index in 0..count {
        let inputs = if index + 1 == count {
            std::mem::take(&mut unread)
        } else {
            let wanted = rng.random_range(0..=2.min(unread.len()));
            (0..wanted)
                .map(|_| unread.swap_remove(rng.random_range(0..unread.len())))
                .collect()
        };
        let mut inputs: Vec<StageId> = inputs;
        inputs.sort();
        stages.push(StageShape {
            inputs,
            partitions: rng.random_range(1..=3),
        });
        unread.push(StageId(index as u32));
    }
    SimJob {
        id,
        stages,
        timeout: rng
            .random_bool(0.15)
            .then(|| Duration::from_secs(rng.random_range(5..=120))),
        closures: rng.random_bool(0.2),
        keeps_lineage: rng.random_bool(0.5),
    }
}
