//! One module per subcommand. Each `run` returns the process exit code: 0 success,
//! 1 the check found problems; errors (bad input) propagate and exit with 2.

pub mod bench;
pub mod bridge;
pub mod card;
pub mod data;
pub mod demo;
pub mod engine_args;
pub mod eval;
#[cfg(feature = "train")]
pub mod export;
pub mod label;
pub mod metrics;
pub mod predict;
pub mod record;
pub mod run;
pub mod run_metrics;
pub mod serve;
pub mod track;
#[cfg(feature = "train")]
pub mod train;
