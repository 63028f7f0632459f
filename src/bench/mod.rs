//! `wgtrain bench`: the same config trained on each engine asked for, a few warm-up epochs and
//! several measured ones, reported as medians with the range, samples/s and GFLOP/s from a
//! stated FLOP count. Only training steps are timed: the validation split is cut to one row.

mod peak;
mod plan;
mod rows;
mod text;

pub use peak::{FmaPeak, GemmPeak, cpu_fma_peak, cpu_gemm_peak, gemm_operand};
pub use plan::{BenchObserver, BenchPlan, GEMM_PEAK_RUNS, GEMM_PEAK_SIZES, run_bench};
pub use rows::*;
pub use text::{BenchText, profile_table};
