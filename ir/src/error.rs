//! Errors raised by the IR: graph construction, shape inference, verification and evaluation.

use crate::dtype::DType;

/// Why an op rejected its inputs or attributes. Op files raise these without knowing which node
/// they belong to; [`IrError::Node`] adds that context.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    Invalid(String),
    #[error("not supported: {0}")]
    Unsupported(String),
}

/// Shorthand for `Err(OpError::Invalid(format!(...)))`.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => { Err($crate::error::OpError::Invalid(format!($($arg)*))) };
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IrError {
    #[error("node '{node}' ({op}): {source}")]
    Node {
        node: String,
        op: String,
        #[source]
        source: OpError,
    },
    #[error(
        "tensor {dtype}{shape:?} is too large (limit is {} bytes)",
        crate::tensor::MAX_TENSOR_BYTES
    )]
    TooLarge { shape: Vec<usize>, dtype: DType },
    #[error("tensor data has {len} elements but shape {shape:?} needs a different count")]
    DataLength { shape: Vec<usize>, len: usize },
    #[error("graph has a cycle through node '{node}'")]
    Cycle { node: String },
    #[error("input {index} given as {got}, but graph input '{name}' is {expected}")]
    InputMismatch {
        index: usize,
        name: String,
        expected: String,
        got: String,
    },
    #[error("graph has {expected} inputs but {got} were given")]
    InputCount { expected: usize, got: usize },
    #[error("cannot remove node '{node}' ({op}): its result '{value}' is still read by {reader}")]
    StillRead {
        node: String,
        op: String,
        value: String,
        reader: String,
    },
    #[error("verifier found {} problem(s):\n{}", .0.len(), .0.join("\n"))]
    Verify(Vec<String>),
}
