//! Differential testing on random graphs: every graph `differential/gen_graphs.py` makes (and
//! every hand-written case of `differential/regressions.py`) goes through kiln at -O0, -O1 and
//! -O2 and runs on the reference interpreter, the generated C (host `cc -O2`) and the Cranelift
//! JIT (default options); every output is compared with onnxruntime's (no graph optimization,
//! one thread).
//!
//! Each (graph, backend, level) ends as ok, crash (a panic in kiln, or the compiled C killed by
//! a signal or a sanitizer), error (kiln returned an error on a graph onnx's checker and
//! onnxruntime accept) or mismatch. The test prints a table of counts per backend and level,
//! how many graphs each pass rewrote, and the time; it fails listing every failing graph with
//! the backends, levels and first mismatch, and the distinct failures across graphs.
//!
//! Tolerance: a float output passes when every element satisfies
//! `|got - want| <= 1e-4 * max(1, scale)`, where `scale` is the largest magnitude among the
//! values the output depends on (the generator records it from onnxruntime's run). This is the
//! usual `1e-4 of magnitude` rule with the magnitude taken where rounding happens: an output
//! that is a difference of values near 100 carries their absolute rounding error however small
//! it is itself. Measured over 4300 graphs (seeds 1, 30 and 40, every backend and level),
//! passing outputs stay under 0.76 of this tolerance, while the plain `1e-4 * max(1, |want|)`
//! rule would fail some 220 correct output comparisons per 2000 graphs on such rounding noise
//! (up to 37x over); the bugs found miss by far more. NaN must meet NaN, infinities must match
//! exactly, integers and bools must be equal. Where onnxruntime is known to depart from the
//! onnx reference implementation (Resize), the generator also stores the reference's outputs,
//! and a mismatch says when kiln agrees with the reference.
//!
//! Budget: the C compiler dominates (about 2 s per graph for its -O0/-O1/-O2 programs, built in
//! one `cc` invocation; levels whose optimized graph is identical share one build), so by
//! default every graph runs on the interpreter and the JIT and one graph in five also through
//! C, on all cores: about 90 s for the default 300 graphs on two cores in a debug build.
//! Environment: `KILN_DIFF_GRAPHS` (default 300), `KILN_DIFF_SEED` (default 1),
//! `KILN_DIFF_C_EVERY` (1 = C on every graph, 0 = never; default 5), `KILN_DIFF_JOBS`
//! (threads), `KILN_DIFF_ONLY=g0042,g0107` (just those graphs), `KILN_DIFF_CFLAGS` (extra flags
//! for the C build, e.g. `-fsanitize=address,undefined`). Generated graphs are cached under
//! `target/differential/seed-S-nN/` (regenerated when the generator changes). A failing graph is
//! reduced with `gen_graphs.py --shrink DIR --backend B --level L` and kept as a case of
//! `regressions.py`.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use kiln_backends::c::{emit_c, COptions};
use kiln_backends::cranelift::{CraneliftOptions, JitProgram};
use kiln_ir::{Graph, Tensor, TensorData};
use kiln_passes::{OptLevel, PassOptions};

/// Relative tolerance against `max(1, scale)`; see the module docs.
const RTOL: f64 = 1e-4;
const LEVELS: [OptLevel; 3] = [OptLevel::O0, OptLevel::O1, OptLevel::O2];
const BACKENDS: [Backend; 3] = [Backend::Interp, Backend::C, Backend::Jit];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Backend {
    Interp,
    C,
    Jit,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Interp => "interp",
            Backend::C => "c",
            Backend::Jit => "cranelift",
        }
    }
}

fn level_name(level: OptLevel) -> &'static str {
    match level {
        OptLevel::O0 => "O0",
        OptLevel::O1 => "O1",
        OptLevel::O2 => "O2",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ok,
    Mismatch,
    Error,
    Crash,
    Skipped,
}

#[derive(Clone, Debug)]
struct Outcome {
    kind: Kind,
    detail: String,
    /// For a pass: how close the outputs came to the tolerance.
    errors: Errors,
}

impl Outcome {
    fn ok() -> Self {
        Outcome::new(Kind::Ok, "")
    }
    fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Outcome {
            kind,
            detail: detail.into(),
            errors: Errors::default(),
        }
    }
}

/// One graph directory: the model, its inputs, onnxruntime's outputs and their scales.
struct Case {
    dir: PathBuf,
    inputs: Vec<Tensor>,
    want: Vec<Tensor>,
    scales: Vec<f64>,
    /// The onnx reference implementation's outputs, for graphs with ops where onnxruntime is
    /// known to depart from it (empty otherwise).
    reference: Vec<Tensor>,
}

