//! Benchmark: every model in `tests/models/` (and the float MLPerf Tiny models when `../shared`
//! is present) on every target's default board, plus rv32imac on sifive_e, as `kiln verify`
//! runs them by default (-O2). Prints one markdown
//! table: pass/fail against the interpreter, max abs error, flash, RAM (static + stack peak),
//! arena, stack and instructions executed by one inference. Models too large for a board show
//! the error. Run with `cargo bench --bench board_matrix` (about 2 minutes on 2 cores);
//! `cargo bench --bench board_matrix -- cortex-m4 resnet` filters by target and model name.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use kiln_targets::{compare::compare_outputs, BoardOptions, TargetError};

struct Job {
    model: PathBuf,
    target: &'static str,
    board: &'static str,
}

fn run_job(job: &Job) -> String {
    let name = job
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let head = format!("| {name} | {} | {} |", job.target, job.board);
    let graph = match std::fs::read(job.model.join("model.onnx"))
        .map_err(|e| e.to_string())
        .and_then(|b| {
            kiln_frontend::import_model(&b, &Default::default()).map_err(|e| e.to_string())
        }) {
        Ok(m) => m.graph,
        Err(e) => return format!("{head} import failed: {e} |"),
    };
    let input = common::read_npy(&job.model.join("input_0.npy"));
    let inputs = vec![input];
    let expected = match kiln_ir::interp::run(&graph, &inputs) {
        Ok(o) => o,
        Err(e) => return format!("{head} interpreter failed: {e} |"),
    };
    let (target, board) = match kiln_targets::resolve(job.target, Some(job.board)) {
        Ok(tb) => tb,
        Err(e) => return format!("{head} {e} |"),
    };
    // As `kiln verify` runs by default: the graph at -O2, with the -O2 schedule; the reference
    // is the imported graph.
    let mut optimized = graph.clone();
    if let Err(e) = kiln_passes::optimize(&mut optimized, &Default::default()) {
        return format!("{head} optimize failed: {e} |");
    }
    let mut c = kiln_backends::c::COptions::default();
    c.schedule.oc_tile = 4;
    c.schedule.unroll_limit = 3;
    let started = std::time::Instant::now();
    match kiln_targets::run_on_board(
        &optimized,
        &inputs,
        &c,
        target,
        board,
        &BoardOptions::default(),
    ) {
        Ok(run) => {
            let cmp = compare_outputs(&run.outputs, &expected);
            format!(
                "{head} {} | {:.1e} | {} | {} | {} | {} | {} | {:.1} |",
                if cmp.passed { "pass" } else { "FAIL" },
                cmp.max_abs_error,
                run.flash_bytes(),
                run.ram_bytes(),
                run.arena_bytes,
                run.stack_bytes,
                run.instructions,
                started.elapsed().as_secs_f64()
            )
        }
        Err(TargetError::DoesNotFit { .. }) => {
            format!("{head} does not fit | | | | | | | |")
        }
        Err(e) => format!("{head} ERROR: {} |", e.to_string().replace('\n', " ")),
    }
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let models = common::float_models();
    let mut boards: Vec<(&'static str, &'static str)> = kiln_targets::TARGETS
        .iter()
        .map(|t| (t.name, t.boards[0]))
        .collect();
    boards.push(("rv32imac", "sifive_e"));
    let jobs: Vec<Job> = models
        .iter()
        .flat_map(|m| {
            boards.iter().map(move |&(target, board)| Job {
                model: m.clone(),
                target,
                board,
            })
        })
        .filter(|j| {
            filters.is_empty()
                || filters.iter().all(|f| {
                    j.target.contains(f.as_str())
                        || j.board.contains(f.as_str())
                        || j.model.to_string_lossy().contains(f.as_str())
                })
        })
        .collect();
    let rows = common::parallel_map(&jobs, run_job);
    println!("| model | target | board | result | max abs error | flash bytes | RAM bytes | arena bytes | stack bytes | instructions | wall s |");
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
}
