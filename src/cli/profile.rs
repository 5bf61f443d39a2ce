//! `kiln profile`: instructions per layer on an emulated board. Builds the model twice, the
//! build `kiln verify` runs and a profiling build whose `PREFIX_run` calls a marker around each
//! layer (`COptions::profile_layers`; the same code otherwise), runs both on the board, and
//! prints the layers sorted by cost with their MACs, instructions per MAC, and the code and
//! weight bytes each one's function and arrays take in the linked program.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use kiln_backends::c::COptions;
use kiln_backends::program::Buffer;
use kiln_ir::Graph;
use kiln_targets::compare::compare_outputs;
use kiln_targets::{BoardOptions, BoardRun};

use super::compile::CodegenArgs;
use super::verify::{reference_outputs, BoardSetup};
use super::ModelArgs;

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The target CPU (as for `kiln verify`), e.g. cortex-m4.
    #[arg(long, value_name = "TARGET")]
    target: String,
    // The board, inputs, output form, time limit, compiler flags and the kept directory (of
    // the profiling build), as for `kiln verify`.
    #[command(flatten)]
    run: super::verify::BoardRunArgs,
    #[command(flatten)]
    codegen: CodegenArgs,
    #[command(flatten)]
    opt: super::OptArgs,
    #[command(flatten)]
    quant: super::quantize::QuantArgs,
    #[command(flatten)]
    prune: super::prune::PruneArgs,
}

/// One layer of a profile.
#[derive(Debug, Clone)]
pub struct LayerProfile {
    /// Position in execution order.
    pub index: usize,
    /// The graph node (its ONNX name).
    pub node: String,
    pub op: &'static str,
    /// The C function that computes it.
    pub function: String,
    pub macs: u64,
    /// Instructions from the marker before the layer to the marker after it (including the
    /// call, and any library function the layer calls).
    pub instructions: u64,
    /// Bytes of the layer's function in the linked program (0 when the linked program has no
    /// symbol for it: the compiler merged it into an identical function of another layer).
    pub code_bytes: u64,
    /// Whether the linked program has a symbol for the layer's function.
    pub code_found: bool,
    /// Layers whose function the compiler folded into this one's (identical code): the code
    /// bytes are shared with them.
    pub code_shared_with: Vec<String>,
    /// Bytes of the weight arrays the layer reads.
    pub weight_bytes: u64,
}

impl LayerProfile {
    pub fn instructions_per_mac(&self) -> Option<f64> {
        (self.macs > 0).then(|| self.instructions as f64 / self.macs as f64)
    }
}

/// Instructions per layer of one profiling run.
#[derive(Debug, Clone)]
pub struct Profile {
    /// In execution order.
    pub layers: Vec<LayerProfile>,
    /// `PREFIX_run`'s own work outside its layers: argument checks, prologue and epilogue,
    /// output copies.
    pub run_overhead: u64,
    /// The whole inference in the profiling build (layers, overhead and markers).
    pub total: u64,
}

impl Profile {
    pub fn layers_sum(&self) -> u64 {
        self.layers.iter().map(|l| l.instructions).sum()
    }
}

/// The C options of the profiling build of `c`.
pub fn profiling(c: &COptions) -> COptions {
    COptions {
        profile_layers: true,
        ..c.clone()
    }
}

