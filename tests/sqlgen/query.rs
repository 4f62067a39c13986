//! Whole queries: FROM clauses with multi-way joins, plain and aggregate
//! select blocks with windows, and the shapes around them (set operations,
//! CTEs used twice, derived tables, ORDER BY with LIMIT and OFFSET).

use super::expr::{no_subqueries, Col, Gen, Scope, Source};
use super::schema::{table, Domain, Ty, EDGES, TABLES};

/// A column of a query's output.
#[derive(Debug, Clone)]
pub struct OutCol {
    pub name: String,
    pub ty: Ty,
    pub domain: Domain,
}

/// A select block or query and its output columns.
#[derive(Debug, Clone)]
pub struct Block {
    pub sql: String,
    pub cols: Vec<OutCol>,
}

struct FromClause {
    sql: String,
    scope: Scope,
    /// Expressions that together identify a row.
    key: Vec<String>,
}

/// Joins stop growing past this many estimated rows.
const MAX_ROWS: u64 = 150_000;

impl Gen {
    fn from_clause(&mut self, max_joins: usize) -> FromClause {
        let start = self.rng.pick(TABLES);
        let alias = self.alias("t");
        let mut scope = Scope::of_table(&alias, start);
        let mut key: Vec<String> = start.key.iter().map(|k| format!("{alias}.{k}")).collect();
        let mut sql = format!("{} {alias}", start.name);
        let mut rows = start.rows;
        for _ in 0..self.rng.below(max_joins + 1) {
            let Some(join) = self.pick_join(&scope.sources, rows) else {
                break;
            };
            let (source, other, own_cols, other_cols, fanout) = join;
            let other = table(other);
            let alias = self.alias("t");
            let mut on: Vec<String> = own_cols
                .iter()
                .zip(other_cols)
                .map(|(own, theirs)| format!("{}.{own} = {alias}.{theirs}", source.alias))
                .collect();
            let other_scope = Scope::of_table(&alias, other);
            if self.rng.chance(25) {
                on.push(self.predicate(&other_scope, 1));
            }
            let kind = *self.rng.pick(&[
                "join",
                "join",
                "join",
                "left join",
                "left join",
                "right join",
                "full join",
                "left semi join",
                "left anti join",
            ]);
            sql = format!(
                "{sql} {kind} {} {alias} on {}",
                other.name,
                on.join(" and ")
            );
            if !kind.contains("semi") && !kind.contains("anti") {
                scope.cols.extend(other_scope.cols);
                scope.sources.extend(other_scope.sources);
                key.extend(other.key.iter().map(|k| format!("{alias}.{k}")));
                rows *= fanout;
            }
        }
        FromClause { sql, scope, key }
    }

    /// A key join from a table already in the FROM clause to another one
    /// that keeps the estimate under [`MAX_ROWS`].
    #[allow(clippy::type_complexity)]
    fn pick_join(
        &mut self,
        sources: &[Source],
        rows: u64,
    ) -> Option<(
        Source,
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        u64,
    )> {
        let mut options = Vec::new();
        for source in sources {
            for edge in EDGES {
                if edge.left == source.table.name && rows * edge.fanout_right <= MAX_ROWS {
                    options.push((
                        source.clone(),
                        edge.right,
                        edge.left_columns,
                        edge.right_columns,
                        edge.fanout_right,
                    ));
                }
                if edge.right == source.table.name && rows * edge.fanout_left <= MAX_ROWS {
                    options.push((
                        source.clone(),
                        edge.left,
                        edge.right_columns,
                        edge.left_columns,
                        edge.fanout_left,
                    ));
                }
            }
        }
        (!options.is_empty()).then(|| {
            let index = self.rng.below(options.len());
            options.swap_remove(index)
        })
    }

    /// A select block; with `types`, its output has exactly those types
    /// (the second side of a set operation).
    pub fn block(&mut self, types: Option<&[Ty]>) -> Block {
        let from = self.from_clause(3);
        if self.rng.chance(45) {
            self.aggregate_block(from, types)
        } else {
            self.plain_block(from, types)
        }
    }

