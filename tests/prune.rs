//! Structured pruning as users run it: exact pruning at -O2 removes every zeroed channel of
//! `tests/models/pruning/resnet_zeroed` (made by `models/generate.py`) and keeps onnxruntime's
//! outputs within 1e-6; `--prune channels=0.25` cuts ResNet-8's and MobileNetV1's MACs by at
//! least 35%, verifies on cortex-m4, and its `--emit onnx` export runs under onnxruntime with
//! `kiln run`'s outputs; the trained digits CNN pruned at 0.25 and repaired on its calibration
//! split keeps its top-1 within 2 points on the held-out split.
//!
//! `prune/ort_run.py` runs exported models under onnxruntime (after `onnx.checker`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_ir::{Graph, Op};
use kiln_passes::{optimize, OptLevel, PassOptions};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running kiln: {e}"))
}

/// Runs kiln, failing with its stderr, and returns its stdout.
fn kiln_ok(args: &[&str]) -> Vec<u8> {
    let out = kiln(args);
    assert!(
        out.status.success(),
        "kiln {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn kiln_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&kiln_ok(args)).expect("JSON on stdout")
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn models() -> PathBuf {
    common::repo_root().join("tests/models")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-prune-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn import(dir: &Path) -> Graph {
    let bytes = std::fs::read(dir.join("model.onnx")).expect("model");
    kiln_frontend::import_model(&bytes, &Default::default())
        .expect("import")
        .graph
}

fn optimized(g: &Graph, level: OptLevel) -> Graph {
    let mut g = g.clone();
    let options = PassOptions {
        level,
        ..Default::default()
    };
    optimize(&mut g, &options).expect("optimize");
    g
}

/// Each Conv's name and weights (`[out][in * taps]`), in topological order.
fn conv_weights(g: &Graph) -> BTreeMap<String, (usize, Vec<f32>)> {
    let mut out = BTreeMap::new();
    for id in g.topo_order().expect("topo order") {
        let node = g.node(id);
        if !matches!(node.op, Op::Conv { .. }) {
            continue;
        }
        let w = g
            .value(node.inputs[1])
            .const_tensor()
            .expect("constant weights");
        let data = w.as_f32().expect("f32 weights").to_vec();
        out.insert(node.name.clone(), (w.shape()[0], data));
    }
    out
}

/// The output channels of `data` (`outs` rows) whose weights are all zero.
fn zero_rows(outs: usize, data: &[f32]) -> Vec<usize> {
    let n = data.len() / outs;
    (0..outs)
        .filter(|&o| data[o * n..(o + 1) * n].iter().all(|&w| w == 0.0))
        .collect()
}

/// ONNX node name of a layer of `generate.py`'s `resnet_zeroed` (`block1.conv1` ->
/// `/block1/conv1/conv/Conv`).
fn conv_node(layer: &str) -> String {
    format!("/{}/conv/Conv", layer.replace('.', "/"))
}

/// `zeroed_channels` (or another table of that shape) from the model's info.json.
fn zeroed(info: &serde_json::Value, key: &str) -> BTreeMap<String, Vec<usize>> {
    let table = info[key].as_object().expect("channel table in info.json");
    table
        .iter()
        .map(|(layer, chans)| {
            let chans = chans
                .as_array()
                .expect("channel list")
                .iter()
                .map(|c| c.as_u64().expect("channel") as usize)
                .collect();
            (conv_node(layer), chans)
        })
        .collect()
}

/// Exact pruning (-O2) removes every zeroed channel (and the expand channel whose only reader,
/// the depthwise conv, weighs it by zeros), keeps the zeroed channel it cannot prove constant
/// through padding, changes nothing at -O1, and keeps onnxruntime's outputs within 1e-6,
/// through the interpreter and `kiln run` (C backend).
#[test]
fn exact_pruning_removes_every_zeroed_channel() {
    let dir = models().join("pruning/resnet_zeroed");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("info.json")).expect("info.json"))
            .expect("info.json parses");
    let zeroed_chans = zeroed(&info, "zeroed_channels");
    let kept_chans = zeroed(&info, "zeroed_channels_kept");
    let g = import(&dir);
    let before = conv_weights(&g);

    // The model is what info.json says: exactly those output channels are all-zero.
    for (name, (outs, w)) in &before {
        let mut want: Vec<usize> = zeroed_chans.get(name).cloned().unwrap_or_default();
        want.extend(kept_chans.get(name).cloned().unwrap_or_default());
        want.sort();
        assert_eq!(&zero_rows(*outs, w), &want, "{name}: zeroed channels");
    }

    // -O1 removes nothing.
    let o1 = conv_weights(&optimized(&g, OptLevel::O1));
    for (name, (outs, _)) in &before {
        assert_eq!(o1[name].0, *outs, "{name} lost channels at -O1");
    }

    let o2g = optimized(&g, OptLevel::O2);
    kiln_ir::verify::verify(&o2g).expect("the pruned graph verifies");
    let o2 = conv_weights(&o2g);
    let mut removed_total = 0;
    for (name, (outs, _)) in &before {
        let mut want = zeroed_chans.get(name).map_or(0, Vec::len);
        // The depthwise conv's zeroed channels take the expand conv's along: a zeroed depthwise
        // channel ignores its input, and the expand conv's zeroed channel is its input.
        if name == &conv_node("block2.expand") {
            let mut both = zeroed_chans[name].clone();
            both.extend(&zeroed_chans[&conv_node("block2.dw")]);
            both.sort();
            both.dedup();
            want = both.len();
        }
        let after = o2.get(name).map(|c| c.0);
        assert_eq!(
            after,
            Some(outs - want),
            "{name}: {outs} channels, {want} removable"
        );
        removed_total += want;
    }
    // The only all-zero channel left is the one read through padding as a non-zero constant.
    let left: Vec<(String, usize)> = o2
        .iter()
        .flat_map(|(name, (outs, w))| zero_rows(*outs, w).into_iter().map(|c| (name.clone(), c)))
        .collect();
    let kept_layer = conv_node("block1.conv1");
    assert_eq!(left.len(), 1, "all-zero channels left at -O2: {left:?}");
    assert_eq!(left[0].0, kept_layer);
    println!("exact pruning removed {removed_total} output channels; kept {left:?}");

    let x = common::read_npy(&dir.join("input_0.npy"));
    let want = common::read_npy(&dir.join("output_0.npy"));
    let got = kiln_ir::interp::run(&o2g, std::slice::from_ref(&x)).expect("interpreter");
    let (err, _) = common::max_abs_diff(&got[0], &want);
    println!("interpreter -O2 vs onnxruntime: {err:.2e}");
    assert!(err <= 1e-6, "interpreter -O2 vs onnxruntime: {err}");

    let out = scratch("zeroed-c");
    kiln_ok(&[
        "run",
        &s(&dir.join("model.onnx")),
        "-O2",
        "--backend",
        "c",
        "--input",
        &s(&dir.join("input_0.npy")),
        "--output-dir",
        &s(&out),
    ]);
    let got = common::read_npy(&out.join("output.npy"));
    let (err, _) = common::max_abs_diff(&got, &want);
    println!("kiln run -O2 --backend c vs onnxruntime: {err:.2e}");
    assert!(err <= 1e-6, "C -O2 vs onnxruntime: {err}");
    let _ = std::fs::remove_dir_all(&out);
}

/// The figures `kiln compile --report json` gives for a pruned build.
fn pruned_macs(model: &Path, out: &Path, prune: &[&str]) -> (u64, u64) {
    let mut args = vec!["compile", "--report", "json", "-o"];
    let out_s = s(out);
    args.push(&out_s);
    let model_s = s(model);
    args.push(&model_s);
    args.extend(prune);
    kiln_ok(&args);
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("model.report.json")).expect("report written"),
    )
    .expect("report parses");
    let p = &report["pruning"];
    (
        p["before"]["macs"].as_u64().expect("MACs before"),
        p["after"]["macs"].as_u64().expect("MACs after"),
    )
}

