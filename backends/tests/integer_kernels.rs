//! kiln's integer ops over windows, rows and products (QConv, QAveragePool, QMatMul,
//! QSoftmax) through both backends against the interpreter, bit for bit: the generated C
//! built with strict warnings and UBSan on the host (under several schedules for the
//! convolution and matrix kernels), and the Cranelift JIT (default, scalar, and one vector per
//! iteration without explicit padding). Seeded random data with the edge cases: zero points at
//! the ends of their range, i8 and u8 inputs, i8 and i16 weights, per-channel and per-tensor
//! requantization, multipliers above 1 (positive shifts), padding, groups and depthwise,
//! broadcast batches, and softmax rows of equal values. Also: the requantization construct on
//! arbitrary i32 operands. The element-wise integer ops are tested in `integer_elementwise.rs`,
//! a whole integer-only network in `integer_network.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

mod common;

use common::{
    check, check_all, i32s, next_rounding, qout, random, requant, requantization_case, schedules,
    single, Case, Operand, Rng,
};
use kiln_backends::kernel::Schedule;
use kiln_ir::fixed_point::{FixedPoint, Rounding};
use kiln_ir::{DType, Op, QOut, Tensor, TensorData};

/// A QConv case: X of `x_shape` and `x_type`, weights `[m, c / group, kernel..]` of `w_type`,
/// a bias with the folded zero-point term's magnitude, and per-channel or per-tensor
/// requantization (or none: raw i32 sums).
#[allow(clippy::too_many_arguments)] // one parameter per attribute of the op
fn qconv_case(
    seed: u64,
    (x_shape, x_type, x_zero_point): (&[usize], DType, i32),
    (m, w_type): (usize, DType),
    (kernel, strides, dilations, pads, group): (&[usize], &[usize], &[usize], &[usize], usize),
    requantization: Option<(bool, QOut)>,
) -> Case {
    let mut rng = Rng(seed);
    let c = x_shape[1];
    let mut w_shape = vec![m, c / group];
    w_shape.extend_from_slice(kernel);
    let x = random(&mut rng, x_type, x_shape);
    let w = random(&mut rng, w_type, &w_shape);
    let bias = i32s(
        &[m],
        (0..m).map(|_| rng.int(-1 << 20, 1 << 20) as i32).collect(),
    );
    let op = Op::QConv {
        kernel_shape: kernel.to_vec(),
        strides: strides.to_vec(),
        dilations: dilations.to_vec(),
        pads: pads.to_vec(),
        group,
        x_zero_point,
        output: requantization.map(|(_, out)| out),
        rounding: next_rounding(),
    };
    let mut operands = vec![Operand::Input(x), Operand::Const(w), Operand::Const(bias)];
    if let Some((per_channel, _)) = requantization {
        // Window sums reach ~2^22 (2^29 with i16 weights): multipliers from 2^-22 to 4 cover
        // saturated, in-range and rounded-to-zero outputs.
        let hi = if w_type == DType::I16 { -20.0 } else { -13.0 };
        let (mult, shift) = requant(&mut rng, if per_channel { m } else { 1 }, hi - 9.0, 2.0);
        operands.push(Operand::Const(mult));
        operands.push(Operand::Const(shift));
    }
    let name = format!(
        "qconv {x_type} x{x_shape:?} zp {x_zero_point}, {w_type} w{w_shape:?}, k{kernel:?} s{strides:?} d{dilations:?} p{pads:?} g{group}"
    );
    single(&name, op, operands)
}