    fn output_types(&mut self, scope: &Scope, types: Option<&[Ty]>) -> Vec<Ty> {
        match types {
            Some(types) => types.to_vec(),
            None => (0..self.rng.range(1, 4))
                .map(|_| self.rng.pick(&scope.cols).ty)
                .collect(),
        }
    }

    fn plain_block(&mut self, from: FromClause, types: Option<&[Ty]>) -> Block {
        let mut scope = from.scope;
        scope.subqueries = true;
        let mut items = Vec::new();
        let mut cols = Vec::new();
        for ty in self.output_types(&scope, types) {
            let sql = self.expr(&scope, ty, 2);
            cols.push(self.out_col(cols.len(), ty, &scope));
            items.push(sql);
        }
        if types.is_none() && self.rng.chance(40) {
            let plain = no_subqueries(&scope);
            for _ in 0..self.rng.range(1, 3) {
                let (sql, ty) = self.window(&plain.cols, Some(from.key.as_slice()));
                cols.push(self.out_col(cols.len(), ty, &scope));
                items.push(sql);
            }
        }
        let distinct = if self.rng.chance(15) { "distinct " } else { "" };
        let mut sql = format!(
            "select {distinct}{} from {}",
            aliased(&items, &cols),
            from.sql
        );
        if self.rng.chance(75) {
            sql = format!("{sql} where {}", self.predicate(&scope, 2));
        }
        Block { sql, cols }
    }

    fn out_col(&mut self, index: usize, ty: Ty, scope: &Scope) -> OutCol {
        let domain = scope
            .cols
            .iter()
            .find(|col| col.ty == ty)
            .map_or(Domain::Free, |col| col.domain);
        OutCol {
            name: format!("c{index}"),
            ty,
            domain,
        }
    }

    fn aggregate_block(&mut self, from: FromClause, types: Option<&[Ty]>) -> Block {
        let scope = no_subqueries(&from.scope);
        let groups: Vec<Col> = (0..self.rng.below(4))
            .map(|_| self.group_expr(&scope))
            .collect();
        let (grouping, key) = self.grouping(&groups);
        let mut items = Vec::new();
        let mut cols = Vec::new();
        let mut aggregates = Vec::new();
        let wanted = match types {
            Some(types) => types.to_vec(),
            None => {
                let mut wanted: Vec<Ty> = groups.iter().map(|g| g.ty).collect();
                wanted.extend((0..self.rng.range(1, 3)).map(|_| Ty::Int));
                wanted
            }
        };
        let mut unused_groups = groups.clone();
        for (index, ty) in wanted.iter().enumerate() {
            let group_at = unused_groups.iter().position(|g| g.ty == *ty);
            let sql = match group_at {
                Some(at) if types.is_some() || index < groups.len() => unused_groups.remove(at).sql,
                _ => {
                    let aggregate = self.aggregate(&scope, types.map(|_| *ty));
                    aggregates.push(aggregate.clone());
                    aggregate.sql
                }
            };
            let ty = ty_of(&sql, &groups, &aggregates, *ty);
            cols.push(self.out_col(cols.len(), ty, &scope));
            items.push(sql);
        }
        if types.is_none() && key.is_none() && self.rng.chance(50) {
            items.push(format!("grouping({})", groups[0].sql));
            cols.push(self.out_col(cols.len(), Ty::Int, &scope));
        }
        if types.is_none() && self.rng.chance(40) {
            let mut over: Vec<Col> = groups.clone();
            over.extend(aggregates.iter().cloned());
            for _ in 0..self.rng.range(1, 3) {
                let (sql, ty) = self.window(&over, key.as_deref());
                cols.push(self.out_col(cols.len(), ty, &scope));
                items.push(sql);
            }
        }
        let mut sql = format!("select {} from {}", aliased(&items, &cols), from.sql);
        if self.rng.chance(60) {
            let mut with_subqueries = from.scope.clone();
            with_subqueries.subqueries = true;
            sql = format!("{sql} where {}", self.predicate(&with_subqueries, 2));
        }
        if !groups.is_empty() {
            sql = format!("{sql} group by {grouping}");
        }
        if self.rng.chance(30) {
            let aggregate = self.aggregate(&scope, None);
            let op = self.rng.pick(&[">", "<", ">=", "<>"]);
            let bound = match aggregate.ty {
                Ty::Int => self.rng.range(0, 5).to_string(),
                ty => self.literal(ty, aggregate.domain),
            };
            sql = format!("{sql} having {} {op} {bound}", aggregate.sql);
        }
        Block { sql, cols }
    }

