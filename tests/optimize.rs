//! The optimizer on real models: outputs before and after `kiln_passes::optimize` agree (through
//! the interpreter at O1 and O2, and through the generated C at O0 vs O2), and the O2 graph has
//! no BatchNormalization, Dropout, Identity, or cancelling Transpose pairs. Prints node counts.
//!
//! Walks `tests/models/*/`, `tests/frontend_models/*/` and, when present beside the repository,
//! the float MLPerf Tiny models (converted from TensorFlow, NHWC): those must also come out with
//! no Transpose between two convolutions.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_ir::{Graph, Op, Tensor};
use kiln_passes::{optimize, OptLevel, PassOptions};

/// Max abs error allowed, relative to the largest reference magnitude (at least 1).
const REL_TOL: f32 = 1e-4;

fn all_models() -> Vec<PathBuf> {
    let root = common::repo_root();
    let mut dirs = common::model_dirs(&root.join("tests/models"));
    dirs.extend(common::model_dirs(&root.join("tests/frontend_models")));
    dirs.extend(shared_float_models());
    dirs
}

fn shared_float_models() -> Vec<PathBuf> {
    match common::shared_models_dir() {
        Some(root) => common::model_dirs(&root)
            .into_iter()
            .filter(|d| !d.to_string_lossy().ends_with("_int8"))
            .collect(),
        None => {
            println!("SKIPPED shared models: ../shared/models/mlcommons_tiny_onnx is absent");
            Vec::new()
        }
    }
}

fn name_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Imports the model (honouring `--input-shape` lines in its `kiln_args`) and reads its inputs.
fn load(dir: &Path) -> (Graph, Vec<Tensor>) {
    let mut options = kiln_frontend::ImportOptions::default();
    if let Ok(extra) = std::fs::read_to_string(dir.join("kiln_args")) {
        let args: Vec<&str> = extra.lines().filter(|l| !l.is_empty()).collect();
        for pair in args.windows(2) {
            if pair[0] == "--input-shape" {
                if let Some((name, dims)) = pair[1].split_once('=') {
                    let dims = dims.split(',').map(|d| d.parse().expect("dim")).collect();
                    options.input_shapes.insert(name.to_string(), dims);
                }
            }
        }
    }
    let bytes = std::fs::read(dir.join("model.onnx")).expect("read model");
    let model = kiln_frontend::import_model(&bytes, &options).expect("import");
    let inputs = (0..)
        .map(|i| dir.join(format!("input_{i}.npy")))
        .take_while(|p| p.exists())
        .map(|p| common::read_npy(&p))
        .collect();
    (model.graph, inputs)
}

fn optimized(graph: &Graph, level: OptLevel) -> Result<Graph, String> {
    let mut g = graph.clone();
    let options = PassOptions {
        level,
        ..Default::default()
    };
    optimize(&mut g, &options).map_err(|e| e.to_string())?;
    kiln_ir::verify::verify(&g).map_err(|e| e.to_string())?;
    Ok(g)
}

fn same_outputs(got: &[Tensor], want: &[Tensor]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.ty() != w.ty() {
            return Err(format!("output {i}: {} != {}", g.ty(), w.ty()));
        }
        if w.as_f32().is_some() {
            let (diff, magnitude) = common::max_abs_diff(g, w);
            let rel = diff / magnitude.max(1.0);
            if rel.is_nan() || rel >= REL_TOL {
                return Err(format!(
                    "output {i}: max abs error {diff} (magnitude {magnitude})"
                ));
            }
        } else {
            common::compare(g, w, 0.0, 0.0).map_err(|e| format!("output {i}: {e}"))?;
        }
    }
    Ok(())
}

fn op_counts(g: &Graph) -> HashMap<&'static str, usize> {
    let mut counts = HashMap::new();
    for n in g.node_ids() {
        *counts.entry(g.node(n).op.name()).or_insert(0) += 1;
    }
    counts
}

/// Transposes whose input is a Transpose with the inverse permutation.
fn cancelling_transposes(g: &Graph) -> usize {
    g.node_ids()
        .into_iter()
        .filter(|&n| {
            let node = g.node(n);
            let Op::Transpose { perm } = &node.op else {
                return false;
            };
            let kiln_ir::ValueDef::Node { node: p, .. } = g.value(node.inputs[0]).def else {
                return false;
            };
            let Op::Transpose { perm: first } = &g.node(p).op else {
                return false;
            };
            perm.iter().enumerate().all(|(i, &a)| first[a] == i)
        })
        .count()
}

