//! Lowering of single ONNX nodes to IR ops: the op table and the context each lowering sees.
//!
//! Each family file exposes `lower(&NodeCtx) -> Result<Lowered, LowerError>`. A lowering reads
//! attributes (with ONNX defaults), input types and the values of constant inputs, handles every
//! opset difference of its ops, and returns the IR op with all attributes resolved, plus which
//! ONNX inputs become IR inputs. A few ops lower to several IR nodes (a QLinear op to its
//! DequantizeLinear -> float op -> QuantizeLinear form) and to constants computed at import.

pub mod elementwise;
pub mod nn;
pub mod quant;
pub mod shape;

use std::sync::Arc;

use kiln_ir::{Op, Tensor, TensorType};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::AttributeProto;

/// The `com.microsoft` domain of onnxruntime's contrib ops.
pub const MS_DOMAIN: &str = "com.microsoft";

/// What a lowering produces: the IR nodes one ONNX node becomes, in order, and the constants
/// the lowering computed. The last node's outputs are the ONNX node's outputs; every earlier
/// node is an intermediate with one output that later nodes read.
#[derive(Debug)]
pub struct Lowered {
    pub nodes: Vec<LoweredNode>,
    /// Constants computed at import (a bias scale, weights with their zero point subtracted),
    /// each with a label: the graph names it `onnx_node/label`.
    pub consts: Vec<(String, Tensor)>,
}

/// One IR node of a [`Lowered`].
#[derive(Debug)]
pub struct LoweredNode {
    /// Names an intermediate node and its output `onnx_node/label`; the last node takes the
    /// ONNX node's own names.
    pub label: String,
    pub op: Op,
    pub args: Vec<Arg>,
}

/// An input of a lowered IR node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// ONNX input `i` of the node being lowered.
    Input(usize),
    /// Output 0 of the lowered node at this index (an earlier one).
    Node(usize),
    /// The lowering's constant at this index.
    Const(usize),
}

impl Lowered {
    /// One IR node reading the ONNX inputs `inputs`, in order.
    pub fn new(op: Op, inputs: Vec<usize>) -> Self {
        Lowered {
            nodes: vec![LoweredNode {
                label: String::new(),
                op,
                args: inputs.into_iter().map(Arg::Input).collect(),
            }],
            consts: Vec::new(),
        }
    }

    /// Nothing yet: a multi-node lowering pushes its constants and nodes in order.
    pub fn empty() -> Self {
        Lowered {
            nodes: Vec::new(),
            consts: Vec::new(),
        }
    }

    /// Adds a constant computed at import.
    pub fn constant(&mut self, label: impl Into<String>, value: Tensor) -> Arg {
        self.consts.push((label.into(), value));
        Arg::Const(self.consts.len() - 1)
    }

    /// Adds a node; its output 0 is the returned argument.
    pub fn push(&mut self, label: impl Into<String>, op: Op, args: Vec<Arg>) -> Arg {
        self.nodes.push(LoweredNode {
            label: label.into(),
            op,
            args,
        });
        Arg::Node(self.nodes.len() - 1)
    }

    /// The op and ONNX input indices of a one-node lowering that reads only ONNX inputs.
    pub fn into_single(self) -> Option<(Op, Vec<usize>)> {
        let [node] = <[LoweredNode; 1]>::try_from(self.nodes).ok()?;
        let inputs = node
            .args
            .iter()
            .map(|a| match a {
                Arg::Input(i) => Some(*i),
                _ => None,
            })
            .collect::<Option<Vec<usize>>>()?;
        Some((node.op, inputs))
    }
}

/// Why a node could not be lowered; the importer adds node name and op.
#[derive(Debug, Clone, PartialEq)]
pub enum LowerError {
    /// A valid model that uses something kiln does not implement.
    Unsupported(String),
    /// The model is invalid (bad attribute value, wrong input count, ...).
    Invalid(String),
    /// ONNX input `i` must be a constant for kiln to resolve static shapes.
    NeedsConstant(usize),
}

/// `Err(LowerError::Unsupported(format!(...)))`.
#[macro_export]
macro_rules! unsupported {
    ($($arg:tt)*) => { Err($crate::ops::LowerError::Unsupported(format!($($arg)*))) };
}

