//! Result comparison: same columns, same rows as a multiset, floats within
//! a tolerance (partial sums add up in a different order per partitioning).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};

#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Float(f64),
    Text(String),
}

type Row = Vec<Cell>;

fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options).expect("formattable"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(column, formatter)| {
                    float_at(column.as_ref(), row)
                        .map_or_else(|| Cell::Text(formatter.value(row).to_string()), Cell::Float)
                })
                .collect();
            rows.push(cells);
        }
    }
    rows
}

fn float_at(column: &dyn Array, row: usize) -> Option<f64> {
    if column.is_null(row) {
        return None;
    }
    match column.data_type() {
        DataType::Float64 => Some(column.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => Some(f64::from(column.as_primitive::<Float32Type>().value(row))),
        _ => None,
    }
}

/// A sort key that tolerates float noise: floats rounded to 6 significant
/// digits.
fn sort_key(row: &Row) -> Vec<String> {
    row.iter()
        .map(|cell| match cell {
            Cell::Text(text) => text.clone(),
            Cell::Float(value) => format!("{value:.5e}"),
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9_f64.max(1e-9 * a.abs().max(b.abs()))
}

/// Checks that `actual` holds the same rows as `expected`, in any order.
/// Returns a description of the first difference.
pub fn same_rows(expected: &[RecordBatch], actual: &[RecordBatch]) -> Result<(), String> {
    if let (Some(e), Some(a)) = (expected.first(), actual.first()) {
        let names = |batch: &RecordBatch| -> Vec<String> {
            batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        };
        if names(e) != names(a) {
            return Err(format!(
                "columns differ: expected {:?}, got {:?}",
                names(e),
                names(a)
            ));
        }
    }
    let mut expected = rows(expected);
    let mut actual = rows(actual);
    if expected.len() != actual.len() {
        return Err(format!(
            "expected {} rows, got {}",
            expected.len(),
            actual.len()
        ));
    }
    expected.sort_by_cached_key(sort_key);
    actual.sort_by_cached_key(sort_key);
    for (index, (e, a)) in expected.iter().zip(&actual).enumerate() {
        let equal = e.len() == a.len()
            && e.iter().zip(a).all(|(x, y)| match (x, y) {
                (Cell::Float(x), Cell::Float(y)) => close(*x, *y),
                _ => x == y,
            });
        if !equal {
            return Err(format!(
                "row {index} differs:\n  expected {e:?}\n  got      {a:?}"
            ));
        }
    }
    Ok(())
}

/// Checks row order too, for queries whose ORDER BY fixes it completely.
pub fn same_rows_in_order(expected: &[RecordBatch], actual: &[RecordBatch]) -> Result<(), String> {
    same_rows(expected, actual)?;
    let expected = rows(expected);
    let actual = rows(actual);
    for (index, (e, a)) in expected.iter().zip(&actual).enumerate() {
        if sort_key(e) != sort_key(a) {
            return Err(format!(
                "row {index} out of order:\n  expected {e:?}\n  got      {a:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn float_noise_is_tolerated_but_real_differences_are_not() {
    use arrow::array::{Float64Array, StringArray};
    use std::sync::Arc;
    let batch = |values: Vec<f64>, names: Vec<&str>| {
        RecordBatch::try_from_iter(vec![
            ("name", Arc::new(StringArray::from(names)) as _),
            ("value", Arc::new(Float64Array::from(values)) as _),
        ])
        .expect("valid batch")
    };
    let expected = [batch(vec![1.0, 2.0], vec!["a", "b"])];
    assert!(same_rows(&expected, &[batch(vec![2.0, 1.0 + 1e-13], vec!["b", "a"])]).is_ok());
    assert!(same_rows(&expected, &[batch(vec![1.0, 2.1], vec!["a", "b"])]).is_err());
    assert!(same_rows(&expected, &[batch(vec![1.0], vec!["a"])]).is_err());
    assert!(same_rows_in_order(&expected, &[batch(vec![2.0, 1.0], vec!["b", "a"])]).is_err());
}

/// Checks the rows as a multiset and their order on the ORDER BY columns
/// `keys`: rows that tie on the keys may come in any order.
pub fn same_rows_ordered_by(
    expected: &[RecordBatch],
    actual: &[RecordBatch],
    keys: &[usize],
) -> Result<(), String> {
    same_rows(expected, actual)?;
    let project = |row: &Row| -> Row { keys.iter().map(|&key| row[key].clone()).collect() };
    for (index, (e, a)) in rows(expected).iter().zip(&rows(actual)).enumerate() {
        let (e, a) = (project(e), project(a));
        let equal = e.iter().zip(&a).all(|(x, y)| match (x, y) {
            (Cell::Float(x), Cell::Float(y)) => close(*x, *y),
            _ => x == y,
        });
        if !equal {
            return Err(format!(
                "row {index} out of order on the ORDER BY columns {keys:?}:\n  expected {e:?}\n  got      {a:?}"
            ));
        }
    }
    Ok(())
}

/// True when the query ends in an ORDER BY of its own (not one inside a
/// subquery, window or aggregate), so its row order is part of the answer.
pub fn has_final_order_by(sql: &str) -> bool {
    let lower = sql.to_lowercase();
    match (lower.rfind("order by"), lower.rfind(')')) {
        (Some(order), Some(paren)) => order > paren,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Compares in order when the query fixes the order, as a multiset otherwise.
pub fn same_answer(
    sql: &str,
    expected: &[RecordBatch],
    actual: &[RecordBatch],
) -> Result<(), String> {
    if has_final_order_by(sql) {
        same_rows_in_order(expected, actual)
    } else {
        same_rows(expected, actual)
    }
}
