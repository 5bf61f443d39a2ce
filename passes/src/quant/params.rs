//! Reading quantization parameters off QuantizeLinear and DequantizeLinear nodes, and the
//! real-valued arithmetic the integer ops are derived from.

use kiln_ir::{DType, Graph, NodeId, Op, QuantParams, Tensor, ValueId};

use crate::util;

/// The quantization of one tensor: `real = scale * (q - zero_point)`, per tensor (one entry)
/// or per slice along `axis`.
#[derive(Clone, Debug, PartialEq)]
pub struct QParams {
    pub dtype: DType,
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
    pub axis: Option<usize>,
}

impl QParams {
    /// The scale and zero point of a per-tensor quantization.
    pub fn per_tensor(&self) -> Option<(f32, i32)> {
        match (self.scale.as_slice(), self.zero_point.as_slice()) {
            ([s], [z]) => Some((*s, *z)),
            _ => None,
        }
    }

    /// Scale of slice `i` (the only scale of a per-tensor quantization).
    pub fn scale_at(&self, i: usize) -> f32 {
        self.scale
            .get(i)
            .or(self.scale.first())
            .copied()
            .unwrap_or(1.0)
    }

    pub fn zero_point_at(&self, i: usize) -> i32 {
        self.zero_point
            .get(i)
            .or(self.zero_point.first())
            .copied()
            .unwrap_or(0)
    }

    /// The quantized value of `real` (f32 arithmetic, ties to even, saturated), as
    /// QuantizeLinear computes it.
    pub fn quantize(&self, real: f32) -> i32 {
        let (lo, hi) = kiln_ir::fixed_point::qrange(self.dtype).unwrap_or((i32::MIN, i32::MAX));
        let q = (real / self.scale_at(0)).round_ties_even() + self.zero_point_at(0) as f32;
        q.clamp(lo as f32, hi as f32) as i32
    }

    /// The IR's record of these parameters, for a value's `quant`.
    pub fn to_value_quant(&self) -> QuantParams {
        QuantParams {
            scale: self.scale.clone(),
            zero_point: self.zero_point.clone(),
            axis: self.axis,
        }
    }

    /// The 8-bit types the integer ops take.
    pub fn is_8bit(&self) -> bool {
        matches!(self.dtype, DType::I8 | DType::U8)
    }
}

/// Scale and zero point inputs of a Q or DQ node, when they are constants.
fn const_params(g: &Graph, node: NodeId, dtype: DType, axis: Option<usize>) -> Option<QParams> {
    let n = g.node(node);
    let scale = util::const_f32(g, *n.inputs.get(1)?)?;
    let zero_point: Vec<i32> = match n.inputs.get(2) {
        Some(&z) => util::const_of(g, z)?
            .to_i64_vec()?
            .into_iter()
            .map(|v| v as i32)
            .collect(),
        None => vec![0; scale.len()],
    };
    if scale.is_empty() || zero_point.len() != scale.len() {
        return None;
    }
    let axis = if scale.len() == 1 { None } else { axis };
    Some(QParams {
        dtype,
        scale,
        zero_point,
        axis,
    })
}

/// A value that a DequantizeLinear computes: the node, its integer input and parameters.
#[derive(Clone, Debug)]
pub struct Dequantized {
    pub node: NodeId,
    pub source: ValueId,
    pub params: QParams,
}

/// If `v` is the result of a DequantizeLinear (not blocked) with constant parameters.
pub fn dequantized(g: &Graph, v: ValueId) -> Option<Dequantized> {
    let node = util::producer(g, v)?;
    let Op::DequantizeLinear {
        axis,
        block_size: 0,
    } = g.node(node).op
    else {
        return None;
    };
    let source = *g.node(node).inputs.first()?;
    let dtype = g.value(source).ty.dtype;
    let params = const_params(g, node, dtype, axis)?;
    Some(Dequantized {
        node,
        source,
        params,
    })
}

/// The parameters of QuantizeLinear node `node` (not blocked), when they are constants.
pub fn quantize_params(g: &Graph, node: NodeId) -> Option<QParams> {
    let Op::QuantizeLinear {
        axis,
        dtype,
        block_size: 0,
    } = g.node(node).op
    else {
        return None;
    };
    const_params(g, node, dtype, axis)
}

/// The integer data of a constant tensor behind a DequantizeLinear: the constant itself, or a
/// QuantizeLinear of a float constant (some exporters quantize weights in the graph).
pub fn constant_source(g: &Graph, d: &Dequantized) -> Option<Tensor> {
    if let Some(t) = util::const_of(g, d.source) {
        return Some((*t).clone());
    }
    let q = util::producer(g, d.source)?;
    let node = g.node(q);
    if !matches!(node.op, Op::QuantizeLinear { .. }) {
        return None;
    }
    let inputs: Option<Vec<std::sync::Arc<Tensor>>> =
        node.inputs.iter().map(|&v| util::const_of(g, v)).collect();
    let inputs = inputs?;
    let refs: Vec<&Tensor> = inputs.iter().map(|t| t.as_ref()).collect();
    kiln_ir::ops::eval(&node.op, &refs).ok()?.into_iter().next()
}
