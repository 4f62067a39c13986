//! The cost model: how many rows a set of joined leaves gives.
//!
//! A join's rows are `|A| × |B| / max(d(A), d(B))`, where `d` is the number
//! of distinct key values on each side: the textbook estimate, which
//! assumes the smaller key set's values all occur in the larger. A leaf's
//! rows and distinct counts come from DataFusion's statistics of its
//! physical plan: Parquet row counts and min/max, narrowed by its filters.
//! Without a distinct count, an integer or date column has at most as
//! many values as its range, and no column more values than rows.

use std::collections::HashMap;

use datafusion::common::stats::Precision;
use datafusion::common::{Column, DFSchemaRef, ScalarValue, Statistics};
use datafusion::logical_expr::Expr;

/// What the model knows of a set of joined leaves.
#[derive(Debug, Clone)]
pub(super) struct Estimate {
    pub rows: f64,
    distinct: HashMap<Column, f64>,
}

impl Estimate {
    /// A leaf's estimate from its plan's statistics, or from `measured`
    /// rows where a sample measured them; `None` without a row count.
    pub fn of_leaf(
        schema: &DFSchemaRef,
        statistics: &Statistics,
        measured: Option<f64>,
    ) -> Option<Self> {
        let rows = match measured {
            Some(rows) => rows.max(1.0),
            None => (*statistics.num_rows.get_value()?).max(1) as f64,
        };
        let distinct = schema
            .columns()
            .into_iter()
            .zip(&statistics.column_statistics)
            .filter_map(|(column, stats)| {
                let count = match stats.distinct_count.get_value() {
                    Some(count) => *count as f64,
                    None => range_width(&stats.min_value, &stats.max_value)?,
                };
                Some((column, count.clamp(1.0, rows)))
            })
            .collect();
        Some(Self { rows, distinct })
    }

    /// Distinct values of `expr` here: a column's count, else one per row.
    fn distinct_of(&self, expr: &Expr) -> f64 {
        let count = match expr {
            Expr::Column(column) => self.distinct.get(column).copied(),
            _ => None,
        };
        count.unwrap_or(self.rows).min(self.rows)
    }

    /// Distinct combinations of `keys` here. There are at least as many
    /// as the most distinct key has values, and at most their product (and
    /// one per row). The keys of one join are usually correlated (a part
    /// and its supplier), so the model takes the geometric mean of the two
    /// bounds: the product alone would take a composite foreign key for
    /// unique and underestimate its join many times over.
    fn distinct_of_keys<'a>(&self, keys: impl Iterator<Item = &'a Expr>) -> f64 {
        let counts: Vec<f64> = keys.map(|key| self.distinct_of(key)).collect();
        let most = counts.iter().copied().fold(1.0, f64::max);
        let product = counts.iter().product::<f64>().min(self.rows);
        (most * product).sqrt()
    }

    /// `self` joined with `other` on `keys`, pairs of (a key of `self`, a
    /// key of `other`).
    pub fn join(&self, other: &Self, keys: &[(&Expr, &Expr)]) -> Self {
        let mine = self.distinct_of_keys(keys.iter().map(|(key, _)| *key));
        let theirs = other.distinct_of_keys(keys.iter().map(|(_, key)| *key));
        let rows = (self.rows * other.rows / mine.max(theirs).max(1.0)).max(1.0);
        let mut distinct: HashMap<Column, f64> = self
            .distinct
            .iter()
            .chain(&other.distinct)
            .map(|(column, count)| (column.clone(), count.min(rows)))
            .collect();
        // Only values on both sides survive an equality.
        for (left, right) in keys {
            let both = self.distinct_of(left).min(other.distinct_of(right));
            for key in [left, right] {
                if let Expr::Column(column) = key {
                    distinct.insert(column.clone(), both.min(rows));
                }
            }
        }
        Self { rows, distinct }
    }
}

/// How many values fit between `min` and `max` of an integer or date
/// column.
fn range_width(min: &Precision<ScalarValue>, max: &Precision<ScalarValue>) -> Option<f64> {
    let (min, max) = (as_integer(min.get_value()?)?, as_integer(max.get_value()?)?);
    (max >= min).then(|| (max - min) as f64 + 1.0)
}

