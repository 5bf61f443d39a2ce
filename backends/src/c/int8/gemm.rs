//! Convolutions with one group (QConv) and products by a constant matrix (QMatMul) as one
//! matrix product `Y[c][p] = out(B[c] + sum_k W[c][k] * col_p[k])`: `c` an output channel
//! (a column of B for QMatMul), `p` a pixel (a row of A), `col_p` the input values pixel
//! `p` reads (its window, padding taps reading the zero point), in an order `k` kiln picks
//! and packs the weights in. Outputs are computed in blocks of channels x pixels, each
//! loaded weight and input value feeding several accumulators.
//!
//! This file finds the problem (geometry, weights, output stage); one emitter per ISA
//! writes its kernels: `dsp` (Armv7E-M SMLAD), `mve` (Helium VMLADAVA) and `scalar`
//! (RV32IMAC).

use kiln_ir::{DType, Op};

mod dsp;
mod lanes;
mod mve;
mod scalar;

use super::requant::{bounds, input_range, OutputStage};
use super::{Generated, Isa, Layer, Packed};
use crate::error::BackendError;

/// Generates the layer function of `layer` if this file handles its op and operands.
pub(super) fn generate(layer: &Layer) -> Result<Option<Generated>, BackendError> {
    let Some(problem) = Problem::new(layer) else {
        return Ok(None);
    };
    let generated = match layer.isa {
        Isa::ArmMve => match mve::mve(layer, &problem) {
            Some(g) => g,
            None => dsp::dsp(layer, &problem),
        },
        Isa::ArmDsp => dsp::dsp(layer, &problem),
        Isa::Scalar => match scalar::scalar_band(layer, &problem)
            .or_else(|| lanes::scalar_lanes(layer, &problem))
            .or_else(|| scalar::scalar_matvec(layer, &problem))
        {
            Some(g) => g,
            None => scalar::scalar(layer, &problem),
        },
        Isa::Portable => return Ok(None),
    };
    Ok(Some(generated))
}

/// A convolution's geometry (1-D convolutions have `h = kh = 1`).
#[derive(Clone, Debug)]
struct ConvGeom {
    ic: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: usize,
    pl: usize,
    zp: i32,
}

impl ConvGeom {
    fn taps(&self) -> usize {
        self.kh * self.kw
    }

    fn plane(&self) -> usize {
        self.h * self.w
    }

    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.pt == 0
            && self.pl == 0
            && self.h == self.oh
            && self.w == self.ow
    }

    /// Output rows (or columns) `lo..hi` whose window lies inside the input along one axis.
    fn interior(
        out: usize,
        input: usize,
        k: usize,
        s: usize,
        d: usize,
        p: usize,
    ) -> (usize, usize) {
        let span = (k - 1) * d;
        let lo = p.div_ceil(s).min(out);
        let hi = if input + p < span + 1 {
            0
        } else {
            ((input + p - span - 1) / s + 1).min(out)
        };
        (lo, hi.max(lo))
    }

    fn rows_inside(&self) -> (usize, usize) {
        Self::interior(self.oh, self.h, self.kh, self.sh, self.dh, self.pt)
    }

    fn cols_inside(&self) -> (usize, usize) {
        Self::interior(self.ow, self.w, self.kw, self.sw, self.dw, self.pl)
    }

    /// The input offset (from the window's top-left corner) of tap `t` of channel `c`.
    fn offset(&self, c: usize, t: usize) -> usize {
        let (ky, kx) = (t / self.kw, t % self.kw);
        c * self.plane() + ky * self.dh * self.w + kx * self.dw
    }
}

/// The reduction order of the packed weights and the columns.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KOrder {
    /// `k = c * taps + t` (the weights' own order).
    ChannelMajor,
    /// `k = t * ic + c`: each tap's channels are consecutive (pairs and quads of channels).
    TapMajor,
}

/// Where a pixel's inputs come from.
#[derive(Clone, Debug)]
enum Source {
    Conv(ConvGeom, KOrder),
    /// Row `p` of A: `k` consecutive values.
    Rows,
}

