//! Conv against the reference interpreter on geometries the ONNX node tests do not cover
//! (groups, mixed strides and dilations, asymmetric and wide pads, 1-D and 3-D, every schedule),
//! every fused activation on Conv and ConvTranspose, and the harness the other lowerings' tests
//! share: [`check`] runs one op through the C backend and the interpreter, [`check_schedules`]
//! under every channel tiling and loop order of [`schedules`].

use kiln_ir::{Graph, Op, Tensor};

use crate::c::COptions;
use crate::host::{run_c, HostOptions};
use crate::kernel::{LoopOrder, Schedule};

/// Deterministic pseudo-random values in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// Runs `op` on `inputs` through the C backend and the interpreter and compares.
pub(in crate::lower) fn check(op: Op, inputs: Vec<Tensor>) {
    check_with(op, inputs, &Schedule::default());
}

/// The schedules the tiled and reordered lowerings are tested under.
pub(in crate::lower) fn schedules() -> Vec<Schedule> {
    let tiled = |oc_tile, loop_order, unroll_limit| Schedule {
        unroll_limit,
        oc_tile,
        loop_order,
        windowed_oc_tile: 0,
    };
    vec![
        Schedule::default(),
        Schedule {
            windowed_oc_tile: 8,
            ..tiled(4, LoopOrder::ChannelsOuter, 3)
        },
        tiled(4, LoopOrder::ChannelsOuter, 0),
        tiled(3, LoopOrder::PixelsOuter, 3),
        tiled(1, LoopOrder::PixelsOuter, 0),
        tiled(2, LoopOrder::ChannelsOuter, 9),
    ]
}

/// [`check`] under every schedule of [`schedules`].
pub(in crate::lower) fn check_schedules(op: Op, inputs: Vec<Tensor>) {
    for s in schedules() {
        check_with(op.clone(), inputs.clone(), &s);
    }
}

/// [`check`] with the kernels built under `schedule`.
pub(in crate::lower) fn check_with(op: Op, inputs: Vec<Tensor>, schedule: &Schedule) {
    let mut g = Graph::new("t");
    let ids = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| g.add_input(format!("in{i}"), t.ty()))
        .collect();
    let node = g.add_node("n", op.clone(), ids, Vec::new()).unwrap();
    g.set_outputs(g.node(node).outputs.clone());
    let want = kiln_ir::interp::run(&g, &inputs).unwrap();
    let c = COptions {
        schedule: *schedule,
        ..COptions::default()
    };
    let got = run_c(&g, &inputs, &c, &HostOptions::default()).unwrap();
    for (w, o) in want.iter().zip(&got) {
        assert_eq!(w.shape(), o.shape(), "{op:?}");
        for i in 0..w.numel() {
            let (a, b) = (o.data().get_f64(i), w.data().get_f64(i));
            let same = (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 + 1e-4 * b.abs();
            assert!(same, "{op:?} {schedule:?}: [{i}] {a} vs {b}");
        }
    }
}

pub(in crate::lower) fn f(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_f32(shape.to_vec(), data(shape.iter().product(), seed)).unwrap()
}

fn conv(k: &[usize], s: &[usize], d: &[usize], p: &[usize], group: usize) -> Op {
    Op::Conv {
        kernel_shape: k.to_vec(),
        strides: s.to_vec(),
        dilations: d.to_vec(),
        pads: p.to_vec(),
        group,
        activation: Default::default(),
    }
}

/// Every fused activation, as the epilogue of a Conv and a ConvTranspose (and under a
/// channel-tiled schedule), against the interpreter.
#[test]
fn fused_activations() {
    use kiln_ir::Activation;
    let acts = [
        Activation::Relu,
        Activation::Clip {
            min: Some(0.0),
            max: Some(0.5),
        },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::HardSwish,
        Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Activation::Sigmoid,
        Activation::Tanh,
    ];
    for (i, act) in acts.into_iter().enumerate() {
        let seed = 100 + 3 * i as u64;
        let op = conv(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1)
            .with_activation(act)
            .unwrap();
        check_schedules(
            op,
            vec![
                f(&[1, 2, 5, 4], seed),
                f(&[4, 2, 3, 3], seed + 1),
                f(&[4], seed + 2),
            ],
        );
        let op = Op::ConvTranspose {
            kernel_shape: vec![2, 2],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            pads: vec![0, 0, 0, 0],
            output_padding: vec![0, 0],
            group: 1,
            activation: act,
        };
        check(op, vec![f(&[1, 2, 3, 3], seed), f(&[2, 3, 2, 2], seed + 1)]);
    }
}

