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
    #[error("node '{node}' ({op}): input '{input}' must be a compile-time constant (kiln compiles for static shapes); {}", const_input_hint(.input, .sources))]
    NeedsConstant {
        node: String,
        op: String,
        input: String,
        /// The graph inputs the value is computed from (the input itself when it is one): what
        /// `--const-input` must bind. Empty when no graph input explains it.
        sources: Vec<String>,
    },
    #[error("input '{name}': {reason}")]
    Input { name: String, reason: String },
    #[error("tensor '{name}': {reason}")]
    Tensor { name: String, reason: String },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<FrontendError>),
}

/// How to make a value a compile-time constant: bake the graph inputs it comes from into the
/// model (`ImportOptions::const_inputs`, the CLI's `--const-input`).
fn const_input_hint(input: &str, sources: &[String]) -> String {
    match sources {
        [one] if one == input => {
            format!("bake it into the model with --const-input {input}=FILE.npy")
        }
        [one] => format!(
            "it is computed from graph input '{one}': bake that into the model with --const-input {one}=FILE.npy"
        ),
        [] => "bake the graph inputs it is computed from into the model with --const-input NAME=FILE.npy".to_string(),
        many => format!(
            "it is computed from graph inputs {}: bake them into the model with --const-input NAME=FILE.npy for each",
            many.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
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