/// `Err(LowerError::Invalid(format!(...)))`.
#[macro_export]
macro_rules! bad {
    ($($arg:tt)*) => { Err($crate::ops::LowerError::Invalid(format!($($arg)*))) };
}

/// One input of the node being lowered.
#[derive(Debug, Clone)]
pub struct InputInfo {
    pub ty: TensorType,
    /// The value, when it is known at compile time (initializer, Constant, or computed from
    /// those and from static shapes).
    pub known: Option<Arc<Tensor>>,
}

/// Everything a lowering may look at.
#[derive(Debug)]
pub struct NodeCtx<'a> {
    pub name: &'a str,
    /// The op's domain: `""` for the default ONNX domain (also when the model spells it
    /// `ai.onnx`), else e.g. [`MS_DOMAIN`].
    pub domain: &'a str,
    pub op_type: &'a str,
    /// Version of the default ONNX domain the model imports.
    pub opset: i64,
    pub attrs: &'a [AttributeProto],
    /// One entry per ONNX input; `None` for omitted optional inputs (empty names).
    pub inputs: Vec<Option<InputInfo>>,
    /// Number of ONNX outputs, counting trailing ones only if named.
    pub num_outputs: usize,
}

impl<'a> NodeCtx<'a> {
    /// This node seen as the default-domain op `op_type` with other inputs (same name,
    /// attributes and opset): how a quantized op lowers its float op with that op's own
    /// lowering.
    pub fn as_op(&self, op_type: &'a str, inputs: Vec<Option<InputInfo>>) -> NodeCtx<'a> {
        NodeCtx {
            name: self.name,
            domain: "",
            op_type,
            opset: self.opset,
            attrs: self.attrs,
            inputs,
            num_outputs: 1,
        }
    }

    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attrs.iter().find(|a| a.name == name)
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    fn typed(
        &self,
        name: &str,
        want: AttributeType,
    ) -> Result<Option<&AttributeProto>, LowerError> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.type_.value() == want as i32 || a.type_.value() == 0 => Ok(Some(a)),
            Some(a) => bad!(
                "attribute '{name}' has type {:?}, expected {want:?}",
                a.type_.enum_value_or(AttributeType::UNDEFINED)
            ),
        }
    }

    pub fn attr_int(&self, name: &str) -> Result<Option<i64>, LowerError> {
        Ok(self.typed(name, AttributeType::INT)?.map(|a| a.i))
    }

    pub fn attr_int_or(&self, name: &str, default: i64) -> Result<i64, LowerError> {
        Ok(self.attr_int(name)?.unwrap_or(default))
    }

    pub fn attr_float(&self, name: &str) -> Result<Option<f32>, LowerError> {
        Ok(self.typed(name, AttributeType::FLOAT)?.map(|a| a.f))
    }

    pub fn attr_float_or(&self, name: &str, default: f32) -> Result<f32, LowerError> {
        Ok(self.attr_float(name)?.unwrap_or(default))
    }

    pub fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>, LowerError> {
        Ok(self
            .typed(name, AttributeType::INTS)?
            .map(|a| a.ints.clone()))
    }

    pub fn attr_floats(&self, name: &str) -> Result<Option<Vec<f32>>, LowerError> {
        Ok(self
            .typed(name, AttributeType::FLOATS)?
            .map(|a| a.floats.clone()))
    }

    pub fn attr_string(&self, name: &str) -> Result<Option<String>, LowerError> {
        Ok(self
            .typed(name, AttributeType::STRING)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }

    pub fn attr_string_or(&self, name: &str, default: &str) -> Result<String, LowerError> {
        Ok(self
            .attr_string(name)?
            .unwrap_or_else(|| default.to_string()))
    }

    /// A tensor-valued attribute (e.g. ConstantOfShape's `value`).
    pub fn attr_tensor(&self, name: &str) -> Result<Option<Tensor>, LowerError> {
        match self.typed(name, AttributeType::TENSOR)? {
            None => Ok(None),
            Some(a) => crate::tensor::tensor_from_proto(&a.t)
                .map(Some)
                .map_err(|e| LowerError::Invalid(format!("attribute '{name}': {e}"))),
        }
    }

    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// True when ONNX input `i` is present (not omitted).
    pub fn has_input(&self, i: usize) -> bool {
        matches!(self.inputs.get(i), Some(Some(_)))
    }

    pub fn input(&self, i: usize) -> Result<&InputInfo, LowerError> {
        match self.inputs.get(i) {
            Some(Some(info)) => Ok(info),
            _ => bad!("required input {i} is missing"),
        }
    }

    pub fn input_type(&self, i: usize) -> Result<&TensorType, LowerError> {
        Ok(&self.input(i)?.ty)
    }

    /// The compile-time value of input `i`, or `NeedsConstant(i)`.
    pub fn const_input(&self, i: usize) -> Result<&Tensor, LowerError> {
        match &self.input(i)?.known {
            Some(t) => Ok(t),
            None => Err(LowerError::NeedsConstant(i)),
        }
    }

    /// The value of an optional integer input (shapes, axes, pads), if present.
    pub fn const_ints(&self, i: usize) -> Result<Option<Vec<i64>>, LowerError> {
        if !self.has_input(i) {
            return Ok(None);
        }
        let t = self.const_input(i)?;
        match t.to_i64_vec() {
            Some(v) => Ok(Some(v)),
            None => bad!("input {i} must be an integer tensor, got {}", t.dtype()),
        }
    }

    /// The value of an optional float input (scales, clip bounds), if present.
    pub fn const_floats(&self, i: usize) -> Result<Option<Vec<f64>>, LowerError> {
        if !self.has_input(i) {
            return Ok(None);
        }
        Ok(Some(self.const_input(i)?.to_f64_vec()))
    }

    pub fn check_inputs(&self, min: usize, max: usize) -> Result<(), LowerError> {
        let n = self.inputs.len();
        if n < min || n > max {
            return bad!("expects {min} to {max} inputs, got {n}");
        }
        Ok(())
    }
}

