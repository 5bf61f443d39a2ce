//! `kiln verify` on emulated boards (QEMU): every model in `tests/models/` on cortex-m4,
//! cortex-m55 and rv32imac, checked by kiln against the interpreter and here against
//! onnxruntime's reference outputs; small models on the 16 KB sifive_e; deterministic
//! instruction counts; and the error for a model that does not fit.
//!
//! Needs the cross toolchains and QEMU that `scripts/setup-toolchains.sh` installs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running kiln: {e}"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-boards-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `kiln verify --json` on the model's reference input and returns the JSON object and the
/// directory holding the board's outputs.
fn verify(
    dir: &Path,
    target: &str,
    board: Option<&str>,
    extra: &[&str],
) -> (serde_json::Value, PathBuf) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out_dir = scratch(&format!("{name}-{target}-{}", board.unwrap_or("default")));
    let model = dir.join("model.onnx");
    let input = dir.join("input_0.npy");
    let mut args = vec![
        "verify".to_string(),
        model.to_string_lossy().into_owned(),
        "--target".into(),
        target.into(),
        "--input".into(),
        input.to_string_lossy().into_owned(),
        "--output-dir".into(),
        out_dir.to_string_lossy().into_owned(),
        "--json".into(),
    ];
    if let Some(b) = board {
        args.extend(["--board".into(), b.into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kiln(&argv);
    assert!(
        out.status.success(),
        "kiln verify {name} --target {target}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("verify --json prints JSON");
    (doc, out_dir)
}

/// The board's output agrees with onnxruntime's reference within the model tests' tolerance.
fn check_against_reference(model_dir: &Path, out_dir: &Path) {
    let got_path = std::fs::read_dir(out_dir)
        .expect("verify wrote outputs")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with("_0.npy"))
        .expect("output 0");
    let got = common::read_npy(&got_path);
    let want = common::read_npy(&model_dir.join("output_0.npy"));
    let (err, magnitude) = common::max_abs_diff(&got, &want);
    assert!(
        err <= 1e-4 * magnitude.max(1.0),
        "{}: board output differs from onnxruntime by {err} (magnitude {magnitude})",
        model_dir.display()
    );
    let _ = std::fs::remove_dir_all(out_dir);
}

fn check_fields(doc: &serde_json::Value) {
    assert_eq!(doc["passed"], true, "{doc}");
    for field in [
        "max_abs_error",
        "flash_bytes",
        "ram_bytes",
        "arena_bytes",
        "instructions",
    ] {
        assert!(doc[field].is_number(), "{field} missing in {doc}");
    }
    let flash = doc["flash_bytes"].as_u64().unwrap_or(0);
    let ram = doc["ram_bytes"].as_u64().unwrap_or(0);
    let arena = doc["arena_bytes"].as_u64().unwrap_or(0);
    assert!(
        flash > 0 && flash <= doc["board_flash_bytes"].as_u64().unwrap_or(0),
        "{doc}"
    );
    assert!(
        ram >= arena && ram <= doc["board_ram_bytes"].as_u64().unwrap_or(0),
        "{doc}"
    );
    assert!(doc["stack_bytes"].as_u64().unwrap_or(0) > 0, "{doc}");
    assert!(doc["instructions"].as_u64().unwrap_or(0) > 1000, "{doc}");
}

fn all_models_on(target: &str) {
    for dir in common::repo_models() {
        let (doc, out_dir) = verify(&dir, target, None, &[]);
        check_fields(&doc);
        check_against_reference(&dir, &out_dir);
    }
}

#[test]
fn every_model_runs_on_cortex_m4() {
    all_models_on("cortex-m4");
}

#[test]
fn every_model_runs_on_cortex_m55() {
    all_models_on("cortex-m55");
}

#[test]
fn every_model_runs_on_rv32imac() {
    all_models_on("rv32imac");
}

#[test]
fn small_models_run_on_the_16k_hifive1() {
    for name in ["digits_mlp", "digits_cnn"] {
        let dir = common::repo_root().join("tests/models").join(name);
        let (doc, out_dir) = verify(&dir, "rv32imac", Some("sifive_e"), &[]);
        check_fields(&doc);
        assert!(doc["ram_bytes"].as_u64().unwrap_or(u64::MAX) <= 16 * 1024);
        check_against_reference(&dir, &out_dir);
    }
}

#[test]
fn instruction_counts_are_deterministic_and_follow_the_code() {
    let dir = common::repo_root().join("tests/models/digits_cnn");
    let (a, _) = verify(&dir, "cortex-m4", None, &[]);
    let (b, _) = verify(&dir, "cortex-m4", None, &[]);
    assert_eq!(a["instructions"], b["instructions"]);
    // A different schedule executes a different number of instructions: the count measures
    // the inference, not a constant. (-O2 tiles by 4 by default; 1 turns tiling off.)
    let (untiled, _) = verify(&dir, "cortex-m4", None, &["--oc-tile", "1"]);
    assert_ne!(a["instructions"], untiled["instructions"]);
    // Soft float on the Cortex-M3 costs several times the Cortex-M4's FPU instructions.
    let (m3, _) = verify(&dir, "cortex-m3", None, &[]);
    let m4 = a["instructions"].as_u64().unwrap_or(0);
    assert!(
        m3["instructions"].as_u64().unwrap_or(0) > 3 * m4,
        "{m3} vs {a}"
    );
}

#[test]
fn a_model_too_large_for_the_board_is_refused_with_sizes() {
    let model = common::repo_root().join("tests/models/resnet8_cifar/model.onnx");
    let out = kiln(&["verify", &model.to_string_lossy(), "--target", "cortex-m0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{err}"
    );
    for needle in [
        "does not fit board 'microbit'",
        "of RAM",
        "the board has 16384 bytes",
        "of flash",
        "the board has 262144 bytes",
    ] {
        assert!(err.contains(needle), "missing '{needle}' in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unknown_targets_and_boards_are_named() {
    let model = common::repo_root().join("tests/models/digits_mlp/model.onnx");
    let out = kiln(&["verify", &model.to_string_lossy(), "--target", "cortex-m99"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown target 'cortex-m99'") && err.contains("cortex-m4"),
        "{err}"
    );
    let out = kiln(&[
        "verify",
        &model.to_string_lossy(),
        "--target",
        "cortex-m4",
        "--board",
        "sifive_e",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no board 'sifive_e'") && err.contains("mps2-an386"),
        "{err}"
    );
}

#[test]
fn a_run_over_its_time_limit_is_stopped_with_a_clear_error() {
    let model = common::repo_root().join("tests/models/resnet8_cifar/model.onnx");
    let started = std::time::Instant::now();
    let out = kiln(&[
        "verify",
        &model.to_string_lossy(),
        "--target",
        "cortex-m3",
        "--timeout",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not finish within 0 s") && err.contains("--timeout"),
        "{err}"
    );
    assert!(started.elapsed().as_secs() < 60, "the run was not stopped");
}

/// `--keep-dir` with a relative path keeps the build there (the compilers run inside the build
/// directory, so the path once resolved twice and the link failed).
#[test]
fn keep_dir_may_be_relative() {
    let cwd = scratch("relative-keep-dir");
    std::fs::create_dir_all(&cwd).expect("scratch dir");
    let model = common::repo_root().join("tests/models/digits_cnn/model.onnx");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(&cwd)
        .args(["verify", &model.to_string_lossy(), "--target", "cortex-m4"])
        .args(["--keep-dir", "kept"])
        .output()
        .expect("running kiln");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cwd.join("kept/prog.elf").is_file());
    assert!(cwd.join("kept/model.c").is_file());
    let _ = std::fs::remove_dir_all(&cwd);
}
