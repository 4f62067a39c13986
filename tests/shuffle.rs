//! The embedded runtime really runs the stage machinery: shuffles are cut,
//! written, spilled past the budget, and released after the job.

use tone::{Engine, EngineConfig};
use tone_engine::shuffle::ShuffleStore;

use crate::common::compare::same_rows;
use crate::common::{oracle_answer, oracle_context, tone_engine_with, tpch_data};

const GROUPED_SQL: &str = "select l_orderkey, sum(l_quantity) as quantity, count(*) as lines \
     from lineitem group by l_orderkey order by quantity desc, l_orderkey limit 50";

async fn engine_with_budget(partitions: usize, shuffle_memory_bytes_max: u64) -> Engine {
    let config = EngineConfig {
        partitions,
        shuffle_memory_bytes_max,
        ..EngineConfig::default()
    };
    tone_engine_with(config, tpch_data()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregate_is_split_at_the_hash_exchange() {
    let engine = engine_with_budget(4, u64::MAX).await;
    let plan = engine
        .physical_plan("select l_returnflag, count(*) from lineitem group by l_returnflag")
        .await
        .expect("plans");
    let dag = engine.stage_dag(plan).expect("splits");
    let first = &dag.stages[0];
    let writer = first.writer().expect("the first stage feeds another");
    assert_eq!(writer.output_partition_count(), 4);
    assert!(
        writer
            .shuffle_partitioning()
            .to_string()
            .starts_with("Hash"),
        "got {}",
        writer.shuffle_partitioning()
    );
    let rendered = tone::render_dag(&dag);
    assert!(rendered.contains("ShuffleReaderExec"), "{rendered}");
    assert!(
        rendered.contains("AggregateExec: mode=Partial"),
        "{rendered}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shuffle_spills_past_the_memory_budget_and_stays_correct() {
    // A budget of zero bytes: every shuffle segment must go to disk.
    let engine = engine_with_budget(3, 0).await;
    let oracle = oracle_context().await;
    let actual = engine.sql(GROUPED_SQL).await.expect("runs with spilling");
    let expected = oracle_answer(&oracle, GROUPED_SQL).await;
    same_rows(&expected, &actual).expect("same answer as DataFusion");
    let budget = engine.shuffle_store().budget();
    assert!(budget.spilled_bytes() > 0, "the shuffle never spilled");
    assert_eq!(budget.used_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn shuffle_memory_is_released_after_the_job() {
    let engine = engine_with_budget(2, u64::MAX).await;
    let actual = engine.sql(GROUPED_SQL).await.expect("runs");
    assert_eq!(
        actual.iter().map(|batch| batch.num_rows()).sum::<usize>(),
        50
    );
    let budget = engine.shuffle_store().budget();
    assert!(
        budget.reserved_bytes_total() > 0,
        "no shuffle data was written"
    );
    assert_eq!(
        budget.spilled_bytes(),
        0,
        "nothing should spill with an unlimited budget"
    );
    assert_eq!(budget.used_bytes(), 0, "shuffle data outlived its job");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_without_an_exchange_is_one_stage() {
    let engine = engine_with_budget(1, u64::MAX).await;
    let plan = engine
        .physical_plan("select r_name from region where r_regionkey > 1")
        .await
        .expect("plans");
    let dag = engine.stage_dag(plan).expect("splits");
    assert_eq!(dag.stages.len(), 1, "{}", tone::render_dag(&dag));
    assert!(dag.final_stage().writer().is_none());
    let rows = engine
        .sql("select r_name from region where r_regionkey > 1")
        .await
        .expect("runs");
    assert_eq!(rows.iter().map(|batch| batch.num_rows()).sum::<usize>(), 3);
}
