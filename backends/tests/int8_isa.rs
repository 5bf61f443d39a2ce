//! The target-specific int8 kernels (`COptions::isa`: scalar, Arm DSP, Helium) against the
//! interpreter, bit for bit, on the host: the DSP and Helium operations run through the
//! runtime header's portable forms, so the very loops, packings and output stages the boards
//! run are checked here, with strict warnings and UBSan. Layers cover what the generators
//! special-case: pointwise (even, odd and quad channel counts), tap-major and channel-major
//! windows, strides, padding on every side, dilation, u8 inputs and outputs, odd pixel and
//! channel counts, batches, matrix products with one and several rows, both roundings, and
//! per-channel and per-tensor requantization with uniform and varying shifts, random one-row
//! products (the lane kernel of the scalar ISA, the unrolled DSP loop); additions of
//! equal shapes (the table kernels), with tails that are not a multiple of four.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

mod common;

use common::{assert_same, host_options, i32s, qout, random, Rng};
use kiln_backends::c::{COptions, Isa};
use kiln_backends::host::run_c;
use kiln_ir::fixed_point::{FixedPoint, Rounding};
use kiln_ir::{DType, Graph, Op, QOut, Tensor, TensorData};

/// How the requantization of a case is chosen.
#[derive(Clone, Copy, Debug)]
enum Scales {
    /// One multiplier and shift for the tensor.
    Tensor,
    /// One per channel, one shift shared (as kiln's QDQ lowering makes them).
    ChannelSharedShift,
    /// One per channel, shifts varying.
    Channel,
}

/// Multiplier and shift tensors for `n` channels whose outputs land mostly in range for sums
/// of `terms` products.
fn requant(rng: &mut Rng, n: usize, terms: usize, scales: Scales) -> (Tensor, Tensor) {
    // Sums are about 2^13 * sqrt(terms); aim the output at +-2^6.
    let centre = -(13.0 + (terms as f64).log2() / 2.0) + 6.0;
    let count = if matches!(scales, Scales::Tensor) {
        1
    } else {
        n
    };
    let shared = FixedPoint::from_real((centre + rng.unit()).exp2()).shift;
    let fps: Vec<FixedPoint> = (0..count)
        .map(|_| {
            let fp = FixedPoint::from_real((centre - 1.5 + 3.0 * rng.unit()).exp2());
            match scales {
                Scales::ChannelSharedShift => {
                    // The same real scale up to a factor within [0.5, 2): rescale the mantissa.
                    let m = (f64::from(fp.multiplier) * 2f64.powi(fp.shift - shared))
                        .clamp(f64::from(1 << 29), f64::from(i32::MAX));
                    FixedPoint {
                        multiplier: m as i32,
                        shift: shared,
                    }
                }
                _ => fp,
            }
        })
        .collect();
    (
        i32s(&[count], fps.iter().map(|f| f.multiplier).collect()),
        i32s(&[count], fps.iter().map(|f| f.shift).collect()),
    )
}

struct Case {
    name: String,
    graph: Graph,
    inputs: Vec<Tensor>,
}

/// A graph of one node: input 0 is a graph input, the others constants.
fn single(name: String, op: Op, x: Tensor, consts: Vec<Tensor>) -> Case {
    let mut g = Graph::new("t");
    let mut ids = vec![g.add_input("x", x.ty())];
    for (i, t) in consts.into_iter().enumerate() {
        ids.push(g.add_const(format!("c{i}"), t));
    }
    let node = g.add_node("n", op, ids, Vec::new()).unwrap();
    g.set_outputs(g.node(node).outputs.clone());
    Case {
        name,
        graph: g,
        inputs: vec![x],
    }
}

