//! `kiln compare` and `kiln profile` as users call them: compare's figures equal `kiln verify`'s
//! for the same (target, config) pairs, profile's layers sum to the whole inference within 2%,
//! the SVG and HTML reports are well-formed XML naming the model, targets and configs, and bad
//! input stops with a clear error.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("cannot run kiln")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kiln did not print JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

fn models() -> PathBuf {
    common::repo_root().join("tests/models")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("non-UTF-8 path")
}

fn scratch(name: &str) -> PathBuf {
    let dir = common::repo_root().join("target/compare-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create the scratch directory");
    dir
}

/// Parses `file` as XML with Python's expat and returns the text of every element.
fn xml_text(file: &Path) -> String {
    let script = "import sys, xml.etree.ElementTree as ET\n\
                  root = ET.parse(sys.argv[1]).getroot()\n\
                  print(root.tag)\n\
                  print(' '.join(t.strip() for t in root.itertext() if t.strip()))\n";
    let out = Command::new(common::python())
        .args(["-c", script, path(file)])
        .output()
        .expect("cannot run Python");
    assert!(
        out.status.success(),
        "{} is not well-formed XML: {}",
        file.display(),
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two targets x two configs of the digits CNN (float -O2 and int8), with the reports; then
/// `kiln verify` on two of the pairs must give the same figures.
#[test]
fn compare_matches_verify_and_writes_reports() {
    let dir = scratch("digits");
    let model = models().join("digits_cnn/model.onnx");
    let input = models().join("digits_cnn/input_0.npy");
    let calib = models().join("data/digits_calib_x.npy");
    let (svg, html) = (dir.join("chart.svg"), dir.join("report.html"));
    let out = kiln(&[
        "compare",
        path(&model),
        "--targets",
        "cortex-m4,rv32imac",
        "--configs",
        "O2,int8",
        "--calibrate",
        path(&calib),
        "--input",
        path(&input),
        "--format",
        "json",
        "--svg",
        path(&svg),
        "--html",
        path(&html),
    ]);
    assert!(
        out.status.success(),
        "kiln compare failed: {}",
        stderr(&out)
    );
    let doc = json(&out);
    assert_eq!(doc["schema"], "kiln-compare/1");
    let rows = doc["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 4);
    let row = |target: &str, config: &str| -> &Value {
        rows.iter()
            .find(|r| r["target"] == target && r["config"] == config)
            .unwrap_or_else(|| panic!("no row for {target} / {config}"))
    };
    for r in rows {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["fits"], true, "{r}");
        // The profile (--html implies --layers) sums to the pair's count within 2%.
        let layers = r["layers"].as_array().expect("layers");
        let sum: u64 = layers
            .iter()
            .map(|l| l["instructions"].as_u64().unwrap())
            .sum();
        let whole = r["instructions"].as_u64().unwrap();
        let ratio = sum as f64 / whole as f64;
        assert!(
            (ratio - 1.0).abs() <= 0.02,
            "{} / {}: layers {sum} against {whole}",
            r["target"],
            r["config"]
        );
    }
    let int8 = ["-O2", "--quantize", "int8", "--calibrate", path(&calib)];
    for (target, config, flags) in [
        ("cortex-m4", "O2", &["-O2"][..]),
        ("rv32imac", "int8", &int8[..]),
    ] {
        let mut args = vec![
            "verify",
            path(&model),
            "--target",
            target,
            "--input",
            path(&input),
            "--json",
        ];
        args.extend_from_slice(flags);
        let out = kiln(&args);
        assert!(out.status.success(), "kiln verify failed: {}", stderr(&out));
        let v = json(&out);
        let r = row(target, config);
        for (field, want) in [
            ("instructions", &v["instructions"]),
            ("flash_bytes", &v["flash_bytes"]),
            ("ram_bytes", &v["ram_bytes"]),
            ("arena_bytes", &v["arena_bytes"]),
            ("stack_bytes", &v["stack_bytes"]),
            ("code_bytes", &v["sections"]["text"]),
            ("rodata_bytes", &v["sections"]["rodata"]),
            ("check_passed", &v["passed"]),
            ("check_tolerance", &v["tolerance"]),
            ("board_flash_bytes", &v["board_flash_bytes"]),
        ] {
            assert_eq!(&r[field], want, "{target} / {config}: {field}");
        }
        let (a, b) = (
            r["check_max_abs_error"].as_f64().unwrap(),
            v["max_abs_error"].as_f64().unwrap(),
        );
        assert_eq!(a, b, "{target} / {config}: max error");
    }
    // The int8 rows carry their error against the float model; float rows their own check's.
    assert!(row("cortex-m4", "int8")["max_abs_error_vs_float"]
        .as_f64()
        .is_some());

    let text = xml_text(&svg);
    assert!(
        text.starts_with("{http://www.w3.org/2000/svg}svg"),
        "{text}"
    );
    for name in ["digits_cnn", "cortex-m4", "rv32imac", "O2", "int8", "flash"] {
        assert!(text.contains(name), "the SVG does not name {name}: {text}");
    }
    let text = xml_text(&html);
    assert!(
        text.starts_with("{http://www.w3.org/1999/xhtml}html"),
        "{text}"
    );
    for name in [
        "digits_cnn",
        "cortex-m4",
        "rv32imac",
        "Instructions per layer",
        "/conv2/Conv",
    ] {
        assert!(text.contains(name), "the page does not name {name}");
    }
    let page = std::fs::read_to_string(&html).unwrap();
    for external in ["<script", "src=\"http", "href=\"http", "<link"] {
        assert!(
            !page.contains(external),
            "the page is not self-contained: {external}"
        );
    }
}

/// `kiln profile`'s layers sum to `kiln verify`'s whole-inference count within 2%, float and
/// int8, and the text table names the costliest layer first.
#[test]
fn profile_layers_sum_to_the_whole_inference() {
    let model = models().join("kws_dscnn/model.onnx");
    let input = models().join("kws_dscnn/input_0.npy");
    for extra in [
        &[][..],
        &["--quantize", "int8", "--calibrate", path(&input)][..],
    ] {
        let mut args = vec![
            "profile",
            path(&model),
            "--target",
            "cortex-m4",
            "--input",
            path(&input),
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = kiln(&args);
        assert!(
            out.status.success(),
            "kiln profile failed: {}",
            stderr(&out)
        );
        let p = json(&out);
        let layers = p["layers"].as_array().expect("layers");
        assert!(layers.len() >= 10, "{p}");
        let sum: u64 = layers
            .iter()
            .map(|l| l["instructions"].as_u64().unwrap())
            .sum();
        assert_eq!(p["layers_instructions"].as_u64(), Some(sum));
        let mut args: Vec<&str> = vec!["verify", path(&model), "--target", "cortex-m4"];
        args.extend(["--input", path(&input), "--json"]);
        args.extend_from_slice(extra);
        let v = json(&kiln(&args));
        let whole = v["instructions"].as_u64().expect("instructions");
        assert_eq!(p["instructions"].as_u64(), Some(whole));
        let off = (sum as f64 / whole as f64 - 1.0).abs();
        eprintln!(
            "{extra:?}: layers {sum}, whole {whole}, {:.4}%",
            100.0 * off
        );
        assert!(off <= 0.02, "layers {sum} against {whole}");
        for l in layers {
            assert!(l["macs"].as_u64().is_some() && l["weight_bytes"].as_u64().is_some());
        }
    }
    let out = kiln(&[
        "profile",
        path(&model),
        "--target",
        "cortex-m4",
        "--input",
        path(&input),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let first = table.lines().nth(2).unwrap_or_default();
    assert!(first.contains("pw/Conv"), "costliest layer first:\n{table}");
    assert!(table.contains("whole inference:"), "{table}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let model = models().join("digits_cnn/model.onnx");
    let m = path(&model);
    for (args, message) in [
        (
            vec![
                "compare",
                m,
                "--targets",
                "cortex-m4,pentium",
                "--configs",
                "O2",
            ],
            "unknown target 'pentium'",
        ),
        (
            vec!["compare", m, "--targets", "cortex-m4", "--configs", "O2,O7"],
            "unknown configuration 'O7'",
        ),
        (
            vec![
                "compare",
                m,
                "--targets",
                "cortex-m4",
                "--configs",
                "x=--no-such-flag",
            ],
            "configuration 'x'",
        ),
        (
            vec!["compare", m, "--targets", "cortex-m4", "--configs", "int8"],
            "add --calibrate",
        ),
        (
            vec!["profile", m, "--target", "pentium"],
            "unknown target 'pentium'",
        ),
    ] {
        let out = kiln(&args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(message),
            "{args:?}: expected '{message}' in: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed a table");
    }
}
