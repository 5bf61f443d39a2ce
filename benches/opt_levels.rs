//! Benchmark: what `-O2` buys. For every model in `tests/models/` (and the float MLPerf Tiny
//! models when `../shared` is present): node count, MACs, weight bytes and arena bytes as
//! imported and after `-O2`, and the instructions one inference executes on the Cortex-M4 board
//! (QEMU mps2-an386, gcc -O2) at `-O0` and `-O2` (graph passes plus the -O2 schedule), checked
//! against the interpreter. The MLPerf
//! rows also show onnx2c's published count for the same board and compiler flags.
//! Run with `cargo bench --bench opt_levels` (about a minute).

#[path = "../tests/common/mod.rs"]
mod common;

use kiln_passes::{OptLevel, PassOptions};
use kiln_targets::{compare::compare_outputs, BoardOptions};

/// onnx2c's Cortex-M4 instruction counts (mps2-an386, one inference, gcc -O2), from issue 6.
const ONNX2C_M4: &[(&str, u64)] = &[
    ("mlperf_kws_dscnn_hybrid", 24_180_000),
    ("mlperf_vww_mobilenet_v1_025_f32", 69_030_000),
    ("mlperf_ic_resnet8_f32", 233_700_000),
    ("mlperf_ad_autoencoder_f32", 1_620_000),
];

/// Instructions on the Cortex-M4 board, or the error. `speed` selects the schedule `kiln compile
/// -O2` uses by default (four output channels per pass, 3-tap loops unrolled).
fn m4_instructions(
    graph: &kiln_ir::Graph,
    inputs: &[kiln_ir::Tensor],
    want: &[kiln_ir::Tensor],
    speed: bool,
) -> String {
    let mut c = kiln_backends::c::COptions::default();
    if speed {
        c.schedule.oc_tile = 4;
        c.schedule.unroll_limit = 3;
    }
    let Ok((target, board)) = kiln_targets::resolve("cortex-m4", None) else {
        return "no target".into();
    };
    match kiln_targets::run_on_board(graph, inputs, &c, target, board, &BoardOptions::default()) {
        Ok(run) if compare_outputs(&run.outputs, want).passed => run.instructions.to_string(),
        Ok(_) => "WRONG OUTPUT".into(),
        Err(e) => format!("error: {}", e.to_string().lines().next().unwrap_or("")),
    }
}

fn main() {
    let dirs = common::float_models();
    println!("| model | nodes | MACs | weight bytes | arena bytes | M4 instructions -O0 | M4 instructions -O2 | -O2/-O0 | onnx2c M4 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
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
        let inputs = vec![common::read_npy(&dir.join("input_0.npy"))];
        let Ok(want) = kiln_ir::interp::run(&graph, &inputs) else {
            continue;
        };
        let mut optimized = graph.clone();
        let options = PassOptions {
            level: OptLevel::O2,
            ..PassOptions::default()
        };
        if let Err(e) = kiln_passes::optimize(&mut optimized, &options) {
            println!("| {name} | optimize failed: {e} |");
            continue;
        }
        let (Ok(b), Ok(a)) = (
            kiln_passes::summarize(&graph),
            kiln_passes::summarize(&optimized),
        ) else {
            println!("| {name} | summary failed |");
            continue;
        };
        let o0 = m4_instructions(&graph, &inputs, &want, false);
        let o2 = m4_instructions(&optimized, &inputs, &want, true);
        let ratio = match (o0.parse::<f64>(), o2.parse::<f64>()) {
            (Ok(x), Ok(y)) if x > 0.0 => format!("{:.2}", y / x),
            _ => "-".into(),
        };
        let onnx2c = ONNX2C_M4
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("-".to_string(), |(_, c)| c.to_string());
        println!(
            "| {name} | {} -> {} | {} -> {} | {} -> {} | {} -> {} | {o0} | {o2} | {ratio} | {onnx2c} |",
            b.nodes, a.nodes, b.macs, a.macs, b.weight_bytes, a.weight_bytes, b.arena_bytes, a.arena_bytes
        );
    }
}