/// A depthwise convolution: `x_shape[1]` groups of one channel.
fn depthwise_case(
    seed: u64,
    (x_shape, x_type, x_zero_point): (&[usize], DType, i32),
    (stride, pads): (usize, &[usize]),
    scales: Scales,
    out: QOut,
    rounding: Rounding,
) -> Case {
    let mut rng = Rng(seed);
    let c = x_shape[1];
    let x = random(&mut rng, x_type, x_shape);
    let w = random(&mut rng, DType::I8, &[c, 1, 3, 3]);
    let bias = i32s(
        &[c],
        (0..c).map(|_| rng.int(-1 << 12, 1 << 12) as i32).collect(),
    );
    let (mult, shift) = requant(&mut rng, c, 9, scales);
    let op = Op::QConv {
        kernel_shape: vec![3, 3],
        strides: vec![stride, stride],
        dilations: vec![1, 1],
        pads: pads.to_vec(),
        group: c,
        x_zero_point,
        output: Some(out),
        rounding,
    };
    let name = format!(
        "depthwise {x_type}{x_shape:?} zp {x_zero_point} s{stride} p{pads:?} {scales:?} {rounding:?}"
    );
    single(name, op, x, vec![w, bias, mult, shift])
}

#[allow(clippy::too_many_arguments)] // one parameter per attribute
fn conv_case(
    seed: u64,
    (x_shape, x_type, x_zero_point): (&[usize], DType, i32),
    m: usize,
    (kernel, strides, dilations, pads): (&[usize], &[usize], &[usize], &[usize]),
    scales: Scales,
    out: QOut,
    rounding: Rounding,
) -> Case {
    let mut rng = Rng(seed);
    let mut w_shape = vec![m, x_shape[1]];
    w_shape.extend_from_slice(kernel);
    let x = random(&mut rng, x_type, x_shape);
    let w = random(&mut rng, DType::I8, &w_shape);
    let terms: usize = w_shape[1..].iter().product();
    let bias = i32s(
        &[m],
        (0..m).map(|_| rng.int(-1 << 14, 1 << 14) as i32).collect(),
    );
    let (mult, shift) = requant(&mut rng, m, terms, scales);
    let op = Op::QConv {
        kernel_shape: kernel.to_vec(),
        strides: strides.to_vec(),
        dilations: dilations.to_vec(),
        pads: pads.to_vec(),
        group: 1,
        x_zero_point,
        output: Some(out),
        rounding,
    };
    let name = format!(
        "qconv {x_type}{x_shape:?} zp {x_zero_point} m{m} k{kernel:?} s{strides:?} d{dilations:?} p{pads:?} {scales:?} {rounding:?}"
    );
    single(name, op, x, vec![w, bias, mult, shift])
}

fn matmul_case(
    seed: u64,
    (a_shape, a_type): (&[usize], DType),
    n: usize,
    scales: Scales,
    out: QOut,
    rounding: Rounding,
) -> Case {
    let k = a_shape[a_shape.len() - 1];
    let b = random(&mut Rng(seed ^ 0x5eed), DType::I8, &[k, n]);
    matmul_case_with(seed, (a_shape, a_type), b, scales, out, rounding)
}

/// Weights `[k, n]` in `[-max, max]`.
fn small_weights(seed: u64, k: usize, n: usize, max: i64) -> Tensor {
    let mut rng = Rng(seed);
    let w = (0..k * n).map(|_| rng.int(-max, max) as i8).collect();
    Tensor::new(vec![k, n], TensorData::I8(w)).unwrap()
}

/// A constant-matrix product by the weights `b` (`[k, n]`).
fn matmul_case_with(
    seed: u64,
    (a_shape, a_type): (&[usize], DType),
    b: Tensor,
    scales: Scales,
    out: QOut,
    rounding: Rounding,
) -> Case {
    let mut rng = Rng(seed);
    let (k, n) = (b.shape()[0], b.shape()[1]);
    let a = random(&mut rng, a_type, a_shape);
    let bias = i32s(
        &[n],
        (0..n).map(|_| rng.int(-1 << 14, 1 << 14) as i32).collect(),
    );
    let (mult, shift) = requant(&mut rng, n, k, scales);
    let op = Op::QMatMul {
        output: Some(out),
        rounding,
    };
    let name = format!("qmatmul {a_type}{a_shape:?} x [{k}, {n}] {scales:?} {rounding:?}");
    single(name, op, a, vec![b, bias, mult, shift])
}

