//! Typed scalar expressions and predicates over a scope of columns, with
//! subqueries (scalar, correlated, IN, EXISTS) where the scope allows.

use super::rng::Rng;
use super::schema::{table, Domain, Table, Ty, EDGES, TABLES};

/// A column visible to an expression.
#[derive(Debug, Clone)]
pub struct Col {
    /// How to refer to it (`t1.l_orderkey`, `c0`).
    pub sql: String,
    pub ty: Ty,
    pub domain: Domain,
}

/// A table in a FROM clause, which subqueries may correlate with.
#[derive(Debug, Clone)]
pub struct Source {
    pub alias: String,
    pub table: &'static Table,
}

#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub cols: Vec<Col>,
    pub sources: Vec<Source>,
    /// Whether predicates and expressions may hold subqueries.
    pub subqueries: bool,
}

impl Scope {
    /// The columns of `table` under `alias`.
    pub fn of_table(alias: &str, table: &'static Table) -> Self {
        Self {
            cols: table
                .columns
                .iter()
                .map(|column| Col {
                    sql: format!("{alias}.{}", column.name),
                    ty: column.ty,
                    domain: column.domain,
                })
                .collect(),
            sources: vec![Source {
                alias: alias.to_string(),
                table,
            }],
            subqueries: false,
        }
    }

    fn of_type(&self, ty: Ty) -> Vec<&Col> {
        self.cols.iter().filter(|col| col.ty == ty).collect()
    }
}

/// The generator's state: the random source and fresh alias numbers.
pub struct Gen {
    pub rng: Rng,
    next_alias: usize,
}

const WORDS: &[&str] = &[
    "furious",
    "deposit",
    "carefully",
    "ironic",
    "pending",
    "quick",
];
const CMP: &[&str] = &["=", "<>", "<", "<=", ">", ">="];

