//! TPC-H Q1 and Q3 written with the DataFrame API (run on tone's stage
//! engine like SQL).
//!
//! `cargo run --release --example tpch_dataframe -- --data DIR [--master URL]`
//! (DIR from `tone gen tpch --out DIR`).

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use clap::Parser;
use datafusion::prelude::cast;
use tone::prelude::*;

#[path = "parts/context_flags.rs"]
mod context_flags;

/// TPC-H Q1 and Q3 as DataFrames.
#[derive(Debug, Parser)]
#[command(name = "tpch_dataframe")]
struct Args {
    /// Folder of TPC-H tables (`tone gen tpch --out DIR`), or an s3:// prefix
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    #[command(flatten)]
    context: context_flags::ContextFlags,
}

fn date(text: &str) -> Expr {
    cast(lit(text.to_string()), DataType::Date32)
}

/// Q1: pricing summary report.
pub async fn q1(ctx: &Context, data: &Path) -> Result<Vec<RecordBatch>, tone::Error> {
    let lineitem = ctx.read_parquet(data.join("lineitem")).await?;
    let price = col("l_extendedprice") * (lit(1) - col("l_discount"));
    lineitem
        .filter(col("l_shipdate").lt_eq(date("1998-09-02")))?
        .aggregate(
            vec![col("l_returnflag"), col("l_linestatus")],
            vec![
                sum(col("l_quantity")).alias("sum_qty"),
                sum(col("l_extendedprice")).alias("sum_base_price"),
                sum(price.clone()).alias("sum_disc_price"),
                sum(price * (lit(1) + col("l_tax"))).alias("sum_charge"),
                avg(col("l_quantity")).alias("avg_qty"),
                avg(col("l_extendedprice")).alias("avg_price"),
                avg(col("l_discount")).alias("avg_disc"),
                count(lit(1)).alias("count_order"),
            ],
        )?
        .sort(vec![
            col("l_returnflag").sort(true, false),
            col("l_linestatus").sort(true, false),
        ])?
        .collect()
        .await
}

/// Q3: shipping priority (top 10 unshipped orders by revenue).
pub async fn q3(ctx: &Context, data: &Path) -> Result<Vec<RecordBatch>, tone::Error> {
    let customer = ctx
        .read_parquet(data.join("customer"))
        .await?
        .filter(col("c_mktsegment").eq(lit("BUILDING")))?;
    let orders = ctx
        .read_parquet(data.join("orders"))
        .await?
        .filter(col("o_orderdate").lt(date("1995-03-15")))?;
    let lineitem = ctx
        .read_parquet(data.join("lineitem"))
        .await?
        .filter(col("l_shipdate").gt(date("1995-03-15")))?;
    customer
        .join(
            orders,
            JoinType::Inner,
            &["c_custkey"],
            &["o_custkey"],
            None,
        )?
        .join(
            lineitem,
            JoinType::Inner,
            &["o_orderkey"],
            &["l_orderkey"],
            None,
        )?
        .aggregate(
            vec![col("l_orderkey"), col("o_orderdate"), col("o_shippriority")],
            vec![sum(col("l_extendedprice") * (lit(1) - col("l_discount"))).alias("revenue")],
        )?
        .select(vec![
            col("l_orderkey"),
            col("revenue"),
            col("o_orderdate"),
            col("o_shippriority"),
        ])?
        .sort(vec![
            col("revenue").sort(false, false),
            col("o_orderdate").sort(true, false),
        ])?
        .limit(0, Some(10))?
        .collect()
        .await
}

/// Runs both queries over the tables under `--data` and prints them.
async fn run(args: Args) -> Result<(), tone::Error> {
    let ctx = args.context.context().await?;
    let q1_rows = q1(&ctx, &args.data).await?;
    let q3_rows = q3(&ctx, &args.data).await?;
    for (name, batches) in [("Q1", q1_rows), ("Q3", q3_rows)] {
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .map_err(datafusion::error::DataFusionError::from)?;
        println!("{name}:\n{text}");
    }
    Ok(())
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tpch_dataframe: error: {error}");
            std::process::ExitCode::from(if error.is_user_error() { 2 } else { 1 })
        }
    }
}