/// Every case through every non-portable ISA, in parallel.
fn check_all(cases: &[Case]) {
    let isas = [Isa::Scalar, Isa::ArmDsp, Isa::ArmMve];
    let jobs: Vec<(&Case, Isa)> = cases
        .iter()
        .flat_map(|c| isas.iter().map(move |&i| (c, i)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.min(jobs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(case, isa)) = jobs.get(i) else {
                    break;
                };
                let want = kiln_ir::interp::run(&case.graph, &case.inputs).unwrap();
                let c = COptions {
                    isa: Some(isa),
                    ..COptions::default()
                };
                let what = format!("{} ({})", case.name, isa.name());
                let got = run_c(&case.graph, &case.inputs, &c, &host_options())
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_same(&what, &got, &want);
            });
        }
    });
}

#[test]
fn convolutions_match_the_interpreter() {
    let i8_full = qout(DType::I8, -128, -128, 127);
    let relu6 = qout(DType::I8, -10, -10, 80);
    let u8_out = qout(DType::U8, 3, 0, 255);
    let (he, tfl) = (Rounding::HalfEven, Rounding::TfLite);
    let cases = vec![
        // Pointwise: channels a multiple of 4, 2 mod 4, odd; odd and even planes.
        conv_case(
            1,
            (&[1, 8, 5, 5], DType::I8, -128),
            6,
            (&[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0]),
            Scales::ChannelSharedShift,
            i8_full,
            he,
        ),
        conv_case(
            2,
            (&[1, 6, 3, 4], DType::I8, 5),
            7,
            (&[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0]),
            Scales::Channel,
            relu6,
            tfl,
        ),
        conv_case(
            3,
            (&[1, 5, 3, 3], DType::U8, 130),
            5,
            (&[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0]),
            Scales::Tensor,
            u8_out,
            he,
        ),
        // Tap-major 3x3 (channels a multiple of 4): padding, stride 2, odd widths.
        conv_case(
            4,
            (&[1, 8, 7, 5], DType::I8, -128),
            6,
            (&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1]),
            Scales::ChannelSharedShift,
            i8_full,
            he,
        ),
        conv_case(
            5,
            (&[1, 4, 8, 9], DType::I8, 7),
            5,
            (&[3, 3], &[2, 2], &[1, 1], &[1, 1, 1, 1]),
            Scales::Channel,
            relu6,
            tfl,
        ),
        conv_case(
            6,
            (&[1, 4, 8, 8], DType::U8, 200),
            4,
            (&[1, 1], &[2, 2], &[1, 1], &[0, 0, 0, 0]),
            Scales::Tensor,
            u8_out,
            he,
        ),
        conv_case(
            7,
            (&[2, 4, 6, 7], DType::I8, -3),
            3,
            (&[3, 2], &[1, 2], &[2, 1], &[2, 0, 1, 3]),
            Scales::Channel,
            i8_full,
            he,
        ),
        // Channel-major (odd channel counts): first layers, a tall window, wide padding.
        conv_case(
            8,
            (&[1, 3, 9, 8], DType::I8, -128),
            8,
            (&[3, 3], &[2, 2], &[1, 1], &[0, 0, 1, 1]),
            Scales::ChannelSharedShift,
            i8_full,
            he,
        ),
        conv_case(
            9,
            (&[1, 1, 13, 6], DType::I8, 83),
            6,
            (&[5, 4], &[2, 2], &[1, 1], &[2, 1, 2, 1]),
            Scales::ChannelSharedShift,
            i8_full,
            tfl,
        ),
        conv_case(
            10,
            (&[1, 3, 6, 6], DType::U8, 0),
            5,
            (&[3, 3], &[1, 1], &[1, 1], &[3, 3, 3, 3]),
            Scales::Channel,
            u8_out,
            he,
        ),
        conv_case(
            11,
            (&[1, 2, 5, 7], DType::I8, 1),
            3,
            (&[2, 3], &[1, 1], &[2, 2], &[1, 2, 1, 2]),
            Scales::Tensor,
            relu6,
            he,
        ),
        // A big reduction (tap-major, unrolling off) and 1-D.
        conv_case(
            12,
            (&[1, 16, 4, 4], DType::I8, -128),
            4,
            (&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1]),
            Scales::ChannelSharedShift,
            i8_full,
            he,
        ),
        conv_case(
            13,
            (&[1, 3, 11], DType::I8, 9),
            4,
            (&[3], &[2], &[1], &[1, 1]),
            Scales::Channel,
            i8_full,
            tfl,
        ),
        conv_case(
            14,
            (&[1, 7, 10, 3], DType::I8, -1),
            9,
            (&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1]),
            Scales::Channel,
            relu6,
            he,
        ),
    ];
    check_all(&cases);
}

