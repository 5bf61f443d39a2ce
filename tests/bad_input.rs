//! Bad input: every malformed model in `tests/bad_models/` (made by its `generate.py`) must give
//! a clear error naming the node and op (or the tensor), exit code 2, no panic, and no output file.

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// (model file, fragments the error must contain).
const CASES: &[(&str, &[&str])] = &[
    ("truncated.onnx", &["not a valid ONNX model"]),
    ("random_bytes.onnx", &["not a valid ONNX model"]),
    ("wrong_magic.onnx", &["not a valid ONNX model"]),
    (
        "unknown_op.onnx",
        &[
            "node 'fancy0' (FancyNewOp): not supported: unknown op",
            "node 'det0' (Det)",
        ],
    ),
    (
        "unknown_op_then_unsupported_attr.onnx",
        &[
            "node 'fancy0' (FancyNewOp): not supported",
            "node 'ln_stash' (LayerNormalization): not supported",
        ],
    ),
    (
        "shape_mismatch.onnx",
        &["node 'add_bad' (Add)", "do not broadcast"],
    ),
    (
        "missing_input.onnx",
        &["node 'add_missing' (Add)", "'nowhere' is not produced"],
    ),
    ("negative_dim.onnx", &["input 'x'", "negative"]),
    ("absurd_input_dim.onnx", &["input 'x'", "too large"]),
    (
        "absurd_initializer.onnx",
        &["tensor 'huge_weight'", "too large"],
    ),
    (
        "absurd_expand.onnx",
        &["node 'expand_huge' (Expand)", "too large"],
    ),
    ("cycle.onnx", &["(Add)", "cycle"]),
    (
        "symbolic_dim.onnx",
        &["input 'x'", "symbolic ('batch')", "--input-shape x="],
    ),
    ("control_flow.onnx", &["node 'branch0' (If): not supported"]),
    (
        "unsupported_attr.onnx",
        &[
            "node 'ln_stash' (LayerNormalization): not supported",
            "stash_type",
        ],
    ),
    ("unsupported_dtype.onnx", &["input 'x'", "float64"]),
    ("external_data.onnx", &["'ext_weight'", "external data"]),
    (
        "sequence_input.onnx",
        &[
            "node 'seq_at' (SequenceAt): not supported",
            "input 'seq'",
            "sequence",
        ],
    ),
];

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running kiln: {e}"))
}

fn check_rejected(case: &str, command: &str, out: &Output, fragments: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{command} {case}: exit code, stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{command} {case} panicked:\n{stderr}"
    );
    for f in fragments {
        assert!(
            stderr.contains(f),
            "{command} {case}: error lacks '{f}':\n{stderr}"
        );
    }
}

#[test]
fn bad_models_are_rejected_cleanly() {
    let dir = common::repo_root().join("tests/bad_models");
    let out_dir = tempdir("bad_models");
    for (case, fragments) in CASES {
        let model = dir.join(case);
        assert!(
            model.exists(),
            "missing {}: run tests/bad_models/generate.py",
            model.display()
        );
        let m = model.to_string_lossy();
        let o = out_dir.to_string_lossy();
        check_rejected(
            case,
            "run",
            &kiln(&["run", &m, "--output-dir", &o]),
            fragments,
        );
        check_rejected(case, "inspect", &kiln(&["inspect", &m]), fragments);
        let c_dir = out_dir.join("c");
        let c = c_dir.to_string_lossy();
        check_rejected(
            case,
            "compile",
            &kiln(&["compile", &m, "-o", &c]),
            fragments,
        );
        check_rejected(
            case,
            "verify",
            &kiln(&["verify", &m, "--target", "cortex-m4", "--output-dir", &o]),
            fragments,
        );
        let leftovers = std::fs::read_dir(&out_dir).map(|d| d.count()).unwrap_or(0);
        assert_eq!(
            leftovers, 0,
            "run {case} left files in the output directory"
        );
    }
}

#[test]
fn inspect_lists_every_unsupported_op_at_once() {
    let model = common::repo_root().join("tests/bad_models/unknown_op.onnx");
    let out = kiln(&["inspect", &model.to_string_lossy(), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON");
    assert_eq!(doc["supported"], false);
    let problems: Vec<String> = doc["problems"]
        .as_array()
        .expect("problems list")
        .iter()
        .map(|p| p.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("FancyNewOp")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| p.contains("Det")), "{problems:?}");
}

#[test]
fn wrong_input_file_is_rejected() {
    let root = common::repo_root();
    let model = root.join("tests/models/digits_mlp/model.onnx");
    let out_dir = tempdir("wrong_input");
    let bad_npy = out_dir.join("bad.npy");
    std::fs::write(&bad_npy, b"\x93NUMPY\x01\x00garbage").expect("write temp file");
    let wrong_shape = root.join("tests/models/digits_cnn/input_0.npy");
    for (input, fragment) in [
        (bad_npy.to_string_lossy().to_string(), "cannot parse input"),
        (
            wrong_shape.to_string_lossy().to_string(),
            "expects f32[1,64]",
        ),
        (
            "nosuchinput=x.npy".to_string(),
            "has no input 'nosuchinput'",
        ),
    ] {
        let result_dir = out_dir.join("out");
        let out = kiln(&[
            "run",
            &model.to_string_lossy(),
            "--input",
            &input,
            "--output-dir",
            &result_dir.to_string_lossy(),
        ]);
        check_rejected("digits_mlp", "run", &out, &[fragment]);
        assert!(
            !result_dir.exists(),
            "failed run created its output directory"
        );
    }
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    assert!(Path::new(&dir).is_dir());
    dir
}
