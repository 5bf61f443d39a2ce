//! `kiln inspect`: per-layer table (op, output shape, params, MACs), totals, and the support
//! check that lists every problem in the model at once.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use kiln_ir::{Graph, TensorType};

use super::load::{import_options, read_model_bytes, write_atomically};
use super::ModelArgs;

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the graph in Graphviz DOT format to FILE (render with `dot -Tsvg`).
    #[arg(long, value_name = "FILE")]
    dot: Option<PathBuf>,
    #[command(flatten)]
    opt: super::OptArgs,
    #[command(flatten)]
    quant: super::quantize::QuantArgs,
    #[command(flatten)]
    prune: super::prune::PruneArgs,
}

struct Row {
    name: String,
    op: &'static str,
    outputs: Vec<TensorType>,
    /// The quantization of each output (`s=.. zp=..`, or empty).
    quant: Vec<String>,
    params: usize,
    macs: u64,
}

struct Totals {
    nodes: usize,
    params: usize,
    weight_bytes: usize,
    macs: u64,
}

pub fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let bytes = read_model_bytes(&args.model.model)?;
    let options = import_options(&args.model)?;
    let model = match kiln_frontend::import_model(&bytes, &options) {
        Ok(m) => m,
        Err(e) => return report_problems(args, &e),
    };
    // Plain inspect shows the graph as imported; -O (and --quantize) show it as it will be
    // compiled.
    let prepared = super::load::prepare_model(
        model,
        &args.opt,
        &args.quant,
        &args.prune,
        kiln_passes::OptLevel::O0,
    )?;
    let model = &prepared.model;
    let graph = &model.graph;
    let (rows, totals) = table(graph)?;
    let fallbacks = if prepared.is_integer() {
        super::quantize::float_fallbacks(graph)
    } else {
        Vec::new()
    };
    if let Some(path) = &args.dot {
        write_atomically(path, kiln_ir::dump::to_dot(graph).as_bytes())?;
    }
    if args.json {
        print_json(args, graph, &rows, &totals, model.opset, &fallbacks)?;
    } else {
        print_table(args, graph, &rows, &totals, model.opset);
        print_fallbacks(&fallbacks);
    }
    Ok(ExitCode::SUCCESS)
}

fn table(graph: &Graph) -> anyhow::Result<(Vec<Row>, Totals)> {
    let order = graph.topo_order().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut rows = Vec::with_capacity(order.len());
    let mut consts = BTreeSet::new();
    let mut total_macs = 0u64;
    for id in order {
        let node = graph.node(id);
        let in_types: Vec<&TensorType> = node.inputs.iter().map(|&v| &graph.value(v).ty).collect();
        let outputs: Vec<TensorType> = node
            .outputs
            .iter()
            .map(|&v| graph.value(v).ty.clone())
            .collect();
        let macs = kiln_ir::ops::macs(&node.op, &in_types, &outputs);
        let params = node
            .inputs
            .iter()
            .filter(|&&v| graph.value(v).is_const())
            .map(|&v| graph.value(v).ty.numel())
            .sum();
        consts.extend(
            node.inputs
                .iter()
                .copied()
                .filter(|&v| graph.value(v).is_const()),
        );
        total_macs += macs;
        rows.push(Row {
            name: node.name.clone(),
            op: node.op.name(),
            quant: node
                .outputs
                .iter()
                .map(|&v| super::quantize::quant_label(graph.value(v)))
                .collect(),
            outputs,
            params,
            macs,
        });
    }
    let totals = Totals {
        nodes: rows.len(),
        params: consts.iter().map(|&v| graph.value(v).ty.numel()).sum(),
        weight_bytes: consts.iter().map(|&v| graph.value(v).ty.size_bytes()).sum(),
        macs: total_macs,
    };
    Ok((rows, totals))
}

