//! A small network of integer ops only (QConv, QAveragePool, depthwise QConv, Requantize,
//! QAdd, QMul, QTable, a Reshape, QMatMul, QSoftmax) end to end: bit for bit against the
//! interpreter through the C backend (under several schedules) and the Cranelift JIT, with an
//! arena that holds every int8 value at one byte per element; its C built warning-free with
//! gcc, clang and arm-none-eabi-gcc for a Cortex-M3 without an FPU, calling no floating-point
//! helper; and, with the requantization edge cases, as Cranelift objects for aarch64, riscv64
//! and x86_64 run on the host or under qemu-user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{
    check_with, i32s, next_rounding, qout, random, requant, requantization_case, schedules, Case,
    Rng,
};
use kiln_backends::c::{emit_c, COptions};
use kiln_backends::cranelift::CraneliftOptions;
use kiln_ir::fixed_point::{FixedPoint, Rounding};
use kiln_ir::{DType, Graph, Op, Tensor};

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
