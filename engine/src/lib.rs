//! tone-engine: everything about computing a job, nothing about networks.
//!
//! - [`engine`]: [`Engine`], the embedded entry point (SQL in, rows out).
//! - [`stage`]: cutting a physical plan into a DAG of stages at exchanges.
//! - [`shuffle`]: the shuffle writer and reader operators and the store of
//!   map outputs (Arrow IPC segments in memory, spilled to disk past a budget).
//! - [`closure`]: user closures in plans ([`closure::ClosureExec`]) and the
//!   per-job registry that resolves their ids.
//! - [`text`]: text files as one row per line, split by byte ranges.
//! - [`codec`]: stage plans to bytes and back (datafusion-proto + tone nodes).
//! - [`runtime`]: running a stage DAG in this process.
//! - [`cpu`]: the rayon pool for CPU-heavy work and its async bridge.
//! - [`join_order`]: reordering multi-way inner joins by estimated rows.
//! - [`runtime_filter`]: a join's build keys filtering its probe stage.
//! - [`adaptive`]: the session's planner and the `tone.*` settings that turn
//!   adaptive decisions off.
//! - [`session`]: the DataFusion session and table registration.
//! - [`limits`]: memory and disk limits (the DataFusion memory pool, the
//!   shuffle's share of it, sizes like `512M`).
//! - [`paths`]: `--allow-path` roots and the check of a plan's locations.
//! - [`error`]: [`EngineError`], classified by who must act.

pub mod adaptive;
pub mod closure;
pub mod codec;
pub mod cpu;
pub mod engine;
pub mod error;
pub mod faults;
pub mod ids;
pub mod ipc_frames;
pub mod join_order;
pub mod limits;
pub mod parameters;
pub mod paths;
pub mod plan_figures;
pub mod runtime;
pub mod runtime_filter;
pub mod session;
pub mod shuffle;
pub mod sink;
pub mod sql_guard;
mod sql_location;
pub mod stage;
pub mod store_tables;
pub mod stores;
pub mod task_limit;
pub mod text;

pub use engine::{Engine, EngineConfig, StatementOutput};
pub use error::{EngineError, Result};
pub use ids::{JobId, StageId};
pub use stage::{render_dag, Stage, StageDag};
