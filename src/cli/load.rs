//! Loading a model from the command line's options, and writing output files safely.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use kiln_frontend::{ImportOptions, Model};

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

pub fn read_model_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read model '{}'", path.display()))
}

/// Reads and imports the model named on the command line.
pub fn load_model(args: &ModelArgs) -> anyhow::Result<Model> {
    let bytes = read_model_bytes(&args.model)?;
    let options = ImportOptions {
        input_shapes: parse_input_shapes(&args.input_shapes)?,
        ..ImportOptions::default()
    };
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
