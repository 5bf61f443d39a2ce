//! The ONNX backend node tests, run through one of kiln's engines (the reference interpreter,
//! or the generated C built for the host). Shared by the `conformance` and `conformance_c`
//! test targets.
//!
//! Generates the node tests from the case definitions in the `onnx` Python package (cached under
//! `target/onnx-node-tests/`), runs every case whose ops and element types are in kiln's op set,
//! and compares with the expected outputs: f32 with rtol 1e-3 / atol 1e-5, integers and bool
//! exactly. Prints `N passed, N failed, N skipped` and every failure. Fails when a failure is not
//! listed in `tests/conformance/KNOWN_FAILURES`, when a listed case passes (stale entry), or when
//! fewer than 97% of applicable cases pass.
//!
//! `cargo test --test conformance -- relu conv` runs only cases whose names contain a filter.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;

use crate::common;

use kiln_frontend::{FrontendError, ImportOptions};
use kiln_ir::Tensor;

const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-5;
const REQUIRED_PASS_RATE: f64 = 0.97;

enum Outcome {
    Pass,
    Fail(String),
    Skip,
}

/// Which engine runs the cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)] // each test target uses one engine
pub enum Engine {
    Interp,
    C,
    /// The generated C after `kiln_passes::optimize` at O2.
    COptimized,
    /// The generated C cross-compiled for Cortex-M4 and run on QEMU's mps2-an386, on one case
    /// per op (see [`one_case_per_op`]).
    CortexM4,
    /// The Cranelift backend's host JIT.
    Cranelift,
}

impl Engine {
    fn known_failures_file(self) -> &'static str {
        match self {
            Engine::Interp => "tests/conformance/KNOWN_FAILURES",
            // Refused at import, as for the host C engine.
            Engine::C | Engine::COptimized | Engine::CortexM4 | Engine::Cranelift => {
                "tests/conformance/KNOWN_FAILURES_C"
            }
        }
    }

    fn run(self, graph: &kiln_ir::Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        match self {
            Engine::Interp => kiln_ir::interp::run(graph, inputs).map_err(|e| e.to_string()),
            Engine::C => {
                kiln_backends::host::run_c(graph, inputs, &Default::default(), &Default::default())
                    .map_err(|e| e.to_string())
            }
            Engine::COptimized => {
                let mut graph = graph.clone();
                kiln_passes::optimize(&mut graph, &kiln_passes::PassOptions::default())
                    .map_err(|e| e.to_string())?;
                kiln_backends::host::run_c(&graph, inputs, &Default::default(), &Default::default())
                    .map_err(|e| e.to_string())
            }
            Engine::Cranelift => kiln_backends::cranelift::JitProgram::compile(
                graph,
                &kiln_backends::cranelift::CraneliftOptions::default(),
            )
            .and_then(|mut program| program.run(inputs))
            .map_err(|e| e.to_string()),
            Engine::CortexM4 => {
                let (target, board) =
                    kiln_targets::resolve("cortex-m4", None).map_err(|e| e.to_string())?;
                kiln_targets::run_on_board(
                    graph,
                    inputs,
                    &Default::default(),
                    target,
                    board,
                    &Default::default(),
                )
                .map(|run| run.outputs)
                .map_err(|e| e.to_string())
            }
        }
    }
}

/// The first supported case (by name, plain before `_expanded`) of each op not covered yet: at
/// least one case per op, as few cases as that takes.
fn one_case_per_op(cases: Vec<(String, &PathBuf)>) -> Vec<(String, &PathBuf)> {
    let mut ordered = cases;
    ordered.sort_by_key(|(name, _)| (name.contains("_expanded"), name.clone()));
    let mut covered = std::collections::BTreeSet::new();
    let mut chosen = Vec::new();
    for (name, case) in ordered {
        if case.join("NON_TENSOR_IO").exists() {
            continue;
        }
        let Some(survey) = std::fs::read(case.join("model.onnx"))
            .ok()
            .and_then(|b| kiln_frontend::survey(&b).ok())
        else {
            continue;
        };
        if !survey.is_supported() || survey.ops.is_subset(&covered) {
            continue;
        }
        covered.extend(survey.ops.iter().cloned());
        chosen.push((name, case));
    }
    println!(
        "{} cases cover {} ops: {}",
        chosen.len(),
        covered.len(),
        covered.iter().cloned().collect::<Vec<_>>().join(" ")
    );
    chosen.sort();
    chosen
}

