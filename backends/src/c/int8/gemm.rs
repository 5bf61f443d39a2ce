//! Convolutions with one group (QConv) and products by a constant matrix (QMatMul) as one
//! matrix product `Y[c][p] = out(B[c] + sum_k W[c][k] * col_p[k])`: `c` an output channel
//! (a column of B for QMatMul), `p` a pixel (a row of A), `col_p` the input values pixel
//! `p` reads (its window, padding taps reading the zero point), in an order `k` kiln picks
//! and packs the weights in. Outputs are computed in blocks of channels x pixels, each
//! loaded weight and input value feeding several accumulators.
//!
//! - Arm DSP: `col_p` is built once per pixel pair as 16-bit pairs (the im2col buffer is a
//!   local of the layer function), and weights stay 8-bit in flash, four per word, stored so
//!   that one `SXTB16` and one `SXTB16 ROR 8` give the pairs matching the columns; each
//!   `SMLAD` adds two products. Blocks of 2 channels x 2 pixels.
//! - Scalar: 8-bit columns (a pointwise convolution reads its input rows directly), weights
//!   interleaved by blocks of 4 channels so one pointer walks them, blocks of 4 x 4.

use kiln_ir::{DType, Op};

use super::requant::{bounds, OutputStage};
use super::{Generated, Isa, Layer, Packed};
use crate::error::BackendError;