    fn group_expr(&mut self, scope: &Scope) -> Col {
        let col = self.rng.pick(&scope.cols).clone();
        if self.rng.chance(70) || col.ty == Ty::Decimal {
            return col;
        }
        let ty = *self.rng.pick(&[Ty::Int, Ty::Text]);
        let sql = self.expr(scope, ty, 1);
        // A group key without a column is a constant, which DataFusion 55
        // then drops from sorts, though ROLLUP and grouping sets make it
        // NULL in some rows (apache/datafusion#24421, fixed after 55).
        if !scope.cols.iter().any(|col| sql.contains(&col.sql)) {
            return col;
        }
        Col {
            sql,
            ty,
            domain: Domain::Free,
        }
    }

    /// The GROUP BY clause, and the group key when it identifies an output
    /// row (plain GROUP BY; grouping sets repeat NULL keys).
    fn grouping(&mut self, groups: &[Col]) -> (String, Option<Vec<String>>) {
        let list = groups.iter().map(|g| g.sql.clone()).collect::<Vec<_>>();
        if groups.is_empty() {
            return (String::new(), Some(Vec::new()));
        }
        let joined = list.join(", ");
        match self.rng.below(7) {
            0 => (format!("rollup({joined})"), None),
            1 => (format!("cube({joined})"), None),
            2 => {
                let first = &list[0];
                let sets = if list.len() > 1 {
                    format!("({first}), ({joined}), ()")
                } else {
                    format!("({first}), ()")
                };
                (format!("grouping sets ({sets})"), None)
            }
            _ => (joined, Some(list)),
        }
    }

    /// An aggregate call; with `ty`, one of that type.
    fn aggregate(&mut self, scope: &Scope, ty: Option<Ty>) -> Col {
        let numeric: Vec<&Col> = scope.cols.iter().filter(|c| c.ty.is_numeric()).collect();
        let pick_ty = |gen: &mut Gen, ty: Ty| -> Option<Col> {
            let cols: Vec<&Col> = scope.cols.iter().filter(|c| c.ty == ty).collect();
            (!cols.is_empty()).then(|| (*gen.rng.pick(&cols)).clone())
        };
        let call = |sql: String, ty: Ty, domain: Domain| Col { sql, ty, domain };
        match ty {
            Some(Ty::Int) | None if self.rng.chance(35) || numeric.is_empty() => {
                match self.rng.below(3) {
                    0 => call("count(*)".into(), Ty::Int, Domain::Ints(0, 10)),
                    1 => {
                        let col = self.rng.pick(&scope.cols).sql.clone();
                        call(
                            format!("count(distinct {col})"),
                            Ty::Int,
                            Domain::Ints(0, 10),
                        )
                    }
                    _ => {
                        let value = self.expr(scope, Ty::Int, 1);
                        call(format!("count({value})"), Ty::Int, Domain::Ints(0, 10))
                    }
                }
            }
            None => {
                let col = (*self.rng.pick(&numeric)).clone();
                let function = *self.rng.pick(&["sum", "avg", "min", "max", "median"]);
                let ty = match (function, col.ty) {
                    ("avg", Ty::Int) => Ty::Float,
                    (_, ty) => ty,
                };
                let value = if self.rng.chance(25) {
                    let when = self.predicate(scope, 0);
                    format!("case when {when} then {} end", col.sql)
                } else {
                    col.sql.clone()
                };
                call(format!("{function}({value})"), ty, col.domain)
            }
            Some(Ty::Float) => match pick_ty(self, Ty::Int) {
                Some(col) => call(format!("avg({})", col.sql), Ty::Float, col.domain),
                None => call("cast(count(*) as double)".into(), Ty::Float, Domain::Free),
            },
            Some(ty) => match pick_ty(self, ty) {
                Some(col) => {
                    let function = if ty.is_numeric() && self.rng.chance(50) {
                        "sum"
                    } else {
                        self.rng.pick(&["min", "max"])
                    };
                    call(format!("{function}({})", col.sql), ty, col.domain)
                }
                None => {
                    let value = self.expr(scope, ty, 1);
                    call(format!("max({value})"), ty, Domain::Free)
                }
            },
        }
    }

