//! Adaptive planning: the session's planner ([`AdaptivePlanner`]), the
//! `tone.*` session settings that turn each decision on and off (`SET
//! tone.join_reorder = false`), and the switch for all of them at once
//! (`--aqe off`).

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
}

impl Adaptive {
    /// Every decision on (the default).
    pub const ON: Self = Self {
        join_reorder: true,
        runtime_filters: true,
    };
    /// Every decision off: plans as DataFusion makes them (`--aqe off`).
    pub const OFF: Self = Self {
        join_reorder: false,
        runtime_filters: false,
    };

    /// `config` with these defaults registered as the `tone.` settings.
    pub fn apply(self, config: SessionConfig) -> SessionConfig {
        let mut options = ToneOptions::default();
        options.join_reorder = self.join_reorder;
        options.runtime_filters = self.runtime_filters;
        config.with_option_extension(options)
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
