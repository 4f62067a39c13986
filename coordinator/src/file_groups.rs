//! Spreading a scan's files over its partitions by whole files.
//!
//! DataFusion splits files into byte ranges of equal size, and a row group
//! belongs to the range holding its start. A range that covers only a file's
//! first few bytes then reads that file's whole first row group, so one
//! partition can get twice the rows of another (TPC-H lineitem in two files
//! of three row groups each: 4 row groups against 2). The embedded runtime
//! evens this out by letting sibling partitions steal files; cluster tasks
//! run separate plan instances and cannot, so when there are at least as
//! many files as partitions the coordinator hands out whole files instead,
//! largest first to the partition with the fewest bytes.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;

/// `plan` with every eligible file scan regrouped by whole files.
pub fn balance_file_groups(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(source) = (node.as_ref() as &dyn std::any::Any).downcast_ref::<DataSourceExec>()
        else {
            return Ok(Transformed::no(node));
        };
        let Some(config) = source.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        match regrouped(config) {
            Some(config) => Ok(Transformed::yes(
                DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
            )),
            None => Ok(Transformed::no(node)),
        }
    })
    .map(|transformed| transformed.data)
}

/// The config with whole files balanced by size over the same number of
/// groups; `None` when it is better left alone: fewer files than groups,
/// no file split into ranges, or an ordering the groups must keep.
fn regrouped(config: &FileScanConfig) -> Option<FileScanConfig> {
    let groups = config.file_groups.len();
    if groups < 2 || !config.output_ordering.is_empty() {
        return None;
    }
    let all = config.file_groups.iter().flat_map(FileGroup::files);
    if !all.clone().any(|file| file.range.is_some()) {
        return None;
    }
    let mut seen = HashSet::new();
    let mut files: Vec<PartitionedFile> = all
        .filter(|file| seen.insert(file.object_meta.location.clone()))
        .map(|file| PartitionedFile {
            range: None,
            ..file.clone()
        })
        .collect();
    if files.len() < groups {
        return None;
    }
    files.sort_by(|a, b| {
        (b.object_meta.size, &b.object_meta.location)
            .cmp(&(a.object_meta.size, &a.object_meta.location))
    });
    let mut buckets: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); groups];
    for file in files {
        if let Some((bytes, members)) = buckets.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            *bytes += file.object_meta.size;
            members.push(file);
        }
    }
    let mut config = config.clone();
    config.file_groups = buckets
        .into_iter()
        .map(|(_, files)| FileGroup::new(files))
        .collect();
    Some(config)
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    use super::*;

    /// Each scan's groups as (file name, read in a range) pairs.
    fn groups(plan: &Arc<dyn ExecutionPlan>) -> Vec<Vec<(String, bool)>> {
        let mut found = Vec::new();
        let any = plan.as_ref() as &dyn std::any::Any;
        if let Some(source) = any.downcast_ref::<DataSourceExec>() {
            if let Some(config) = source.data_source().downcast_ref::<FileScanConfig>() {
                for group in &config.file_groups {
                    let files = group.files().iter().map(|file| {
                        let name = file.object_meta.location.filename().unwrap_or_default();
                        (name.to_string(), file.range.is_some())
                    });
                    found.push(files.collect());
                }
            }
        }
        for child in plan.children() {
            found.extend(groups(child));
        }
        found
    }

    #[tokio::test]
    async fn files_split_into_ranges_are_handed_out_whole_and_balanced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let writer = SessionContext::new();
        // Three files over two partitions: an even byte split must cut one.
        // Together they pass DataFusion's 10 MB minimum for splitting.
        for name in ["a", "b", "c"] {
            let path = dir.path().join(format!("{name}.parquet"));
            let copy = format!(
                "COPY (SELECT random() AS v FROM generate_series(1, 600000)) TO '{}' STORED AS PARQUET",
                path.display()
            );
            writer
                .sql(&copy)
                .await
                .expect("plans")
                .collect()
                .await
                .expect("writes");
        }
        let config = SessionConfig::new().with_target_partitions(2);
        let context = SessionContext::new_with_config(config);
        let table = dir.path().to_str().expect("utf-8 path");
        context
            .register_parquet("t", table, ParquetReadOptions::default())
            .await
            .expect("registers");
        let plan = context
            .sql("select v > 0.5 as k, sum(v) from t group by 1")
            .await
            .expect("plans")
            .create_physical_plan()
            .await
            .expect("physical plan");
        let split = groups(&plan);
        assert!(
            split.iter().flatten().any(|(_, ranged)| *ranged),
            "DataFusion no longer splits these files into ranges: {split:?}"
        );

        let balanced = groups(&balance_file_groups(plan).expect("regroups"));
        assert_eq!(balanced.len(), 2, "{balanced:?}");
        assert!(
            balanced.iter().all(|group| !group.is_empty()),
            "{balanced:?}"
        );
        let mut files: Vec<(String, bool)> = balanced.into_iter().flatten().collect();
        files.sort();
        let whole = |name: &str| (name.to_string(), false);
        assert_eq!(
            files,
            vec![whole("a.parquet"), whole("b.parquet"), whole("c.parquet")]
        );
    }
}