#[test]
fn depthwise_convolutions_match_the_interpreter() {
    let i8_full = qout(DType::I8, -128, -128, 127);
    let relu6 = qout(DType::I8, -10, -10, 80);
    let u8_out = qout(DType::U8, 3, 0, 255);
    let (he, tfl) = (Rounding::HalfEven, Rounding::TfLite);
    let cases = vec![
        // Stride 1, same padding, odd and even widths.
        depthwise_case(
            31,
            (&[1, 4, 7, 5], DType::I8, -128),
            (1, &[1, 1, 1, 1]),
            Scales::ChannelSharedShift,
            i8_full,
            he,
        ),
        depthwise_case(
            32,
            (&[1, 3, 6, 8], DType::I8, 9),
            (1, &[1, 1, 1, 1]),
            Scales::Channel,
            relu6,
            tfl,
        ),
        // Stride 2: TF's same padding (bottom and right only), and all around; odd sizes.
        depthwise_case(
            33,
            (&[1, 5, 8, 8], DType::I8, -128),
            (2, &[0, 0, 1, 1]),
            Scales::ChannelSharedShift,
            i8_full,
            he,
        ),
        depthwise_case(
            34,
            (&[1, 2, 9, 7], DType::U8, 120),
            (2, &[1, 1, 1, 1]),
            Scales::Tensor,
            u8_out,
            he,
        ),
        // No padding, tiny planes, a batch of two.
        depthwise_case(
            35,
            (&[2, 3, 4, 3], DType::I8, 0),
            (1, &[0, 0, 0, 0]),
            Scales::Channel,
            i8_full,
            tfl,
        ),
        depthwise_case(
            36,
            (&[1, 6, 3, 3], DType::U8, 255),
            (1, &[1, 0, 0, 1]),
            Scales::Channel,
            u8_out,
            he,
        ),
    ];
    check_all(&cases);
}

#[test]
fn matrix_products_match_the_interpreter() {
    let i8_full = qout(DType::I8, -128, -128, 127);
    let u8_out = qout(DType::U8, 100, 0, 255);
    let cases = vec![
        matmul_case(
            21,
            (&[1, 64], DType::I8),
            12,
            Scales::ChannelSharedShift,
            i8_full,
            Rounding::HalfEven,
        ),
        matmul_case(
            22,
            (&[3, 27], DType::I8),
            5,
            Scales::Channel,
            i8_full,
            Rounding::TfLite,
        ),
        matmul_case(
            23,
            (&[2, 4, 10], DType::U8),
            7,
            Scales::Tensor,
            u8_out,
            Rounding::HalfEven,
        ),
        matmul_case(
            24,
            (&[5, 1], DType::I8),
            1,
            Scales::Tensor,
            i8_full,
            Rounding::TfLite,
        ),
        // One row, a reduction that is not a multiple of four (the tails of the batch-1
        // kernels), and a column count that is not a multiple of the blocks.
        matmul_case(
            25,
            (&[1, 30], DType::I8),
            11,
            Scales::Channel,
            i8_full,
            Rounding::HalfEven,
        ),
        matmul_case(
            26,
            (&[1, 13], DType::U8),
            6,
            Scales::ChannelSharedShift,
            u8_out,
            Rounding::TfLite,
        ),
        // One row whose weights are too many to store pre-extended (int8 words split in the
        // loop), with an odd column count and a reduction tail.
        matmul_case(
            27,
            (&[1, 703], DType::I8),
            10,
            Scales::Channel,
            i8_full,
            Rounding::HalfEven,
        ),
    ];
    check_all(&cases);
}

