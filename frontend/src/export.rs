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

use std::collections::{BTreeMap, BTreeSet};

use kiln_ir::op::{CoordTransform, DepthToSpaceMode, NearestMode, PadMode, ResizeMode};
use kiln_ir::{Activation, DType, Graph, Op, Tensor, TensorType, ValueDef, ValueId};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::Message;

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

/// The ONNX element type code of a kiln dtype.
pub fn dtype_to_onnx(dt: DType) -> i32 {
    match dt {
        DType::F32 => 1,
        DType::U8 => 2,
        DType::I8 => 3,
        DType::I16 => 5,
        DType::I32 => 6,
        DType::I64 => 7,
        DType::Bool => 9,
    }
}

fn tensor_proto(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: dtype_to_onnx(t.dtype()),
        raw_data: t.data().to_le_bytes(),
        ..Default::default()
    }
}

fn value_info(name: &str, ty: &TensorType) -> ValueInfoProto {
    let shape = TensorShapeProto {
        dim: ty
            .shape
            .iter()
            .map(|&d| onnx_protobuf::tensor_shape_proto::Dimension {
                value: Some(
                    onnx_protobuf::tensor_shape_proto::dimension::Value::DimValue(d as i64),
                ),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.to_string(),
        type_: protobuf::MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: dtype_to_onnx(ty.dtype),
                shape: protobuf::MessageField::some(shape),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INT.into(),
        i: v,
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INTS.into(),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::FLOAT.into(),
        f: v,
        ..Default::default()
    }
}

fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::STRING.into(),
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn attr_tensor(name: &str, t: &Tensor) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::TENSOR.into(),
        t: protobuf::MessageField::some(tensor_proto("", t)),
        ..Default::default()
    }
}

/// The model being written: unique names, nodes and initializers.
struct Writer<'g> {
    g: &'g Graph,
    names: BTreeMap<ValueId, String>,
    used: BTreeSet<String>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    written_consts: BTreeSet<ValueId>,
}

impl<'g> Writer<'g> {
    fn unique(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "kiln" } else { base };
        let mut name = base.to_string();
        let mut i = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.used.insert(name.clone());
        name
    }

    fn name_value(&mut self, v: ValueId) {
        if self.names.contains_key(&v) {
            return;
        }
        let base = self.g.value(v).name.clone();
        let base = if base.is_empty() {
            format!("v{}", v.index())
        } else {
            base
        };
        let n = self.unique(&base);
        self.names.insert(v, n);
    }

    /// The name of `v`, writing it as an initializer the first time a constant is read.
    fn input(&mut self, v: ValueId) -> String {
        self.name_value(v);
        let name = self.names[&v].clone();
        if let ValueDef::Const(t) = &self.g.value(v).def {
            if self.written_consts.insert(v) {
                self.initializers.push(tensor_proto(&name, t));
            }
        }
        name
    }

    /// A new initializer for an attribute ONNX takes as an input.
    fn constant(&mut self, base: &str, t: &Tensor) -> String {
        let name = self.unique(base);
        self.initializers.push(tensor_proto(&name, t));
        name
    }

    fn i64s(&mut self, base: &str, v: &[i64]) -> Result<String, ExportError> {
        let t = Tensor::from_i64(vec![v.len()], v.to_vec())
            .map_err(|e| ExportError::Graph(e.to_string()))?;
        Ok(self.constant(base, &t))
    }

    fn f32_scalar(&mut self, base: &str, v: f32) -> String {
        self.constant(base, &Tensor::scalar_f32(v))
    }

    fn push(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        let name = self.unique_node_name(name);
        self.nodes.push(NodeProto {
            name,
            op_type: op_type.into(),
            input: inputs,
            output: outputs,
            attribute,
            ..Default::default()
        });
    }

    fn unique_node_name(&self, name: &str) -> String {
        let taken = |n: &str| self.nodes.iter().any(|x| x.name == n);
        if !taken(name) {
            return name.to_string();
        }
        (1..)
            .map(|i| format!("{name}_{i}"))
            .find(|n| !taken(n))
            .unwrap_or_default()
    }

    /// Writes `activation` as its own node from `x` to `y`.
    fn activation(&mut self, node: &str, act: Activation, x: String, y: String) {
        let name = format!("{node}/activation");
        match act {
            Activation::None => self.push(&name, "Identity", vec![x], vec![y], vec![]),
            Activation::Relu => self.push(&name, "Relu", vec![x], vec![y], vec![]),
            Activation::Clip { min, max } => {
                let lo = min
                    .map(|v| self.f32_scalar(&format!("{node}/clip_min"), v as f32))
                    .unwrap_or_default();
                let hi = max
                    .map(|v| self.f32_scalar(&format!("{node}/clip_max"), v as f32))
                    .unwrap_or_default();
                let mut inputs = vec![x, lo, hi];
                while inputs.last().is_some_and(String::is_empty) {
                    inputs.pop();
                }
                self.push(&name, "Clip", inputs, vec![y], vec![]);
            }
            Activation::LeakyRelu { alpha } => self.push(
                &name,
                "LeakyRelu",
                vec![x],
                vec![y],
                vec![attr_float("alpha", alpha)],
            ),
            Activation::HardSwish => self.push(&name, "HardSwish", vec![x], vec![y], vec![]),
            Activation::HardSigmoid { alpha, beta } => self.push(
                &name,
                "HardSigmoid",
                vec![x],
                vec![y],
                vec![attr_float("alpha", alpha), attr_float("beta", beta)],
            ),
            Activation::Sigmoid => self.push(&name, "Sigmoid", vec![x], vec![y], vec![]),
            Activation::Tanh => self.push(&name, "Tanh", vec![x], vec![y], vec![]),
        }
    }
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
    let mut w = Writer {
        g: graph,
        names: BTreeMap::new(),
        used: BTreeSet::new(),
        nodes: Vec::new(),
        initializers: Vec::new(),
        written_consts: BTreeSet::new(),
    };
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
        export_node(&mut w, id)?;
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

