//! tone: a dataflow batch compute engine, embedded in one process or on a
//! cluster.
//!
//! This crate is the facade: it re-exports the engine's public API and
//! holds the `tone` command-line interface ([`cli`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), tone::EngineError> {
//! let engine = tone::Engine::new(tone::EngineConfig::default())?;
//! engine.register_data_dir(std::path::Path::new("/tmp/tpch")).await?;
//! let batches = engine.sql("select count(*) from lineitem").await?;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod cluster;
pub mod tpch;

pub use tone_engine::{
    render_dag, Engine, EngineConfig, EngineError, JobId, Stage, StageDag, StageId, StatementOutput,
};
