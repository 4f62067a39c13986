//! Backup attempts for stragglers.

use super::*;
use crate::scheduler::Speculation;

fn speculating() -> World {
    World::with_config(SchedulerConfig {
        speculation: Some(Speculation::default()),
        ..config()
    })
}

/// Cancellations among `commands`: worker, task, attempt.
fn cancelled(commands: &[Command]) -> Vec<(WorkerId, TaskKey, u32)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::CancelTask {
                worker,
                task,
                attempt,
            } => Some((worker.clone(), task.clone(), attempt.0)),
            _ => None,
        })
        .collect()
}

/// Two workers of two slots run the four map tasks of job "j"; after
/// `ran`, every one but the task on w1 with the highest partition
/// succeeds. Returns that straggler.
fn one_straggler(world: &mut World, ran: Duration) -> TaskKey {
    world.join("w1", 2);
    world.join("w2", 2);
    world.submit(two_stages("j", 4));
    world.advance(ran);
    let on = |world: &World, partition: u32| world.attempts(&key("j", 0, partition));
    let straggler = (0..4)
        .rev()
        .find(|partition| on(world, *partition)[0].0 == w("w1"))
        .expect("w1 runs a map task");
    for partition in (0..4).filter(|partition| *partition != straggler) {
        let (worker, attempt) = on(world, partition)[0].clone();
        world.report(&worker.0, &key("j", 0, partition), attempt, succeeded(1));
    }
    key("j", 0, straggler)
}

#[test]
fn a_straggler_gets_a_backup_elsewhere_and_the_first_to_finish_wins() {
    let mut world = speculating();
    let straggler = one_straggler(&mut world, Duration::from_secs(2));
    // Three of four took 2 s: past 1.5 × 2 s the last one is slow.
    assert!(assigned(&world.advance(Duration::from_millis(900))).is_empty());
    let commands = world.advance(Duration::from_millis(200));
    assert_eq!(
        assigned(&commands),
        [(w("w2"), straggler.clone(), 1)],
        "the backup runs on the other worker"
    );
    assert_eq!(world.attempts(&straggler), [(w("w1"), 0), (w("w2"), 1)]);
    // The backup finishes first: the first attempt is cancelled and its
    // late report does not count.
    let commands = world.report("w2", &straggler, 1, succeeded(1));
    assert_eq!(cancelled(&commands), [(w("w1"), straggler.clone(), 0)]);
    assert_eq!(world.task(&straggler), Task::Done { worker: w("w2") });
    world.report("w1", &straggler, 0, succeeded(1));
    let job = world.state.job(&job_id("j")).expect("live");
    assert_eq!(job.rows, 4, "each map output counts once");
    assert_eq!(
        job.stage(StageId(0)).tasks[straggler.partition as usize].backups,
        1
    );
    assert_eq!(
        world.running("w1") + world.running("w2"),
        1,
        "the final task runs"
    );
}

#[test]
fn the_first_attempt_may_win_and_a_failed_backup_leaves_it_running() {
    let mut world = speculating();
    let straggler = one_straggler(&mut world, Duration::from_secs(1));
    world.advance(Duration::from_secs(2));
    assert_eq!(world.attempts(&straggler), [(w("w1"), 0), (w("w2"), 1)]);
    // The backup fails: the first attempt goes on, and, still a
    // straggler, gets a new backup in the slot that freed.
    world.report(
        "w2",
        &straggler,
        1,
        failed(ErrorKind::Execution, "disk full"),
    );
    assert_eq!(world.attempts(&straggler), [(w("w1"), 0), (w("w2"), 2)]);
    let job = world.state.job(&job_id("j")).expect("live");
    assert_eq!(job.failures.len(), 1, "the failed backup is counted");
    // The first attempt wins; the backup is cancelled.
    let commands = world.report("w1", &straggler, 0, succeeded(1));
    assert_eq!(cancelled(&commands), [(w("w2"), straggler.clone(), 2)]);
    assert_eq!(world.task(&straggler), Task::Done { worker: w("w1") });
}

#[test]
fn losing_the_first_attempts_worker_leaves_the_backup_to_finish() {
    let mut world = speculating();
    let straggler = one_straggler(&mut world, Duration::from_secs(1));
    world.advance(Duration::from_secs(2));
    assert_eq!(world.attempts(&straggler), [(w("w1"), 0), (w("w2"), 1)]);
    world.leave("w1");
    assert_eq!(
        world.attempts(&straggler),
        [(w("w2"), 1)],
        "the backup runs on, not re-queued"
    );
    world.report("w2", &straggler, 1, succeeded(1));
    assert_eq!(world.task(&straggler), Task::Done { worker: w("w2") });
}

#[test]
fn no_backup_when_speculation_is_off_or_tasks_are_short() {
    let mut off = World::new();
    let straggler = one_straggler(&mut off, Duration::from_secs(2));
    // Three times the median, within the heartbeat timeout (no heartbeats
    // come here).
    assert!(assigned(&off.advance(Duration::from_secs(6))).is_empty());
    assert_eq!(off.attempts(&straggler), [(w("w1"), 0)]);

    // Done in 100 ms: a straggler is one only after `min_runtime` (1 s).
    let mut short = speculating();
    let straggler = one_straggler(&mut short, Duration::from_millis(100));
    assert!(assigned(&short.advance(Duration::from_millis(500))).is_empty());
    let commands = short.advance(Duration::from_millis(500));
    assert_eq!(assigned(&commands), [(w("w2"), straggler, 1)]);
}