pub fn main_for(engine: Engine) -> ExitCode {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let dir = match node_tests_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("conformance: cannot generate the ONNX node tests: {e}");
            return ExitCode::FAILURE;
        }
    };
    let known = known_failures(engine);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    cases.sort();
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut passing_known: Vec<String> = Vec::new();
    let selected: Vec<(String, &PathBuf)> = cases
        .iter()
        .map(|case| {
            (
                case.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                case,
            )
        })
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    let selected = if engine == Engine::CortexM4 {
        one_case_per_op(selected)
    } else {
        selected
    };
    // Cases are independent: spread them over the cores (the C engine spends its time in cc).
    let results: Mutex<Vec<(String, Outcome)>> = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((name, case)) = selected.get(i) else {
                    break;
                };
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run_case(case, engine)))
                    .unwrap_or_else(|_| Outcome::Fail("panicked".into()));
                if let Ok(mut r) = results.lock() {
                    r.push((name.clone(), outcome));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, outcome) in results {
        match outcome {
            Outcome::Pass => {
                passed += 1;
                if known.contains_key(&name) {
                    passing_known.push(name);
                }
            }
            Outcome::Fail(why) => {
                failed += 1;
                failures.push((name, why));
            }
            Outcome::Skip => skipped += 1,
        }
    }
    let mut unexpected = 0;
    for (name, why) in &failures {
        let tag = if known.contains_key(name) {
            "known"
        } else {
            unexpected += 1;
            "NEW"
        };
        println!("FAIL [{tag}] {name}: {}", first_line(why));
    }
    for name in &passing_known {
        println!("STALE {name}: listed in KNOWN_FAILURES but passes; remove it");
    }
    let applicable = passed + failed;
    let rate = if applicable == 0 {
        0.0
    } else {
        passed as f64 / applicable as f64
    };
    println!(
        "conformance: {applicable} applicable cases, {:.1}% pass (required {:.0}%)",
        rate * 100.0,
        REQUIRED_PASS_RATE * 100.0
    );
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    let full_run = filters.is_empty();
    if unexpected > 0 || (full_run && (!passing_known.is_empty() || rate < REQUIRED_PASS_RATE)) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// `tests/conformance/KNOWN_FAILURES`: `name  # reason` per line.
fn known_failures(engine: Engine) -> BTreeMap<String, String> {
    let path = common::repo_root().join(engine.known_failures_file());
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, reason) = l.split_once('#').unwrap_or((l, ""));
            (name.trim().to_string(), reason.trim().to_string())
        })
        .collect()
}

/// Generates (once per onnx version) and returns the directory of node tests.
fn node_tests_dir() -> Result<PathBuf, String> {
    let python = common::python();
    let version = Command::new(&python)
        .args(["-c", "import onnx; print(onnx.__version__)"])
        .output()
        .map_err(|e| {
            format!(
                "running {}: {e} (run .ci/run or set KILN_PYTHON)",
                python.display()
            )
        })?;
    if !version.status.success() {
        return Err(format!(
            "{} cannot import onnx (run .ci/run or set KILN_PYTHON): {}",
            python.display(),
            String::from_utf8_lossy(&version.stderr)
        ));
    }
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("target"));
    let dir = target.join("onnx-node-tests").join(&version);
    let done = dir.join(".complete");
    if !done.exists() {
        let script = common::repo_root().join("tests/conformance/generate_node_tests.py");
        let status = Command::new(&python)
            .arg(script)
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("generate_node_tests.py failed".into());
        }
        std::fs::write(&done, b"").map_err(|e| e.to_string())?;
    }
    Ok(dir)
}

