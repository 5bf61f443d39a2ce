//! The Arm DSP emitter of the int8 matrix product: columns of 16-bit pairs built once per
//! pixel pair (the im2col buffer is a local of the layer function), int8 weights four per
//! word stored so that one `SXTB16` and one `SXTB16 ROR 8` give the pairs matching the
//! columns; each `SMLAD` adds two products. Blocks of 2 channels x 2 pixels.

use kiln_ir::DType;

use super::{
    by_rows, column_blocks, generated, int_literal, kernel_prologue, push_lines, records,
    row_kernel_start, store_columns, words, wrap, ConvGeom, KOrder, Problem, Source,
};
use crate::c::int8::{Generated, Layer, Packed, WeightLayout};

/// The Arm DSP layer: columns of 16-bit pairs for two pixels at a time.
pub(super) fn dsp(layer: &Layer, p: &Problem) -> Generated {
    if matches!(p.source, Source::Rows) && p.n == 1 {
        return dsp_matvec(layer, p);
    }
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
    let xt = p.x_ctype();
    let mut lines = vec![format!("int32_t col[{}];", 2 * kp / 2)];
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
    let body = wrap(layer, p, lines);
    generated(
        helpers,
        body,
        Packed {
            ctype: "int32_t",
            items: words(&packed),
            note: format!(
                "int8 weights packed for {}: {} rows of {kq} words, each [w0, w2, w1, w3]",
                layer.isa.name(),
                p.m
            ),
        },
        rq,
    )
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
    let mut l = kernel_prologue("int32_t");
    // One pixel (a product at batch 1): blocks of 4 channels share each pair of the column;
    // two pixels: 2 x 2 (the registers of 4 accumulators and 4 column words).
    let mo_full = if np == 1 { 4 } else { 2 };
    let full = p.m / mo_full;
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
            "for (int32_t oc = 0; oc < {}; oc += {mo_full}) {{",
            mo_full * full
        ));
        let mut inner = Vec::new();
        block(mo_full, &mut inner, "oc");
        inner.push(format!("y += {};", mo_full * p.y_chan));
        l.extend(inner.into_iter().map(|x| format!("    {x}")));
        l.push("}".into());
    }
    let rest = p.m % mo_full;
    if rest > 0 {
        l.push("{".into());
        let mut inner = Vec::new();
        block(rest, &mut inner, &format!("{}", p.m - rest));
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

/// Output columns per block of [`dsp_matvec`] with pre-extended weights, and with int8 weights
/// (whose SXTB16 splits need registers the accumulators of a wider block would take: GCC
/// spills at 4; 3 measured best, unrolled by 8: AD on cortex-m4 0.524M at 4, 0.547M at 2,
/// 0.405M at 3).
const MATVEC_MO: usize = 4;
const MATVEC_MO_INT8: usize = 3;
/// Groups of four inputs per loop iteration of [`dsp_matvec`], each behind a scheduling
/// barrier (GCC interleaving two groups spills accumulators). AD on cortex-m4 with int8
/// weights: 0.459M instructions at 2, 0.434M at 4, 0.405M at 8 (10.9 KB of code), 0.399M at
/// 16 (19.0 KB); 0.493M before, one group per iteration.
const MATVEC_UNROLL: usize = 8;

/// The largest int8 weight matrix [`dsp_matvec`] stores pre-extended (`WeightLayout::Balanced`;
/// `Fast` pre-extends every one, `Compact` none): doubling it costs at
/// most this much flash. Larger layers keep int8 weights (four per word, split by SXTB16 in
/// the loop): an int8 model's weights stay a quarter of the float model's, which matters
/// more on a microcontroller than the speed the extension buys (AD on cortex-m4 before the
/// loop was unrolled: 0.415M instructions with 535 KB of constants pre-extended, 0.493M with
/// its 270 KB of int8 weights; 0.405M now with int8 weights).
const MATVEC_WIDEN_MAX_BYTES: usize = 4096;

/// A product by a constant matrix with one row (a fully connected layer at batch 1). Each
/// weight is used once and paired as the input's own SXTB16 halves come: one word load of
/// four inputs gives (x0, x2) and (x1, x3), which meet the weight pairs (w0, w2) and (w1, w3)
/// of four output columns, and there is no column buffer. Small matrices store the pairs
/// pre-extended (16 MACs in about 15 instructions); larger ones one word of four int8 weights
/// per column, split by SXTB16 in the loop (two more instructions per column).
fn dsp_matvec(layer: &Layer, p: &Problem) -> Generated {
    let name = &layer.kernel.name;
    let kq = p.k.div_ceil(4);
    let widened = match layer.weights {
        WeightLayout::Compact => false,
        WeightLayout::Balanced => p.m * p.k <= MATVEC_WIDEN_MAX_BYTES,
        WeightLayout::Fast => true,
    };
    let mo_full = if widened { MATVEC_MO } else { MATVEC_MO_INT8 };
    let pair =
        |lo: i8, hi: i8| ((i32::from(lo) as u32 & 0xffff) | ((i32::from(hi) as u32) << 16)) as i32;
    let word = |b: [i8; 4]| i32::from_le_bytes(b.map(|v| v as u8));
    // Blocks of mo_full columns; per group of four inputs, each column's two pairs (or its
    // one word of four bytes).
    let mut pairs = Vec::with_capacity(p.m * kq * if widened { 2 } else { 1 });
    for c0 in (0..p.m).step_by(mo_full) {
        for g in 0..kq {
            for c in c0..p.m.min(c0 + mo_full) {
                let w = |j: usize| p.weight(c, 4 * g + j);
                if widened {
                    pairs.push(pair(w(0), w(2)));
                    pairs.push(pair(w(1), w(3)));
                } else {
                    pairs.push(word([w(0), w(1), w(2), w(3)]));
                }
            }
        }
    }
    let (rq, rq_name) = records(layer, p);
    let xt = p.x_ctype();
    let mut f = row_kernel_start(p, name, "mv", "int32_t");
    let mut l = kernel_prologue("int32_t");
    let block = |mo: usize, c0: &str, l: &mut Vec<String>| {
        for i in 0..mo {
            l.push(format!("int32_t a{i} = B[{c0} + {i}];"));
        }
        l.push(format!("const {xt} *s = x;"));
        let macs = |l: &mut Vec<String>, ind: &str| {
            for i in 0..mo {
                if widened {
                    l.push(format!(
                        "{ind}{{\n{ind}    const int32_t we = w[{}], wo = w[{}];",
                        2 * i,
                        2 * i + 1
                    ));
                } else {
                    l.push(format!(
                        "{ind}{{\n{ind}    const int32_t wv = w[{i}];\n{ind}    const int32_t we = kiln_sxtb16(wv), wo = kiln_sxtb16_ror8(wv);"
                    ));
                }
                l.push(format!("{ind}    a{i} = kiln_smlad(we, e, a{i});"));
                l.push(format!("{ind}    a{i} = kiln_smlad(wo, o, a{i});\n{ind}}}"));
            }
            l.push(format!("{ind}w += {};", if widened { 2 * mo } else { mo }));
        };
        let full = p.k / 4;
        // Two groups of four inputs per iteration: the loop's compare, branch and pointer
        // updates are a sixth of the work at one.
        let group = |l: &mut Vec<String>, ind: &str| {
            l.push(format!("{ind}{{"));
            l.push(format!("{ind}    const int32_t v = kiln_load_i32(s);"));
            l.push(format!(
                "{ind}    const int32_t e = {}(v), o = {}(v);",
                ext(p, false),
                ext(p, true)
            ));
            macs(l, &format!("{ind}    "));
            l.push(format!("{ind}    s += 4;"));
            // One group at a time: interleaved, the two run out of registers.
            l.push(format!("{ind}    kiln_sched_barrier();"));
            l.push(format!("{ind}}}"));
        };
        if full >= MATVEC_UNROLL {
            l.push(format!(
                "for (int32_t g = 0; g < {}; ++g) {{",
                full / MATVEC_UNROLL
            ));
            for _ in 0..MATVEC_UNROLL {
                group(l, "    ");
            }
            l.push("}".into());
        }
        for _ in 0..full % MATVEC_UNROLL {
            group(l, "");
        }
        let rest = p.k % 4;
        if rest > 0 {
            // The row's last values: no word load past its end.
            let b = |i: usize| {
                if i < rest {
                    format!("s[{i}]")
                } else {
                    "0".into()
                }
            };
            l.push("{".into());
            l.push(format!(
                "    const int32_t e = kiln_pkhbt({}, {}), o = kiln_pkhbt({}, {});",
                b(0),
                b(2),
                b(1),
                b(3)
            ));
            macs(l, "    ");
            l.push("}".into());
        }
        store_columns(p, name, c0, mo, l);
    };
    l.extend(column_blocks(p.m, mo_full, block));
    push_lines(&mut f, 1, &l);
    f.push_str("}\n");
    let (helpers, body) = by_rows(layer, p, "mv", &f, &rq_name);
    generated(
        helpers,
        body,
        Packed {
            ctype: "int32_t",
            items: pairs.iter().map(|&v| int_literal(v)).collect(),
            note: if widened {
                format!(
                    "int8 weights pre-extended for {}: blocks of {MATVEC_MO} columns, per 4 inputs each column's 16-bit pairs (w0, w2), (w1, w3)",
                    layer.isa.name()
                )
            } else {
                format!(
                    "int8 weights for {}: blocks of {mo_full} columns, per 4 inputs each column's word of 4 bytes",
                    layer.isa.name()
                )
            },
        },
        rq,
    )
}