impl Gen {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            next_alias: 0,
        }
    }

    pub fn alias(&mut self, prefix: &str) -> String {
        self.next_alias += 1;
        format!("{prefix}{}", self.next_alias)
    }

    pub fn literal(&mut self, ty: Ty, domain: Domain) -> String {
        match (ty, domain) {
            (Ty::Int, Domain::Ints(low, high)) => self.rng.range(low, high).to_string(),
            (Ty::Int, _) => self.rng.range(0, 100).to_string(),
            (Ty::Decimal, domain) => {
                let (low, high) = match domain {
                    Domain::Decimals(low, high) => (low, high),
                    _ => (0, 1000),
                };
                let whole = self.rng.range(low, high);
                let cents = self.rng.range(0, 99);
                let sign = if whole < 0 { "-" } else { "" };
                format!("{sign}{}.{cents:02}", whole.abs())
            }
            (Ty::Float, _) => format!("{}.5", self.rng.range(0, 1000)),
            (Ty::Date, _) => {
                let date = format!(
                    "date '{}-{:02}-{:02}'",
                    self.rng.range(1992, 1998),
                    self.rng.range(1, 12),
                    self.rng.range(1, 28)
                );
                if self.rng.chance(30) {
                    let unit = self.rng.pick(&["day", "month", "year"]);
                    format!("({date} + interval '{} {unit}')", self.rng.range(1, 40))
                } else {
                    date
                }
            }
            (Ty::Text, Domain::Words(words)) => format!("'{}'", self.rng.pick(words)),
            (Ty::Text, _) => format!("'{}'", self.rng.pick(WORDS)),
            (Ty::Bool, _) => self.rng.pick(&["true", "false"]).to_string(),
        }
    }

    /// A leaf: a column of `ty` when the scope has one, else a literal.
    fn leaf(&mut self, scope: &Scope, ty: Ty) -> String {
        let cols = scope.of_type(ty);
        if cols.is_empty() || self.rng.chance(15) {
            let domain = cols.first().map_or(Domain::Free, |col| col.domain);
            return self.literal(ty, domain);
        }
        self.rng.pick(&cols).sql.clone()
    }

    /// A scalar expression of type `ty`.
    pub fn expr(&mut self, scope: &Scope, ty: Ty, depth: u32) -> String {
        if depth == 0 || self.rng.chance(40) {
            return self.leaf(scope, ty);
        }
        let d = depth - 1;
        if scope.subqueries && self.rng.chance(8) {
            if let Some(sql) = self.scalar_subquery(scope, ty) {
                return sql;
            }
        }
        match self.rng.below(4) {
            0 => {
                let when = self.predicate(&no_subqueries(scope), d);
                let then = self.expr(scope, ty, d);
                if self.rng.chance(30) {
                    // No ELSE: NULL where the condition fails.
                    format!("case when {when} then {then} end")
                } else {
                    let otherwise = self.expr(scope, ty, d);
                    format!("case when {when} then {then} else {otherwise} end")
                }
            }
            1 => format!(
                "coalesce({}, {})",
                self.expr(scope, ty, d),
                self.expr(scope, ty, d)
            ),
            2 if ty != Ty::Bool => {
                let value = self.expr(scope, ty, d);
                let domain = self.domain_of(scope, ty);
                format!("nullif({value}, {})", self.literal(ty, domain))
            }
            _ => self.typed_function(scope, ty, d),
        }
    }

    fn domain_of(&mut self, scope: &Scope, ty: Ty) -> Domain {
        let cols = scope.of_type(ty);
        if cols.is_empty() {
            Domain::Free
        } else {
            self.rng.pick(&cols).domain
        }
    }

    fn typed_function(&mut self, scope: &Scope, ty: Ty, d: u32) -> String {
        let r = self.rng.below(6);
        match ty {
            Ty::Int => match r {
                0 => format!(
                    "({} + {})",
                    self.expr(scope, ty, d),
                    self.expr(scope, ty, d)
                ),
                1 => format!("({} - {})", self.expr(scope, ty, d), self.rng.range(0, 9)),
                2 => format!("({} % {})", self.expr(scope, ty, d), self.rng.range(2, 7)),
                3 => format!(
                    "cast(date_part('{}', {}) as bigint)",
                    self.rng.pick(&["year", "month", "day"]),
                    self.expr(scope, Ty::Date, d)
                ),
                4 => format!("cast(length({}) as bigint)", self.expr(scope, Ty::Text, d)),
                _ => format!("abs({})", self.expr(scope, ty, d)),
            },
            Ty::Decimal => match r {
                0 => format!(
                    "({} + {})",
                    self.expr(scope, ty, d),
                    self.expr(scope, ty, d)
                ),
                1 => format!(
                    "({} - {})",
                    self.expr(scope, ty, d),
                    self.expr(scope, ty, d)
                ),
                2 => format!("({} * {})", self.expr(scope, ty, d), self.rng.range(1, 3)),
                3 => format!("cast({} as decimal(15, 2))", self.expr(scope, Ty::Int, d)),
                4 => format!("(-{})", self.expr(scope, ty, d)),
                _ => format!("abs({})", self.expr(scope, ty, d)),
            },
            Ty::Float => format!("cast({} as double)", self.expr(scope, Ty::Int, d)),
            Ty::Text => match r {
                0 => format!("upper({})", self.expr(scope, ty, d)),
                1 => format!(
                    "substr({}, 1, {})",
                    self.expr(scope, ty, d),
                    self.rng.range(1, 4)
                ),
                2 => format!(
                    "concat({}, '-', {})",
                    self.expr(scope, ty, d),
                    self.expr(scope, ty, d)
                ),
                3 => format!("cast({} as varchar)", self.expr(scope, Ty::Int, d)),
                4 => format!("cast({} as varchar)", self.expr(scope, Ty::Date, d)),
                _ => format!("lower(trim({}))", self.expr(scope, ty, d)),
            },
            Ty::Date => {
                let unit = self.rng.pick(&["day", "month", "year"]);
                let sign = self.rng.pick(&["+", "-"]);
                format!(
                    "({} {sign} interval '{} {unit}')",
                    self.expr(scope, ty, d),
                    self.rng.range(1, 40)
                )
            }
            Ty::Bool => self.predicate(scope, d),
        }
    }

    /// A predicate; NULL-heavy on purpose (NULLIF, CASE without ELSE,
    /// NULL in IN lists, outer-joined columns).
    pub fn predicate(&mut self, scope: &Scope, depth: u32) -> String {
        if depth > 0 && self.rng.chance(30) {
            let d = depth - 1;
            return match self.rng.below(3) {
                0 => format!(
                    "({} and {})",
                    self.predicate(scope, d),
                    self.predicate(scope, d)
                ),
                1 => format!(
                    "({} or {})",
                    self.predicate(scope, d),
                    self.predicate(scope, d)
                ),
                _ => format!("(not {})", self.predicate(scope, d)),
            };
        }
        if scope.subqueries && depth > 0 && self.rng.chance(20) {
            if let Some(sql) = self.subquery_predicate(scope) {
                return sql;
            }
        }
        let Some(col) = self.pick_col(scope) else {
            return self.literal(Ty::Bool, Domain::Free);
        };
        let ty = col.ty;
        let d = depth.saturating_sub(1);
        let value = if self.rng.chance(70) {
            col.sql.clone()
        } else {
            self.expr(scope, ty, d)
        };
        match self.rng.below(8) {
            0 | 1 => {
                let op = self.rng.pick(CMP);
                let other = if self.rng.chance(60) {
                    self.literal(ty, col.domain)
                } else {
                    self.expr(scope, ty, d)
                };
                format!("{value} {op} {other}")
            }
            2 if ty != Ty::Text => {
                let (a, b) = (self.literal(ty, col.domain), self.literal(ty, col.domain));
                format!("{value} between least({a}, {b}) and greatest({a}, {b})")
            }
            3 => {
                let mut items: Vec<String> = (0..self.rng.range(1, 4))
                    .map(|_| self.literal(ty, col.domain))
                    .collect();
                if self.rng.chance(25) {
                    items.push("null".into());
                }
                let not = if self.rng.chance(40) { "not " } else { "" };
                format!("{value} {not}in ({})", items.join(", "))
            }
            4 if ty == Ty::Text => {
                let letters = ["a", "e", "i", "o", "u", "A", "R", "S", "#1", "ly"];
                let c = self.rng.pick(&letters);
                let pattern = self.rng.pick(&["%{}%", "{}%", "%{}"]).replace("{}", c);
                let not = if self.rng.chance(30) { "not " } else { "" };
                format!("{value} {not}like '{pattern}'")
            }
            5 => {
                let not = if self.rng.chance(50) { " not" } else { "" };
                format!("{} is{not} null", self.nullable(scope, ty, d))
            }
            6 => format!("{value} is distinct from {}", self.nullable(scope, ty, d)),
            _ => {
                let op = self.rng.pick(CMP);
                format!("{value} {op} {}", self.literal(ty, col.domain))
            }
        }
    }

    /// An expression that is NULL in some rows.
    fn nullable(&mut self, scope: &Scope, ty: Ty, depth: u32) -> String {
        let value = self.expr(scope, ty, depth);
        let domain = self.domain_of(scope, ty);
        match self.rng.below(3) {
            0 => format!("nullif({value}, {})", self.literal(ty, domain)),
            1 => {
                let when = self.predicate(&no_subqueries(scope), 0);
                format!("case when {when} then {value} end")
            }
            _ => value,
        }
    }

    fn pick_col(&mut self, scope: &Scope) -> Option<Col> {
        let cols: Vec<&Col> = scope.cols.iter().filter(|c| c.ty != Ty::Bool).collect();
        (!cols.is_empty()).then(|| (*self.rng.pick(&cols)).clone())
    }

    /// EXISTS, NOT EXISTS (correlated on a join key), IN or NOT IN a
    /// subquery, or a comparison with a scalar subquery.
    fn subquery_predicate(&mut self, scope: &Scope) -> Option<String> {
        match self.rng.below(4) {
            0 => {
                let (inner, alias, correlation) = self.correlated_table(scope)?;
                let mut filter = correlation;
                if self.rng.chance(60) {
                    let inner_scope = Scope::of_table(&alias, inner);
                    filter = format!("{filter} and {}", self.predicate(&inner_scope, 1));
                }
                let not = if self.rng.chance(40) { "not " } else { "" };
                Some(format!(
                    "{not}exists (select 1 from {} {alias} where {filter})",
                    inner.name
                ))
            }
            1 | 2 => {
                let col = self.pick_col(scope)?;
                if !matches!(col.ty, Ty::Int | Ty::Text | Ty::Date) {
                    return None;
                }
                let candidates: Vec<(&'static Table, &'static str)> = TABLES
                    .iter()
                    .flat_map(|t| t.columns.iter().map(move |c| (t, c)))
                    .filter(|(_, c)| c.ty == col.ty)
                    .map(|(t, c)| (t, c.name))
                    .collect();
                let (inner, column) = *self.rng.pick(&candidates);
                let alias = self.alias("s");
                let inner_scope = Scope::of_table(&alias, inner);
                let filter = self.predicate(&inner_scope, 1);
                let not = if self.rng.chance(40) { "not " } else { "" };
                Some(format!(
                    "{} {not}in (select {alias}.{column} from {} {alias} where {filter})",
                    col.sql, inner.name
                ))
            }
            _ => {
                let col = self.pick_col(scope)?;
                let sub = self.scalar_subquery(scope, col.ty)?;
                let op = self.rng.pick(CMP);
                Some(format!("{} {op} {sub}", col.sql))
            }
        }
    }

    /// A table joined to one of `scope`'s sources by a key: the table, its
    /// fresh alias and the correlation condition.
    fn correlated_table(&mut self, scope: &Scope) -> Option<(&'static Table, String, String)> {
        if scope.sources.is_empty() {
            return None;
        }
        let source = self.rng.pick(&scope.sources).clone();
        let edges: Vec<_> = EDGES
            .iter()
            .filter(|e| e.left == source.table.name || e.right == source.table.name)
            .collect();
        if edges.is_empty() {
            return None;
        }
        let edge = self.rng.pick(&edges);
        let (outer_cols, inner_name, inner_cols) = if edge.left == source.table.name {
            (edge.left_columns, edge.right, edge.right_columns)
        } else {
            (edge.right_columns, edge.left, edge.left_columns)
        };
        let alias = self.alias("s");
        let correlation = outer_cols
            .iter()
            .zip(inner_cols)
            .map(|(o, i)| format!("{alias}.{i} = {}.{o}", source.alias))
            .collect::<Vec<_>>()
            .join(" and ");
        Some((table(inner_name), alias, correlation))
    }

    /// A subquery giving one value of type `ty`: an aggregate over another
    /// table, correlated with the scope or not.
    fn scalar_subquery(&mut self, scope: &Scope, ty: Ty) -> Option<String> {
        let (inner, alias, filter) = if self.rng.chance(60) {
            self.correlated_table(scope)?
        } else {
            let inner = self.rng.pick(TABLES);
            let alias = self.alias("s");
            let filter = self.predicate(&Scope::of_table(&alias, inner), 1);
            (inner, alias, filter)
        };
        let inner_scope = Scope::of_table(&alias, inner);
        let aggregate = match ty {
            Ty::Int if self.rng.chance(50) => "count(*)".to_string(),
            Ty::Int | Ty::Decimal | Ty::Text | Ty::Date => {
                let cols = inner_scope.of_type(ty);
                if cols.is_empty() {
                    return None;
                }
                let col = self.rng.pick(&cols).sql.clone();
                let function = if ty == Ty::Decimal && self.rng.chance(40) {
                    "sum"
                } else {
                    self.rng.pick(&["min", "max"])
                };
                format!("{function}({col})")
            }
            Ty::Float | Ty::Bool => return None,
        };
        Some(format!(
            "(select {aggregate} from {} {alias} where {filter})",
            inner.name
        ))
    }
}

/// The same scope without subqueries (inside CASE conditions, where
/// DataFusion cannot decorrelate them).
pub fn no_subqueries(scope: &Scope) -> Scope {
    Scope {
        subqueries: false,
        ..scope.clone()
    }
}
