//! Benchmark: single-threaded inference latency of every model in `tests/models/` plus
//! MobileNetV2 224x224 on the host, through kiln's C backend (host `cc -O2`), kiln's Cranelift
//! JIT, onnxruntime and tract, all in one run. Prints one markdown table of medians, ratios and
//! compile times, and every engine's max abs error against onnxruntime.
//!
//! Run with `cargo bench --bench engines` (after `scripts/setup-python.sh`); pass model names
//! to run only those: `cargo bench --bench engines -- kws_dscnn mobilenetv2`. Prints figures;
//! fails only when an engine cannot run or disagrees with onnxruntime.
//!
//! Each engine runs a warm-up, then timed runs until at least `MIN_RUNS` runs and `MIN_TIME`
//! have passed. kiln C is timed inside its harness around the `model_run` call
//! (`kiln_backends::host::time_c`); onnxruntime and tract are timed in `benches/engines.py`
//! around each Python call, so their figures include the binding's per-call overhead (a few
//! microseconds, visible only on the smallest models).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use kiln_backends::c::COptions;
use kiln_backends::host::{time_c, HostOptions, TimingOptions};
use kiln_ir::{Graph, Tensor, TensorType};

const WARMUP: usize = 3;
const MIN_RUNS: usize = 10;
/// One second per engine and model: this shared host's neighbours make shorter windows noisy.
const MIN_TIME: Duration = Duration::from_millis(1000);
/// An engine whose max abs error exceeds this fraction of the output magnitude fails the bench.
const REL_TOLERANCE: f32 = 1e-4;

/// Times the Cranelift JIT: returns the compile time (graph to runnable code), each timed run's
/// latency, and the last run's outputs (checked against onnxruntime). Same warm-up and stopping
/// rule as the other engines.
fn time_cranelift(
    graph: &Graph,
    inputs: &[Tensor],
    reps: usize,
) -> Result<(Duration, Vec<Duration>, Vec<Tensor>), String> {
    use kiln_backends::cranelift::{CraneliftOptions, JitProgram};
    let start = Instant::now();
    let mut program =
        JitProgram::compile(graph, &CraneliftOptions::default()).map_err(|e| e.to_string())?;
    let compile = start.elapsed();
    let mut outputs = Vec::new();
    for _ in 0..WARMUP {
        outputs = program.run(inputs).map_err(|e| e.to_string())?;
    }
    let (mut runs, start) = (Vec::new(), Instant::now());
    while runs.len() < reps || start.elapsed() < MIN_TIME {
        let t = Instant::now();
        outputs = program.run(inputs).map_err(|e| e.to_string())?;
        runs.push(t.elapsed());
    }
    Ok((compile, runs, outputs))
}

/// One model to benchmark: `dir` holds `model.onnx` and `input_0.npy`.
struct Case {
    name: String,
    dir: PathBuf,
}

/// One engine's figures on one model.
#[derive(Default)]
struct Figures {
    median_ms: Option<f64>,
    min_ms: Option<f64>,
    runs: usize,
    /// Max abs error against onnxruntime.
    err: Option<f64>,
    /// Model to runnable, in ms.
    compile_ms: Option<f64>,
    /// How `compile_ms` splits, where known.
    compile_detail: Option<String>,
    /// Process CPU time over wall time while timing (onnxruntime and tract): about 1 when
    /// single-threaded.
    cpu_per_wall: Option<f64>,
    error: Option<String>,
}

struct Row {
    name: String,
    macs: u64,
    c: Figures,
    cranelift: Figures,
    ort: Figures,
    tract: Figures,
    /// Largest |output| of onnxruntime, the scale for the error check.
    magnitude: f64,
}

