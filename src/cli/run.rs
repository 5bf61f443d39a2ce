//! `kiln run`: run a model on the host and write its outputs as `.npy` files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use kiln_ir::{DType, Graph, Tensor, TensorData, TensorType};

use super::load::{prepare, write_atomically};
use super::ModelArgs;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Input data: NAME=FILE.npy, or a bare FILE.npy to bind inputs in graph order. Without any
    /// --input, kiln runs on a seeded random input and says so.
    #[arg(long = "input", value_name = "[NAME=]FILE.npy")]
    inputs: Vec<String>,
    /// Directory for the outputs, one <output name>.npy each (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    output_dir: PathBuf,
    /// Print a JSON description of the outputs (name, shape, dtype, file) on stdout.
    #[arg(long)]
    json: bool,
    /// Which engine runs the model.
    #[arg(long, value_enum, default_value_t = Backend::Interp)]
    backend: Backend,
    #[command(flatten)]
    opt: super::OptArgs,
    #[command(flatten)]
    quant: super::quantize::QuantArgs,
    #[command(flatten)]
    prune: super::prune::PruneArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// kiln's reference interpreter (defines the semantics every backend is tested against).
    Interp,
    /// The generated C, built with the host compiler ($CC, default cc) at -O2.
    C,
    /// Native code from the Cranelift backend, compiled in-process (JIT).
    Cranelift,
}

