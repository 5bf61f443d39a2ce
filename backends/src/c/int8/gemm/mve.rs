//! The Helium (MVE) emitter of the int8 matrix product (Cortex-M55): `VMLADAVA.S8` adds 16
//! products of two 16-byte vectors into a scalar accumulator, so every pixel's reduction
//! values must be contiguous, as the channel's weights are.
//!
//! - Convolutions: the inputs an output row reads are transposed into a local buffer `t` of
//!   columns `t[ix][ky][c]` (one per input column, zero-point columns for the padding), so
//!   the window of output pixel `ox` is the `kw * kh * ic` consecutive bytes from column
//!   `ox * sw`, and the weights are packed in that order (kx, ky, c). Rows are transposed with
//!   scatter stores or gather loads, eight bytes per instruction pair; pointwise convolutions
//!   transpose blocks of pixels the same way.
//! - Blocks of one channel x four pixels: each loaded weight vector feeds four
//!   `VMLADAVA`s, and the four accumulators of a channel are requantized and stored as one
//!   vector (the output plane is contiguous in NCHW). A reduction that is not a multiple of
//!   16 ends with loads predicated by `VCTP` (inactive lanes read as zero).
//! - Products by a constant matrix (rows of A contiguous already): blocks of four output
//!   columns x one row, each loaded input vector feeding four `VMLADAVA`s (a fully connected
//!   layer at batch 1 has one row).
//!
//! The input zero point is in the bias (the weights-only term is a compile-time constant)
//! and the padding reads it, so a window's sum needs no correction.

use kiln_ir::DType;

use super::{
    by_rows, column_blocks, push_lines, records, row_kernel_start, store_columns, wrap, ConvGeom,
    Problem, Source,
};
use crate::c::int8::{Generated, Layer, Packed};

/// Pixels of one block (one accumulator vector).
const NP: usize = 4;
/// Output columns of one block of a matrix product.
const MO: usize = 4;
/// Most pixels a pointwise convolution transposes at a time (bounds the buffer on the stack).
const POINTWISE_PIXELS: usize = 32;

/// The layer for Helium, or `None` where the DSP kernels serve better (uint8 inputs, which
/// `VMLADAVA.S8` cannot multiply by int8 weights; dilated columns, which are not contiguous).
pub(super) fn mve(layer: &Layer, p: &Problem) -> Option<Generated> {
    if p.x_type != DType::I8 {
        return None;
    }
    match &p.source {
        Source::Rows => Some(rows(layer, p)),
        Source::Conv(g, _) if g.dw == 1 => Some(conv(layer, p, g)),
        Source::Conv(..) => None,
    }
}

/// The packed weights and the requantization records as the layer's packed inputs.
fn packed_inputs(
    layer: &Layer,
    p: &Problem,
    weights: Vec<i8>,
    note: String,
) -> Vec<(usize, Packed)> {
    let mut v = vec![(
        1,
        Packed {
            ctype: "int8_t",
            items: weights.iter().map(|w| w.to_string()).collect(),
            note,
        },
    )];
    v.extend(records(layer, p).0);
    v
}

/// Chunks per unrolled step: VLDRB's immediate offset reaches 127 bytes, so seven chunks
/// are read from one base and the pointers advance once per step.
const UNROLL: usize = 7;