fn main() -> ExitCode {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let python = common::python();
    let root = common::repo_root();
    let mut cases: Vec<Case> = common::model_dirs(&root.join("tests/models"))
        .into_iter()
        .map(|dir| Case {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir,
        })
        .collect();
    let tmp = std::env::temp_dir().join(format!("kiln-bench-engines-{}", std::process::id()));
    let mnv2 = tmp.join("mobilenetv2");
    cases.push(Case {
        name: "mobilenetv2".into(),
        dir: mnv2.clone(),
    });
    cases.retain(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())));
    if cases.iter().any(|c| c.dir == mnv2) {
        // Seeded weights and input (generate.py's default_rng seeds), 224x224.
        let status = Command::new(&python)
            .arg(root.join("tests/models/generate.py"))
            .arg("--mobilenetv2")
            .arg(&mnv2)
            .stdout(std::process::Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "cannot generate MobileNetV2 with {} (run scripts/setup-python.sh)",
                python.display()
            );
            return ExitCode::FAILURE;
        }
    }

    let mut rows = Vec::new();
    let mut ok = true;
    for case in &cases {
        eprintln!("benchmarking {} ...", case.name);
        match bench_case(case, &python, &tmp.join(&case.name)) {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("{}: {e}", case.name);
                ok = false;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);

    print_table(&rows);
    for row in &rows {
        for (engine, f) in [
            ("kiln C", &row.c),
            ("kiln Cranelift", &row.cranelift),
            ("onnxruntime", &row.ort),
            ("tract", &row.tract),
        ] {
            if let Some(e) = &f.error {
                if !e.starts_with("skipped") {
                    ok = false;
                }
                println!("- {}: {engine}: {e}", row.name);
            }
            if let Some(c) = f.cpu_per_wall.filter(|&c| c > 1.3) {
                println!(
                    "- {}: {engine} used {c:.2} CPU seconds per second: not single-threaded",
                    row.name
                );
            }
            if let Some(err) = f.err {
                if err > f64::from(REL_TOLERANCE) * row.magnitude.max(1.0) {
                    ok = false;
                    println!(
                        "- {}: {engine} disagrees with onnxruntime: max abs error {err:.2e}",
                        row.name
                    );
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn bench_case(case: &Case, python: &Path, scratch: &Path) -> Result<Row, String> {
    let bytes = std::fs::read(case.dir.join("model.onnx")).map_err(|e| format!("reading: {e}"))?;
    let mut graph = kiln_frontend::import_model(&bytes, &Default::default())
        .map_err(|e| format!("import: {e}"))?
        .graph;
    // kiln's engines run the graph as `kiln compile` does by default: optimized at -O2.
    kiln_passes::optimize(&mut graph, &kiln_passes::PassOptions::default())
        .map_err(|e| format!("optimize: {e}"))?;
    let input_path = case.dir.join("input_0.npy");
    let input = kiln_ir::npy::read(&std::fs::read(&input_path).map_err(|e| e.to_string())?)
        .map_err(|e| format!("input: {e}"))?;
    let inputs = [input];

    // onnxruntime and tract first: onnxruntime's outputs are the reference.
    let ort_dir = scratch.join("ort");
    let (ort, tract) = python_engines(python, &case.dir.join("model.onnx"), &input_path, &ort_dir)?;
    let reference: Vec<Tensor> = (0..graph.outputs().len())
        .map(|k| {
            let p = ort_dir.join(format!("output_{k}.npy"));
            std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| kiln_ir::npy::read(&b).map_err(|e| e.to_string()))
                .map_err(|e| format!("onnxruntime output {k}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let magnitude = reference
        .iter()
        .map(|t| f64::from(common::max_abs_diff(t, t).1))
        .fold(0.0, f64::max);

    // `--no-c` skips the C backend (its host compile dominates the bench's run time).
    let c = if std::env::args().any(|a| a == "--no-c") {
        Figures {
            error: Some("skipped (--no-c)".into()),
            ..Figures::default()
        }
    } else {
        bench_c(&graph, &inputs, &reference)
    };
    let cranelift = match time_cranelift(&graph, &inputs, MIN_RUNS) {
        Ok((compile, runs, outputs)) => Figures {
            median_ms: Some(median_ms(&runs)),
            min_ms: runs.iter().min().map(|d| d.as_secs_f64() * 1e3),
            runs: runs.len(),
            err: Some(max_err(&outputs, &reference)),
            compile_ms: Some(compile.as_secs_f64() * 1e3),
            ..Figures::default()
        },
        Err(e) => Figures {
            error: Some(e),
            ..Figures::default()
        },
    };
    Ok(Row {
        name: case.name.clone(),
        macs: macs(&graph),
        c,
        cranelift,
        ort,
        tract,
        magnitude,
    })
}

fn bench_c(graph: &Graph, inputs: &[Tensor], reference: &[Tensor]) -> Figures {
    let timing = TimingOptions {
        warmup: WARMUP,
        min_runs: MIN_RUNS,
        min_time: MIN_TIME,
        max_runs: 1_000_000,
    };
    // The schedule `kiln compile -O2` uses by default.
    let mut options = COptions::default();
    options.schedule.oc_tile = 4;
    options.schedule.unroll_limit = 3;
    match time_c(graph, inputs, &options, &HostOptions::default(), &timing) {
        Ok(t) => Figures {
            median_ms: Some(median_ms(&t.runs)),
            min_ms: t.runs.iter().min().map(|d| d.as_secs_f64() * 1e3),
            runs: t.runs.len(),
            err: Some(max_err(&t.outputs, reference)),
            compile_ms: Some((t.emit + t.build).as_secs_f64() * 1e3),
            compile_detail: Some(format!(
                "{} + {}",
                ms(Some(t.emit.as_secs_f64() * 1e3)),
                ms(Some(t.build.as_secs_f64() * 1e3))
            )),
            ..Figures::default()
        },
        Err(e) => Figures {
            error: Some(e.to_string()),
            ..Figures::default()
        },
    }
}

/// Runs `benches/engines.py`; returns onnxruntime's and tract's figures and leaves
/// onnxruntime's outputs in `ort_dir`.
fn python_engines(
    python: &Path,
    model: &Path,
    input: &Path,
    ort_dir: &Path,
) -> Result<(Figures, Figures), String> {
    let out = Command::new(python)
        .arg(common::repo_root().join("benches/engines.py"))
        .arg(model)
        .arg(input)
        .arg(MIN_RUNS.to_string())
        .arg("--min-time")
        .arg(MIN_TIME.as_secs_f64().to_string())
        .arg("--ort-out")
        .arg(ort_dir)
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "benches/engines.py failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("benches/engines.py printed no JSON: {e}"))?;
    let figures = |engine: &str| {
        let v = &json[engine];
        Figures {
            median_ms: v["median_ms"].as_f64(),
            min_ms: v["min_ms"].as_f64(),
            runs: v["runs"].as_u64().unwrap_or(0) as usize,
            err: v["max_abs_err"].as_f64(),
            compile_ms: v["load_ms"].as_f64(),
            compile_detail: None,
            cpu_per_wall: v["cpu_per_wall"].as_f64(),
            error: match v["error"].as_str() {
                Some(e) => Some(e.to_string()),
                None if v.is_null() => Some("not reported".into()),
                None => None,
            },
        }
    };
    let ort = figures("onnxruntime");
    if let Some(e) = &ort.error {
        return Err(format!("onnxruntime: {e}"));
    }
    Ok((ort, figures("tract")))
}

fn median_ms(runs: &[Duration]) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Max abs error of `got` against `want` over all outputs; infinite on a shape mismatch.
fn max_err(got: &[Tensor], want: &[Tensor]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            if g.shape() != w.shape() {
                f64::INFINITY
            } else {
                f64::from(common::max_abs_diff(g, w).0)
            }
        })
        .fold(0.0, f64::max)
}

fn macs(graph: &Graph) -> u64 {
    graph
        .node_ids()
        .into_iter()
        .map(|id| {
            let node = graph.node(id);
            let ins: Vec<&TensorType> = node.inputs.iter().map(|&v| &graph.value(v).ty).collect();
            let outs: Vec<TensorType> = node
                .outputs
                .iter()
                .map(|&v| graph.value(v).ty.clone())
                .collect();
            kiln_ir::ops::macs(&node.op, &ins, &outs)
        })
        .sum()
}

fn ms(x: Option<f64>) -> String {
    match x {
        Some(v) if v >= 100.0 => format!("{v:.1}"),
        Some(v) if v >= 1.0 => format!("{v:.3}"),
        Some(v) => format!("{v:.4}"),
        None => "n/a".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

fn err(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |e| format!("{e:.1e}"))
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "Single-threaded median latency on this host; ratios < 1 mean the first engine is faster."
    );
    println!("compile ms: kiln C = emit_c + cc -O2; kiln Cranelift = graph to JIT code.");
    println!();
    println!("| model | MACs | kiln C ms | kiln Cranelift ms | onnxruntime ms | tract ms | C/ORT | Cranelift/ORT | Cranelift/tract | compile ms C | compile ms Cranelift |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.macs,
            ms(r.c.median_ms),
            ms(r.cranelift.median_ms),
            ms(r.ort.median_ms),
            ms(r.tract.median_ms),
            ratio(r.c.median_ms, r.ort.median_ms),
            ratio(r.cranelift.median_ms, r.ort.median_ms),
            ratio(r.cranelift.median_ms, r.tract.median_ms),
            ms(r.c.compile_ms),
            ms(r.cranelift.compile_ms),
        );
    }
    println!();
    println!("Max abs error against onnxruntime, min latency (ms) and timed runs per engine; ORT and tract load ms (file to runnable):");
    println!();
    println!("| model | max abs output | C err | Cranelift err | tract err | C min / runs | Cranelift min / runs | ORT min / runs | tract min / runs | C emit + cc ms | ORT load ms | tract load ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let mr = |f: &Figures| format!("{} / {}", ms(f.min_ms), f.runs);
        println!(
            "| {} | {:.2e} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.magnitude,
            err(r.c.err),
            err(r.cranelift.err),
            err(r.tract.err),
            mr(&r.c),
            mr(&r.cranelift),
            mr(&r.ort),
            mr(&r.tract),
            r.c.compile_detail.as_deref().unwrap_or("n/a"),
            ms(r.ort.compile_ms),
            ms(r.tract.compile_ms),
        );
    }
}