/// Output file name: characters outside `[A-Za-z0-9._-]` become `_`.
pub fn sanitize_file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        format!("output{s}")
    } else {
        s
    }
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    // An input baked in with --const-input is no longer an input of the model.
    for spec in &args.inputs {
        if let Some((name, _)) = spec.split_once('=').filter(|_| !Path::new(spec).exists()) {
            let baked = args
                .model
                .const_inputs
                .iter()
                .any(|c| c.split_once('=').is_some_and(|(n, _)| n == name));
            if baked {
                bail!("--input {spec}: input '{name}' is baked into the model by --const-input; give it once");
            }
        }
    }
    let prepared = prepare(
        &args.model,
        &args.opt,
        &args.quant,
        &args.prune,
        kiln_passes::OptLevel::O2,
    )?;
    let graph = &prepared.model.graph;
    let (inputs, random) = bind_inputs(graph, &args.inputs)?;
    if random {
        eprintln!("note: no --input given: running on a seeded random input (seed 0, uniform in [-1, 1) for float inputs)");
    }
    let outputs = match args.backend {
        Backend::Interp => {
            kiln_ir::interp::run(graph, &inputs).map_err(|e| anyhow::anyhow!("{e}"))?
        }
        Backend::C => {
            kiln_backends::host::run_c(graph, &inputs, &Default::default(), &Default::default())
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
        Backend::Cranelift => {
            let options = kiln_backends::cranelift::CraneliftOptions::default();
            kiln_backends::cranelift::JitProgram::compile(graph, &options)
                .and_then(|mut program| program.run(&inputs))
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    std::fs::create_dir_all(&args.output_dir).with_context(|| {
        format!(
            "cannot create output directory '{}'",
            args.output_dir.display()
        )
    })?;
    let mut described = Vec::new();
    let mut used_names = std::collections::HashSet::new();
    for (i, (&v, t)) in graph.outputs().iter().zip(&outputs).enumerate() {
        let name = &graph.value(v).name;
        let mut file_name = format!("{}.npy", sanitize_file_name(name));
        if !used_names.insert(file_name.clone()) {
            file_name = format!("{}_{i}.npy", sanitize_file_name(name));
        }
        let path = args.output_dir.join(&file_name);
        write_atomically(&path, &kiln_ir::npy::write(t))?;
        described.push(serde_json::json!({
            "name": name,
            "shape": t.shape(),
            "dtype": t.dtype().name(),
            "file": path.display().to_string(),
        }));
        if !args.json {
            println!("{name}: {} -> {}", t.ty(), path.display());
        }
    }
    if args.json {
        let doc = serde_json::json!({
            "model": args.model.model.display().to_string(),
            "backend": match args.backend {
                Backend::Interp => "interp",
                Backend::C => "c",
                Backend::Cranelift => "cranelift",
            },
            "random_input": random,
            "outputs": described,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn read_npy(path: &Path) -> anyhow::Result<Tensor> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read input '{}'", path.display()))?;
    kiln_ir::npy::read(&bytes).with_context(|| format!("cannot parse input '{}'", path.display()))
}

/// Binds `--input` options to graph inputs; returns the inputs and whether they are random.
pub fn bind_inputs(graph: &Graph, specs: &[String]) -> anyhow::Result<(Vec<Tensor>, bool)> {
    let names: Vec<&str> = graph
        .inputs()
        .iter()
        .map(|&v| graph.value(v).name.as_str())
        .collect();
    if specs.is_empty() {
        let inputs = graph
            .inputs()
            .iter()
            .enumerate()
            .map(|(i, &v)| random_tensor(&graph.value(v).ty, i as u64))
            .collect();
        return Ok((inputs, true));
    }
    let mut bound: Vec<Option<Tensor>> = vec![None; names.len()];
    let mut next_positional = 0;
    for spec in specs {
        let (slot, file) = match spec.split_once('=') {
            Some((name, file)) if !name.is_empty() && !Path::new(spec).exists() => {
                let Some(slot) = names.iter().position(|n| *n == name) else {
                    bail!(
                        "--input {spec}: the model has no input '{name}' (inputs: {})",
                        names.join(", ")
                    );
                };
                (slot, file)
            }
            _ => {
                let slot = next_positional;
                next_positional += 1;
                (slot, spec.as_str())
            }
        };
        if slot >= names.len() {
            bail!(
                "--input {spec}: the model has only {} input(s)",
                names.len()
            );
        }
        if bound[slot].is_some() {
            bail!("--input {spec}: input '{}' is given twice", names[slot]);
        }
        bound[slot] = Some(read_npy(Path::new(file))?);
    }
    let mut inputs = Vec::with_capacity(names.len());
    for (slot, t) in bound.into_iter().enumerate() {
        let v = graph.inputs()[slot];
        let want = &graph.value(v).ty;
        let Some(t) = t else {
            bail!(
                "input '{}' ({want}) is not given: add --input {}=FILE.npy",
                names[slot],
                names[slot]
            );
        };
        // Real-valued data for an integer input (`--io int8`) is quantized as the build's
        // input quantization says.
        let t = super::quantize::real_to_input(graph.value(v), &t)?;
        if t.ty() != *want {
            bail!(
                "input '{}' expects {want} but the file holds {}",
                names[slot],
                t.ty()
            );
        }
        inputs.push(t);
    }
    Ok((inputs, false))
}

/// A deterministic pseudo-random tensor: float inputs uniform in [-1, 1), integer inputs in a
/// small non-negative range (valid as indices for most models), bools alternating.
fn random_tensor(ty: &TensorType, stream: u64) -> Tensor {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let n = ty.numel();
    let data = match ty.dtype {
        DType::F32 => TensorData::F32(
            (0..n)
                .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
                .collect(),
        ),
        DType::I8 => TensorData::I8((0..n).map(|_| (next() % 8) as i8).collect()),
        DType::U8 => TensorData::U8((0..n).map(|_| (next() % 8) as u8).collect()),
        DType::I16 => TensorData::I16((0..n).map(|_| (next() % 8) as i16).collect()),
        DType::I32 => TensorData::I32((0..n).map(|_| (next() % 8) as i32).collect()),
        DType::I64 => TensorData::I64((0..n).map(|_| (next() % 8) as i64).collect()),
        DType::Bool => TensorData::Bool((0..n).map(|_| next() % 2 == 0).collect()),
    };
    Tensor::new(ty.shape.clone(), data).unwrap_or_else(|_| Tensor::zeros(ty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_sanitized() {
        assert_eq!(sanitize_file_name("logits"), "logits");
        assert_eq!(sanitize_file_name("out/0:1"), "out_0_1");
        assert_eq!(sanitize_file_name(".."), "output..");
        assert_eq!(sanitize_file_name(""), "output");
    }
}
