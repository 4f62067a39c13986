//! Every stage of every TPC-H query survives serialization: the decoded
//! plan is the same plan, and it encodes to the same bytes again.

use std::sync::Arc;

use datafusion::physical_plan::displayable;
use tone_engine::codec::{decode_plan, encode_plan};

use crate::common::{tone_engine, tpch_queries};

#[tokio::test(flavor = "multi_thread")]
async fn every_tpch_stage_round_trips() {
    let engine = tone_engine(3).await;
    let task_context = engine.session().task_ctx();
    let mut stages_checked = 0;
    for (name, sql) in tpch_queries() {
        let plan = engine.physical_plan(&sql).await.expect("plans");
        // Scalar subqueries run first (q11, q15, q22); their values travel
        // as literals.
        let plan = engine.prepare_plan(plan).await.expect("subqueries run");
        let dag = engine.stage_dag(plan).expect("splits");
        assert!(dag.stages.len() > 1, "{name} should have exchanges");
        for stage in &dag.stages {
            let bytes = encode_plan(stage.plan.clone()).expect("encodes");
            let decoded = decode_plan(&bytes, &task_context).expect("decodes");
            let before = displayable(stage.plan.as_ref()).indent(true).to_string();
            let after = displayable(decoded.as_ref()).indent(true).to_string();
            // A resolved scalar subquery comes back as its literal value.
            if !before.contains("scalar_subquery(") {
                assert_eq!(before, after, "{name} stage {} changed", stage.id);
            }
            let again = encode_plan(Arc::clone(&decoded)).expect("re-encodes");
            assert!(
                bytes == again,
                "{name} stage {} re-encodes to other bytes",
                stage.id
            );
            let twice = decode_plan(&again, &task_context).expect("decodes again");
            assert_eq!(after, displayable(twice.as_ref()).indent(true).to_string());
            stages_checked += 1;
        }
    }
    assert!(stages_checked >= 22 * 2);
}
