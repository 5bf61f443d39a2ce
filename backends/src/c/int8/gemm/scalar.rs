//! The scalar emitter of the int8 matrix product (cores with many registers and no SIMD,
//! RV32IMAC): 8-bit columns (a pointwise convolution reads its input rows directly),
//! weights interleaved by blocks of 4 channels so one pointer walks them, blocks of 4 x 4.

use super::{
    by_rows, column_blocks, column_blocks_with, generated, kernel_prologue, push_lines, records,
    row_kernel_start, store_columns, wrap, ConvGeom, KOrder, Problem, Source,
};
use crate::c::int8::{Generated, Layer, Packed};

/// Channels and pixels per block of the scalar kernels.
const SCALAR_MO: usize = 4;
pub(super) const SCALAR_NP: usize = 4;

/// The scalar layer: 4 x 4 blocks of 32-bit multiply-adds on 8-bit loads.
pub(super) fn scalar(layer: &Layer, p: &Problem) -> Generated {
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
    let body = wrap(layer, p, lines);
    generated(
        helpers,
        body,
        Packed {
            ctype: "int8_t",
            items: packed.iter().map(|v| v.to_string()).collect(),
            note: format!(
                "int8 weights packed for {}: blocks of {SCALAR_MO} channels, interleaved",
                layer.isa.name()
            ),
        },
        rq,
    )
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
    let mut l = kernel_prologue("int8_t");
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
        for j in 0..np {
            l.push(format!("    const int32_t x{j} = s[{}];", j * j_step));
        }
        // One channel's weight at a time (see `band_block_fn`).
        for i in 0..mo {
            l.push(format!("    const int32_t w{i} = w[{i}];"));
            for j in 0..np {
                l.push(format!("    a{i}{j} += w{i} * x{j};"));
            }
            l.push("    kiln_sched_barrier();".into());
        }
        l.push(format!("    w += {mo};\n        s += {k_step};"));
        l.push("}".into());
        store_block(p, name, c0, mo, np, l);
    };
    let advance = format!("y += {};", SCALAR_MO * p.y_chan);
    l.extend(column_blocks_with(
        p.m,
        SCALAR_MO,
        "oc",
        Some(&advance),
        block,
    ));
    push_lines(&mut s, 1, &l);
    s.push_str("}\n");
    s
}