/// The group length the scalar ISA's lane kernel proves for `case` (its packed weights'
/// note says "groups of G"), or `None` when the layer does not use that kernel.
fn lane_group(case: &Case) -> Option<usize> {
    let c = COptions {
        isa: Some(Isa::Scalar),
        ..COptions::default()
    };
    let program = kiln_backends::c::emit_c(&case.graph, &c).unwrap();
    let source: String = program
        .files
        .iter()
        .map(|(_, text)| text.as_str())
        .collect();
    let at = source.find("in 16-bit lanes")?;
    let rest = &source[at..];
    let digits: String = rest[rest.find("groups of ")? + 10..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The scalar ISA's batch-1 kernel with two columns per multiply (16-bit lanes): the group
/// length it proves from the weights (2 for any int8 weights but -128, longer for small
/// ones), odd column counts (an empty high lane), reduction tails, u8 inputs, and a layer
/// whose lane sums reach -32768, the end of the proven range, on inputs of all -128.
#[test]
fn lane_products_match_the_interpreter() {
    let i8_full = qout(DType::I8, -128, -128, 127);
    let u8_out = qout(DType::U8, 100, 0, 255);
    let (he, tfl) = (Rounding::HalfEven, Rounding::TfLite);
    let full = small_weights(31, 96, 11, 127);
    let small = small_weights(32, 100, 19, 12);
    let small_u8 = small_weights(33, 45, 9, 20);
    // Columns of (127, 127, 2) repeated: groups of 3 sum to 256, so inputs of -128 put
    // -32768 in both lanes; any 4 consecutive weights sum to more.
    let (k, n) = (36, 5);
    let edge: Vec<i8> = (0..k * n).map(|i| [127, 127, 2][i / n % 3]).collect();
    let edge = Tensor::new(vec![k, n], TensorData::I8(edge)).unwrap();
    let mut edge_case =
        matmul_case_with(37, (&[2, k], DType::I8), edge, Scales::Tensor, i8_full, tfl);
    let extremes: Vec<i8> = (0..2 * k).map(|i| if i < k { -128 } else { 127 }).collect();
    edge_case.inputs = vec![Tensor::new(vec![2, k], TensorData::I8(extremes)).unwrap()];
    let cases = [
        (
            matmul_case_with(
                34,
                (&[1, 96], DType::I8),
                full,
                Scales::Channel,
                i8_full,
                he,
            ),
            2,
        ),
        (
            matmul_case_with(
                35,
                (&[1, 100], DType::I8),
                small,
                Scales::ChannelSharedShift,
                i8_full,
                tfl,
            ),
            6,
        ),
        (
            matmul_case_with(
                36,
                (&[2, 45], DType::U8),
                small_u8,
                Scales::Tensor,
                u8_out,
                he,
            ),
            6,
        ),
        (edge_case, 3),
    ];
    for (case, group) in &cases {
        assert_eq!(lane_group(case), Some(*group), "{}", case.name);
    }
    // Two weights of -128 in a group reach +32768 on inputs of -128: no lanes (the batch-1
    // kernel with one product per multiply runs it).
    let worst: Vec<i8> = (0..24 * 6)
        .map(|i| if i < 2 * 6 { -128 } else { (i % 255) as i8 })
        .collect();
    let worst = Tensor::new(vec![24, 6], TensorData::I8(worst)).unwrap();
    let refused = matmul_case_with(
        38,
        (&[1, 24], DType::I8),
        worst,
        Scales::Tensor,
        i8_full,
        he,
    );
    assert_eq!(lane_group(&refused), None);
    let mut cases: Vec<Case> = cases.into_iter().map(|(c, _)| c).collect();
    cases.push(refused);
    check_all(&cases);
}

/// Random one-row products (random reduction lengths, column counts, input types, weight
/// magnitudes and requantizations) through every ISA: the lane kernel's group lengths and
/// tails, and the unrolled DSP loop's remainders, on shapes no example picked.
#[test]
fn random_batch_one_products_match_the_interpreter() {
    let mut rng = Rng(2026);
    let mut cases = Vec::new();
    let mut lanes = 0;
    for i in 0..24 {
        let k = rng.int(1, 300) as usize;
        let n = rng.int(2, 21) as usize;
        let rows = rng.int(1, 3) as usize;
        let x_type = if rng.int(0, 3) == 0 {
            DType::U8
        } else {
            DType::I8
        };
        let max = [3, 12, 40, 127][rng.int(0, 3) as usize];
        let scales =
            [Scales::Tensor, Scales::ChannelSharedShift, Scales::Channel][rng.int(0, 2) as usize];
        let out = if rng.int(0, 1) == 0 {
            qout(DType::I8, -128, -128, 127)
        } else {
            qout(DType::U8, 100, 0, 255)
        };
        let rounding = if rng.int(0, 1) == 0 {
            Rounding::HalfEven
        } else {
            Rounding::TfLite
        };
        let b = small_weights(100 + i, k, n, max);
        let case = matmul_case_with(200 + i, (&[rows, k], x_type), b, scales, out, rounding);
        lanes += usize::from(lane_group(&case).is_some());
        cases.push(case);
    }
    // Most draws qualify for the lane kernel; the rest run the one-product kernel.
    assert!(lanes >= 12, "{lanes} of 24 cases use the lane kernel");
    check_all(&cases);
}

/// A QAdd of two graph inputs of one shape.
fn add_case(
    seed: u64,
    shape: &[usize],
    (a_type, b_type): (DType, DType),
    output: QOut,
    rounding: Rounding,
) -> Case {
    let mut rng = Rng(seed);
    let a = random(&mut rng, a_type, shape);
    let b = random(&mut rng, b_type, shape);
    let zp = |rng: &mut Rng, t: DType| {
        if t == DType::U8 {
            rng.int(0, 255) as i32
        } else {
            rng.int(-128, 127) as i32
        }
    };
    let op = Op::QAdd {
        a_zero_point: zp(&mut rng, a_type),
        b_zero_point: zp(&mut rng, b_type),
        left_shift: 20,
        a_scale: FixedPoint::from_real(0.3 + rng.unit()),
        b_scale: FixedPoint::from_real(0.2 + rng.unit() * 0.5),
        output_scale: FixedPoint::from_real((1.0 + rng.unit()) / f64::from(1 << 20)),
        output,
        rounding,
    };
    let mut g = Graph::new("t");
    let ids = vec![g.add_input("a", a.ty()), g.add_input("b", b.ty())];
    let node = g.add_node("n", op, ids, Vec::new()).unwrap();
    g.set_outputs(g.node(node).outputs.clone());
    Case {
        name: format!("qadd {shape:?} {a_type}+{b_type} {rounding:?}"),
        graph: g,
        inputs: vec![a, b],
    }
}

#[test]
fn additions_match_the_interpreter() {
    let cases = vec![
        add_case(
            31,
            &[1, 4, 5, 5],
            (DType::I8, DType::I8),
            qout(DType::I8, -128, -128, 127),
            Rounding::HalfEven,
        ),
        add_case(
            32,
            &[2, 3, 7],
            (DType::U8, DType::I8),
            qout(DType::U8, 7, 0, 255),
            Rounding::TfLite,
        ),
        add_case(
            33,
            &[1, 16, 4, 4],
            (DType::I8, DType::I8),
            qout(DType::I8, -5, -5, 100),
            Rounding::TfLite,
        ),
    ];
    check_all(&cases);
}
