//! The closed set of operations kiln's IR knows, generated from one table.
//!
//! Every attribute is resolved at import: shapes, axes and pads that ONNX passes as tensor inputs
//! (or leaves to `auto_pad`) are stored here as plain, normalized numbers, because kiln compiles
//! for static shapes. Axes are non-negative; pads are `[begin_0, .., begin_n, end_0, .., end_n]`.

use crate::dtype::DType;
use crate::fixed_point::{FixedPoint, Rounding};

/// How each op's semantics are grouped into files under `ops/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpFamily {
    /// One output element from one input element (`ops/unary.rs`).
    Unary,
    /// Broadcasting element-wise ops with two or more inputs (`ops/binary.rs`).
    Binary,
    /// Convolutions (`ops/conv.rs`).
    Conv,
    /// Matrix products (`ops/matmul.rs`).
    MatMul,
    /// Windowed and global pooling (`ops/pool.rs`).
    Pool,
    /// Normalizations and softmax (`ops/norm.rs`).
    Norm,
    /// Reductions over axes (`ops/reduce.rs`).
    Reduce,
    /// Data movement and shape ops (`ops/movement/`).
    Movement,
    /// Quantize / dequantize (`ops/quant.rs`).
    Quant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepthToSpaceMode {
    /// Depth-column-row (the ONNX default).
    Dcr,
    /// Column-row-depth.
    Crd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

/// ONNX Resize `coordinate_transformation_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordTransform {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    /// Samples the region `roi` of the input; points outside it take `extrapolation_value`.
    TfCropAndResize,
}

/// ONNX Resize `nearest_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// An activation fused into the epilogue of a Conv, ConvTranspose, Gemm, MatMul or Add: applied
/// to each f32 result before it is stored, with exactly the semantics of the unary op it
/// replaces (see [`Activation::as_op`]). The frontend always sets `None`; the `fuse-activation`
/// pass sets the others.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    /// Bounds as in [`Op::Clip`] (`Clip{0, 6}` is Relu6).
    Clip {
        min: Option<f64>,
        max: Option<f64>,
    },
    LeakyRelu {
        alpha: f32,
    },
    HardSwish,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    Sigmoid,
    Tanh,
}

impl Activation {
    pub fn is_none(&self) -> bool {
        *self == Activation::None
    }

    /// The unary op computing this activation (`None` for `Activation::None`).
    pub fn as_op(&self) -> Option<Op> {
        Some(match *self {
            Activation::None => return None,
            Activation::Relu => Op::Relu,
            Activation::Clip { min, max } => Op::Clip { min, max },
            Activation::LeakyRelu { alpha } => Op::LeakyRelu { alpha },
            Activation::HardSwish => Op::HardSwish,
            Activation::HardSigmoid { alpha, beta } => Op::HardSigmoid { alpha, beta },
            Activation::Sigmoid => Op::Sigmoid,
            Activation::Tanh => Op::Tanh,
        })
    }

    /// The activation a unary op computes, if it is one that can be fused.
    pub fn from_op(op: &Op) -> Option<Activation> {
        Some(match *op {
            Op::Relu => Activation::Relu,
            Op::Clip { min, max } => Activation::Clip { min, max },
            Op::LeakyRelu { alpha } => Activation::LeakyRelu { alpha },
            Op::HardSwish => Activation::HardSwish,
            Op::HardSigmoid { alpha, beta } => Activation::HardSigmoid { alpha, beta },
            Op::Sigmoid => Activation::Sigmoid,
            Op::Tanh => Activation::Tanh,
            _ => return None,
        })
    }
}

impl FmtAttr for Activation {
    fn fmt_attr(&self) -> String {
        match self {
            Activation::None => "none".into(),
            Activation::Relu => "relu".into(),
            Activation::Clip { min, max } => format!("clip({},{})", min.fmt_attr(), max.fmt_attr()),
            Activation::LeakyRelu { alpha } => format!("leaky_relu({})", alpha.fmt_attr()),
            Activation::HardSwish => "hard_swish".into(),
            Activation::HardSigmoid { alpha, beta } => {
                format!("hard_sigmoid({},{})", alpha.fmt_attr(), beta.fmt_attr())
            }
            Activation::Sigmoid => "sigmoid".into(),
            Activation::Tanh => "tanh".into(),
        }
    }
}

