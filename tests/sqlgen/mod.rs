//! A seeded generator of random, valid SQL over the TPC-H schema, for
//! differential testing against plain DataFusion (`tests/sql_generated.rs`).
//!
//! Every query is a pure function of its seed. Queries are built so that
//! their answer is unique: LIMIT comes with an ORDER BY over every output
//! column, and window functions that depend on the order among ties are
//! ordered by a key that identifies rows.

mod expr;
mod query;
mod rng;
mod schema;

use expr::{Gen, Scope};
use query::Block;
use schema::Ty;

/// A generated query and what its answer promises about row order.
#[derive(Debug, Clone)]
pub struct Generated {
    pub sql: String,
    /// Output columns (0-based) of the final ORDER BY, in order; empty when
    /// the row order is not part of the answer.
    pub order_by: Vec<usize>,
}

pub fn generate(seed: u64) -> Generated {
    let mut gen = Gen::new(seed);
    let block = match gen.rng.below(100) {
        0..=49 => gen.block(None),
        50..=64 => set_operation(&mut gen),
        65..=82 => cte_used_twice(&mut gen),
        _ => derived_table(&mut gen),
    };
    let (sql, order_by) = order_and_limit(&mut gen, block);
    Generated { sql, order_by }
}

fn set_operation(gen: &mut Gen) -> Block {
    let left = gen.block(None);
    let types: Vec<Ty> = left.cols.iter().map(|c| c.ty).collect();
    let right = gen.block(Some(&types));
    let op = gen.rng.pick(&[
        "union",
        "union all",
        "intersect",
        "except",
        "intersect all",
        "except all",
    ]);
    Block {
        sql: format!("{} {op} {}", left.sql, right.sql),
        cols: left.cols,
    }
}

/// The scope of a block's output under `alias`.
fn scope_of(alias: &str, block: &Block) -> Scope {
    Scope {
        cols: block
            .cols
            .iter()
            .map(|col| expr::Col {
                sql: format!("{alias}.{}", col.name),
                ty: col.ty,
                domain: col.domain,
            })
            .collect(),
        sources: Vec::new(),
        subqueries: false,
    }
}

/// `WITH c AS (…)` read twice: a self-join, a comparison with an aggregate
/// over itself, or a union with itself.
fn cte_used_twice(gen: &mut Gen) -> Block {
    let shape = gen.rng.below(3);
    let block = gen.block(None);
    // A self-join on one column of a large block can square its rows (a
    // flag column joins every row with half of the others), so the joined
    // CTE is always a short one.
    let inner = if shape == 0 {
        limited(gen, block)
    } else {
        maybe_limited(gen, block)
    };
    let cols = inner.cols.clone();
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    let body = match shape {
        0 => {
            let first = &cols[0];
            let other = cols.get(1).unwrap_or(first);
            format!(
                "select x.*, y.{} as y{} from c x join c y on x.{} = y.{}",
                other.name, other.name, first.name, first.name
            )
        }
        1 => {
            let col = gen.rng.pick(&cols).clone();
            let function = if col.ty.is_numeric() { "avg" } else { "min" };
            let op = gen.rng.pick(&[">", "<", ">="]);
            format!(
                "select * from c where {} {op} (select {function}({}) from c)",
                col.name, col.name
            )
        }
        _ => format!(
            "select {0} from c union all select {0} from c where {1}",
            names.join(", "),
            gen.predicate(&scope_of("c", &inner), 1)
        ),
    };
    let mut out = cols.clone();
    if body.starts_with("select x.*") {
        let other = cols.get(1).unwrap_or(&cols[0]).clone();
        out.push(query::OutCol {
            name: format!("y{}", other.name),
            ..other
        });
    }
    Block {
        sql: format!("with c as ({}) {body}", inner.sql),
        cols: out,
    }
}

/// A block read as a derived table, filtered and windowed outside.
fn derived_table(gen: &mut Gen) -> Block {
    let block = gen.block(None);
    let inner = maybe_limited(gen, block);
    let scope = scope_of("d", &inner);
    let mut items: Vec<String> = inner.cols.iter().map(|c| format!("d.{}", c.name)).collect();
    let mut cols = inner.cols.clone();
    let (window, ty) = gen.window(&scope.cols, None);
    items.push(format!("{window} as w"));
    cols.push(query::OutCol {
        name: "w".into(),
        ty,
        domain: schema::Domain::Free,
    });
    let mut sql = format!("select {} from ({}) d", items.join(", "), inner.sql);
    if gen.rng.chance(60) {
        sql = format!("{sql} where {}", gen.predicate(&scope, 1));
    }
    Block { sql, cols }
}

/// Sometimes `ORDER BY` every column `LIMIT n` inside a CTE or derived
/// table: a unique answer, since ties are whole equal rows.
fn maybe_limited(gen: &mut Gen, block: Block) -> Block {
    if gen.rng.chance(20) {
        limited(gen, block)
    } else {
        block
    }
}

/// `ORDER BY` every column `LIMIT n`, n below 30.
fn limited(gen: &mut Gen, block: Block) -> Block {
    let positions: Vec<String> = (1..=block.cols.len()).map(|p| p.to_string()).collect();
    Block {
        sql: format!(
            "{} order by {} limit {}",
            block.sql,
            positions.join(", "),
            gen.rng.range(1, 30)
        ),
        cols: block.cols,
    }
}

/// The final ORDER BY (by position), with LIMIT and OFFSET when it orders
/// by every column.
fn order_and_limit(gen: &mut Gen, block: Block) -> (String, Vec<usize>) {
    if !gen.rng.chance(60) {
        return (block.sql, Vec::new());
    }
    let mut columns: Vec<usize> = (0..block.cols.len()).collect();
    for i in (1..columns.len()).rev() {
        columns.swap(i, gen.rng.below(i + 1));
    }
    let limited = gen.rng.chance(50);
    if !limited {
        columns.truncate(gen.rng.range(1, columns.len() as i64) as usize);
    }
    let keys: Vec<String> = columns
        .iter()
        .map(|c| {
            let direction = gen
                .rng
                .pick(&["", " desc", " nulls first", " desc nulls last"]);
            format!("{}{direction}", c + 1)
        })
        .collect();
    let mut sql = format!("{} order by {}", block.sql, keys.join(", "));
    if limited {
        sql = format!("{sql} limit {}", gen.rng.range(1, 40));
        if gen.rng.chance(30) {
            sql = format!("{sql} offset {}", gen.rng.range(1, 10));
        }
    }
    (sql, columns)
}
