//! int8 end to end, as users run it: kiln's own post-training quantization keeps the trained
//! digits models' accuracy; a model quantized by onnxruntime runs within one step of
//! onnxruntime; the trained MLPerf Tiny int8 models match LiteRT's outputs on the host (interp,
//! C, Cranelift) and on the Cortex-M4 and RV32 boards with integer kernels only; the int8 C of
//! every conv model builds for a Cortex-M3 without an FPU calling no float helper and runs in
//! a fraction of the float build's instructions, with a fraction of its flash and RAM; and the
//! accumulator bound refuses a layer that could overflow.
//!
//! `int8/make_cases.py` writes onnxruntime's outputs, the crafted worst-case layer and
//! calibration samples for the random-weight models into `target/int8-cases/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use kiln_ir::{Graph, Tensor};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running kiln: {e}"))
}

/// Runs kiln and parses its JSON output, failing with its stderr.
fn kiln_json(args: &[&str]) -> serde_json::Value {
    let out = kiln(args);
    assert!(
        out.status.success(),
        "kiln {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn cases() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = common::repo_root();
        let out = root.join("target/int8-cases");
        let status = Command::new(common::python())
            .arg(root.join("tests/int8/make_cases.py"))
            .arg(&root)
            .arg(&out)
            .status()
            .expect("running make_cases.py");
        assert!(status.success(), "make_cases.py failed");
        out
    })
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn data(name: &str) -> String {
    s(&common::repo_root().join("tests/models/data").join(name))
}

fn model(name: &str) -> String {
    s(&common::repo_root()
        .join("tests/models")
        .join(name)
        .join("model.onnx"))
}

/// Calibration data for a model of `tests/models`: the digits calibration split, or seeded
/// standard-normal samples for the random-weight models.
fn calibration(name: &str) -> String {
    if name.starts_with("digits") {
        data("digits_calib_x.npy")
    } else {
        s(&cases().join(format!("calib_{name}.npy")))
    }
}

/// The trained digits models quantized by kiln (calibration split) lose at most 0.5 points of
/// top-1 on the held-out split, through C and the JIT, with integer kernels only.
#[test]
fn kiln_quantized_digits_models_keep_their_accuracy() {
    println!("model        backend     float top-1  int8 top-1  agreement");
    for name in ["digits_cnn", "digits_mlp"] {
        for backend in ["c", "cranelift"] {
            let doc = kiln_json(&[
                "eval",
                &model(name),
                "--data",
                &data("digits_test_x.npy"),
                "--labels",
                &data("digits_test_y.npy"),
                "--quantize",
                "int8",
                "--calibrate",
                &data("digits_calib_x.npy"),
                "--backend",
                backend,
                "--json",
            ]);
            let (top1, float) = (
                doc["top1"].as_f64().unwrap_or(0.0),
                doc["float_top1"].as_f64().unwrap_or(1.0),
            );
            println!(
                "{name:<12} {backend:<10} {:>10.2}% {:>10.2}% {:>9.2}%",
                100.0 * float,
                100.0 * top1,
                100.0 * doc["agreement"].as_f64().unwrap_or(0.0)
            );
            assert_eq!(doc["samples"], 450);
            assert!(float > 0.95, "{name}: the float model's top-1 is {float}");
            assert!(
                top1 >= float - 0.005,
                "{name} {backend}: int8 {top1} vs float {float}"
            );
        }
        let doc = kiln_json(&[
            "inspect",
            &model(name),
            "-O2",
            "--quantize",
            "int8",
            "--calibrate",
            &data("digits_calib_x.npy"),
            "--json",
        ]);
        assert_eq!(doc["float_fallback"], serde_json::json!([]), "{name}");
    }
}

fn import(path: &Path) -> Graph {
    let bytes = std::fs::read(path).expect("model");
    let mut g = kiln_frontend::import_model(&bytes, &Default::default())
        .expect("import")
        .graph;
    kiln_passes::optimize(&mut g, &Default::default()).expect("optimize");
    g
}

/// Every node of an integer build: an integer op or data movement on integer tensors, with
/// at most a quantize of a float input and a dequantize of a float output.
fn assert_integer_only(g: &Graph, what: &str) {
    for id in g.node_ids() {
        let node = g.node(id);
        let float_out = node
            .outputs
            .iter()
            .any(|&v| g.value(v).ty.dtype == kiln_ir::DType::F32);
        let boundary = matches!(
            node.op,
            kiln_ir::Op::QuantizeLinear { .. } | kiln_ir::Op::DequantizeLinear { .. }
        );
        assert!(
            !float_out || (boundary && node.outputs.iter().all(|&v| g.is_output(v))),
            "{what}: node '{}' ({}) computes in float",
            node.name,
            node.op.name()
        );
    }
}