impl Case {
    fn load(dir: &Path) -> Case {
        let npys = |prefix: &str| -> Vec<Tensor> {
            (0..)
                .map(|k| dir.join(format!("{prefix}_{k}.npy")))
                .take_while(|p| p.exists())
                .map(|p| common::read_npy(&p))
                .collect()
        };
        let meta: serde_json::Value = std::fs::read_to_string(dir.join("meta.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let scales = meta["outputs"]
            .as_array()
            .map(|outs| {
                outs.iter()
                    .map(|o| o["scale"].as_f64().unwrap_or(0.0))
                    .collect()
            })
            .unwrap_or_default();
        Case {
            dir: dir.to_path_buf(),
            inputs: npys("input"),
            want: npys("output"),
            scales,
            reference: npys("reference"),
        }
    }

    fn name(&self) -> String {
        self.dir.display().to_string()
    }
}

/// Results of one graph: an outcome per (backend, level), the import outcome, and timings.
struct Report {
    case: usize,
    import: Outcome,
    results: BTreeMap<(Backend, OptLevel), Outcome>,
    times: BTreeMap<&'static str, Duration>,
    /// How close the passing outputs came to the tolerance.
    worst_ok: Errors,
    /// The passes that changed this graph at -O2 (coverage of the optimizer's patterns).
    rewritten_by: Vec<&'static str>,
}

// ---------------------------------------------------------------------------------------------
// Panics: caught per step, with the message kept instead of printed.

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CAPTURE.with(|c| {
                let mut c = c.borrow_mut();
                if c.is_some() {
                    let loc = info
                        .location()
                        .map(|l| format!(" at {}:{}", l.file(), l.line()))
                        .unwrap_or_default();
                    *c = Some(format!("{}{loc}", panic_text(info.payload())));
                    true
                } else {
                    false
                }
            });
            if !captured {
                default(info);
            }
        }));
    });
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Runs `f`, turning a panic into `Err(message)`.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    CAPTURE.with(|c| *c.borrow_mut() = Some(String::new()));
    let r = catch_unwind(AssertUnwindSafe(f));
    let msg = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    r.map_err(|p| {
        if msg.is_empty() {
            panic_text(p.as_ref())
        } else {
            msg
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Comparison.

/// Compares `got` with onnxruntime's outputs; returns the first problem, or the largest error
/// ratio (error / allowed error) over all float outputs.
fn compare(case: &Case, got: &[Tensor]) -> Result<Errors, String> {
    compare_to(&case.want, &case.scales, got).map_err(|e| {
        if !case.reference.is_empty() && compare_to(&case.reference, &case.scales, got).is_ok() {
            format!(
                "{e} [kiln matches the onnx reference implementation; onnxruntime departs from it]"
            )
        } else {
            e
        }
    })
}

/// How close passing outputs came to the tolerance: the largest error as a fraction of the
/// allowed error, under the test's rule (`scaled`) and under the plain `1e-4 * max(1, |want|)`
/// rule (`plain`), and how many outputs the plain rule would have failed.
#[derive(Clone, Copy, Debug, Default)]
struct Errors {
    scaled: f64,
    plain: f64,
    plain_failures: usize,
}

impl Errors {
    fn merge(&mut self, o: Errors) {
        self.scaled = self.scaled.max(o.scaled);
        self.plain = self.plain.max(o.plain);
        self.plain_failures += o.plain_failures;
    }
}

/// A float as the message needs it: plain, or in exponent form when large or tiny.
fn num(v: f32) -> String {
    if v != 0.0 && v.is_finite() && !(1e-4..1e6).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

fn compare_to(want: &[Tensor], scales: &[f64], got: &[Tensor]) -> Result<Errors, String> {
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    let mut worst = Errors::default();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.dtype() != w.dtype() || g.shape() != w.shape() {
            return Err(format!(
                "output {i}: {}{:?}, expected {}{:?}",
                g.dtype(),
                g.shape(),
                w.dtype(),
                w.shape()
            ));
        }
        let scale = scales.get(i).copied().unwrap_or(0.0).max(1.0);
        match (g.data(), w.data()) {
            (TensorData::F32(gv), TensorData::F32(wv)) => {
                let allowed = RTOL * scale;
                let mut first: Option<(usize, f32, f32)> = None;
                let mut max_err = 0f64;
                for (k, (&a, &b)) in gv.iter().zip(wv).enumerate() {
                    let bad = if a.is_nan() || b.is_nan() {
                        !(a.is_nan() && b.is_nan())
                    } else if a.is_infinite() || b.is_infinite() {
                        a != b
                    } else {
                        let e = (f64::from(a) - f64::from(b)).abs();
                        max_err = max_err.max(e);
                        e > allowed
                    };
                    if bad && first.is_none() {
                        first = Some((k, a, b));
                    }
                }
                if let Some((k, a, b)) = first {
                    return Err(format!(
                        "output {i} {:?}: element {k} is {}, expected {}; max error {max_err:.3e}, allowed {allowed:.1e}",
                        w.shape(),
                        num(a),
                        num(b)
                    ));
                }
                worst.scaled = worst.scaled.max(max_err / allowed);
                let magnitude = wv
                    .iter()
                    .filter(|x| x.is_finite())
                    .fold(1f64, |m, &x| m.max(f64::from(x).abs()));
                let plain = max_err / (RTOL * magnitude);
                worst.plain = worst.plain.max(plain);
                worst.plain_failures += usize::from(plain > 1.0);
            }
            (gd, wd) => {
                if gd != wd {
                    let k = (0..gd.len())
                        .find(|&k| gd.get_f64(k) != wd.get_f64(k))
                        .unwrap_or(0);
                    return Err(format!(
                        "output {i} {:?} ({}): element {k} is {}, expected {}",
                        w.shape(),
                        w.dtype(),
                        gd.get_f64(k),
                        wd.get_f64(k)
                    ));
                }
            }
        }
    }
    Ok(worst)
}

// ---------------------------------------------------------------------------------------------
// The C backend: all levels of one graph in one program, one `cc` run.

fn harness(graph: &Graph, prefixes: &[String]) -> String {
    let n_in = graph.inputs().len();
    let n_out = graph.outputs().len();
    let mut s = String::from(
        "/* Differential-test harness: runs model argv[1] on raw input files, writes raw outputs. */\n\
         #include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n",
    );
    for p in prefixes {
        let _ = writeln!(s, "#include \"{p}.h\"");
    }
    s.push_str(
        "static void *slurp(const char *path, size_t bytes) {\n\
         \x20   void *buf = calloc(bytes ? bytes : 1, 1);\n\
         \x20   FILE *f = fopen(path, \"rb\");\n\
         \x20   if (!buf || !f || fread(buf, 1, bytes, f) != bytes) { fprintf(stderr, \"cannot read %s\\n\", path); exit(3); }\n\
         \x20   fclose(f);\n    return buf;\n}\n\
         /* The arena starts as NaN bytes, so a read before a write shows in the outputs. */\n\
         static void *arena_of(size_t align, size_t bytes) {\n\
         \x20   size_t n = (bytes + align) / align * align;\n\
         \x20   void *a = aligned_alloc(align, n);\n\
         \x20   if (!a) { fprintf(stderr, \"out of memory\\n\"); exit(3); }\n\
         \x20   memset(a, 0xff, n);\n    return a;\n}\n",
    );
    let _ = writeln!(
        s,
        "int main(int argc, char **argv) {{\n    if (argc != {}) {{ fprintf(stderr, \"usage: run WHICH IN... OUT...\\n\"); return 2; }}\n    int which = atoi(argv[1]), status = -1;",
        2 + n_in + n_out
    );
    let mut args = Vec::new();
    for (i, &v) in graph.inputs().iter().enumerate() {
        let bytes = graph.value(v).ty.size_bytes();
        let _ = writeln!(s, "    void *in{i} = slurp(argv[{}], {bytes});", 2 + i);
        args.push(format!("in{i}"));
    }
    for (i, &v) in graph.outputs().iter().enumerate() {
        let ty = &graph.value(v).ty;
        let bytes = ty.size_bytes();
        let _ = writeln!(s, "    void *out{i} = calloc({}, 1);", bytes.max(1));
        if ty.dtype == kiln_ir::DType::F32 {
            // NaN until written, so an output the program never writes cannot pass as zeros.
            let _ = writeln!(s, "    memset(out{i}, 0xff, {bytes});");
        }
        args.push(format!("out{i}"));
    }
    s.push_str("    switch (which) {\n");
    for (k, p) in prefixes.iter().enumerate() {
        let up = p.to_ascii_uppercase();
        let _ = writeln!(
            s,
            "    case {k}: {{ void *arena = arena_of({up}_ARENA_ALIGN, {up}_ARENA_BYTES); status = {p}_run(arena, {}); free(arena); break; }}",
            args.join(", ")
        );
    }
    s.push_str("    default: return 2;\n    }\n");
    s.push_str(
        "    if (status != 0) { fprintf(stderr, \"run failed: %d\\n\", status); return 4; }\n",
    );
    for (i, &v) in graph.outputs().iter().enumerate() {
        let bytes = graph.value(v).ty.size_bytes();
        let _ = writeln!(
            s,
            "    {{ FILE *f = fopen(argv[{}], \"wb\"); if (!f || fwrite(out{i}, 1, {bytes}, f) != {bytes}) return 5; fclose(f); }}",
            2 + n_in + i
        );
    }
    s.push_str("    return 0;\n}\n");
    s
}

fn cflags() -> Vec<String> {
    std::env::var("KILN_DIFF_CFLAGS")
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// Compiles `sources` (C files in `dir`) with the harness into `dir/run`.
fn cc(dir: &Path, sources: &[String]) -> Result<PathBuf, String> {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let exe = dir.join("run");
    let out = Command::new(&compiler)
        .args(["-std=c99", "-O2", "-D_ISOC11_SOURCE", "-o"])
        .arg(&exe)
        .args(sources.iter().map(|s| dir.join(s)))
        .arg(dir.join("harness.c"))
        .args(cflags())
        .arg("-lm")
        .output()
        .map_err(|e| format!("running {compiler}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the C compiler rejected the generated code: {}",
            first_lines(&String::from_utf8_lossy(&out.stderr), 3)
        ));
    }
    Ok(exe)
}

/// Runs model `which` of the harness; returns the outputs or the outcome of a failure.
fn run_harness(
    exe: &Path,
    dir: &Path,
    which: usize,
    graph: &Graph,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>, Outcome> {
    let mut cmd = Command::new(exe);
    cmd.arg(which.to_string());
    for (i, t) in inputs.iter().enumerate() {
        let p = dir.join(format!("in{i}.bin"));
        std::fs::write(&p, t.data().to_le_bytes())
            .map_err(|e| Outcome::new(Kind::Error, format!("writing input: {e}")))?;
        cmd.arg(p);
    }
    for i in 0..graph.outputs().len() {
        cmd.arg(dir.join(format!("out{which}_{i}.bin")));
    }
    let run = cmd
        .output()
        .map_err(|e| Outcome::new(Kind::Error, format!("running the harness: {e}")))?;
    let stderr = String::from_utf8_lossy(&run.stderr);
    if !run.status.success() {
        // Killed by a signal (no exit code) or a sanitizer's report: the generated code crashed.
        let kind = if run.status.code().is_none() || stderr.contains("Sanitizer") {
            Kind::Crash
        } else {
            Kind::Error
        };
        return Err(Outcome::new(
            kind,
            format!(
                "compiled C failed ({}): {}",
                run.status,
                first_lines(&stderr, 3)
            ),
        ));
    }
    if !stderr.trim().is_empty() {
        return Err(Outcome::new(
            Kind::Crash,
            format!("compiled C reported: {}", first_lines(&stderr, 3)),
        ));
    }
    graph
        .outputs()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ty = &graph.value(v).ty;
            let raw = std::fs::read(dir.join(format!("out{which}_{i}.bin")))
                .map_err(|e| Outcome::new(Kind::Error, format!("reading output {i}: {e}")))?;
            let data = TensorData::from_le_bytes(ty.dtype, &raw)
                .ok_or_else(|| Outcome::new(Kind::Error, "output of the wrong size"))?;
            Tensor::new(ty.shape.clone(), data)
                .map_err(|e| Outcome::new(Kind::Error, e.to_string()))
        })
        .collect()
}

/// Emits, builds and runs the C of every distinct graph in `graphs`; one outcome per graph.
fn run_c_batch(case: &Case, graphs: &[&Graph], scratch: &Path) -> Vec<Outcome> {
    let dir = scratch.to_path_buf();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return vec![Outcome::new(Kind::Error, format!("scratch dir: {e}")); graphs.len()];
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; graphs.len()];
    let mut built: Vec<(usize, String)> = Vec::new();
    for (k, g) in graphs.iter().enumerate() {
        let prefix = format!("m{k}");
        let opts = COptions {
            name: prefix.clone(),
            ..COptions::default()
        };
        match guarded(|| emit_c(g, &opts)) {
            Err(p) => {
                outcomes[k] = Some(Outcome::new(Kind::Crash, format!("emit_c panicked: {p}")))
            }
            Ok(Err(e)) => outcomes[k] = Some(Outcome::new(Kind::Error, format!("emit_c: {e}"))),
            Ok(Ok(program)) => {
                let written = program
                    .files
                    .iter()
                    .try_for_each(|(name, text)| std::fs::write(dir.join(name), text));
                match written {
                    Ok(()) => built.push((k, prefix)),
                    Err(e) => {
                        outcomes[k] = Some(Outcome::new(Kind::Error, format!("writing C: {e}")))
                    }
                }
            }
        }
    }
    if !built.is_empty() {
        let prefixes: Vec<String> = built.iter().map(|(_, p)| p.clone()).collect();
        let sources: Vec<String> = prefixes.iter().map(|p| format!("{p}.c")).collect();
        let write = std::fs::write(
            dir.join("harness.c"),
            harness(graphs[built[0].0], &prefixes),
        );
        let exe = write
            .map_err(|e| e.to_string())
            .and_then(|()| cc(&dir, &sources));
        match exe {
            Ok(exe) => {
                for (which, (k, _)) in built.iter().enumerate() {
                    outcomes[*k] = Some(
                        match run_harness(&exe, &dir, which, graphs[*k], &case.inputs) {
                            Ok(got) => judge(case, &got),
                            Err(o) => o,
                        },
                    );
                }
            }
            Err(batch_error) => {
                // Attribute the failure: build each model on its own.
                for (k, p) in &built {
                    let one = std::fs::write(
                        dir.join("harness.c"),
                        harness(graphs[*k], std::slice::from_ref(p)),
                    )
                    .map_err(|e| e.to_string())
                    .and_then(|()| cc(&dir, &[format!("{p}.c")]));
                    outcomes[*k] = Some(match one {
                        Ok(exe) => match run_harness(&exe, &dir, 0, graphs[*k], &case.inputs) {
                            Ok(got) => judge(case, &got),
                            Err(o) => o,
                        },
                        Err(e) => Outcome::new(Kind::Error, e),
                    });
                }
                if outcomes
                    .iter()
                    .all(|o| o.as_ref().is_some_and(|o| o.kind == Kind::Ok))
                {
                    outcomes = vec![Some(Outcome::new(Kind::Error, batch_error)); graphs.len()];
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::new(Kind::Error, "not run")))
        .collect()
}

fn judge(case: &Case, got: &[Tensor]) -> Outcome {
    match compare(case, got) {
        Ok(errors) => Outcome {
            kind: Kind::Ok,
            detail: String::new(),
            errors,
        },
        Err(e) => Outcome::new(Kind::Mismatch, e),
    }
}

fn first_lines(s: &str, n: usize) -> String {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .collect::<Vec<_>>()
        .join(" | ")
}

// ---------------------------------------------------------------------------------------------
// One graph through every backend and level.

fn run_case(index: usize, case: &Case, with_c: bool, scratch: &Path) -> Report {
    let mut report = Report {
        case: index,
        import: Outcome::ok(),
        results: BTreeMap::new(),
        times: BTreeMap::new(),
        worst_ok: Errors::default(),
        rewritten_by: Vec::new(),
    };
    let timed = |report: &mut Report, what: &'static str, start: Instant| {
        *report.times.entry(what).or_default() += start.elapsed();
    };
    let start = Instant::now();
    let imported = std::fs::read(case.dir.join("model.onnx"))
        .map_err(|e| Outcome::new(Kind::Error, format!("reading the model: {e}")))
        .and_then(|bytes| {
            match guarded(|| kiln_frontend::import_model(&bytes, &Default::default())) {
                Err(p) => Err(Outcome::new(Kind::Crash, format!("import panicked: {p}"))),
                Ok(Err(e)) => Err(Outcome::new(Kind::Error, format!("import: {e}"))),
                Ok(Ok(m)) => Ok(m.graph),
            }
        });
    timed(&mut report, "import", start);
    let graph = match imported {
        Ok(g) => g,
        Err(o) => {
            report.import = o;
            return report;
        }
    };
    // Optimize at each level; a graph equal to a lower level's (same text dump) shares its
    // results, since every backend is a deterministic function of the graph.
    let mut graphs: Vec<Result<Graph, Outcome>> = Vec::new();
    let mut same_as: Vec<Option<usize>> = Vec::new();
    let mut texts: Vec<Option<String>> = Vec::new();
    for (li, &level) in LEVELS.iter().enumerate() {
        let start = Instant::now();
        let mut g = graph.clone();
        let options = PassOptions {
            level,
            ..PassOptions::default()
        };
        let r = match guarded(|| kiln_passes::optimize(&mut g, &options)) {
            Err(p) => Err(Outcome::new(Kind::Crash, format!("optimize panicked: {p}"))),
            Ok(Err(e)) => Err(Outcome::new(Kind::Error, format!("optimize: {e}"))),
            Ok(Ok(passes)) => {
                if level == OptLevel::O2 {
                    for run in passes.runs.iter().filter(|r| r.changed) {
                        if !report.rewritten_by.contains(&run.name) {
                            report.rewritten_by.push(run.name);
                        }
                    }
                }
                Ok(g)
            }
        };
        timed(&mut report, "optimize", start);
        let text = r.as_ref().ok().map(kiln_ir::dump::to_text);
        let dup = text
            .as_ref()
            .and_then(|t| (0..li).find(|&j| texts[j].as_ref() == Some(t)));
        texts.push(text);
        same_as.push(dup);
        graphs.push(r);
    }
    let record = |report: &mut Report, b: Backend, li: usize, o: Outcome| {
        report.results.insert((b, LEVELS[li]), o);
    };
    // Interpreter and JIT.
    for (li, g) in graphs.iter().enumerate() {
        let g = match (g, same_as[li]) {
            (Err(o), _) => {
                for b in BACKENDS {
                    record(&mut report, b, li, o.clone());
                }
                continue;
            }
            (Ok(_), Some(j)) => {
                for b in [Backend::Interp, Backend::Jit] {
                    let o = report.results[&(b, LEVELS[j])].clone();
                    record(&mut report, b, li, o);
                }
                continue;
            }
            (Ok(g), None) => g,
        };
        let start = Instant::now();
        let o = match guarded(|| kiln_ir::interp::run(g, &case.inputs)) {
            Err(p) => Outcome::new(Kind::Crash, format!("interpreter panicked: {p}")),
            Ok(Err(e)) => Outcome::new(Kind::Error, format!("interpreter: {e}")),
            Ok(Ok(got)) => score(&mut report, case, &got),
        };
        timed(&mut report, "interp", start);
        record(&mut report, Backend::Interp, li, o);
        let start = Instant::now();
        let o = match guarded(|| {
            let mut p = JitProgram::compile(g, &CraneliftOptions::default())?;
            let first = p.run(&case.inputs)?;
            let again = p.run(&case.inputs)?;
            Ok::<_, kiln_backends::error::BackendError>((first, again))
        }) {
            Err(p) => Outcome::new(Kind::Crash, format!("cranelift panicked: {p}")),
            Ok(Err(e)) => Outcome::new(Kind::Error, format!("cranelift: {e}")),
            Ok(Ok((first, again))) => {
                if first != again {
                    Outcome::new(Kind::Mismatch, "the second run differs from the first")
                } else {
                    score(&mut report, case, &first)
                }
            }
        };
        timed(&mut report, "jit", start);
        record(&mut report, Backend::Jit, li, o);
    }
    // C: the distinct optimized graphs in one build.
    let start = Instant::now();
    let distinct: Vec<usize> = (0..LEVELS.len())
        .filter(|&li| graphs[li].is_ok() && same_as[li].is_none())
        .collect();
    let outcomes = if with_c {
        let gs: Vec<&Graph> = distinct
            .iter()
            .filter_map(|&li| graphs[li].as_ref().ok())
            .collect();
        run_c_batch(case, &gs, scratch)
    } else {
        vec![Outcome::new(Kind::Skipped, ""); distinct.len()]
    };
    for (li, g) in graphs.iter().enumerate() {
        if g.is_err() {
            continue;
        }
        let o = match same_as[li] {
            Some(j) => report.results[&(Backend::C, LEVELS[j])].clone(),
            None => {
                let o = outcomes[distinct.iter().position(|&d| d == li).unwrap_or(0)].clone();
                report.worst_ok.merge(o.errors);
                o
            }
        };
        record(&mut report, Backend::C, li, o);
    }
    timed(&mut report, "c", start);
    report
}

fn score(report: &mut Report, case: &Case, got: &[Tensor]) -> Outcome {
    let o = judge(case, got);
    report.worst_ok.merge(o.errors);
    o
}

// ---------------------------------------------------------------------------------------------
// Driver.

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("target"))
        .join("differential")
}

