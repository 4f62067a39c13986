//! tone's integration tests: one binary, a module per topic.

mod common;

mod adaptive_layout;
mod cli;
mod cluster;
mod dataset;
mod deploy;
mod example_args;
mod executor_limits;
mod faults;
mod flight_sql;
mod fuzz_regressions;
mod ha;
mod join_order;
mod memory;
mod netns;
mod observability;
mod oracle_tpch;
mod roundtrip;
mod runtime_filters;
mod s3;
mod security;
mod shuffle;
mod speculation;
mod spillable_join;
mod spmd;
mod sql_beyond_tpch;
mod sql_generated;
mod sql_regressions;
mod sqlgen;
mod worker_disk;
mod worker_fencing;
