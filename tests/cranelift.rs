//! The Cranelift backend: every model through the host JIT (default options, scalar, and one
//! vector per iteration without FMA or explicit padding) against the interpreter, vector code
//! against scalar code bit for bit, and through its ELF objects on aarch64 (qemu-aarch64), riscv64 (qemu-riscv64, and
//! bare metal on the QEMU virt board) and x86_64 (qemu-x86_64) via `kiln verify --backend cranelift`, checked against
//! onnxruntime's reference outputs. Also `kiln compile --emit obj`: the object and the same header
//! as the C backend.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use kiln_backends::cranelift::{CraneliftOptions, JitProgram};
use kiln_ir::Tensor;

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running kiln: {e}"))
}

fn import(dir: &Path) -> kiln_ir::Graph {
    let bytes = std::fs::read(dir.join("model.onnx")).expect("model");
    kiln_frontend::import_model(&bytes, &Default::default())
        .expect("import")
        .graph
}

/// Compiles `graph` with `options` and runs it twice on `input` (the arena is reused, and
/// results must not depend on its old contents).
fn jit_run(
    graph: &kiln_ir::Graph,
    options: &CraneliftOptions,
    input: &Tensor,
    what: &str,
) -> Vec<Tensor> {
    let mut program = JitProgram::compile(graph, options).unwrap_or_else(|e| panic!("{what}: {e}"));
    let got = program.run(std::slice::from_ref(input)).expect("run");
    let again = program.run(std::slice::from_ref(input)).expect("run");
    assert_eq!(got, again, "{what}: second run differs");
    got
}

#[test]
fn every_model_matches_the_interpreter_through_the_jit() {
    let configs = [
        ("default", CraneliftOptions::default()),
        (
            "scalar",
            CraneliftOptions {
                simd: false,
                ..CraneliftOptions::default()
            },
        ),
        (
            "one vector per iteration, implicit padding, no fma",
            CraneliftOptions {
                vector_parts: 1,
                explicit_padding: false,
                fma: false,
                ..CraneliftOptions::default()
            },
        ),
    ];
    for dir in common::repo_models() {
        let graph = import(&dir);
        let input = common::read_npy(&dir.join("input_0.npy"));
        let want = kiln_ir::interp::run(&graph, std::slice::from_ref(&input)).expect("interp");
        for (name, options) in &configs {
            let what = format!("{} ({name})", dir.display());
            let got = jit_run(&graph, options, &input, &what);
            for (g, w) in got.iter().zip(&want) {
                let (err, magnitude) = common::max_abs_diff(g, w);
                assert!(
                    err <= 1e-4 * magnitude.max(1.0),
                    "{what}: JIT differs from the interpreter by {err}"
                );
            }
        }
    }
}

/// Without fused multiply-adds, vector code computes every output exactly as the scalar code
/// does (same operations, same order): this catches any lane, part or shuffle mistake that a
/// tolerance would hide.
#[test]
fn vector_code_matches_scalar_code_bit_for_bit_without_fma() {
    for dir in common::repo_models() {
        let graph = import(&dir);
        let input = common::read_npy(&dir.join("input_0.npy"));
        let exact = |simd| CraneliftOptions {
            simd,
            fma: false,
            ..CraneliftOptions::default()
        };
        let what = dir.display().to_string();
        let vector = jit_run(&graph, &exact(true), &input, &what);
        let scalar = jit_run(&graph, &exact(false), &input, &what);
        assert_eq!(vector, scalar, "{what}: vector and scalar code differ");
    }
}

