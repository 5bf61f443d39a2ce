//! kiln's integer ops (QConv, QMatMul, QAveragePool, QSoftmax, Requantize, QTable, QAdd,
//! QMul) through both backends against the interpreter, bit for bit: the generated C built
//! with strict warnings and UBSan on the host (under several schedules for the convolution
//! and matrix kernels), and the Cranelift JIT (default, scalar, and one vector per iteration
//! without explicit padding). Seeded random data with the edge cases: zero points at the ends
//! of their range, i8 and u8 inputs, i8 and i16 weights, per-channel and per-tensor
//! requantization, multipliers above 1 (positive shifts), padding, groups and depthwise,
//! broadcasting, and softmax rows of equal values. Also: the requantization construct on
//! arbitrary i32 operands, and the C of an integer-only graph built for a Cortex-M3 without an
//! FPU, warning-free and calling no floating-point helper.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{assert_same, host_options, i32s, qout, random, Rng};
use kiln_backends::c::{emit_c, COptions};
use kiln_backends::cranelift::{CraneliftOptions, JitProgram};
use kiln_backends::host::run_c;
use kiln_backends::kernel::{LoopOrder, Schedule};
use kiln_ir::fixed_point::{FixedPoint, Rounding};
use kiln_ir::{DType, Graph, Op, QOut, Tensor, TensorData};

/// The two rounding conventions in turn, so every kind of case meets both.
fn next_rounding() -> Rounding {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    if NEXT.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
        Rounding::TfLite
    } else {
        Rounding::HalfEven
    }
}

/// Multiplier and shift tensors for `n` channels from log-uniform reals in
/// `[2^lo, 2^hi]` (above 1 for positive `hi`: a positive shift).
fn requant(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> (Tensor, Tensor) {
    let fps: Vec<FixedPoint> = (0..n)
        .map(|_| FixedPoint::from_real((lo + (hi - lo) * rng.unit()).exp2()))
        .collect();
    (
        i32s(&[n], fps.iter().map(|f| f.multiplier).collect()),
        i32s(&[n], fps.iter().map(|f| f.shift).collect()),
    )
}

/// One operand of a test graph: a graph input or a constant (weights).
enum Operand {
    Input(Tensor),
    Const(Tensor),
}

struct Case {
    name: String,
    graph: Graph,
    inputs: Vec<Tensor>,
}

/// A graph of one node running `op` on `operands`.
fn single(name: &str, op: Op, operands: Vec<Operand>) -> Case {
    let mut g = Graph::new(name);
    let mut inputs = Vec::new();
    let ids = operands
        .into_iter()
        .enumerate()
        .map(|(i, o)| match o {
            Operand::Input(t) => {
                let id = g.add_input(format!("in{i}"), t.ty());
                inputs.push(t);
                id
            }
            Operand::Const(t) => g.add_const(format!("c{i}"), t),
        })
        .collect();
    let node = g
        .add_node("n", op, ids, vec!["y".into()])
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    g.set_outputs(g.node(node).outputs.clone());
    Case {
        name: name.to_string(),
        graph: g,
        inputs,
    }
}

/// The schedules the C of convolutions and matrix products is checked under.
fn schedules() -> Vec<Schedule> {
    let s = |oc_tile, windowed_oc_tile, loop_order, unroll_limit| Schedule {
        unroll_limit,
        oc_tile,
        windowed_oc_tile,
        loop_order,
    };
    vec![
        Schedule::default(),
        s(4, 8, LoopOrder::ChannelsOuter, 3),
        s(3, 0, LoopOrder::PixelsOuter, 3),
        s(2, 0, LoopOrder::ChannelsOuter, 9),
    ]
}

/// The JIT configurations every case runs under.
fn jit_configs() -> Vec<(&'static str, CraneliftOptions)> {
    vec![
        ("default", CraneliftOptions::default()),
        (
            "scalar",
            CraneliftOptions {
                simd: false,
                ..CraneliftOptions::default()
            },
        ),
        (
            "one vector, implicit padding, no fma, pixels outer",
            CraneliftOptions {
                vector_parts: 1,
                explicit_padding: false,
                fma: false,
                schedule: Schedule {
                    loop_order: LoopOrder::PixelsOuter,
                    ..CraneliftOptions::default().schedule
                },
                ..CraneliftOptions::default()
            },
        ),
        (
            "vector, untiled (integer lanes in matrix products too)",
            CraneliftOptions {
                schedule: Schedule::default(),
                ..CraneliftOptions::default()
            },
        ),
    ]
}

/// Runs `case` through the interpreter, the C backend under `schedules` and the JIT, and
/// checks every output is identical.
fn check_with(case: &Case, schedules: &[Schedule]) {
    let want = kiln_ir::interp::run(&case.graph, &case.inputs)
        .unwrap_or_else(|e| panic!("{}: interpreter: {e}", case.name));
    let host = host_options();
    for s in schedules {
        let c = COptions {
            schedule: *s,
            ..COptions::default()
        };
        let got = run_c(&case.graph, &case.inputs, &c, &host)
            .unwrap_or_else(|e| panic!("{} (C, {s:?}): {e}", case.name));
        assert_same(&format!("{} (C, {s:?})", case.name), &got, &want);
    }
    for (name, options) in jit_configs() {
        let mut program = JitProgram::compile(&case.graph, &options)
            .unwrap_or_else(|e| panic!("{} (JIT {name}): {e}", case.name));
        let got = program
            .run(&case.inputs)
            .unwrap_or_else(|e| panic!("{} (JIT {name}): {e}", case.name));
        assert_same(&format!("{} (JIT {name})", case.name), &got, &want);
    }
}

fn check(case: &Case) {
    check_with(case, &[Schedule::default()]);
}

/// [`check_with`] on every case, on as many threads as the host has (each C build and run is
/// a separate process).
fn check_all(cases: &[Case], schedules: &[Schedule]) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.min(cases.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match cases.get(i) {
                    Some(case) => check_with(case, schedules),
                    None => break,
                }
            });
        }
    });
}

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

