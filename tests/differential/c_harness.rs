//! The C backend of the differential test: every distinct optimized graph of one case emitted
//! into one program with a harness that reads raw inputs and writes raw outputs, built in one
//! `cc` run (each model on its own when the batch fails, to attribute the failure) and run once
//! per model.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_backends::c::{emit_c, COptions};
use kiln_ir::{Graph, Tensor, TensorData};

use super::compare::judge;
use super::{guarded, Case, Kind, Outcome};

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
pub(super) fn run_c_batch(case: &Case, graphs: &[&Graph], scratch: &Path) -> Vec<Outcome> {
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

fn first_lines(s: &str, n: usize) -> String {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .collect::<Vec<_>>()
        .join(" | ")
}