/// The three host engines on one sample.
fn engines(g: &Graph, x: &[Tensor]) -> Vec<(&'static str, Vec<Tensor>)> {
    vec![
        ("interp", kiln_ir::interp::run(g, x).expect("interp")),
        (
            "c",
            kiln_backends::host::run_c(g, x, &Default::default(), &Default::default()).expect("c"),
        ),
        (
            "cranelift",
            kiln_backends::cranelift::JitProgram::compile(g, &Default::default())
                .and_then(|mut p| p.run(x))
                .expect("jit"),
        ),
    ]
}

/// tests/models/quantized/digits_cnn_qdq (made by onnxruntime's quantize_static): within one
/// output step of onnxruntime on at least 99% of the outputs over the whole test split, and
/// top-1 within 0.2 points of onnxruntime's, through the interpreter, C and the JIT.
#[test]
fn onnxruntime_quantized_digits_cnn_matches_onnxruntime() {
    let dir = common::repo_root().join("tests/models/quantized/digits_cnn_qdq");
    let g = import(&dir.join("model.onnx"));
    assert_integer_only(&g, "digits_cnn_qdq");
    let want = common::read_npy(&cases().join("ort_digits_cnn_qdq.npy"));
    let want = want.as_f32().expect("f32");
    let scale: f32 = std::fs::read_to_string(cases().join("ort_digits_cnn_qdq_scale.txt"))
        .expect("scale")
        .trim()
        .parse()
        .expect("a number");
    let x = common::read_npy(&common::repo_root().join("tests/models/data/digits_test_x.npy"));
    let y = common::read_npy(&common::repo_root().join("tests/models/data/digits_test_y.npy"));
    let (x, y) = (x.as_f32().expect("f32"), y.to_i64_vec().expect("labels"));
    let n = y.len();
    let mut c = kiln_backends::host::CProgram::build(&g, &Default::default(), &Default::default())
        .expect("C build");
    let mut jit =
        kiln_backends::cranelift::JitProgram::compile(&g, &Default::default()).expect("jit");
    let argmax = |v: &[f32]| {
        (0..v.len())
            .max_by(|&a, &b| v[a].total_cmp(&v[b]).then(b.cmp(&a)))
            .unwrap_or(0)
    };
    let ort_top1 = (0..n)
        .filter(|&i| argmax(&want[i * 10..(i + 1) * 10]) as i64 == y[i])
        .count();
    for engine in ["interp", "c", "cranelift"] {
        let (mut within, mut exact, mut top1) = (0usize, 0usize, 0usize);
        for i in 0..n {
            let sample = Tensor::from_f32(vec![1, 1, 8, 8], x[i * 64..(i + 1) * 64].to_vec())
                .unwrap_or_else(|e| panic!("{e}"));
            let out = match engine {
                "interp" => kiln_ir::interp::run(&g, &[sample]).expect("interp"),
                "c" => c.run(&[sample]).expect("c"),
                _ => jit.run(&[sample]).expect("jit"),
            };
            let got = out[0].as_f32().expect("f32");
            let reference = &want[i * 10..(i + 1) * 10];
            for (a, b) in got.iter().zip(reference) {
                let steps = ((a - b) / scale).abs();
                within += usize::from(steps <= 1.001);
                exact += usize::from(steps < 0.001);
            }
            top1 += usize::from(argmax(got) as i64 == y[i]);
        }
        let total = n * 10;
        println!(
            "{engine}: {:.2}% of outputs exact, {:.2}% within one step; top-1 {:.2}% (onnxruntime {:.2}%)",
            100.0 * exact as f64 / total as f64,
            100.0 * within as f64 / total as f64,
            100.0 * top1 as f64 / n as f64,
            100.0 * ort_top1 as f64 / n as f64
        );
        assert!(
            within * 100 >= total * 99,
            "{engine}: {within} of {total} within one step"
        );
        let gap = (top1 as f64 - ort_top1 as f64).abs() / n as f64;
        assert!(
            gap <= 0.002,
            "{engine}: top-1 {top1} vs onnxruntime's {ort_top1} of {n}"
        );
    }
}

fn mlperf_int8() -> Vec<PathBuf> {
    common::mlperf_int8_models()
}