/// Normalizes a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, LowerError> {
    let r = rank as i64;
    if axis < -r || axis >= r.max(1) {
        return bad!("axis {axis} is out of range for rank {rank}");
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

/// Every ONNX op kiln imports, and the family file that lowers it. Kept sorted by family.
const OP_TABLE: &[(&str, Family)] = &[
    ("Abs", Family::Elementwise),
    ("Neg", Family::Elementwise),
    ("Sqrt", Family::Elementwise),
    ("Reciprocal", Family::Elementwise),
    ("Exp", Family::Elementwise),
    ("Log", Family::Elementwise),
    ("Erf", Family::Elementwise),
    ("Floor", Family::Elementwise),
    ("Ceil", Family::Elementwise),
    ("Round", Family::Elementwise),
    ("Relu", Family::Elementwise),
    ("LeakyRelu", Family::Elementwise),
    ("PRelu", Family::Elementwise),
    ("Elu", Family::Elementwise),
    ("Selu", Family::Elementwise),
    ("Clip", Family::Elementwise),
    ("Sigmoid", Family::Elementwise),
    ("HardSigmoid", Family::Elementwise),
    ("HardSwish", Family::Elementwise),
    ("Tanh", Family::Elementwise),
    ("Softplus", Family::Elementwise),
    ("Gelu", Family::Elementwise),
    ("Not", Family::Elementwise),
    ("Identity", Family::Elementwise),
    ("Cast", Family::Elementwise),
    ("Dropout", Family::Elementwise),
    ("Add", Family::Elementwise),
    ("Sub", Family::Elementwise),
    ("Mul", Family::Elementwise),
    ("Div", Family::Elementwise),
    ("Pow", Family::Elementwise),
    ("Max", Family::Elementwise),
    ("Min", Family::Elementwise),
    ("Sum", Family::Elementwise),
    ("Mean", Family::Elementwise),
    ("Equal", Family::Elementwise),
    ("Less", Family::Elementwise),
    ("Greater", Family::Elementwise),
    ("And", Family::Elementwise),
    ("Or", Family::Elementwise),
    ("Where", Family::Elementwise),
    ("Conv", Family::Nn),
    ("ConvTranspose", Family::Nn),
    ("MatMul", Family::Nn),
    ("Gemm", Family::Nn),
    ("MaxPool", Family::Nn),
    ("AveragePool", Family::Nn),
    ("GlobalAveragePool", Family::Nn),
    ("GlobalMaxPool", Family::Nn),
    ("BatchNormalization", Family::Nn),
    ("InstanceNormalization", Family::Nn),
    ("LayerNormalization", Family::Nn),
    ("Softmax", Family::Nn),
    ("LogSoftmax", Family::Nn),
    ("QuantizeLinear", Family::Nn),
    ("DequantizeLinear", Family::Nn),
    ("QLinearConv", Family::Quant),
    ("QLinearMatMul", Family::Quant),
    ("ConvInteger", Family::Quant),
    ("MatMulInteger", Family::Quant),
    ("ReduceMean", Family::Shape),
    ("ReduceSum", Family::Shape),
    ("ReduceMax", Family::Shape),
    ("ReduceMin", Family::Shape),
    ("ArgMax", Family::Shape),
    ("Reshape", Family::Shape),
    ("Flatten", Family::Shape),
    ("Transpose", Family::Shape),
    ("Concat", Family::Shape),
    ("Split", Family::Shape),
    ("Slice", Family::Shape),
    ("Squeeze", Family::Shape),
    ("Unsqueeze", Family::Shape),
    ("Pad", Family::Shape),
    ("Gather", Family::Shape),
    ("Expand", Family::Shape),
    ("Tile", Family::Shape),
    ("DepthToSpace", Family::Shape),
    ("SpaceToDepth", Family::Shape),
    ("Resize", Family::Shape),
    ("Upsample", Family::Shape),
    ("Shape", Family::Shape),
    ("ConstantOfShape", Family::Shape),
    ("Range", Family::Shape),
];

/// The `com.microsoft` ops kiln imports (onnxruntime's quantized contrib ops).
const MS_OP_TABLE: &[(&str, Family)] = &[
    ("QLinearAdd", Family::Quant),
    ("QLinearMul", Family::Quant),
    ("QLinearConcat", Family::Quant),
    ("QLinearGlobalAveragePool", Family::Quant),
    ("QLinearAveragePool", Family::Quant),
    ("QLinearSigmoid", Family::Quant),
    ("QLinearLeakyRelu", Family::Quant),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Elementwise,
    Nn,
    Shape,
    Quant,
}

/// The table of a domain (`""` or `ai.onnx` for the default one), if kiln imports from it.
fn table(domain: &str) -> Option<&'static [(&'static str, Family)]> {
    match domain {
        "" | "ai.onnx" => Some(OP_TABLE),
        MS_DOMAIN => Some(MS_OP_TABLE),
        _ => None,
    }
}

