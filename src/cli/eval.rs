//! `kiln eval`: accuracy of a build on a labelled data set. Runs every sample through the
//! chosen engine with a progress bar and prints top-1; for a quantized build also the float
//! model's top-1, how often the two agree, and the output error against the float model (with
//! `--prune`, the pruned float model, so the figures measure quantization alone).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use kiln_backends::c::COptions;
use kiln_ir::{Graph, Tensor};

use super::load::{prepare, Prepared};
use super::ModelArgs;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Samples: a .npy whose leading axis is samples ([N, ...]; samples with the input's
    /// element count are reshaped to it).
    #[arg(long, value_name = "X.npy")]
    data: PathBuf,
    /// Labels: a .npy of N class indices (integers).
    #[arg(long, value_name = "Y.npy")]
    labels: PathBuf,
    /// Which engine runs the build.
    #[arg(long, value_enum, default_value_t = EvalBackend::Cranelift)]
    backend: EvalBackend,
    /// Evaluate at most N samples.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    opt: super::OptArgs,
    #[command(flatten)]
    quant: super::quantize::QuantArgs,
    #[command(flatten)]
    prune: super::prune::PruneArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalBackend {
    /// The reference interpreter.
    Interp,
    /// The generated C, built once with the host compiler.
    C,
    /// Native code from the Cranelift JIT.
    Cranelift,
}

/// An engine that runs one compiled graph on many samples.
enum Engine {
    Interp(Graph),
    C(Box<kiln_backends::host::CProgram>),
    Jit(Box<kiln_backends::cranelift::JitProgram>),
}

impl Engine {
    fn new(graph: &Graph, backend: EvalBackend, c: &COptions) -> anyhow::Result<Engine> {
        Ok(match backend {
            EvalBackend::Interp => Engine::Interp(graph.clone()),
            EvalBackend::C => Engine::C(Box::new(
                kiln_backends::host::CProgram::build(graph, c, &Default::default())
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            )),
            EvalBackend::Cranelift => Engine::Jit(Box::new(
                kiln_backends::cranelift::JitProgram::compile(graph, &Default::default())
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            )),
        })
    }

    fn run(&mut self, inputs: &[Tensor]) -> anyhow::Result<Vec<Tensor>> {
        let r = match self {
            Engine::Interp(g) => kiln_ir::interp::run(g, inputs).map_err(|e| e.to_string()),
            Engine::C(p) => p.run(inputs).map_err(|e| e.to_string()),
            Engine::Jit(p) => p.run(inputs).map_err(|e| e.to_string()),
        };
        r.map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// The first output as real numbers: integer outputs are dequantized with their recorded
/// quantization.
fn real_output(graph: &Graph, outputs: &[Tensor]) -> Vec<f64> {
    real_outputs(graph, outputs)
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// Every output as real numbers (integer outputs dequantized with their recorded
/// quantization), in graph order.
pub fn real_outputs(graph: &Graph, outputs: &[Tensor]) -> Vec<Vec<f64>> {
    graph
        .outputs()
        .iter()
        .zip(outputs)
        .map(|(&v, t)| real_values(graph.value(v), t))
        .collect()
}

fn real_values(value: &kiln_ir::Value, t: &Tensor) -> Vec<f64> {
    let raw = t.to_f64_vec();
    match &value.quant {
        Some(q) if t.dtype().is_integer() => {
            let (s, z) = (
                f64::from(q.scale.first().copied().unwrap_or(1.0)),
                f64::from(q.zero_point.first().copied().unwrap_or(0)),
            );
            raw.iter().map(|&x| (x - z) * s).collect()
        }
        _ => raw,
    }
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0
}

pub fn eval(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let prepared = prepare(
        &args.model,
        &args.opt,
        &args.quant,
        &args.prune,
        kiln_passes::OptLevel::O2,
    )?;
    let acc = evaluate(
        &prepared,
        &args.opt,
        &args.data,
        &args.labels,
        args.backend,
        &COptions::default(),
        args.limit,
    )?;
    let mut doc = serde_json::json!({
        "model": args.model.model.display().to_string(),
        "backend": format!("{:?}", args.backend).to_lowercase(),
        "samples": acc.samples,
        "top1": acc.top1,
        "quantized": acc.quantized,
    });
    if let Some(f) = &acc.float {
        doc["float_top1"] = serde_json::json!(f.top1);
        doc["agreement"] = serde_json::json!(f.agreement);
        doc["max_abs_error"] = serde_json::json!(f.max_abs_error);
        doc["mean_abs_error"] = serde_json::json!(f.mean_abs_error);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{} samples, top-1 {:.2}%", acc.samples, 100.0 * acc.top1);
        if let Some(f) = &acc.float {
            println!(
                "{} top-1 {:.2}%, argmax agreement {:.2}%, output error max {:.4} mean {:.4}",
                if acc.pruned {
                    "pruned float model"
                } else {
                    "float model"
                },
                100.0 * f.top1,
                100.0 * f.agreement,
                f.max_abs_error,
                f.mean_abs_error
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What [`evaluate`] measured.
#[derive(Debug, Clone)]
pub struct Accuracy {
    pub samples: usize,
    /// Top-1 of the build, in [0, 1].
    pub top1: f64,
    /// Whether the build computes in integers.
    pub quantized: bool,
    /// Whether the float model compared with is the pruned one.
    pub pruned: bool,
    /// For an integer build, the float model beside it.
    pub float: Option<FloatComparison>,
}

/// An integer build against the float model on the same samples.
#[derive(Debug, Clone)]
pub struct FloatComparison {
    /// The float model's top-1, in [0, 1].
    pub top1: f64,
    /// How often the two argmaxes agree, in [0, 1].
    pub agreement: f64,
    pub max_abs_error: f64,
    pub mean_abs_error: f64,
}

/// Runs every labelled sample through `prepared`'s graph on `backend` (the C backend built
/// for the host with `c`) and, for an integer build, through the float model too.
pub fn evaluate(
    prepared: &Prepared,
    opt: &super::OptArgs,
    data: &Path,
    labels: &Path,
    backend: EvalBackend,
    c: &COptions,
    limit: Option<usize>,
) -> anyhow::Result<Accuracy> {
    let graph = &prepared.model.graph;
    let Some(&input) = graph.inputs().first() else {
        bail!("the model has no inputs");
    };
    if graph.inputs().len() != 1 {
        bail!(
            "kiln eval takes models with one input; this one has {}",
            graph.inputs().len()
        );
    }
    // Samples are real-valued; an int8 input (--io int8) takes them quantized.
    let float_input_ty = prepared
        .imported_graph
        .inputs()
        .first()
        .map(|&v| prepared.imported_graph.value(v).ty.clone())
        .unwrap_or_else(|| graph.value(input).ty.clone());
    let mut samples = super::quantize::load_samples_for(&float_input_ty, data)?;
    let labels = read_labels(labels)?;
    if labels.len() < samples.len() {
        bail!("{} labels for {} samples", labels.len(), samples.len());
    }
    if let Some(n) = limit {
        samples.truncate(n);
    }
    let quantized = prepared.is_integer();
    let mut engine = Engine::new(graph, backend, c).context("cannot build the model")?;
    // The float model: the imported graph optimized at the same level, pruned as asked (so the
    // figures measure quantization alone), without quantization.
    let mut float_engine = if quantized {
        let float = match &prepared.pruned_float {
            Some(g) => g.clone(),
            None => {
                let mut float = prepared.imported_graph.clone();
                super::load::optimize(&mut float, opt, kiln_passes::OptLevel::O2)?;
                float
            }
        };
        Some(
            Engine::new(&float, EvalBackend::Cranelift, c)
                .or_else(|_| Engine::new(&float, EvalBackend::Interp, c))?,
        )
    } else {
        None
    };
    let bar = super::progress::bar(
        samples.len() as u64,
        "evaluating {bar:30} {pos}/{len} ({per_sec}, eta {eta})",
    );
    let mut stats = Stats::default();
    for (i, x) in samples.iter().enumerate() {
        let fed = super::quantize::real_to_input(graph.value(input), x)?;
        let out = real_output(graph, &engine.run(&[fed])?);
        let label = labels[i];
        stats.correct += usize::from(argmax(&out) as i64 == label);
        if let Some(fe) = float_engine.as_mut() {
            let reference =
                real_output(&prepared.imported_graph, &fe.run(std::slice::from_ref(x))?);
            stats.float_correct += usize::from(argmax(&reference) as i64 == label);
            stats.agree += usize::from(argmax(&reference) == argmax(&out));
            for (a, b) in out.iter().zip(&reference) {
                let e = (a - b).abs();
                stats.max_err = stats.max_err.max(e);
                stats.sum_err += e;
                stats.count_err += 1;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = samples.len().max(1) as f64;
    Ok(Accuracy {
        samples: samples.len(),
        top1: stats.correct as f64 / n,
        quantized,
        pruned: prepared.pruned_float.is_some(),
        float: quantized.then(|| FloatComparison {
            top1: stats.float_correct as f64 / n,
            agreement: stats.agree as f64 / n,
            max_abs_error: stats.max_err,
            mean_abs_error: stats.sum_err / stats.count_err.max(1) as f64,
        }),
    })
}

#[derive(Default)]
struct Stats {
    correct: usize,
    float_correct: usize,
    agree: usize,
    max_err: f64,
    sum_err: f64,
    count_err: usize,
}

fn read_labels(path: &std::path::Path) -> anyhow::Result<Vec<i64>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    let t =
        kiln_ir::npy::read(&bytes).with_context(|| format!("cannot parse '{}'", path.display()))?;
    t.to_i64_vec().with_context(|| {
        format!(
            "'{}': labels must be integers, got {}",
            path.display(),
            t.dtype()
        )
    })
}