    /// A window function call over `cols` and its type. Functions whose
    /// result depends on the order among ties (row_number, lag, ROWS
    /// frames …) are only used when `key` identifies rows: the window
    /// order then ends with it, so the answer is unique.
    pub fn window(&mut self, cols: &[Col], key: Option<&[String]>) -> (String, Ty) {
        let partition: Vec<String> = (0..self.rng.below(4))
            .map(|_| self.rng.pick(cols).sql.clone())
            .collect();
        let mut order: Vec<String> = (0..self.rng.below(3))
            .map(|_| {
                let direction =
                    self.rng
                        .pick(&["", " desc", " asc nulls first", " desc nulls last"]);
                format!("{}{direction}", self.rng.pick(cols).sql)
            })
            .collect();
        let order_sensitive = key.is_some() && self.rng.chance(50);
        let arg = self.rng.pick(cols).clone();
        let numeric: Vec<&Col> = cols.iter().filter(|c| c.ty.is_numeric()).collect();
        let (call, ty, frame) = if order_sensitive {
            let (call, ty) = match self.rng.below(6) {
                0 => ("row_number()".to_string(), Ty::Int),
                1 => (format!("ntile({})", self.rng.range(2, 4)), Ty::Int),
                2 => (
                    format!("lag({}, {})", arg.sql, self.rng.range(1, 2)),
                    arg.ty,
                ),
                3 => (format!("lead({})", arg.sql), arg.ty),
                4 => (format!("first_value({})", arg.sql), arg.ty),
                _ => (format!("nth_value({}, 2)", arg.sql), arg.ty),
            };
            let frame = if self.rng.chance(30) {
                format!(
                    " rows between {} preceding and current row",
                    self.rng.range(1, 3)
                )
            } else {
                String::new()
            };
            (call, ty, frame)
        } else {
            let (call, ty) = match self.rng.below(7) {
                0 => ("rank()".to_string(), Ty::Int),
                1 => ("dense_rank()".to_string(), Ty::Int),
                2 => ("percent_rank()".to_string(), Ty::Float),
                3 => ("count(*)".to_string(), Ty::Int),
                4 if !numeric.is_empty() => {
                    let col = self.rng.pick(&numeric);
                    (format!("sum({})", col.sql), col.ty)
                }
                5 => (format!("max({})", arg.sql), arg.ty),
                _ => (format!("min({})", arg.sql), arg.ty),
            };
            let frame = match self.rng.below(5) {
                0 if !order.is_empty() => " groups between 1 preceding and 1 following".to_string(),
                1 => " rows between unbounded preceding and unbounded following".to_string(),
                _ => String::new(),
            };
            (call, ty, frame)
        };
        if order_sensitive {
            order.extend(key.unwrap_or_default().iter().cloned());
        }
        let mut spec = Vec::new();
        if !partition.is_empty() {
            spec.push(format!("partition by {}", partition.join(", ")));
        }
        if !order.is_empty() {
            spec.push(format!("order by {}", order.join(", ")));
        }
        (format!("{call} over ({}{frame})", spec.join(" ")), ty)
    }
}

/// `item as cN` for each output column.
fn aliased(items: &[String], cols: &[OutCol]) -> String {
    items
        .iter()
        .zip(cols)
        .map(|(item, col)| format!("{item} as {}", col.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The type of a select item that is a group expression or an aggregate.
fn ty_of(sql: &str, groups: &[Col], aggregates: &[Col], wanted: Ty) -> Ty {
    groups
        .iter()
        .chain(aggregates)
        .find(|col| col.sql == sql)
        .map_or(wanted, |col| col.ty)
}
