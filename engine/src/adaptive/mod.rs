//! Adaptive planning: the session's planner ([`AdaptivePlanner`]), the
//! `tone.*` session settings that turn each decision on and off (`SET
//! tone.join_reorder = false`), and the switch for all of them at once
//! (`--aqe off`).

pub mod layout;
mod planner;

pub use planner::AdaptivePlanner;

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;
use datafusion::execution::context::SessionState;
use datafusion::prelude::SessionConfig;

extensions_options! {
    /// tone's own settings, under the `tone.` prefix.
    pub struct ToneOptions {
        /// Reorder multi-way inner joins so that the joins estimated to
        /// produce the fewest rows run first (see `join_order`).
        pub join_reorder: bool, default = true
        /// Filter a join's probe stage by its build stage's keys before
        /// the probe rows are shuffled (see `runtime_filter`; embedded).
        pub runtime_filters: bool, default = true
        /// Pack adjacent small reduce partitions into one task once a
        /// stage's inputs are done (see `layout`).
        pub coalesce_partitions: bool, default = true
        /// Split a skewed partition under a partitioned join into pieces
        /// by its map outputs (see `layout`).
        pub skew_join: bool, default = true
        /// The bytes a coalesced task or a skew piece aims at (Spark's
        /// advisory partition size).
        pub advisory_partition_bytes: u64, default = 64 * 1024 * 1024
        /// Coalesced tasks are not made smaller than this, even when that
        /// leaves slots idle: a tiny stage runs as one task.
        pub coalesce_min_bytes: u64, default = 1024 * 1024
        /// A join side's partition is skewed past this many times the
        /// side's median partition ...
        pub skew_factor: f64, default = 5.0
        /// ... and past this many bytes.
        pub skew_min_bytes: u64, default = 64 * 1024 * 1024
        /// Run a partitioned hash join whose build side will not fit a
        /// task's share of the memory limit as a sort-merge join, which
        /// spills (see `layout`).
        pub spillable_join: bool, default = true
    }
}

impl ConfigExtension for ToneOptions {
    const PREFIX: &'static str = "tone";
}

/// Which adaptive decisions an engine makes by default; each is also a
/// session setting a statement may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adaptive {
    pub join_reorder: bool,
    pub runtime_filters: bool,
    pub coalesce_partitions: bool,
    pub skew_join: bool,
    pub spillable_join: bool,
}

impl Adaptive {
    /// Every decision on (the default).
    pub const ON: Self = Self {
        join_reorder: true,
        runtime_filters: true,
        coalesce_partitions: true,
        skew_join: true,
        spillable_join: true,
    };
    /// Every decision off: plans as DataFusion makes them (`--aqe off`).
    pub const OFF: Self = Self {
        join_reorder: false,
        runtime_filters: false,
        coalesce_partitions: false,
        skew_join: false,
        spillable_join: false,
    };

    /// `config` with these defaults registered as the `tone.` settings.
    pub fn apply(self, config: SessionConfig) -> SessionConfig {
        config.with_option_extension(self.options())
    }

    /// The `tone.` settings with these decisions on or off.
    pub fn options(self) -> ToneOptions {
        let mut options = ToneOptions::default();
        options.join_reorder = self.join_reorder;
        options.runtime_filters = self.runtime_filters;
        options.coalesce_partitions = self.coalesce_partitions;
        options.skew_join = self.skew_join;
        options.spillable_join = self.spillable_join;
        options
    }
}

impl Default for Adaptive {
    fn default() -> Self {
        Self::ON
    }
}

/// The `tone.` settings in force in `state`.
pub fn options(state: &SessionState) -> ToneOptions {
    options_of(state.config())
}

/// The `tone.` settings in force in `config` (a task's, for one).
pub fn options_of(config: &SessionConfig) -> ToneOptions {
    config
        .options()
        .extensions
        .get::<ToneOptions>()
        .cloned()
        .unwrap_or_default()
}

impl ToneOptions {
    /// The layout settings these options give at `parallelism`, for tasks
    /// under `task_memory`.
    pub fn layout(
        &self,
        parallelism: usize,
        task_memory: Option<layout::TaskMemory>,
    ) -> layout::LayoutSettings {
        layout::LayoutSettings {
            coalesce: self.coalesce_partitions,
            skew_join: self.skew_join,
            advisory_partition_bytes: self.advisory_partition_bytes,
            coalesce_min_bytes: self.coalesce_min_bytes,
            skew_factor: self.skew_factor,
            skew_min_bytes: self.skew_min_bytes,
            parallelism,
            spillable_join: self.spillable_join,
            task_memory,
        }
    }
}
