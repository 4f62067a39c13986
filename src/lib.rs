//! The `tone` command line ([`cli`]): the coordinator and worker daemons,
//! SQL, job submission and benchmarks, on top of the `tone` job API
//! library; and the TPC-H query texts and generator ([`tpch`]) that
//! `tone gen` and `tone bench` use.

#![warn(missing_docs)]

pub mod cli;
pub mod tpch;
