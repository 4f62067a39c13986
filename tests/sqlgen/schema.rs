//! The TPC-H schema as the generator sees it: column types, value domains
//! to draw literals from, primary keys, and the joins that stay small.

/// The SQL types the generator reasons about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ty {
    Int,
    Decimal,
    /// Only from `avg` of integers, `stddev` and casts; inexact.
    Float,
    Text,
    Date,
    Bool,
}

impl Ty {
    pub fn is_numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Decimal | Ty::Float)
    }
}

/// Where a column's values come from, for literals that hit real rows.
#[derive(Debug, Clone, Copy)]
pub enum Domain {
    /// Integers in `low..=high`.
    Ints(i64, i64),
    /// Decimals in `low..=high` (whole units).
    Decimals(i64, i64),
    /// Dates in the TPC-H range.
    Dates,
    /// One of a few known values.
    Words(&'static [&'static str]),
    /// Free text: matched with LIKE patterns.
    Free,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: Ty,
    pub domain: Domain,
}

#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    /// Columns that together identify a row.
    pub key: &'static [&'static str],
    /// Rows at scale 0.01.
    pub rows: u64,
}

/// An equi-join between two tables that keeps the row count bounded:
/// `left.columns = right.columns`; joining `right` onto rows of `left`
/// multiplies them by `fanout_right`, the other way by `fanout_left`.
#[derive(Debug)]
pub struct Edge {
    pub left: &'static str,
    pub left_columns: &'static [&'static str],
    pub right: &'static str,
    pub right_columns: &'static [&'static str],
    pub fanout_right: u64,
    pub fanout_left: u64,
}

const fn col(name: &'static str, ty: Ty, domain: Domain) -> Column {
    Column { name, ty, domain }
}

const FLAGS: &[&str] = &["A", "N", "R"];
const STATUS: &[&str] = &["F", "O", "P"];
const SHIPMODES: &[&str] = &["AIR", "FOB", "MAIL", "RAIL", "REG AIR", "SHIP", "TRUCK"];
const INSTRUCT: &[&str] = &[
    "COLLECT COD",
    "DELIVER IN PERSON",
    "NONE",
    "TAKE BACK RETURN",
];
const SEGMENTS: &[&str] = &[
    "AUTOMOBILE",
    "BUILDING",
    "FURNITURE",
    "HOUSEHOLD",
    "MACHINERY",
];
const PRIORITIES: &[&str] = &["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"];
const REGIONS: &[&str] = &["AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST"];
const NATIONS: &[&str] = &[
    "ALGERIA", "BRAZIL", "CANADA", "FRANCE", "GERMANY", "JAPAN", "PERU",
];
const BRANDS: &[&str] = &["Brand#11", "Brand#23", "Brand#34", "Brand#45", "Brand#52"];
const CONTAINERS: &[&str] = &["SM CASE", "MED BOX", "LG PACK", "JUMBO JAR", "WRAP BAG"];
const MFGRS: &[&str] = &["Manufacturer#1", "Manufacturer#3", "Manufacturer#5"];

use Domain::{Dates, Decimals, Free, Ints, Words};
use Ty::{Date, Decimal, Int, Text};

