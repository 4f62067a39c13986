//! Jobs that ended, as their last status: a capped record, oldest
//! dropped first, so a coordinator that runs for weeks holds a bounded
//! number of them (the state store keeps every one).

use std::collections::{BTreeMap, HashMap};

use tone_proto::v1 as pb;

/// Ended jobs by submission number.
pub struct History {
    capacity: usize,
    by_number: BTreeMap<u64, pb::JobStatus>,
    numbers: HashMap<String, u64>,
}

impl History {
    /// Holds at most `capacity` jobs (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            by_number: BTreeMap::new(),
            numbers: HashMap::new(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_number.len()
    }

    /// Records an ended job submitted as number `number`.
    pub fn push(&mut self, number: u64, status: pb::JobStatus) {
        if let Some(old) = self.numbers.insert(status.job_id.clone(), number) {
            self.by_number.remove(&old);
        }
        self.by_number.insert(number, status);
        while self.by_number.len() > self.capacity {
            if let Some((_, oldest)) = self.by_number.pop_first() {
                self.numbers.remove(&oldest.job_id);
            }
        }
    }

    /// The job's results were read and deleted: its record stops listing
    /// where they were, which also keeps the record small.
    pub fn forget_results(&mut self, job_id: &str) {
        let Some(number) = self.numbers.get(job_id) else {
            return;
        };
        if let Some(status) = self.by_number.get_mut(number) {
            status.results = Vec::new();
            status.result_schema = Vec::new();
        }
    }

    pub fn get(&self, job_id: &str) -> Option<&pb::JobStatus> {
        self.by_number.get(self.numbers.get(job_id)?)
    }

    /// Jobs numbered below `bound` (all without one), newest first.
    pub fn newest_below(&self, bound: Option<u64>) -> impl Iterator<Item = (u64, &pb::JobStatus)> {
        self.by_number
            .range(..bound.unwrap_or(u64::MAX))
            .rev()
            .map(|(number, status)| (*number, status))
    }

    /// Every job, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &pb::JobStatus> {
        self.by_number.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str) -> pb::JobStatus {
        pb::JobStatus {
            job_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_oldest_jobs_go_past_the_capacity() {
        let mut history = History::new(2);
        history.push(1, status("a"));
        history.push(2, status("b"));
        history.push(3, status("c"));
        assert_eq!(history.len(), 2);
        assert!(history.get("a").is_none(), "the oldest went");
        assert_eq!(history.get("c").map(|s| s.job_id.as_str()), Some("c"));
        let listed: Vec<u64> = history.newest_below(None).map(|(n, _)| n).collect();
        assert_eq!(listed, [3, 2]);
        let older: Vec<u64> = history.newest_below(Some(3)).map(|(n, _)| n).collect();
        assert_eq!(older, [2]);
    }

    #[test]
    fn a_released_record_lists_no_results() {
        let mut history = History::new(2);
        let mut read = status("a");
        read.results = vec![pb::ResultPartition::default()];
        read.result_schema = vec![1, 2, 3];
        history.push(1, read.clone());
        history.push(2, read);
        history.forget_results("a");
        history.forget_results("unknown");
        let record = history.get("a").expect("kept");
        assert!(record.results.is_empty() && record.result_schema.is_empty());
    }
}