fn unsupported(node: &kiln_ir::Node, reason: &str) -> ExportError {
    ExportError::Unsupported {
        node: node.name.clone(),
        op: node.op.name().to_string(),
        reason: reason.to_string(),
    }
}

fn export_node(w: &mut Writer<'_>, id: kiln_ir::NodeId) -> Result<(), ExportError> {
    let g = w.g;
    let node = g.node(id).clone();
    let ins: Vec<String> = node.inputs.iter().map(|&v| w.input(v)).collect();
    for &v in &node.outputs {
        w.name_value(v);
    }
    let outs: Vec<String> = node.outputs.iter().map(|&v| w.names[&v].clone()).collect();
    let name = node.name.clone();
    let in_ty = |i: usize| g.value(node.inputs[i]).ty.clone();
    // Ops with a fused activation write their result to a temporary first.
    let act = node.op.activation();
    let (main_out, final_out) = if act.is_none() {
        (outs.clone(), None)
    } else {
        let tmp = w.unique(&format!("{}/pre_activation", outs[0]));
        let mut o = outs.clone();
        o[0] = tmp.clone();
        (o, Some((tmp, outs[0].clone())))
    };
    let simple = |w: &mut Writer<'_>, op_type: &str, attrs: Vec<AttributeProto>| {
        w.push(&name, op_type, ins.clone(), main_out.clone(), attrs);
    };
    match &node.op {
        Op::Abs
        | Op::Neg
        | Op::Sqrt
        | Op::Reciprocal
        | Op::Exp
        | Op::Log
        | Op::Erf
        | Op::Floor
        | Op::Ceil
        | Op::Round
        | Op::Relu
        | Op::Sigmoid
        | Op::Tanh
        | Op::Softplus
        | Op::Not
        | Op::HardSwish
        | Op::Identity
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Pow
        | Op::Equal
        | Op::Less
        | Op::Greater
        | Op::And
        | Op::Or
        | Op::PRelu
        | Op::Max
        | Op::Min
        | Op::Sum
        | Op::Mean
        | Op::Where
        | Op::Add { .. }
        | Op::GlobalAveragePool
        | Op::GlobalMaxPool
        | Op::Gather { .. }
        | Op::Concat { .. }
        | Op::Transpose { .. } => {
            let attrs = match &node.op {
                Op::Gather { axis } | Op::Concat { axis } => vec![attr_int("axis", *axis as i64)],
                Op::Transpose { perm } => vec![attr_ints("perm", perm)],
                _ => vec![],
            };
            simple(w, node.op.name(), attrs);
        }
        Op::LeakyRelu { alpha } | Op::Elu { alpha } => {
            simple(w, node.op.name(), vec![attr_float("alpha", *alpha)]);
        }
        Op::Selu { alpha, gamma } => simple(
            w,
            "Selu",
            vec![attr_float("alpha", *alpha), attr_float("gamma", *gamma)],
        ),
        Op::HardSigmoid { alpha, beta } => simple(
            w,
            "HardSigmoid",
            vec![attr_float("alpha", *alpha), attr_float("beta", *beta)],
        ),
        Op::Clip { min, max } => {
            let x = ins[0].clone();
            w.activation(
                &name,
                Activation::Clip {
                    min: *min,
                    max: *max,
                },
                x,
                outs[0].clone(),
            );
        }
        Op::Cast { to } => simple(w, "Cast", vec![attr_int("to", i64::from(dtype_to_onnx(*to)))]),
        Op::Dropout { .. } => simple(w, "Dropout", vec![]),
        Op::Gelu { tanh_approx } => gelu(w, &name, &ins[0], &outs[0], *tanh_approx),
        Op::Conv {
            kernel_shape,
            strides,
            dilations,
            pads,
            group,
            ..
        } => simple(
            w,
            "Conv",
            vec![
                attr_ints("kernel_shape", kernel_shape),
                attr_ints("strides", strides),
                attr_ints("dilations", dilations),
                attr_ints("pads", pads),
                attr_int("group", *group as i64),
            ],
        ),
        Op::ConvTranspose {
            kernel_shape,
            strides,
            dilations,
            pads,
            output_padding,
            group,
            ..
        } => simple(
            w,
            "ConvTranspose",
            vec![
                attr_ints("kernel_shape", kernel_shape),
                attr_ints("strides", strides),
                attr_ints("dilations", dilations),
                attr_ints("pads", pads),
                attr_ints("output_padding", output_padding),
                attr_int("group", *group as i64),
            ],
        ),
        Op::MatMul { a_perm, b_perm, .. } => {
            let mut inputs = ins.clone();
            for (i, perm) in [(0, a_perm), (1, b_perm)] {
                if !perm.is_empty() {
                    let t = w.unique(&format!("{}/transposed", inputs[i]));
                    w.push(
                        &format!("{name}/transpose_{i}"),
                        "Transpose",
                        vec![inputs[i].clone()],
                        vec![t.clone()],
                        vec![attr_ints("perm", perm)],
                    );
                    inputs[i] = t;
                }
            }
            w.push(&name, "MatMul", inputs, main_out.clone(), vec![]);
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
            ..
        } => simple(
            w,
            "Gemm",
            vec![
                attr_float("alpha", *alpha),
                attr_float("beta", *beta),
                attr_int("transA", i64::from(*trans_a)),
                attr_int("transB", i64::from(*trans_b)),
            ],
        ),
        Op::MaxPool {
            kernel_shape,
            strides,
            dilations,
            pads,
            ceil_mode,
            column_major_indices,
            ..
        } => simple(
            w,
            "MaxPool",
            vec![
                attr_ints("kernel_shape", kernel_shape),
                attr_ints("strides", strides),
                attr_ints("dilations", dilations),
                attr_ints("pads", pads),
                attr_int("ceil_mode", i64::from(*ceil_mode)),
                attr_int("storage_order", i64::from(*column_major_indices)),
            ],
        ),
        Op::AveragePool {
            kernel_shape,
            strides,
            dilations,
            pads,
            ceil_mode,
            count_include_pad,
        } => {
            if dilations.iter().any(|&d| d != 1) {
                return Err(unsupported(
                    &node,
                    "a dilated AveragePool needs opset 19 (kiln writes opset 17)",
                ));
            }
            simple(
                w,
                "AveragePool",
                vec![
                    attr_ints("kernel_shape", kernel_shape),
                    attr_ints("strides", strides),
                    attr_ints("pads", pads),
                    attr_int("ceil_mode", i64::from(*ceil_mode)),
                    attr_int("count_include_pad", i64::from(*count_include_pad)),
                ],
            );
        }
        Op::BatchNormalization { epsilon } | Op::InstanceNormalization { epsilon } => {
            simple(w, node.op.name(), vec![attr_float("epsilon", *epsilon)]);
        }
        Op::LayerNormalization { axis, epsilon, .. } => simple(
            w,
            "LayerNormalization",
            vec![
                attr_int("axis", *axis as i64),
                attr_float("epsilon", *epsilon),
            ],
        ),
        Op::Softmax { axis, coerce_2d } | Op::LogSoftmax { axis, coerce_2d } => {
            let op_type = node.op.name();
            if *coerce_2d {
                // Opset < 13 semantics: over everything from `axis` on.
                let x_ty = in_ty(0);
                let flat = w.unique(&format!("{}/flat", ins[0]));
                w.push(
                    &format!("{name}/flatten"),
                    "Flatten",
                    vec![ins[0].clone()],
                    vec![flat.clone()],
                    vec![attr_int("axis", *axis as i64)],
                );
                let soft = w.unique(&format!("{}/2d", outs[0]));
                w.push(
                    &name,
                    op_type,
                    vec![flat],
                    vec![soft.clone()],
                    vec![attr_int("axis", 1)],
                );
                let dims: Vec<i64> = x_ty.shape.iter().map(|&d| d as i64).collect();
                let shape = w.i64s(&format!("{name}/shape"), &dims)?;
                w.push(
                    &format!("{name}/reshape"),
                    "Reshape",
                    vec![soft, shape],
                    outs.clone(),
                    vec![],
                );
            } else {
                simple(w, op_type, vec![attr_int("axis", *axis as i64)]);
            }
        }
        Op::ReduceMean { axes, keepdims }
        | Op::ReduceMax { axes, keepdims }
        | Op::ReduceMin { axes, keepdims } => simple(
            w,
            node.op.name(),
            vec![
                attr_ints("axes", axes),
                attr_int("keepdims", i64::from(*keepdims)),
            ],
        ),
        Op::ReduceSum { axes, keepdims } => {
            let a: Vec<i64> = axes.iter().map(|&x| x as i64).collect();
            let axes = w.i64s(&format!("{name}/axes"), &a)?;
            w.push(
                &name,
                "ReduceSum",
                vec![ins[0].clone(), axes],
                main_out.clone(),
                vec![attr_int("keepdims", i64::from(*keepdims))],
            );
        }
        Op::ArgMax {
            axis,
            keepdims,
            select_last_index,
        } => simple(
            w,
            "ArgMax",
            vec![
                attr_int("axis", *axis as i64),
                attr_int("keepdims", i64::from(*keepdims)),
                attr_int("select_last_index", i64::from(*select_last_index)),
            ],
        ),
        Op::Reshape { shape } | Op::Expand { shape } => {
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let s = w.i64s(&format!("{name}/shape"), &dims)?;
            w.push(
                &name,
                node.op.name(),
                vec![ins[0].clone(), s],
                main_out.clone(),
                vec![],
            );
        }
        Op::Tile { repeats } => {
            let r: Vec<i64> = repeats.iter().map(|&d| d as i64).collect();
            let s = w.i64s(&format!("{name}/repeats"), &r)?;
            w.push(&name, "Tile", vec![ins[0].clone(), s], main_out.clone(), vec![]);
        }
        Op::Split { axis, sizes } => {
            let s: Vec<i64> = sizes.iter().map(|&d| d as i64).collect();
            let split = w.i64s(&format!("{name}/split"), &s)?;
            w.push(
                &name,
                "Split",
                vec![ins[0].clone(), split],
                main_out.clone(),
                vec![attr_int("axis", *axis as i64)],
            );
        }
        Op::Slice {
            starts,
            ends,
            steps,
        } => {
            // A negative step's end of -1 means "past index 0": ONNX spells that INT64_MIN.
            let ends: Vec<i64> = ends
                .iter()
                .zip(steps)
                .map(|(&e, &s)| if s < 0 && e < 0 { i64::MIN } else { e })
                .collect();
            let axes: Vec<i64> = (0..starts.len() as i64).collect();
            let inputs = vec![
                ins[0].clone(),
                w.i64s(&format!("{name}/starts"), starts)?,
                w.i64s(&format!("{name}/ends"), &ends)?,
                w.i64s(&format!("{name}/axes"), &axes)?,
                w.i64s(&format!("{name}/steps"), steps)?,
            ];
            w.push(&name, "Slice", inputs, main_out.clone(), vec![]);
        }
        Op::Pad { pads, mode, value } => {
            let p = w.i64s(&format!("{name}/pads"), pads)?;
            let dt = in_ty(0).dtype;
            let v = kiln_ir::ops::util::int_tensor(dt, vec![], vec![*value as i32]);
            let v = match dt {
                DType::F32 => Tensor::scalar_f32(*value as f32),
                _ => v.map_err(|e| unsupported(&node, &e.to_string()))?,
            };
            let v = w.constant(&format!("{name}/value"), &v);
            let mode = match mode {
                PadMode::Constant => "constant",
                PadMode::Reflect => "reflect",
                PadMode::Edge => "edge",
                PadMode::Wrap => {
                    return Err(unsupported(
                        &node,
                        "wrap padding needs opset 19 (kiln writes opset 17)",
                    ))
                }
            };
            w.push(
                &name,
                "Pad",
                vec![ins[0].clone(), p, v],
                main_out.clone(),
                vec![attr_string("mode", mode)],
            );
        }
        Op::DepthToSpace { blocksize, mode } => simple(
            w,
            "DepthToSpace",
            vec![
                attr_int("blocksize", *blocksize as i64),
                attr_string(
                    "mode",
                    match mode {
                        DepthToSpaceMode::Dcr => "DCR",
                        DepthToSpaceMode::Crd => "CRD",
                    },
                ),
            ],
        ),
        Op::SpaceToDepth { blocksize, mode } => {
            if *mode != DepthToSpaceMode::Dcr {
                return Err(unsupported(&node, "ONNX SpaceToDepth has no CRD mode"));
            }
            simple(
                w,
                "SpaceToDepth",
                vec![attr_int("blocksize", *blocksize as i64)],
            );
        }
        Op::Resize { .. } => resize(w, &node, &ins[0], &main_out)?,
        Op::Shape { start, end } => simple(
            w,
            "Shape",
            vec![attr_int("start", *start as i64), attr_int("end", *end as i64)],
        ),
        Op::ConstantOfShape {
            shape,
            value,
            dtype,
        } => {
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let s = w.i64s(&format!("{name}/shape"), &dims)?;
            let v = match dtype {
                DType::F32 => Tensor::from_f32(vec![1], vec![*value as f32]).map_err(|e| e.to_string()),
                DType::I64 => Tensor::from_i64(vec![1], vec![*value as i64]).map_err(|e| e.to_string()),
                _ => kiln_ir::ops::util::int_tensor(*dtype, vec![1], vec![*value as i32])
                    .map_err(|e| e.to_string()),
            }
            .map_err(|e| unsupported(&node, &e))?;
            w.push(
                &name,
                "ConstantOfShape",
                vec![s],
                main_out.clone(),
                vec![attr_tensor("value", &v)],
            );
        }
        Op::Range {
            start,
            delta,
            count,
            dtype,
        } => {
            // ONNX counts ceil((limit - start) / delta) elements: half a step short of the
            // end keeps float rounding from adding or dropping one.
            let limit = match dtype {
                DType::F32 => start + (*count as f64 - 0.5) * delta,
                _ => start + *count as f64 * delta,
            };
            let scalar = |v: f64| -> Result<Tensor, ExportError> {
                match dtype {
                    DType::F32 => Ok(Tensor::scalar_f32(v as f32)),
                    DType::I64 => Tensor::from_i64(vec![], vec![v as i64])
                        .map_err(|e| unsupported(&node, &e.to_string())),
                    _ => kiln_ir::ops::util::int_tensor(*dtype, vec![], vec![v as i32])
                        .map_err(|e| unsupported(&node, &e.to_string())),
                }
            };
            let inputs = vec![
                w.constant(&format!("{name}/start"), &scalar(*start)?),
                w.constant(&format!("{name}/limit"), &scalar(limit)?),
                w.constant(&format!("{name}/delta"), &scalar(*delta)?),
            ];
            w.push(&name, "Range", inputs, main_out.clone(), vec![]);
        }
        Op::QuantizeLinear {
            axis, block_size, ..
        }
        | Op::DequantizeLinear { axis, block_size } => {
            if *block_size > 0 {
                return Err(unsupported(
                    &node,
                    "blocked quantization needs opset 21 (kiln writes opset 17)",
                ));
            }
            let attrs = axis
                .map(|a| vec![attr_int("axis", a as i64)])
                .unwrap_or_default();
            simple(w, node.op.name(), attrs);
        }
        Op::QConv { .. }
        | Op::QMatMul { .. }
        | Op::QAveragePool { .. }
        | Op::QSoftmax { .. }
        | Op::Requantize { .. }
        | Op::QTable
        | Op::QAdd { .. }
        | Op::QMul { .. } => {
            return Err(unsupported(
                &node,
                "kiln's integer ops have no ONNX form: --emit onnx writes float graphs (drop --quantize, or compile a QDQ model at -O0)",
            ))
        }
    }
    if let Some((tmp, y)) = final_out {
        w.activation(&name, act, tmp, y);
    }
    Ok(())
}