/// The matrix product a layer computes.
#[derive(Clone, Debug)]
struct Problem {
    source: Source,
    /// Output channels, reduction length, pixels per batch item, batch items.
    m: usize,
    k: usize,
    n: usize,
    batch: usize,
    /// Elements of one batch item of the input and of the output.
    in_size: usize,
    out_size: usize,
    /// Output strides of a channel and of a pixel.
    y_chan: usize,
    y_pix: usize,
    x_type: DType,
    /// `weights[c * k + k']` in the weights' own order (`w[c][ic][ky][kx]`, or B transposed).
    weights: Vec<i8>,
    stage: OutputStage,
}

impl Problem {
    fn new(layer: &Layer) -> Option<Problem> {
        let (output, rounding) = match &layer.node.op {
            Op::QConv {
                output: Some(o),
                rounding,
                ..
            }
            | Op::QMatMul {
                output: Some(o),
                rounding,
            } => (*o, *rounding),
            _ => return None,
        };
        let x = layer.input(0)?;
        let y = layer.output(0)?;
        if !matches!(x.dtype, DType::I8 | DType::U8)
            || !matches!(output.dtype, DType::I8 | DType::U8)
        {
            return None;
        }
        let w = layer.constant(1)?;
        let bias = layer.constant(2)?;
        let (mult, shift) = (layer.constant(3)?, layer.constant(4)?);
        let (kiln_ir::TensorData::I8(wd), kiln_ir::TensorData::I32(bd)) = (w.data(), bias.data())
        else {
            return None;
        };
        let (kiln_ir::TensorData::I32(md), kiln_ir::TensorData::I32(sd)) =
            (mult.data(), shift.data())
        else {
            return None;
        };
        let (source, m, k, n, batch, y_chan, y_pix, weights) = match &layer.node.op {
            Op::QConv {
                kernel_shape,
                strides,
                dilations,
                pads,
                group,
                x_zero_point,
                ..
            } => {
                let two = |v: &[usize], one: usize| -> Option<(usize, usize)> {
                    match v {
                        [a] => Some((one, *a)),
                        [a, b] => Some((*a, *b)),
                        _ => None,
                    }
                };
                if *group != 1 || !(3..=4).contains(&x.rank()) || y.rank() != x.rank() {
                    return None;
                }
                let (kh, kw) = two(kernel_shape, 1)?;
                let (sh, sw) = two(strides, 1)?;
                let (dh, dw) = two(dilations, 1)?;
                let (pt, pl) = match pads.as_slice() {
                    [l, _] => (0, *l),
                    [t, l, _, _] => (*t, *l),
                    _ => return None,
                };
                let sp = |t: &kiln_ir::TensorType| match t.shape.as_slice() {
                    [b, c, w] => (*b, *c, 1, *w),
                    [b, c, h, w] => (*b, *c, *h, *w),
                    _ => (0, 0, 0, 0),
                };
                let (b, ic, h, wd_) = sp(x);
                let (_, oc, oh, ow) = sp(y);
                let g = ConvGeom {
                    ic,
                    h,
                    w: wd_,
                    oh,
                    ow,
                    kh,
                    kw,
                    sh,
                    sw,
                    dh,
                    dw,
                    pt,
                    pl,
                    zp: *x_zero_point,
                };
                if wd.len() != oc * ic * kh * kw || bd.len() != oc || oc == 0 || ic == 0 {
                    return None;
                }
                let order = if ic % 4 == 0 {
                    KOrder::TapMajor
                } else {
                    KOrder::ChannelMajor
                };
                (
                    Source::Conv(g, order),
                    oc,
                    ic * kh * kw,
                    oh * ow,
                    b,
                    oh * ow,
                    1,
                    wd.clone(),
                )
            }
            Op::QMatMul { .. } => {
                let b = layer.input(1)?;
                if b.rank() != 2 || x.rank() < 2 || y.rank() != x.rank() {
                    return None;
                }
                let (k, cols) = (b.shape[0], b.shape[1]);
                let rows = x.shape[x.rank() - 2];
                if x.shape[x.rank() - 1] != k || bd.len() != cols {
                    return None;
                }
                let batch = x.numel() / (rows * k).max(1);
                // B transposed: one row of k weights per output column.
                let t = (0..cols)
                    .flat_map(|c| (0..k).map(move |i| (c, i)))
                    .map(|(c, i)| wd[i * cols + c])
                    .collect();
                (Source::Rows, cols, k, rows, batch, 1, cols, t)
            }
            _ => return None,
        };
        if m == 0 || k == 0 || n == 0 || md.is_empty() || sd.is_empty() {
            return None;
        }
        if (md.len() != 1 && md.len() != m) || (sd.len() != 1 && sd.len() != m) {
            return None;
        }
        let b = bounds(bd, &weights, input_range(x.dtype));
        let stage = OutputStage::new(rounding, output, md, sd, &b);
        Some(Problem {
            source,
            m,
            k,
            n,
            batch,
            in_size: x.numel() / batch.max(1),
            out_size: y.numel() / batch.max(1),
            y_chan,
            y_pix,
            x_type: x.dtype,
            weights,
            stage,
        })
    }