#[test]
fn qconv_matches_the_interpreter() {
    let i8_out = qout(DType::I8, 5, -128, 127);
    let relu_u8 = qout(DType::U8, 10, 10, 255);
    let cases = [
        // Zero point at the low end of i8, per-channel, padding all around.
        qconv_case(
            1,
            (&[1, 3, 7, 6], DType::I8, -128),
            (8, DType::I8),
            (&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1),
            Some((true, i8_out)),
        ),
        // u8 at the high end, i16 weights, per tensor, stride 2, dilation 2, asymmetric pads.
        qconv_case(
            2,
            (&[1, 4, 9, 8], DType::U8, 255),
            (6, DType::I16),
            (&[3, 2], &[2, 1], &[2, 2], &[2, 0, 1, 3], 2),
            Some((false, relu_u8)),
        ),
        // Depthwise with pads wider than the window (windows entirely in the padding).
        qconv_case(
            3,
            (&[2, 3, 5, 12], DType::I8, 7),
            (3, DType::I8),
            (&[3, 3], &[1, 1], &[1, 1], &[6, 1, 5, 6], 3),
            Some((true, qout(DType::I8, -3, -100, 90))),
        ),
        // Groups of 5 output channels (tiles leave remainders); raw i32 sums.
        qconv_case(
            4,
            (&[1, 4, 6, 5], DType::U8, 128),
            (10, DType::I8),
            (&[3, 2], &[2, 1], &[1, 2], &[1, 0, 2, 3], 2),
            None,
        ),
        // Zero point 0 (padding adds nothing), pointwise (one flattened plane), per channel.
        qconv_case(
            5,
            (&[1, 6, 4, 5], DType::I8, 0),
            (9, DType::I8),
            (&[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0], 1),
            Some((true, i8_out)),
        ),
        qconv_case(
            6,
            (&[1, 6, 4, 5], DType::U8, 3),
            (7, DType::I8),
            (&[3, 3], &[1, 1], &[1, 1], &[0, 2, 0, 2], 1),
            Some((false, qout(DType::U8, 0, 0, 255))),
        ),
        // 1-D and 3-D, and a dilated kernel wider than the input.
        qconv_case(
            7,
            (&[1, 2, 9], DType::I8, -20),
            (5, DType::I8),
            (&[3], &[2], &[3], &[4, 1], 1),
            Some((true, i8_out)),
        ),
        qconv_case(
            8,
            (&[1, 2, 4, 5, 6], DType::U8, 200),
            (4, DType::I16),
            (&[2, 3, 2], &[1, 2, 1], &[2, 1, 1], &[1, 0, 1, 0, 1, 1], 1),
            Some((true, qout(DType::U8, 128, 0, 255))),
        ),
        qconv_case(
            9,
            (&[1, 1, 2, 3], DType::I8, 127),
            (5, DType::I8),
            (&[2, 2], &[1, 1], &[5, 1], &[3, 0, 3, 0], 1),
            None,
        ),
    ];
    check_all(&cases, &schedules());
}

/// A QMatMul case: A of `a_shape`, B of `b_shape` (both random), the bias of B's batch and
/// columns, and the requantization (per column or per tensor) or raw i32 sums.
fn qmatmul_case(
    seed: u64,
    (a_shape, a_type): (&[usize], DType),
    (b_shape, b_type): (&[usize], DType),
    requantization: Option<(bool, QOut)>,
    b_const: bool,
) -> Case {
    let mut rng = Rng(seed);
    let a = random(&mut rng, a_type, a_shape);
    let b = random(&mut rng, b_type, b_shape);
    let n = b_shape[b_shape.len() - 1];
    let mut bias_shape = b_shape[..b_shape.len() - 2].to_vec();
    bias_shape.push(n);
    let bias_n: usize = bias_shape.iter().product();
    let bias = i32s(
        &bias_shape,
        (0..bias_n)
            .map(|_| rng.int(-1 << 20, 1 << 20) as i32)
            .collect(),
    );
    let b = if b_const {
        Operand::Const(b)
    } else {
        Operand::Input(b)
    };
    let mut operands = vec![Operand::Input(a), b, Operand::Const(bias)];
    if let Some((per_channel, _)) = requantization {
        let hi = if b_type == DType::I16 { -19.0 } else { -11.0 };
        let (mult, shift) = requant(&mut rng, if per_channel { n } else { 1 }, hi - 9.0, 2.0);
        operands.push(Operand::Const(mult));
        operands.push(Operand::Const(shift));
    }
    let op = Op::QMatMul {
        output: requantization.map(|(_, out)| out),
        rounding: next_rounding(),
    };
    let name = format!("qmatmul {a_type}{a_shape:?} x {b_type}{b_shape:?}");
    single(&name, op, operands)
}