/// The MLPerf Tiny models beside the repository (float and int8 QDQ) through the JIT: integer
/// lanes (the int8 models' QuantizeLinear and DequantizeLinear) and float lanes match scalar
/// code bit for bit without FMA, and the defaults match the interpreter. Skips when
/// `../shared` is absent.
#[test]
fn shared_models_vectorize_exactly() {
    let Some(shared) = common::shared_models_dir() else {
        eprintln!("skipping: ../shared/models is not present");
        return;
    };
    for dir in common::model_dirs(&shared) {
        let graph = import(&dir);
        let input = common::read_npy(&dir.join("input_0.npy"));
        let what = dir.display().to_string();
        let exact = |simd| CraneliftOptions {
            simd,
            fma: false,
            ..CraneliftOptions::default()
        };
        let vector = jit_run(&graph, &exact(true), &input, &what);
        let scalar = jit_run(&graph, &exact(false), &input, &what);
        assert_eq!(vector, scalar, "{what}: vector and scalar code differ");
        let want = kiln_ir::interp::run(&graph, std::slice::from_ref(&input)).expect("interp");
        let got = jit_run(&graph, &CraneliftOptions::default(), &input, &what);
        for (g, w) in got.iter().zip(&want) {
            if g.dtype() == kiln_ir::DType::F32 {
                let (err, magnitude) = common::max_abs_diff(g, w);
                assert!(err <= 1e-4 * magnitude.max(1.0), "{what}: off by {err}");
            } else {
                // Quantized outputs: FMA may move a value across a rounding boundary.
                let err = g
                    .to_f64_vec()
                    .iter()
                    .zip(w.to_f64_vec())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(err <= 1.0, "{what}: quantized output off by {err}");
            }
        }
    }
}