/// Generates the layer function of `layer` if this file handles its op and operands.
pub(super) fn generate(layer: &Layer) -> Result<Option<Generated>, BackendError> {
    let Some(problem) = Problem::new(layer) else {
        return Ok(None);
    };
    let generated = match layer.isa {
        Isa::ArmDsp | Isa::ArmMve => dsp(layer, &problem),
        Isa::Scalar => scalar(layer, &problem),
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
        let x_range = if x.dtype == DType::U8 {
            (0, 255)
        } else {
            (-128, 127)
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
        let b = bounds(bd, &weights, x_range);
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

// ---------------------------------------------------------------------------------------
// Arm DSP

/// The Arm DSP layer: columns of 16-bit pairs for two pixels at a time.
fn dsp(layer: &Layer, p: &Problem) -> Generated {
    let name = &layer.kernel.name;
    let kp = p.k.div_ceil(4) * 4;
    let kq = kp / 4;
    // Weights: channel rows of kp bytes, each group of four stored [w0, w2, w1, w3] so that
    // SXTB16 gives the pair (w0, w1) and SXTB16 ROR 8 the pair (w2, w3).
    let mut packed = Vec::with_capacity(p.m * kp);
    for c in 0..p.m {
        for g in 0..kq {
            for i in [0, 2, 1, 3] {
                packed.push(p.weight(c, 4 * g + i));
            }
        }
    }
    let w_name = layer.packed_name(1);
    let (rq, rq_name) = records(layer, p);
    let mut helpers = String::new();
    helpers.push_str(&p.stage.function(&format!("{name}_out")));
    let out_t = p.stage.c_type();
    let mut body = String::new();
    let xt = p.x_ctype();
    push_lines(
        &mut body,
        1,
        &[
            format!("int32_t col[{}];", 2 * kp / 2),
            "(void)multiplier;".into(),
            "(void)shift;".into(),
        ],
    );
    let mut lines = Vec::new();
    let bias = layer.param(2);
    let used = std::cell::Cell::new([false; 2]);
    let call = |np: usize, y: &str| {
        let mut u = used.get();
        u[np - 1] = true;
        used.set(u);
        format!("{name}_mm{np}({w_name}, {bias}, {rq_name}, shift, col, {y});")
    };
    match &p.source {
        Source::Rows => {
            // Two rows of A at a time: pairs of consecutive values.
            if p.n >= 2 {
                lines.push(format!("for (int32_t p = 0; p + 1 < {}; p += 2) {{", p.n));
                lines.push(format!("    const {xt} *a = x + p * {};", p.k));
                lines.push(format!("    const {xt} *a1 = a + {};", p.k));
                lines.push(format!("    for (int32_t j = 0; j < {}; ++j) {{", kp / 2));
                lines.push(pair_from_row("a", p.k, "j / 2 * 4 + j % 2"));
                lines.push(pair_from_row("a1", p.k, "j / 2 * 4 + j % 2 + 2"));
                lines.push("    }".into());
                lines.push(format!("    {}", call(2, &format!("y + p * {}", p.y_pix))));
                lines.push("}".into());
            }
            if p.n % 2 == 1 {
                lines.push("{".into());
                lines.push(format!("    const {xt} *a = x + {};", (p.n - 1) * p.k));
                lines.push(format!("    for (int32_t j = 0; j < {}; ++j) {{", kp / 2));
                lines.push(pair_from_row("a", p.k, "j"));
                lines.push("    }".into());
                lines.push(format!(
                    "    {}",
                    call(1, &format!("y + {}", (p.n - 1) * p.y_pix))
                ));
                lines.push("}".into());
            }
        }
        Source::Conv(g, order) => {
            if g.pointwise() && g.ic % 2 == 0 {
                lines.extend(dsp_pointwise(p, g, kp, &call));
            } else {
                lines.extend(dsp_conv_rows(p, g, *order, kp, &call));
            }
        }
    }
    for np in [1, 2] {
        if used.get()[np - 1] {
            helpers.push_str(&dsp_block_fn(name, p, np, kq, out_t));
        }
    }
    let (xn, yn) = (layer.param(0), layer.param(5));
    let mut wrapped = Vec::new();
    if p.batch > 1 {
        wrapped.push(format!("for (int32_t b = 0; b < {}; ++b) {{", p.batch));
        wrapped.push(format!("    const {xt} *x = {xn} + b * {};", p.in_size));
        wrapped.push(format!("    {out_t} *y = {yn} + b * {};", p.out_size));
        wrapped.extend(lines.into_iter().map(|l| format!("    {l}")));
        wrapped.push("}".into());
    } else {
        wrapped.push("{".into());
        wrapped.push(format!("    const {xt} *x = {xn};"));
        wrapped.push(format!("    {out_t} *y = {yn};"));
        wrapped.extend(lines.into_iter().map(|l| format!("    {l}")));
        wrapped.push("}".into());
    }
    push_lines(&mut body, 1, &wrapped);
    let mut packed_inputs = vec![(
        1,
        Packed {
            ctype: "int32_t",
            items: words(&packed),
            note: format!(
                "int8 weights packed for {}: {} rows of {kq} words, each [w0, w2, w1, w3]",
                layer.isa.name(),
                p.m
            ),
        },
    )];
    packed_inputs.extend(rq);
    Generated {
        helpers,
        body,
        packed: packed_inputs,
    }
}

/// A statement setting col word `word` to the pair `(row[k], row[k + 1])` of a row of `len`
/// values (`k` and `word` C expressions in `j`); values past the row are zero.
fn pair_from_row(row: &str, len: usize, word: &str) -> String {
    format!(
        "        col[{word}] = kiln_pkhbt(2 * j < {len} ? {row}[2 * j] : 0, 2 * j + 1 < {len} ? {row}[2 * j + 1] : 0);"
    )
}

/// The function computing every output channel of `np` pixels whose columns are in `col`.
fn dsp_block_fn(name: &str, p: &Problem, np: usize, kq: usize, out_t: &str) -> String {
    let mut s = format!(
        "static void {name}_mm{np}(const int32_t *W, const int32_t *B, const int32_t *multiplier, const int32_t *shift, const int32_t *col, {out_t} *y) {{\n"
    );
    let mut l = vec![
        "const int32_t *w = W;".to_string(),
        "(void)multiplier;".into(),
        "(void)shift;".into(),
    ];
    let full = p.m / 2;
    let block = |mo: usize, l: &mut Vec<String>, c0: &str| {
        for i in 0..mo {
            for j in 0..np {
                let init = if j == 0 {
                    format!("B[{c0} + {i}]")
                } else {
                    format!("a{i}0")
                };
                l.push(format!("int32_t a{i}{j} = {init};"));
            }
        }
        l.push("const int32_t *c = col;".into());
        l.push(format!("for (int32_t g = 0; g < {kq}; ++g) {{"));
        for j in 0..np {
            l.push(format!(
                "    const int32_t x{j}0 = c[{}], x{j}1 = c[{}];",
                2 * j,
                2 * j + 1
            ));
        }
        for i in 0..mo {
            l.push(format!("    const int32_t u{i} = w[{}];", i * kq));
        }
        for i in 0..mo {
            l.push(format!("    int32_t t{i} = kiln_sxtb16(u{i});"));
            for j in 0..np {
                l.push(format!("    a{i}{j} = kiln_smlad(t{i}, x{j}0, a{i}{j});"));
            }
            l.push(format!("    t{i} = kiln_sxtb16_ror8(u{i});"));
            for j in 0..np {
                l.push(format!("    a{i}{j} = kiln_smlad(t{i}, x{j}1, a{i}{j});"));
            }
        }
        l.push(format!("    w += 1;\n        c += {};", 2 * np));
        l.push("}".into());
        if mo > 1 {
            l.push(format!("w += {};", (mo - 1) * kq));
        }
        for i in 0..mo {
            l.extend(p.stage.load("multiplier", &format!("{c0} + {i}"), i));
        }
        for i in 0..mo {
            for j in 0..np {
                l.push(format!(
                    "y[{}] = ({out_t}){};",
                    i * p.y_chan + j * p.y_pix,
                    p.stage.call(&format!("{name}_out"), &format!("a{i}{j}"), i)
                ));
            }
        }
    };
    if full > 0 {
        l.push(format!(
            "for (int32_t oc = 0; oc < {}; oc += 2) {{",
            2 * full
        ));
        let mut inner = Vec::new();
        block(2, &mut inner, "oc");
        inner.push(format!("y += {};", 2 * p.y_chan));
        l.extend(inner.into_iter().map(|x| format!("    {x}")));
        l.push("}".into());
    }
    if p.m % 2 == 1 {
        l.push("{".into());
        let mut inner = Vec::new();
        block(1, &mut inner, &format!("{}", p.m - 1));
        l.extend(inner.into_iter().map(|x| format!("    {x}")));
        l.push("}".into());
    }
    push_lines(&mut s, 1, &l);
    s.push_str("}\n");
    s
}

/// The extension of a loaded byte pair word: signed or unsigned lanes.
fn ext(p: &Problem, ror: bool) -> &'static str {
    match (p.x_type == DType::U8, ror) {
        (false, false) => "kiln_sxtb16",
        (false, true) => "kiln_sxtb16_ror8",
        (true, false) => "kiln_uxtb16",
        (true, true) => "kiln_uxtb16_ror8",
    }
}

/// Pointwise convolution with an even channel count: the pixel plane is one row, pixel
/// pairs are adjacent bytes of each channel's row.
fn dsp_pointwise(
    p: &Problem,
    g: &ConvGeom,
    kp: usize,
    call: &dyn Fn(usize, &str) -> String,
) -> Vec<String> {
    let n = p.n;
    let quads = g.ic / 4;
    let mut l = vec![format!("for (int32_t p = 0; p + 1 < {n}; p += 2) {{")];
    l.push(format!("    const {} *s = x + p;", p.x_ctype()));
    l.push("    int32_t *c = col;".into());
    if quads > 0 {
        l.push(format!("    for (int32_t q = 0; q < {quads}; ++q) {{"));
        l.push(format!(
            "        const int32_t h0 = (int32_t)(kiln_load_u16(s) | (kiln_load_u16(s + {n}) << 16));"
        ));
        l.push(format!(
            "        const int32_t h1 = (int32_t)(kiln_load_u16(s + {}) | (kiln_load_u16(s + {}) << 16));",
            2 * n,
            3 * n
        ));
        l.push(format!("        c[0] = {}(h0);", ext(p, false)));
        l.push(format!("        c[2] = {}(h0);", ext(p, true)));
        l.push(format!("        c[1] = {}(h1);", ext(p, false)));
        l.push(format!("        c[3] = {}(h1);", ext(p, true)));
        l.push(format!("        c += 4;\n        s += {};", 4 * n));
        l.push("    }".into());
    }
    if g.ic % 4 == 2 {
        l.push(format!(
            "    {{\n        const int32_t h0 = (int32_t)(kiln_load_u16(s) | (kiln_load_u16(s + {n}) << 16));"
        ));
        l.push(format!("        c[0] = {}(h0);", ext(p, false)));
        l.push(format!("        c[2] = {}(h0);", ext(p, true)));
        l.push("        c[1] = 0;\n        c[3] = 0;\n    }".into());
    }
    l.push(format!("    {}", call(2, "y + p")));
    l.push("}".into());
    if n % 2 == 1 {
        l.push("{".into());
        l.push(format!("    const {} *s = x + {};", p.x_ctype(), n - 1));
        l.push(format!("    for (int32_t j = 0; j < {}; ++j) {{", kp / 2));
        l.push("        const int32_t k = 2 * j;".into());
        l.push(format!(
            "        col[j] = kiln_pkhbt(k < {ic} ? s[k * {n}] : 0, k + 1 < {ic} ? s[(k + 1) * {n}] : 0);",
            ic = g.ic
        ));
        l.push("    }".into());
        l.push(format!("    {}", call(1, &format!("y + {}", n - 1))));
        l.push("}".into());
    }
    l
}

/// Any other convolution: output rows, pixel pairs along each row (a single pixel ends an
/// odd row).
fn dsp_conv_rows(
    p: &Problem,
    g: &ConvGeom,
    order: KOrder,
    kp: usize,
    call: &dyn Fn(usize, &str) -> String,
) -> Vec<String> {
    let mut l = vec![format!("for (int32_t oy = 0; oy < {}; ++oy) {{", g.oh)];
    l.push(format!("    const int32_t iy0 = oy * {} - {};", g.sh, g.pt));
    l.push("    int32_t ox = 0;".into());
    l.push(format!("    for (; ox + 1 < {}; ox += 2) {{", g.ow));
    let fill2 = match order {
        KOrder::TapMajor => dsp_im2col_taps(p, g, 2),
        KOrder::ChannelMajor => dsp_im2col_unrolled_or_generic(p, g, kp, 2),
    };
    l.extend(fill2.into_iter().map(|x| format!("        {x}")));
    l.push(format!(
        "        {}",
        call(2, &format!("y + oy * {} + ox", g.ow))
    ));
    l.push("    }".into());
    if g.ow % 2 == 1 {
        l.push("    {".into());
        let fill1 = match order {
            KOrder::TapMajor => dsp_im2col_taps(p, g, 1),
            KOrder::ChannelMajor => dsp_im2col_generic(p, g, kp, 1),
        };
        l.extend(fill1.into_iter().map(|x| format!("        {x}")));
        l.push(format!(
            "        {}",
            call(1, &format!("y + oy * {} + ox", g.ow))
        ));
        l.push("    }".into());
    }
    l.push("}".into());
    l
}

/// The col word holding the pair starting at even position `k` for pixel `j` of `np`.
fn dsp_word(k: usize, j: usize, np: usize) -> usize {
    (k / 4) * 2 * np + j * 2 + (k % 4) / 2
}

/// Tap-major columns (channels a multiple of 4): per tap, each pixel's channel quads; the
/// two pixels of a stride-1 pair are adjacent bytes, loaded as halfwords.
fn dsp_im2col_taps(p: &Problem, g: &ConvGeom, np: usize) -> Vec<String> {
    let plane = g.plane();
    let quads = g.ic / 4;
    let zp = g.zp;
    let zp_pair = ((zp as u32 & 0xffff) | ((zp as u32) << 16)) as i32;
    let mut l = vec![format!("const int32_t bx = ox * {} - {};", g.sw, g.pl)];
    l.push(format!("for (int32_t ky = 0; ky < {}; ++ky) {{", g.kh));
    l.push(format!("    const int32_t iy = iy0 + ky * {};", g.dh));
    l.push(format!("    const int row = iy >= 0 && iy < {};", g.h));
    l.push(format!("    for (int32_t kx = 0; kx < {}; ++kx) {{", g.kw));
    l.push(format!(
        "        int32_t *c = col + (ky * {} + kx) * {};",
        g.kw,
        g.ic * np / 2
    ));
    for j in 0..np {
        l.push(format!(
            "        const int32_t ix{j} = bx + kx * {} + {};",
            g.dw,
            j * g.sw
        ));
        l.push(format!(
            "        const int in{j} = row && ix{j} >= 0 && ix{j} < {};",
            g.w
        ));
    }
    if np == 2 && g.sw == 1 {
        l.push("        if (in0 && in1) {".into());
        l.push(format!(
            "            const {} *s = x + iy * {} + ix0;",
            p.x_ctype(),
            g.w
        ));
        l.push(format!(
            "            for (int32_t q = 0; q < {quads}; ++q) {{"
        ));
        l.push(format!(
            "                const int32_t h0 = (int32_t)(kiln_load_u16(s) | (kiln_load_u16(s + {plane}) << 16));"
        ));
        l.push(format!(
            "                const int32_t h1 = (int32_t)(kiln_load_u16(s + {}) | (kiln_load_u16(s + {}) << 16));",
            2 * plane,
            3 * plane
        ));
        l.push(format!("                c[0] = {}(h0);", ext(p, false)));
        l.push(format!("                c[2] = {}(h0);", ext(p, true)));
        l.push(format!("                c[1] = {}(h1);", ext(p, false)));
        l.push(format!("                c[3] = {}(h1);", ext(p, true)));
        l.push(format!(
            "                c += 4;\n                s += {};",
            4 * plane
        ));
        l.push("            }".into());
        l.push("            continue;".into());
        l.push("        }".into());
    }
    for j in 0..np {
        l.push(format!("        if (in{j}) {{"));
        l.push(format!(
            "            const {} *s = x + iy * {} + ix{j};",
            p.x_ctype(),
            g.w
        ));
        l.push(format!("            int32_t *d = c + {};", 2 * j));
        l.push(format!(
            "            for (int32_t q = 0; q < {quads}; ++q) {{"
        ));
        l.push(format!(
            "                d[0] = kiln_pkhbt(s[0], s[{plane}]);\n                d[1] = kiln_pkhbt(s[{}], s[{}]);",
            2 * plane,
            3 * plane
        ));
        l.push(format!(
            "                d += {};\n                s += {};",
            2 * np,
            4 * plane
        ));
        l.push("            }".into());
        l.push("        } else {".into());
        l.push(format!("            int32_t *d = c + {};", 2 * j));
        l.push(format!(
            "            for (int32_t q = 0; q < {quads}; ++q) {{"
        ));
        l.push(format!(
            "                d[0] = {zp_pair};\n                d[1] = {zp_pair};\n                d += {};",
            2 * np
        ));
        l.push("            }".into());
        l.push("        }".into());
    }
    l.push("    }".into());
    l.push("}".into());
    l
}

/// Channel-major columns: a pixel pair whose windows are both inside the input copies its
/// pairs with constant offsets (the reduction is short); others go through the generic fill.
fn dsp_im2col_unrolled_or_generic(p: &Problem, g: &ConvGeom, kp: usize, np: usize) -> Vec<String> {
    const MAX_UNROLLED: usize = 96;
    if p.k > MAX_UNROLLED {
        return dsp_im2col_generic(p, g, kp, np);
    }
    let (rlo, rhi) = g.rows_inside();
    let (clo, chi) = g.cols_inside();
    if rlo >= rhi || clo + np > chi {
        return dsp_im2col_generic(p, g, kp, np);
    }
    let mut l = vec![format!(
        "if (oy >= {rlo} && oy < {rhi} && ox >= {clo} && ox + {} < {chi}) {{",
        np - 1
    )];
    l.push(format!(
        "    const {} *s = x + iy0 * {} + ox * {} - {};",
        p.x_ctype(),
        g.w,
        g.sw,
        g.pl
    ));
    for j in 0..np {
        for k in (0..kp).step_by(2) {
            let off = |kk: usize| -> String {
                if kk < p.k {
                    let (c, t) = (kk / g.taps(), kk % g.taps());
                    format!("s[{}]", g.offset(c, t) + j * g.sw)
                } else {
                    "0".into()
                }
            };
            l.push(format!(
                "    col[{}] = kiln_pkhbt({}, {});",
                dsp_word(k, j, np),
                off(k),
                off(k + 1)
            ));
        }
    }
    l.push("} else {".into());
    l.extend(
        dsp_im2col_generic(p, g, kp, np)
            .into_iter()
            .map(|x| format!("    {x}")),
    );
    l.push("}".into());
    l
}

/// Any geometry and order: every value through a bounds test, stored as a halfword.
fn dsp_im2col_generic(p: &Problem, g: &ConvGeom, kp: usize, np: usize) -> Vec<String> {
    let taps = g.taps();
    let kidx = match p.source {
        Source::Conv(_, KOrder::TapMajor) => format!("t * {} + ic", g.ic),
        _ => format!("ic * {taps} + t"),
    };
    let mut l = Vec::new();
    for j in 0..np {
        l.push("{".into());
        l.push(format!(
            "    const int32_t px = ox * {} - {} + {};",
            g.sw,
            g.pl,
            j * g.sw
        ));
        l.push(format!("    for (int32_t ic = 0; ic < {}; ++ic) {{", g.ic));
        l.push(format!("        for (int32_t t = 0; t < {taps}; ++t) {{"));
        l.push(format!(
            "            const int32_t iy = iy0 + t / {} * {}, ix = px + t % {} * {};",
            g.kw, g.dh, g.kw, g.dw
        ));
        l.push(format!(
            "            const int16_t v = (int16_t)(iy >= 0 && iy < {} && ix >= 0 && ix < {} ? x[ic * {} + iy * {} + ix] : {});",
            g.h,
            g.w,
            g.plane(),
            g.w,
            g.zp
        ));
        l.push(format!("            const int32_t k = {kidx};"));
        l.push(format!(
            "            memcpy((char *)col + 2 * (k / 4 * {} + {} + k % 4), &v, 2);",
            4 * np,
            4 * j
        ));
        l.push("        }".into());
        l.push("    }".into());
        if kp > p.k {
            l.push(format!("    for (int32_t k = {}; k < {kp}; ++k) {{", p.k));
            l.push("        const int16_t v = 0;".into());
            l.push(format!(
                "        memcpy((char *)col + 2 * (k / 4 * {} + {} + k % 4), &v, 2);",
                4 * np,
                4 * j
            ));
            l.push("    }".into());
        }
        l.push("}".into());
    }
    l
}

// ---------------------------------------------------------------------------------------
// Scalar

/// Channels and pixels per block of the scalar kernels.
const SCALAR_MO: usize = 4;
const SCALAR_NP: usize = 4;

/// The scalar layer: 4 x 4 blocks of 32-bit multiply-adds on 8-bit loads.
fn scalar(layer: &Layer, p: &Problem) -> Generated {
    let name = &layer.kernel.name;
    let xt = p.x_ctype();
    let out_t = p.stage.c_type();
    // Weights: blocks of up to 4 channels, the block's weights for one k adjacent.
    let mut packed = Vec::with_capacity(p.m * p.k);
    for c0 in (0..p.m).step_by(SCALAR_MO) {
        let width = SCALAR_MO.min(p.m - c0);
        for kk in 0..p.k {
            for i in 0..width {
                packed.push(p.weight(c0 + i, kk));
            }
        }
    }
    let w_name = layer.packed_name(1);
    let (rq, rq_name) = records(layer, p);
    // Where pixel j's value k is: in X directly (pointwise, matrix rows) or in the column.
    let direct = match &p.source {
        Source::Conv(g, _) => g.pointwise(),
        Source::Rows => true,
    };
    let (k_step, j_step) = match &p.source {
        Source::Conv(..) if direct => (p.n, 1),
        Source::Rows => (1, p.k),
        Source::Conv(..) => (SCALAR_NP, 1),
    };
    let mut helpers = p.stage.function(&format!("{name}_out"));
    let tail = p.n % SCALAR_NP;
    let mut variants = vec![SCALAR_NP.min(p.n)];
    if tail > 0 && p.n > SCALAR_NP {
        variants.push(tail);
    }
    for &np in &variants {
        helpers.push_str(&scalar_block_fn(name, p, np, k_step, j_step, out_t, xt));
    }
    let mut lines = Vec::new();
    let bias = layer.param(2);
    let call = |np: usize, src: &str, y: &str| {
        format!("{name}_mm{np}({w_name}, {bias}, {rq_name}, shift, {src}, {y});")
    };
    let full = p.n / SCALAR_NP * SCALAR_NP;
    if direct {
        if p.n >= SCALAR_NP {
            lines.push(format!(
                "for (int32_t p = 0; p < {full}; p += {SCALAR_NP}) {{"
            ));
            lines.push(format!(
                "    {}",
                call(
                    SCALAR_NP,
                    &format!("x + p * {j_step}"),
                    &format!("y + p * {}", p.y_pix)
                )
            ));
            lines.push("}".into());
        }
        if tail > 0 {
            lines.push(call(
                tail,
                &format!("x + {}", full * j_step),
                &format!("y + {}", full * p.y_pix),
            ));
        }
    } else if let Source::Conv(g, order) = &p.source {
        lines.push(format!("{xt} col[{}];", p.k * SCALAR_NP));
        lines.push(format!(
            "for (int32_t p = 0; p < {}; p += {SCALAR_NP}) {{",
            p.n
        ));
        lines.push(format!(
            "    const int32_t np = p + {SCALAR_NP} <= {n} ? {SCALAR_NP} : {n} - p;",
            n = p.n
        ));
        lines.push("    for (int32_t j = 0; j < np; ++j) {".into());
        lines.extend(
            scalar_im2col(p, g, *order)
                .into_iter()
                .map(|x| format!("        {x}")),
        );
        lines.push("    }".into());
        if tail > 0 && p.n > SCALAR_NP {
            lines.push(format!(
                "    if (np < {SCALAR_NP}) {{\n        {}\n        break;\n    }}",
                call(tail, "col", "y + p")
            ));
        }
        lines.push(format!("    {}", call(SCALAR_NP.min(p.n), "col", "y + p")));
        lines.push("}".into());
    }
    let mut body = String::new();
    let mut wrapped = vec!["(void)multiplier;".to_string(), "(void)shift;".into()];
    let (xn, yn) = (layer.param(0), layer.param(5));
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
    push_lines(&mut body, 1, &wrapped);
    let mut packed_inputs = vec![(
        1,
        Packed {
            ctype: "int8_t",
            items: packed.iter().map(|v| v.to_string()).collect(),
            note: format!(
                "int8 weights packed for {}: blocks of {SCALAR_MO} channels, interleaved",
                layer.isa.name()
            ),
        },
    )];
    packed_inputs.extend(rq);
    Generated {
        helpers,
        body,
        packed: packed_inputs,
    }
}

/// The function computing every output channel of `np` pixels: value `k` of pixel `j` is at
/// `x[k * k_step + j * j_step]`.
fn scalar_block_fn(
    name: &str,
    p: &Problem,
    np: usize,
    k_step: usize,
    j_step: usize,
    out_t: &str,
    xt: &str,
) -> String {
    let mut s = format!(
        "static void {name}_mm{np}(const int8_t *W, const int32_t *B, const int32_t *multiplier, const int32_t *shift, const {xt} *x, {out_t} *y) {{\n"
    );
    let mut l = vec![
        "const int8_t *w = W;".to_string(),
        "(void)multiplier;".into(),
        "(void)shift;".into(),
    ];
    let block = |mo: usize, c0: &str, l: &mut Vec<String>| {
        for i in 0..mo {
            for j in 0..np {
                let init = if j == 0 {
                    format!("B[{c0} + {i}]")
                } else {
                    format!("a{i}0")
                };
                l.push(format!("int32_t a{i}{j} = {init};"));
            }
        }
        l.push(format!("const {xt} *s = x;"));
        l.push(format!("for (int32_t k = 0; k < {}; ++k) {{", p.k));
        for i in 0..mo {
            l.push(format!("    const int32_t w{i} = w[{i}];"));
        }
        for j in 0..np {
            l.push(format!("    const int32_t x{j} = s[{}];", j * j_step));
        }
        for i in 0..mo {
            for j in 0..np {
                l.push(format!("    a{i}{j} += w{i} * x{j};"));
            }
        }
        l.push(format!("    w += {mo};\n        s += {k_step};"));
        l.push("}".into());
        for i in 0..mo {
            l.extend(p.stage.load("multiplier", &format!("{c0} + {i}"), i));
        }
        for i in 0..mo {
            for j in 0..np {
                l.push(format!(
                    "y[{}] = ({out_t}){};",
                    i * p.y_chan + j * p.y_pix,
                    p.stage.call(&format!("{name}_out"), &format!("a{i}{j}"), i)
                ));
            }
        }
    };
    let full = p.m / SCALAR_MO;
    if full > 0 {
        l.push(format!(
            "for (int32_t oc = 0; oc < {}; oc += {SCALAR_MO}) {{",
            full * SCALAR_MO
        ));
        let mut inner = Vec::new();
        block(SCALAR_MO, "oc", &mut inner);
        inner.push(format!("y += {};", SCALAR_MO * p.y_chan));
        l.extend(inner.into_iter().map(|x| format!("    {x}")));
        l.push("}".into());
    }
    let rest = p.m % SCALAR_MO;
    if rest > 0 {
        l.push("{".into());
        let mut inner = Vec::new();
        block(rest, &format!("{}", full * SCALAR_MO), &mut inner);
        l.extend(inner.into_iter().map(|x| format!("    {x}")));
        l.push("}".into());
    }
    push_lines(&mut s, 1, &l);
    s.push_str("}\n");
    s
}

/// Fills column slot `j` (value `k` at `col[k * 4 + j]`) for pixel `p + j`.
fn scalar_im2col(p: &Problem, g: &ConvGeom, order: KOrder) -> Vec<String> {
    let taps = g.taps();
    let kidx = match order {
        KOrder::TapMajor => format!("t * {} + ic", g.ic),
        KOrder::ChannelMajor => format!("ic * {taps} + t"),
    };
    let (rlo, rhi) = g.rows_inside();
    let (clo, chi) = g.cols_inside();
    let mut l = vec![
        format!(
            "const int32_t oy = (p + j) / {}, ox = (p + j) % {};",
            g.ow, g.ow
        ),
        format!(
            "const int32_t iy0 = oy * {} - {}, ix0 = ox * {} - {};",
            g.sh, g.pt, g.sw, g.pl
        ),
    ];
    const MAX_UNROLLED: usize = 96;
    let unrolled = p.k <= MAX_UNROLLED && rlo < rhi && clo < chi;
    if unrolled {
        l.push(format!(
            "if (oy >= {rlo} && oy < {rhi} && ox >= {clo} && ox < {chi}) {{"
        ));
        l.push(format!(
            "    const {} *s = x + iy0 * {} + ix0;",
            p.x_ctype(),
            g.w
        ));
        for kk in 0..p.k {
            let (c, t) = match order {
                KOrder::TapMajor => (kk % g.ic, kk / g.ic),
                KOrder::ChannelMajor => (kk / taps, kk % taps),
            };
            l.push(format!(
                "    col[{} + j] = s[{}];",
                kk * SCALAR_NP,
                g.offset(c, t)
            ));
        }
        l.push("    continue;".into());
        l.push("}".into());
    }
    l.push(format!("for (int32_t t = 0; t < {taps}; ++t) {{"));
    l.push(format!(
        "    const int32_t iy = iy0 + t / {} * {}, ix = ix0 + t % {} * {};",
        g.kw, g.dh, g.kw, g.dw
    ));
    l.push(format!(
        "    const int in = iy >= 0 && iy < {} && ix >= 0 && ix < {};",
        g.h, g.w
    ));
    l.push(format!("    for (int32_t ic = 0; ic < {}; ++ic) {{", g.ic));
    l.push(format!(
        "        col[({kidx}) * {SCALAR_NP} + j] = in ? x[ic * {} + iy * {} + ix] : ({}){};",
        g.plane(),
        g.w,
        p.x_ctype(),
        g.zp
    ));
    l.push("    }".into());
    l.push("}".into());
    l
}
