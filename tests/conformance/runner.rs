//! The ONNX backend node tests, run through one of kiln's engines (the reference interpreter,
//! the generated C built for the host, the Cranelift JIT, a Cortex-M4 board, or the `kiln`
//! command line). Shared by the `conformance*` test targets.
//!
//! Generates the node tests from the case definitions in the `onnx` Python package (cached under
//! `target/onnx-node-tests/`), runs every case whose ops and element types are in kiln's op set,
//! and compares with the expected outputs: f32 with rtol 1e-3 / atol 1e-5, integers and bool
//! exactly. Each case is imported as a user would make kiln take it (see
//! [`import_as_a_user_would`]). Prints `N passed, N failed, N skipped` and every failure. Fails
//! when a failure is not listed in `tests/conformance/KNOWN_FAILURES`, when a listed case passes
//! (stale entry), or when fewer than 97% of applicable cases pass; the CLI engine also when a
//! case passes through the library but not through `kiln run`, or the other way round.
//!
//! `cargo test --test conformance -- relu conv` runs only cases whose names contain a filter.

use std::collections::BTreeMap;
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
    /// The `kiln` binary: `kiln run` at -O0 (the interpreter), every case also run through the
    /// library's interpreter to compare the two.
    Cli,
    /// The generated C after `kiln_passes::optimize` at O2 with one ISA's int8 kernels, built
    /// for the host (the DSP and Helium operations through the runtime header's portable forms).
    CIsa(kiln_backends::c::Isa),
}