/// `kiln verify --backend cranelift` on `target` for every model, and the board's output
/// against onnxruntime's reference.
fn every_model_verifies_on(target: &str) {
    for dir in common::repo_models() {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out_dir =
            std::env::temp_dir().join(format!("kiln-cl-{}-{name}-{target}", std::process::id()));
        let model = dir.join("model.onnx");
        let input = dir.join("input_0.npy");
        let out = kiln(&[
            "verify",
            &model.to_string_lossy(),
            "--target",
            target,
            "--backend",
            "cranelift",
            "--input",
            &input.to_string_lossy(),
            "--output-dir",
            &out_dir.to_string_lossy(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{name} on {target}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(doc["passed"], true, "{doc}");
        assert!(doc["instructions"].as_u64().unwrap_or(0) > 1000, "{doc}");
        let got = std::fs::read_dir(&out_dir)
            .expect("outputs")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with("_0.npy"))
            .expect("output 0");
        let (err, magnitude) = common::max_abs_diff(
            &common::read_npy(&got),
            &common::read_npy(&dir.join("output_0.npy")),
        );
        assert!(
            err <= 1e-4 * magnitude.max(1.0),
            "{name} on {target}: {err}"
        );
        let _ = std::fs::remove_dir_all(&out_dir);
    }
}

#[test]
fn every_model_runs_as_an_aarch64_object_under_qemu() {
    every_model_verifies_on("aarch64");
}

#[test]
fn every_model_runs_as_a_riscv64_object_under_qemu() {
    every_model_verifies_on("riscv64");
}

#[test]
fn every_model_runs_as_a_riscv64_object_on_the_virt_board() {
    every_model_verifies_on("rv64gc");
}

#[test]
fn every_model_runs_as_an_x86_64_object() {
    every_model_verifies_on("x86_64");
}

#[test]
fn compile_emits_an_object_and_the_c_backends_header() {
    let model = common::repo_root().join("tests/models/digits_cnn/model.onnx");
    let base = std::env::temp_dir().join(format!("kiln-cl-obj-{}", std::process::id()));
    let obj_dir = base.join("obj");
    let c_dir = base.join("c");
    for target in ["x86_64", "aarch64", "riscv64"] {
        let out = kiln(&[
            "compile",
            &model.to_string_lossy(),
            "--emit",
            "obj",
            "--target",
            target,
            "--name",
            "cnn",
            "-o",
            &obj_dir.to_string_lossy(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let object = std::fs::read(obj_dir.join("cnn.o")).expect("cnn.o");
        assert_eq!(&object[..4], b"\x7fELF", "{target}: not an ELF file");
        // e_machine: x86_64 62, aarch64 183, riscv 243.
        let machine = u16::from_le_bytes([object[18], object[19]]);
        let want = match target {
            "x86_64" => 62,
            "aarch64" => 183,
            _ => 243,
        };
        assert_eq!(machine, want, "{target}");
    }
    let out = kiln(&[
        "compile",
        &model.to_string_lossy(),
        "--name",
        "cnn",
        "-o",
        &c_dir.to_string_lossy(),
    ]);
    assert!(out.status.success());
    let header_obj = std::fs::read_to_string(obj_dir.join("cnn.h")).expect("header");
    let header_c = std::fs::read_to_string(c_dir.join("cnn.h")).expect("header");
    assert_eq!(
        header_obj, header_c,
        "firmware must link either backend with the same header"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// `MODEL_ARENA_BYTES` from a generated header.
fn arena_bytes(header: &Path) -> usize {
    let text = std::fs::read_to_string(header).expect("header");
    text.lines()
        .find_map(|l| l.strip_prefix("#define KWS_ARENA_BYTES "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no arena size in {}", header.display()))
}

/// Explicit padding costs arena (KWS's narrow rows pay for padded copies); the flag turns it
/// off and the object then needs exactly the C backend's arena.
#[test]
fn explicit_padding_costs_arena_and_can_be_turned_off() {
    let model = common::repo_root().join("tests/models/kws_dscnn/model.onnx");
    let base = std::env::temp_dir().join(format!("kiln-cl-pad-{}", std::process::id()));
    let compile = |dir: &str, extra: &[&str]| {
        let out_dir = base.join(dir);
        let mut args = vec![
            "compile".to_string(),
            model.to_string_lossy().into_owned(),
            "--name".into(),
            "kws".into(),
            "-o".into(),
            out_dir.to_string_lossy().into_owned(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = kiln(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        arena_bytes(&out_dir.join("kws.h"))
    };
    let c = compile("c", &[]);
    let padded = compile("obj", &["--emit", "obj", "--target", "aarch64"]);
    let unpadded = compile(
        "obj-unpadded",
        &[
            "--emit",
            "obj",
            "--target",
            "aarch64",
            "--no-explicit-padding",
        ],
    );
    assert!(padded > c, "padded copies need arena: {padded} vs {c}");
    assert_eq!(unpadded, c);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn targets_without_a_cranelift_isa_are_refused() {
    let model = common::repo_root().join("tests/models/digits_mlp/model.onnx");
    let out = kiln(&[
        "verify",
        &model.to_string_lossy(),
        "--target",
        "cortex-m4",
        "--backend",
        "cranelift",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no ISA for target 'cortex-m4'") && err.contains("--backend c"),
        "{err}"
    );
}

/// `--no-libm` with Cranelift objects: the object calls `PREFIX_expf`, ... from the generated
/// `PREFIX_math.c` (the C runtime's approximations), the program verifies on the bare-metal
/// rv64gc board, and nothing from libm is linked.
#[test]
fn no_libm_objects_call_the_runtime_approximations() {
    let model = common::repo_root().join("tests/models/transformer_encoder_2l/model.onnx");
    let dir = std::env::temp_dir().join(format!("kiln-cl-nolibm-{}", std::process::id()));
    let out = kiln(&[
        "verify",
        &model.to_string_lossy(),
        "--target",
        "rv64gc",
        "--backend",
        "cranelift",
        "--no-libm",
        "--keep-dir",
        &dir.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let source = std::fs::read_to_string(dir.join("model_math.c")).expect("model_math.c");
    assert!(source.contains("return kiln_expf(x);"), "{source}");
    let nm = |file: &str| {
        let out = Command::new("riscv64-unknown-elf-nm")
            .arg(dir.join(file))
            .output()
            .expect("riscv64-unknown-elf-nm");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let object = nm("model.o");
    assert!(object.contains(" U model_expf"), "{object}");
    let program = nm("prog.elf");
    let defines = |sym: &str| program.lines().any(|l| l.ends_with(&format!(" T {sym}")));
    assert!(defines("model_expf"), "{program}");
    for libm in ["expf", "erff", "tanhf", "logf", "powf"] {
        assert!(!defines(libm), "libm's {libm} is linked:\n{program}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_jit_refuses_no_libm() {
    let graph = import(&common::repo_root().join("tests/models/digits_mlp"));
    let options = CraneliftOptions {
        no_libm: true,
        ..CraneliftOptions::default()
    };
    let err = JitProgram::compile(&graph, &options).expect_err("no_libm with the JIT");
    assert!(err.to_string().contains("host's libm"), "{err}");
}
