//! Adaptive layout of a stage from the exact sizes of its inputs.
//!
//! tone owns the exchanges, so when a stage's inputs are done it knows
//! how many bytes each map task wrote to each reduce partition. Before
//! the stage starts, its tasks are laid out again (Spark's AQE does the
//! same between its query stages):
//!
//! - **Coalesce**: adjacent partitions are packed into one task up to a
//!   target size, so a stage of many small partitions runs as few tasks.
//!   The target is the stage's bytes over the parallelism (one task per
//!   slot), at least `coalesce_min_bytes` and at most
//!   `advisory_partition_bytes`.
//! - **Skew split**: under a partitioned join, a partition of one side
//!   more than `skew_factor` times that side's median and over
//!   `skew_min_bytes` is split by ranges of its map outputs into pieces of
//!   about `advisory_partition_bytes`; each piece reads the other side's
//!   partition whole.
//! - **Spillable join**: a partitioned hash join whose largest task's build
//!   side will not fit a task's share of the memory limit runs as a
//!   sort-merge join, which spills (see `join`).
//!
//! Invariant: every (map, reduce partition) of every input is read by
//! exactly one task, except the other side of a split partition, read by
//! each of its pieces. A layout is decided once per stage and kept: a task
//! run again (a retry, lost output) reads the same slices.

mod join;
mod shape;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan};

use crate::error::{EngineError, Result};
use crate::ids::StageId;
use crate::shuffle::{ShuffleReaderExec, Slice};

use join::JoinMemory;
pub use join::{to_sort_merge, JoinSwitch, BUILD_MEMORY_FACTOR};
pub use shape::{coalescible_readers, splittable_join, switchable_hash_join};

/// The settings a layout is decided with (the `tone.` session settings
/// and the parallelism the stage runs at).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayoutSettings {
    pub coalesce: bool,
    pub skew_join: bool,
    pub advisory_partition_bytes: u64,
    pub coalesce_min_bytes: u64,
    pub skew_factor: f64,
    pub skew_min_bytes: u64,
    /// Tasks that can run at once (slots, or cores embedded).
    pub parallelism: usize,
    pub spillable_join: bool,
    /// The memory limit tasks run under, when there is one.
    pub task_memory: Option<TaskMemory>,
}

/// The memory pool a stage's tasks share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMemory {
    pub pool_bytes: u64,
    /// How many tasks share one pool at once: a worker's slots, or the
    /// session's target partitions embedded (`task_limit`).
    pub tasks_at_once: usize,
}

/// Bytes each map task of one input wrote to each reduce partition:
/// `by_map[map][reduce]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputSizes {
    pub by_map: Vec<Vec<u64>>,
}

impl InputSizes {
    fn maps(&self) -> u32 {
        self.by_map.len() as u32
    }

    /// Bytes of the maps and partition `slice` names.
    fn slice(&self, slice: &Slice) -> u64 {
        let reduce = slice.reduce as usize;
        slice
            .maps
            .clone()
            .filter_map(|map| self.by_map.get(map as usize)?.get(reduce).copied())
            .fold(0, u64::saturating_add)
    }

    fn partition(&self, reduce: usize) -> u64 {
        // Sizes come from workers' reports: summed without overflow.
        self.by_map
            .iter()
            .map(|sizes| sizes.get(reduce).copied().unwrap_or(0))
            .fold(0, u64::saturating_add)
    }
}

/// A partition that was split: skewed, or its join's build side would
/// not fit a task's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub partition: u32,
    /// Bytes of the side that was split.
    pub bytes: u64,
    /// That side's median partition (0 for a split by memory).
    pub median: u64,
    pub pieces: usize,
    /// A task's memory, when the split was for it.
    pub memory_budget: Option<u64>,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.memory_budget {
            Some(budget) => write!(
                f,
                "join build side of partition {} ({} bytes, x{BUILD_MEMORY_FACTOR}) over a \
                 task's {budget} bytes of memory split into {}",
                self.partition, self.bytes, self.pieces
            ),
            None => write!(
                f,
                "skewed partition {} ({} bytes, median {}) split into {}",
                self.partition, self.bytes, self.median, self.pieces
            ),
        }
    }
}

