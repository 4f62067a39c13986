//! Text rendering of a stage DAG for `tone explain`.

use std::fmt::Write;

use datafusion::physical_plan::displayable;

use super::StageDag;
use crate::shuffle::describe_partitioning;

/// Lists every stage: its tasks, the exchanges in and out, its operators.
pub fn render_dag(dag: &StageDag) -> String {
    let mut out = String::new();
    let final_id = dag.final_stage().id;
    // Writing into a String cannot fail.
    let _ = writeln!(out, "Job {}: {} stage(s)", dag.job_id, dag.stages.len());
    for stage in &dag.stages {
        let inputs = if stage.inputs.is_empty() {
            "none (reads sources)".to_string()
        } else {
            stage
                .inputs
                .iter()
                .map(|id| format!("stage {id}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let output = match stage.writer() {
            Some(writer) => format!(
                "shuffle {} → {}",
                describe_partitioning(writer.shuffle_partitioning()),
                dag.consumers(stage.id)
                    .iter()
                    .map(|id| format!("stage {id}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None if stage.id == final_id => "result".to_string(),
            None => "nothing".to_string(),
        };
        let _ = writeln!(
            out,
            "\nStage {} — {} partition(s)\n  input:  {inputs}\n  output: {output}\n  operators:",
            stage.id,
            stage.partitions()
        );
        let plan = displayable(stage.plan.as_ref()).indent(false).to_string();
        for line in plan.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}