/// Gelu as its formula (ONNX has the op only from opset 20).
fn gelu(w: &mut Writer<'_>, name: &str, x: &str, y: &str, tanh_approx: bool) {
    let t = |w: &mut Writer<'_>, s: &str| w.unique(&format!("{y}/{s}"));
    let half = w.f32_scalar(&format!("{name}/half"), 0.5);
    let one = w.f32_scalar(&format!("{name}/one"), 1.0);
    let inner = if tanh_approx {
        // tanh(sqrt(2/pi) * (x + 0.044715 x^3))
        let c = w.f32_scalar(&format!("{name}/c"), 0.044715);
        let k = w.f32_scalar(
            &format!("{name}/k"),
            (2.0 / std::f64::consts::PI).sqrt() as f32,
        );
        let three = w.f32_scalar(&format!("{name}/three"), 3.0);
        let cube = t(w, "cube");
        w.push(
            &format!("{name}/cube"),
            "Pow",
            vec![x.into(), three],
            vec![cube.clone()],
            vec![],
        );
        let cc = t(w, "c_cube");
        w.push(
            &format!("{name}/c_cube"),
            "Mul",
            vec![cube, c],
            vec![cc.clone()],
            vec![],
        );
        let s = t(w, "sum");
        w.push(
            &format!("{name}/sum"),
            "Add",
            vec![x.into(), cc],
            vec![s.clone()],
            vec![],
        );
        let ks = t(w, "scaled");
        w.push(
            &format!("{name}/scaled"),
            "Mul",
            vec![s, k],
            vec![ks.clone()],
            vec![],
        );
        let th = t(w, "tanh");
        w.push(
            &format!("{name}/tanh"),
            "Tanh",
            vec![ks],
            vec![th.clone()],
            vec![],
        );
        th
    } else {
        // erf(x / sqrt(2))
        let r = w.f32_scalar(&format!("{name}/rsqrt2"), std::f32::consts::FRAC_1_SQRT_2);
        let s = t(w, "scaled");
        w.push(
            &format!("{name}/scaled"),
            "Mul",
            vec![x.into(), r],
            vec![s.clone()],
            vec![],
        );
        let e = t(w, "erf");
        w.push(
            &format!("{name}/erf"),
            "Erf",
            vec![s],
            vec![e.clone()],
            vec![],
        );
        e
    };
    let p = t(w, "one_plus");
    w.push(
        &format!("{name}/one_plus"),
        "Add",
        vec![inner, one],
        vec![p.clone()],
        vec![],
    );
    let hx = t(w, "half_x");
    w.push(
        &format!("{name}/half_x"),
        "Mul",
        vec![x.into(), half],
        vec![hx.clone()],
        vec![],
    );
    w.push(name, "Mul", vec![hx, p], vec![y.into()], vec![]);
}