fn load_pb(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    kiln_frontend::load_tensor_pb(&bytes).map_err(|e| e.to_string())
}

fn data_files(dir: &Path, kind: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (0..)
        .map(|i| dir.join(format!("{kind}_{i}.pb")))
        .take_while(|p| p.exists())
        .collect();
    files.sort_by_key(|p| p.file_name().map(|n| n.len()));
    files
}

fn run_case(case: &Path, engine: Engine) -> Outcome {
    if case.join("NON_TENSOR_IO").exists() {
        return Outcome::Skip;
    }
    let Ok(bytes) = std::fs::read(case.join("model.onnx")) else {
        return Outcome::Fail("cannot read model.onnx".into());
    };
    let survey = match kiln_frontend::survey(&bytes) {
        Ok(s) => s,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    if !survey.is_supported() {
        return Outcome::Skip;
    }
    let mut sets: Vec<PathBuf> = std::fs::read_dir(case)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    sets.sort();
    if sets.is_empty() {
        return Outcome::Skip;
    }
    for set in sets {
        if let Err(why) = run_data_set(&bytes, &survey.inputs, &set, engine) {
            return Outcome::Fail(why);
        }
    }
    Outcome::Pass
}

fn run_data_set(
    model: &[u8],
    input_names: &[String],
    set: &Path,
    engine: Engine,
) -> Result<(), String> {
    let inputs: Vec<Tensor> = data_files(set, "input")
        .iter()
        .map(|p| load_pb(p))
        .collect::<Result<_, _>>()?;
    let expected: Vec<Tensor> = data_files(set, "output")
        .iter()
        .map(|p| load_pb(p))
        .collect::<Result<_, _>>()?;
    let by_name: HashMap<&str, &Tensor> = input_names
        .iter()
        .map(String::as_str)
        .zip(&inputs)
        .collect();
    // kiln compiles for static shapes: inputs that determine shapes (Reshape's shape, Clip's
    // bounds, ...) are bound to their test values, as a user would bake them into the model.
    let mut options = ImportOptions::default();
    let model = loop {
        match kiln_frontend::import_model(model, &options) {
            Ok(m) => break m,
            Err(FrontendError::NeedsConstant { input, .. })
                if by_name.contains_key(input.as_str())
                    && !options.const_inputs.contains_key(&input) =>
            {
                let value = (*by_name[input.as_str()]).clone();
                options.const_inputs.insert(input, value);
            }
            // The constant is computed inside the graph (an `_expanded` function body) from
            // integer inputs: bind those, as shape arguments, and retry once.
            Err(e @ FrontendError::NeedsConstant { .. }) => {
                let unbound: Vec<&str> = by_name
                    .iter()
                    .filter(|(n, t)| {
                        t.dtype().is_integer() && !options.const_inputs.contains_key(**n)
                    })
                    .map(|(n, _)| *n)
                    .collect();
                if unbound.is_empty() {
                    return Err(format!("import: {e}"));
                }
                for n in unbound {
                    options
                        .const_inputs
                        .insert(n.to_string(), (*by_name[n]).clone());
                }
            }
            Err(e) => return Err(format!("import: {e}")),
        }
    };
    let runtime_inputs: Vec<Tensor> = input_names
        .iter()
        .zip(&inputs)
        .filter(|(n, _)| !options.const_inputs.contains_key(*n))
        .map(|(_, t)| t.clone())
        .collect();
    let outputs = engine
        .run(&model.graph, &runtime_inputs)
        .map_err(|e| format!("run: {e}"))?;
    if outputs.len() < expected.len() {
        return Err(format!(
            "{} outputs, expected {}",
            outputs.len(),
            expected.len()
        ));
    }
    for (i, (got, want)) in outputs.iter().zip(&expected).enumerate() {
        common::compare(got, want, RTOL, ATOL).map_err(|e| format!("output {i}: {e}"))?;
    }
    Ok(())
}
