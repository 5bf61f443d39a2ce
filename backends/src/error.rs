//! Code generation errors.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// A valid graph that this backend cannot compile (yet).
    #[error("node '{node}' ({op}): not supported by the {backend} backend: {reason}")]
    Unsupported {
        node: String,
        op: String,
        backend: &'static str,
        reason: String,
    },
    /// The op's lowering does not handle these operands.
    #[error("{0}")]
    Lowering(String),
    #[error("{0}")]
    Ir(#[from] kiln_ir::IrError),
}

/// `Err(BackendError::Lowering(format!(...)))`: the lowering cannot handle this case; the
/// caller adds node and op.
#[macro_export]
macro_rules! cannot {
    ($($arg:tt)*) => { Err($crate::error::BackendError::Lowering(format!($($arg)*))) };
}
