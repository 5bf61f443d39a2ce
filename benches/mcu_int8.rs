//! Benchmark: the four trained MLPerf Tiny int8 models (`../shared/models/mlcommons_tiny_onnx/
//! *_int8`) through `kiln verify` on cortex-m4 (DSP kernels), cortex-m55 (Helium) and rv32imac
//! (scalar), each run checked bit for bit against the interpreter. Prints one markdown table:
//! instructions of one inference beside the peers of issue 12 (TFLM + CMSIS-NN on the same
//! QEMU boards; TFLM's reference kernels on RV32) and the ratio to the goal, instructions per
//! MAC, flash for code (`.text` + `.data` image: everything but the constants) and for the
//! constants (`.rodata`: weights, biases, requantization records, lookup tables) apart, and RAM
//! as TFLM counts its arena (kiln's arena plus the input and output buffers) beside the
//! measured static RAM + stack peak.
//!
//! Run with `cargo bench --bench mcu_int8` (about a minute on 2 cores); arguments filter by
//! target and model name (`cargo bench --bench mcu_int8 -- cortex-m55 kws`). Skips with a
//! message when `../shared` is absent.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The peers of issue 12 (exact QEMU instruction counts, gcc -O2): name fragment, TFLM +
/// CMSIS-NN on cortex-m4, TFLM's arena including I/O (bytes), TFLM + CMSIS-NN with Helium on
/// cortex-m55, TFLM reference kernels on rv32.
const PEERS: [(&str, u64, u64, u64, u64); 4] = [
    ("kws", 7_696_885, 22_820, 1_812_602, 44_383_022),
    ("vww", 24_101_905, 100_708, 6_558_264, 110_174_143),
    ("resnet8", 29_863_041, 54_996, 4_911_116, 125_608_258),
    ("_ad_", 582_951, 2_580, 149_996, 2_482_121),
];

/// The targets and the ratio to the peer issue 12 asks for on each.
const TARGETS: [(&str, f64); 3] = [("cortex-m4", 1.0), ("cortex-m55", 1.0), ("rv32imac", 0.3)];

struct Job {
    model: PathBuf,
    target: &'static str,
    goal: f64,
}

fn name_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Multiply-accumulates of one inference and the bytes of the graph's inputs and outputs.
fn model_figures(dir: &Path) -> Result<(u64, u64), String> {
    let bytes = std::fs::read(dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let g = kiln_frontend::import_model(&bytes, &Default::default())
        .map_err(|e| e.to_string())?
        .graph;
    let order = g.topo_order().map_err(|e| e.to_string())?;
    let macs = order
        .iter()
        .map(|&id| {
            let node = g.node(id);
            let ins: Vec<_> = node.inputs.iter().map(|&v| &g.value(v).ty).collect();
            let outs: Vec<_> = node
                .outputs
                .iter()
                .map(|&v| g.value(v).ty.clone())
                .collect();
            kiln_ir::ops::macs(&node.op, &ins, &outs)
        })
        .sum();
    let io = g
        .inputs()
        .iter()
        .chain(g.outputs())
        .map(|&v| {
            let t = &g.value(v).ty;
            (t.numel() * t.dtype.size_bytes()) as u64
        })
        .sum();
    Ok((macs, io))
}

fn run_job(job: &Job) -> String {
    let name = name_of(&job.model);
    let head = format!("| {name} | {} |", job.target);
    let Some(&(_, m4, tflm_arena, m55, rv32)) = PEERS.iter().find(|p| name.contains(p.0)) else {
        return format!("{head} no peer figures |");
    };
    let peer = match job.target {
        "cortex-m4" => m4,
        "cortex-m55" => m55,
        _ => rv32,
    };
    let (macs, io) = match model_figures(&job.model) {
        Ok(f) => f,
        Err(e) => return format!("{head} import failed: {e} |"),
    };
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("verify")
        .arg(job.model.join("model.onnx"))
        .args(["--target", job.target, "--json", "--input"])
        .arg(job.model.join("input_0.npy"))
        .output();
    let doc: serde_json::Value = match out {
        Ok(o) => match serde_json::from_slice(&o.stdout) {
            Ok(d) => d,
            Err(_) => {
                let err = String::from_utf8_lossy(&o.stderr).replace('\n', " ");
                return format!("{head} ERROR: {err} |");
            }
        },
        Err(e) => return format!("{head} ERROR: {e} |"),
    };
    let u = |k: &str| doc[k].as_u64().unwrap_or(0);
    let section = |k: &str| doc["sections"][k].as_u64().unwrap_or(0);
    let insns = u("instructions");
    let ratio = insns as f64 / peer as f64;
    let ram = u("arena_bytes") + io;
    format!(
        "{head} {} | {insns} | {peer} | {ratio:.2}x | {} | {:.3} | {} | {} | {ram} | {tflm_arena} | {} |",
        if doc["passed"] == true { "exact" } else { "FAIL" },
        if ratio <= job.goal {
            format!("met (<= {}x)", job.goal)
        } else {
            format!("NOT met (<= {}x)", job.goal)
        },
        insns as f64 / macs.max(1) as f64,
        section("text") + section("data"),
        section("rodata"),
        u("ram_bytes"),
    )
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let models = common::mlperf_int8_models();
    if models.is_empty() {
        return;
    }
    let jobs: Vec<Job> = TARGETS
        .iter()
        .flat_map(|&(target, goal)| {
            models.iter().map(move |m| Job {
                model: m.clone(),
                target,
                goal,
            })
        })
        .filter(|j| {
            filters.iter().all(|f| {
                j.target.contains(f.as_str()) || j.model.to_string_lossy().contains(f.as_str())
            })
        })
        .collect();
    let rows = common::parallel_map(&jobs, run_job);
    println!("| model | target | outputs vs interpreter | instructions | peer | ratio | goal | instructions/MAC | flash code B | flash constants B | RAM: arena + I/O B | TFLM arena + I/O B | static RAM + stack peak B |");
    println!("|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
}
