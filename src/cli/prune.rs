//! `--prune channels=RATIO`: structured pruning from the command line, shared by every command
//! that compiles (so what `verify` and `eval` measure is what `compile` ships).
//!
//! Runs on the optimized float graph, before quantization: the channel analysis, the choice of
//! the lowest-scoring channels of each group, the rewrite, and with `--calibrate DATA` (unless
//! `--no-repair`) the least-squares refit of the layers that read pruned channels, on the
//! Cranelift JIT with a progress bar.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use kiln_ir::{Graph, Tensor};
use kiln_passes::prune::magnitude::{MagnitudeOptions, Metric};
use kiln_passes::prune::repair::{RefitLayer, Runner};
use kiln_passes::prune::report::PruneReport;

#[derive(Debug, Args, Default)]
pub struct PruneArgs {
    /// Structured pruning: `channels=RATIO` removes that fraction (0 to 1) of the channels of
    /// every group of coupled layers, lowest-scoring first, never all of a layer and never a
    /// graph output's. Channels kiln cannot prove removable are kept and reported.
    #[arg(long, value_name = "channels=RATIO")]
    pub prune: Option<String>,
    /// How channels are scored: the L1 or L2 norm of their weights (each layer's norms divided
    /// by the layer's mean).
    #[arg(long, value_enum, default_value_t = PruneMetric::L1)]
    pub prune_metric: PruneMetric,
    /// Keep the output channels of these nodes (names as `kiln inspect -O2` lists them).
    #[arg(long, value_name = "NODE", num_args = 1..)]
    pub prune_skip: Vec<String>,
    /// Keep a multiple of N channels in every group of coupled layers (the nearest to what the
    /// ratio asks): int8 kernels run fastest when channels fill their lanes (4 on Cortex-M DSP).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub prune_round_to: usize,
    /// With --prune and --calibrate: keep the pruned weights instead of refitting the layers
    /// that read pruned channels by least squares on the calibration samples.
    #[arg(long)]
    pub no_repair: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PruneMetric {
    #[default]
    L1,
    L2,
}

impl PruneArgs {
    /// The ratio `--prune` asks for, if it asks.
    pub fn ratio(&self) -> anyhow::Result<Option<f64>> {
        let Some(spec) = &self.prune else {
            return Ok(None);
        };
        let Some(r) = spec.strip_prefix("channels=") else {
            bail!("--prune '{spec}': expected channels=RATIO (e.g. channels=0.25)");
        };
        let ratio: f64 = r
            .trim()
            .parse()
            .with_context(|| format!("--prune '{spec}': RATIO must be a number"))?;
        if !(0.0..1.0).contains(&ratio) {
            bail!("--prune '{spec}': RATIO must be at least 0 and below 1");
        }
        Ok(Some(ratio))
    }

    /// Whether pruning will take the calibration samples for repair.
    pub fn uses_calibration(&self, quant: &super::quantize::QuantArgs) -> bool {
        self.prune.is_some() && !self.no_repair && !quant.calibrate.is_empty()
    }
}

/// What pruning did, for reports.
#[derive(Debug, Clone)]
pub struct PruneSummary {
    pub ratio: f64,
    pub round_to: usize,
    pub metric: PruneMetric,
    pub report: PruneReport,
    /// Calibration samples used for repair (0: no repair).
    pub samples: usize,
    pub refit: Vec<RefitLayer>,
}

struct Jit(kiln_backends::cranelift::JitProgram);

impl Runner for Jit {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        self.0.run(inputs).map_err(|e| e.to_string())
    }
}

/// Prunes the optimized float graph as `args` ask; `None` when they ask nothing.
pub fn prune(
    graph: &mut Graph,
    args: &PruneArgs,
    quant: &super::quantize::QuantArgs,
) -> anyhow::Result<Option<PruneSummary>> {
    let Some(ratio) = args.ratio()? else {
        if args.no_repair || !args.prune_skip.is_empty() || args.prune_round_to != 1 {
            bail!("--no-repair, --prune-skip and --prune-round-to need --prune channels=RATIO");
        }
        return Ok(None);
    };
    let original = graph.clone();
    let groups = kiln_passes::prune::analyze(graph).map_err(|e| anyhow::anyhow!("{e}"))?;
    let metric = match args.prune_metric {
        PruneMetric::L1 => Metric::L1,
        PruneMetric::L2 => Metric::L2,
    };
    if args.prune_round_to == 0 {
        bail!("--prune-round-to must be at least 1");
    }
    let options = MagnitudeOptions {
        ratio,
        metric,
        skip: args.prune_skip.clone(),
        round_to: args.prune_round_to,
    };
    let plan = kiln_passes::prune::magnitude::magnitude_plan(graph, &groups, &options)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let applied = kiln_passes::prune::apply(graph, &groups, &plan.removed, &Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("pruning failed")?;
    let mut refit = Vec::new();
    let mut samples_used = 0;
    if args.uses_calibration(quant) && !applied.consumers().is_empty() {
        let mut samples = super::quantize::load_samples(&original, &quant.calibrate)?;
        if let Some(n) = quant.calibration_samples {
            samples.truncate(n.max(1));
        }
        samples_used = samples.len();
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("repairing {bar:30} {pos}/{len} runs")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut compile = |g: &Graph| -> Result<Box<dyn Runner>, String> {
            let options = kiln_backends::cranelift::CraneliftOptions::default();
            kiln_backends::cranelift::JitProgram::compile(g, &options)
                .map(|p| Box::new(Jit(p)) as Box<dyn Runner>)
                .map_err(|e| format!("cannot compile the model for repair: {e}"))
        };
        let mut progress = |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };
        refit = kiln_passes::prune::repair::repair(
            &original,
            graph,
            &applied,
            &samples,
            &mut compile,
            &mut progress,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("repair after pruning failed")?;
        bar.finish_and_clear();
    }
    let report = kiln_passes::prune::report::report(&original, graph, &groups, &plan.removed)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(PruneSummary {
        ratio,
        round_to: args.prune_round_to,
        metric: args.prune_metric,
        report,
        samples: samples_used,
        refit,
    }))
}

