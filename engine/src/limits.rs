//! Memory and disk limits: the DataFusion runtime a limit builds, the share
//! of it tone's shuffle gets, and errors that name the limit.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{EngineError, Result};

/// The share of a memory limit that holds sealed shuffle segments in memory
/// (the embedded engine); operators and open segments get the rest.
const SHUFFLE_SHARE_DIVISOR: u64 = 4;

/// Consumers named in an out-of-memory error, largest first.
const CONSUMERS_IN_ERRORS: usize = 5;

/// How a memory limit is split between DataFusion's pool and tone's
/// in-memory shuffle segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySplit {
    /// Bytes for DataFusion operators and shuffle writers' open segments.
    pub pool_bytes: u64,
    /// Bytes of sealed shuffle segments kept in memory before spilling.
    pub shuffle_bytes: u64,
}

impl MemorySplit {
    /// Splits `limit_bytes`; the shuffle share is also capped by
    /// `shuffle_bytes_max`.
    pub fn of(limit_bytes: u64, shuffle_bytes_max: u64) -> Self {
        let shuffle_bytes = (limit_bytes / SHUFFLE_SHARE_DIVISOR).min(shuffle_bytes_max);
        Self {
            pool_bytes: limit_bytes - shuffle_bytes,
            shuffle_bytes,
        }
    }
}

/// The DataFusion runtime for a session: a fair spilling pool of
/// `pool_bytes` when set (operators that can spill share it, the rest fail
/// with a resources error), spill files under `spill_dir`, at most
/// `spill_bytes_max` of them.
pub fn runtime_env(
    pool_bytes: Option<u64>,
    spill_dir: PathBuf,
    spill_bytes_max: Option<u64>,
) -> Result<Arc<RuntimeEnv>> {
    let mut disk =
        DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![spill_dir]));
    if let Some(max) = spill_bytes_max {
        disk = disk.with_max_temp_directory_size(max);
    }
    let mut builder = RuntimeEnvBuilder::new()
        .with_disk_manager_builder(disk)
        .with_object_store_registry(Arc::new(crate::stores::ObjectStores::new()));
    if let Some(bytes) = pool_bytes {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        let top = NonZeroUsize::new(CONSUMERS_IN_ERRORS).unwrap_or(NonZeroUsize::MIN);
        builder = builder.with_memory_pool(Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(bytes),
            top,
        )));
    }
    Ok(builder.build_arc()?)
}

/// Adds the configured limit to a resources error, so the message says
/// which knob to turn.
pub fn name_memory_limit(error: EngineError, limit_bytes: Option<u64>) -> EngineError {
    match (error, limit_bytes) {
        (EngineError::ResourcesExhausted { message }, Some(limit)) => {
            EngineError::ResourcesExhausted {
                message: format!(
                    "the work does not fit in the memory limit of {} (--memory-limit); \
                     raise the limit or use more partitions: {message}",
                    format_bytes(limit)
                ),
            }
        }
        (error, _) => error,
    }
}

/// Sums a named counter (such as the shuffle reader's `remote_fetch_bytes`)
/// over a plan and all its children.
pub fn plan_metric_sum(plan: &Arc<dyn ExecutionPlan>, name: &str) -> u64 {
    plan_tree_sum(plan, &|metrics| {
        metrics.sum_by_name(name).map(|value| value.as_usize())
    })
}

/// Bytes DataFusion's operators (sorts, aggregates, joins) of one plan
/// spilled to disk.
pub fn plan_spilled_bytes(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    plan_tree_sum(plan, &|metrics| metrics.spilled_bytes())
}

fn plan_tree_sum(
    plan: &Arc<dyn ExecutionPlan>,
    metric: &dyn Fn(&MetricsSet) -> Option<usize>,
) -> u64 {
    let own = plan
        .metrics()
        .and_then(|metrics| metric(&metrics))
        .unwrap_or(0) as u64;
    own + plan
        .children()
        .into_iter()
        .map(|child| plan_tree_sum(child, metric))
        .sum::<u64>()
}

/// What DataFusion operators (sorts, aggregates, joins) spilled to disk
/// because the memory pool was full, summed over every plan that ran.
#[derive(Debug, Default)]
pub struct OperatorSpills {
    spilled_bytes: AtomicU64,
    spill_count: AtomicU64,
    spilled_rows: AtomicU64,
    shuffle_rows_written: AtomicU64,
}

impl OperatorSpills {
    /// Adds the spill metrics of a plan that has finished running.
    pub fn record(&self, plan: &Arc<dyn ExecutionPlan>) {
        // `sum_by_name` skips DataFusion's built-in spill metrics; they
        // have their own accessors.
        let bytes = plan_spilled_bytes(plan);
        let count = plan_tree_sum(plan, &|metrics| metrics.spill_count());
        let rows = plan_tree_sum(plan, &|metrics| metrics.spilled_rows());
        self.spilled_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.spill_count.fetch_add(count, Ordering::Relaxed);
        self.spilled_rows.fetch_add(rows, Ordering::Relaxed);
    }

    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes.load(Ordering::Relaxed)
    }

    pub fn spill_count(&self) -> u64 {
        self.spill_count.load(Ordering::Relaxed)
    }

    /// Rows written to spill files; a row spilled again by an intermediate
    /// merge pass (a sort with more runs than its memory merges at once)
    /// counts each time.
    pub fn spilled_rows(&self) -> u64 {
        self.spilled_rows.load(Ordering::Relaxed)
    }

    /// Adds the rows one map stage wrote to the shuffle.
    pub fn record_shuffle_rows(&self, rows: u64) {
        self.shuffle_rows_written.fetch_add(rows, Ordering::Relaxed);
    }

    /// Rows written to the shuffle by every map stage that ran; tests use
    /// it to see that a map-side combine shrinks what is shuffled.
    pub fn shuffle_rows_written(&self) -> u64 {
        self.shuffle_rows_written.load(Ordering::Relaxed)
    }
}

/// `1.5 GiB`, `64.0 MiB`, `512 B`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Parses a size such as `512M`, `2G`, `64k` or `1048576` (bytes); suffixes
/// are powers of 1024 and may end in `B`/`iB`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(split);
    let multiplier: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(size_error(text)),
    };
    let number: u64 = digits.parse().map_err(|_| size_error(text))?;
    let bytes = number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("'{text}' is too large"))?;
    if bytes == 0 {
        return Err("the size must be more than zero".into());
    }
    Ok(bytes)
}

fn size_error(text: &str) -> String {
    format!("'{text}' is not a size: expected a whole number with an optional K, M, G or T suffix, e.g. 512M")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes_and_bad_ones_are_refused() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        for bad in ["", "M", "12Q", "-1G", "1.5G", "0", "0M", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn a_limit_is_split_between_the_pool_and_the_shuffle() {
        let split = MemorySplit::of(400, u64::MAX);
        assert_eq!((split.pool_bytes, split.shuffle_bytes), (300, 100));
        let capped = MemorySplit::of(400, 10);
        assert_eq!((capped.pool_bytes, capped.shuffle_bytes), (390, 10));
        assert_eq!(format_bytes(64 << 20), "64.0 MiB");
        assert_eq!(format_bytes(12), "12 B");
    }
}
