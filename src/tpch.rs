//! TPC-H data generation with the tpchgen crates: no download needed.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow,
    RecordBatchIterator, RegionArrow, SupplierArrow,
};

/// The eight TPC-H tables.
pub const TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

/// The 22 TPC-H query texts (qualification parameters), as `(name, sql)`.
///
/// Copied from the project's shared TPC-H set; see `src/tpch_queries/`.
pub const QUERIES: [(&str, &str); 22] = [
    ("q01", include_str!("tpch_queries/q01.sql")),
    ("q02", include_str!("tpch_queries/q02.sql")),
    ("q03", include_str!("tpch_queries/q03.sql")),
    ("q04", include_str!("tpch_queries/q04.sql")),
    ("q05", include_str!("tpch_queries/q05.sql")),
    ("q06", include_str!("tpch_queries/q06.sql")),
    ("q07", include_str!("tpch_queries/q07.sql")),
    ("q08", include_str!("tpch_queries/q08.sql")),
    ("q09", include_str!("tpch_queries/q09.sql")),
    ("q10", include_str!("tpch_queries/q10.sql")),
    ("q11", include_str!("tpch_queries/q11.sql")),
    ("q12", include_str!("tpch_queries/q12.sql")),
    ("q13", include_str!("tpch_queries/q13.sql")),
    ("q14", include_str!("tpch_queries/q14.sql")),
    ("q15", include_str!("tpch_queries/q15.sql")),
    ("q16", include_str!("tpch_queries/q16.sql")),
    ("q17", include_str!("tpch_queries/q17.sql")),
    ("q18", include_str!("tpch_queries/q18.sql")),
    ("q19", include_str!("tpch_queries/q19.sql")),
    ("q20", include_str!("tpch_queries/q20.sql")),
    ("q21", include_str!("tpch_queries/q21.sql")),
    ("q22", include_str!("tpch_queries/q22.sql")),
];

/// Output format of generated files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataFormat {
    /// One Parquet file per table part.
    Parquet,
    /// CSV with a header row.
    Csv,
}

/// Why generation failed, with the file it was writing.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {reason}")]
pub struct GenerateError {
    /// The file being written.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// Writes every table at `scale` under `out/<table>/<table>.<part>.<ext>`.
/// Small tables (nation, region) get one file; the others `parts` files.
pub fn generate(
    scale: f64,
    out: &Path,
    format: DataFormat,
    parts: usize,
) -> Result<(), GenerateError> {
    let parts = parts.max(1);
    let jobs: Vec<(&str, usize, usize)> = TABLES
        .iter()
        .flat_map(|table| {
            let count = if matches!(*table, "nation" | "region") {
                1
            } else {
                parts
            };
            (1..=count).map(move |part| (*table, part, count))
        })
        .collect();
    jobs.into_par_iter()
        .try_for_each(|(table, part, count)| write_part(scale, out, format, table, part, count))
}

fn write_part(
    scale: f64,
    out: &Path,
    format: DataFormat,
    table: &str,
    part: usize,
    count: usize,
) -> Result<(), GenerateError> {
    let dir = out.join(table);
    let extension = match format {
        DataFormat::Parquet => "parquet",
        DataFormat::Csv => "csv",
    };
    let path = dir.join(format!("{table}.{part}.{extension}"));
    let fail = |reason: String| GenerateError {
        path: path.clone(),
        reason,
    };
    std::fs::create_dir_all(&dir).map_err(|error| fail(error.to_string()))?;
    let batches = table_batches(table, scale, part as i32, count as i32);
    let schema = batches.schema().clone();
    let file = File::create(&path).map_err(|error| fail(error.to_string()))?;
    match format {
        DataFormat::Parquet => write_parquet(file, schema, batches),
        DataFormat::Csv => write_csv(file, batches),
    }
    .map_err(fail)
}

fn table_batches(table: &str, scale: f64, part: i32, count: i32) -> Box<dyn RecordBatchIterator> {
    match table {
        "customer" => Box::new(CustomerArrow::new(CustomerGenerator::new(
            scale, part, count,
        ))),
        "lineitem" => Box::new(LineItemArrow::new(LineItemGenerator::new(
            scale, part, count,
        ))),
        "nation" => Box::new(NationArrow::new(NationGenerator::new(scale, part, count))),
        "orders" => Box::new(OrderArrow::new(OrderGenerator::new(scale, part, count))),
        "part" => Box::new(PartArrow::new(PartGenerator::new(scale, part, count))),
        "partsupp" => Box::new(PartSuppArrow::new(PartSuppGenerator::new(
            scale, part, count,
        ))),
        "region" => Box::new(RegionArrow::new(RegionGenerator::new(scale, part, count))),
        _ => Box::new(SupplierArrow::new(SupplierGenerator::new(
            scale, part, count,
        ))),
    }
}

fn write_parquet(
    file: File,
    schema: SchemaRef,
    batches: Box<dyn RecordBatchIterator>,
) -> Result<(), String> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer =
        ArrowWriter::try_new(file, schema, Some(properties)).map_err(|error| error.to_string())?;
    for batch in batches {
        writer.write(&batch).map_err(|error| error.to_string())?;
    }
    writer.close().map_err(|error| error.to_string())?;
    Ok(())
}

fn write_csv(file: File, batches: Box<dyn RecordBatchIterator>) -> Result<(), String> {
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(std::io::BufWriter::new(file));
    for batch in batches {
        writer.write(&batch).map_err(|error| error.to_string())?;
    }
    Ok(())
}
