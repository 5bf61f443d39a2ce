//! Depthwise 3x3 convolutions (QConv with one input and one output channel per group,
//! stride 1 or 2, no dilation, padding of at most one on each side).
//!
//! Each channel's plane is copied into a local buffer whose border holds the input zero
//! point (written once per layer), so every window is read without a bounds test; the nine
//! weights of the channel live in registers while its output plane is computed.
//! - Arm DSP: two outputs of a row at a time. One word load gives four input bytes; SXTB16
//!   splits them into the pairs (b0, b2) and (b1, b3); for stride 1 the outputs are
//!   `SMLAD((b0, b2), (w0, w2)) + b1 * w1` and `SMLAD((b1, b3), (w0, w2)) + b2 * w1` (`SMLABB`,
//!   `SMLATB`), seven instructions for six multiply-adds per row. Stride 2 pairs the fifth
//!   byte with b2 (`PKHBT`) for `SMLADX`.
//! - Scalar: four outputs of a row at a time, each loaded byte feeding up to three of them.
//! - Helium (int8 inputs): four outputs per step, one widening load and one `VMLA` per tap,
//!   the sums requantized as one vector; planes whose rows are not a multiple of four are
//!   walked as one run of outputs through a table of window offsets (gather loads).

use kiln_ir::{DType, Op};

use super::requant::{bounds, input_range, OutputStage};
use super::{Generated, Isa, Layer, Packed};
use crate::error::BackendError;

/// The geometry of a depthwise 3x3 layer.
#[derive(Clone, Debug)]
struct Depthwise {
    channels: usize,
    batch: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    pt: usize,
    pl: usize,
    zp: i32,
    x_type: DType,
    stage: OutputStage,
}