/// Requantizes and stores the block's accumulators `a{i}{j}` (channel `c0 + i`, pixel `j`).
fn store_block(p: &Problem, name: &str, c0: &str, mo: usize, np: usize, l: &mut Vec<String>) {
    let out_t = p.stage.c_type();
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

/// Most bytes of the row band [`scalar_band`] keeps on the stack.
const MAX_BAND: usize = 4096;
/// Longest input row [`scalar_band`] copies in straight-line code.
const MAX_UNROLLED_COPY: usize = 64;

/// A convolution with column stride 1 or 2 and unit dilation, scalar, without im2col: the `kh`
/// input rows of each output row are copied into a band `band[c][ky][bx]` with zero-point
/// columns for the padding, so the window row `ky` of four adjacent output pixels is
/// `3 sw + kw` consecutive bytes. Each byte is loaded once per (channel, kernel row) and feeds
/// up to `kw` taps of four pixels times four channels: per kernel row (stride 1), `kw + 3`
/// input and `4 kw` weight loads serve `16 kw` multiply-adds (im2col columns need 8 loads per
/// 16). `None` when the layer does not qualify.
pub(super) fn scalar_band(layer: &Layer, p: &Problem) -> Option<Generated> {
    let Source::Conv(g, _) = &p.source else {
        return None;
    };
    if g.sw > 2 || g.dw != 1 || g.pointwise() || g.ow < 2 {
        return None;
    }
    let pw = (g.ow.div_ceil(SCALAR_NP) * SCALAR_NP - 1) * g.sw + g.kw;
    if g.ic * g.kh * pw > MAX_BAND {
        return None;
    }
    let name = &layer.kernel.name;
    let xt = p.x_ctype();
    let out_t = p.stage.c_type();
    let mut packed = Vec::with_capacity(p.m * p.k);
    for c0 in (0..p.m).step_by(SCALAR_MO) {
        let width = SCALAR_MO.min(p.m - c0);
        for kk in 0..p.k {
            for i in 0..width {
                // The weights' own order is (input channel, ky, kx), the band's too.
                packed.push(p.weights[(c0 + i) * p.k + kk]);
            }
        }
    }
    let w_name = layer.packed_name(1);
    let (rq, rq_name) = records(layer, p);
    let mut helpers = p.stage.function(&format!("{name}_out"));
    let full = g.ow / SCALAR_NP * SCALAR_NP;
    let tail = g.ow - full;
    let mut variants = Vec::new();
    if full > 0 {
        variants.push(SCALAR_NP);
    }
    if tail > 0 {
        variants.push(tail);
    }
    for &np in &variants {
        helpers.push_str(&band_block_fn(name, p, g, pw, np, out_t, xt));
    }
    let band = g.ic * g.kh * pw;
    let copy_cols = g.w.min(pw - g.pl.min(pw));
    let zp = g.zp;
    let (rlo, rhi) = g.rows_inside();
    let mut l = vec![
        format!("{xt} band[{band}];"),
        format!("memset(band, {}, sizeof band);", zp as u8),
        format!("for (int32_t oy = 0; oy < {}; ++oy) {{", g.oh),
        format!("    for (int32_t c = 0; c < {}; ++c) {{", g.ic),
        format!("        for (int32_t ky = 0; ky < {}; ++ky) {{", g.kh),
        format!(
            "            const int32_t iy = oy * {} - {} + ky * {};",
            g.sh, g.pt, g.dh
        ),
        format!(
            "            {xt} *d = band + (c * {} + ky) * {pw} + {};",
            g.kh, g.pl
        ),
    ];
    // Short rows are copied byte by byte in straight-line code: a call of the C library's
    // memcpy costs more than the copy on a core without unaligned word access.
    let copy = if copy_cols <= MAX_UNROLLED_COPY {
        let mut c = format!("const {xt} *s = x + c * {} + iy * {};", g.plane(), g.w);
        for i in 0..copy_cols {
            c.push_str(&format!(" d[{i}] = s[{i}];"));
        }
        c
    } else {
        format!(
            "memcpy(d, x + c * {} + iy * {}, {copy_cols});",
            g.plane(),
            g.w
        )
    };
    if rlo == 0 && rhi == g.oh {
        l.push(format!("            {copy}"));
    } else {
        l.push(format!("            if (iy >= 0 && iy < {}) {{", g.h));
        l.push(format!("                {copy}"));
        l.push("            } else {".into());
        l.push(format!(
            "                memset(d, {}, {copy_cols});",
            zp as u8
        ));
        l.push("            }".into());
    }
    l.push("        }".into());
    l.push("    }".into());
    let bias = layer.param(2);
    let call = |np: usize, at: &str| {
        format!(
            "{name}_bk{np}({w_name}, {bias}, {rq_name}, shift, band + {at} * {}, y + oy * {} + {at});",
            g.sw, g.ow
        )
    };
    if full > 0 {
        l.push(format!(
            "    for (int32_t ox = 0; ox < {full}; ox += {SCALAR_NP}) {{"
        ));
        l.push(format!("        {}", call(SCALAR_NP, "ox")));
        l.push("    }".into());
    }
    if tail > 0 {
        l.push(format!("    {}", call(tail, &full.to_string())));
    }
    l.push("}".into());
    let body = wrap(layer, p, l);
    Some(generated(
        helpers,
        body,
        Packed {
            ctype: "int8_t",
            items: packed.iter().map(|v| v.to_string()).collect(),
            note: format!(
                "int8 weights packed for {}: blocks of {SCALAR_MO} channels, interleaved",
                layer.isa.name()
            ),
        },
        rq,
    ))
}

/// The function computing every output channel of `np` adjacent pixels of one row from the
/// band (pixel `j`'s window starts at column `j * sw`).
fn band_block_fn(
    name: &str,
    p: &Problem,
    g: &ConvGeom,
    pw: usize,
    np: usize,
    out_t: &str,
    xt: &str,
) -> String {
    let mut s = format!(
        "static void {name}_bk{np}(const int8_t *W, const int32_t *B, const int32_t *multiplier, const int32_t *shift, const {xt} *band, {out_t} *y) {{\n"
    );
    let mut l = kernel_prologue("int8_t");
    let span = (np - 1) * g.sw + g.kw;
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
        l.push(format!("const {xt} *b = band;"));
        l.push(format!("for (int32_t c = 0; c < {}; ++c) {{", g.ic));
        for ky in 0..g.kh {
            l.push("    {".into());
            // Each input byte is loaded right before its first use, so the bytes of later
            // taps do not occupy registers while the accumulators need them.
            let mut loaded = vec![false; span];
            for kx in 0..g.kw {
                for j in 0..np {
                    let at = j * g.sw + kx;
                    if !loaded[at] {
                        loaded[at] = true;
                        l.push(format!(
                            "        const int32_t x{at} = b[{}];",
                            ky * pw + at
                        ));
                    }
                }
                // One channel's weight at a time: with all four loaded ahead, the 16
                // accumulators no longer fit the registers.
                for i in 0..mo {
                    l.push(format!(
                        "        const int32_t w{kx}{i} = w[{}];",
                        (ky * g.kw + kx) * mo + i
                    ));
                    for j in 0..np {
                        l.push(format!("        a{i}{j} += w{kx}{i} * x{};", j * g.sw + kx));
                    }
                    l.push("        kiln_sched_barrier();".into());
                }
            }
            l.push("    }".into());
        }
        l.push(format!(
            "    b += {};\n        w += {};",
            g.kh * pw,
            g.taps() * mo
        ));
        l.push("}".into());
        store_block(p, name, c0, mo, np, l);
    };
    let advance = format!("y += {};", SCALAR_MO * p.y_chan);
    l.extend(column_blocks_with(
        p.m,
        SCALAR_MO,
        "oc",
        Some(&advance),
        block,
    ));
    push_lines(&mut s, 1, &l);
    s.push_str("}\n");
    s
}

