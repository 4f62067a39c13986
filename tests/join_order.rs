//! Join reordering: a query written in a bad join order never makes (or
//! shuffles) its huge intermediate result, every reordered query gives
//! plain DataFusion's answers with reordering on and off, and `--aqe off`
//! keeps the written order embedded and on a cluster.

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;
use tone::{Engine, EngineConfig};
use tone_engine::adaptive::Adaptive;

use crate::cluster::{explain_analyzed, tone_ok, LocalCluster};
use crate::common::compare::same_answer;
use crate::common::{oracle_answer, oracle_context, tone_engine_with, tpch_data, tpch_queries};

/// Joins lineitem to partsupp first: on `l_partkey` alone each line item
/// meets all four of its part's suppliers, 4 × |lineitem| rows, before
/// the filters on orders and customer leave a few hundred.
const BAD_ORDER: &str = "SELECT count(*) AS n, sum(l_extendedprice) AS revenue \
    FROM lineitem \
    JOIN partsupp ON l_partkey = ps_partkey \
    JOIN orders ON l_orderkey = o_orderkey \
    JOIN customer ON o_custkey = c_custkey \
    WHERE c_mktsegment = 'BUILDING' AND o_orderdate = DATE '1995-03-15'";

/// Multi-way inner joins in bad and good orders, with what a reorder must
/// carry along: join filters across tables, a composite key, a self-join
/// through aliases, an expression key, a cross join, and outer joins
/// above and below the inner ones.
pub fn queries() -> Vec<(String, String)> {
    let texts = [
        ("bad order", BAD_ORDER),
        (
            "bad order, rows",
            "SELECT o_orderkey, l_linenumber, ps_suppkey, c_name FROM lineitem \
             JOIN partsupp ON l_partkey = ps_partkey AND ps_availqty > l_quantity * 300 \
             JOIN orders ON l_orderkey = o_orderkey \
             JOIN customer ON o_custkey = c_custkey \
             WHERE c_mktsegment = 'MACHINERY' AND o_orderdate = DATE '1996-06-17' \
             ORDER BY 1, 2, 3",
        ),
        (
            "composite key and a self-join",
            "SELECT n1.n_name, n2.n_name AS other, count(*) AS lines \
             FROM lineitem JOIN partsupp ON l_partkey = ps_partkey AND l_suppkey = ps_suppkey \
             JOIN supplier ON ps_suppkey = s_suppkey \
             JOIN nation n1 ON s_nationkey = n1.n_nationkey \
             JOIN orders ON l_orderkey = o_orderkey \
             JOIN customer ON o_custkey = c_custkey \
             JOIN nation n2 ON c_nationkey = n2.n_nationkey \
             WHERE n1.n_regionkey = n2.n_regionkey AND o_orderpriority = '1-URGENT' \
             GROUP BY 1, 2 ORDER BY 1, 2",
        ),
        (
            "expression key and a filter across three tables",
            "SELECT count(*), sum(o_totalprice) FROM orders, customer, nation, lineitem \
             WHERE o_custkey = c_custkey AND c_nationkey + 0 = n_nationkey \
             AND l_orderkey = o_orderkey AND l_shipdate > o_orderdate + INTERVAL '100' DAY \
             AND n_name = 'FRANCE' AND c_acctbal > l_extendedprice / 10",
        ),
        (
            "cross join kept",
            "SELECT r_name, count(*) FROM region, nation, supplier, partsupp \
             WHERE s_nationkey = n_nationkey AND ps_suppkey = s_suppkey AND ps_availqty < 50 \
             GROUP BY r_name ORDER BY r_name",
        ),
        (
            "outer joins around inner ones",
            "SELECT c_custkey, count(o_orderkey) AS orders, count(l_orderkey) AS lines \
             FROM customer LEFT JOIN ( \
               orders JOIN lineitem ON l_orderkey = o_orderkey AND l_linenumber = 1 \
               JOIN nation ON n_nationkey = o_custkey % 25 \
             ) ON c_custkey = o_custkey \
             WHERE c_custkey < 200 GROUP BY c_custkey ORDER BY c_custkey",
        ),
    ];
    texts
        .into_iter()
        .map(|(name, sql)| (format!("join order: {name}"), sql.to_string()))
        .collect()
}