/// A stage's tasks, laid out again.
#[derive(Debug, Clone, PartialEq)]
pub struct StageLayout {
    pub stage: StageId,
    /// The partitions it was planned with.
    pub partitions: usize,
    /// For each reader of the stage (in pre-order), each task's slices.
    pub readers: Vec<Vec<Vec<Slice>>>,
    pub splits: Vec<Split>,
    /// Set when the stage's hash join runs as a sort-merge join.
    pub join_switch: Option<JoinSwitch>,
    /// Set when fewer of the stage's tasks may run at once than usual, so
    /// that their join build sides fit the pool together (embedded).
    pub tasks_at_once: Option<usize>,
}

impl StageLayout {
    pub fn tasks(&self) -> usize {
        self.readers.first().map_or(0, Vec::len)
    }
}

impl fmt::Display for StageLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stage {}: {} partitions ran as {} tasks",
            self.stage,
            self.partitions,
            self.tasks()
        )?;
        for split in &self.splits {
            write!(f, "; {split}")?;
        }
        if let Some(tasks) = self.tasks_at_once {
            write!(f, "; {tasks} at a time for memory")?;
        }
        if let Some(switch) = &self.join_switch {
            write!(
                f,
                "; hash join build side of {} bytes (x{BUILD_MEMORY_FACTOR}) over the {} bytes \
                 of the memory pool: sort-merge join",
                switch.build_bytes, switch.pool_bytes
            )?;
        }
        Ok(())
    }
}

/// The layout of `plan` (stage `stage`) given the sizes of each of its
/// inputs by stage, or `None` to run it as planned: it cannot be laid out,
/// a size is missing, or the layout would change nothing.
pub fn decide(
    stage: StageId,
    plan: &Arc<dyn ExecutionPlan>,
    sizes: &HashMap<StageId, InputSizes>,
    settings: &LayoutSettings,
) -> Option<StageLayout> {
    let spillable_join = settings.spillable_join && settings.task_memory.is_some();
    if !settings.coalesce && !settings.skew_join && !spillable_join {
        return None;
    }
    let readers = coalescible_readers(plan)?;
    let inputs: Vec<&InputSizes> = readers
        .iter()
        .map(|reader| sizes.get(&reader.stage_id()))
        .collect::<Option<_>>()?;
    let partitions = readers[0].reduce_partitions();
    // Every map task of every input sized every partition.
    let sized = readers.iter().zip(&inputs).all(|(reader, input)| {
        input.maps() as usize == reader.map_partitions()
            && input.by_map.iter().all(|sizes| sizes.len() == partitions)
    });
    if !sized {
        return None;
    }
    let join = match readers.len() {
        2 => splittable_join(plan),
        _ => None,
    };
    let memory = JoinMemory::of(plan, join, settings);
    let mut builder = Builder::new(&inputs);
    let totals: Vec<u64> = (0..partitions)
        .map(|reduce| {
            inputs
                .iter()
                .map(|input| input.partition(reduce))
                .fold(0, u64::saturating_add)
        })
        .collect();
    let mut target = coalesce_target(totals.iter().fold(0, |a, b| a.saturating_add(*b)), settings);
    // A coalesced task's build side must fit too.
    if let Some(memory) = &memory {
        target = target.min(memory.build_cap());
    }
    let skew = join
        .filter(|_| settings.skew_join)
        .map(|join| Skew::new(join.sides, &inputs, partitions));
    for reduce in 0..partitions {
        let split = skew
            .as_ref()
            .and_then(|skew| skew.split(reduce, &inputs, settings))
            .or_else(|| {
                let (pieces, record) = memory.as_ref()?.split(reduce, inputs[0])?;
                Some((0, pieces, record))
            });
        match split {
            Some((side, pieces, record)) => {
                builder.add_split(reduce as u32, side, pieces);
                builder.splits.push(record);
            }
            None if settings.coalesce => builder.pack(reduce as u32, totals[reduce], target),
            // Without coalescing, each partition is a task of its own.
            None => {
                builder.close();
                builder.pack(reduce as u32, totals[reduce], u64::MAX);
            }
        }
    }
    builder.close();
    let join_switch = memory.and_then(|memory| memory.switch(&builder.readers[0], inputs[0]));
    let tasks_at_once = memory
        .filter(|_| join_switch.is_none())
        .and_then(|memory| memory.tasks_at_once(&builder.readers[0], inputs[0]));
    let unchanged = builder.splits.is_empty()
        && builder.tasks() == partitions
        && join_switch.is_none()
        && tasks_at_once.is_none();
    (!unchanged).then(|| StageLayout {
        stage,
        partitions,
        readers: builder.readers,
        splits: builder.splits,
        join_switch,
        tasks_at_once,
    })
}