    /// The weight of channel `c` at position `kk` of the reduction order.
    fn weight(&self, c: usize, kk: usize) -> i8 {
        if kk >= self.k {
            return 0;
        }
        let src = match &self.source {
            Source::Conv(g, KOrder::TapMajor) => {
                let (t, ic) = (kk / g.ic, kk % g.ic);
                ic * g.taps() + t
            }
            _ => kk,
        };
        self.weights[c * self.k + src]
    }

    /// The range of the input elements.
    fn x_range(&self) -> (i64, i64) {
        input_range(self.x_type)
    }

    /// C type of the input elements.
    fn x_ctype(&self) -> &'static str {
        if self.x_type == DType::U8 {
            "uint8_t"
        } else {
            "int8_t"
        }
    }
}

/// The per-channel requantization records (in place of the multiplier input), if the
/// output stage reads any, and the C name to pass for them.
fn records(layer: &Layer, p: &Problem) -> (Option<(usize, Packed)>, String) {
    if p.stage.record_len() == 0 {
        return (None, "multiplier".into());
    }
    let items = p.stage.records().iter().map(|v| int_literal(*v)).collect();
    let packed = Packed {
        ctype: "int32_t",
        items,
        note: format!(
            "requantization records ({} words per channel)",
            p.stage.record_len()
        ),
    };
    (Some((3, packed)), layer.packed_name(3))
}

/// A C literal of an i32.
fn int_literal(v: i32) -> String {
    if v == i32::MIN {
        "INT32_MIN".into()
    } else {
        v.to_string()
    }
}

/// `name` followed by a list of statements, one level deeper.
fn push_lines(s: &mut String, depth: usize, lines: &[String]) {
    for l in lines {
        for _ in 0..depth {
            s.push_str("    ");
        }
        s.push_str(l);
        s.push('\n');
    }
}

/// Requantizes and stores the accumulators `a0..a{mo}` of the output columns from `c0` on
/// (`{name}_out` is the layer's output function).
fn store_columns(p: &Problem, name: &str, c0: &str, mo: usize, l: &mut Vec<String>) {
    let out_t = p.stage.c_type();
    for i in 0..mo {
        l.extend(p.stage.load("multiplier", &format!("{c0} + {i}"), i));
    }
    for i in 0..mo {
        l.push(format!(
            "y[{c0} + {i}] = ({out_t}){};",
            p.stage.call(&format!("{name}_out"), &format!("a{i}"), i)
        ));
    }
}

/// The opening line of the row kernel `{name}_{kernel}`: weights `W` (of C type `w_ctype`),
/// biases, requantization records and shift, then one row of inputs and one of outputs.
fn row_kernel_start(p: &Problem, name: &str, kernel: &str, w_ctype: &str) -> String {
    format!(
        "static void {name}_{kernel}(const {w_ctype} *W, const int32_t *B, const int32_t *multiplier, const int32_t *shift, const {} *x, {} *y) {{\n",
        p.x_ctype(),
        p.stage.c_type()
    )
}

/// The first statements of a kernel function: its weight pointer `w` (of C type `w_ctype`)
/// at `W`, and the requantization arguments marked used (the output stage may not read them).
fn kernel_prologue(w_ctype: &str) -> Vec<String> {
    vec![
        format!("const {w_ctype} *w = W;"),
        "(void)multiplier;".into(),
        "(void)shift;".into(),
    ]
}