/// The op types kiln imports: the default ONNX domain's (with `Constant`, which the importer
/// handles itself), then the `com.microsoft` ones.
pub fn supported_ops() -> impl Iterator<Item = &'static str> {
    OP_TABLE
        .iter()
        .map(|(name, _)| *name)
        .chain(["Constant"])
        .chain(ms_ops())
}

/// True when kiln imports `op_type` from `domain`.
pub fn is_supported_in(domain: &str, op_type: &str) -> bool {
    match domain {
        "" | "ai.onnx" if op_type == "Constant" => true,
        _ => table(domain).is_some_and(|t| t.iter().any(|(name, _)| *name == op_type)),
    }
}

/// True when kiln imports the op a [`crate::Survey`] lists as `op_type` (default domain) or
/// `domain::op_type`.
pub fn is_supported(op: &str) -> bool {
    match op.split_once("::") {
        Some((domain, op_type)) => is_supported_in(domain, op_type),
        None => is_supported_in("", op),
    }
}

/// The `com.microsoft` op types kiln imports.
pub fn ms_ops() -> impl Iterator<Item = &'static str> {
    MS_OP_TABLE.iter().map(|(name, _)| *name)
}

/// Lowers one node through its family file.
pub fn lower(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let family = table(ctx.domain)
        .and_then(|t| t.iter().find(|(name, _)| *name == ctx.op_type))
        .map(|(_, f)| *f);
    match family {
        Some(Family::Elementwise) => elementwise::lower(ctx),
        Some(Family::Nn) => nn::lower(ctx),
        Some(Family::Shape) => shape::lower(ctx),
        Some(Family::Quant) => quant::lower(ctx),
        None => unsupported!("unknown op"),
    }
}