#[test]
fn qmatmul_matches_the_interpreter() {
    let cases = [
        // Batched A against one B (B broadcast), per column.
        qmatmul_case(
            11,
            (&[2, 3, 17], DType::I8),
            (&[17, 9], DType::I8),
            Some((true, qout(DType::I8, -128, -128, 127))),
            true,
        ),
        // Both batched and broadcast both ways, u8 against i16, per tensor, B an input.
        qmatmul_case(
            12,
            (&[2, 1, 3, 6], DType::U8),
            (&[1, 4, 6, 5], DType::I16),
            Some((false, qout(DType::U8, 255, 0, 255))),
            false,
        ),
        // Raw sums; rows of one.
        qmatmul_case(13, (&[1, 40], DType::I8), (&[40, 7], DType::I8), None, true),
        qmatmul_case(
            14,
            (&[3, 1, 8], DType::U8),
            (&[3, 8, 1], DType::I8),
            Some((true, qout(DType::I8, 0, 0, 127))),
            true,
        ),
    ];
    check_all(&cases, &schedules());
}

/// The requantization construct on arbitrary operands: a QMatMul whose sums are its bias
/// (A is 1, B is 0) and whose output is the requantized i32 itself, over the edge cases of
/// the high multiply (both operands `i32::MIN`), ties of both roundings, shifts at and beyond
/// +-31 and random values.
#[test]
fn requantization_is_exact_on_any_i32() {
    for rounding in [Rounding::TfLite, Rounding::HalfEven] {
        check(&requantization_case(rounding));
    }
}

/// A QAveragePool case over X of `x_shape`; with `rescale`, multiplier and shift tables whose
/// entry `c` rescales a sum of `c` taps by `ratio / c`.
#[allow(clippy::too_many_arguments)] // one parameter per attribute of the op
fn qavgpool_case(
    seed: u64,
    (x_shape, x_type, x_zero_point): (&[usize], DType, i32),
    (kernel, strides, dilations, pads): (&[usize], &[usize], &[usize], &[usize]),
    ceil_mode: bool,
    count_include_pad: bool,
    output: QOut,
    rescale: Option<f64>,
) -> Case {
    let mut rng = Rng(seed);
    let x = random(&mut rng, x_type, x_shape);
    let op = Op::QAveragePool {
        kernel_shape: kernel.to_vec(),
        strides: strides.to_vec(),
        dilations: dilations.to_vec(),
        pads: pads.to_vec(),
        ceil_mode,
        count_include_pad,
        x_zero_point,
        output,
        rescale: rescale.is_some(),
        // TFLite's rounding division (no rescale) exists only in TFLite rounding.
        rounding: if rescale.is_some() {
            next_rounding()
        } else {
            Rounding::TfLite
        },
    };
    let mut operands = vec![Operand::Input(x)];
    if let Some(ratio) = rescale {
        let taps: usize = kernel.iter().product();
        let fps: Vec<FixedPoint> = (0..=taps)
            .map(|c| FixedPoint::from_real(if c == 0 { 0.7 } else { ratio / c as f64 }))
            .collect();
        operands.push(Operand::Const(i32s(
            &[taps + 1],
            fps.iter().map(|f| f.multiplier).collect(),
        )));
        operands.push(Operand::Const(i32s(
            &[taps + 1],
            fps.iter().map(|f| f.shift).collect(),
        )));
    }
    let name = format!(
        "qavgpool {x_type}{x_shape:?} zp {x_zero_point} k{kernel:?} s{strides:?} d{dilations:?} p{pads:?} ceil {ceil_mode} include_pad {count_include_pad} rescale {rescale:?}"
    );
    single(&name, op, operands)
}

