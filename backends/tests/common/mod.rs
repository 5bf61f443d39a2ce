//! Helpers the integer-kernel tests share: seeded data, quantization parameters, the strict
//! host build options and the bit-for-bit comparison; one-node test graphs and the check of a
//! case against the interpreter through the C backend (under given schedules) and every JIT
//! configuration; and the graph of the requantization edge cases.
#![allow(dead_code)] // each test binary uses a different subset

use kiln_backends::c::COptions;
use kiln_backends::cranelift::{CraneliftOptions, JitProgram};
use kiln_backends::host::{run_c, HostOptions};
use kiln_backends::kernel::{LoopOrder, Schedule};
use kiln_ir::fixed_point::{FixedPoint, Rounding};
use kiln_ir::{DType, Graph, Op, QOut, Tensor, TensorData};

/// A deterministic generator (PCG-style LCG).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// A value in `lo..=hi`.
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    pub fn unit(&mut self) -> f64 {
        self.next() as f64 / (1u64 << 31) as f64
    }
}

/// A tensor of `dtype` (i8, u8 or i16) with values drawn from its whole range.
pub fn random(rng: &mut Rng, dtype: DType, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data = match dtype {
        DType::I8 => TensorData::I8((0..n).map(|_| rng.int(-128, 127) as i8).collect()),
        DType::U8 => TensorData::U8((0..n).map(|_| rng.int(0, 255) as u8).collect()),
        DType::I16 => TensorData::I16((0..n).map(|_| rng.int(-32768, 32767) as i16).collect()),
        other => panic!("random {other}"),
    };
    Tensor::new(shape.to_vec(), data).unwrap()
}

pub fn i32s(shape: &[usize], v: Vec<i32>) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::I32(v)).unwrap()
}

/// The output of a quantized op: `dtype` with `zero_point`, clamped to `[min, max]`.
pub fn qout(dtype: DType, zero_point: i32, min: i32, max: i32) -> QOut {
    QOut {
        dtype,
        zero_point,
        min,
        max,
    }
}

/// Strict warnings, and UBSan with the default compiler (gcc here ships its runtime; others
/// may not); `KILN_KEEP_DIR` keeps the build.
pub fn host_options() -> HostOptions {
    let mut flags: Vec<String> = [
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Wshadow",
        "-Wcast-qual",
        "-Werror",
    ]
    .map(String::from)
    .to_vec();
    if std::env::var_os("CC").is_none() {
        flags.extend(["-fsanitize=undefined", "-fno-sanitize-recover=all"].map(String::from));
    }
    HostOptions {
        cflags: flags,
        keep_dir: std::env::var_os("KILN_KEEP_DIR").map(Into::into),
    }
}

/// Every output identical in type and value.
pub fn assert_same(what: &str, got: &[Tensor], want: &[Tensor]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.ty(), w.ty(), "{what}");
        let (gv, wv) = (g.to_i64_vec().unwrap(), w.to_i64_vec().unwrap());
        if let Some(i) = gv.iter().zip(&wv).position(|(a, b)| a != b) {
            let n = gv.iter().zip(&wv).filter(|(a, b)| a != b).count();
            panic!(
                "{what}: {n} of {} elements differ; first at {i}: got {}, want {}",
                gv.len(),
                gv[i],
                wv[i]
            );
        }
    }
}

/// The two rounding conventions in turn, so every kind of case meets both.
pub fn next_rounding() -> Rounding {
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
pub fn requant(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> (Tensor, Tensor) {
    let fps: Vec<FixedPoint> = (0..n)
        .map(|_| FixedPoint::from_real((lo + (hi - lo) * rng.unit()).exp2()))
        .collect();
    (
        i32s(&[n], fps.iter().map(|f| f.multiplier).collect()),
        i32s(&[n], fps.iter().map(|f| f.shift).collect()),
    )
}

/// One operand of a test graph: a graph input or a constant (weights).
pub enum Operand {
    Input(Tensor),
    Const(Tensor),
}

/// A test graph with its inputs; `name` heads every failure message.
pub struct Case {
    pub name: String,
    pub graph: Graph,
    pub inputs: Vec<Tensor>,
}

/// A graph of one node running `op` on `operands`.
pub fn single(name: &str, op: Op, operands: Vec<Operand>) -> Case {
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
pub fn schedules() -> Vec<Schedule> {
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
pub fn jit_configs() -> Vec<(&'static str, CraneliftOptions)> {
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
pub fn check_with(case: &Case, schedules: &[Schedule]) {
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

pub fn check(case: &Case) {
    check_with(case, &[Schedule::default()]);
}

/// [`check_with`] on every case, on as many threads as the host has (each C build and run is
/// a separate process).
pub fn check_all(cases: &[Case], schedules: &[Schedule]) {
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

/// The graph of `requantization_is_exact_on_any_i32` (`integer_kernels.rs`; also built as
/// Cranelift objects by `integer_network.rs`), checked against the reference function itself.
pub fn requantization_case(rounding: Rounding) -> Case {
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