/// Statements adding the 16-lane chunks of a reduction of `k` values to accumulators
/// `a{j}`. With `shared_w`, one weight vector (`w`) feeds the inputs `x{j}`; otherwise one
/// input vector (`x0`) feeds the weight rows `w{j}`. The chunks are unrolled by [`UNROLL`]
/// with constant offsets, and the pointers end `k` bytes further on.
fn dot_loop(k: usize, accs: usize, shared_w: bool) -> Vec<String> {
    let (full, rest) = (k / 16, k % 16);
    let ptrs: Vec<String> = if shared_w {
        std::iter::once("w".to_string())
            .chain((0..accs).map(|j| format!("x{j}")))
            .collect()
    } else {
        std::iter::once("x0".to_string())
            .chain((0..accs).map(|j| format!("w{j}")))
            .collect()
    };
    let names = std::cell::Cell::new(0);
    let chunk = |l: &mut Vec<String>, ind: &str, off: usize, lanes: usize| {
        let load = |ptr: &str| {
            let at = if off == 0 {
                ptr.to_string()
            } else {
                format!("{ptr} + {off}")
            };
            if lanes == 16 {
                format!("kiln_vld8({at})")
            } else {
                format!("kiln_vld8_n({at}, {lanes})")
            }
        };
        let v = format!("v{}", names.get());
        names.set(names.get() + 1);
        l.push(format!("{ind}const kiln_i8x16 {v} = {};", load(&ptrs[0])));
        for j in 0..accs {
            let other = load(&ptrs[j + 1]);
            let (a, b) = if shared_w {
                (other, v.clone())
            } else {
                (v.clone(), other)
            };
            l.push(format!("{ind}a{j} = kiln_vdot8(a{j}, {a}, {b});"));
        }
        l.push(format!("{ind}kiln_vbarrier();"));
    };
    let advance = |l: &mut Vec<String>, ind: &str, by: usize| {
        if by > 0 {
            for p in &ptrs {
                l.push(format!("{ind}{p} += {by};"));
            }
        }
    };
    let mut l = Vec::new();
    let steps = full / UNROLL;
    let step = UNROLL.min(full);
    if steps > 1 {
        l.push(format!("for (int32_t q = 0; q < {steps}; ++q) {{"));
    }
    if steps > 0 {
        let ind = if steps > 1 { "    " } else { "" };
        for i in 0..step {
            chunk(&mut l, ind, 16 * i, 16);
        }
        advance(&mut l, ind, 16 * step);
    }
    if steps > 1 {
        l.push("}".into());
    }
    let left = full - steps * step;
    for i in 0..left {
        chunk(&mut l, "", 16 * i, 16);
    }
    if rest > 0 {
        chunk(&mut l, "", 16 * left, rest);
    }
    advance(&mut l, "", 16 * left + rest);
    vec![format!("{{")]
        .into_iter()
        .chain(l.into_iter().map(|x| format!("    {x}")))
        .chain(std::iter::once("}".to_string()))
        .collect()
}

/// The function computing every output channel of `cnt` pixels whose reduction values are
/// `k` consecutive bytes from `t + j * ps` (pixel `j`), outputs at `y[c * y_chan + j]`.
fn pixel_block_fn(name: &str, p: &Problem, ps: usize) -> String {
    let out_t = p.stage.c_type();
    let mut s = format!(
        "static void {name}_mm(const int8_t *W, const int32_t *B, const int32_t *multiplier, const int32_t *shift, const int8_t *t, {out_t} *y, int32_t cnt) {{\n"
    );
    let vector = p.stage.vectorizes();
    let mut l = vec![
        "(void)multiplier;".to_string(),
        "(void)shift;".into(),
        format!("for (int32_t p = 0; p < cnt; p += {NP}) {{"),
        format!("    const int32_t n = cnt - p < {NP} ? cnt - p : {NP};"),
        "    const int8_t *w = W;".into(),
        format!("    {out_t} *yp = y + p;"),
        format!("    for (int32_t c = 0; c < {}; ++c) {{", p.m),
        "        int32_t a0 = B[c], a1 = a0, a2 = a0, a3 = a0;".into(),
    ];
    for j in 0..NP {
        l.push(format!(
            "        const int8_t *x{j} = t + (p + {j}) * {ps};"
        ));
    }
    l.extend(
        dot_loop(p.k, NP, true)
            .into_iter()
            .map(|x| format!("        {x}")),
    );
    l.extend(
        p.stage
            .load("multiplier", "c", 0)
            .into_iter()
            .map(|x| format!("        {x}")),
    );
    if vector {
        l.push(format!(
            "        {name}_out4(yp, kiln_v4(a0, a1, a2, a3), {}, n);",
            p.stage.fields_args(0)
        ));
    } else {
        for j in 0..NP {
            l.push(format!(
                "        if ({j} < n) yp[{j}] = ({out_t}){};",
                p.stage.call(&format!("{name}_out"), &format!("a{j}"), 0)
            ));
        }
    }
    l.push(format!("        yp += {};", p.y_chan));
    l.push("    }".into());
    l.push("}".into());
    push_lines(&mut s, 1, &l);
    s.push_str("}\n");
    s
}

