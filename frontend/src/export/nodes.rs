//! One IR node to its ONNX nodes: `export_node` names the node's values, writes an op whose
//! attributes map one to one as a single node, and hands the rest to `const_inputs.rs` and
//! `expansions.rs`. A fused activation goes to a temporary first and then through its own node.

use kiln_ir::op::DepthToSpaceMode;
use kiln_ir::{Activation, Op};
use onnx_protobuf::AttributeProto;

use super::proto::{attr_float, attr_int, attr_ints, attr_string, dtype_to_onnx};
use super::writer::Writer;
use super::{const_inputs, expansions, unsupported, ExportError};

/// Writes node `id` of the writer's graph, reading its inputs (constants become initializers on
/// first use) and naming its outputs.
pub(super) fn export_node(w: &mut Writer<'_>, id: kiln_ir::NodeId) -> Result<(), ExportError> {
    let g = w.g;
    let node = g.node(id).clone();
    let ins: Vec<String> = node.inputs.iter().map(|&v| w.input(v)).collect();
    for &v in &node.outputs {
        w.name_value(v);
    }
    let outs: Vec<String> = node.outputs.iter().map(|&v| w.names[&v].clone()).collect();
    let name = node.name.clone();
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
            expansions::activation(
                w,
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
        Op::Gelu { tanh_approx } => expansions::gelu(w, &name, &ins[0], &outs[0], *tanh_approx),
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
            expansions::matmul(w, &name, &ins, &main_out, a_perm, b_perm);
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
            if *coerce_2d {
                // Opset < 13 semantics: over everything from `axis` on.
                expansions::softmax_2d(w, &node, &ins[0], &outs, *axis)?;
            } else {
                simple(w, node.op.name(), vec![attr_int("axis", *axis as i64)]);
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
            const_inputs::reduce_sum(w, &name, &ins[0], &main_out, axes, *keepdims)?;
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
            const_inputs::with_shape_input(w, &node, &ins[0], &main_out, shape)?;
        }
        Op::Tile { repeats } => const_inputs::tile(w, &name, &ins[0], &main_out, repeats)?,
        Op::Split { axis, sizes } => {
            const_inputs::split(w, &name, &ins[0], &main_out, *axis, sizes)?;
        }
        Op::Slice {
            starts,
            ends,
            steps,
        } => const_inputs::slice(w, &name, &ins[0], &main_out, starts, ends, steps)?,
        Op::Pad { pads, mode, value } => {
            const_inputs::pad(w, &node, &ins[0], &main_out, pads, *mode, *value)?;
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
        Op::Resize { .. } => const_inputs::resize(w, &node, &ins[0], &main_out)?,
        Op::Shape { start, end } => simple(
            w,
            "Shape",
            vec![attr_int("start", *start as i64), attr_int("end", *end as i64)],
        ),
        Op::ConstantOfShape {
            shape,
            value,
            dtype,
        } => const_inputs::constant_of_shape(w, &node, &main_out, shape, *value, *dtype)?,
        Op::Range {
            start,
            delta,
            count,
            dtype,
        } => const_inputs::range(w, &node, &main_out, *start, *delta, *count, *dtype)?,
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
        expansions::activation(w, &name, act, tmp, y);
    }
    Ok(())
}