fn resize(
    w: &mut Writer<'_>,
    node: &kiln_ir::Node,
    x: &str,
    outs: &[String],
) -> Result<(), ExportError> {
    let Op::Resize {
        mode,
        coord,
        nearest,
        scales,
        out_shape,
        cubic_coeff_a,
        exclude_outside,
        antialias,
        roi,
        extrapolation_value,
    } = &node.op
    else {
        return Ok(());
    };
    if *antialias {
        return Err(unsupported(
            node,
            "an antialiased Resize needs opset 18 (kiln writes opset 17)",
        ));
    }
    let in_shape = &w.g.value(node.inputs[0]).ty.shape;
    let name = &node.name;
    let roi_name = if *coord == CoordTransform::TfCropAndResize {
        let r: Vec<f32> = roi.iter().map(|&v| v as f32).collect();
        let t =
            Tensor::from_f32(vec![r.len()], r).map_err(|e| unsupported(node, &e.to_string()))?;
        w.constant(&format!("{name}/roi"), &t)
    } else {
        String::new()
    };
    // Scales as the model gave them when they are f32 values that give this output shape;
    // otherwise the sizes (ONNX then takes the exact ratio, as kiln did).
    let as_f32: Vec<f32> = scales.iter().map(|&s| s as f32).collect();
    let exact = as_f32
        .iter()
        .zip(scales)
        .zip(in_shape.iter().zip(out_shape))
        .all(|((&f, &s), (&i, &o))| {
            f64::from(f) == s && (i as f64 * f64::from(f)).floor() as usize == o
        });
    let (scales_name, sizes_name) = if exact {
        let t = Tensor::from_f32(vec![as_f32.len()], as_f32)
            .map_err(|e| unsupported(node, &e.to_string()))?;
        (w.constant(&format!("{name}/scales"), &t), None)
    } else {
        let s: Vec<i64> = out_shape.iter().map(|&d| d as i64).collect();
        (String::new(), Some(w.i64s(&format!("{name}/sizes"), &s)?))
    };
    let mut inputs = vec![x.to_string(), roi_name, scales_name];
    if let Some(s) = sizes_name {
        inputs.push(s);
    }
    let attrs = vec![
        attr_string(
            "mode",
            match mode {
                ResizeMode::Nearest => "nearest",
                ResizeMode::Linear => "linear",
                ResizeMode::Cubic => "cubic",
            },
        ),
        attr_string(
            "coordinate_transformation_mode",
            match coord {
                CoordTransform::HalfPixel => "half_pixel",
                CoordTransform::HalfPixelSymmetric => {
                    return Err(unsupported(
                        node,
                        "half_pixel_symmetric needs opset 19 (kiln writes opset 17)",
                    ))
                }
                CoordTransform::PytorchHalfPixel => "pytorch_half_pixel",
                CoordTransform::AlignCorners => "align_corners",
                CoordTransform::Asymmetric => "asymmetric",
                CoordTransform::TfCropAndResize => "tf_crop_and_resize",
            },
        ),
        attr_string(
            "nearest_mode",
            match nearest {
                NearestMode::RoundPreferFloor => "round_prefer_floor",
                NearestMode::RoundPreferCeil => "round_prefer_ceil",
                NearestMode::Floor => "floor",
                NearestMode::Ceil => "ceil",
            },
        ),
        attr_float("cubic_coeff_a", *cubic_coeff_a as f32),
        attr_int("exclude_outside", i64::from(*exclude_outside)),
        attr_float("extrapolation_value", *extrapolation_value as f32),
    ];
    w.push(name, "Resize", inputs, outs.to_vec(), attrs);
    Ok(())
}
