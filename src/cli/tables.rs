//! The table flags shared by every command that reads data.

use std::path::PathBuf;

use clap::Args;
use tone_engine::limits::parse_size;
use tone_engine::{Engine, EngineConfig};

use super::CliError;

#[derive(Debug, Clone, Args)]
pub struct TableArgs {
    /// Register each child of DIR (a Parquet/CSV/JSON file, or a folder of
    /// them) as a table named after it.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Register one table: NAME=PATH (a file or a folder of files).
    #[arg(long = "table", value_name = "NAME=PATH")]
    pub tables: Vec<String>,
    /// Partitions per stage [default: number of cores].
    #[arg(long, value_name = "N")]
    pub partitions: Option<usize>,
    /// Memory for the embedded engine, e.g. 512M or 4G: sorts, aggregates,
    /// joins and shuffles spill to disk past it, and work that still does
    /// not fit fails with a resources error [default: unlimited]. On a
    /// cluster, give it to the workers instead.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: Option<u64>,
    /// Adaptive planning decisions (join reordering); a statement may
    /// still turn each on or off (`SET tone.join_reorder = true`).
    #[arg(long, value_enum, default_value = "on", value_name = "on|off")]
    pub aqe: super::daemons::Switch,
}

impl TableArgs {
    /// An embedded engine with the requested tables registered.
    pub async fn engine(&self) -> Result<Engine, CliError> {
        let mut config = EngineConfig::default();
        if let Some(partitions) = self.partitions {
            if partitions == 0 {
                return Err(CliError::Usage("--partitions must be at least 1".into()));
            }
            config.partitions = partitions;
        }
        config.memory_limit_bytes = self.memory_limit;
        config.adaptive = self.aqe.adaptive();
        let engine = Engine::new(config)?;
        if let Some(dir) = &self.data {
            let is_url = dir.to_str().is_some_and(|text| text.contains("://"));
            if !is_url && !dir.is_dir() {
                return Err(CliError::Usage(format!(
                    "--data folder '{}' does not exist or is not a folder",
                    dir.display()
                )));
            }
            engine.register_data_dir(dir).await?;
        }
        for table in &self.tables {
            let (name, path) = table.split_once('=').ok_or_else(|| {
                CliError::Usage(format!("--table expects NAME=PATH, got '{table}'"))
            })?;
            if name.is_empty() {
                return Err(CliError::Usage(format!(
                    "--table '{table}' has an empty name"
                )));
            }
            engine
                .register_table(name, std::path::Path::new(path))
                .await?;
        }
        Ok(engine)
    }
}