/// One task per slot, within the bounds.
fn coalesce_target(total: u64, settings: &LayoutSettings) -> u64 {
    let per_slot = total / settings.parallelism.max(1) as u64;
    per_slot
        .max(settings.coalesce_min_bytes)
        .min(settings.advisory_partition_bytes.max(1))
}

/// Where skew is looked for: each splittable side's median partition.
struct Skew {
    /// The median partition bytes of each side that may be split.
    medians: [Option<u64>; 2],
}

impl Skew {
    fn new(sides: [bool; 2], inputs: &[&InputSizes], partitions: usize) -> Self {
        let median = |input: &InputSizes| {
            let mut sizes: Vec<u64> = (0..partitions).map(|r| input.partition(r)).collect();
            sizes.sort_unstable();
            sizes.get(sizes.len() / 2).copied().unwrap_or(0)
        };
        Self {
            medians: [0, 1].map(|side| sides[side].then(|| median(inputs[side]))),
        }
    }

    /// The side to split `reduce` by, its map ranges, and the record, when
    /// it is skewed. The larger side is split when both are.
    fn split(
        &self,
        reduce: usize,
        inputs: &[&InputSizes],
        settings: &LayoutSettings,
    ) -> Option<(usize, Vec<std::ops::Range<u32>>, Split)> {
        let skewed = |side: usize| {
            let median = self.medians[side]?;
            let bytes = inputs[side].partition(reduce);
            let threshold =
                (median as f64 * settings.skew_factor).max(settings.skew_min_bytes as f64);
            (bytes as f64 > threshold).then_some((side, bytes, median))
        };
        let (side, bytes, median) = [skewed(0), skewed(1)]
            .into_iter()
            .flatten()
            .max_by_key(|(_, bytes, _)| *bytes)?;
        let pieces = map_ranges(inputs[side], reduce, settings.advisory_partition_bytes);
        (pieces.len() > 1).then(|| {
            let record = Split {
                partition: reduce as u32,
                bytes,
                median,
                pieces: pieces.len(),
                memory_budget: None,
            };
            (side, pieces, record)
        })
    }
}

/// Contiguous ranges of `input`'s maps, each about `target` bytes of
/// partition `reduce` (at least one map each).
fn map_ranges(input: &InputSizes, reduce: usize, target: u64) -> Vec<std::ops::Range<u32>> {
    let total = input.partition(reduce);
    let pieces = total.div_ceil(target.max(1)).clamp(1, input.maps() as u64);
    let per_piece = total.div_ceil(pieces.max(1));
    let mut ranges = Vec::new();
    let (mut start, mut filled) = (0u32, 0u64);
    for (map, sizes) in input.by_map.iter().enumerate() {
        filled = filled.saturating_add(sizes.get(reduce).copied().unwrap_or(0));
        if filled >= per_piece && (ranges.len() as u64) + 1 < pieces {
            ranges.push(start..map as u32 + 1);
            start = map as u32 + 1;
            filled = 0;
        }
    }
    if start < input.maps() {
        ranges.push(start..input.maps());
    }
    ranges
}

