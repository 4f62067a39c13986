//! tone: a dataflow batch compute engine, embedded in one process or on a
//! cluster.
//!
//! This crate is what a job links: the Rust job API, and the engine's
//! public API re-exported. (The `tone` command line is the `tone-cli`
//! package, so a job crate builds neither the coordinator nor the shell.)
//!
//! - [`Context`] ([`context`]): embedded or on a cluster; SQL and the
//!   [`DataFrame`] API.
//! - [`Dataset`] ([`dataset`]): typed collections transformed with closures.
//! - [`cluster`]: the cluster client; [`error`]: the jobs' [`Error`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), tone::EngineError> {
//! let engine = tone::Engine::new(tone::EngineConfig::default())?;
//! engine.register_data_dir(std::path::Path::new("/tmp/tpch")).await?;
//! let batches = engine.sql("select count(*) from lineitem").await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod cluster;
pub mod context;
pub mod dataset;
pub mod error;

pub use context::{Context, DataFrame};
pub use dataset::Dataset;
pub use error::Error;

/// What a job usually needs: the context, datasets, and DataFusion's
/// expression builders (`col`, `lit`, aggregates) for DataFrames.
pub mod prelude {
    pub use crate::context::{Context, DataFrame};
    pub use crate::dataset::{Data, Dataset, Key};
    pub use crate::error::Error;
    pub use datafusion::common::JoinType;
    pub use datafusion::functions_aggregate::expr_fn::{avg, count, max, min, sum};
    pub use datafusion::prelude::{col, lit, Expr};
}

pub use tone_engine::{
    render_dag, Engine, EngineConfig, EngineError, JobId, Stage, StageDag, StageId, StatementOutput,
};