/// Transposes with a convolution both upstream and downstream of them.
fn transposes_between_convs(g: &Graph) -> Vec<String> {
    let is_conv = |op: &Op| matches!(op, Op::Conv { .. } | Op::ConvTranspose { .. });
    let order = g.topo_order().expect("acyclic");
    let n = order.iter().map(|id| id.index() + 1).max().unwrap_or(0);
    let mut conv_above = vec![false; n];
    for &id in &order {
        let node = g.node(id);
        let above = node.inputs.iter().any(|&v| match g.value(v).def {
            kiln_ir::ValueDef::Node { node: p, .. } => {
                conv_above[p.index()] || is_conv(&g.node(p).op)
            }
            _ => false,
        });
        conv_above[id.index()] = above;
    }
    let mut conv_below = vec![false; n];
    for &id in order.iter().rev() {
        let node = g.node(id);
        let below = node.outputs.iter().any(|&v| {
            g.consumers(v)
                .iter()
                .any(|&(c, _)| conv_below[c.index()] || is_conv(&g.node(c).op))
        });
        conv_below[id.index()] = below;
    }
    order
        .iter()
        .filter(|&&id| {
            matches!(g.node(id).op, Op::Transpose { .. })
                && conv_above[id.index()]
                && conv_below[id.index()]
        })
        .map(|&id| g.node(id).name.clone())
        .collect()
}

#[test]
fn optimized_models_match_the_interpreter() {
    let mut failures = Vec::new();
    for dir in all_models() {
        let name = name_of(&dir);
        let (graph, inputs) = load(&dir);
        let reference = kiln_ir::interp::run(&graph, &inputs).expect("reference run");
        let mut line = format!("{name}: {} nodes", graph.node_count());
        for level in [OptLevel::O1, OptLevel::O2] {
            let result = optimized(&graph, level).and_then(|g| {
                let got = kiln_ir::interp::run(&g, &inputs).map_err(|e| e.to_string())?;
                same_outputs(&got, &reference)?;
                Ok(g)
            });
            match result {
                Ok(g) => {
                    line.push_str(&format!(", {level:?} {}", g.node_count()));
                    if level == OptLevel::O2 {
                        let counts = op_counts(&g);
                        for op in ["BatchNormalization", "Dropout", "Identity"] {
                            if counts.contains_key(op) {
                                failures.push(format!("{name}: {op} left at O2"));
                            }
                        }
                        if cancelling_transposes(&g) > 0 {
                            failures.push(format!("{name}: cancelling Transpose pair left at O2"));
                        }
                        let transposes = counts.get("Transpose").copied().unwrap_or(0);
                        line.push_str(&format!(" ({transposes} Transpose)"));
                    }
                }
                Err(e) => failures.push(format!("{name} at {level:?}: {e}")),
            }
        }
        println!("{line}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tensorflow_models_have_no_transpose_between_convs() {
    let mut failures = Vec::new();
    for dir in shared_float_models() {
        let (graph, _) = load(&dir);
        let g = optimized(&graph, OptLevel::O2).expect("optimize");
        let left = transposes_between_convs(&g);
        println!("{}: {} Transpose between convs", name_of(&dir), left.len());
        if !left.is_empty() {
            failures.push(format!("{}: {}", name_of(&dir), left.join(", ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn c_backend_agrees_at_o0_and_o2() {
    let mut failures = Vec::new();
    for dir in all_models() {
        let name = name_of(&dir);
        let (graph, inputs) = load(&dir);
        let run = |g: &Graph| {
            kiln_backends::host::run_c(g, &inputs, &Default::default(), &Default::default())
                .map_err(|e| e.to_string())
        };
        let result = run(&graph).and_then(|o0| {
            let g = optimized(&graph, OptLevel::O2)?;
            let o2 = run(&g)?;
            same_outputs(&o2, &o0)
        });
        match result {
            Ok(()) => println!("{name}: C O0 == C O2"),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Prints every model's IR before and after O2 (`cargo test --test optimize -- --ignored
/// --nocapture dump`; set `KILN_DUMP_MODEL` to a model directory name to pick one).
#[test]
#[ignore = "prints dumps for inspection"]
fn dump_models_before_and_after_o2() {
    let pick = std::env::var("KILN_DUMP_MODEL").ok();
    for dir in all_models() {
        if pick.as_deref().is_some_and(|p| p != name_of(&dir)) {
            continue;
        }
        let (graph, _) = load(&dir);
        let g = optimized(&graph, OptLevel::O2).expect("optimize");
        println!("{}", kiln_ir::dump::to_text(&graph));
        println!("{}", kiln_ir::dump::to_text(&g));
    }
}
