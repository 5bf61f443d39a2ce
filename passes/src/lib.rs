//! kiln's graph passes and the static memory planner. Passes rewrite the IR graph; they never
//! emit code. [`optimize`] runs the passes of an `-O` level (see `pipeline.rs`).

pub mod const_fold;
pub mod dead_code;
pub mod explicit_pad;
pub mod fold_batchnorm;
pub mod fold_pad;
pub mod fuse_activation;
pub mod fuse_gelu;
pub mod fuse_layernorm;
pub mod matmul_add;
pub mod memory_plan;
pub mod pipeline;
pub mod prune;
pub mod quant;
pub mod remove_identity;
pub mod summary;
pub mod transpose;
mod util;

pub use explicit_pad::explicit_pad;
pub use memory_plan::{plan_memory, MemoryPlan, Storage};
pub use pipeline::{
    optimize, pass_names, OptLevel, Pass, PassError, PassOptions, PassReport, PassRun,
};
pub use summary::{summarize, GraphSummary};
