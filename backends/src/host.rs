//! Runs generated C on the host: writes the program and a small harness into a temporary
//! directory, builds it with the host compiler (`$CC`, default `cc`, `-O2`), and runs it on
//! raw input files. This is how `kiln run --backend c` and the tests execute the C backend.
//! `time_c` builds the same program with a timing harness that runs the model many times and
//! reports each run's latency (for `benches/engines.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_ir::{DType, Graph, Tensor, TensorData};

use crate::c::{emit_c, COptions};
use crate::error::BackendError;

/// Extra compiler flags, e.g. sanitizers.
#[derive(Clone, Debug, Default)]
pub struct HostOptions {
    pub cflags: Vec<String>,
    /// Keep the build directory (for debugging); it is removed otherwise.
    pub keep_dir: Option<PathBuf>,
}

/// How `time_c` times the model: `warmup` untimed runs, then timed runs until both `min_runs`
/// runs and `min_time` have passed, but never more than `max_runs`.
#[derive(Clone, Debug)]
pub struct TimingOptions {
    pub warmup: usize,
    pub min_runs: usize,
    pub min_time: Duration,
    pub max_runs: usize,
}

impl Default for TimingOptions {
    fn default() -> Self {
        TimingOptions {
            warmup: 3,
            min_runs: 10,
            min_time: Duration::from_millis(500),
            max_runs: 1_000_000,
        }
    }
}

/// What `time_c` measured.
#[derive(Clone, Debug)]
pub struct CTiming {
    /// Graph to C text (`emit_c`).
    pub emit: Duration,
    /// C text to executable (the host compiler, `-O2`).
    pub build: Duration,
    /// Latency of each timed run, in order (`clock_gettime(CLOCK_MONOTONIC)` around the
    /// `PREFIX_run` call, inside the harness).
    pub runs: Vec<Duration>,
    /// The outputs of the last run.
    pub outputs: Vec<Tensor>,
}