/// Splits a profiling run (`run_on_board` with [`profiling`] options) into layers, with each
/// layer's MACs and its code and weight bytes from the linked program's symbols.
pub fn layer_profile(graph: &Graph, c: &COptions, run: &BoardRun) -> anyhow::Result<Profile> {
    let lowered =
        kiln_backends::program::lower_program(graph, &c.name, &c.schedule, c.alignment, "C")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let marks = &run.layer_marks;
    let n = lowered.kernels.len();
    if marks.len() != n + 1 {
        bail!(
            "the profiling build reported {} layer marks for {n} layers (expected {})",
            marks.len(),
            n + 1
        );
    }
    // Each kernel's function: its symbol, or the clones the compiler made of it
    // (`NAME.constprop.0`), as (address, size) pairs.
    let functions: Vec<BTreeSet<(u64, u64)>> = lowered
        .kernels
        .iter()
        .map(|(_, k)| {
            let clone_prefix = format!("{}.", k.name);
            run.symbols
                .iter()
                .filter(|s| s.code && (s.name == k.name || s.name.starts_with(&clone_prefix)))
                .map(|s| (s.address, s.size))
                .collect()
        })
        .collect();
    let mut layers = Vec::with_capacity(n);
    for (i, (node_id, kernel)) in lowered.kernels.iter().enumerate() {
        let node = graph.node(*node_id);
        let macs = lowered
            .layers
            .iter()
            .find(|l| l.kernel.as_deref() == Some(kernel.name.as_str()))
            .map_or(0, |l| l.macs);
        let mut roots = BTreeSet::new();
        for &v in &node.inputs {
            if graph.value(v).const_tensor().is_none() {
                continue;
            }
            if let Buffer::Weight(root) = lowered.buffer(v) {
                roots.insert(root);
            }
        }
        let weight_bytes = roots
            .iter()
            .map(|&root| {
                let name = kiln_backends::c::weight_symbol(&c.name, root);
                run.symbols
                    .iter()
                    .find(|s| !s.code && s.name == name)
                    .map_or(0, |s| s.size)
            })
            .sum();
        let code_shared_with = lowered
            .kernels
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i && !functions[i].is_disjoint(&functions[j]))
            .map(|(_, (other, _))| graph.node(*other).name.clone())
            .collect();
        layers.push(LayerProfile {
            index: i,
            node: node.name.clone(),
            op: node.op.name(),
            function: kernel.name.clone(),
            macs,
            instructions: marks[i + 1].saturating_sub(marks[i]),
            code_bytes: functions[i].iter().map(|&(_, size)| size).sum(),
            code_found: !functions[i].is_empty(),
            code_shared_with,
            weight_bytes,
        });
    }
    Ok(Profile {
        layers,
        run_overhead: marks[0] + run.instructions.saturating_sub(marks[n]),
        total: run.instructions,
    })
}

pub fn profile(args: &ProfileArgs) -> anyhow::Result<ExitCode> {
    let level = args.opt.level_or(kiln_passes::OptLevel::O2);
    let c = args.codegen.c_options(level)?;
    let BoardSetup {
        target,
        board,
        prepared,
        inputs,
    } = BoardSetup::new(
        &args.target,
        &args.run,
        &args.model,
        (&args.opt, &args.quant, &args.prune),
    )?;
    let graph = &prepared.model.graph;
    // Only the profiling build is kept.
    let options = BoardOptions {
        keep_dir: None,
        ..args.run.board_options(kiln_targets::CodeBackend::C)
    };
    let profiling_c = profiling(&c);
    // The two builds run side by side.
    let (plain, profiled) = std::thread::scope(|s| {
        let plain =
            s.spawn(|| kiln_targets::run_on_board(graph, &inputs, &c, target, board, &options));
        let keep = BoardOptions {
            keep_dir: args.run.keep_dir.clone(),
            ..options.clone()
        };
        let profiled =
            kiln_targets::run_on_board(graph, &inputs, &profiling_c, target, board, &keep);
        let plain = plain
            .join()
            .unwrap_or_else(|_| Err(kiln_targets::TargetError::Io("a build panicked".into())));
        (plain, profiled)
    });
    let context = || {
        format!(
            "cannot profile '{}' on {}",
            args.model.model.display(),
            target.name
        )
    };
    let plain = plain.map_err(anyhow::Error::new).with_context(context)?;
    let profiled = profiled.map_err(anyhow::Error::new).with_context(context)?;
    let prof = layer_profile(graph, &c, &profiled)?;
    if profiled.outputs != plain.outputs {
        bail!("the profiling build computed different outputs from the plain build: a bug in kiln, please report it");
    }
    let expected = reference_outputs(&prepared, &inputs)?;
    let check = compare_outputs(&plain.outputs, &expected);
    if args.run.json {
        let doc = serde_json::json!({
            "model": args.model.model.display().to_string(),
            "target": target.name,
            "board": board.name,
            "outputs_passed": check.passed,
            "instructions": plain.instructions,
            "profiling_build_instructions": prof.total,
            "layers_instructions": prof.layers_sum(),
            "run_overhead_instructions": prof.run_overhead,
            "layers": layers_json(&prof),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{} on {} (board {}), outputs {}",
            args.model.model.display(),
            target.name,
            board.name,
            if check.passed { "PASS" } else { "FAIL" }
        );
        print!("{}", profile_table(&prof, plain.instructions));
    }
    Ok(if check.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The layers as JSON, in execution order (see the README for the fields).
pub fn layers_json(prof: &Profile) -> serde_json::Value {
    prof.layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "index": l.index,
                "node": l.node,
                "op": l.op,
                "function": l.function,
                "macs": l.macs,
                "instructions": l.instructions,
                "instructions_per_mac": l.instructions_per_mac(),
                "code_bytes": l.code_found.then_some(l.code_bytes),
                "code_shared_with": l.code_shared_with,
                "weight_bytes": l.weight_bytes,
            })
        })
        .collect()
}

