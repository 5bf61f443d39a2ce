//! A quick look at what a model uses, without importing it: op types and element types.
//! Tools use it to decide whether a model is within kiln's op set before trying to compile it.

use std::collections::BTreeSet;

use onnx_protobuf::{type_proto, ModelProto};
use protobuf::Message;

use crate::error::FrontendError;
use crate::functions::inline_functions;
use crate::tensor::dtype_from_onnx;

/// What a model uses.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    /// Op types (default domain) or `domain::op` (others), after inlining local functions.
    pub ops: BTreeSet<String>,
    /// Element types of graph inputs, outputs and initializers that kiln does not support.
    pub unsupported_dtypes: BTreeSet<String>,
    /// Names of the graph inputs that are not initializers, in order.
    pub inputs: Vec<String>,
    /// True when a graph input or output is not a plain tensor.
    pub non_tensor_io: bool,
}

impl Survey {
    /// Op types kiln does not import.
    pub fn unsupported_ops(&self) -> Vec<&str> {
        self.ops
            .iter()
            .map(String::as_str)
            .filter(|op| !crate::ops::is_supported(op))
            .collect()
    }

    /// True when every op and element type is in kiln's op set.
    pub fn is_supported(&self) -> bool {
        self.unsupported_ops().is_empty()
            && self.unsupported_dtypes.is_empty()
            && !self.non_tensor_io
    }
}

pub fn survey(bytes: &[u8]) -> Result<Survey, FrontendError> {
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| FrontendError::Parse(format!("protobuf decoding failed: {e}")))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| FrontendError::Parse("the model has no graph".into()))?;
    let mut s = Survey::default();
    for n in inline_functions(&graph.node, &model.functions)? {
        s.ops.insert(match n.domain.as_str() {
            "" | "ai.onnx" => n.op_type.clone(),
            d => format!("{d}::{}", n.op_type),
        });
    }
    let mut note = |code: i32| {
        if let Err(name) = dtype_from_onnx(code) {
            s.unsupported_dtypes.insert(name.to_string());
        }
    };
    for t in &graph.initializer {
        note(t.data_type);
    }
    let initializers: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    for vi in graph.input.iter().chain(&graph.output) {
        match vi.type_.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => note(t.elem_type),
            _ => s.non_tensor_io = true,
        }
    }
    for n in &graph.node {
        for a in &n.attribute {
            if a.t.is_some() {
                note(a.t.data_type);
            }
            if a.name == "to" && n.op_type == "Cast" {
                note(a.i as i32);
            }
        }
    }
    s.inputs = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .map(|i| i.name.clone())
        .collect();
    Ok(s)
}