fn pct(after: f64, before: f64) -> String {
    if before > 0.0 {
        format!("{:+.1}%", 100.0 * (after - before) / before)
    } else {
        "-".into()
    }
}

/// Prints the pruning report (`kiln compile`).
pub fn print_report(s: &PruneSummary) {
    let r = &s.report;
    println!();
    println!(
        "pruning: channels={}{} ({} metric){}",
        s.ratio,
        if s.round_to > 1 {
            format!(", multiples of {}", s.round_to)
        } else {
            String::new()
        },
        match s.metric {
            PruneMetric::L1 => "l1",
            PruneMetric::L2 => "l2",
        },
        if s.samples > 0 {
            format!(", repaired on {} calibration samples", s.samples)
        } else {
            String::new()
        }
    );
    println!(
        "  {:<36}  {:<10}  {:>11}  {:>17}  {:>19}  {:>23}",
        "layer", "op", "channels", "params", "weight bytes", "MACs"
    );
    let ch = |c: Option<usize>| c.map_or_else(|| "-".to_string(), |c| c.to_string());
    for l in &r.layers {
        let node: String = l.node.chars().take(36).collect();
        println!(
            "  {node:<36}  {:<10}  {:>4} -> {:<4}  {:>7} -> {:<7}  {:>8} -> {:<8}  {:>10} -> {:<10}",
            l.op,
            ch(l.before.channels),
            ch(l.after.channels),
            l.before.params,
            l.after.params,
            l.before.weight_bytes,
            l.after.weight_bytes,
            l.before.macs,
            l.after.macs
        );
    }
    let (b, a) = (&r.before, &r.after);
    println!(
        "  total: params {} -> {} ({}), weight bytes {} -> {} ({}), MACs {} -> {} ({}), arena bytes {} -> {} ({})",
        b.params,
        a.params,
        pct(a.params as f64, b.params as f64),
        b.weight_bytes,
        a.weight_bytes,
        pct(a.weight_bytes as f64, b.weight_bytes as f64),
        b.macs,
        a.macs,
        pct(a.macs as f64, b.macs as f64),
        b.arena_bytes,
        a.arena_bytes,
        pct(a.arena_bytes as f64, b.arena_bytes as f64)
    );
    println!("  groups of coupled layers (channel classes removed / total):");
    for gr in &r.groups {
        let layers: String = gr.layers.chars().take(90).collect();
        println!("    {:>3}/{:<3}  {layers}", gr.removed, gr.classes);
        for p in &gr.pinned {
            println!("              kept: {p}");
        }
    }
    if !s.refit.is_empty() {
        println!("  repair (relative squared error on held-out samples, pruned -> refit):");
        for l in &s.refit {
            match &l.skipped {
                Some(why) => println!("    {:<36}  not refit: {why}", l.node),
                None => println!(
                    "    {:<36}  {:.4} -> {:.4}  {}",
                    l.node,
                    l.error_pruned,
                    l.error_refit,
                    if l.accepted {
                        "refit"
                    } else {
                        "kept pruned weights (refit was worse)"
                    }
                ),
            }
        }
    }
}

/// The pruning report as JSON (`kiln compile --report json`).
pub fn report_json(s: &PruneSummary) -> serde_json::Value {
    let r = &s.report;
    let fig = |f: &kiln_passes::prune::report::LayerFigures| {
        serde_json::json!({
            "channels": f.channels,
            "params": f.params,
            "weight_bytes": f.weight_bytes,
            "macs": f.macs,
        })
    };
    let tot = |t: &kiln_passes::prune::report::Totals| {
        serde_json::json!({
            "params": t.params,
            "weight_bytes": t.weight_bytes,
            "macs": t.macs,
            "arena_bytes": t.arena_bytes,
        })
    };
    serde_json::json!({
        "ratio": s.ratio,
        "round_to": s.round_to,
        "metric": format!("{:?}", s.metric).to_lowercase(),
        "repair_samples": s.samples,
        "before": tot(&r.before),
        "after": tot(&r.after),
        "layers": r.layers.iter().map(|l| serde_json::json!({
            "node": l.node,
            "op": l.op,
            "before": fig(&l.before),
            "after": fig(&l.after),
        })).collect::<Vec<_>>(),
        "groups": r.groups.iter().map(|g| serde_json::json!({
            "layers": g.layers,
            "classes": g.classes,
            "removed": g.removed,
            "pinned": g.pinned,
        })).collect::<Vec<_>>(),
        "repair": s.refit.iter().map(|l| serde_json::json!({
            "node": l.node,
            "op": l.op,
            "rows": l.rows,
            "unknowns": l.unknowns,
            "error_pruned": l.error_pruned,
            "error_refit": l.error_refit,
            "accepted": l.accepted,
            "skipped": l.skipped,
        })).collect::<Vec<_>>(),
    })
}