impl Depthwise {
    fn new(layer: &Layer) -> Option<Depthwise> {
        let Op::QConv {
            kernel_shape,
            strides,
            dilations,
            pads,
            group,
            x_zero_point,
            output: Some(output),
            rounding,
        } = &layer.node.op
        else {
            return None;
        };
        let (x, y) = (layer.input(0)?, layer.output(0)?);
        if x.rank() != 4
            || y.rank() != 4
            || kernel_shape.as_slice() != [3, 3]
            || dilations.as_slice() != [1, 1]
            || !matches!(strides.as_slice(), [1, 1] | [2, 2])
            || pads.iter().any(|&p| p > 1)
            || !matches!(x.dtype, DType::I8 | DType::U8)
            || !matches!(output.dtype, DType::I8 | DType::U8)
        {
            return None;
        }
        let (batch, channels, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        if *group != channels || y.shape[1] != channels || channels == 0 {
            return None;
        }
        let (kiln_ir::TensorData::I8(wd), kiln_ir::TensorData::I32(bd)) =
            (layer.constant(1)?.data(), layer.constant(2)?.data())
        else {
            return None;
        };
        let (kiln_ir::TensorData::I32(md), kiln_ir::TensorData::I32(sd)) =
            (layer.constant(3)?.data(), layer.constant(4)?.data())
        else {
            return None;
        };
        let one_or_all = |n: usize| n == 1 || n == channels;
        if wd.len() != channels * 9
            || bd.len() != channels
            || !one_or_all(md.len())
            || !one_or_all(sd.len())
        {
            return None;
        }
        let b = bounds(bd, wd, input_range(x.dtype));
        Some(Depthwise {
            channels,
            batch,
            h,
            w,
            oh: y.shape[2],
            ow: y.shape[3],
            stride: strides[0],
            pt: pads[0],
            pl: pads[1],
            zp: *x_zero_point,
            x_type: x.dtype,
            stage: OutputStage::new(*rounding, *output, md, sd, &b),
        })
    }

    /// Rows and columns of the padded plane: every window of the output.
    fn padded(&self) -> (usize, usize) {
        (
            (self.oh - 1) * self.stride + 3,
            (self.ow - 1) * self.stride + 3,
        )
    }
}

/// Generates the layer if it is a depthwise 3x3 convolution this file handles.
pub(super) fn generate(layer: &Layer) -> Result<Option<Generated>, BackendError> {
    if matches!(layer.isa, Isa::Portable) {
        return Ok(None);
    }
    let Some(d) = Depthwise::new(layer) else {
        return Ok(None);
    };
    let name = &layer.kernel.name;
    let (ph, pw) = d.padded();
    let xt = if d.x_type == DType::U8 {
        "uint8_t"
    } else {
        "int8_t"
    };
    let out_t = d.stage.c_type();
    let (xn, wn, bn, yn) = (
        layer.param(0),
        layer.param(1),
        layer.param(2),
        layer.param(5),
    );
    let rq_name = if d.stage.record_len() > 0 {
        layer.packed_name(3)
    } else {
        "multiplier".to_string()
    };
    let copy_rows = d.h.min(ph - d.pt);
    let copy_cols = d.w.min(pw - d.pl);
    // Helium: int8 inputs and an output stage it computes as a vector.
    let vector = match (layer.isa, d.x_type) {
        (Isa::ArmMve, DType::I8) => d.stage.vector_function(&format!("{name}_out4")),
        _ => None,
    };
    let mut l = vec![
        // Slack: a row's last word load (DSP) or four-lane load (Helium, up to three lanes
        // past the row, stride 2 twice as far) may read past the plane's last byte.
        format!("{xt} pad[{}];", ph * pw + 16),
        "(void)multiplier;".into(),
        "(void)shift;".into(),
        format!("memset(pad, {}, sizeof pad);", d.zp as u8),
        format!("for (int32_t c = 0; c < {}; ++c) {{", d.batch * d.channels),
    ];
    // On RV32 short rows are copied byte by byte in straight-line code: a call of the C
    // library's memcpy costs more than the copy on a core without unaligned word access.
    let copy = if matches!(layer.isa, Isa::Scalar) && copy_cols <= MAX_UNROLLED_COPY {
        let mut c = format!(
            "{xt} *d = pad + (r + {}) * {pw} + {}; const {xt} *s = xc + r * {};",
            d.pt, d.pl, d.w
        );
        for i in 0..copy_cols {
            c.push_str(&format!(" d[{i}] = s[{i}];"));
        }
        c
    } else {
        format!(
            "memcpy(pad + (r + {}) * {pw} + {}, xc + r * {}, {copy_cols});",
            d.pt, d.pl, d.w
        )
    };
    let mut body = vec![
        format!("const {xt} *xc = {xn} + c * {};", d.h * d.w),
        format!("for (int32_t r = 0; r < {copy_rows}; ++r) {{"),
        format!("    {copy}"),
        "}".into(),
        format!("const int8_t *w = {wn} + c % {} * 9;", d.channels),
        format!("const int32_t bias = {bn}[c % {}];", d.channels),
    ];
    body.extend(d.stage.load(&rq_name, &format!("c % {}", d.channels), 0));
    body.push(format!("{out_t} *y = {yn} + c * {};", d.oh * d.ow));
    let store = |acc: &str| d.stage.call(&format!("{name}_out"), acc, 0);
    let mut table = String::new();
    match layer.isa {
        Isa::ArmMve if vector.is_some() => {
            let (rows, t) = mve_rows(&d, pw, name);
            body.extend(rows);
            table = t;
        }
        Isa::ArmDsp | Isa::ArmMve => body.extend(dsp_rows(&d, pw, out_t, &store)),
        _ => body.extend(scalar_rows(&d, pw, out_t, xt, &store)),
    }
    l.extend(body.into_iter().map(|x| format!("    {x}")));
    l.push("}".into());
    let mut text = String::new();
    for line in l {
        text.push_str("    ");
        text.push_str(&line);
        text.push('\n');
    }
    let mut packed = Vec::new();
    if d.stage.record_len() > 0 {
        packed.push((
            3,
            Packed {
                ctype: "int32_t",
                items: d.stage.records().iter().map(|v| v.to_string()).collect(),
                note: format!(
                    "requantization records ({} words per channel)",
                    d.stage.record_len()
                ),
            },
        ));
    }
    let mut helpers = table;
    helpers.push_str(&vector.unwrap_or_else(|| d.stage.function(&format!("{name}_out"))));
    Ok(Some(Generated {
        helpers,
        body: text,
        packed,
    }))
}

/// Longest input row the scalar kernel copies in straight-line code.
const MAX_UNROLLED_COPY: usize = 64;

/// Most four-output groups of a plane the Helium kernel indexes through a table.
const MAX_TABLE_GROUPS: usize = 128;

/// The output plane of one channel, Helium: four outputs per step, each tap one widening load
/// and one `VMLA` by the tap's weight; the four sums requantized and stored as one vector (the
/// last step predicated). Rows of a multiple of four outputs are read with contiguous loads
/// (stride 2: gathers); other planes are walked as one run of outputs, each step's four
/// window corners read by a gather through a table of their offsets in the padded plane, so
/// no lane is wasted at the end of a short row.
fn mve_rows(d: &Depthwise, pw: usize, name: &str) -> (Vec<String>, String) {
    let s = d.stride;
    let mut l = Vec::new();
    for t in 0..9 {
        l.push(format!("const int32_t w{t} = w[{t}];"));
    }
    let args = format!("acc, {}", d.stage.fields_args(0));
    let taps = |l: &mut Vec<String>, load: &dyn Fn(usize) -> String| {
        l.push("        kiln_i32x4 acc = kiln_vdup(bias);".into());
        for r in 0..3 {
            for k in 0..3 {
                l.push(format!(
                    "        acc = kiln_vmla_n(acc, {}, w{});",
                    load(r * pw + k),
                    3 * r + k
                ));
            }
        }
    };
    let outputs = d.oh * d.ow;
    let groups = outputs.div_ceil(4);
    let mut table = String::new();
    if !d.ow.is_multiple_of(4) && groups <= MAX_TABLE_GROUPS {
        let offsets: Vec<String> = (0..groups * 4)
            .map(|i| {
                if i < outputs {
                    ((i / d.ow) * s * pw + (i % d.ow) * s).to_string()
                } else {
                    "0".into()
                }
            })
            .collect();
        table = format!(
            "/* offsets of the windows of four outputs at a time in the padded plane */\nstatic const uint32_t {name}_offs[{}] KILN_ALIGNED(16) = {{\n    {}\n}};\n",
            offsets.len(),
            offsets.join(", ")
        );
        l.push(format!("for (int32_t i = 0; i < {outputs}; i += 4) {{"));
        l.push(format!(
            "    const kiln_u32x4 o = kiln_vldu32({name}_offs + i);"
        ));
        taps(&mut l, &|off| format!("kiln_vgather8x4(pad + {off}, o)"));
        l.push(format!("    {name}_out4(y + i, {args}, {outputs} - i);"));
        l.push("}".into());
        return (l, table);
    }
    let load = if s == 1 {
        "kiln_vld8x4"
    } else {
        "kiln_vld8x4_s2"
    };
    l.push(format!("for (int32_t oy = 0; oy < {}; ++oy) {{", d.oh));
    l.push(format!("    const int8_t *r0 = pad + oy * {};", s * pw));
    l.push(format!(
        "    for (int32_t ox = 0; ox < {}; ox += 4) {{",
        d.ow
    ));
    l.push(format!("        const int8_t *q = r0 + ox * {s};"));
    taps(&mut l, &|off| format!("{load}(q + {off})"));
    l.push(format!(
        "        {name}_out4(y + oy * {} + ox, {args}, {} - ox);",
        d.ow, d.ow
    ));
    l.push("    }".into());
    l.push("}".into());
    (l, table)
}

/// The output rows of one channel, Arm DSP: pairs of outputs, a single one ending odd rows.
fn dsp_rows(d: &Depthwise, pw: usize, out_t: &str, store: &dyn Fn(&str) -> String) -> Vec<String> {
    let s = d.stride;
    let (ext, ext8) = if d.x_type == DType::U8 {
        ("kiln_uxtb16", "kiln_uxtb16_ror8")
    } else {
        ("kiln_sxtb16", "kiln_sxtb16_ror8")
    };
    let mut l = Vec::new();
    // (w0, w2) pairs and w1 of each kernel row.
    for r in 0..3 {
        l.push(format!(
            "const int32_t p{r} = kiln_pkhbt(w[{}], w[{}]), q{r} = w[{}];",
            3 * r,
            3 * r + 2,
            3 * r + 1
        ));
    }
    l.push(format!("for (int32_t oy = 0; oy < {}; ++oy) {{", d.oh));
    l.push(format!(
        "    const {} *r0 = pad + oy * {};",
        xt_of(d),
        s * pw
    ));
    l.push("    int32_t ox = 0;".into());
    l.push(format!("    for (; ox + 1 < {}; ox += 2) {{", d.ow));
    l.push("        int32_t a0 = bias, a1 = bias;".into());
    for r in 0..3 {
        l.push("        {".into());
        l.push(format!(
            "            const int32_t v = kiln_load_i32(r0 + {} + ox * {s});",
            r * pw
        ));
        l.push(format!(
            "            const int32_t e = {ext}(v), o = {ext8}(v);"
        ));
        l.push(format!("            a0 = kiln_smlad(e, p{r}, a0);"));
        l.push(format!("            a0 = kiln_smlabb(o, q{r}, a0);"));
        if s == 1 {
            l.push(format!("            a1 = kiln_smlad(o, p{r}, a1);"));
            l.push(format!("            a1 = kiln_smlatb(e, q{r}, a1);"));
        } else {
            // Output ox + 1 reads bytes 2, 3, 4: (b4, b2) against (w0, w2) crosswise.
            l.push(format!(
                "            const int32_t x = kiln_pkhbt_hi(r0[{} + ox * 2 + 4], e);",
                r * pw
            ));
            l.push(format!("            a1 = kiln_smladx(x, p{r}, a1);"));
            l.push(format!("            a1 = kiln_smlatb(o, q{r}, a1);"));
        }
        l.push("        }".into());
    }
    l.push(format!(
        "        y[oy * {ow} + ox] = ({out_t}){};",
        store("a0"),
        ow = d.ow
    ));
    l.push(format!(
        "        y[oy * {ow} + ox + 1] = ({out_t}){};",
        store("a1"),
        ow = d.ow
    ));
    l.push("    }".into());
    if d.ow % 2 == 1 {
        l.push("    {".into());
        l.push("        int32_t a0 = bias;".into());
        for r in 0..3 {
            l.push(format!(
                "        const int32_t v{r} = kiln_load_i32(r0 + {} + ox * {s});",
                r * pw
            ));
            l.push(format!("        a0 = kiln_smlad({ext}(v{r}), p{r}, a0);"));
            l.push(format!("        a0 = kiln_smlabb({ext8}(v{r}), q{r}, a0);"));
        }
        l.push(format!(
            "        y[oy * {} + ox] = ({out_t}){};",
            d.ow,
            store("a0")
        ));
        l.push("    }".into());
    }
    l.push("}".into());
    l
}

fn xt_of(d: &Depthwise) -> &'static str {
    if d.x_type == DType::U8 {
        "uint8_t"
    } else {
        "int8_t"
    }
}

