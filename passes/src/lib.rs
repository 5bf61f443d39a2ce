//! kiln's graph passes and the static memory planner. Passes rewrite the IR graph; they never
//! emit code.

pub mod memory_plan;

pub use memory_plan::{plan_memory, MemoryPlan, Storage};
