//! [`DataFrame`]: DataFusion's logical DataFrame, planned in the
//! context's session and run on tone's stage engine (embedded, or as an
//! encoded plan on a cluster).

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::JoinType;
use datafusion::logical_expr::{Expr, SortExpr};
use datafusion::physical_plan::ExecutionPlan;
use tone_engine::sink::{FileSinkExec, SinkFormat};

use super::Context;
use crate::error::Result;

/// A lazily planned query (DataFusion's logical DataFrame) whose actions run
/// on tone's stage engine.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), tone::Error> {
/// use tone::prelude::*;
/// let ctx = tone::Context::local()?;
/// let frame = ctx.sql_frame("select * from (values (1, 'a'), (2, 'b'), (3, 'a')) t(n, s)").await?;
/// let rows = frame
///     .filter(col("n").gt(lit(1)))?
///     .aggregate(vec![col("s")], vec![count(col("n")).alias("c")])?
///     .collect()
///     .await?;
/// assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DataFrame {
    pub(crate) ctx: Context,
    frame: datafusion::dataframe::DataFrame,
}

impl DataFrame {
    /// The context this frame runs on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// DataFusion's DataFrame underneath, for operations not wrapped here.
    pub fn inner(&self) -> &datafusion::dataframe::DataFrame {
        &self.frame
    }

    /// Wraps a DataFusion DataFrame planned in this context's session
    /// ([`Context::session`]).
    pub fn from_inner(ctx: &Context, frame: datafusion::dataframe::DataFrame) -> Self {
        Self {
            ctx: ctx.clone(),
            frame,
        }
    }

    fn map(
        self,
        apply: impl FnOnce(
            datafusion::dataframe::DataFrame,
        ) -> datafusion::error::Result<datafusion::dataframe::DataFrame>,
    ) -> Result<Self> {
        Ok(Self {
            frame: apply(self.frame)?,
            ctx: self.ctx,
        })
    }

    /// The output schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.frame.schema().as_arrow().clone())
    }

    /// Keeps these expressions as columns.
    pub fn select(self, exprs: Vec<Expr>) -> Result<Self> {
        self.map(|frame| frame.select(exprs))
    }

    /// Keeps these columns.
    pub fn select_columns(self, columns: &[&str]) -> Result<Self> {
        self.map(|frame| frame.select_columns(columns))
    }

    /// Adds (or replaces) a column.
    pub fn with_column(self, name: &str, expr: Expr) -> Result<Self> {
        self.map(|frame| frame.with_column(name, expr))
    }

    /// Keeps the rows where `predicate` is true.
    pub fn filter(self, predicate: Expr) -> Result<Self> {
        self.map(|frame| frame.filter(predicate))
    }

    /// Groups by `group` and computes the aggregates `aggregates`.
    pub fn aggregate(self, group: Vec<Expr>, aggregates: Vec<Expr>) -> Result<Self> {
        self.map(|frame| frame.aggregate(group, aggregates))
    }

    /// Joins with `right` on equal columns, plus an optional extra filter.
    pub fn join(
        self,
        right: DataFrame,
        join_type: JoinType,
        left_columns: &[&str],
        right_columns: &[&str],
        filter: Option<Expr>,
    ) -> Result<Self> {
        self.map(|frame| frame.join(right.frame, join_type, left_columns, right_columns, filter))
    }

    /// Sorts by the given sort expressions (`col("a").sort(true, false)`).
    pub fn sort(self, order: Vec<SortExpr>) -> Result<Self> {
        self.map(|frame| frame.sort(order))
    }

    /// Skips `skip` rows and keeps at most `fetch`.
    pub fn limit(self, skip: usize, fetch: Option<usize>) -> Result<Self> {
        self.map(|frame| frame.limit(skip, fetch))
    }

    /// The physical plan tone runs for this frame.
    pub async fn physical_plan(&self) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self.frame.clone().create_physical_plan().await?)
    }

    /// Runs the query on tone's stage engine and collects its rows.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        let plan = self.physical_plan().await?;
        self.ctx.run_plan(plan).await
    }

    /// Runs the query as `count(*)` and returns the count: the rows are
    /// counted where they are, only the count travels.
    pub async fn count(self) -> Result<usize> {
        use datafusion::functions_aggregate::expr_fn::count;
        use datafusion::prelude::lit;
        let counted = self
            .frame
            .clone()
            .aggregate(vec![], vec![count(lit(1)).alias("count")])?;
        let plan = counted.create_physical_plan().await?;
        let batches = self.ctx.run_plan(plan).await?;
        let total = batches
            .iter()
            .filter(|batch| batch.num_rows() > 0)
            .map(|batch| {
                batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .map(|counts| counts.iter().flatten().sum::<i64>())
                    .ok_or_else(|| {
                        crate::Error::Engine(tone_engine::EngineError::Internal {
                            message: "count(*) did not give an Int64 column".into(),
                        })
                    })
            })
            .sum::<Result<i64>>()?;
        usize::try_from(total).map_err(|_| {
            crate::Error::Engine(tone_engine::EngineError::Internal {
                message: format!("count(*) gave {total}"),
            })
        })
    }

    /// Writes the rows as Parquet into folder `path`, a file per partition
    /// of the frame (`part-NNNNN.parquet`); returns rows written. The
    /// folder must not hold files yet (tone neither overwrites nor appends).
    pub async fn write_parquet(self, path: impl AsRef<Path>) -> Result<u64> {
        self.write(path.as_ref(), SinkFormat::Parquet).await
    }

    /// Writes the rows as CSV with a header into folder `path`, a file per
    /// partition of the frame; returns rows written. The folder must not
    /// hold files yet.
    pub async fn write_csv(self, path: impl AsRef<Path>) -> Result<u64> {
        self.write(path.as_ref(), SinkFormat::Csv).await
    }

    /// Each partition commits its own file (`tone_engine::sink`), so the
    /// write runs in parallel and a re-run task never duplicates rows.
    async fn write(self, path: &Path, format: SinkFormat) -> Result<u64> {
        let plan = self.physical_plan().await?;
        let sink = |dir| async move {
            let sink: Arc<dyn ExecutionPlan> = Arc::new(FileSinkExec::new(plan, dir, format));
            Ok(sink)
        };
        self.ctx.write_plan(path, sink).await
    }
}
