//! kiln's code generators. Graph nodes lower once to the loop-level kernel IR (`kernel`,
//! `lower/`); emitters translate kernels to C99 (`c/`). Backends never change the graph.

pub mod c;
pub mod cranelift;
pub mod error;
pub mod host;
pub mod kernel;
pub mod lower;
pub mod program;

pub use error::BackendError;