fn shapes(types: &[TensorType]) -> String {
    types
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The float ops of an integer build, which run between a dequantize and a quantize.
fn print_fallbacks(fallbacks: &[(String, &'static str)]) {
    if fallbacks.is_empty() {
        return;
    }
    println!(
        "float fallback: {} op(s) without an integer kernel run in float:",
        fallbacks.len()
    );
    for (node, op) in fallbacks {
        println!("  {node} ({op})");
    }
}

fn print_table(args: &InspectArgs, graph: &Graph, rows: &[Row], totals: &Totals, opset: i64) {
    println!("model: {} (opset {opset})", args.model.model.display());
    let io_line = |v: kiln_ir::ValueId| {
        let value = graph.value(v);
        let q = super::quantize::quant_label(value);
        if q.is_empty() {
            format!("{}: {}", value.name, value.ty)
        } else {
            format!("{}: {} ({q})", value.name, value.ty)
        }
    };
    for &v in graph.inputs() {
        println!("input  {}", io_line(v));
    }
    for &v in graph.outputs() {
        println!("output {}", io_line(v));
    }
    let name_w = rows
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 48);
    let shape_w = rows
        .iter()
        .map(|r| shapes(&r.outputs).len())
        .max()
        .unwrap_or(5)
        .clamp(5, 40);
    println!();
    let quantized = rows.iter().any(|r| r.quant.iter().any(|q| !q.is_empty()));
    let header = format!(
        "{:<name_w$}  {:<20}  {:<shape_w$}  {:>10}  {:>12}",
        "node", "op", "output", "params", "MACs"
    );
    println!(
        "{}",
        if quantized {
            format!("{header}  quantization")
        } else {
            header
        }
    );
    for r in rows {
        let line = format!(
            "{:<name_w$}  {:<20}  {:<shape_w$}  {:>10}  {:>12}",
            r.name,
            r.op,
            shapes(&r.outputs),
            r.params,
            r.macs
        );
        if quantized {
            println!("{line}  {}", r.quant.join(" "));
        } else {
            println!("{line}");
        }
    }
    println!();
    println!(
        "total: {} nodes, {} params, {} weight bytes, {} MACs",
        totals.nodes, totals.params, totals.weight_bytes, totals.macs
    );
    println!("supported: yes (every op, attribute and element type)");
}

fn print_json(
    args: &InspectArgs,
    graph: &Graph,
    rows: &[Row],
    totals: &Totals,
    opset: i64,
    fallbacks: &[(String, &'static str)],
) -> anyhow::Result<()> {
    let io = |ids: &[kiln_ir::ValueId]| -> Vec<serde_json::Value> {
        ids.iter()
            .map(|&v| {
                let val = graph.value(v);
                serde_json::json!({
                    "name": val.name,
                    "shape": val.ty.shape,
                    "dtype": val.ty.dtype.name(),
                    "quantization": super::quantize::quant_json(val),
                })
            })
            .collect()
    };
    let nodes: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "op": r.op,
                "outputs": r.outputs.iter().map(|t| serde_json::json!({"shape": t.shape, "dtype": t.dtype.name()})).collect::<Vec<_>>(),
                "params": r.params,
                "macs": r.macs,
                "quantization": r.quant,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "model": args.model.model.display().to_string(),
        "opset": opset,
        "supported": true,
        "problems": [],
        "inputs": io(graph.inputs()),
        "outputs": io(graph.outputs()),
        "nodes": nodes,
        "totals": {"nodes": totals.nodes, "params": totals.params, "weight_bytes": totals.weight_bytes, "macs": totals.macs},
        "float_fallback": fallbacks.iter().map(|(n, op)| serde_json::json!({"node": n, "op": op})).collect::<Vec<_>>(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).context("serializing JSON")?
    );
    Ok(())
}

/// Prints every problem the importer found and returns exit code 2.
fn report_problems(
    args: &InspectArgs,
    err: &kiln_frontend::FrontendError,
) -> anyhow::Result<ExitCode> {
    let problems: Vec<String> = err.flatten().iter().map(|e| e.to_string()).collect();
    if args.json {
        let doc = serde_json::json!({
            "model": args.model.model.display().to_string(),
            "supported": false,
            "problems": problems,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        eprintln!(
            "{}: {} problem(s) prevent compiling this model:",
            args.model.model.display(),
            problems.len()
        );
        for p in &problems {
            eprintln!("error: {p}");
        }
    }
    Ok(ExitCode::from(2))
}