#[test]
fn qaverage_pool_matches_the_interpreter() {
    type Window<'a> = (&'a [usize], &'a [usize], &'a [usize], &'a [usize]);
    let windows: [Window; 5] = [
        (&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1]),
        (&[3, 2], &[2, 2], &[1, 2], &[1, 0, 2, 1]),
        // Pads wider than the window: windows entirely in the padding.
        (&[3, 3], &[1, 1], &[1, 1], &[2, 6, 2, 6]),
        (&[2, 3, 2], &[1, 2, 2], &[2, 1, 1], &[1, 1, 0, 0, 1, 1]),
        (&[3], &[2], &[2], &[1, 0]),
    ];
    let mut seed = 30;
    let mut cases = Vec::new();
    for window in &windows {
        let x_shape: Vec<usize> = [2, 3]
            .iter()
            .chain(&[5, 7, 6][..window.0.len()])
            .copied()
            .collect();
        for (x_type, zp) in [(DType::I8, -128), (DType::U8, 255), (DType::I8, 3)] {
            for ceil_mode in [false, true] {
                for include_pad in [false, true] {
                    for rescale in [None, Some(1.0), Some(3.7)] {
                        seed += 1;
                        // Without rescaling, input and output share their quantization.
                        let output = match (rescale, x_type) {
                            (None, DType::I8) => qout(DType::I8, zp, -128, 127),
                            (None, _) => qout(DType::U8, zp, 0, 255),
                            (Some(_), _) => qout(DType::I8, -5, -128, 120),
                        };
                        let case = qavgpool_case(
                            seed,
                            (&x_shape, x_type, zp),
                            *window,
                            ceil_mode,
                            include_pad,
                            output,
                            rescale,
                        );
                        cases.push(case);
                    }
                }
            }
        }
    }
    check_all(&cases, &[Schedule::default()]);
}

/// A QSoftmax case: rows along `axis` of X, the exponential table of input scale `scale`,
/// and the 1/256 output scale.
fn qsoftmax_case(x: Tensor, axis: usize, scale: f64, output: QOut) -> Case {
    let table: Vec<i32> = (0..256)
        .map(|d| ((1u64 << 30) as f64 * (-(d as f64) * scale).exp()).round() as i32)
        .collect();
    let op = Op::QSoftmax {
        axis,
        inv_scale: 256 << 16,
        output,
    };
    let name = format!("qsoftmax {} axis {axis} scale {scale}", x.ty());
    single(
        &name,
        op,
        vec![Operand::Input(x), Operand::Const(i32s(&[256], table))],
    )
}

#[test]
fn qsoftmax_matches_the_interpreter() {
    let mut rng = Rng(50);
    let i8_out = qout(DType::I8, -128, -128, 127);
    let u8_out = qout(DType::U8, 0, 0, 255);
    // Rows of equal values (every e is 2^30), a row of the extremes, and random rows.
    let mut v: Vec<i8> = vec![7; 10];
    v.extend([-128, 127, -128, 127, 0, 0, 0, 0, 0, 0]);
    v.extend((0..40).map(|_| rng.int(-128, 127) as i8));
    let rows = Tensor::new(vec![6, 10], TensorData::I8(v)).unwrap();
    let u = random(&mut rng, DType::U8, &[2, 5, 3, 4]);
    let equal = Tensor::new(vec![2, 4, 3], TensorData::U8(vec![200; 24])).unwrap();
    let cases = [
        qsoftmax_case(rows.clone(), 1, 0.1, i8_out),
        qsoftmax_case(rows, 1, 0.004, u8_out),
        // Rows strided across the inner dimensions (axis not last).
        qsoftmax_case(u.clone(), 1, 0.05, i8_out),
        qsoftmax_case(u, 2, 1.0, u8_out),
        qsoftmax_case(equal, 1, 0.02, u8_out),
        qsoftmax_case(random(&mut rng, DType::I8, &[3, 300]), 1, 0.03, i8_out),
    ];
    check_all(&cases, &[Schedule::default()]);
}
