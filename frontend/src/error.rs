//! Import errors. Every error about a node names the node and its ONNX op.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrontendError {
    #[error("not a valid ONNX model: {0}")]
    Parse(String),
    #[error("node '{node}' ({op}): not supported: {reason}")]
    Unsupported {
        node: String,
        op: String,
        reason: String,
    },
    #[error("node '{node}' ({op}): {reason}")]
    Invalid {
        node: String,
        op: String,
        reason: String,
    },
    #[error("node '{node}' ({op}): input '{input}' must be a compile-time constant (kiln compiles for static shapes)")]
    NeedsConstant {
        node: String,
        op: String,
        input: String,
    },
    #[error("input '{name}': {reason}")]
    Input { name: String, reason: String },
    #[error("tensor '{name}': {reason}")]
    Tensor { name: String, reason: String },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<FrontendError>),
}

impl FrontendError {
    /// The individual errors (one for a single error).
    pub fn flatten(&self) -> Vec<&FrontendError> {
        match self {
            FrontendError::Many(v) => v.iter().flat_map(|e| e.flatten()).collect(),
            e => vec![e],
        }
    }

    /// True when every error is about something kiln does not support (as opposed to a model
    /// that is invalid or needs more information).
    pub fn is_unsupported(&self) -> bool {
        self.flatten()
            .iter()
            .all(|e| matches!(e, FrontendError::Unsupported { .. }))
    }
}
