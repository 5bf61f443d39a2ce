//! IR graph -> ONNX `ModelProto` (`kiln compile --emit onnx`): the optimized float graph
//! written back as a model onnxruntime and the usual viewers read.
//!
//! Writes opset 17 (the first with LayerNormalization) and IR version 8. Every constant becomes
//! an initializer (raw little-endian data); attributes kiln resolved at import go back as the
//! constant inputs ONNX expects (Reshape's shape, Slice's starts/ends/axes/steps, Pad's pads,
//! Clip's bounds, ...). What the IR fuses is written as ONNX ops again: a fused activation as
//! its own node after the Conv/Gemm/MatMul/Add; MatMul operand permutations as Transposes;
//! Gelu (opset 20) as its erf or tanh formula; an opset-11 style Softmax (`coerce_2d`) as
//! Flatten -> Softmax -> Reshape. kiln's integer ops (QConv, QMatMul, Requantize, ...) have no
//! ONNX form and are refused, as are the few attributes opset 17 cannot express (dilated
//! AveragePool, antialiased Resize, blocked quantization, CRD SpaceToDepth).
//!
//! The files: `writer.rs` holds the graph under construction (unique names, nodes,
//! initializers); `proto.rs` the protobuf messages built from kiln values (dtypes,
//! initializers, value infos, attributes); `nodes.rs` maps each IR node to its ONNX nodes;
//! `const_inputs.rs` writes the ops whose IR attributes ONNX takes as constant inputs (Reshape,
//! Slice, Pad, Resize, Range, ...); `expansions.rs` writes what opset 17 spells as several
//! nodes (fused activations, MatMul operand permutations, Gelu, opset-11 Softmax).

mod const_inputs;
mod expansions;
mod nodes;
mod proto;
mod writer;

use kiln_ir::{Graph, ValueDef};
use onnx_protobuf::{GraphProto, ModelProto, OperatorSetIdProto};
use protobuf::Message;

pub use proto::dtype_to_onnx;
use proto::value_info;
use writer::Writer;

/// The default-domain opset the exporter writes.
pub const EXPORT_OPSET: i64 = 17;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot export node '{node}' ({op}) to ONNX: {reason}")]
    Unsupported {
        node: String,
        op: String,
        reason: String,
    },
    #[error("cannot export the graph to ONNX: {0}")]
    Graph(String),
}

/// Writes `graph` (float ops, static shapes) as a serialized ONNX model.
pub fn export_model(graph: &Graph) -> Result<Vec<u8>, ExportError> {
    let model = export_proto(graph)?;
    model
        .write_to_bytes()
        .map_err(|e| ExportError::Graph(format!("protobuf encoding failed: {e}")))
}

/// Builds the `ModelProto` of `graph`.
pub fn export_proto(graph: &Graph) -> Result<ModelProto, ExportError> {
    let order = graph
        .topo_order()
        .map_err(|e| ExportError::Graph(e.to_string()))?;
    let mut w = Writer::new(graph);
    // Graph inputs and outputs keep their names (made unique in that order).
    for &v in graph.inputs() {
        w.name_value(v);
    }
    let mut output_names = Vec::new();
    let mut renamed_outputs = Vec::new();
    for &v in graph.outputs() {
        // An output listed twice, or that is a graph input or a constant, is written through
        // an Identity so that every output has its own name.
        let needs_copy = !matches!(graph.value(v).def, ValueDef::Node { .. })
            || output_names.iter().any(|(o, _)| *o == v);
        if needs_copy {
            let name = w.unique(&graph.value(v).name);
            renamed_outputs.push((v, name.clone()));
            output_names.push((v, name));
        } else {
            w.name_value(v);
            output_names.push((v, w.names[&v].clone()));
        }
    }
    for id in order {
        nodes::export_node(&mut w, id)?;
    }
    for (v, name) in renamed_outputs {
        let src = w.input(v);
        w.push(
            &format!("{name}/copy"),
            "Identity",
            vec![src],
            vec![name],
            vec![],
        );
    }
    let g = GraphProto {
        name: graph.name().to_string(),
        node: std::mem::take(&mut w.nodes),
        initializer: std::mem::take(&mut w.initializers),
        input: graph
            .inputs()
            .iter()
            .map(|&v| value_info(&w.names[&v], &graph.value(v).ty))
            .collect(),
        output: output_names
            .iter()
            .map(|(v, n)| value_info(n, &graph.value(*v).ty))
            .collect(),
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: EXPORT_OPSET,
            ..Default::default()
        }],
        producer_name: "kiln".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: protobuf::MessageField::some(g),
        ..Default::default()
    })
}

/// The `Unsupported` error for `node`.
fn unsupported(node: &kiln_ir::Node, reason: &str) -> ExportError {
    ExportError::Unsupported {
        node: node.name.clone(),
        op: node.op.name().to_string(),
        reason: reason.to_string(),
    }
}
