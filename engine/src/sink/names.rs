//! File names fixed at planning for DataFusion's sinks (`COPY … TO` a
//! folder, `INSERT INTO` a listing table).
//!
//! DataFusion names the files such a sink writes into a folder after a
//! random id drawn when the sink runs. A task that wrote its files and was
//! then lost (a dead worker, a report that never arrived) is run again, and
//! the second attempt would add its files beside the first's: every row
//! twice. Here the id is drawn once, when the statement is planned, and the
//! sink writes exactly one file, `<id>_0.<ext>`, in the folder (the sink
//! runs as one task, so one file loses no parallelism it had). Every
//! attempt of the job writes that same name and replaces what an earlier
//! one left: an object store shows an object only once its upload
//! completed, and a local file is staged and renamed into place by
//! object_store's local store. Each statement still gets its own name, so
//! a second COPY into a folder adds to it, as in DataFusion.
//!
//! Hive-partitioned writes (`PARTITIONED BY`) spread rows over a folder per
//! value and keep DataFusion's names (see ARCHITECTURE.md).

use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::file_format::json::JsonSink;
use datafusion::datasource::file_format::parquet::{ParquetFormat, ParquetSink};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::{FileOutputMode, FileSink, FileSinkConfig};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::Result as DfResult;
use datafusion::physical_plan::ExecutionPlan;

/// `plan` with every folder-writing file sink writing one file whose name
/// is fixed now.
pub async fn fix_sink_file_names(
    plan: Arc<dyn ExecutionPlan>,
    state: &dyn Session,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    // Sinks sit at the root of the plans that have them (COPY, INSERT).
    let Some(sink) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<DataSinkExec>() else {
        return Ok(plan);
    };
    let Some(config) = file_sink_config(sink).and_then(one_named_file) else {
        return Ok(plan);
    };
    let any = sink.sink() as &dyn std::any::Any;
    let input = Arc::clone(sink.input());
    let order = sink.sort_order().clone();
    if let Some(csv) = any.downcast_ref::<CsvSink>() {
        let csv = CsvSink::new(config, csv.writer_options().clone());
        return Ok(Arc::new(DataSinkExec::new(input, Arc::new(csv), order)));
    }
    if let Some(json) = any.downcast_ref::<JsonSink>() {
        let json = JsonSink::new(config, json.writer_options().clone());
        return Ok(Arc::new(DataSinkExec::new(input, Arc::new(json), order)));
    }
    // Parquet through its format, which also derives the file's sorting
    // columns from the order.
    let options = any
        .downcast_ref::<ParquetSink>()
        .map(|parquet| parquet.parquet_options().clone())
        .unwrap_or_default();
    ParquetFormat::default()
        .with_options(options)
        .create_writer_physical_plan(input, state, config, order)
        .await
}

/// The file settings of a DataFusion sink that writes CSV, JSON or
/// Parquet files; `None` for any other sink.
pub(crate) fn file_sink_config(sink: &DataSinkExec) -> Option<&FileSinkConfig> {
    let any = sink.sink() as &dyn std::any::Any;
    any.downcast_ref::<CsvSink>()
        .map(|sink| sink.config())
        .or_else(|| any.downcast_ref::<JsonSink>().map(|sink| sink.config()))
        .or_else(|| any.downcast_ref::<ParquetSink>().map(|sink| sink.config()))
}

/// `config` writing one file with a name drawn now, if it writes a folder
/// of files (not one named file, not hive partitions).
fn one_named_file(config: &FileSinkConfig) -> Option<FileSinkConfig> {
    let [folder] = config.table_paths.as_slice() else {
        return None;
    };
    if !config.table_partition_cols.is_empty() || config.file_output_mode.single_file_output(folder)
    {
        return None;
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!(
        "{}/{}_0.{}",
        folder.as_str().trim_end_matches('/'),
        &id[..16],
        config.file_extension
    );
    let file = ListingTableUrl::parse(&name).ok()?;
    let mut fixed = config.clone();
    fixed.table_paths = vec![file];
    fixed.file_output_mode = FileOutputMode::SingleFile;
    Some(fixed)
}
