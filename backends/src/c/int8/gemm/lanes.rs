//! Two multiply-adds per multiply on a core without SIMD (RV32IMAC): a fully connected layer
//! at batch 1 with the weights of two output columns packed in one 32-bit word,
//! `W = w_lo + 65536 w_hi`. One `mul` by an input value computes both products, in two
//! 16-bit lanes of the result:
//!
//! ```text
//! g = sum_{k in group} x_k W_k = S_lo + 65536 S_hi        (mod 2^32)
//! ```
//!
//! Kiln knows every weight at compile time, so it proves for each group of `G` reduction
//! steps that both lane sums stay in [-32768, 32767] whatever the int8 inputs are; the lanes
//! then separate exactly: `S_hi = (g + 32768) >> 16` (arithmetic), and the column `lo`
//! accumulates the whole `g`, from which `65536 * sum S_hi` is subtracted at the end (mod
//! 2^32, exact because the true sum fits in int32, which the accumulator bound proves).
//! Two steps always fit (|x w| <= 128 * 127); trained weights are small, so most layers
//! prove groups of 4 to 8. Per group and pair of columns: `G` word loads, `G` multiplies,
//! `G - 1 + 4` adds and one shift for `2 G` multiply-adds, against 3 instructions per
//! multiply-add of the one-product kernel. The price is flash: two bytes per weight (the
//! issue's "weights pre-extended in flash" for RV32).

use super::{
    by_rows, column_blocks, generated, kernel_prologue, push_lines, records, row_kernel_start,
    store_columns, Problem, Source,
};
use crate::c::int8::{Generated, Layer, Packed, WeightLayout};

/// Pairs of output columns per block (8 columns: 8 accumulators, up to 8 inputs and the
/// pointers fit the 31 registers of RV32 without spills).
const PAIRS: usize = 4;
/// Largest group tried; longer groups save little once the 4 separating adds are amortized.
const MAX_GROUP: usize = 6;
/// Reduction steps per unrolled loop iteration, at least.
const MIN_STEPS: usize = 4;

/// The lane kernel of `p`, or `None` when it does not qualify: a product by a constant matrix
/// at batch 1 (fewer rows than a pixel block) whose weights prove groups of at least 2, unless
/// the build keeps weights compact (one byte each).
pub(super) fn scalar_lanes(layer: &Layer, p: &Problem) -> Option<Generated> {
    if !matches!(p.source, Source::Rows)
        || p.n >= super::scalar::SCALAR_NP
        || p.m < 2
        || layer.weights == WeightLayout::Compact
    {
        return None;
    }
    let group = longest_group(p)?;
    let steps = group * MIN_STEPS.div_ceil(group);
    let name = &layer.kernel.name;
    let xt = p.x_ctype();
    let (rq, rq_name) = records(layer, p);
    let mut f = row_kernel_start(p, name, "lanes", "int32_t");
    let mut l = kernel_prologue("int32_t");
    let block = |mo: usize, c0: &str, l: &mut Vec<String>| {
        let pairs = mo.div_ceil(2);
        for i in 0..pairs {
            l.push(format!("uint32_t t{i} = 0;"));
            l.push(format!("int32_t h{i} = 0;"));
        }
        l.push(format!("const {xt} *s = x;"));
        let iters = p.k / steps;
        if iters > 0 {
            l.push(format!("for (int32_t q = 0; q < {iters}; ++q) {{"));
            for g0 in (0..steps).step_by(group) {
                group_lines(l, "    ", pairs, g0, group);
            }
            l.push(format!("    s += {steps};\n    w += {};", steps * pairs));
            l.push("}".into());
        }
        let rest = p.k % steps;
        for g0 in (0..rest).step_by(group) {
            group_lines(l, "", pairs, g0, group.min(rest - g0));
        }
        if rest > 0 {
            l.push(format!("w += {};", rest * pairs));
        }
        for i in 0..pairs {
            l.push(format!(
                "const int32_t a{} = B[{c0} + {}] + (int32_t)(t{i} - ((uint32_t)h{i} << 16));",
                2 * i,
                2 * i
            ));
            if 2 * i + 1 < mo {
                l.push(format!(
                    "const int32_t a{} = B[{c0} + {}] + h{i};",
                    2 * i + 1,
                    2 * i + 1
                ));
            }
        }
        store_columns(p, name, c0, mo, l);
    };
    l.extend(column_blocks(p.m, 2 * PAIRS, block));
    push_lines(&mut f, 1, &l);
    f.push_str("}\n");
    let (helpers, body) = by_rows(layer, p, "lanes", &f, &rq_name);
    Some(generated(
        helpers,
        body,
        Packed {
            ctype: "int32_t",
            items: packed_words(p).iter().map(|v| v.to_string()).collect(),
            note: format!(
                "int8 weights of column pairs in 16-bit lanes for {}, groups of {group}: blocks of {} columns, interleaved",
                layer.isa.name(),
                2 * PAIRS
            ),
        },
        rq,
    ))
}