async fn engine(adaptive: Adaptive) -> Engine {
    let config = EngineConfig {
        partitions: 2,
        adaptive,
        ..EngineConfig::default()
    };
    let engine = tone_engine_with(config, tpch_data()).await;
    engine
}

/// What running `sql` embedded showed: its answer, the rows every
/// non-final stage wrote to its shuffle, and the most rows one hash join
/// produced.
struct Ran {
    batches: Vec<arrow::array::RecordBatch>,
    shuffled: Vec<u64>,
    widest_join: u64,
}

async fn run_analyzed(engine: &Engine, sql: &str) -> Ran {
    let plan = engine.physical_plan(sql).await.expect("plans");
    let (dag, executed, stream) = engine.execute_analyzed(plan).await.expect("runs");
    let batches: Vec<_> = stream.try_collect().await.expect("streams");
    let mut shuffled = Vec::new();
    let mut widest_join = 0;
    for stage in &dag.stages {
        let ran = executed.get(stage.id).expect("the stage ran");
        if stage.id != dag.final_stage().id {
            shuffled.push(output_rows(&ran));
        }
        widest_join = widest_join.max(most_join_rows(&ran));
    }
    Ran {
        batches,
        shuffled,
        widest_join,
    }
}

fn output_rows(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let metrics = plan.metrics().expect("the operator keeps metrics");
    metrics.output_rows().unwrap_or(0) as u64
}

fn most_join_rows(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let own = if plan.name() == "HashJoinExec" {
        output_rows(plan)
    } else {
        0
    };
    plan.children()
        .into_iter()
        .map(most_join_rows)
        .fold(own, u64::max)
}

