//! Stages laid out again from the sizes their inputs reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tone_engine::adaptive::layout::{InputSizes, LayoutSettings, StageLayout};
use tone_engine::shuffle::Slice;

use super::*;

/// Lays stage 1 out as one task per pair of its input's partitions, and
/// keeps the sizes it was given. Plans name their task count.
#[derive(Default)]
struct PairingPlans {
    seen: Arc<Mutex<Vec<HashMap<StageId, InputSizes>>>>,
}

impl StagePlans for PairingPlans {
    fn encode(
        &self,
        stage: StageId,
        _locations: &BTreeMap<StageId, Vec<String>>,
        layout: Option<&StageLayout>,
    ) -> Result<Bytes, String> {
        let tasks = layout.map_or(0, StageLayout::tasks);
        Ok(Bytes::from(format!("stage {stage} laid out as {tasks}")))
    }

    fn lay_out(
        &self,
        stage: StageId,
        sizes: &HashMap<StageId, InputSizes>,
        _settings: &LayoutSettings,
    ) -> Option<StageLayout> {
        self.seen.lock().expect("lock").push(sizes.clone());
        let maps = sizes.get(&StageId(0))?.by_map.len() as u32;
        let pair = |first: u32| {
            (first..first + 2)
                .map(|reduce| Slice {
                    reduce,
                    maps: 0..maps,
                })
                .collect()
        };
        (stage == StageId(1)).then(|| StageLayout {
            stage,
            partitions: 4,
            readers: vec![vec![pair(0), pair(2)]],
            splits: Vec::new(),
            join_switch: None,
            tasks_at_once: None,
        })
    }
}

/// Two maps feeding a final stage planned with four partitions.
fn pairing(plans: PairingPlans, layout: bool) -> JobSpec {
    JobSpec {
        stages: vec![
            StageShape {
                inputs: vec![],
                partitions: 2,
            },
            StageShape {
                inputs: vec![StageId(0)],
                partitions: 4,
            },
        ],
        plans: Box::new(plans),
        layout: layout.then(tone_engine::adaptive::ToneOptions::default),
        ..two_stages("j", 2)
    }
}

fn wrote(partition_bytes: Vec<u64>) -> Outcome {
    Outcome::Succeeded {
        rows: 1,
        bytes: partition_bytes.iter().sum(),
        remote_fetch_bytes: 0,
        partition_bytes,
    }
}

fn laid_out(commands: &[Command]) -> Vec<(StageId, u32)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::LaidOut { stage, tasks, .. } => Some((*stage, *tasks)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stage_runs_as_its_layout_says_once_its_inputs_reported_their_sizes() {
    let plans = PairingPlans::default();
    let seen = Arc::clone(&plans.seen);
    let mut world = World::new();
    world.join("w1", 4);
    world.submit(pairing(plans, true));
    world.report("w1", &key("j", 0, 0), 0, wrote(vec![1, 2, 3, 4]));
    let commands = world.report("w1", &key("j", 0, 1), 0, wrote(vec![10, 20, 30, 40]));
    assert_eq!(laid_out(&commands), [(StageId(1), 2)]);
    assert_eq!(
        assigned(&commands),
        [(w("w1"), key("j", 1, 0), 0), (w("w1"), key("j", 1, 1), 0)],
        "two tasks, not the four planned"
    );
    let sizes = seen.lock().expect("lock")[0][&StageId(0)].clone();
    assert_eq!(sizes.by_map, vec![vec![1, 2, 3, 4], vec![10, 20, 30, 40]]);
    let plan = commands.iter().find_map(|command| match command {
        Command::Assign { plan, .. } => Some(plan.clone()),
        _ => None,
    });
    assert_eq!(plan.as_deref(), Some(&b"stage 1 laid out as 2"[..]));

    // A lost input makes a task run again: with the same layout, decided
    // once.
    let lost = LostOutput {
        stage: StageId(0),
        map: 1,
        address: "w1:1".into(),
    };
    let failure = Outcome::Failed {
        kind: ErrorKind::FetchFailed,
        message: "gone".into(),
        lost_output: Some(lost),
    };
    world.report("w1", &key("j", 1, 1), 0, failure);
    let commands = world.report("w1", &key("j", 0, 1), 1, wrote(vec![10, 20, 30, 40]));
    assert!(laid_out(&commands).is_empty(), "decided once");
    assert_eq!(seen.lock().expect("lock").len(), 1);
    // Its readers were stopped with the lost input and run again, as the
    // same two tasks with the same plan.
    assert_eq!(
        assigned(&commands),
        [(w("w1"), key("j", 1, 0), 1), (w("w1"), key("j", 1, 1), 1)]
    );
    assert!(commands.iter().all(|command| match command {
        Command::Assign { task, plan, .. } if task.stage == StageId(1) =>
            plan.as_ref() == b"stage 1 laid out as 2",
        _ => true,
    }));
    world.report("w1", &key("j", 1, 0), 1, succeeded(1));
    world.report("w1", &key("j", 1, 1), 1, succeeded(1));
    let ended = world.state.take_ended();
    assert_eq!(ended[0].state, JobState::Succeeded);
}

#[test]
fn a_job_without_layout_settings_runs_as_planned() {
    let plans = PairingPlans::default();
    let seen = Arc::clone(&plans.seen);
    let mut world = World::new();
    world.join("w1", 4);
    world.submit(pairing(plans, false));
    world.report("w1", &key("j", 0, 0), 0, wrote(vec![1, 2, 3, 4]));
    let commands = world.report("w1", &key("j", 0, 1), 0, wrote(vec![1, 2, 3, 4]));
    assert!(laid_out(&commands).is_empty());
    assert_eq!(assigned(&commands).len(), 4);
    assert!(seen.lock().expect("lock").is_empty());
}

/// After a restart, a finished stage that was laid out again keeps its
/// layout: the output its worker lost is made again from the same slices.
#[test]
fn a_resumed_stage_makes_a_lost_output_again_as_it_was_laid_out() {
    let mut world = World::new();
    let mut spec = pairing(PairingPlans::default(), false);
    spec.stages.push(StageShape {
        inputs: vec![StageId(1)],
        partitions: 1,
    });
    let at = |worker: &str| (w(worker), format!("{worker}:1"));
    let layout = PairingPlans::default()
        .lay_out(
            StageId(1),
            &HashMap::from([(
                StageId(0),
                InputSizes {
                    by_map: vec![vec![1; 4]; 2],
                },
            )]),
            &tone_engine::adaptive::ToneOptions::default().layout(1, None),
        )
        .expect("laid out");
    let resumed = Resumed {
        spec,
        finished: BTreeMap::from([
            (StageId(0), vec![at("a"), at("a")]),
            (StageId(1), vec![at("a"), at("a")]),
        ]),
        layouts: BTreeMap::from([(StageId(1), layout)]),
    };
    world.state.resume(resumed, world.now);
    let job = world.state.job(&job_id("j")).expect("resumed");
    assert_eq!(job.stage(StageId(1)).tasks.len(), 2, "as it ran");
    let commands = world.rejoin("a", 2, &[key("j", 0, 0), key("j", 0, 1), key("j", 1, 0)]);
    assert_eq!(assigned(&commands), [(w("a"), key("j", 1, 1), 0)]);
    let plan = commands.iter().find_map(|command| match command {
        Command::Assign { plan, .. } => Some(plan.clone()),
        _ => None,
    });
    assert_eq!(plan.as_deref(), Some(&b"stage 1 laid out as 2"[..]));
}