/// `--prune channels=0.25` on ResNet-8 and MobileNetV1 (VWW, alpha 0.25): MACs down by at least
/// 35%; the build verifies on cortex-m4 against the interpreter on the pruned graph; the
/// `--emit onnx` export of the pruned graph gives `kiln run`'s outputs under onnxruntime.
#[test]
fn magnitude_pruning_cuts_macs_verifies_and_exports() {
    const PRUNE: [&str; 2] = ["--prune", "channels=0.25"];
    for name in ["resnet8_cifar", "vww_mobilenet_v1_025"] {
        let dir = models().join(name);
        let model = dir.join("model.onnx");
        let input = dir.join("input_0.npy");
        let work = scratch(name);

        let (before, after) = pruned_macs(&model, &work.join("c"), &PRUNE);
        let cut = 1.0 - after as f64 / before as f64;
        println!(
            "{name}: MACs {before} -> {after} ({:.1}% fewer)",
            100.0 * cut
        );
        assert!(cut >= 0.35, "{name}: MACs cut by {:.1}%", 100.0 * cut);

        let mut args = vec![
            "verify".to_string(),
            s(&model),
            "--target".into(),
            "cortex-m4".into(),
            "--input".into(),
            s(&input),
            "--json".into(),
        ];
        args.extend(PRUNE.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let doc = kiln_json(&argv);
        println!(
            "{name}: cortex-m4 {}, max abs error {}, {} instructions",
            doc["passed"], doc["max_abs_error"], doc["instructions"]
        );
        assert_eq!(doc["passed"], true, "{name}: {doc}");

        let onnx_dir = work.join("onnx");
        let mut args = vec![
            "compile".to_string(),
            s(&model),
            "--emit".into(),
            "onnx".into(),
            "-o".into(),
            s(&onnx_dir),
        ];
        args.extend(PRUNE.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        kiln_ok(&argv);
        let ort_out = work.join("ort.npy");
        let status = Command::new(common::python())
            .arg(common::repo_root().join("tests/prune/ort_run.py"))
            .arg(onnx_dir.join("model.onnx"))
            .arg(&input)
            .arg(&ort_out)
            .status()
            .expect("running ort_run.py");
        assert!(status.success(), "{name}: onnxruntime on the export failed");

        let run_dir = work.join("run");
        let mut args = vec![
            "run".to_string(),
            s(&model),
            "--input".into(),
            s(&input),
            "--output-dir".into(),
            s(&run_dir),
        ];
        args.extend(PRUNE.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        kiln_ok(&argv);
        let got = common::read_npy(&ort_out);
        let want = common::read_npy(&run_dir.join("output.npy"));
        let (err, mag) = common::max_abs_diff(&got, &want);
        println!("{name}: export under onnxruntime vs kiln run: {err:.2e} (magnitude {mag:.3})");
        assert!(
            err <= 1e-5 * mag.max(1.0),
            "{name}: export under onnxruntime differs from kiln run by {err}"
        );
        // The pruned model computes something else than the original: the comparison above is
        // between two pruned runs, not two copies of the original.
        let original = common::read_npy(&dir.join("output_0.npy"));
        let (orig_err, _) = common::max_abs_diff(&want, &original);
        assert!(orig_err > 1e-5, "{name}: pruning changed nothing");
        let _ = std::fs::remove_dir_all(&work);
    }
}

fn digits(file: &str) -> String {
    s(&models().join("data").join(file))
}

/// Top-1 of the digits CNN on its held-out split (`kiln eval --json`) with these extra flags.
fn digits_top1(extra: &[&str]) -> f64 {
    let model = s(&models().join("digits_cnn/model.onnx"));
    let (x, y) = (digits("digits_test_x.npy"), digits("digits_test_y.npy"));
    let mut args = vec!["eval", &model, "--data", &x, "--labels", &y, "--json"];
    args.extend(extra);
    let doc = kiln_json(&args);
    assert_eq!(doc["samples"], 450);
    doc["top1"].as_f64().expect("top1")
}

/// The trained digits CNN pruned at 0.25 and repaired on its calibration split loses at most 2
/// points of top-1 on the held-out split; repair is what keeps it (without it the model loses
/// more). Its int8 build is measured against the pruned float model: `float_top1` is the pruned
/// float build's top-1, not the unpruned model's.
#[test]
fn repaired_digits_cnn_keeps_its_accuracy() {
    let calib = digits("digits_calib_x.npy");
    let base = digits_top1(&[]);
    let prune = ["--prune", "channels=0.25", "--calibrate", &calib];
    let repaired = digits_top1(&prune);
    let plain = digits_top1(&["--prune", "channels=0.25"]);
    println!(
        "digits_cnn top-1: {:.2}%, pruned 0.25: {:.2}%, repaired: {:.2}%",
        100.0 * base,
        100.0 * plain,
        100.0 * repaired
    );
    assert!(base > 0.95, "the float model's top-1 is {base}");
    assert!(
        repaired >= base - 0.02,
        "repaired top-1 {repaired} vs {base}"
    );
    assert!(
        repaired > plain,
        "repair did not help: {repaired} vs {plain} without it"
    );

    let model = s(&models().join("digits_cnn/model.onnx"));
    let (x, y) = (digits("digits_test_x.npy"), digits("digits_test_y.npy"));
    let mut args = vec![
        "eval",
        &model,
        "--data",
        &x,
        "--labels",
        &y,
        "--json",
        "--quantize",
        "int8",
    ];
    args.extend(prune);
    let doc = kiln_json(&args);
    let (top1, float) = (
        doc["top1"].as_f64().expect("top1"),
        doc["float_top1"].as_f64().expect("float_top1"),
    );
    println!(
        "digits_cnn pruned 0.25 + repair: float {:.2}%, int8 {:.2}%",
        100.0 * float,
        100.0 * top1
    );
    assert_eq!(
        float, repaired,
        "the float reference is not the pruned model"
    );
    assert!(top1 >= float - 0.01, "int8 {top1} vs pruned float {float}");
}

/// Near misses (`prune/make_cases.py`, written into `target/prune-cases/`): a zeroed channel
/// beside what may or may not let it go. At -O2 the layer keeps what the manifest says and the
/// outputs stay within 1e-6 of onnxruntime's; magnitude pruning at 0.5 never touches a pinned
/// layer, leaves a graph that verifies, and its ONNX export gives the interpreter's outputs
/// under onnxruntime.
#[test]
fn near_misses_prune_only_what_is_proven() {
    let root = common::repo_root();
    let cases = root.join("target/prune-cases");
    let status = Command::new(common::python())
        .arg(root.join("tests/prune/make_cases.py"))
        .arg(&cases)
        .status()
        .expect("running make_cases.py");
    assert!(status.success(), "make_cases.py failed");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cases.join("manifest.json")).expect("manifest"),
    )
    .expect("manifest parses");
    let manifest = manifest.as_object().expect("manifest object");
    assert!(manifest.len() >= 15, "{} cases", manifest.len());

    let out_channels = |g: &Graph, name: &str| -> usize {
        let id = g
            .node_ids()
            .into_iter()
            .find(|&n| g.node(n).name == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        g.value(g.node(id).outputs[0]).ty.shape[1]
    };
    let work = scratch("near-misses");
    let mut ort_args = Vec::new();
    let mut pruned_outputs = Vec::new();
    let mut failures = Vec::new();
    for (case, want) in manifest {
        let dir = cases.join(case);
        let layer = want["node"].as_str().expect("node");
        let why = want["why"].as_str().unwrap_or_default();
        let g = import(&dir);
        let before = out_channels(&g, layer);

        let o2 = optimized(&g, OptLevel::O2);
        let kept = out_channels(&o2, layer);
        if let Some(n) = want["o2"].as_u64() {
            if kept != n as usize {
                failures.push(format!(
                    "{case} ({why}): -O2 keeps {kept} channels, expected {n}"
                ));
            }
        }
        let x = common::read_npy(&dir.join("input_0.npy"));
        let got = kiln_ir::interp::run(&o2, std::slice::from_ref(&x)).expect("interpreter");
        for (i, t) in got.iter().enumerate() {
            let reference = common::read_npy(&dir.join(format!("output_{i}.npy")));
            if let Err(e) = common::compare(t, &reference, 1e-6, 1e-6) {
                failures.push(format!(
                    "{case} ({why}): -O2 output {i} vs onnxruntime: {e}"
                ));
            }
        }

        let mut pruned = o2.clone();
        let groups = kiln_passes::prune::analyze(&pruned).expect("analysis");
        if want["pinned"] == true {
            // The report says why: every channel of the layer is pinned with a reason.
            let id = pruned
                .node_ids()
                .into_iter()
                .find(|&n| pruned.node(n).name == layer)
                .expect("layer");
            let classes = groups.value_classes(pruned.node(id).outputs[0]);
            let reasons = classes.as_ref().map_or(0, |cs| {
                cs.iter()
                    .filter(|&&c| groups.classes[c].is_pinned())
                    .count()
            });
            if reasons != before {
                failures.push(format!(
                    "{case} ({why}): {reasons} of {before} channels carry a reason to stay"
                ));
            }
        }
        let options = kiln_passes::prune::magnitude::MagnitudeOptions {
            ratio: 0.5,
            ..Default::default()
        };
        let plan = kiln_passes::prune::magnitude::magnitude_plan(&pruned, &groups, &options)
            .expect("magnitude plan");
        kiln_passes::prune::apply(&mut pruned, &groups, &plan.removed, &Default::default())
            .unwrap_or_else(|e| panic!("{case}: pruning failed: {e}"));
        kiln_ir::verify::verify(&pruned).unwrap_or_else(|e| panic!("{case}: {e}"));
        let after = out_channels(&pruned, layer);
        if want["pinned"] == true && after != before {
            failures.push(format!(
                "{case} ({why}): pinned, but pruning left {after} of {before} channels"
            ));
        }
        let outs = kiln_ir::interp::run(&pruned, std::slice::from_ref(&x)).expect("interpreter");
        for (i, t) in outs.iter().enumerate() {
            if t.shape() != got[i].shape() {
                failures.push(format!("{case}: pruning changed output {i}'s shape"));
            }
        }
        let bytes = kiln_frontend::export_model(&pruned)
            .unwrap_or_else(|e| panic!("{case}: export failed: {e}"));
        let model = work.join(format!("{case}.onnx"));
        std::fs::write(&model, bytes).expect("write export");
        let ort_out = work.join(format!("{case}.ort.npy"));
        ort_args.extend([s(&model), s(&dir.join("input_0.npy")), s(&ort_out)]);
        pruned_outputs.push((
            case.clone(),
            ort_out,
            outs.into_iter().next().expect("output"),
        ));
    }
    let status = Command::new(common::python())
        .arg(root.join("tests/prune/ort_run.py"))
        .args(&ort_args)
        .status()
        .expect("running ort_run.py");
    assert!(status.success(), "onnxruntime on the exports failed");
    for (case, ort_out, want) in &pruned_outputs {
        let got = common::read_npy(ort_out);
        if let Err(e) = common::compare(&got, want, 1e-5, 1e-5) {
            failures.push(format!(
                "{case}: pruned export under onnxruntime vs interpreter: {e}"
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `--prune-round-to 4` keeps a multiple of 4 channels in every layer it prunes (the digits
/// CNN at 0.25 keeps its 8-channel stem, which 0.25 alone cuts to 6).
#[test]
fn round_to_keeps_multiples() {
    for (name, ratio) in [("digits_cnn", "0.25"), ("vww_mobilenet_v1_025", "0.3")] {
        let out = scratch(&format!("round-{name}"));
        let model = models().join(name).join("model.onnx");
        let spec = format!("channels={ratio}");
        let mut layers = Vec::new();
        for round in ["1", "4"] {
            pruned_macs(&model, &out, &["--prune", &spec, "--prune-round-to", round]);
            let report: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(out.join("model.report.json")).expect("report"),
            )
            .expect("report parses");
            let chans: Vec<(u64, u64)> = report["pruning"]["layers"]
                .as_array()
                .expect("layers")
                .iter()
                .filter_map(|l| {
                    Some((
                        l["before"]["channels"].as_u64()?,
                        l["after"]["channels"].as_u64()?,
                    ))
                })
                .collect();
            layers.push(chans);
        }
        let (plain, rounded) = (&layers[0], &layers[1]);
        assert!(
            plain.iter().any(|&(b, a)| a != b && a % 4 != 0),
            "{name}: the plain ratio already keeps multiples of 4: {plain:?}"
        );
        for &(before, after) in rounded {
            assert!(
                after == before || after % 4 == 0,
                "{name}: {before} -> {after} channels with --prune-round-to 4"
            );
        }
        assert!(
            rounded.iter().any(|&(b, a)| a < b),
            "{name}: nothing pruned"
        );
        let _ = std::fs::remove_dir_all(&out);
    }
}