/// Runs the generator with `args`; panics with its output if it fails.
fn generate(args: &[&str]) -> Duration {
    let start = Instant::now();
    let script = common::repo_root().join("tests/differential/gen_graphs.py");
    let out = Command::new(common::python())
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", common::python().display()));
    assert!(
        out.status.success(),
        "gen_graphs.py {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed()
}

/// Runs every case (on `jobs` threads) and returns the reports in case order.
fn run_all(cases: &[Case], c_every: usize, jobs: usize, scratch: &Path) -> Vec<Report> {
    install_panic_hook();
    let next = AtomicUsize::new(0);
    let reports = Mutex::new(Vec::with_capacity(cases.len()));
    std::thread::scope(|s| {
        for worker in 0..jobs {
            let (next, reports) = (&next, &reports);
            let scratch = scratch.join(format!("w{worker}-{}", std::process::id()));
            std::thread::Builder::new()
                .stack_size(64 << 20)
                .spawn_scoped(s, move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let with_c = c_every > 0 && i % c_every == 0;
                    let r = run_case(i, case, with_c, &scratch);
                    reports.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                })
                .unwrap_or_else(|e| panic!("spawning a worker: {e}"));
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by_key(|r| r.case);
    reports
}

/// The summary table, the failure list, and whether anything failed.
fn summarize(title: &str, cases: &[Case], reports: &[Report], elapsed: Duration) -> (String, bool) {
    let mut s = String::new();
    let mut counts: BTreeMap<(Backend, OptLevel, Kind), usize> = BTreeMap::new();
    let mut listing = String::new();
    let mut failed_graphs = 0;
    let mut import_failures = 0;
    let mut times: BTreeMap<&'static str, Duration> = BTreeMap::new();
    let mut worst: (f64, usize) = (0.0, 0);
    let mut plain = Errors::default();
    // Distinct failures: kind and message with numbers blanked -> (graphs, first graph).
    let mut signatures: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for r in reports {
        for (k, t) in &r.times {
            *times.entry(k).or_default() += *t;
        }
        if r.worst_ok.scaled > worst.0 {
            worst = (r.worst_ok.scaled, r.case);
        }
        plain.merge(r.worst_ok);
        let name = cases[r.case].name();
        // (kind, detail) -> the backends and levels that ended that way.
        let mut by_outcome: BTreeMap<(Kind, String), Vec<String>> = BTreeMap::new();
        if r.import.kind != Kind::Ok {
            import_failures += 1;
            by_outcome
                .entry((r.import.kind, r.import.detail.clone()))
                .or_default()
                .push("import".into());
        }
        for ((b, l), o) in &r.results {
            *counts.entry((*b, *l, o.kind)).or_default() += 1;
            if !matches!(o.kind, Kind::Ok | Kind::Skipped) {
                by_outcome
                    .entry((o.kind, o.detail.clone()))
                    .or_default()
                    .push(format!("{} -{}", b.name(), level_name(*l)));
            }
        }
        if by_outcome.is_empty() {
            continue;
        }
        failed_graphs += 1;
        let _ = writeln!(listing, "  {name}");
        for ((kind, detail), wheres) in &by_outcome {
            let _ = writeln!(
                listing,
                "      {kind:?} at {}: {}",
                wheres.join(", "),
                one_line(detail)
            );
        }
        // One signature per kind of failure in this graph: the mismatches of one graph are one
        // failure however many backends and levels show it.
        let mut merged: BTreeMap<String, (Kind, String, Vec<String>)> = BTreeMap::new();
        for ((kind, detail), wheres) in &by_outcome {
            let key = if *kind == Kind::Mismatch {
                "mismatch".to_string()
            } else {
                format!("{kind:?} {}", blank(detail))
            };
            let e = merged
                .entry(key)
                .or_insert_with(|| (*kind, detail.clone(), Vec::new()));
            e.2.extend(wheres.iter().cloned());
            if *kind == Kind::Mismatch && !detail.contains("onnx reference") {
                e.1.clone_from(detail);
            }
        }
        for (kind, detail, wheres) in merged.values() {
            let sig = signature(*kind, detail, wheres);
            let e = signatures.entry(sig).or_insert((0, name.clone()));
            e.0 += 1;
        }
    }
    let _ = writeln!(s, "\n{title}");
    let _ = writeln!(
        s,
        "{:<10} {:<5} {:>7} {:>9} {:>7} {:>7} {:>8}",
        "backend", "level", "ok", "mismatch", "error", "crash", "skipped"
    );
    for b in BACKENDS {
        for l in LEVELS {
            let c = |k| counts.get(&(b, l, k)).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "{:<10} {:<5} {:>7} {:>9} {:>7} {:>7} {:>8}",
                b.name(),
                level_name(l),
                c(Kind::Ok),
                c(Kind::Mismatch),
                c(Kind::Error),
                c(Kind::Crash),
                c(Kind::Skipped)
            );
        }
    }
    if import_failures > 0 {
        let _ = writeln!(s, "import failures: {import_failures} graphs");
    }
    let cpu: Vec<String> = times
        .iter()
        .map(|(k, t)| format!("{k} {:.1}s", t.as_secs_f64()))
        .collect();
    let _ = writeln!(
        s,
        "wall {:.1}s; summed over threads: {}",
        elapsed.as_secs_f64(),
        cpu.join(", ")
    );
    let mut rewrites: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reports {
        for p in &r.rewritten_by {
            *rewrites.entry(p).or_default() += 1;
        }
    }
    let rewrites: Vec<String> = rewrites.iter().map(|(p, n)| format!("{p} {n}")).collect();
    let _ = writeln!(
        s,
        "graphs each pass rewrote at -O2: {}",
        rewrites.join(", ")
    );
    if let Some(case) = cases.get(worst.1).filter(|_| worst.0 > 0.0) {
        let _ = writeln!(
            s,
            "largest passing error: {:.3} of the tolerance ({}); under the plain 1e-4 * max(1, |want|) rule {:.3}, which {} passing output comparisons would fail",
            worst.0,
            case.name(),
            plain.plain,
            plain.plain_failures
        );
    }
    if failed_graphs > 0 {
        let _ = writeln!(
            s,
            "\n{} distinct failures (graphs, first graph; numbers blanked):",
            signatures.len()
        );
        for (sig, (n, first)) in &signatures {
            let _ = writeln!(s, "  {n:5}  {sig}\n         e.g. {first}");
        }
        let _ = writeln!(s, "\n{failed_graphs} failing graphs:\n{listing}");
    }
    (s, failed_graphs > 0)
}

fn one_line(s: &str) -> String {
    s.lines().map(str::trim).collect::<Vec<_>>().join(" / ")
}

/// `detail` on one line with numbers and quoted names (`'Conv_12'`) blanked.
fn blank(detail: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in one_line(detail).chars() {
        if c == '\'' {
            quoted = !quoted;
            out.push(c);
            if quoted {
                out.push('_');
            }
        } else if !quoted {
            out.push(if c.is_ascii_digit() { '#' } else { c });
        }
    }
    out
}

/// What identifies a failure across graphs: its kind, the backends and levels it shows on, and
/// its message with numbers and names blanked (for mismatches: the dtype, infinities, and
/// whether kiln agrees with the onnx reference where onnxruntime does not).
fn signature(kind: Kind, detail: &str, wheres: &[String]) -> String {
    let backends: Vec<&str> = {
        let mut b: Vec<&str> = wheres
            .iter()
            .map(|w| w.split(' ').next().unwrap_or(""))
            .collect();
        b.sort_by_key(|n| BACKENDS.iter().position(|x| x.name() == *n));
        b.dedup();
        b
    };
    let levels: Vec<&str> = {
        let mut l: Vec<&str> = wheres.iter().filter_map(|w| w.split(' ').nth(1)).collect();
        l.sort_unstable();
        l.dedup();
        l
    };
    let text = if kind == Kind::Mismatch {
        let dtype = if detail.contains("(bool)") {
            " (bool)"
        } else if detail.contains("(i") || detail.contains("(u") {
            " (int)"
        } else {
            ""
        };
        let inf = if detail.contains("inf") { " (inf)" } else { "" };
        let reference = if detail.contains("onnx reference") {
            " [kiln = onnx reference != onnxruntime]"
        } else {
            ""
        };
        format!("mismatch{dtype}{inf}{reference}")
    } else {
        format!(
            "{kind:?}: {}",
            blank(detail).chars().take(200).collect::<String>()
        )
    };
    format!("{} {}: {text}", backends.join("+"), levels.join(""))
}

fn load_cases(root: &Path, only: Option<&[String]>) -> Vec<Case> {
    common::model_dirs(root)
        .into_iter()
        .filter(|d| {
            only.is_none_or(|names| {
                names
                    .iter()
                    .any(|n| d.file_name().is_some_and(|f| f.to_string_lossy() == *n))
            })
        })
        .map(|d| Case::load(&d))
        .collect()
}

fn jobs() -> usize {
    env_usize(
        "KILN_DIFF_JOBS",
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    )
    .max(1)
}

#[test]
fn random_graphs_match_onnxruntime() {
    let count = env_usize("KILN_DIFF_GRAPHS", 300);
    let seed = env_usize("KILN_DIFF_SEED", 1);
    let c_every = env_usize("KILN_DIFF_C_EVERY", 5);
    let only: Option<Vec<String>> = std::env::var("KILN_DIFF_ONLY")
        .ok()
        .map(|s| s.split(',').map(|n| n.trim().to_string()).collect());
    let start = Instant::now();
    let dir = target_dir().join(format!("seed-{seed}-n{count}"));
    let jobs = jobs();
    let gen_time = generate(&[
        "--seed",
        &seed.to_string(),
        "--count",
        &count.to_string(),
        "--jobs",
        &jobs.to_string(),
        "--out",
        &dir.to_string_lossy(),
    ]);
    let cases = load_cases(&dir, only.as_deref());
    assert!(!cases.is_empty(), "no graphs in {}", dir.display());
    let reports = run_all(&cases, c_every, jobs, &target_dir().join("scratch"));
    let title = format!(
        "differential: {} graphs of seed {seed} in {}, {jobs} threads, C on one graph in {c_every}; generation {:.1}s",
        cases.len(),
        dir.display(),
        gen_time.as_secs_f64()
    );
    let (text, failed) = summarize(&title, &cases, &reports, start.elapsed());
    assert!(!failed, "random graphs disagree with onnxruntime:{text}");
    eprintln!("{text}");
}

#[test]
fn regressions_match_onnxruntime() {
    let start = Instant::now();
    let dir = target_dir().join("regressions");
    generate(&["--regressions", "--out", &dir.to_string_lossy()]);
    let cases = load_cases(&dir, None);
    let reports = run_all(&cases, 1, jobs(), &target_dir().join("scratch-regressions"));
    let title = format!(
        "differential regressions: {} cases in {}",
        cases.len(),
        dir.display()
    );
    let (text, failed) = summarize(&title, &cases, &reports, start.elapsed());
    assert!(!failed, "regression cases disagree with onnxruntime:{text}");
    eprintln!("{text}");
}
