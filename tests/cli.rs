//! The `kiln` command line as users call it: `inspect` figures, `run` conventions, and the
//! options that complete a model (`--input-shape`, `--const-input`).

mod common;

use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running kiln: {e}"))
}

fn inspect_json(model: &std::path::Path) -> serde_json::Value {
    let out = kiln(&["inspect", &model.to_string_lossy(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

#[test]
fn inspect_totals_add_up() {
    let model = common::repo_root().join("tests/models/resnet8_cifar/model.onnx");
    let doc = inspect_json(&model);
    assert_eq!(doc["supported"], true);
    let nodes = doc["nodes"].as_array().expect("nodes");
    let macs: u64 = nodes.iter().map(|n| n["macs"].as_u64().unwrap_or(0)).sum();
    assert_eq!(doc["totals"]["macs"].as_u64(), Some(macs));
    assert!(
        macs > 10_000_000,
        "ResNet-8 has about 12.5M MACs, got {macs}"
    );
    assert_eq!(doc["totals"]["nodes"].as_u64(), Some(nodes.len() as u64));
    assert_eq!(doc["outputs"][0]["shape"], serde_json::json!([1, 10]));
}

/// MAC counts agree with the figures the shared MLPerf Tiny manifest records per model.
#[test]
fn inspect_macs_match_the_mlperf_manifest() {
    let Some(root) = common::shared_models_dir() else {
        println!("SKIPPED: ../shared/models/mlcommons_tiny_onnx is absent");
        return;
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).expect("manifest"))
            .expect("json");
    let mut checked = 0;
    for m in manifest["models"].as_array().expect("models") {
        let name = m["name"].as_str().unwrap_or_default();
        if name.ends_with("_int8") {
            continue;
        }
        let doc = inspect_json(&root.join(m["file"].as_str().unwrap_or_default()));
        assert_eq!(doc["totals"]["macs"].as_u64(), m["macs"].as_u64(), "{name}");
        checked += 1;
    }
    assert!(checked >= 4);
}

#[test]
fn inspect_writes_dot() {
    let model = common::repo_root().join("tests/models/digits_cnn/model.onnx");
    let dot = std::env::temp_dir().join(format!("kiln-cli-{}.dot", std::process::id()));
    let out = kiln(&[
        "inspect",
        &model.to_string_lossy(),
        "--dot",
        &dot.to_string_lossy(),
    ]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&dot).expect("dot written");
    assert!(text.starts_with("digraph") && text.contains("Conv") && text.contains("->"));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("total:") && table.contains("MACs"));
    let _ = std::fs::remove_file(dot);
}

#[test]
fn run_without_input_uses_a_seeded_random_input_and_says_so() {
    let model = common::repo_root().join("tests/models/kws_dscnn/model.onnx");
    let dir = std::env::temp_dir().join(format!("kiln-cli-random-{}", std::process::id()));
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let out = kiln(&[
            "run",
            &model.to_string_lossy(),
            "--output-dir",
            &dir.to_string_lossy(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("seeded random input"));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(doc["random_input"], true);
        let file = doc["outputs"][0]["file"]
            .as_str()
            .expect("file")
            .to_string();
        assert_eq!(doc["outputs"][0]["dtype"], "f32");
        outputs.push(std::fs::read(file).expect("output file"));
    }
    assert_eq!(
        outputs[0], outputs[1],
        "the random input must be deterministic"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_explains_the_commands() {
    let out = kiln(&["run", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--input",
        "--output-dir",
        "--json",
        "--input-shape",
        "--backend",
    ] {
        assert!(help.contains(flag), "run --help lacks {flag}");
    }
}

#[test]
fn compile_writes_a_self_contained_directory_and_a_report() {
    let model = common::repo_root().join("tests/models/kws_dscnn/model.onnx");
    let dir = std::env::temp_dir().join(format!("kiln-cli-compile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = [
        "compile",
        &model.to_string_lossy(),
        "-o",
        &dir.to_string_lossy(),
        "--name",
        "kws",
        "--arena",
        "static",
        "--arena-section",
        ".dtcm",
        "--weights-section",
        ".extflash",
        "--report",
        "json",
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kiln(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("arena:") && stdout.contains("lower bound"),
        "{stdout}"
    );
    let source = std::fs::read_to_string(dir.join("kws.c")).expect("kws.c");
    let header = std::fs::read_to_string(dir.join("kws.h")).expect("kws.h");
    assert!(dir.join("kiln_runtime.h").exists());
    assert!(
        source.contains("KILN_SECTION(\".extflash\")")
            && source.contains("KILN_SECTION(\".dtcm\")")
    );
    assert!(
        header.contains("#define KWS_ARENA_BYTES")
            && header.contains("int kws_run(void *arena, const float *in0, float *out0);")
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("kws.report.json")).expect("report"))
            .expect("json");
    let arena = report["arena_bytes"].as_u64().expect("arena_bytes");
    assert!(arena >= report["arena_lower_bound_bytes"].as_u64().expect("bound"));
    assert!(report["arena_naive_bytes"].as_u64().expect("naive") >= arena);
    assert!(header.contains(&format!("#define KWS_ARENA_BYTES {arena}")));
    assert!(!report["layers"].as_array().expect("layers").is_empty());
    // The same command again writes byte-identical files.
    let first: Vec<Vec<u8>> = ["kws.c", "kws.h"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("file"))
        .collect();
    assert!(kiln(&args).status.success());
    let second: Vec<Vec<u8>> = ["kws.c", "kws.h"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("file"))
        .collect();
    assert_eq!(first, second);
    // `cc -c DIR/*.c` builds it with no other include path.
    let cc = Command::new("cc")
        .args(["-std=c99", "-c", "-o"])
        .arg(dir.join("kws.o"))
        .arg(dir.join("kws.c"))
        .output()
        .expect("cc");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn compile_rejects_a_bad_prefix_without_writing_anything() {
    let model = common::repo_root().join("tests/models/digits_mlp/model.onnx");
    let dir = std::env::temp_dir().join(format!("kiln-cli-badname-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = kiln(&[
        "compile",
        &model.to_string_lossy(),
        "-o",
        &dir.to_string_lossy(),
        "--name",
        "9lives",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a C identifier"));
    assert!(!dir.exists());
}

#[test]
fn run_through_the_c_backend_matches_the_interpreter() {
    let root = common::repo_root().join("tests/models/resnet8_cifar");
    let dir = std::env::temp_dir().join(format!("kiln-cli-runc-{}", std::process::id()));
    let mut results = Vec::new();
    for backend in ["interp", "c"] {
        let out_dir = dir.join(backend);
        let out = kiln(&[
            "run",
            &root.join("model.onnx").to_string_lossy(),
            "--input",
            &root.join("input_0.npy").to_string_lossy(),
            "--backend",
            backend,
            "--output-dir",
            &out_dir.to_string_lossy(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(doc["backend"], backend);
        results.push(common::read_npy(std::path::Path::new(
            doc["outputs"][0]["file"].as_str().expect("file"),
        )));
    }
    let (diff, _) = common::max_abs_diff(&results[1], &results[0]);
    assert!(diff < 1e-5, "C vs interpreter: {diff}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `tests/frontend_models/cli/NAME` (made by `tests/frontend_models/generate.py`).
fn cli_model(name: &str) -> String {
    common::repo_root()
        .join("tests/frontend_models/cli")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Dimensions written as -1 (Paddle2ONNX) or 0 are dynamic: without --input-shape the error
/// names the input and gives the option to write; with it the model compiles and runs.
#[test]
fn dynamic_dims_written_as_minus_one_or_zero_need_input_shape() {
    let dir = temp_dir("dynamic");
    for (model, how) in [
        ("dynamic_minus_one.onnx", "dimension 0 is dynamic (-1)"),
        (
            "dynamic_zero.onnx",
            "dimension 0 is 0, which exporters write for a dynamic size",
        ),
    ] {
        let model = cli_model(model);
        let c_dir = dir.join("c");
        let out = kiln(&["compile", &model, "-o", &c_dir.to_string_lossy()]);
        assert_eq!(out.status.code(), Some(2), "{model}: {}", stderr_of(&out));
        let err = stderr_of(&out);
        for fragment in ["input 'x'", how, "--input-shape x=D0,4"] {
            assert!(
                err.contains(fragment),
                "{model}: error lacks '{fragment}': {err}"
            );
        }
        assert!(!err.contains("negative"), "{err}");
        assert!(
            !c_dir.exists(),
            "a failed compile wrote {}",
            c_dir.display()
        );
        let out = kiln(&[
            "compile",
            &model,
            "--input-shape",
            "x=2,4",
            "-o",
            &c_dir.to_string_lossy(),
            "--name",
            "dyn",
        ]);
        assert!(out.status.success(), "{model}: {}", stderr_of(&out));
        let header = std::fs::read_to_string(c_dir.join("dyn.h")).expect("dyn.h");
        assert!(header.contains("\"x\" f32[2,4]"), "{header}");
        let out = kiln(&[
            "run",
            &model,
            "--input-shape",
            "x=2,4",
            "--output-dir",
            &dir.join("out").to_string_lossy(),
            "--json",
        ]);
        assert!(out.status.success(), "{model}: {}", stderr_of(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(doc["outputs"][0]["shape"], serde_json::json!([2, 3]));
        let _ = std::fs::remove_dir_all(&c_dir);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `--const-input` bakes a graph input (here Reshape's shape) into the model: `inspect` and
/// `compile` see a model with one input left, and `run` matches onnxruntime.
#[test]
fn const_input_bakes_a_shape_input_into_the_model() {
    let model = cli_model("reshape_shape_input.onnx");
    let shape = format!("shape={}", cli_model("reshape_shape.npy"));
    // Without it, the error says how to use it.
    let out = kiln(&["inspect", &model]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("node 'reshape' (Reshape): input 'shape' must be a compile-time constant")
            && err.contains("--const-input shape=FILE.npy"),
        "{err}"
    );
    let out = kiln(&["inspect", &model, "--const-input", &shape, "--json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let inputs: Vec<&str> = doc["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(inputs, ["x"]);
    assert_eq!(doc["outputs"][0]["shape"], serde_json::json!([4, 6]));

    let dir = temp_dir("const-input");
    let out = kiln(&[
        "compile",
        &model,
        "--const-input",
        &shape,
        "-o",
        &dir.join("c").to_string_lossy(),
        "--name",
        "rs",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let header = std::fs::read_to_string(dir.join("c/rs.h")).expect("rs.h");
    assert!(header.contains("#define RS_NUM_INPUTS 1"), "{header}");
    assert!(header.contains("f32[4,6]"), "{header}");

    let out = kiln(&[
        "run",
        &model,
        "--const-input",
        &shape,
        "--input",
        &format!("x={}", cli_model("reshape_x.npy")),
        "--output-dir",
        &dir.join("out").to_string_lossy(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let got = common::read_npy(std::path::Path::new(
        doc["outputs"][0]["file"].as_str().expect("file"),
    ));
    let want = common::read_npy(std::path::Path::new(&cli_model("reshape_y.npy")));
    common::compare(&got, &want, 0.0, 0.0).expect("kiln run matches onnxruntime");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every malformed `--const-input` is refused with an error naming the input (or the spec).
#[test]
fn bad_const_inputs_are_refused_naming_the_input() {
    let model = cli_model("reshape_shape_input.onnx");
    let shape_npy = cli_model("reshape_shape.npy");
    let cases: Vec<(String, &[&str])> = vec![
        (
            "shape".into(),
            &["--const-input 'shape'", "expected NAME=FILE.npy"],
        ),
        (
            format!("nope={shape_npy}"),
            &[
                "input 'nope'",
                "--const-input names an input the model does not have (its inputs: x, shape)",
            ],
        ),
        (
            "shape=/nonexistent/shape.npy".into(),
            &["cannot read '/nonexistent/shape.npy' for input 'shape'"],
        ),
        (
            format!("shape={model}"),
            &["for input 'shape'", "is not a .npy file kiln reads"],
        ),
        (
            format!("shape={}", cli_model("reshape_shape_i32.npy")),
            &[
                "input 'shape'",
                "the --const-input value is i32[2] but the model declares i64[2]",
            ],
        ),
        (
            format!("shape={}", cli_model("reshape_shape_3.npy")),
            &[
                "input 'shape'",
                "the --const-input value is i64[3] but the model declares i64[2]",
            ],
        ),
    ];
    let dir = temp_dir("bad-const-input");
    for (spec, fragments) in &cases {
        for command in ["compile", "inspect", "run"] {
            let mut args = vec![command, model.as_str(), "--const-input", spec.as_str()];
            let out_dir = dir.join(command).to_string_lossy().into_owned();
            match command {
                "compile" => args.extend(["-o", &out_dir]),
                "run" => args.extend(["--output-dir", &out_dir]),
                _ => {}
            }
            let out = kiln(&args);
            assert_eq!(out.status.code(), Some(2), "{command} {spec}");
            let err = stderr_of(&out);
            assert!(!err.contains("panicked"), "{err}");
            for f in *fragments {
                assert!(
                    err.contains(f),
                    "{command} {spec}: error lacks '{f}': {err}"
                );
            }
        }
    }
    // Given as a constant and as a run-time input.
    let out = kiln(&[
        "run",
        &model,
        "--const-input",
        &format!("shape={shape_npy}"),
        "--input",
        &format!("shape={shape_npy}"),
        "--output-dir",
        &dir.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("input 'shape' is baked into the model by --const-input"),
        "{}",
        stderr_of(&out)
    );
    assert!(!dir.exists(), "a failed command wrote {}", dir.display());
}