fn as_integer(value: &ScalarValue) -> Option<i128> {
    Some(match value {
        ScalarValue::Int8(Some(v)) => i128::from(*v),
        ScalarValue::Int16(Some(v)) => i128::from(*v),
        ScalarValue::Int32(Some(v)) => i128::from(*v),
        ScalarValue::Int64(Some(v)) => i128::from(*v),
        ScalarValue::UInt8(Some(v)) => i128::from(*v),
        ScalarValue::UInt16(Some(v)) => i128::from(*v),
        ScalarValue::UInt32(Some(v)) => i128::from(*v),
        ScalarValue::UInt64(Some(v)) => i128::from(*v),
        ScalarValue::Date32(Some(v)) => i128::from(*v),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(rows: f64, columns: &[(&str, f64)]) -> Estimate {
        Estimate {
            rows,
            distinct: columns
                .iter()
                .map(|(name, count)| (Column::from_qualified_name(*name), *count))
                .collect(),
        }
    }

    fn col(name: &str) -> Expr {
        Expr::Column(Column::from_qualified_name(name))
    }

    #[test]
    fn a_foreign_key_join_gives_the_referencing_rows() {
        let lineitem = estimate(60_000.0, &[("l.orderkey", 15_000.0)]);
        let orders = estimate(15_000.0, &[("o.orderkey", 15_000.0)]);
        let (l, o) = (col("l.orderkey"), col("o.orderkey"));
        let joined = lineitem.join(&orders, &[(&l, &o)]);
        assert_eq!(joined.rows, 60_000.0);
    }

    #[test]
    fn a_filtered_key_side_shrinks_the_join_and_its_distinct_keys() {
        let lineitem = estimate(60_000.0, &[("l.orderkey", 15_000.0)]);
        let orders = estimate(150.0, &[("o.orderkey", 15_000.0)]);
        let (l, o) = (col("l.orderkey"), col("o.orderkey"));
        let joined = lineitem.join(&orders, &[(&l, &o)]);
        assert_eq!(joined.rows, 600.0);
        assert_eq!(joined.distinct_of(&l), 150.0);
    }

    #[test]
    fn a_many_to_many_key_multiplies_rows() {
        let lineitem = estimate(60_000.0, &[("l.partkey", 2_000.0)]);
        let partsupp = estimate(8_000.0, &[("ps.partkey", 2_000.0)]);
        let (l, ps) = (col("l.partkey"), col("ps.partkey"));
        assert_eq!(lineitem.join(&partsupp, &[(&l, &ps)]).rows, 240_000.0);
    }

    #[test]
    fn a_composite_key_counts_between_its_most_distinct_column_and_the_product() {
        let lineitem = estimate(6_000.0, &[("l.partkey", 200.0), ("l.suppkey", 10.0)]);
        let partsupp = estimate(800.0, &[("ps.partkey", 200.0), ("ps.suppkey", 10.0)]);
        let keys = [
            col("l.partkey"),
            col("l.suppkey"),
            col("ps.partkey"),
            col("ps.suppkey"),
        ];
        let pairs = [(&keys[0], &keys[2]), (&keys[1], &keys[3])];
        // sqrt(200 × 2,000) = 632 combinations on lineitem's side.
        let rows = lineitem.join(&partsupp, &pairs).rows;
        assert!((7_000.0..8_000.0).contains(&rows), "{rows}");
    }

    #[test]
    fn a_key_expression_counts_one_value_per_row() {
        let small = estimate(10.0, &[]);
        let big = estimate(1_000.0, &[("b.k", 1_000.0)]);
        let key = col("s.k").alias("x");
        let joined = small.join(&big, &[(&key, &col("b.k"))]);
        assert_eq!(joined.rows, 10.0);
    }

    #[test]
    fn integer_ranges_bound_distinct_values() {
        let min = Precision::Exact(ScalarValue::Int64(Some(1)));
        let max = Precision::Inexact(ScalarValue::Int64(Some(2_000)));
        assert_eq!(range_width(&min, &max), Some(2_000.0));
        let text = Precision::Exact(ScalarValue::Utf8(Some("a".into())));
        assert_eq!(range_width(&text, &text), None);
    }
}