/// Where the integer result of a quantized op goes: `zero_point` is added to the requantized
/// accumulator, the sum is clamped to `[min, max]` (the type's range, narrowed by a Relu or
/// Clip the op absorbed) and stored as `dtype` (i8 or u8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QOut {
    pub dtype: DType,
    pub zero_point: i32,
    pub min: i32,
    pub max: i32,
}

impl QOut {
    /// The full range of `dtype` (i8 or u8) with `zero_point`.
    pub fn full(dtype: DType, zero_point: i32) -> QOut {
        let (min, max) = crate::fixed_point::qrange(dtype).unwrap_or((i32::MIN, i32::MAX));
        QOut {
            dtype,
            zero_point,
            min,
            max,
        }
    }

    /// `zero_point + v`, clamped to `[min, max]` (`max` when the range is empty, which
    /// [`QOut::check`] refuses).
    pub fn store(&self, v: i32) -> i32 {
        v.saturating_add(self.zero_point)
            .max(self.min)
            .min(self.max)
    }

    /// An 8-bit (or i32) type, the zero point and a non-empty range inside it.
    pub fn check(&self) -> Result<(), crate::OpError> {
        let (lo, hi) = match self.dtype {
            DType::I32 => (i32::MIN, i32::MAX),
            other => crate::fixed_point::qrange(other).ok_or_else(|| {
                crate::OpError::Invalid(format!("a quantized output cannot be {other}"))
            })?,
        };
        let inside = |v: i32| (lo..=hi).contains(&v);
        if !(inside(self.zero_point)
            && inside(self.min)
            && inside(self.max)
            && self.min <= self.max)
        {
            return Err(crate::OpError::Invalid(format!(
                "output range {} does not fit {}",
                self.fmt_attr(),
                self.dtype
            )));
        }
        Ok(())
    }
}

/// Formats an attribute value for the text dump. Output is stable: snapshots depend on it.
pub trait FmtAttr {
    fn fmt_attr(&self) -> String;
}

impl FmtAttr for usize {
    fn fmt_attr(&self) -> String {
        self.to_string()
    }
}
impl FmtAttr for i64 {
    fn fmt_attr(&self) -> String {
        self.to_string()
    }
}
impl FmtAttr for bool {
    fn fmt_attr(&self) -> String {
        self.to_string()
    }
}
impl FmtAttr for f32 {
    fn fmt_attr(&self) -> String {
        format!("{self:?}")
    }
}
impl FmtAttr for f64 {
    fn fmt_attr(&self) -> String {
        format!("{self:?}")
    }
}
impl FmtAttr for DType {
    fn fmt_attr(&self) -> String {
        self.name().to_string()
    }
}
impl<T: FmtAttr> FmtAttr for Vec<T> {
    fn fmt_attr(&self) -> String {
        let items: Vec<String> = self.iter().map(FmtAttr::fmt_attr).collect();
        format!("[{}]", items.join(","))
    }
}
impl<T: FmtAttr> FmtAttr for Option<T> {
    fn fmt_attr(&self) -> String {
        match self {
            Some(v) => v.fmt_attr(),
            None => "none".to_string(),
        }
    }
}
impl FmtAttr for i32 {
    fn fmt_attr(&self) -> String {
        self.to_string()
    }
}
impl FmtAttr for QOut {
    fn fmt_attr(&self) -> String {
        format!(
            "{}(zp={},{}..={})",
            self.dtype.name(),
            self.zero_point,
            self.min,
            self.max
        )
    }
}
impl FmtAttr for FixedPoint {
    fn fmt_attr(&self) -> String {
        format!("{}*2^{}", self.multiplier, self.shift)
    }
}
macro_rules! fmt_attr_debug_lowercase {
    ($($t:ty),*) => {$(
        impl FmtAttr for $t {
            fn fmt_attr(&self) -> String {
                crate::op::snake_case(&format!("{self:?}"))
            }
        }
    )*};
}
fmt_attr_debug_lowercase!(
    Rounding,
    PadMode,
    DepthToSpaceMode,
    ResizeMode,
    CoordTransform,
    NearestMode
);

/// `GlobalAveragePool` -> `global_average_pool`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