/// The helpers and body of a layer computed row by row by the kernel `{name}_{kernel}`
/// (`function`, opened by [`row_kernel_start`]), its records passed as `rq_name`.
fn by_rows(
    layer: &Layer,
    p: &Problem,
    kernel: &str,
    function: &str,
    rq_name: &str,
) -> (String, String) {
    let name = &layer.kernel.name;
    let mut helpers = p.stage.function(&format!("{name}_out"));
    helpers.push_str(function);
    let (w_name, bias) = (layer.packed_name(1), layer.param(2));
    let call = |x: &str, y: &str| {
        format!("{name}_{kernel}({w_name}, {bias}, {rq_name}, shift, {x}, {y});")
    };
    let lines = vec![
        format!("for (int32_t p = 0; p < {}; ++p) {{", p.n),
        format!(
            "    {}",
            call(&format!("x + p * {}", p.k), &format!("y + p * {}", p.y_pix))
        ),
        "}".into(),
    ];
    (helpers, wrap(layer, p, lines))
}

/// The `m` output columns in blocks of `mo`: a loop over the full blocks (`c` their first
/// column), then one block of the rest; `block(width, first column, lines)` writes a block.
fn column_blocks(
    m: usize,
    mo: usize,
    block: impl Fn(usize, &str, &mut Vec<String>),
) -> Vec<String> {
    column_blocks_with(m, mo, "c", None, block)
}

/// [`column_blocks`] with the loop variable named `var` and `step` (a statement) closing each
/// full block, e.g. advancing the output pointer.
fn column_blocks_with(
    m: usize,
    mo: usize,
    var: &str,
    step: Option<&str>,
    block: impl Fn(usize, &str, &mut Vec<String>),
) -> Vec<String> {
    let mut l = Vec::new();
    let full = m / mo * mo;
    if full > 0 {
        l.push(format!(
            "for (int32_t {var} = 0; {var} < {full}; {var} += {mo}) {{"
        ));
        let mut inner = Vec::new();
        block(mo, var, &mut inner);
        inner.extend(step.map(str::to_string));
        l.extend(inner.into_iter().map(|x| format!("    {x}")));
        l.push("}".into());
    }
    if m > full {
        l.push("{".into());
        let mut inner = Vec::new();
        block(m - full, &full.to_string(), &mut inner);
        l.extend(inner.into_iter().map(|x| format!("    {x}")));
        l.push("}".into());
    }
    l
}

/// A layer function whose weights (input 1) are read packed as `weights`, with the
/// requantization records `records` where the output stage has them.
fn generated(
    helpers: String,
    body: String,
    weights: Packed,
    records: Option<(usize, Packed)>,
) -> Generated {
    let mut packed = vec![(1, weights)];
    packed.extend(records);
    Generated {
        helpers,
        body,
        packed,
    }
}

/// The layer body around `lines`: the batch loop (or a block), with `x` and `y` pointing at
/// the item's input and output.
fn wrap(layer: &Layer, p: &Problem, lines: Vec<String>) -> String {
    let (xt, out_t) = (p.x_ctype(), p.stage.c_type());
    let (xn, yn) = (layer.param(0), layer.param(5));
    let mut wrapped = vec!["(void)multiplier;".to_string(), "(void)shift;".into()];
    if p.batch > 1 {
        wrapped.push(format!("for (int32_t b = 0; b < {}; ++b) {{", p.batch));
        wrapped.push(format!("    const {xt} *x = {xn} + b * {};", p.in_size));
        wrapped.push(format!("    {out_t} *y = {yn} + b * {};", p.out_size));
    } else {
        wrapped.push("{".into());
        wrapped.push(format!("    const {xt} *x = {xn};"));
        wrapped.push(format!("    {out_t} *y = {yn};"));
    }
    wrapped.extend(lines.into_iter().map(|l| format!("    {l}")));
    wrapped.push("}".into());
    let mut body = String::new();
    push_lines(&mut body, 1, &wrapped);
    body
}

/// The packed weights as C literals of int32 words (little-endian bytes).
fn words(bytes: &[i8]) -> Vec<String> {
    bytes
        .chunks(4)
        .map(|c| {
            let mut v = 0u32;
            for (i, &b) in c.iter().enumerate() {
                v |= u32::from(b as u8) << (8 * i);
            }
            let v = v as i32;
            if v == i32::MIN {
                "INT32_MIN".to_string()
            } else {
                v.to_string()
            }
        })
        .collect()
}
