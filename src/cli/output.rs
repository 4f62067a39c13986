//! Printing result rows as a table, CSV or JSON.

use std::io::Write;

use arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use tone_engine::EngineError;

use super::CliError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// A header row, then one line per row.
    Csv,
    /// A JSON array of row objects.
    Json,
}

/// Streams `stream` to stdout in `format`. CSV is written batch by batch;
/// a table needs every row to size its columns.
pub async fn print_stream(
    mut stream: SendableRecordBatchStream,
    format: OutputFormat,
) -> Result<u64, CliError> {
    let stdout = std::io::stdout();
    let mut rows = 0u64;
    match format {
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(stdout.lock());
            let mut wrote_any = false;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(EngineError::from)?;
                rows += batch.num_rows() as u64;
                writer
                    .write(&batch)
                    .map_err(|error| write_error(error.to_string()))?;
                wrote_any = true;
            }
            if !wrote_any {
                // An empty result still gets its header row.
                let empty = RecordBatch::new_empty(stream.schema());
                writer
                    .write(&empty)
                    .map_err(|error| write_error(error.to_string()))?;
            }
            drop(writer);
        }
        OutputFormat::Table | OutputFormat::Json => {
            let schema = stream.schema();
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(EngineError::from)?;
                rows += batch.num_rows() as u64;
                batches.push(batch);
            }
            let mut out = stdout.lock();
            if format == OutputFormat::Table {
                let text = arrow::util::pretty::pretty_format_batches(&batches)
                    .map_err(|error| write_error(error.to_string()))?;
                if batches.is_empty() {
                    let names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
                    writeln!(out, "(no rows; columns: {})", names.join(", ")).map_err(io)?;
                } else {
                    writeln!(out, "{text}").map_err(io)?;
                }
            } else {
                let mut writer = arrow::json::ArrayWriter::new(&mut out);
                let refs: Vec<&RecordBatch> = batches.iter().collect();
                writer
                    .write_batches(&refs)
                    .map_err(|error| write_error(error.to_string()))?;
                writer
                    .finish()
                    .map_err(|error| write_error(error.to_string()))?;
                drop(writer);
                writeln!(out).map_err(io)?;
            }
        }
    }
    std::io::stdout().flush().map_err(io)?;
    Ok(rows)
}

fn io(source: std::io::Error) -> CliError {
    CliError::Io {
        context: "writing results".into(),
        source,
    }
}

/// Arrow wraps I/O errors in its own; a closed pipe must still read as one.
fn write_error(message: String) -> CliError {
    let kind = if message.contains("Broken pipe") {
        std::io::ErrorKind::BrokenPipe
    } else {
        std::io::ErrorKind::Other
    };
    CliError::Io {
        context: "writing results".into(),
        source: std::io::Error::new(kind, message),
    }
}