/// Integer outputs against LiteRT's: (largest difference, fraction within one step, argmax
/// equal).
fn against_litert(got: &Tensor, dir: &Path) -> (i64, f64, bool) {
    let want = common::read_npy(&dir.join("output_0_litert.npy"));
    let (a, b) = (
        got.to_i64_vec().expect("int"),
        want.to_i64_vec().expect("int"),
    );
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .max()
        .unwrap_or(0);
    let within = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| (*x - *y).abs() <= 1)
        .count();
    let argmax = |v: &[i64]| {
        (0..v.len())
            .max_by_key(|&i| (v[i], std::cmp::Reverse(i)))
            .unwrap_or(0)
    };
    (
        max,
        within as f64 / a.len() as f64,
        argmax(&a) == argmax(&b),
    )
}

/// The four trained MLPerf Tiny int8 models: integer kernels only, and within one step of
/// LiteRT on at least 99% of the outputs (ResNet-8: the same argmax) through the
/// interpreter, C and the JIT.
#[test]
fn mlperf_int8_models_match_litert_on_the_host() {
    let dirs = mlperf_int8();
    for dir in &dirs {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let g = import(&dir.join("model.onnx"));
        assert_integer_only(&g, &name);
        let x = common::read_npy(&dir.join("input_0.npy"));
        for (engine, out) in engines(&g, &[x]) {
            let (max, within, argmax) = against_litert(&out[0], dir);
            println!(
                "{name} {engine}: max {max} steps from LiteRT, {:.1}% within one",
                100.0 * within
            );
            assert!(
                within >= 0.99 || (name.contains("resnet8") && argmax),
                "{name} {engine}"
            );
            assert!(argmax, "{name} {engine}: argmax differs from LiteRT");
        }
    }
}

/// The same models through `kiln verify` on Cortex-M4 (DSP), Cortex-M55 (Helium) and RV32:
/// each target's int8 kernels, outputs exact against the
/// interpreter (kiln checks) and within one step of LiteRT (checked here); prints the
/// instructions, flash and arena for the closing table.
#[test]
fn mlperf_int8_models_match_litert_on_boards() {
    let dirs = mlperf_int8();
    for dir in &dirs {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for target in ["cortex-m4", "cortex-m55", "rv32imac"] {
            let out_dir = std::env::temp_dir()
                .join(format!("kiln-int8-{}-{name}-{target}", std::process::id()));
            let doc = kiln_json(&[
                "verify",
                &s(&dir.join("model.onnx")),
                "--target",
                target,
                "--input",
                &s(&dir.join("input_0.npy")),
                "--output-dir",
                &s(&out_dir),
                "--json",
            ]);
            assert_eq!(doc["passed"], true, "{name} {target}");
            let got = common::read_npy(
                &out_dir.join(
                    std::fs::read_dir(&out_dir)
                        .expect("outputs")
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name())
                        .find(|f| f.to_string_lossy().ends_with("_0.npy"))
                        .expect("output 0"),
                ),
            );
            let (max, within, argmax) = against_litert(&got, dir);
            println!(
                "{name} {target}: {} instructions, flash {} B, arena {} B; max {max} steps from LiteRT",
                doc["instructions"], doc["flash_bytes"], doc["arena_bytes"]
            );
            assert!(
                within >= 0.99 || (name.contains("resnet8") && argmax),
                "{name} {target}"
            );
            let _ = std::fs::remove_dir_all(&out_dir);
        }
    }
}

