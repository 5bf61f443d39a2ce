//! Loading a model from the command line's options, and writing output files safely.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use kiln_frontend::{ImportOptions, Model};
use kiln_ir::Tensor;

use super::ModelArgs;

/// Parses `NAME=D0,D1,...` options.
pub fn parse_input_shapes(specs: &[String]) -> anyhow::Result<HashMap<String, Vec<usize>>> {
    let mut shapes = HashMap::new();
    for spec in specs {
        let Some((name, dims)) = spec.rsplit_once('=') else {
            bail!("--input-shape '{spec}': expected NAME=D0,D1,... (e.g. input=1,3,224,224)");
        };
        let dims: Vec<usize> = dims
            .split(',')
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .with_context(|| {
                format!("--input-shape '{spec}': dimensions must be non-negative integers")
            })?;
        shapes.insert(name.to_string(), dims);
    }
    Ok(shapes)
}

/// Parses `NAME=FILE.npy` options and reads the files.
pub fn parse_const_inputs(specs: &[String]) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut values = HashMap::new();
    for spec in specs {
        let Some((name, file)) = spec
            .split_once('=')
            .filter(|(n, f)| !n.is_empty() && !f.is_empty())
        else {
            bail!("--const-input '{spec}': expected NAME=FILE.npy (e.g. shape=shape.npy)");
        };
        let bytes = std::fs::read(file).with_context(|| {
            format!("--const-input {spec}: cannot read '{file}' for input '{name}'")
        })?;
        let value = kiln_ir::npy::read(&bytes).with_context(|| {
            format!(
                "--const-input {spec}: '{file}' (for input '{name}') is not a .npy file kiln reads"
            )
        })?;
        if values.insert(name.to_string(), value).is_some() {
            bail!("--const-input {spec}: input '{name}' is given twice");
        }
    }
    Ok(values)
}

/// The import options the command line gives: `--input-shape` and `--const-input`.
pub fn import_options(args: &ModelArgs) -> anyhow::Result<ImportOptions> {
    Ok(ImportOptions {
        input_shapes: parse_input_shapes(&args.input_shapes)?,
        const_inputs: parse_const_inputs(&args.const_inputs)?,
    })
}

pub fn read_model_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read model '{}'", path.display()))
}

/// Reads and imports the model named on the command line.
pub fn load_model(args: &ModelArgs) -> anyhow::Result<Model> {
    let bytes = read_model_bytes(&args.model)?;
    let options = import_options(args)?;
    kiln_frontend::import_model(&bytes, &options)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot import '{}'", args.model.display()))
}

/// Writes a file so that readers never see it half-written: to a temporary name in the same
/// directory, then renamed into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .with_context(|| format!("'{}' is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.kiln-tmp", file_name.to_string_lossy()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write '{}'", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write '{}'", path.display()))
}

/// Runs the optimization pipeline at the level `opt` asks for (or `default`), printing the
/// requested IR dumps and pass timings to stderr.
pub fn optimize(
    graph: &mut kiln_ir::Graph,
    opt: &super::OptArgs,
    default: kiln_passes::OptLevel,
) -> anyhow::Result<kiln_passes::PassReport> {
    let options = kiln_passes::PassOptions {
        level: opt.level_or(default),
        dump_after: opt.dump_ir_after.clone(),
        time_passes: opt.time_passes,
    };
    let report = kiln_passes::optimize(graph, &options)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("optimization failed")?;
    for (pass, text) in &report.dumps {
        eprintln!("; IR after {pass}");
        eprint!("{text}");
    }
    if opt.time_passes {
        let total: std::time::Duration = report.runs.iter().map(|r| r.duration).sum();
        eprintln!(
            "{:<22} {:>10} {:>8} {:>8} {:>8}",
            "pass", "ms", "changed", "nodes", "after"
        );
        for r in &report.runs {
            eprintln!(
                "{:<22} {:>10.3} {:>8} {:>8} {:>8}",
                r.name,
                r.duration.as_secs_f64() * 1e3,
                if r.changed { "yes" } else { "no" },
                r.nodes_before,
                r.nodes_after
            );
        }
        eprintln!("{:<22} {:>10.3}", "total", total.as_secs_f64() * 1e3);
    }
    Ok(report)
}

