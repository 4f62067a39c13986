//! The actions DataFrames and Datasets end in: run a plan and collect its
//! rows, count, write into a committed output folder. They live here,
//! below both front ends, so neither depends on the other.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use datafusion::physical_plan::ExecutionPlan;
use tone_engine::stores::ObjectStores;

use super::{located, Backend, Context};
use crate::error::{Error, Result};

impl Context {
    /// Runs a physical plan on the stage engine and collects its rows.
    pub(crate) async fn run_plan(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Vec<RecordBatch>> {
        match &*self.inner {
            Backend::Local(engine) => {
                let stream = engine.execute(plan).await?;
                Ok(tone_engine::runtime::collect_stream(stream).await?)
            }
            Backend::Cluster(jobs) => jobs.run(plan).await,
            Backend::Executor(jobs) => jobs.run().await,
        }
    }

    /// Runs a plan whose tasks each report a one-column `UInt64` count
    /// (rows counted or written); returns their sum.
    pub(crate) async fn run_counted(&self, plan: Arc<dyn ExecutionPlan>) -> Result<u64> {
        let batches = self.run_plan(plan).await?;
        Ok(sum_counts(&batches))
    }

    /// Writes into folder `dir`: checks and makes the output location,
    /// runs the plan `sink` makes for it (each task commits its own file
    /// and reports the rows it wrote), then commits the folder. Returns
    /// rows written.
    pub(crate) async fn write_plan<Sink, Planned>(&self, dir: &Path, sink: Sink) -> Result<u64>
    where
        Sink: FnOnce(PathBuf) -> Planned,
        Planned: Future<Output = Result<Arc<dyn ExecutionPlan>>>,
    {
        let dir = self.prepare_output(dir).await?;
        let plan = sink(dir.clone()).await?;
        let written = self.run_counted(plan).await?;
        self.finish_output(&dir).await?;
        Ok(written)
    }

    /// The output location for a write: an object-store URL as given, a
    /// local folder made absolute and created. Tone neither overwrites nor
    /// appends (as Spark's default): a location that holds anything is
    /// refused. An executor only computes the location; the driver checked
    /// it.
    async fn prepare_output(&self, dir: &Path) -> Result<PathBuf> {
        let dir = located(dir)?;
        if matches!(*self.inner, Backend::Executor(_)) {
            return Ok(dir);
        }
        tone_engine::sink::prepare_output(&ObjectStores::new(), &dir)
            .await
            .map_err(Error::from_output)?;
        Ok(dir)
    }

    /// After a write's job: removes what uncommitted attempts left and
    /// marks the output committed (`_SUCCESS`).
    async fn finish_output(&self, dir: &Path) -> Result<()> {
        if matches!(*self.inner, Backend::Executor(_)) {
            return Ok(());
        }
        tone_engine::sink::commit_output(&ObjectStores::new(), dir)
            .await
            .map_err(Error::from_output)
    }
}

/// The sum of the one-column `UInt64` counts tasks report.
fn sum_counts(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .filter_map(|batch| batch.column(0).as_any().downcast_ref::<UInt64Array>())
        .flat_map(|counts| counts.iter().flatten())
        .sum()
}