/// The output helpers of a pixel-block layer.
fn output_helpers(name: &str, p: &Problem) -> String {
    match p.stage.vector_function(&format!("{name}_out4")) {
        Some(v) => v,
        None => p.stage.function(&format!("{name}_out")),
    }
}

/// Statements transposing `count` input columns into buffer columns of `stride` bytes: the
/// value of channel `c` at input column `i` (at `src + c * plane + i`) goes to
/// `dst + i * stride + c`. Scatters one channel's row or gathers one column's channels,
/// whichever takes fewer eight-lane chunks.
fn transpose(
    dst: &str,
    src: &str,
    ic: usize,
    plane: usize,
    stride: usize,
    count: &str,
    max_count: usize,
) -> Vec<String> {
    let spread_chunks = ic * max_count.div_ceil(8);
    let gather_chunks = max_count * ic.div_ceil(8);
    // Gather offsets are 16-bit: the eighth channel must be within reach.
    if gather_chunks < spread_chunks && 7 * plane <= usize::from(u16::MAX) {
        vec![
            format!("for (int32_t i = 0; i < {count}; ++i) {{"),
            format!("    kiln_vgather8({dst} + i * {stride}, {src} + i, {plane}, {ic});"),
            "}".into(),
        ]
    } else {
        vec![
            format!("for (int32_t c = 0; c < {ic}; ++c) {{"),
            format!("    kiln_vspread8({dst} + c, {stride}, {src} + c * {plane}, {count});"),
            "}".into(),
        ]
    }
}