/// Output columns per block of [`scalar_matvec`].
const MATVEC_MO: usize = 8;
/// Reduction steps per unrolled iteration of [`scalar_matvec`].
const MATVEC_UNROLL: usize = 4;

/// A product by a constant matrix with fewer rows than a pixel block (a fully connected layer
/// at batch 1), scalar: every weight is used once, so the loads that can be shared are the
/// inputs. Blocks of 8 output columns, weights interleaved by block, each loaded input
/// feeding 8 multiply-adds, the reduction unrolled by 4 with constant offsets. On a core
/// without multiply-accumulate this is 3 + 1/8 instructions per MAC before loop and output
/// costs: a weight load, a multiply and an add. `None` when the layer does not qualify.
pub(super) fn scalar_matvec(layer: &Layer, p: &Problem) -> Option<Generated> {
    if !matches!(p.source, Source::Rows) || p.n >= SCALAR_NP {
        return None;
    }
    let name = &layer.kernel.name;
    let xt = p.x_ctype();
    let mut packed = Vec::with_capacity(p.m * p.k);
    for c0 in (0..p.m).step_by(MATVEC_MO) {
        let width = MATVEC_MO.min(p.m - c0);
        for kk in 0..p.k {
            for i in 0..width {
                packed.push(p.weight(c0 + i, kk));
            }
        }
    }
    let (rq, rq_name) = records(layer, p);
    let mut f = row_kernel_start(p, name, "mv", "int8_t");
    let mut l = kernel_prologue("int8_t");
    let block = |mo: usize, c0: &str, l: &mut Vec<String>| {
        for i in 0..mo {
            l.push(format!("int32_t a{i} = B[{c0} + {i}];"));
        }
        l.push(format!("const {xt} *s = x;"));
        let step = |l: &mut Vec<String>, ind: &str, u: usize| {
            l.push(format!("{ind}{{"));
            l.push(format!("{ind}    const int32_t v = s[{u}];"));
            for i in 0..mo {
                l.push(format!("{ind}    a{i} += w[{}] * v;", u * mo + i));
            }
            l.push(format!("{ind}    kiln_sched_barrier();"));
            l.push(format!("{ind}}}"));
        };
        let iters = p.k / MATVEC_UNROLL;
        if iters > 0 {
            l.push(format!("for (int32_t q = 0; q < {iters}; ++q) {{"));
            for u in 0..MATVEC_UNROLL {
                step(l, "    ", u);
            }
            l.push(format!(
                "    s += {MATVEC_UNROLL};\n    w += {};",
                MATVEC_UNROLL * mo
            ));
            l.push("}".into());
        }
        let rest = p.k % MATVEC_UNROLL;
        for u in 0..rest {
            step(l, "", u);
        }
        if rest > 0 {
            l.push(format!("w += {};", rest * mo));
        }
        store_columns(p, name, c0, mo, l);
    };
    l.extend(column_blocks(p.m, MATVEC_MO, block));
    push_lines(&mut f, 1, &l);
    f.push_str("}\n");
    let (helpers, body) = by_rows(layer, p, "mv", &f, &rq_name);
    Some(generated(
        helpers,
        body,
        Packed {
            ctype: "int8_t",
            items: packed.iter().map(|v| v.to_string()).collect(),
            note: format!(
                "int8 weights packed for {}: blocks of {MATVEC_MO} columns, interleaved",
                layer.isa.name()
            ),
        },
        rq,
    ))
}