#[test]
fn conv_geometries() {
    let op = conv(&[3, 2], &[2, 1], &[1, 2], &[1, 0, 2, 3], 2);
    check(
        op,
        vec![f(&[1, 4, 7, 6], 1), f(&[6, 2, 3, 2], 2), f(&[6], 3)],
    );
    // Depthwise, batch 2, pads wider than the unrolled borders.
    let op = conv(&[3, 3], &[1, 1], &[1, 1], &[6, 1, 5, 6], 3);
    check(op, vec![f(&[2, 3, 5, 12], 4), f(&[3, 1, 3, 3], 5)]);
    let op = conv(&[2, 3, 2], &[1, 2, 1], &[2, 1, 1], &[1, 0, 1, 0, 1, 1], 1);
    check(op, vec![f(&[1, 2, 4, 5, 6], 6), f(&[3, 2, 2, 3, 2], 7)]);
    let op = conv(&[3], &[2], &[3], &[4, 1], 1);
    check(op, vec![f(&[1, 2, 9], 8), f(&[2, 2, 3], 9), f(&[2], 10)]);
    // A dilated kernel wider than the input: some windows miss it in a dimension.
    let op = conv(&[2, 2], &[1, 1], &[5, 1], &[3, 0, 3, 0], 1);
    check(op, vec![f(&[1, 1, 2, 3], 11), f(&[1, 1, 2, 2], 12)]);
}

#[test]
fn conv_schedules() {
    // Groups of 5 output channels (tiles of 4, 3 and 2 leave remainders), stride, dilation
    // and asymmetric pads.
    let op = conv(&[3, 2], &[2, 1], &[1, 2], &[1, 0, 2, 3], 2);
    check_schedules(
        op,
        vec![f(&[1, 4, 7, 6], 21), f(&[10, 2, 3, 2], 22), f(&[10], 23)],
    );
    // One group of 7 channels, batch 2, no bias, pads wider than the unrolled borders.
    let op = conv(&[3, 3], &[1, 1], &[1, 1], &[6, 1, 5, 6], 1);
    check_schedules(op, vec![f(&[2, 3, 5, 12], 24), f(&[7, 3, 3, 3], 25)]);
    // Depthwise (untiled) and a group narrower than the tile (untiled).
    let op = conv(&[3, 3], &[2, 2], &[1, 1], &[1, 1, 1, 1], 4);
    check_schedules(
        op.clone(),
        vec![f(&[1, 4, 6, 6], 26), f(&[4, 1, 3, 3], 27), f(&[4], 28)],
    );
    check_schedules(
        op,
        vec![f(&[1, 8, 6, 6], 29), f(&[8, 2, 3, 3], 30), f(&[8], 31)],
    );
    // 1x1 (one tap), 1-D and 3-D.
    let op = conv(&[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0], 1);
    check_schedules(
        op,
        vec![f(&[1, 3, 4, 5], 32), f(&[9, 3, 1, 1], 33), f(&[9], 34)],
    );
    let op = conv(&[3], &[2], &[3], &[4, 1], 1);
    check_schedules(op, vec![f(&[1, 2, 9], 35), f(&[6, 2, 3], 36), f(&[6], 37)]);
    let op = conv(&[2, 3, 2], &[1, 2, 1], &[2, 1, 1], &[1, 0, 1, 0, 1, 1], 1);
    check_schedules(op, vec![f(&[1, 2, 4, 5, 6], 38), f(&[5, 2, 2, 3, 2], 39)]);
    // A dilated kernel wider than the input: some windows miss it entirely.
    let op = conv(&[2, 2], &[1, 1], &[5, 1], &[3, 0, 3, 0], 1);
    check_schedules(op, vec![f(&[1, 1, 2, 3], 40), f(&[5, 1, 2, 2], 41)]);
}