/// A convolution: output rows (or blocks of pixels for a pointwise one) over the transposed
/// buffer.
fn conv(layer: &Layer, p: &Problem, g: &ConvGeom) -> Generated {
    let name = &layer.kernel.name;
    let s = g.kh * g.ic;
    let mut packed = Vec::with_capacity(p.m * p.k);
    for c in 0..p.m {
        for kx in 0..g.kw {
            for ky in 0..g.kh {
                for ic in 0..g.ic {
                    packed.push(p.weights[c * p.k + ic * g.taps() + ky * g.kw + kx]);
                }
            }
        }
    }
    let w_name = layer.packed_name(1);
    let rq_name = records(layer, p).1;
    let bias = layer.param(2);
    let zp = g.zp;
    let mut lines = Vec::new();
    let ps;
    if g.pointwise() {
        let n = p.n;
        let block = n.div_ceil(NP).min(POINTWISE_PIXELS.div_ceil(NP)) * NP;
        ps = g.ic;
        lines.push(format!("int8_t t[{}];", block * g.ic));
        lines.push(format!("for (int32_t p0 = 0; p0 < {n}; p0 += {block}) {{"));
        lines.push(format!(
            "    const int32_t cnt = {n} - p0 < {block} ? {n} - p0 : {block};"
        ));
        lines.extend(
            transpose("t", "(x + p0)", g.ic, n, g.ic, "cnt", block)
                .into_iter()
                .map(|x| format!("    {x}")),
        );
        if !n.is_multiple_of(NP) {
            // The last block's unused columns are read (their sums are not stored): define them.
            lines.push(format!(
                "    for (int32_t i = cnt * {ic}; i < (cnt + {}) / {NP} * {NP} * {ic}; ++i) {{\n        t[i] = 0;\n    }}",
                NP - 1,
                ic = g.ic
            ));
        }
        lines.push(format!(
            "    {name}_mm({w_name}, {bias}, {rq_name}, shift, t, y + p0, cnt);"
        ));
        lines.push("}".into());
    } else {
        // Buffer columns any pixel block reads, and the input columns that land in them.
        let need = (g.ow.div_ceil(NP) * NP - 1) * g.sw + g.kw;
        let wn = g.w.min(need.saturating_sub(g.pl));
        ps = g.sw * s;
        lines.push(format!("int8_t t[{}];", need * s));
        lines.push(format!("kiln_vfill8(t, 1, {zp}, {});", need * s));
        let (rlo, rhi) = g.rows_inside();
        let rows_always_inside = rlo == 0 && rhi == g.oh;
        lines.push(format!("for (int32_t oy = 0; oy < {}; ++oy) {{", g.oh));
        lines.push(format!("    for (int32_t ky = 0; ky < {}; ++ky) {{", g.kh));
        lines.push(format!(
            "        const int32_t iy = oy * {} - {} + ky * {};",
            g.sh, g.pt, g.dh
        ));
        lines.push(format!(
            "        int8_t *d = t + {} + ky * {};",
            g.pl * s,
            g.ic
        ));
        let copy = transpose(
            "d",
            "(x + iy * W_)",
            g.ic,
            g.plane(),
            s,
            &wn.to_string(),
            wn,
        );
        let copy: Vec<String> = copy
            .into_iter()
            .map(|x| x.replace("W_", &g.w.to_string()))
            .collect();
        if rows_always_inside {
            lines.extend(copy.into_iter().map(|x| format!("        {x}")));
        } else {
            lines.push(format!("        if (iy >= 0 && iy < {}) {{", g.h));
            lines.extend(copy.into_iter().map(|x| format!("            {x}")));
            lines.push("        } else {".into());
            lines.push(format!(
                "            for (int32_t c = 0; c < {}; ++c) {{",
                g.ic
            ));
            lines.push(format!(
                "                kiln_vfill8(d + c, {s}, {zp}, {wn});"
            ));
            lines.push("            }".into());
            lines.push("        }".into());
        }
        lines.push("    }".into());
        lines.push(format!(
            "    {name}_mm({w_name}, {bias}, {rq_name}, shift, t, y + oy * {}, {});",
            g.ow, g.ow
        ));
        lines.push("}".into());
    }
    let mut helpers = output_helpers(name, p);
    helpers.push_str(&pixel_block_fn(name, p, ps));
    Generated {
        helpers,
        body: wrap(layer, p, lines),
        packed: packed_inputs(
            layer,
            p,
            packed,
            format!(
                "int8 weights packed for mve: {} rows of {} bytes in (kx, ky, c) order",
                p.m, p.k
            ),
        ),
    }
}

/// A product by a constant matrix: blocks of four output columns per row of A.
fn rows(layer: &Layer, p: &Problem) -> Generated {
    let name = &layer.kernel.name;
    let rq_name = records(layer, p).1;
    let mut f = row_kernel_start(p, name, "mv", "int8_t");
    let mut l = vec!["(void)multiplier;".to_string(), "(void)shift;".into()];
    let block = |mo: usize, c0: &str, l: &mut Vec<String>| {
        for i in 0..mo {
            l.push(format!("int32_t a{i} = B[{c0} + {i}];"));
            l.push(format!("const int8_t *w{i} = W + ({c0} + {i}) * {};", p.k));
        }
        l.push("const int8_t *x0 = x;".into());
        l.extend(dot_loop(p.k, mo, false));
        store_columns(p, name, c0, mo, l);
    };
    l.extend(column_blocks(p.m, MO, block));
    push_lines(&mut f, 1, &l);
    f.push_str("}\n");
    let (helpers, body) = by_rows(layer, p, "mv", &f, &rq_name);
    Generated {
        helpers,
        body,
        packed: packed_inputs(
            layer,
            p,
            p.weights.clone(),
            format!("int8 weights packed for mve: {} rows of {} bytes", p.m, p.k),
        ),
    }
}
