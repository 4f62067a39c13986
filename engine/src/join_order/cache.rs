//! The estimates of leaves planned before, per session.
//!
//! Estimating a leaf plans it and may read a sample of its table, a few
//! tens of milliseconds for a query of eight tables. A query run again
//! (a report, a benchmark) reuses them. An estimate only steers the join
//! order, never an answer, so one that went stale (the table changed)
//! costs speed at worst; the cache is bounded and forgets everything once
//! full.

use std::collections::HashMap;
use std::sync::Mutex;

use super::estimate::Estimate;

/// How many leaves the cache holds before it starts again.
const CAPACITY: usize = 4096;

/// Estimates by the leaf's plan text (tables, filters, projections).
#[derive(Debug, Default)]
pub struct EstimateCache(Mutex<HashMap<String, Estimate>>);

impl EstimateCache {
    pub(super) fn get(&self, leaf: &str) -> Option<Estimate> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(leaf)
            .cloned()
    }

    pub(super) fn put(&self, leaf: String, estimate: Estimate) {
        let mut known = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if known.len() >= CAPACITY {
            known.clear();
        }
        known.insert(leaf, estimate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::{DFSchema, Statistics};

    fn estimate(rows: usize) -> Estimate {
        let schema = std::sync::Arc::new(DFSchema::empty());
        let mut statistics = Statistics::new_unknown(schema.as_arrow());
        statistics.num_rows = datafusion::common::stats::Precision::Exact(rows);
        Estimate::of_leaf(&schema, &statistics, None).expect("a row count")
    }

    #[test]
    fn a_leaf_planned_before_reuses_its_estimate_until_the_cache_fills() {
        let cache = EstimateCache::default();
        cache.put("TableScan: t".into(), estimate(7));
        assert_eq!(cache.get("TableScan: t").map(|known| known.rows), Some(7.0));
        assert!(cache.get("TableScan: u").is_none());
        for leaf in 0..CAPACITY {
            cache.put(format!("leaf {leaf}"), estimate(1));
        }
        // Full, it started again: the first leaf is gone.
        assert!(cache.get("TableScan: t").is_none());
        assert!(cache.get(&format!("leaf {}", CAPACITY - 1)).is_some());
    }
}