pub const TABLES: &[Table] = &[
    Table {
        name: "region",
        rows: 5,
        key: &["r_regionkey"],
        columns: &[
            col("r_regionkey", Int, Ints(0, 4)),
            col("r_name", Text, Words(REGIONS)),
            col("r_comment", Text, Free),
        ],
    },
    Table {
        name: "nation",
        rows: 25,
        key: &["n_nationkey"],
        columns: &[
            col("n_nationkey", Int, Ints(0, 24)),
            col("n_name", Text, Words(NATIONS)),
            col("n_regionkey", Int, Ints(0, 4)),
            col("n_comment", Text, Free),
        ],
    },
    Table {
        name: "supplier",
        rows: 100,
        key: &["s_suppkey"],
        columns: &[
            col("s_suppkey", Int, Ints(1, 100)),
            col("s_name", Text, Free),
            col("s_address", Text, Free),
            col("s_nationkey", Int, Ints(0, 24)),
            col("s_phone", Text, Free),
            col("s_acctbal", Decimal, Decimals(-999, 9999)),
            col("s_comment", Text, Free),
        ],
    },
    Table {
        name: "customer",
        rows: 1_500,
        key: &["c_custkey"],
        columns: &[
            col("c_custkey", Int, Ints(1, 1_500)),
            col("c_name", Text, Free),
            col("c_address", Text, Free),
            col("c_nationkey", Int, Ints(0, 24)),
            col("c_phone", Text, Free),
            col("c_acctbal", Decimal, Decimals(-999, 9999)),
            col("c_mktsegment", Text, Words(SEGMENTS)),
            col("c_comment", Text, Free),
        ],
    },
    Table {
        name: "part",
        rows: 2_000,
        key: &["p_partkey"],
        columns: &[
            col("p_partkey", Int, Ints(1, 2_000)),
            col("p_name", Text, Free),
            col("p_mfgr", Text, Words(MFGRS)),
            col("p_brand", Text, Words(BRANDS)),
            col("p_type", Text, Free),
            col("p_size", Int, Ints(1, 50)),
            col("p_container", Text, Words(CONTAINERS)),
            col("p_retailprice", Decimal, Decimals(900, 2_000)),
            col("p_comment", Text, Free),
        ],
    },
    Table {
        name: "partsupp",
        rows: 8_000,
        key: &["ps_partkey", "ps_suppkey"],
        columns: &[
            col("ps_partkey", Int, Ints(1, 2_000)),
            col("ps_suppkey", Int, Ints(1, 100)),
            col("ps_availqty", Int, Ints(1, 9_999)),
            col("ps_supplycost", Decimal, Decimals(1, 1_000)),
            col("ps_comment", Text, Free),
        ],
    },
    Table {
        name: "orders",
        rows: 15_000,
        key: &["o_orderkey"],
        columns: &[
            col("o_orderkey", Int, Ints(1, 60_000)),
            col("o_custkey", Int, Ints(1, 1_500)),
            col("o_orderstatus", Text, Words(STATUS)),
            col("o_totalprice", Decimal, Decimals(800, 500_000)),
            col("o_orderdate", Date, Dates),
            col("o_orderpriority", Text, Words(PRIORITIES)),
            col("o_clerk", Text, Free),
            col("o_shippriority", Int, Ints(0, 0)),
            col("o_comment", Text, Free),
        ],
    },
    Table {
        name: "lineitem",
        rows: 60_175,
        key: &["l_orderkey", "l_linenumber"],
        columns: &[
            col("l_orderkey", Int, Ints(1, 60_000)),
            col("l_partkey", Int, Ints(1, 2_000)),
            col("l_suppkey", Int, Ints(1, 100)),
            col("l_linenumber", Int, Ints(1, 7)),
            col("l_quantity", Decimal, Decimals(1, 50)),
            col("l_extendedprice", Decimal, Decimals(900, 100_000)),
            col("l_discount", Decimal, Decimals(0, 0)),
            col("l_tax", Decimal, Decimals(0, 0)),
            col("l_returnflag", Text, Words(FLAGS)),
            col("l_linestatus", Text, Words(&["F", "O"])),
            col("l_shipdate", Date, Dates),
            col("l_commitdate", Date, Dates),
            col("l_receiptdate", Date, Dates),
            col("l_shipinstruct", Text, Words(INSTRUCT)),
            col("l_shipmode", Text, Words(SHIPMODES)),
            col("l_comment", Text, Free),
        ],
    },
];

const fn edge(
    left: &'static str,
    left_columns: &'static [&'static str],
    right: &'static str,
    right_columns: &'static [&'static str],
    fanout_right: u64,
    fanout_left: u64,
) -> Edge {
    Edge {
        left,
        left_columns,
        right,
        right_columns,
        fanout_right,
        fanout_left,
    }
}

/// Foreign keys (fan-out 1 towards the key's table), a few many-to-many
/// joins on nation keys, and self-joins.
pub const EDGES: &[Edge] = &[
    edge("lineitem", &["l_orderkey"], "orders", &["o_orderkey"], 1, 4),
    edge("lineitem", &["l_partkey"], "part", &["p_partkey"], 1, 30),
    edge(
        "lineitem",
        &["l_suppkey"],
        "supplier",
        &["s_suppkey"],
        1,
        600,
    ),
    edge(
        "lineitem",
        &["l_partkey", "l_suppkey"],
        "partsupp",
        &["ps_partkey", "ps_suppkey"],
        1,
        8,
    ),
    edge("orders", &["o_custkey"], "customer", &["c_custkey"], 1, 10),
    edge(
        "customer",
        &["c_nationkey"],
        "nation",
        &["n_nationkey"],
        1,
        60,
    ),
    edge(
        "supplier",
        &["s_nationkey"],
        "nation",
        &["n_nationkey"],
        1,
        4,
    ),
    edge("nation", &["n_regionkey"], "region", &["r_regionkey"], 1, 5),
    edge("partsupp", &["ps_partkey"], "part", &["p_partkey"], 1, 4),
    edge(
        "partsupp",
        &["ps_suppkey"],
        "supplier",
        &["s_suppkey"],
        1,
        80,
    ),
    edge(
        "customer",
        &["c_nationkey"],
        "supplier",
        &["s_nationkey"],
        4,
        60,
    ),
    edge("nation", &["n_regionkey"], "nation", &["n_regionkey"], 5, 5),
    edge("orders", &["o_custkey"], "orders", &["o_custkey"], 15, 15),
    edge(
        "lineitem",
        &["l_orderkey"],
        "lineitem",
        &["l_orderkey"],
        4,
        4,
    ),
    edge("part", &["p_partkey"], "part", &["p_partkey"], 1, 1),
    edge("customer", &["c_custkey"], "customer", &["c_custkey"], 1, 1),
];

pub fn table(name: &str) -> &'static Table {
    TABLES
        .iter()
        .find(|table| table.name == name)
        .unwrap_or_else(|| panic!("no table {name}"))
}