/// The conv models of tests/models quantized by kiln with `--io int8`: the C builds for a
/// Cortex-M3 with soft float referencing no floating-point helper, runs on the M3 board in at
/// most 0.2x the float build's instructions, and needs at most 0.3x its arena. Its weights and
/// biases take at most 0.27x the float model's bytes; with the requantization multipliers,
/// shifts and tables, whose 5 to 9 bytes per output channel a float model does not have, at
/// most 0.31x (digits and KWS have 9 to 40 weights per channel, so those bytes weigh more).
#[test]
fn int8_conv_models_on_cortex_m3() {
    let cross = ["arm-none-eabi-gcc", "arm-none-eabi-nm"];
    println!(
        "model                 float instr    int8 instr  ratio  weights+biases f->i8  all constants  arena f->i8"
    );
    for name in [
        "digits_cnn",
        "kws_dscnn",
        "vww_mobilenet_v1_025",
        "resnet8_cifar",
    ] {
        let out = std::env::temp_dir().join(format!("kiln-int8-m3-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let (model_path, calib) = (model(name), calibration(name));
        let quant = ["--quantize", "int8", "--calibrate", &calib, "--io", "int8"];
        let mut args = vec!["compile", model_path.as_str(), "-o"];
        let out_s = s(&out);
        args.extend([out_s.as_str(), "--name", "m", "--report", "json"]);
        args.extend(quant);
        let compiled = kiln(&args);
        assert!(
            compiled.status.success(),
            "{}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("m.report.json")).expect("report"))
                .expect("json");
        let q = &report["quantization"];
        assert_eq!(q["float_fallback"], serde_json::json!([]), "{name}");
        // Soft-float Cortex-M3: no __aeabi_f*/__aeabi_d* in the object.
        let obj = out.join("m.o");
        let cc = Command::new(cross[0])
            .args([
                "-mcpu=cortex-m3",
                "-mthumb",
                "-mfloat-abi=soft",
                "-std=c99",
                "-O2",
            ])
            .args(["-Wall", "-Wextra", "-Wpedantic", "-Werror", "-c"])
            .arg(out.join("m.c"))
            .arg("-o")
            .arg(&obj)
            .output()
            .expect("arm-none-eabi-gcc");
        assert!(
            cc.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&cc.stderr)
        );
        let nm = Command::new(cross[1])
            .arg("-u")
            .arg(&obj)
            .output()
            .expect("nm");
        let undefined = String::from_utf8_lossy(&nm.stdout).into_owned();
        let float_helpers: Vec<&str> = undefined
            .lines()
            .filter(|l| {
                l.contains("__aeabi_f")
                    || l.contains("__aeabi_d")
                    || l.contains("__aeabi_i2f")
                    || l.contains("__aeabi_ui2f")
            })
            .collect();
        assert!(
            float_helpers.is_empty(),
            "{name} calls float helpers: {float_helpers:?}"
        );
        // Instructions on the M3 board: float build against int8 build.
        let input = common::repo_root()
            .join("tests/models")
            .join(name)
            .join("input_0.npy");
        let verify = |extra: &[&str]| {
            let mut a = vec![
                "verify",
                model_path.as_str(),
                "--target",
                "cortex-m3",
                "--json",
            ];
            let input_s = s(&input);
            a.extend(["--input", input_s.as_str()]);
            a.extend(extra);
            let doc = kiln_json(&a);
            assert_eq!(doc["passed"], true, "{name} {extra:?}");
            doc["instructions"].as_f64().unwrap_or(0.0)
        };
        let float = verify(&[]);
        let int8 = verify(&["--quantize", "int8", "--calibrate", &calib, "--io", "int8"]);
        let ratio = |a: &serde_json::Value, b: &serde_json::Value| {
            a.as_f64().unwrap_or(0.0) / b.as_f64().unwrap_or(1.0)
        };
        let (parameters, constants, arena) = (
            ratio(&q["parameter_bytes"], &q["float_parameter_bytes"]),
            ratio(&q["weight_bytes"], &q["float_weight_bytes"]),
            ratio(&q["arena_bytes"], &q["float_arena_bytes"]),
        );
        println!(
            "{name:<20} {float:>12} {int8:>12} {:>6.3} {} -> {} ({parameters:.3}x) {} ({constants:.3}x) {} -> {} ({arena:.3}x)",
            int8 / float,
            q["float_parameter_bytes"],
            q["parameter_bytes"],
            q["weight_bytes"],
            q["float_arena_bytes"],
            q["arena_bytes"]
        );
        assert!(
            int8 <= 0.2 * float,
            "{name}: int8 {int8} vs float {float} instructions"
        );
        assert!(arena <= 0.3, "{name}: arena {arena}x");
        assert!(
            parameters <= 0.27,
            "{name}: weights and biases {parameters}x"
        );
        assert!(constants <= 0.31, "{name}: constants {constants}x");
        let _ = std::fs::remove_dir_all(&out);
    }
}

/// A QDQ MatMul whose accumulator could overflow (K = 140000 weights of 127 on int8 inputs)
/// is refused with an error naming the layer, the op and the bound.
#[test]
fn accumulator_bound_refuses_a_worst_case_layer() {
    let dir = cases().join("worst_case");
    let out = kiln(&[
        "compile",
        &s(&dir.join("model.onnx")),
        "-o",
        &s(&dir.join("c")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node 'huge_matmul' (MatMul)"), "{err}");
    assert!(
        err.contains("could overflow") && err.contains("2275840000"),
        "{err}"
    );
    assert!(
        !dir.join("c").join("model.c").exists(),
        "no half-written output"
    );
}

/// `kiln compile --isa` writes the very C `kiln verify --target` builds and measures for that
/// CPU (so the verified kernels are the shipped ones); `kiln verify --isa` overrides the
/// target's choice and still passes; `--isa` with a backend other than C is refused.
#[test]
fn compile_isa_ships_the_kernels_verify_measures() {
    let model = common::repo_root().join("tests/models/quantized/digits_cnn_qdq/model.onnx");
    let model = s(&model);
    let base = std::env::temp_dir().join(format!("kiln-int8-isa-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    for (target, isa, marker) in [
        ("cortex-m4", "dsp", "kiln_smlad"),
        ("cortex-m55", "mve", "kiln_vdot8"),
        ("rv32imac", "scalar", "_lanes("),
    ] {
        let (kept, compiled) = (base.join(format!("v-{target}")), base.join(isa));
        let verified = kiln(&[
            "verify",
            &model,
            "--target",
            target,
            "--keep-dir",
            &s(&kept),
        ]);
        assert!(
            verified.status.success(),
            "{target}: {}",
            String::from_utf8_lossy(&verified.stderr)
        );
        let out = kiln(&["compile", &model, "-o", &s(&compiled), "--isa", isa]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for file in ["model.c", "model.h"] {
            let (a, b) = (
                std::fs::read(kept.join(file)).expect("verified source"),
                std::fs::read(compiled.join(file)).expect("compiled source"),
            );
            assert!(
                a == b,
                "{file}: kiln compile --isa {isa} differs from verify on {target}"
            );
        }
        let text = std::fs::read_to_string(compiled.join("model.c")).expect("model.c");
        assert!(text.contains(marker), "--isa {isa} wrote no {marker}");
    }
    // The target's kernels against the portable ones on the same board: both exact, the
    // DSP build the faster.
    let count = |extra: &[&str]| {
        let mut a = vec!["verify", model.as_str(), "--target", "cortex-m4", "--json"];
        a.extend(extra);
        let doc = kiln_json(&a);
        assert_eq!(doc["passed"], true, "{extra:?}");
        doc["instructions"].as_u64().unwrap_or(0)
    };
    let (dsp, portable) = (count(&[]), count(&["--isa", "portable"]));
    assert!(dsp < portable, "dsp {dsp} vs portable {portable}");
    for args in [
        vec![
            "compile",
            model.as_str(),
            "-o",
            "unused",
            "--emit",
            "obj",
            "--isa",
            "dsp",
        ],
        vec![
            "verify",
            model.as_str(),
            "--target",
            "rv64gc",
            "--backend",
            "cranelift",
            "--isa",
            "scalar",
        ],
    ] {
        let out = kiln(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--isa selects the C backend"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// `--int8-weights`: `compact` keeps every weight one byte (no widened batch-1 weights on the
/// DSP cores, no 16-bit lanes on RV32), `balanced` widens them, and both run exactly, the
/// widened build in fewer instructions.
#[test]
fn int8_weights_trade_flash_for_instructions() {
    let model = common::repo_root().join("tests/models/quantized/digits_cnn_qdq/model.onnx");
    let model = s(&model);
    let base = std::env::temp_dir().join(format!("kiln-int8-weights-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    for (target, isa, widened) in [
        ("cortex-m4", "dsp", "pre-extended"),
        ("rv32imac", "scalar", "16-bit lanes"),
    ] {
        let mut counts = Vec::new();
        for layout in ["compact", "balanced"] {
            let dir = base.join(format!("{isa}-{layout}"));
            let out = kiln(&[
                "compile",
                &model,
                "-o",
                &s(&dir),
                "--isa",
                isa,
                "--int8-weights",
                layout,
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = std::fs::read_to_string(dir.join("model.c")).expect("model.c");
            assert_eq!(
                text.contains(widened),
                layout == "balanced",
                "{isa} {layout}"
            );
            let doc = kiln_json(&[
                "verify",
                &model,
                "--target",
                target,
                "--int8-weights",
                layout,
                "--json",
            ]);
            assert_eq!(doc["passed"], true, "{target} {layout}");
            counts.push(doc["instructions"].as_u64().unwrap_or(0));
        }
        assert!(
            counts[1] < counts[0],
            "{target}: balanced {} vs compact {}",
            counts[1],
            counts[0]
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}
