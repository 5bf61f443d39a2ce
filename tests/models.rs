//! Real models through `kiln run`, compared with onnxruntime's outputs; IR dumps as snapshots.
//!
//! Walks `tests/models/*/` (made by `tests/models/generate.py`) and, when the shared MLPerf Tiny
//! models are beside the repository, their float variants too.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Max abs error allowed, relative to the largest reference magnitude (at least 1).
const REL_TOL: f32 = 1e-4;

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (0..)
        .map(|i| dir.join(format!("{prefix}_{i}.npy")))
        .take_while(|p| p.exists())
        .collect()
}

/// Runs `kiln run` on the model with its stored inputs; checks every output against the
/// reference. Returns the worst relative error.
fn check_model(dir: &Path) -> Result<f32, String> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out_dir = std::env::temp_dir().join(format!("kiln-models-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("run")
        .arg(dir.join("model.onnx"))
        .arg("--json")
        .arg("--output-dir")
        .arg(&out_dir);
    for input in numbered(dir, "input") {
        cmd.arg("--input").arg(input);
    }
    // Extra arguments a case needs (e.g. --input-shape for symbolic dims), one per line.
    if let Ok(extra) = std::fs::read_to_string(dir.join("kiln_args")) {
        cmd.args(extra.lines().filter(|l| !l.is_empty()));
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let outputs = doc["outputs"].as_array().cloned().unwrap_or_default();
    let references = numbered(dir, "output");
    if outputs.len() != references.len() || references.is_empty() {
        return Err(format!(
            "{} outputs, {} references",
            outputs.len(),
            references.len()
        ));
    }
    let mut worst = 0.0f32;
    for (o, reference) in outputs.iter().zip(&references) {
        let got = common::read_npy(Path::new(o["file"].as_str().unwrap_or_default()));
        let want = common::read_npy(reference);
        if got.shape() != want.shape() {
            return Err(format!("shape {:?} != {:?}", got.shape(), want.shape()));
        }
        let (diff, magnitude) = common::max_abs_diff(&got, &want);
        let rel = diff / magnitude.max(1.0);
        if rel.is_nan() || rel >= REL_TOL {
            return Err(format!(
                "max abs error {diff} (reference magnitude {magnitude})"
            ));
        }
        worst = worst.max(rel);
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    Ok(worst)
}

/// Checks every model, printing each result, and fails listing all that do not match.
fn check_all(dirs: &[PathBuf]) {
    let mut failures = Vec::new();
    for dir in dirs {
        match check_model(dir) {
            Ok(err) => println!("{}: ok (max rel error {err:.2e})", dir.display()),
            Err(e) => failures.push(format!("{}: {e}", dir.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "models that do not match:\n{}",
        failures.join("\n")
    );
}

#[test]
fn repo_models_match_onnxruntime() {
    let dirs = common::model_dirs(&common::repo_root().join("tests/models"));
    assert!(dirs.len() >= 7, "tests/models has {} models", dirs.len());
    check_all(&dirs);
}

/// Frontend features (local functions, weights listed as inputs, typed-field initializers,
/// Constant nodes, symbolic dims, older opsets) in `tests/frontend_models/`.
#[test]
fn frontend_feature_models_match_onnxruntime() {
    let dirs = common::model_dirs(&common::repo_root().join("tests/frontend_models"));
    assert!(dirs.len() >= 3);
    check_all(&dirs);
}

#[test]
fn shared_mlperf_tiny_float_models_match_onnxruntime() {
    let Some(root) = common::shared_models_dir() else {
        println!("SKIPPED: ../shared/models/mlcommons_tiny_onnx is absent (it is not part of a user's clone)");
        return;
    };
    // The float models: f32 ones and the hybrid KWS (float I/O, int8 weights dequantized).
    let dirs: Vec<PathBuf> = common::model_dirs(&root)
        .into_iter()
        .filter(|d| !d.to_string_lossy().ends_with("_int8"))
        .collect();
    assert!(
        dirs.len() >= 4,
        "expected the float MLPerf Tiny models in {}",
        root.display()
    );
    check_all(&dirs);
}

#[test]
fn ir_dumps_are_stable() {
    for dir in common::model_dirs(&common::repo_root().join("tests/models")) {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(dir.join("model.onnx")).expect("read model");
        let model = kiln_frontend::import_model(&bytes, &Default::default()).expect("import");
        kiln_ir::verify::verify(&model.graph).expect("verifies");
        let dump = kiln_ir::dump::to_text(&model.graph);
        // Semantic check beside the snapshot: every node appears once.
        assert_eq!(dump.matches("  # ").count(), model.graph.node_count());
        insta::assert_snapshot!(format!("ir_{name}"), dump);
    }
}

/// The digits classifiers give onnxruntime's test-split accuracy (recorded by the generator)
/// when run through kiln's interpreter over the whole held-out split.
#[test]
fn digits_classifiers_keep_their_accuracy() {
    let root = common::repo_root().join("tests/models");
    let xs = common::read_npy(&root.join("data/digits_test_x.npy"));
    let ys = common::read_npy(&root.join("data/digits_test_y.npy"));
    let labels = ys.to_i64_vec().expect("int64 labels");
    let pixels = xs.as_f32().expect("f32 pixels");
    for name in ["digits_mlp", "digits_cnn"] {
        let info: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join(name).join("info.json")).expect("info.json"),
        )
        .expect("json");
        let bytes = std::fs::read(root.join(name).join("model.onnx")).expect("read model");
        let graph = kiln_frontend::import_model(&bytes, &Default::default())
            .expect("import")
            .graph;
        let in_shape = graph.value(graph.inputs()[0]).ty.shape.clone();
        let mut correct = 0;
        for (i, &label) in labels.iter().enumerate() {
            let x =
                kiln_ir::Tensor::from_f32(in_shape.clone(), pixels[i * 64..(i + 1) * 64].to_vec())
                    .expect("tensor");
            let y = kiln_ir::interp::run(&graph, &[x]).expect("run");
            let logits = y[0].as_f32().expect("f32 logits");
            let best = (0..logits.len()).fold(0, |b, j| if logits[j] > logits[b] { j } else { b });
            correct += usize::from(best as i64 == label);
        }
        let accuracy = correct as f64 / labels.len() as f64;
        let reference = info["test_accuracy"]
            .as_f64()
            .expect("test_accuracy in info.json");
        println!("{name}: kiln accuracy {accuracy:.4}, onnxruntime {reference:.4}");
        assert!(
            (accuracy - reference).abs() < 1e-4,
            "{name}: {accuracy} vs {reference}"
        );
        assert!(accuracy > 0.9);
    }
}
