//! Benchmark: the static memory plan of every model, printed as a table of arena size, the
//! schedule's lower bound and the naive sum of all intermediates. Run with
//! `cargo bench --bench arena`.

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let dirs = common::float_models();
    println!("| model | arena bytes | lower bound | arena / bound | naive sum | naive / arena |");
    println!("|---|---:|---:|---:|---:|---:|");
    for dir in dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(bytes) = std::fs::read(dir.join("model.onnx")) else {
            continue;
        };
        let graph = match kiln_frontend::import_model(&bytes, &Default::default()) {
            Ok(m) => m.graph,
            Err(e) => {
                println!("| {name} | import failed: {e} |");
                continue;
            }
        };
        match kiln_passes::plan_memory(&graph, 16) {
            Ok(p) => println!(
                "| {name} | {} | {} | {:.3} | {} | {:.2}x |",
                p.arena_bytes,
                p.lower_bound_bytes,
                p.arena_bytes as f64 / p.lower_bound_bytes.max(1) as f64,
                p.naive_bytes,
                p.naive_bytes as f64 / p.arena_bytes.max(1) as f64
            ),
            Err(e) => println!("| {name} | plan failed: {e} |"),
        }
    }
}