/// Builds the tasks, per reader, in partition order.
struct Builder {
    readers: Vec<Vec<Vec<Slice>>>,
    splits: Vec<Split>,
    /// Each input's map count.
    maps: Vec<u32>,
    /// Partitions packed into the task being filled, and its bytes.
    open: Vec<u32>,
    open_bytes: u64,
}

impl Builder {
    fn new(inputs: &[&InputSizes]) -> Self {
        Self {
            readers: vec![Vec::new(); inputs.len()],
            splits: Vec::new(),
            maps: inputs.iter().map(|input| input.maps()).collect(),
            open: Vec::new(),
            open_bytes: 0,
        }
    }

    fn tasks(&self) -> usize {
        self.readers.first().map_or(0, Vec::len)
    }

    /// Adds whole partition `reduce` to the open task, first closing it
    /// when the partition would take it past `target`.
    fn pack(&mut self, reduce: u32, bytes: u64, target: u64) {
        if !self.open.is_empty() && self.open_bytes.saturating_add(bytes) > target {
            self.close();
        }
        self.open.push(reduce);
        self.open_bytes = self.open_bytes.saturating_add(bytes);
    }

    /// Makes the open task, if any.
    fn close(&mut self) {
        let open = std::mem::take(&mut self.open);
        self.open_bytes = 0;
        if open.is_empty() {
            return;
        }
        for (reader, maps) in self.readers.iter_mut().zip(&self.maps) {
            reader.push(
                open.iter()
                    .map(|&reduce| Slice {
                        reduce,
                        maps: 0..*maps,
                    })
                    .collect(),
            );
        }
    }

    /// One task per piece of `side`, each reading the other side whole.
    fn add_split(&mut self, reduce: u32, side: usize, pieces: Vec<std::ops::Range<u32>>) {
        self.close();
        for piece in pieces {
            for (index, reader) in self.readers.iter_mut().enumerate() {
                let maps = match index == side {
                    true => piece.clone(),
                    false => 0..self.maps[index],
                };
                reader.push(vec![Slice { reduce, maps }]);
            }
        }
    }
}

/// `plan` with its readers laid out as `layout` says (pre-order).
pub fn apply(plan: Arc<dyn ExecutionPlan>, layout: &StageLayout) -> Result<Arc<dyn ExecutionPlan>> {
    let mut next = 0;
    let plan = lay_out(plan, layout, &mut next)?;
    if next != layout.readers.len() {
        return Err(EngineError::internal(format!(
            "stage {} has {next} readers, its layout {}",
            layout.stage,
            layout.readers.len()
        )));
    }
    match layout.join_switch {
        Some(_) => to_sort_merge(plan),
        None => Ok(plan),
    }
}

fn lay_out(
    plan: Arc<dyn ExecutionPlan>,
    layout: &StageLayout,
    next: &mut usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(reader) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<ShuffleReaderExec>()
    {
        let tasks = layout.readers.get(*next).cloned().ok_or_else(|| {
            EngineError::internal(format!(
                "stage {} has more readers than its layout",
                layout.stage
            ))
        })?;
        *next += 1;
        return Ok(Arc::new(reader.with_tasks(tasks)?));
    }
    let children = plan
        .children()
        .into_iter()
        .map(|child| lay_out(Arc::clone(child), layout, next))
        .collect::<Result<Vec<_>>>()?;
    Ok(replace_children_if_necessary(plan, children)?)
}

/// `plan` with each reader of a stage in `maps` told how many tasks that
/// stage ran as (it was laid out again).
pub fn with_map_counts(
    plan: Arc<dyn ExecutionPlan>,
    maps: &HashMap<StageId, usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(reader) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<ShuffleReaderExec>()
    {
        return match maps.get(&reader.stage_id()) {
            Some(&count) if count != reader.map_partitions() => {
                Ok(Arc::new(reader.with_map_count(count)))
            }
            _ => Ok(plan),
        };
    }
    let children = plan
        .children()
        .into_iter()
        .map(|child| with_map_counts(Arc::clone(child), maps))
        .collect::<Result<Vec<_>>>()?;
    Ok(replace_children_if_necessary(plan, children)?)
}

#[cfg(test)]
mod tests;