impl Engine {
    fn known_failures_file(self) -> &'static str {
        match self {
            Engine::Interp | Engine::Cli => "tests/conformance/KNOWN_FAILURES",
            // Refused at import, as for the host C engine.
            Engine::C
            | Engine::COptimized
            | Engine::CortexM4
            | Engine::Cranelift
            | Engine::CIsa(_) => "tests/conformance/KNOWN_FAILURES_C",
        }
    }

    fn run(self, graph: &kiln_ir::Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        match self {
            Engine::Interp => kiln_ir::interp::run(graph, inputs).map_err(|e| e.to_string()),
            Engine::Cli => Err("the CLI engine imports the model itself (see run_cli)".into()),
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
            Engine::CIsa(isa) => {
                let mut graph = graph.clone();
                kiln_passes::optimize(&mut graph, &kiln_passes::PassOptions::default())
                    .map_err(|e| e.to_string())?;
                let c = kiln_backends::c::COptions {
                    isa: Some(isa),
                    ..Default::default()
                };
                kiln_backends::host::run_c(&graph, inputs, &c, &Default::default())
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

#[allow(dead_code)] // a test target calls main_for or main_with
pub fn main_for(engine: Engine) -> ExitCode {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    main_with(engine, &filters)
}

/// The cases whose names contain one of `filters` (every case when empty) through `engine`.
pub fn main_with(engine: Engine, filters: &[String]) -> ExitCode {
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
    let results: Mutex<Vec<(String, Outcome, Option<Outcome>)>> = Mutex::new(Vec::new());
    let started = std::time::Instant::now();
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
                let (outcome, library) =
                    std::panic::catch_unwind(AssertUnwindSafe(|| run_case(case, engine)))
                        .unwrap_or_else(|_| (Outcome::Fail("panicked".into()), None));
                if let Ok(mut r) = results.lock() {
                    r.push((name.clone(), outcome, library));
                }
            });
        }
    });
    if engine == Engine::Cli {
        let _ = std::fs::remove_dir_all(cli_temp_root());
    }
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    // The CLI engine must agree with the library's interpreter case by case.
    let (mut library_passed, mut library_failed) = (0usize, 0usize);
    let mut disagreements = Vec::new();
    for (name, outcome, library) in results {
        if let Some(library) = &library {
            match (library, &outcome) {
                (Outcome::Pass, Outcome::Pass) => library_passed += 1,
                (Outcome::Fail(_), Outcome::Fail(_)) => library_failed += 1,
                (Outcome::Skip, _) | (_, Outcome::Skip) => {}
                (Outcome::Pass, Outcome::Fail(why)) => {
                    library_passed += 1;
                    disagreements.push(format!(
                        "{name}: passes through the library, fails through the CLI: {}",
                        first_line(why)
                    ));
                }
                (Outcome::Fail(why), Outcome::Pass) => {
                    library_failed += 1;
                    disagreements.push(format!(
                        "{name}: passes through the CLI, fails through the library: {}",
                        first_line(why)
                    ));
                }
            }
        }
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
    if engine == Engine::Cli {
        let library_applicable = library_passed + library_failed;
        println!(
            "library runner (interpreter): {library_passed}/{library_applicable} pass ({:.1}%); CLI (kiln run -O0): {passed}/{applicable} pass ({:.1}%); {:.1} s",
            100.0 * library_passed as f64 / library_applicable.max(1) as f64,
            rate * 100.0,
            started.elapsed().as_secs_f64()
        );
        for d in &disagreements {
            println!("DIFFERS {d}");
        }
    }
    let full_run = filters.is_empty();
    if unexpected > 0
        || !disagreements.is_empty()
        || (full_run && (!passing_known.is_empty() || rate < REQUIRED_PASS_RATE))
    {
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

/// Runs every data set of a case; for [`Engine::Cli`] also through the library's interpreter,
/// whose outcome is the second value.
fn run_case(case: &Path, engine: Engine) -> (Outcome, Option<Outcome>) {
    if case.join("NON_TENSOR_IO").exists() {
        return (Outcome::Skip, None);
    }
    let Ok(bytes) = std::fs::read(case.join("model.onnx")) else {
        return (Outcome::Fail("cannot read model.onnx".into()), None);
    };
    let survey = match kiln_frontend::survey(&bytes) {
        Ok(s) => s,
        Err(e) => return (Outcome::Fail(e.to_string()), None),
    };
    if !survey.is_supported() {
        return (Outcome::Skip, None);
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
        return (Outcome::Skip, None);
    }
    let mut outcome = Outcome::Pass;
    let mut library = (engine == Engine::Cli).then_some(Outcome::Pass);
    for set in sets {
        let result = DataSet::load(&survey.inputs, &set).map(|data| {
            let imported = import_as_a_user_would(&bytes, &data, engine);
            let run = |engine: Engine| {
                let (model, options) = imported.as_ref().map_err(|(e, _)| e.clone())?;
                let outputs = engine
                    .run(&model.graph, &data.runtime_inputs(options))
                    .map_err(|e| format!("run: {e}"))?;
                data.check(&outputs)
            };
            if engine == Engine::Cli {
                // The CLI imports on its own, with the options the library needed.
                let options = match &imported {
                    Ok((_, options)) | Err((_, options)) => options,
                };
                let cli = run_cli(&case.join("model.onnx"), &set, &data, options)
                    .and_then(|outputs| data.check(&outputs));
                (cli, Some(run(Engine::Interp)))
            } else {
                (run(engine), None)
            }
        });
        let (result, library_result) = match result {
            Ok(pair) => pair,
            Err(e) => (Err(e.clone()), Some(Err(e))),
        };
        if let (Err(why), Outcome::Pass) = (result, &outcome) {
            outcome = Outcome::Fail(why);
        }
        if let (Some(Err(why)), Some(Outcome::Pass)) = (library_result, &library) {
            library = Some(Outcome::Fail(why));
        }
    }
    (outcome, library)
}

/// One data set of a case: named inputs and expected outputs.
struct DataSet {
    inputs: Vec<(String, Tensor)>,
    expected: Vec<Tensor>,
}

impl DataSet {
    fn load(input_names: &[String], set: &Path) -> Result<DataSet, String> {
        let inputs: Vec<Tensor> = data_files(set, "input")
            .iter()
            .map(|p| load_pb(p))
            .collect::<Result<_, _>>()?;
        let expected = data_files(set, "output")
            .iter()
            .map(|p| load_pb(p))
            .collect::<Result<_, _>>()?;
        Ok(DataSet {
            inputs: input_names.iter().cloned().zip(inputs).collect(),
            expected,
        })
    }

    fn get(&self, name: &str) -> Option<&Tensor> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The inputs left to give at run time (in graph order), once `options` bound some.
    fn runtime_inputs(&self, options: &ImportOptions) -> Vec<Tensor> {
        self.inputs
            .iter()
            .filter(|(n, _)| !options.const_inputs.contains_key(n))
            .map(|(_, t)| t.clone())
            .collect()
    }

    fn check(&self, outputs: &[Tensor]) -> Result<(), String> {
        if outputs.len() < self.expected.len() {
            return Err(format!(
                "{} outputs, expected {}",
                outputs.len(),
                self.expected.len()
            ));
        }
        for (i, (got, want)) in outputs.iter().zip(&self.expected).enumerate() {
            common::compare(got, want, RTOL, ATOL).map_err(|e| format!("output {i}: {e}"))?;
        }
        Ok(())
    }
}

/// Imports the model as a user would make kiln take it: kiln compiles for static shapes, so
/// inputs that determine shapes (Reshape's shape, Clip's bounds, ...) are bound to their test
/// values (`--const-input`), and inputs declared with open dimensions (an empty input is
/// declared with a 0 dimension, which kiln reads as unknown) get their data's shape
/// (`--input-shape`). Returns the model and the options, or the error and the options tried
/// last.
#[allow(clippy::type_complexity)] // the two halves of one answer
fn import_as_a_user_would(
    model: &[u8],
    data: &DataSet,
    engine: Engine,
) -> Result<(kiln_frontend::Model, ImportOptions), (String, ImportOptions)> {
    let mut options = ImportOptions::default();
    if let Engine::CIsa(_) = engine {
        // Every input but the first is a constant, as weights are in a deployed model: the
        // int8 kernels specialize for constant weights only.
        options
            .const_inputs
            .extend(data.inputs.iter().skip(1).cloned());
    }
    loop {
        match kiln_frontend::import_model(model, &options) {
            Ok(m) => return Ok((m, options)),
            Err(FrontendError::NeedsConstant { input, .. })
                if data.get(&input).is_some() && !options.const_inputs.contains_key(&input) =>
            {
                if let Some(value) = data.get(&input) {
                    options.const_inputs.insert(input, value.clone());
                }
            }
            // The constant is computed inside the graph (an `_expanded` function body) from
            // integer inputs: bind those, as shape arguments, and retry once.
            Err(e @ FrontendError::NeedsConstant { .. }) => {
                let unbound: Vec<(String, Tensor)> = data
                    .inputs
                    .iter()
                    .filter(|(n, t)| {
                        t.dtype().is_integer() && !options.const_inputs.contains_key(n)
                    })
                    .cloned()
                    .collect();
                if unbound.is_empty() {
                    return Err((format!("import: {e}"), options));
                }
                options.const_inputs.extend(unbound);
            }
            Err(e) => {
                let open: Vec<(String, Vec<usize>)> = e
                    .flatten()
                    .iter()
                    .filter_map(|e| match e {
                        FrontendError::Input { name, .. }
                            if !options.input_shapes.contains_key(name) =>
                        {
                            data.get(name).map(|t| (name.clone(), t.shape().to_vec()))
                        }
                        _ => None,
                    })
                    .collect();
                if open.is_empty() {
                    return Err((format!("import: {e}"), options));
                }
                options.input_shapes.extend(open);
            }
        }
    }
}

/// Where the CLI engine writes each data set's files (removed after the run).
fn cli_temp_root() -> PathBuf {
    std::env::temp_dir().join(format!("kiln-conformance-cli-{}", std::process::id()))
}

/// Runs the case through `kiln run` (the interpreter at -O0, as the library engine runs it):
/// inputs as `.npy` files, the bound ones with `--const-input`, open shapes with
/// `--input-shape`; reads the outputs the JSON report lists.
fn run_cli(
    model: &Path,
    set: &Path,
    data: &DataSet,
    options: &ImportOptions,
) -> Result<Vec<Tensor>, String> {
    let case = model
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let set_name = set
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = cli_temp_root().join(format!("{case}-{set_name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut args: Vec<String> = vec![
        "run".into(),
        model.display().to_string(),
        "-O".into(),
        "0".into(),
    ];
    for (i, (name, t)) in data.inputs.iter().enumerate() {
        let file = dir.join(format!("input_{i}.npy"));
        std::fs::write(&file, kiln_ir::npy::write(t))
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
        let flag = if options.const_inputs.contains_key(name) {
            "--const-input"
        } else {
            "--input"
        };
        args.extend([flag.to_string(), format!("{name}={}", file.display())]);
    }
    let mut shapes: Vec<(&String, &Vec<usize>)> = options.input_shapes.iter().collect();
    shapes.sort();
    for (name, dims) in shapes {
        let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
        args.extend(["--input-shape".into(), format!("{name}={}", dims.join(","))]);
    }
    let out_dir = dir.join("out");
    args.extend([
        "--output-dir".into(),
        out_dir.display().to_string(),
        "--json".into(),
    ]);
    let result = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(&args)
        .output()
        .map_err(|e| format!("running kiln: {e}"))
        .and_then(|out| {
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(format!("kiln run: {}", stderr.trim()));
            }
            let doc: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| format!("kiln run --json: {e}"))?;
            doc["outputs"]
                .as_array()
                .ok_or("kiln run --json: no outputs")?
                .iter()
                .map(|o| {
                    let file = o["file"].as_str().ok_or("kiln run --json: no file")?;
                    let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
                    kiln_ir::npy::read(&bytes).map_err(|e| format!("{file}: {e}"))
                })
                .collect()
        });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