/// The harness `main`. Without `timing` it runs the model once; with it, it takes four more
/// arguments (warm-up runs, minimum runs, minimum nanoseconds, maximum runs) and prints the
/// nanoseconds of each timed run to stdout, one per line.
fn harness(graph: &Graph, prefix: &str, timing: bool) -> String {
    let up = prefix.to_ascii_uppercase();
    let n_in = graph.inputs().len();
    let n_out = graph.outputs().len();
    let mut s = String::new();
    if timing {
        s.push_str("/* Host timing harness: reads raw inputs, runs the model repeatedly, prints per-run ns. */\n");
        s.push_str("#define _POSIX_C_SOURCE 199309L\n");
        s.push_str("#include <stdio.h>\n#include <stdlib.h>\n#include <time.h>\n");
    } else {
        s.push_str("/* Host harness: reads raw inputs from files, writes raw outputs. */\n");
        s.push_str("#include <stdio.h>\n#include <stdlib.h>\n");
    }
    s.push_str(&format!("#include \"{prefix}.h\"\n\n"));
    s.push_str("static void *slurp(const char *path, size_t bytes) {\n");
    s.push_str(
        "    void *buf = calloc(bytes ? bytes : 1, 1);\n    FILE *f = fopen(path, \"rb\");\n",
    );
    s.push_str("    if (!buf || !f || fread(buf, 1, bytes, f) != bytes) { fprintf(stderr, \"cannot read %s\\n\", path); exit(3); }\n");
    s.push_str("    fclose(f);\n    return buf;\n}\n\n");
    if timing {
        s.push_str("static long long now_ns(void) {\n    struct timespec t;\n    clock_gettime(CLOCK_MONOTONIC, &t);\n    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;\n}\n\n");
    }
    s.push_str("int main(int argc, char **argv) {\n");
    if timing {
        s.push_str(&format!(
            "    if (argc != {}) {{ fprintf(stderr, \"usage: run IN... OUT... WARMUP MIN_RUNS MIN_NS MAX_RUNS\\n\"); return 2; }}\n",
            5 + n_in + n_out
        ));
    } else {
        s.push_str(&format!(
            "    if (argc != {}) {{ fprintf(stderr, \"usage: run IN... OUT...\\n\"); return 2; }}\n",
            1 + n_in + n_out
        ));
    }
    s.push_str(&format!("    void *arena = aligned_alloc({up}_ARENA_ALIGN, (({up}_ARENA_BYTES + {up}_ARENA_ALIGN - 1) / {up}_ARENA_ALIGN) * {up}_ARENA_ALIGN);\n"));
    let mut args = vec!["arena".to_string()];
    for (i, &v) in graph.inputs().iter().enumerate() {
        let bytes = graph.value(v).ty.size_bytes();
        s.push_str(&format!(
            "    void *in{i} = slurp(argv[{}], {bytes});\n",
            1 + i
        ));
        args.push(format!("in{i}"));
    }
    for (i, &v) in graph.outputs().iter().enumerate() {
        let bytes = graph.value(v).ty.size_bytes();
        s.push_str(&format!(
            "    void *out{i} = calloc({}, 1);\n",
            bytes.max(1)
        ));
        args.push(format!("out{i}"));
    }
    let call = format!("{prefix}_run({})", args.join(", "));
    if timing {
        let a = 1 + n_in + n_out;
        s.push_str(&format!(
            "    long warmup = atol(argv[{a}]), min_runs = atol(argv[{}]), max_runs = atol(argv[{}]);\n",
            a + 1,
            a + 3
        ));
        s.push_str(&format!("    long long min_ns = atoll(argv[{}]);\n", a + 2));
        s.push_str("    if (max_runs < 1) max_runs = 1;\n");
        s.push_str("    long long *ns = malloc(sizeof(long long) * (size_t)max_runs);\n");
        s.push_str("    if (!ns) { fprintf(stderr, \"out of memory\\n\"); return 3; }\n");
        s.push_str("    int status = 0;\n");
        s.push_str(&format!(
            "    for (long i = 0; i < warmup && status == 0; i++) status = {call};\n"
        ));
        s.push_str("    long n = 0;\n    long long start = now_ns();\n");
        s.push_str("    while (status == 0) {\n");
        s.push_str(&format!(
            "        long long a = now_ns();\n        status = {call};\n        long long b = now_ns();\n"
        ));
        s.push_str("        ns[n++] = b - a;\n");
        s.push_str("        if (n >= max_runs || (n >= min_runs && b - start >= min_ns)) break;\n");
        s.push_str("    }\n");
        s.push_str(
            "    if (status != 0) { fprintf(stderr, \"run failed: %d\\n\", status); return 4; }\n",
        );
        s.push_str("    for (long i = 0; i < n; i++) printf(\"%lld\\n\", ns[i]);\n");
        s.push_str("    free(ns);\n");
    } else {
        s.push_str(&format!("    int status = {call};\n"));
        s.push_str(
            "    if (status != 0) { fprintf(stderr, \"run failed: %d\\n\", status); return 4; }\n",
        );
    }
    for (i, &v) in graph.outputs().iter().enumerate() {
        let bytes = graph.value(v).ty.size_bytes();
        s.push_str(&format!(
            "    {{ FILE *f = fopen(argv[{}], \"wb\"); if (!f || fwrite(out{i}, 1, {bytes}, f) != {bytes}) return 5; fclose(f); free(out{i}); }}\n",
            1 + n_in + i
        ));
    }
    for i in 0..n_in {
        s.push_str(&format!("    free(in{i});\n"));
    }
    s.push_str("    free(arena);\n    return 0;\n}\n");
    s
}

fn from_raw(dtype: DType, shape: Vec<usize>, raw: &[u8]) -> Result<Tensor, BackendError> {
    let data = TensorData::from_le_bytes(dtype, raw).ok_or_else(|| {
        host_err(format!(
            "output file has {} bytes, not whole {dtype} elements",
            raw.len()
        ))
    })?;
    Ok(Tensor::new(shape, data)?)
}

fn host_err(msg: String) -> BackendError {
    BackendError::Lowering(msg)
}

fn unique_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("kiln-c-{}-{n}", std::process::id()))
}

/// Compiles `graph` to C, builds it for the host and runs it on `inputs`.
pub fn run_c(
    graph: &Graph,
    inputs: &[Tensor],
    c: &COptions,
    host: &HostOptions,
) -> Result<Vec<Tensor>, BackendError> {
    let program = emit_c(graph, c)?;
    let dir = host.keep_dir.clone().unwrap_or_else(unique_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| host_err(format!("creating {}: {e}", dir.display())))?;
    let result = build(graph, c, host, &program.files, &dir, false)
        .and_then(|exe| run_exe(graph, inputs, &exe, &dir, &[]).map(|(_, outputs)| outputs));
    if host.keep_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Generated C built once for the host, then run on many inputs (one process per run): what
/// `kiln eval` uses to measure a data set through the C backend.
#[derive(Debug)]
pub struct CProgram {
    graph: Graph,
    dir: PathBuf,
    exe: PathBuf,
    keep: bool,
}

impl CProgram {
    /// Compiles `graph` to C and builds it with the host compiler.
    pub fn build(
        graph: &Graph,
        c: &COptions,
        host: &HostOptions,
    ) -> Result<CProgram, BackendError> {
        let program = emit_c(graph, c)?;
        let dir = host.keep_dir.clone().unwrap_or_else(unique_dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| host_err(format!("creating {}: {e}", dir.display())))?;
        let exe = build(graph, c, host, &program.files, &dir, false);
        let keep = host.keep_dir.is_some();
        match exe {
            Ok(exe) => Ok(CProgram {
                graph: graph.clone(),
                dir,
                exe,
                keep,
            }),
            Err(e) => {
                if !keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Err(e)
            }
        }
    }

    /// Runs the built program on `inputs`.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        run_exe(&self.graph, inputs, &self.exe, &self.dir, &[]).map(|(_, outputs)| outputs)
    }
}

