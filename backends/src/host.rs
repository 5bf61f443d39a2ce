//! Runs generated C on the host: writes the program and a small harness into a temporary
//! directory, builds it with the host compiler (`$CC`, default `cc`, `-O2`), and runs it on
//! raw input files. This is how `kiln run --backend c` and the tests execute the C backend.

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn harness(graph: &Graph, prefix: &str) -> String {
    let up = prefix.to_ascii_uppercase();
    let n_in = graph.inputs().len();
    let n_out = graph.outputs().len();
    let mut s = String::new();
    s.push_str("/* Host harness: reads raw inputs from files, writes raw outputs. */\n");
    s.push_str("#include <stdio.h>\n#include <stdlib.h>\n");
    s.push_str(&format!("#include \"{prefix}.h\"\n\n"));
    s.push_str("static void *slurp(const char *path, size_t bytes) {\n");
    s.push_str(
        "    void *buf = calloc(bytes ? bytes : 1, 1);\n    FILE *f = fopen(path, \"rb\");\n",
    );
    s.push_str("    if (!buf || !f || fread(buf, 1, bytes, f) != bytes) { fprintf(stderr, \"cannot read %s\\n\", path); exit(3); }\n");
    s.push_str("    fclose(f);\n    return buf;\n}\n\n");
    s.push_str("int main(int argc, char **argv) {\n");
    s.push_str(&format!(
        "    if (argc != {}) {{ fprintf(stderr, \"usage: run IN... OUT...\\n\"); return 2; }}\n",
        1 + n_in + n_out
    ));
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
    s.push_str(&format!(
        "    int status = {prefix}_run({});\n",
        args.join(", ")
    ));
    s.push_str(
        "    if (status != 0) { fprintf(stderr, \"run failed: %d\\n\", status); return 4; }\n",
    );
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
    let result = build_and_run(graph, inputs, c, host, &program.files, &dir);
    if host.keep_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn build_and_run(
    graph: &Graph,
    inputs: &[Tensor],
    c: &COptions,
    host: &HostOptions,
    files: &[(String, String)],
    dir: &Path,
) -> Result<Vec<Tensor>, BackendError> {
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).map_err(|e| host_err(format!("writing {name}: {e}")))
    };
    for (name, text) in files {
        write(name, text.as_bytes())?;
    }
    write("harness.c", harness(graph, &c.name).as_bytes())?;
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
    let mut cmd = Command::new(&exe);
    for (i, t) in inputs.iter().enumerate() {
        let path = dir.join(format!("in{i}.bin"));
        write(&format!("in{i}.bin"), &t.data().to_le_bytes())?;
        cmd.arg(path);
    }
    for i in 0..graph.outputs().len() {
        cmd.arg(dir.join(format!("out{i}.bin")));
    }
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
    graph
        .outputs()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ty = &graph.value(v).ty;
            let raw = std::fs::read(dir.join(format!("out{i}.bin")))
                .map_err(|e| host_err(format!("reading output {i}: {e}")))?;
            from_raw(ty.dtype, ty.shape.clone(), &raw)
        })
        .collect()
}