async fn count(engine: &Engine, sql: &str) -> u64 {
    let batches = engine.sql(sql).await.expect("counts");
    let column = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .expect("a count");
    column.value(0) as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_join_order_never_makes_its_huge_intermediate_result() {
    let reordering = engine(Adaptive::ON).await;
    let written = engine(Adaptive::OFF).await;
    let oracle = oracle_context().await;
    let expected = oracle_answer(&oracle, BAD_ORDER).await;
    let lineitem = count(&written, "SELECT count(*) FROM lineitem").await;
    let huge = count(
        &written,
        "SELECT count(*) FROM lineitem JOIN partsupp ON l_partkey = ps_partkey",
    )
    .await;
    assert_eq!(huge, 4 * lineitem, "each part has four suppliers");

    let on = run_analyzed(&reordering, BAD_ORDER).await;
    same_answer(BAD_ORDER, &expected, &on.batches).expect("reordered answer");
    let shuffled: u64 = on.shuffled.iter().sum();
    assert!(
        shuffled < lineitem / 100,
        "reordered, the stages shuffled {:?} rows (lineitem has {lineitem})",
        on.shuffled
    );
    assert!(
        on.widest_join < lineitem / 100,
        "reordered, a join made {} rows",
        on.widest_join
    );

    // The same query as written: the check above would catch it.
    let off = run_analyzed(&written, BAD_ORDER).await;
    same_answer(BAD_ORDER, &expected, &off.batches).expect("written-order answer");
    assert_eq!(
        off.widest_join, huge,
        "as written, lineitem ⋈ partsupp is made whole"
    );
    assert!(
        off.shuffled.iter().sum::<u64>() > 10 * shuffled,
        "as written, the stages shuffled {:?}",
        off.shuffled
    );

    // A statement turns it off for its session, and on again.
    let off_by_setting = engine(Adaptive::ON).await;
    off_by_setting
        .sql("SET tone.join_reorder = false")
        .await
        .expect("the setting exists");
    let set_off = run_analyzed(&off_by_setting, BAD_ORDER).await;
    assert_eq!(set_off.widest_join, huge);
    off_by_setting
        .sql("SET tone.join_reorder = true")
        .await
        .expect("sets");
    assert!(run_analyzed(&off_by_setting, BAD_ORDER).await.widest_join < lineitem / 100);
}

/// Every join-order query and every TPC-H query with three or more joined
/// tables gives DataFusion's answer with reordering on and off.
#[tokio::test(flavor = "multi_thread")]
async fn reordered_queries_match_datafusion_both_ways() {
    let oracle = oracle_context().await;
    let engines = [
        ("on", engine(Adaptive::ON).await),
        ("off", engine(Adaptive::OFF).await),
    ];
    let multi_way = [
        "q02", "q05", "q07", "q08", "q09", "q10", "q11", "q18", "q21",
    ];
    let tpch = tpch_queries()
        .into_iter()
        .filter(|(name, _)| multi_way.contains(&name.as_str()));
    let mut failures = Vec::new();
    for (name, sql) in queries().into_iter().chain(tpch) {
        let expected = oracle_answer(&oracle, &sql).await;
        for (setting, engine) in &engines {
            match engine.sql(&sql).await {
                Ok(actual) => {
                    if let Err(difference) = same_answer(&sql, &expected, &actual) {
                        failures.push(format!("{name} (reorder {setting}): {difference}"));
                    }
                }
                Err(error) => failures.push(format!("{name} (reorder {setting}): {error}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// EXPLAIN shows the order that runs.
#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_the_reordered_plan() {
    let reordering = engine(Adaptive::ON).await;
    let text = explain_text(&reordering, BAD_ORDER).await;
    let customer = text
        .find("TableScan: customer")
        .expect("customer is scanned");
    let partsupp = text
        .find("TableScan: partsupp")
        .expect("partsupp is scanned");
    assert!(
        customer < partsupp,
        "customer is joined deeper than partsupp:\n{text}"
    );
    let written = explain_text(&engine(Adaptive::OFF).await, BAD_ORDER).await;
    let customer = written.find("TableScan: customer").expect("customer");
    let partsupp = written.find("TableScan: partsupp").expect("partsupp");
    assert!(
        customer > partsupp,
        "as written, partsupp is joined first:\n{written}"
    );
}

async fn explain_text(engine: &Engine, sql: &str) -> String {
    let batches = engine
        .sql(&format!("EXPLAIN {sql}"))
        .await
        .expect("explains");
    arrow::util::pretty::pretty_format_batches(&batches)
        .expect("formats")
        .to_string()
}

/// On a cluster the coordinator plans: reordering is on by default and
/// `--aqe off` keeps the written order.
#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_reorders_unless_started_with_aqe_off() {
    let data = tpch_data().to_str().expect("utf-8 path").to_string();
    let lineitem = engine(Adaptive::OFF).await;
    let lineitem = count(&lineitem, "SELECT count(*) FROM lineitem").await;
    for (args, reordered) in [(&[][..], true), (&["--aqe", "off"][..], false)] {
        let cluster = LocalCluster::start_with(2, 1, &[], args).await;
        let text = explain_analyzed(&cluster.master, &data, &[], BAD_ORDER);
        let written = writer_rows(&text);
        let most = written.iter().copied().max().unwrap_or(0);
        assert!(!written.is_empty(), "no shuffle writers in:\n{text}");
        assert_eq!(
            most < lineitem / 100,
            reordered,
            "{args:?}: writers wrote {written:?}\n{text}"
        );
    }
}

/// The rows each shuffle writer of an `explain --analyze` wrote.
fn writer_rows(text: &str) -> Vec<u64> {
    text.lines()
        .filter(|line| line.trim_start().starts_with("ShuffleWriterExec"))
        .filter_map(|line| {
            let rows = line.split("[rows=").nth(1)?;
            rows.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn writer_rows_are_read_from_explain_lines() {
    let text = "Stage 0\n  ShuffleWriterExec: stage=0, partitioning=single  [rows=603, compute=0.000 ms]\n    FilterExec: x [rows=7]\n";
    assert_eq!(writer_rows(text), vec![603]);
}

/// `tone explain` names each join-order decision, with its estimates;
/// `--aqe off` makes none.
#[test]
fn tone_explain_names_the_join_order_decisions() {
    let data = tpch_data().to_str().expect("utf-8 path").to_string();
    let text = tone_ok(None, &["explain", "--data", &data, BAD_ORDER]);
    let line = text
        .lines()
        .find(|line| {
            line.starts_with(
                "Adaptive: join order of lineitem, partsupp, orders, customer: reordered",
            )
        })
        .unwrap_or_else(|| panic!("no decision in:\n{text}"));
    assert!(line.contains("estimated intermediate rows"), "{line}");
    let analyzed = tone_ok(None, &["explain", "--analyze", "--data", &data, BAD_ORDER]);
    assert!(analyzed.contains("Adaptive: join order of"), "{analyzed}");
    let off = tone_ok(
        None,
        &["explain", "--aqe", "off", "--data", &data, BAD_ORDER],
    );
    assert!(!off.contains("Adaptive:"), "{off}");
}