/// The graph of [`requantization_is_exact_on_any_i32`], checked against the reference
/// function itself.
fn requantization_case(rounding: Rounding) -> Case {
    let mut rng = Rng(99);
    let mut triples: Vec<(i32, i32, i32)> = vec![
        (i32::MIN, i32::MIN, 0),
        (i32::MIN / 2, i32::MIN, 1),
        (i32::MIN, i32::MAX, 0),
        (i32::MAX, i32::MAX, 0),
        (i32::MAX, i32::MIN, 0),
        (1 << 30, 3, 0),
        (-(1 << 30), 3, 0),
        (5, 1 << 30, 0),
        (-5, 1 << 30, 0),
        (5, 1 << 30, -1),
        (-5, 1 << 30, -1),
        (-7, 1 << 30, -2),
        (7, i32::MAX, -31),
        (-7, i32::MAX, 31),
        (123_456, 1 << 30, 40),
        (-123_456, 1 << 30, -40),
        (0, i32::MIN, 7),
        (1, 1, 31),
        (-1, -1, -31),
    ];
    for _ in 0..400 {
        let x = rng.int(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        let m = rng.int(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        let s = rng.int(-33, 33) as i32;
        triples.push((x, m, s));
        // Small values at negative shifts: the rounding ties are common.
        triples.push((rng.int(-4096, 4096) as i32, 1 << 30, rng.int(-12, 0) as i32));
        // Realistic multipliers (2^30..2^31) on accumulator-sized values.
        let m = rng.int(1 << 30, i64::from(i32::MAX)) as i32;
        triples.push((rng.int(-1 << 24, 1 << 24) as i32, m, rng.int(-20, 3) as i32));
    }
    let n = triples.len();
    let one = Tensor::new(vec![1, 1], TensorData::I8(vec![1])).unwrap();
    let zeros = Tensor::new(vec![1, n], TensorData::I16(vec![0; n])).unwrap();
    let col = |f: fn(&(i32, i32, i32)) -> i32| i32s(&[n], triples.iter().map(f).collect());
    let op = Op::QMatMul {
        output: Some(QOut::full(DType::I32, 0)),
        rounding,
    };
    let case = single(
        "requantize",
        op,
        vec![
            Operand::Input(one),
            Operand::Const(zeros),
            Operand::Input(col(|t| t.0)),
            Operand::Input(col(|t| t.1)),
            Operand::Input(col(|t| t.2)),
        ],
    );
    let want = kiln_ir::interp::run(&case.graph, &case.inputs).unwrap();
    // The interpreter's output is the reference function itself.
    let expected: Vec<i64> = triples
        .iter()
        .map(|&(x, m, s)| i64::from(rounding.requantize(x, m, s)))
        .collect();
    assert_eq!(want[0].to_i64_vec().unwrap(), expected);
    case
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

#[test]
fn integer_elementwise_ops_match_the_interpreter() {
    let mut rng = Rng(60);
    let fp = |r: f64| FixedPoint::from_real(r);
    let mut cases = Vec::new();
    // Requantize: zero points at both ends, multipliers below and above 1.
    for (i, (t, x_zp, real, out)) in [
        (DType::I8, -128, 0.37, qout(DType::I8, 3, -128, 127)),
        (DType::U8, 255, 2.9, qout(DType::U8, 128, 0, 255)),
        (DType::I8, 0, 1.0, qout(DType::U8, 0, 0, 255)),
        (DType::U8, 0, 0.0019, qout(DType::I8, -7, -20, 90)),
    ]
    .into_iter()
    .enumerate()
    {
        let x = random(&mut rng, t, &[3, 5, 7]);
        let op = Op::Requantize {
            x_zero_point: x_zp,
            scale: fp(real),
            output: out,
            rounding: next_rounding(),
        };
        cases.push(single(
            &format!("requantize {i}"),
            op,
            vec![Operand::Input(x)],
        ));
    }
    // QTable: i8 and u8 inputs, i8 and u8 tables; the table as a constant and as an input.
    for (i, (t, table_t)) in [
        (DType::I8, DType::I8),
        (DType::U8, DType::U8),
        (DType::I8, DType::U8),
    ]
    .into_iter()
    .enumerate()
    {
        let x = random(&mut rng, t, &[2, 3, 50]);
        let table = random(&mut rng, table_t, &[256]);
        let table = if i == 1 {
            Operand::Input(table)
        } else {
            Operand::Const(table)
        };
        cases.push(single(
            &format!("qtable {i}"),
            Op::QTable,
            vec![Operand::Input(x), table],
        ));
    }
    // QAdd and QMul, broadcasting in every pattern.
    let shapes: [(&[usize], &[usize]); 4] = [
        (&[2, 3, 4], &[2, 3, 4]),
        (&[2, 3, 4], &[4]),
        (&[2, 1, 4], &[3, 1]),
        (&[1], &[2, 3, 5]),
    ];
    for (i, (sa, sb)) in shapes.into_iter().enumerate() {
        let (ta, tb) = if i % 2 == 0 {
            (DType::I8, DType::I8)
        } else {
            (DType::U8, DType::I8)
        };
        let a = random(&mut rng, ta, sa);
        let b = random(&mut rng, tb, sb);
        let (a_zp, b_zp) = [(-128, 127), (255, -5), (0, 0), (17, -128)][i];
        let out = [
            qout(DType::I8, -1, -128, 127),
            qout(DType::U8, 200, 0, 255),
            qout(DType::I8, 0, 0, 127),
            qout(DType::U8, 0, 10, 245),
        ][i];
        // TFLite's QAdd: 2^20 headroom, input multipliers below 1/2, an output multiplier that
        // may exceed 1; and a left shift whose products need i64 (k = 24).
        let (ls, sa_real, sb_real, so_real) = [
            (20, 0.5, 0.3, 1.0 / (1 << 20) as f64 * 1.7),
            (20, 0.21, 0.45, 1.0 / (1 << 20) as f64 * 0.4),
            (24, 0.5, 0.5, 1.0 / (1 << 24) as f64 * 3.0),
            (0, 0.25, 0.125, 5.5),
        ][i];
        let add = Op::QAdd {
            a_zero_point: a_zp,
            b_zero_point: b_zp,
            left_shift: ls,
            a_scale: fp(sa_real),
            b_scale: fp(sb_real),
            output_scale: fp(so_real),
            output: out,
            rounding: next_rounding(),
        };
        cases.push(single(
            &format!("qadd {i} {ta}{sa:?} + {tb}{sb:?}"),
            add,
            vec![Operand::Input(a.clone()), Operand::Input(b.clone())],
        ));
        let mul = Op::QMul {
            a_zero_point: a_zp,
            b_zero_point: b_zp,
            scale: fp([0.004, 0.02, 0.0001, 1.3][i]),
            output: out,
            rounding: next_rounding(),
        };
        cases.push(single(
            &format!("qmul {i} {ta}{sa:?} * {tb}{sb:?}"),
            mul,
            vec![Operand::Input(a), Operand::Const(b)],
        ));
    }
    check_all(&cases, &[Schedule::default()]);
}

/// A small network of integer ops only (no float anywhere): QConv with a fused ReLU range,
/// QAveragePool, a depthwise QConv, Requantize, QAdd, QMul, QTable, a Reshape, QMatMul and
/// QSoftmax.
fn integer_network() -> Case {
    let mut rng = Rng(70);
    let mut g = Graph::new("int8_net");
    let x = g.add_input("x", kiln_ir::TensorType::new(DType::I8, vec![1, 3, 8, 8]));
    let konst = |g: &mut Graph, name: &str, t: Tensor| g.add_const(name, t);
    let node = |g: &mut Graph, name: &str, op: Op, ins: Vec<kiln_ir::ValueId>| {
        let n = g.add_node(name, op, ins, vec![name.into()]).unwrap();
        g.node(n).outputs[0]
    };
    let relu = qout(DType::I8, -128, -128, 127);
    let w1 = konst(&mut g, "w1", random(&mut rng, DType::I8, &[8, 3, 3, 3]));
    let b1 = konst(
        &mut g,
        "b1",
        i32s(&[8], (0..8).map(|i| i * 1000 - 4000).collect()),
    );
    let (m1, s1) = requant(&mut rng, 8, -15.0, -12.0);
    let (m1, s1) = (konst(&mut g, "m1", m1), konst(&mut g, "s1", s1));
    let conv = Op::QConv {
        kernel_shape: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group: 1,
        x_zero_point: -3,
        output: Some(relu),
        rounding: next_rounding(),
    };
    let c1 = node(&mut g, "conv1", conv, vec![x, w1, b1, m1, s1]);
    let pool = Op::QAveragePool {
        kernel_shape: vec![2, 2],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![0, 0, 0, 0],
        ceil_mode: false,
        count_include_pad: false,
        x_zero_point: -128,
        output: relu,
        rescale: false,
        rounding: Rounding::TfLite,
    };
    let p1 = node(&mut g, "pool", pool, vec![c1]);
    let w2 = konst(&mut g, "w2", random(&mut rng, DType::I8, &[8, 1, 3, 3]));
    let b2 = konst(&mut g, "b2", i32s(&[8], vec![100; 8]));
    let (m2, s2) = requant(&mut rng, 1, -12.0, -10.0);
    let (m2, s2) = (konst(&mut g, "m2", m2), konst(&mut g, "s2", s2));
    let dw = Op::QConv {
        kernel_shape: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group: 8,
        x_zero_point: -128,
        output: Some(qout(DType::I8, 4, -128, 127)),
        rounding: next_rounding(),
    };
    let d1 = node(&mut g, "dwconv", dw, vec![p1, w2, b2, m2, s2]);
    let rq = Op::Requantize {
        x_zero_point: -128,
        scale: FixedPoint::from_real(0.8),
        output: qout(DType::I8, 2, -128, 127),
        rounding: next_rounding(),
    };
    let r1 = node(&mut g, "requantize", rq, vec![p1]);
    let fp = FixedPoint::from_real;
    let add = Op::QAdd {
        a_zero_point: 4,
        b_zero_point: 2,
        left_shift: 20,
        a_scale: fp(0.5),
        b_scale: fp(0.4),
        output_scale: fp(1.5 / f64::from(1 << 20)),
        output: qout(DType::I8, 0, -128, 127),
        rounding: next_rounding(),
    };
    let a1 = node(&mut g, "add", add, vec![d1, r1]);
    let mul = Op::QMul {
        a_zero_point: 0,
        b_zero_point: 4,
        scale: fp(0.01),
        output: qout(DType::I8, -10, -128, 127),
        rounding: next_rounding(),
    };
    let u1 = node(&mut g, "mul", mul, vec![a1, d1]);
    let table = konst(&mut g, "table", random(&mut rng, DType::I8, &[256]));
    let t1 = node(&mut g, "table", Op::QTable, vec![u1, table]);
    let flat = node(
        &mut g,
        "flatten",
        Op::Reshape {
            shape: vec![1, 128],
        },
        vec![t1],
    );
    let w3 = konst(&mut g, "w3", random(&mut rng, DType::I8, &[128, 10]));
    let b3 = konst(
        &mut g,
        "b3",
        i32s(&[10], (0..10).map(|i| i * 300).collect()),
    );
    let (m3, s3) = requant(&mut rng, 10, -14.0, -12.0);
    let (m3, s3) = (konst(&mut g, "m3", m3), konst(&mut g, "s3", s3));
    let fc = Op::QMatMul {
        output: Some(qout(DType::I8, 1, -128, 127)),
        rounding: next_rounding(),
    };
    let f1 = node(&mut g, "fc", fc, vec![flat, w3, b3, m3, s3]);
    let exp = konst(
        &mut g,
        "exp",
        i32s(
            &[256],
            (0..256)
                .map(|d| ((1u64 << 30) as f64 * (-0.1 * d as f64).exp()).round() as i32)
                .collect(),
        ),
    );
    let softmax = Op::QSoftmax {
        axis: 1,
        inv_scale: 256 << 16,
        output: qout(DType::I8, -128, -128, 127),
    };
    let y = node(&mut g, "softmax", softmax, vec![f1, exp]);
    g.set_outputs(vec![y]);
    let input = random(&mut rng, DType::I8, &[1, 3, 8, 8]);
    Case {
        name: "integer network".into(),
        graph: g,
        inputs: vec![input],
    }
}

#[test]
fn integer_network_matches_and_plans_one_byte_per_int8_element() {
    let case = integer_network();
    check_with(&case, &schedules());
    // Every intermediate is i8 or i32 and the arena holds them at their own size: its naive
    // sum is the sum of the (aligned) byte sizes of the values that live there.
    let program = emit_c(&case.graph, &COptions::default()).unwrap();
    let plan = &program.plan;
    let g = &case.graph;
    let expected_naive: usize = g
        .node_ids()
        .into_iter()
        .flat_map(|n| g.node(n).outputs.clone())
        .filter(|&v| {
            matches!(
                plan.storage.get(&v),
                Some(kiln_passes::Storage::Arena { .. })
            )
        })
        .map(|v| g.value(v).ty.size_bytes().div_ceil(16) * 16)
        .sum();
    assert_eq!(plan.naive_bytes, expected_naive);
    // The largest intermediate, conv1's i8[1, 8, 8, 8], takes 512 bytes.
    assert!(
        plan.arena_bytes < 4 * 512,
        "arena of {} bytes",
        plan.arena_bytes
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-int-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const WARNINGS: &[&str] = &[
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Wpedantic",
    "-Wshadow",
    "-Wcast-qual",
    "-Werror",
];

/// The C of the integer network builds warning-free with gcc, clang and arm-none-eabi-gcc for
/// a Cortex-M3 without an FPU (`-mfloat-abi=soft`), and the object calls no floating-point
/// helper (`__aeabi_f*`, `__aeabi_d*`, conversions such as `__aeabi_i2f`) nor libm.
#[test]
fn integer_c_builds_for_cortex_m3_without_float_helpers() {
    let case = integer_network();
    let dir = temp_dir("m3");
    let program = emit_c(
        &case.graph,
        &COptions {
            name: "net".into(),
            ..COptions::default()
        },
    )
    .unwrap();
    for (name, text) in &program.files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let compile = |cc: &str, flags: &[&str], obj: &str| {
        let out = Command::new(cc)
            .args(WARNINGS)
            .args(flags)
            .arg("-c")
            .arg(dir.join("net.c"))
            .arg("-o")
            .arg(dir.join(obj))
            .output()
            .unwrap_or_else(|e| {
                panic!("{cc} is not installed ({e}); run scripts/setup-toolchains.sh")
            });
        assert!(
            out.status.success(),
            "{cc} {flags:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join(obj)
    };
    compile("gcc", &["-O2"], "gcc.o");
    compile("clang", &["-O2"], "clang.o");
    let m3 = ["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"];
    for opt in ["-O0", "-Os", "-O2"] {
        let flags: Vec<&str> = m3.iter().copied().chain([opt]).collect();
        let obj = compile("arm-none-eabi-gcc", &flags, &format!("m3{opt}.o"));
        let nm = Command::new("arm-none-eabi-nm")
            .arg("-u")
            .arg(&obj)
            .output()
            .expect("arm-none-eabi-nm");
        let undefined = String::from_utf8_lossy(&nm.stdout).to_string();
        for sym in undefined
            .lines()
            .filter_map(|l| l.split_whitespace().last())
        {
            let helper = sym.strip_prefix("__aeabi_").unwrap_or("");
            let float = helper.starts_with('f')
                || helper.starts_with('d')
                || helper.contains("2f")
                || helper.contains("2d")
                || sym.contains("sf")
                || sym.contains("df")
                || sym.ends_with('f');
            assert!(!float, "{opt}: the integer network needs '{sym}'");
        }
        println!(
            "cortex-m3 {opt}: undefined {:?}",
            undefined.lines().collect::<Vec<_>>()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A `main` that runs `net_run` once on inputs embedded as bytes and prints every output
/// byte in hex, for Cranelift objects run under QEMU.
fn object_harness(case: &Case) -> String {
    let mut c = String::from("#include <stdio.h>\n#include \"net.h\"\n");
    c.push_str("static unsigned char arena[NET_ARENA_BYTES] __attribute__((aligned(16)));\n");
    let mut args = vec!["arena".to_string()];
    for (i, t) in case.inputs.iter().enumerate() {
        let bytes: Vec<String> = t
            .data()
            .to_le_bytes()
            .iter()
            .map(|b| b.to_string())
            .collect();
        c.push_str(&format!(
            "static const unsigned char in{i}[] __attribute__((aligned(16))) = {{{}}};\n",
            bytes.join(",")
        ));
        args.push(format!("(const void *)in{i}"));
    }
    for (i, &v) in case.graph.outputs().iter().enumerate() {
        let n = case.graph.value(v).ty.size_bytes();
        c.push_str(&format!(
            "static unsigned char out{i}[{n}] __attribute__((aligned(16)));\n"
        ));
        args.push(format!("(void *)out{i}"));
    }
    c.push_str(&format!(
        "int main(void) {{\n    if (net_run({}) != 0) return 1;\n",
        args.join(", ")
    ));
    for (i, &v) in case.graph.outputs().iter().enumerate() {
        let n = case.graph.value(v).ty.size_bytes();
        c.push_str(&format!(
            "    for (int i = 0; i < {n}; i++) printf(\"%02x\", out{i}[i]);\n    printf(\"\\n\");\n"
        ));
    }
    c.push_str("    return 0;\n}\n");
    c
}

/// The integer network and the requantization edge cases as Cranelift objects for aarch64,
/// riscv64 and x86_64, linked with a harness and run (under qemu-user on the foreign ones):
/// every output byte equals the interpreter's.
#[test]
fn integer_objects_match_the_interpreter_on_every_cranelift_target() {
    use kiln_backends::cranelift::{emit_object, CraneliftTarget};
    let targets = [
        (
            CraneliftTarget::Aarch64,
            "aarch64-linux-gnu-gcc",
            Some("qemu-aarch64"),
        ),
        (
            CraneliftTarget::Riscv64,
            "riscv64-linux-gnu-gcc",
            Some("qemu-riscv64"),
        ),
        (CraneliftTarget::X86_64, "x86_64-linux-gnu-gcc", None),
    ];
    for case in [
        integer_network(),
        requantization_case(Rounding::TfLite),
        requantization_case(Rounding::HalfEven),
    ] {
        let want = kiln_ir::interp::run(&case.graph, &case.inputs).unwrap();
        let want_hex: Vec<String> = want
            .iter()
            .map(|t| {
                t.data()
                    .to_le_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .collect();
        for (target, cc, runner) in targets {
            let dir = temp_dir(&format!("obj-{target:?}"));
            let options = CraneliftOptions {
                name: "net".into(),
                target,
                ..CraneliftOptions::default()
            };
            let object = emit_object(&case.graph, &options)
                .unwrap_or_else(|e| panic!("{} ({target:?}): {e}", case.name));
            for (name, bytes) in &object.files {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
            std::fs::write(dir.join("main.c"), object_harness(&case)).unwrap();
            let exe = dir.join("run");
            let out = Command::new(cc)
                .args(["-std=c99", "-O1", "-static", "-o"])
                .arg(&exe)
                .arg(dir.join("main.c"))
                .arg(dir.join("net.o"))
                .output()
                .unwrap_or_else(|e| {
                    panic!("{cc} is not installed ({e}); run scripts/setup-toolchains.sh")
                });
            assert!(
                out.status.success(),
                "{cc}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let run = match runner {
                Some(qemu) => Command::new(qemu).arg(&exe).output(),
                None => Command::new(&exe).output(),
            }
            .unwrap_or_else(|e| panic!("running the {target:?} object: {e}"));
            assert!(run.status.success(), "{} ({target:?}) failed", case.name);
            let got: Vec<String> = String::from_utf8_lossy(&run.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            assert_eq!(got, want_hex, "{} ({target:?})", case.name);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