/// The text table: the layers by cost, then the totals against `whole` (the plain build's
/// whole-inference count).
pub fn profile_table(prof: &Profile, whole: u64) -> String {
    use std::fmt::Write as _;
    let mut rows: Vec<&LayerProfile> = prof.layers.iter().collect();
    rows.sort_by(|a, b| {
        b.instructions
            .cmp(&a.instructions)
            .then(a.index.cmp(&b.index))
    });
    let name_width = rows
        .iter()
        .map(|l| l.node.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 40);
    let op_width = rows.iter().map(|l| l.op.len()).max().unwrap_or(2).max(2);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>3}  {:<name_width$}  {:<op_width$}  {:>10}  {:>13}  {:>6}  {:>8}  {:>7}  {:>9}",
        "#", "layer", "op", "MACs", "instructions", "share", "insn/MAC", "code B", "weights B"
    );
    let sum = prof.layers_sum();
    for l in &rows {
        let share = 100.0 * l.instructions as f64 / sum.max(1) as f64;
        let code = if !l.code_found {
            "-".to_string()
        } else if l.code_shared_with.is_empty() {
            l.code_bytes.to_string()
        } else {
            format!("{}*", l.code_bytes)
        };
        let _ = writeln!(
            s,
            "{:>3}  {:<name_width$}  {:<op_width$}  {:>10}  {:>13}  {:>5.1}%  {:>8}  {:>7}  {:>9}",
            l.index,
            truncate(&l.node, name_width),
            l.op,
            l.macs,
            l.instructions,
            share,
            l.instructions_per_mac()
                .map_or("-".to_string(), |x| format!("{x:.2}")),
            code,
            l.weight_bytes
        );
    }
    let macs: u64 = prof.layers.iter().map(|l| l.macs).sum();
    let code: u64 = unique_code_bytes(prof);
    let weights: u64 = prof.layers.iter().map(|l| l.weight_bytes).sum();
    let _ = writeln!(
        s,
        "{:>3}  {:<name_width$}  {:<op_width$}  {:>10}  {:>13}  {:>5.1}%  {:>8}  {:>7}  {:>9}",
        "",
        "all layers",
        "",
        macs,
        sum,
        100.0,
        if macs > 0 {
            format!("{:.2}", sum as f64 / macs as f64)
        } else {
            "-".into()
        },
        code,
        weights
    );
    if rows.iter().any(|l| !l.code_shared_with.is_empty()) {
        let _ = writeln!(
            s,
            "* the compiler folded identical layer functions into one; the total counts it once"
        );
    }
    if rows.iter().any(|l| !l.code_found) {
        let _ = writeln!(
            s,
            "- no symbol of its own: the compiler merged the layer's function into an identical one"
        );
    }
    let _ = writeln!(
        s,
        "whole inference: {whole} instructions (the build `kiln verify` runs); the layers sum to {sum} ({:.2}%), {} more in the profiling build's run function and markers",
        100.0 * sum as f64 / whole.max(1) as f64,
        prof.total.saturating_sub(sum)
    );
    s
}

/// Code bytes of every layer function, each folded function once.
pub fn unique_code_bytes(prof: &Profile) -> u64 {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for l in &prof.layers {
        if seen.insert(
            std::iter::once(l.node.clone())
                .chain(l.code_shared_with.iter().cloned())
                .collect::<BTreeSet<_>>(),
        ) {
            total += l.code_bytes;
        }
    }
    total
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(width.saturating_sub(1))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}