/// A model loaded, optimized and (when asked) quantized.
pub struct Prepared {
    pub model: Model,
    /// The graph as imported, and its figures.
    pub imported_graph: kiln_ir::Graph,
    pub imported: kiln_passes::GraphSummary,
    /// The float graph after optimization, before quantization.
    pub optimized_float: kiln_passes::GraphSummary,
    /// With `--prune`: the pruned (and repaired) float graph, before quantization.
    pub pruned_float: Option<kiln_ir::Graph>,
    pub quant: Option<super::quantize::QuantSummary>,
    pub prune: Option<super::prune::PruneSummary>,
}

impl Prepared {
    /// Whether the compiled graph computes in integers (quantized by kiln, or a QDQ model
    /// lowered to integer ops): its reference is then the interpreter on that graph, whose
    /// rounding differs from the float QDQ graph's by design.
    pub fn is_integer(&self) -> bool {
        let g = &self.model.graph;
        self.quant.is_some()
            || g.node_ids().iter().any(|&n| {
                matches!(
                    g.node(n).op,
                    kiln_ir::Op::QConv { .. }
                        | kiln_ir::Op::QMatMul { .. }
                        | kiln_ir::Op::QAdd { .. }
                        | kiln_ir::Op::QMul { .. }
                        | kiln_ir::Op::QAveragePool { .. }
                        | kiln_ir::Op::QSoftmax { .. }
                        | kiln_ir::Op::QTable
                        | kiln_ir::Op::Requantize { .. }
                )
            })
    }
}

/// Loads the model the command line names and prepares it (see [`prepare_model`]).
pub fn prepare(
    args: &ModelArgs,
    opt: &super::OptArgs,
    quant: &super::quantize::QuantArgs,
    prune: &super::prune::PruneArgs,
    default: kiln_passes::OptLevel,
) -> anyhow::Result<Prepared> {
    prepare_model(load_model(args)?, opt, quant, prune, default)
}

/// Optimizes the model at `opt`'s level (or `default`), with `--prune` prunes the optimized
/// float graph, and with `--quantize` calibrates and quantizes it, then lowers it to integer
/// ops (at -O1 or above, whatever the level: integer kernels are what quantization is for).
pub fn prepare_model(
    mut model: Model,
    opt: &super::OptArgs,
    quant: &super::quantize::QuantArgs,
    prune: &super::prune::PruneArgs,
    default: kiln_passes::OptLevel,
) -> anyhow::Result<Prepared> {
    model.graph.set_rounding(quant.int8_rounding.rounding());
    let imported_graph = model.graph.clone();
    let imported = kiln_passes::summarize(&model.graph).map_err(|e| anyhow::anyhow!("{e}"))?;
    optimize(&mut model.graph, opt, default)?;
    let pruned = super::prune::prune(&mut model.graph, prune, quant)?;
    let optimized_float =
        kiln_passes::summarize(&model.graph).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pruned_float = pruned.as_ref().map(|_| model.graph.clone());
    // --calibrate without --quantize is repair's data alone.
    let summary = if quant.quantize.is_none() && prune.uses_calibration(quant) {
        None
    } else {
        super::quantize::quantize(&mut model.graph, quant)?
    };
    if summary.is_some() {
        let level = opt.level_or(default).max(kiln_passes::OptLevel::O1);
        let options = kiln_passes::PassOptions {
            level,
            ..Default::default()
        };
        kiln_passes::optimize(&mut model.graph, &options)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("lowering the quantized graph failed")?;
    }
    if quant.io == super::quantize::Io::Int8 {
        kiln_passes::quant::io::int8_io(&mut model.graph)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("--io int8 failed")?;
    }
    Ok(Prepared {
        model,
        imported_graph,
        imported,
        optimized_float,
        pruned_float,
        quant: summary,
        prune: pruned,
    })
}