/// One group of `len` reduction steps from `g0` on: the inputs loaded once, then per pair of
/// columns the lane sum `g`, added whole to `t` and its high lane to `h`.
fn group_lines(l: &mut Vec<String>, ind: &str, pairs: usize, g0: usize, len: usize) {
    l.push(format!("{ind}{{"));
    for u in 0..len {
        l.push(format!("{ind}    const int32_t v{u} = s[{}];", g0 + u));
    }
    for i in 0..pairs {
        let terms: Vec<String> = (0..len)
            .map(|u| format!("(uint32_t)(v{u} * w[{}])", (g0 + u) * pairs + i))
            .collect();
        l.push(format!(
            "{ind}    const uint32_t g{i} = {};",
            terms.join(" + ")
        ));
        l.push(format!(
            "{ind}    t{i} += g{i};\n{ind}    h{i} += (int32_t)(g{i} + 32768u) >> 16;"
        ));
    }
    l.push(format!("{ind}    kiln_sched_barrier();"));
    l.push(format!("{ind}}}"));
}

/// The weights as the kernel reads them: per block of `2 PAIRS` columns, per reduction step,
/// per pair the word `w_lo + 65536 w_hi` (an odd block's last high lane is 0).
fn packed_words(p: &Problem) -> Vec<i32> {
    let mut words = Vec::with_capacity(p.m.div_ceil(2) * p.k);
    for c0 in (0..p.m).step_by(2 * PAIRS) {
        let width = (2 * PAIRS).min(p.m - c0);
        for kk in 0..p.k {
            for i in 0..width.div_ceil(2) {
                let lo = i32::from(p.weight(c0 + 2 * i, kk));
                let hi = if c0 + 2 * i + 1 < p.m {
                    i32::from(p.weight(c0 + 2 * i + 1, kk))
                } else {
                    0
                };
                words.push(lo + 65536 * hi);
            }
        }
    }
    words
}

/// The longest group (2 to [`MAX_GROUP`] steps) for which every column's sum over every group
/// of the layout the kernel uses stays within a 16-bit lane for every input in the input
/// type's range; `None` when not even 2 do.
fn longest_group(p: &Problem) -> Option<usize> {
    (2..=MAX_GROUP).rev().find(|&group| {
        let steps = group * MIN_STEPS.div_ceil(group);
        (0..p.m).all(|c| groups_of(p.k, steps, group).all(|r| lane_fits(p, c, r)))
    })
}

/// The ranges of reduction steps the kernel sums in one lane: groups of `group` inside each
/// unrolled iteration of `steps`, and the same over the remainder.
fn groups_of(k: usize, steps: usize, group: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let full = k / steps * steps;
    (0..full)
        .step_by(group)
        .map(move |g0| g0..g0 + group)
        .chain(
            (full..k)
                .step_by(group)
                .map(move |g0| g0..(g0 + group).min(k)),
        )
}

/// Whether column `c`'s sum over the steps `range` stays in [-32768, 32767] for all inputs
/// in the input type's range (the range includes 0, so each term's extremes add up).
fn lane_fits(p: &Problem, c: usize, range: std::ops::Range<usize>) -> bool {
    let (lo, hi) = p.x_range();
    let (mut min, mut max) = (0i64, 0i64);
    for kk in range {
        let w = i64::from(p.weight(c, kk));
        let (a, b) = (lo * w, hi * w);
        min += a.min(b);
        max += a.max(b);
    }
    min >= -32768 && max <= 32767
}