impl Drop for CProgram {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Compiles `graph` to C, builds it for the host with a timing harness and runs it on `inputs`
/// as `timing` says, single-threaded. Returns the time to emit and to build, each run's latency
/// and the last run's outputs.
pub fn time_c(
    graph: &Graph,
    inputs: &[Tensor],
    c: &COptions,
    host: &HostOptions,
    timing: &TimingOptions,
) -> Result<CTiming, BackendError> {
    let start = Instant::now();
    let program = emit_c(graph, c)?;
    let emit = start.elapsed();
    let dir = host.keep_dir.clone().unwrap_or_else(unique_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| host_err(format!("creating {}: {e}", dir.display())))?;
    let result = (|| {
        let start = Instant::now();
        let exe = build(graph, c, host, &program.files, &dir, true)?;
        let build = start.elapsed();
        let args = [
            timing.warmup.to_string(),
            timing.min_runs.to_string(),
            timing.min_time.as_nanos().to_string(),
            timing.max_runs.to_string(),
        ];
        let (stdout, outputs) = run_exe(graph, inputs, &exe, &dir, &args)?;
        let runs = String::from_utf8_lossy(&stdout)
            .lines()
            .map(|l| {
                l.trim()
                    .parse::<u64>()
                    .map(Duration::from_nanos)
                    .map_err(|e| host_err(format!("timing harness printed '{l}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CTiming {
            emit,
            build,
            runs,
            outputs,
        })
    })();
    if host.keep_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Writes the sources and the harness into `dir` and builds them; returns the executable.
fn build(
    graph: &Graph,
    c: &COptions,
    host: &HostOptions,
    files: &[(String, String)],
    dir: &Path,
    timing: bool,
) -> Result<PathBuf, BackendError> {
    for (name, text) in files {
        write_file(dir, name, text.as_bytes())?;
    }
    write_file(dir, "harness.c", harness(graph, &c.name, timing).as_bytes())?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let exe = dir.join("model_run");
    let out = Command::new(&cc)
        .args(["-std=c99", "-O2", "-D_ISOC11_SOURCE", "-o"])
        .arg(&exe)
        .arg(dir.join(format!("{}.c", c.name)))
        .arg(dir.join("harness.c"))
        .args(&host.cflags)
        .arg("-lm")
        .output()
        .map_err(|e| host_err(format!("running the C compiler '{cc}': {e}")))?;
    if !out.status.success() {
        return Err(host_err(format!(
            "the C compiler rejected the generated code:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(exe)
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), BackendError> {
    std::fs::write(dir.join(name), bytes).map_err(|e| host_err(format!("writing {name}: {e}")))
}

/// Runs the built harness on `inputs` (plus `extra` arguments); returns its stdout and the
/// outputs it wrote.
fn run_exe(
    graph: &Graph,
    inputs: &[Tensor],
    exe: &Path,
    dir: &Path,
    extra: &[String],
) -> Result<(Vec<u8>, Vec<Tensor>), BackendError> {
    let mut cmd = Command::new(exe);
    for (i, t) in inputs.iter().enumerate() {
        let path = dir.join(format!("in{i}.bin"));
        write_file(dir, &format!("in{i}.bin"), &t.data().to_le_bytes())?;
        cmd.arg(path);
    }
    for i in 0..graph.outputs().len() {
        cmd.arg(dir.join(format!("out{i}.bin")));
    }
    cmd.args(extra);
    let run = cmd
        .output()
        .map_err(|e| host_err(format!("running the compiled model: {e}")))?;
    if !run.status.success() {
        return Err(host_err(format!(
            "the compiled model failed ({}):\n{}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        )));
    }
    if !run.stderr.is_empty() {
        // Sanitizer reports go to stderr without failing the run.
        return Err(host_err(format!(
            "the compiled model reported:\n{}",
            String::from_utf8_lossy(&run.stderr)
        )));
    }
    let outputs = graph
        .outputs()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ty = &graph.value(v).ty;
            let raw = std::fs::read(dir.join(format!("out{i}.bin")))
                .map_err(|e| host_err(format!("reading output {i}: {e}")))?;
            from_raw(ty.dtype, ty.shape.clone(), &raw)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((run.stdout, outputs))
}