macro_rules! define_ops {
    ($(
        $(#[$doc:meta])*
        $variant:ident $({ $($field:ident : $fty:ty),* $(,)? })? = $family:ident;
    )*) => {
        /// An IR operation with its resolved attributes. See the module docs for conventions.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Op {
            $( $(#[$doc])* $variant $({ $($field: $fty),* })? ),*
        }

        impl Op {
            /// The op's name, as ONNX spells it.
            pub fn name(&self) -> &'static str {
                match self { $( Op::$variant { .. } => stringify!($variant) ),* }
            }

            pub fn family(&self) -> OpFamily {
                match self { $( Op::$variant { .. } => OpFamily::$family ),* }
            }

            /// Attribute names and formatted values, in declaration order. A fused `activation`
            /// is listed only when there is one, so unfused graphs dump as they always have.
            #[allow(unused_variables, clippy::vec_init_then_push)] // unit variants have no fields
            pub fn attrs(&self) -> Vec<(&'static str, String)> {
                let mut attrs = match self {
                    $( Op::$variant $({ $($field),* })? => {
                        #[allow(unused_mut)]
                        let mut v = Vec::new();
                        $($( v.push((stringify!($field), $field.fmt_attr())); )*)?
                        v
                    } ),*
                };
                attrs.retain(|(k, v)| {
                    !(*k == "activation" && v == "none" || k.ends_with("_perm") && v == "[]")
                });
                attrs
            }
        }

        /// The name of every op variant, in table order.
        pub const ALL_OPS: &[&str] = &[$(stringify!($variant)),*];
    };
}

define_ops! {
    Abs = Unary;
    Neg = Unary;
    Sqrt = Unary;
    Reciprocal = Unary;
    Exp = Unary;
    Log = Unary;
    Erf = Unary;
    Floor = Unary;
    Ceil = Unary;
    /// Rounds half to even, as ONNX specifies.
    Round = Unary;
    Relu = Unary;
    Sigmoid = Unary;
    Tanh = Unary;
    Softplus = Unary;
    Not = Unary;
    HardSwish = Unary;
    Identity = Unary;
    LeakyRelu { alpha: f32 } = Unary;
    Elu { alpha: f32 } = Unary;
    Selu { alpha: f32, gamma: f32 } = Unary;
    HardSigmoid { alpha: f32, beta: f32 } = Unary;
    Gelu { tanh_approx: bool } = Unary;
    /// Bounds are constants resolved at import; `None` is ONNX's default, the element type's
    /// lowest or largest value (`ops::unary::clip_bounds`), so float infinities clamp.
    Clip { min: Option<f64>, max: Option<f64> } = Unary;
    Cast { to: DType } = Unary;
    /// Inference-mode dropout: the identity, plus an all-true mask output when `mask` is set.
    Dropout { mask: bool } = Unary;

    /// `activation` is a fused epilogue (see [`Activation`]), as on Conv, Gemm and MatMul.
    Add { activation: Activation } = Binary;
    Sub = Binary;
    Mul = Binary;
    Div = Binary;
    Pow = Binary;
    Equal = Binary;
    Less = Binary;
    Greater = Binary;
    And = Binary;
    Or = Binary;
    PRelu = Binary;
    /// Variadic with broadcasting, like Min, Sum and Mean.
    Max = Binary;
    Min = Binary;
    Sum = Binary;
    Mean = Binary;
    /// Inputs: condition, x, y.
    Where = Binary;

    /// Inputs: X, W, optional B. NCHW (or NCW / NCDHW), weights OIHW.
    Conv {
        kernel_shape: Vec<usize>,
        strides: Vec<usize>,
        dilations: Vec<usize>,
        pads: Vec<usize>,
        group: usize,
        activation: Activation,
    } = Conv;
    /// Integer convolution (kiln's own; the importer and the QDQ lowering make it). Inputs: X
    /// (i8 or u8), W (i8 or i16: the weights with their zero point already subtracted), B (i32
    /// `[M]`: the bias with every weight-only zero-point term folded in) and, when `output` is
    /// set, the requantization multiplier and shift (i32, `[1]` or `[M]`, see
    /// `fixed_point`). `acc = B[m] + sum(X * W)` over the window in i32, where taps in the
    /// padding read `x_zero_point`; the result is `acc` as i32 when `output` is `None`, else
    /// `output.store(requantize(acc))`, rounded as `rounding` says (every requantizing op
    /// carries one: the model's reference decides, see `fixed_point::Rounding`).
    QConv {
        kernel_shape: Vec<usize>,
        strides: Vec<usize>,
        dilations: Vec<usize>,
        pads: Vec<usize>,
        group: usize,
        x_zero_point: i32,
        output: Option<QOut>,
        rounding: Rounding,
    } = Conv;
    /// Inputs: X, W (IOHW), optional B. `pads` already account for `output_shape`.
    ConvTranspose {
        kernel_shape: Vec<usize>,
        strides: Vec<usize>,
        dilations: Vec<usize>,
        pads: Vec<usize>,
        output_padding: Vec<usize>,
        group: usize,
        activation: Activation,
    } = Conv;

    /// numpy matmul semantics: batched, broadcasting, 1-D operands promoted. `a_perm` and
    /// `b_perm` (empty: none) read an operand of rank 2 or more through a permutation of its
    /// axes, as `MatMul(Transpose(a, a_perm), Transpose(b, b_perm))` would, without the copy:
    /// the `transpose-cleanup` pass folds the Transposes attention layers put on their operands.
    MatMul { activation: Activation, a_perm: Vec<usize>, b_perm: Vec<usize> } = MatMul;
    /// Integer matrix product with numpy batching. Inputs: A (i8 or u8, `[.., M, K]`), B (i8 or
    /// i16 `[.., K, N]`, zero point subtracted), bias (i32, B's shape without the K axis: every
    /// zero-point term is folded in, A has no padding) and, when `output` is set, multiplier and
    /// shift (`[1]` or `[N]`). `acc = bias[.., n] + sum_k A[.., m, k] * B[.., k, n]`.
    QMatMul { output: Option<QOut>, rounding: Rounding } = MatMul;
    /// Inputs: A, B, optional C (broadcast to the output).
    Gemm { alpha: f32, beta: f32, trans_a: bool, trans_b: bool, activation: Activation } = MatMul;

    /// With `indices`, a second i64 output holds the flat index of each maximum (row-major, or
    /// column-major over the spatial dims with `column_major_indices`), as ONNX defines it.
    MaxPool {
        kernel_shape: Vec<usize>,
        strides: Vec<usize>,
        dilations: Vec<usize>,
        pads: Vec<usize>,
        ceil_mode: bool,
        indices: bool,
        column_major_indices: bool,
    } = Pool;
    AveragePool {
        kernel_shape: Vec<usize>,
        strides: Vec<usize>,
        dilations: Vec<usize>,
        pads: Vec<usize>,
        ceil_mode: bool,
        count_include_pad: bool,
    } = Pool;
    /// Integer average pool. Taps in the padding read `x_zero_point` (and count with
    /// `count_include_pad`). Without `rescale` (input and output share scale and zero point, as
    /// TFLite requires; TFLite rounding only) the result is the sum of the raw values divided by
    /// the count, rounded half away from zero; with it, inputs 1 and 2 hold a multiplier and shift per count
    /// (i32 `[taps + 1]`) and the result is `output.store(requantize(sum(X - x_zero_point)))`.
    QAveragePool {
        kernel_shape: Vec<usize>,
        strides: Vec<usize>,
        dilations: Vec<usize>,
        pads: Vec<usize>,
        ceil_mode: bool,
        count_include_pad: bool,
        x_zero_point: i32,
        output: QOut,
        rescale: bool,
        rounding: Rounding,
    } = Pool;
    GlobalAveragePool = Pool;
    GlobalMaxPool = Pool;

    /// Inference form. Inputs: X, scale, B, mean, var.
    BatchNormalization { epsilon: f32 } = Norm;
    /// Inputs: X, scale, B.
    InstanceNormalization { epsilon: f32 } = Norm;
    /// Inputs: X, Scale, optional B. `outputs` is 1 (Y), 2 (+Mean) or 3 (+InvStdDev).
    LayerNormalization { axis: usize, epsilon: f32, outputs: usize } = Norm;
    /// `coerce_2d` selects the opset < 13 semantics (flatten to 2-D at `axis`).
    Softmax { axis: usize, coerce_2d: bool } = Norm;
    LogSoftmax { axis: usize, coerce_2d: bool } = Norm;
    /// Integer softmax over `axis` (of an i8/u8 X with scale s). Input 1 is the exponential
    /// table: entry `d` is `round(2^30 * exp(-d * s))` for `d = max - x` in `0..=255`. With
    /// `e` the row's entries and `S` their i64 sum, the result is
    /// `output.store(floor((e * inv_scale + S * 2^15) / (S * 2^16)))`: `e / S` divided by the
    /// output scale, whose inverse `inv_scale` is given in Q16.
    QSoftmax { axis: usize, inv_scale: i64, output: QOut } = Norm;

    /// `axes` is sorted and never empty (an empty ONNX axes list is resolved at import).
    ReduceMean { axes: Vec<usize>, keepdims: bool } = Reduce;
    ReduceSum { axes: Vec<usize>, keepdims: bool } = Reduce;
    ReduceMax { axes: Vec<usize>, keepdims: bool } = Reduce;
    ReduceMin { axes: Vec<usize>, keepdims: bool } = Reduce;
    ArgMax { axis: usize, keepdims: bool, select_last_index: bool } = Reduce;

    /// Also what Flatten, Squeeze and Unsqueeze import as: `shape` is the full output shape.
    Reshape { shape: Vec<usize> } = Movement;
    Transpose { perm: Vec<usize> } = Movement;
    Concat { axis: usize } = Movement;
    Split { axis: usize, sizes: Vec<usize> } = Movement;
    /// One entry per input dimension, normalized as ONNX specifies (clamped start/end).
    Slice { starts: Vec<i64>, ends: Vec<i64>, steps: Vec<i64> } = Movement;
    /// Pads may be negative (cropping).
    Pad { pads: Vec<i64>, mode: PadMode, value: f64 } = Movement;
    /// Inputs: data, indices (i32 or i64; negative indices count from the end).
    Gather { axis: usize } = Movement;
    /// `shape` is the full broadcast output shape.
    Expand { shape: Vec<usize> } = Movement;
    Tile { repeats: Vec<usize> } = Movement;
    DepthToSpace { blocksize: usize, mode: DepthToSpaceMode } = Movement;
    SpaceToDepth { blocksize: usize, mode: DepthToSpaceMode } = Movement;
    /// `scales` has one entry per input dimension (f64: when the model gives `sizes`, ONNX defines
    /// the scale as the exact ratio out / in); `out_shape` is the output shape.
    /// `roi` (start.., end.., one pair per dimension) and `extrapolation_value` are used only by
    /// `TfCropAndResize`; `cubic_coeff_a` and `exclude_outside` only by `Cubic`; `antialias`
    /// widens the linear and cubic filters when downsampling.
    Resize {
        mode: ResizeMode,
        coord: CoordTransform,
        nearest: NearestMode,
        scales: Vec<f64>,
        out_shape: Vec<usize>,
        cubic_coeff_a: f64,
        exclude_outside: bool,
        antialias: bool,
        roi: Vec<f64>,
        extrapolation_value: f64,
    } = Movement;
    /// Output: i64 vector of dims `start..end` of the input shape.
    Shape { start: usize, end: usize } = Movement;
    /// No inputs: a tensor of `shape` filled with `value`.
    ConstantOfShape { shape: Vec<usize>, value: f64, dtype: DType } = Movement;
    /// No inputs: `start + i * delta` for `i < count`.
    Range { start: f64, delta: f64, count: usize, dtype: DType } = Movement;

    /// Inputs: x (f32), y_scale, optional y_zero_point (its dtype is the output type).
    /// `axis` is set for per-axis scales.
    /// `block_size` > 0 selects blocked quantization along `axis`.
    QuantizeLinear { axis: Option<usize>, dtype: DType, block_size: usize } = Quant;
    /// Inputs: x (integer), x_scale, optional x_zero_point.
    DequantizeLinear { axis: Option<usize>, block_size: usize } = Quant;
    /// Integer rescaling of an i8/u8 tensor to another scale and zero point:
    /// `output.store(scale.apply(x - x_zero_point))`.
    Requantize { x_zero_point: i32, scale: FixedPoint, output: QOut, rounding: Rounding } = Quant;
    /// A 256-entry table lookup: any function of one i8 or u8 value. Input 1 is the table
    /// (dtype of the output, 256 entries indexed by `x - min(x's type)`).
    QTable = Quant;
    /// TFLite's int8 Add, broadcasting: both operands move to a shared scale with
    /// `2^left_shift` headroom, `a_scale`/`b_scale` rescale them, and `output_scale` takes the
    /// sum to the output: `output.store(output_scale.apply(a_scale.apply((a - a_zp) << ls) +
    /// b_scale.apply((b - b_zp) << ls)))`.
    QAdd {
        a_zero_point: i32,
        b_zero_point: i32,
        left_shift: i32,
        a_scale: FixedPoint,
        b_scale: FixedPoint,
        output_scale: FixedPoint,
        output: QOut,
        rounding: Rounding,
    } = Quant;
    /// TFLite's int8 Mul, broadcasting: `output.store(scale.apply((a - a_zp) * (b - b_zp)))`.
    QMul {
        a_zero_point: i32,
        b_zero_point: i32,
        scale: FixedPoint,
        output: QOut,
        rounding: Rounding,
    } = Quant;
}

impl Op {
    /// The fused activation of an op that can carry one (`None` for every other op).
    pub fn activation(&self) -> Activation {
        match self {
            Op::Conv { activation, .. }
            | Op::ConvTranspose { activation, .. }
            | Op::MatMul { activation, .. }
            | Op::Gemm { activation, .. }
            | Op::Add { activation } => *activation,
            _ => Activation::None,
        }
    }

    /// This op with its fused activation set to `act`, if it can carry one.
    pub fn with_activation(&self, act: Activation) -> Option<Op> {
        let mut op = self.clone();
        match &mut op {
            Op::Conv { activation, .. }
            | Op::ConvTranspose { activation, .. }
            | Op::MatMul { activation, .. }
            | Op::Gemm { activation, .. }
            | Op::Add { activation } => *activation = act,
            _ => return None,
        }
        Some(op)
    }

    /// Whether input `index` of this op holds quantization parameters (a scale, zero point,
    /// requantization multiplier or shift, or a lookup table computed from them) rather than
    /// model parameters (weights, biases): reports count those bytes apart.
    pub fn is_quantization_input(&self, index: usize) -> bool {
        match self {
            Op::QConv { .. } | Op::QMatMul { .. } => index >= 3,
            Op::QAveragePool { .. }
            | Op::QSoftmax { .. }
            | Op::QTable
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. } => index >= 1,
            _ => false,
        }
    }

    /// The name used in the text dump: `GlobalAveragePool` prints as `global_average_pool`.
    pub fn dump_name(&self) -> String {
        snake_case(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("GlobalAveragePool"), "global_average_pool");
        assert_eq!(snake_case("PRelu"), "p_relu");
        assert_eq!(snake_case("ConvTranspose"), "conv_transpose");
        assert_eq!(snake_case("HalfPixel"), "half_pixel");
    }

    #[test]
    fn fused_activation_is_listed_only_when_set() {
        let add = Op::Add {
            activation: Activation::None,
        };
        assert!(add.attrs().is_empty());
        let relu6 = Activation::Clip {
            min: Some(0.0),
            max: Some(6.0),
        };
        let fused = add.with_activation(relu6).unwrap();
        assert_eq!(
            fused.attrs(),
            vec![("activation", "clip(0.0,6.0)".to_string())]
        );
        assert_eq!(fused.activation(), relu6);
        assert_eq!(Activation::from_op(&relu6.as_op().unwrap()), Some(relu6));
        assert!(Op::Relu.with_activation(relu6).is_none());
    }

    #[test]
    fn attrs_are_listed_in_order() {
        let op = Op::Gemm {
            alpha: 1.0,
            beta: 0.5,
            trans_a: false,
            trans_b: true,
            activation: Default::default(),
        };
        let attrs = op.attrs();
        assert_eq!(attrs[1], ("beta", "0.5".to_string()));
        assert_eq!(attrs[3], ("trans_b", "true".to_string()));
        assert!(Op::Relu.attrs().is_empty());
    }
}