/// Outputs per step of the scalar rows.
const SCALAR_STEP: usize = 4;

/// The output rows of one channel, scalar: four outputs at a time sharing their loads.
fn scalar_rows(
    d: &Depthwise,
    pw: usize,
    out_t: &str,
    xt: &str,
    store: &dyn Fn(&str) -> String,
) -> Vec<String> {
    let s = d.stride;
    let mut l = Vec::new();
    for t in 0..9 {
        l.push(format!("const int32_t w{t} = w[{t}];"));
    }
    l.push(format!("for (int32_t oy = 0; oy < {}; ++oy) {{", d.oh));
    l.push(format!("    const {xt} *r0 = pad + oy * {};", s * pw));
    l.push("    int32_t ox = 0;".into());
    let step = |n: usize, l: &mut Vec<String>| {
        let accs: Vec<String> = (0..n).map(|j| format!("a{j} = bias")).collect();
        l.push(format!("        int32_t {};", accs.join(", ")));
        // Bytes 0 .. (n - 1) * s + 2 of each of the three rows.
        let span = (n - 1) * s + 3;
        for r in 0..3 {
            l.push("        {".into());
            l.push(format!(
                "            const {xt} *q = r0 + {} + ox * {s};",
                r * pw
            ));
            for b in 0..span {
                l.push(format!("            const int32_t b{b} = q[{b}];"));
            }
            for j in 0..n {
                for k in 0..3 {
                    l.push(format!(
                        "            a{j} += b{} * w{};",
                        j * s + k,
                        3 * r + k
                    ));
                }
            }
            l.push("        }".into());
        }
        for j in 0..n {
            l.push(format!(
                "        y[oy * {} + ox + {j}] = ({out_t}){};",
                d.ow,
                store(&format!("a{j}"))
            ));
        }
    };
    if d.ow >= SCALAR_STEP {
        l.push(format!(
            "    for (; ox + {} < {}; ox += {SCALAR_STEP}) {{",
            SCALAR_STEP - 1,
            d.ow
        ));
        step(SCALAR_STEP, &mut l);
        l.push("    }".into());
    }
    let rest = d.ow % SCALAR_STEP;
    if rest > 0 {
        l.push("    {".into());
        step(rest, &mut l);
        l.push("    }".into());
    }
    l.push("}".into());
    l
}
