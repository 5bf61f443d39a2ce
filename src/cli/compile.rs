//! `kiln compile`: ONNX model to C99 sources or a native object file, with a report of memory
//! and compute.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kiln_backends::c::{emit_c, ArenaMode, COptions, Isa, WeightLayout};
use kiln_backends::cranelift::{emit_object, CraneliftOptions, CraneliftTarget};
use kiln_backends::program::LayerInfo;
use kiln_passes::MemoryPlan;

use super::load::{prepare, write_atomically};
use super::ModelArgs;

#[derive(Debug, Args)]
pub struct CompileArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// What to generate.
    #[arg(long, value_enum, default_value_t = Emit::C)]
    emit: Emit,
    /// Machine for `--emit obj` (the Cranelift backend): x86_64, aarch64 or riscv64.
    #[arg(long, value_enum, default_value_t = ObjTarget::X86_64)]
    target: ObjTarget,
    /// With --emit obj: scalar code only, no 128-bit vectors.
    #[arg(long)]
    no_simd: bool,
    /// With --emit obj: keep every multiply and add separately rounded (no fused multiply-add),
    /// as the interpreter computes them.
    #[arg(long)]
    no_fma: bool,
    /// With --emit obj: convolutions keep their implicit padding (no zero-padded input copies:
    /// a smaller arena, slower border columns).
    #[arg(long)]
    no_explicit_padding: bool,
    /// Output directory (created if missing). It is self-contained: `cc -c DIR/*.c` builds it.
    #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
    output_dir: PathBuf,
    #[command(flatten)]
    codegen: CodegenArgs,
    #[command(flatten)]
    opt: super::OptArgs,
    #[command(flatten)]
    quant: super::quantize::QuantArgs,
    #[command(flatten)]
    prune: super::prune::PruneArgs,
    /// Also write PREFIX.report.json.
    #[arg(long, value_enum)]
    report: Option<Report>,
}

/// Code-generation options, shared by `kiln compile` and `kiln verify` so that a verified build
/// is the build that ships.
#[derive(Debug, Args)]
pub struct CodegenArgs {
    /// Prefix of every exported symbol and file name, so several models link into one firmware.
    #[arg(long, value_name = "PREFIX", default_value = "model")]
    name: String,
    /// Who provides the arena: the caller passes a buffer (`caller`), or the generated code
    /// defines one, size-checked at compile time (`static`).
    #[arg(long, value_enum, default_value_t = Arena::Caller)]
    arena: Arena,
    /// Put the weights in this linker section (e.g. .extflash).
    #[arg(long, value_name = "NAME")]
    weights_section: Option<String>,
    /// Put the static arena in this linker section (e.g. .dtcm); needs --arena static.
    #[arg(long, value_name = "NAME")]
    arena_section: Option<String>,
    /// Use kiln's own math approximations instead of libm (documented in kiln_runtime.h).
    #[arg(long)]
    no_libm: bool,
    /// Fully unroll innermost loops of at most N iterations (0: no unrolling; trades flash for
    /// speed, e.g. 3 unrolls 3x3 kernel taps). Default: 3 at -O2, 0 below.
    #[arg(long, value_name = "N")]
    unroll: Option<usize>,
    /// Compute N output channels of a convolution or matrix product per pass over the input
    /// (register tiling; 0 or 1: off). Default: 4 at -O2, off below.
    #[arg(long, value_name = "N")]
    oc_tile: Option<usize>,
    /// Loop order of convolutions.
    #[arg(long, value_enum, default_value_t = LoopOrder::ChannelsOuter)]
    loop_order: LoopOrder,
    /// Instructions the C backend's int8 layers may use. `kiln compile` writes portable C
    /// unless told; `kiln verify --target` uses its CPU's (dsp on cortex-m4/m7/m33, mve on
    /// cortex-m55, scalar on rv32imac/rv64gc), which this overrides. Every choice compiles
    /// with any C99 compiler (the runtime header has portable forms of the DSP and Helium
    /// operations) and computes the same outputs; only the speed differs.
    #[arg(long, value_enum)]
    isa: Option<IsaArg>,
    /// How much flash the int8 kernels of `--isa` may spend on weights widened to 16 bits to
    /// save instructions: `compact` (one byte per weight everywhere), `balanced` (fully
    /// connected layers at batch 1: at most 4 KB of them on the DSP cores, all of them on
    /// RV32, where two columns share each multiply), `fast` (every batch-1 layer on the DSP
    /// cores too).
    #[arg(long, value_enum, default_value_t = Int8Weights::Balanced)]
    int8_weights: Int8Weights,
}

/// The `--int8-weights` choices (see [`WeightLayout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Int8Weights {
    Compact,
    Balanced,
    Fast,
}

/// The `--isa` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IsaArg {
    /// Portable C99 kernels (any core; Cortex-M0/M3, hosts).
    Portable,
    /// Register-blocked scalar C for cores with many registers and no SIMD (RV32IMAC,
    /// RV64GC): batch-1 products with two columns per multiply.
    Scalar,
    /// Armv7E-M DSP: SMLAD dual 16-bit multiply-accumulates (Cortex-M4, M7, M33).
    Dsp,
    /// Armv8.1-M Helium: VMLADAVA products (Cortex-M55).
    Mve,
}

impl IsaArg {
    fn isa(self) -> Isa {
        match self {
            IsaArg::Portable => Isa::Portable,
            IsaArg::Scalar => Isa::Scalar,
            IsaArg::Dsp => Isa::ArmDsp,
            IsaArg::Mve => Isa::ArmMve,
        }
    }
}

impl CodegenArgs {
    /// Whether `--isa` was given (it applies to the C backend only).
    pub fn has_isa(&self) -> bool {
        self.isa.is_some()
    }

    /// The C backend's options at optimization level `level`; checks the combinations clap
    /// cannot. `-O2` favours speed: unless told otherwise it tiles four output channels and
    /// unrolls 3-tap loops (on Cortex-M4 about 2x fewer instructions for a few KB of code).
    pub fn c_options(&self, level: kiln_passes::OptLevel) -> anyhow::Result<COptions> {
        let speed = level == kiln_passes::OptLevel::O2;
        if self.arena_section.is_some() && self.arena == Arena::Caller {
            anyhow::bail!(
                "--arena-section needs --arena static (with --arena caller, place your own buffer)"
            );
        }
        Ok(COptions {
            name: self.name.clone(),
            arena: match self.arena {
                Arena::Caller => ArenaMode::Caller,
                Arena::Static => ArenaMode::Static,
            },
            weights_section: self.weights_section.clone(),
            arena_section: self.arena_section.clone(),
            no_libm: self.no_libm,
            schedule: kiln_backends::kernel::Schedule {
                unroll_limit: self.unroll.unwrap_or(if speed { 3 } else { 0 }),
                oc_tile: self.oc_tile.unwrap_or(if speed { 4 } else { 0 }),
                windowed_oc_tile: 0,
                loop_order: match self.loop_order {
                    LoopOrder::ChannelsOuter => kiln_backends::kernel::LoopOrder::ChannelsOuter,
                    LoopOrder::PixelsOuter => kiln_backends::kernel::LoopOrder::PixelsOuter,
                },
            },
            isa: self.isa.map(IsaArg::isa),
            int8_weights: match self.int8_weights {
                Int8Weights::Compact => WeightLayout::Compact,
                Int8Weights::Balanced => WeightLayout::Balanced,
                Int8Weights::Fast => WeightLayout::Fast,
            },
            ..COptions::default()
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Emit {
    /// Portable C99 sources.
    C,
    /// An ELF relocatable object (PREFIX.o) and the same header (PREFIX.h), from Cranelift.
    Obj,
    /// The optimized (and pruned) float graph as an ONNX model (PREFIX.onnx, opset 17).
    Onnx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ObjTarget {
    #[value(name = "x86_64", alias = "x86-64")]
    X86_64,
    Aarch64,
    Riscv64,
}

impl ObjTarget {
    fn cranelift(self) -> CraneliftTarget {
        match self {
            ObjTarget::X86_64 => CraneliftTarget::X86_64,
            ObjTarget::Aarch64 => CraneliftTarget::Aarch64,
            ObjTarget::Riscv64 => CraneliftTarget::Riscv64,
        }
    }
}

/// What a backend produced, for writing and reporting.
struct Compiled {
    files: Vec<(String, Vec<u8>)>,
    plan: MemoryPlan,
    layers: Vec<LayerInfo>,
    weight_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Arena {
    Caller,
    Static,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LoopOrder {
    /// For each output channel, sweep the output plane.
    ChannelsOuter,
    /// For each output pixel, compute every output channel.
    PixelsOuter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Report {
    Json,
}

pub fn compile(args: &CompileArgs) -> anyhow::Result<ExitCode> {
    if args.codegen.has_isa() && args.emit != Emit::C {
        anyhow::bail!(
            "--isa selects the C backend's int8 kernels; --emit obj and --emit onnx do not use it"
        );
    }
    let options = args
        .codegen
        .c_options(args.opt.level_or(kiln_passes::OptLevel::O2))?;
    let prepared = prepare(
        &args.model,
        &args.opt,
        &args.quant,
        &args.prune,
        kiln_passes::OptLevel::O2,
    )?;
    let model = &prepared.model;
    let before = prepared.imported;
    let after = kiln_passes::summarize(&model.graph).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled = match args.emit {
        Emit::Onnx => return emit_onnx(args, &prepared, &before, &after),
        Emit::C => {
            let program = emit_c(&model.graph, &options).map_err(|e| anyhow::anyhow!("{e}"))?;
            Compiled {
                files: program
                    .files
                    .into_iter()
                    .map(|(n, t)| (n, t.into_bytes()))
                    .collect(),
                plan: program.plan,
                layers: program.layers,
                weight_bytes: program.weight_bytes,
            }
        }
        Emit::Obj => {
            let cl = CraneliftOptions {
                name: options.name.clone(),
                target: args.target.cranelift(),
                arena: options.arena,
                simd: !args.no_simd,
                fma: !args.no_fma,
                explicit_padding: !args.no_explicit_padding,
                no_libm: options.no_libm,
                schedule: CraneliftOptions::native_schedule(options.schedule),
                alignment: options.alignment,
                ..CraneliftOptions::default()
            };
            let program = emit_object(&model.graph, &cl).map_err(|e| anyhow::anyhow!("{e}"))?;
            Compiled {
                files: program.files,
                plan: program.plan,
                layers: program.layers,
                weight_bytes: program.weight_bytes,
            }
        }
    };
    std::fs::create_dir_all(&args.output_dir).with_context(|| {
        format!(
            "cannot create output directory '{}'",
            args.output_dir.display()
        )
    })?;
    for (name, bytes) in &compiled.files {
        write_atomically(&args.output_dir.join(name), bytes)?;
    }
    let mut report = report_json(&compiled, &args.codegen.name);
    report["optimization"] = serde_json::json!({
        "level": args.opt.level_or(kiln_passes::OptLevel::O2) as u8,
        "before": summary_json(&before),
        "after": summary_json(&after),
    });
    if prepared.is_integer() {
        report["quantization"] = quantization_report(&prepared, &after);
    }
    if let Some(p) = &prepared.prune {
        report["pruning"] = super::prune::report_json(p);
    }
    if args.report == Some(Report::Json) {
        let path = args
            .output_dir
            .join(format!("{}.report.json", args.codegen.name));
        write_atomically(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    print_report(&compiled, &args.output_dir);
    if let Some(p) = &prepared.prune {
        super::prune::print_report(p);
    }
    if let Some(q) = report.get("quantization") {
        print_quantization(q);
    }
    println!(
        "optimization -O{}: {:>6} nodes {:>12} MACs {:>10} weight bytes {:>10} arena bytes (imported)",
        args.opt.level_or(kiln_passes::OptLevel::O2) as u8,
        before.nodes,
        before.macs,
        before.weight_bytes,
        before.arena_bytes
    );
    println!(
        "                {:>6} nodes {:>12} MACs {:>10} weight bytes {:>10} arena bytes (compiled)",
        after.nodes, after.macs, after.weight_bytes, after.arena_bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// `--emit onnx`: writes the optimized float graph as PREFIX.onnx.
fn emit_onnx(
    args: &CompileArgs,
    prepared: &super::load::Prepared,
    before: &kiln_passes::GraphSummary,
    after: &kiln_passes::GraphSummary,
) -> anyhow::Result<ExitCode> {
    if prepared.is_integer() {
        anyhow::bail!(
            "--emit onnx writes float graphs; this build computes with kiln's integer ops, which have no ONNX form (drop --quantize to export the float graph)"
        );
    }
    let bytes =
        kiln_frontend::export_model(&prepared.model.graph).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(&args.output_dir).with_context(|| {
        format!(
            "cannot create output directory '{}'",
            args.output_dir.display()
        )
    })?;
    let file = format!("{}.onnx", args.codegen.name);
    write_atomically(&args.output_dir.join(&file), &bytes)?;
    if let Some(p) = &prepared.prune {
        super::prune::print_report(p);
    }
    println!(
        "optimization -O{}: {:>6} nodes {:>12} MACs {:>10} weight bytes (imported)",
        args.opt.level_or(kiln_passes::OptLevel::O2) as u8,
        before.nodes,
        before.macs,
        before.weight_bytes
    );
    println!(
        "                {:>6} nodes {:>12} MACs {:>10} weight bytes (exported)",
        after.nodes, after.macs, after.weight_bytes
    );
    println!("wrote {file} to {}", args.output_dir.display());
    Ok(ExitCode::SUCCESS)
}

/// What quantization made of the model: weight and arena bytes of the float and the integer
/// build (for a model kiln quantized), each integer layer's input and output quantization,
/// and the ops left in float.
fn quantization_report(
    prepared: &super::load::Prepared,
    after: &kiln_passes::GraphSummary,
) -> serde_json::Value {
    use super::quantize::{float_fallbacks, quant_json, quant_label};
    let graph = &prepared.model.graph;
    let mut layers = Vec::new();
    for id in graph.topo_order().unwrap_or_default() {
        let node = graph.node(id);
        if node.outputs.iter().all(|&v| graph.value(v).quant.is_none()) {
            continue;
        }
        let activations: Vec<&kiln_ir::Value> = node
            .inputs
            .iter()
            .map(|&v| graph.value(v))
            .filter(|v| !v.is_const())
            .collect();
        layers.push(serde_json::json!({
            "node": node.name,
            "op": node.op.name(),
            "inputs": activations.iter().map(|v| quant_label(v)).collect::<Vec<_>>(),
            "output": node.outputs.first().map(|&v| quant_label(graph.value(v))),
            "input_quantization": activations.iter().map(|v| quant_json(v)).collect::<Vec<_>>(),
            "output_quantization": node.outputs.first().map(|&v| quant_json(graph.value(v))),
        }));
    }
    let fallbacks: Vec<serde_json::Value> = float_fallbacks(graph)
        .into_iter()
        .map(|(node, op)| serde_json::json!({"node": node, "op": op}))
        .collect();
    let mut doc = serde_json::json!({
        "weight_bytes": after.weight_bytes,
        "parameter_bytes": after.weight_bytes - after.quantization_bytes,
        "quantization_bytes": after.quantization_bytes,
        "arena_bytes": after.arena_bytes,
        "layers": layers,
        "float_fallback": fallbacks,
    });
    if let Some(q) = &prepared.quant {
        let f = &prepared.optimized_float;
        doc["calibration_samples"] = serde_json::json!(q.samples);
        doc["quantized_activations"] = serde_json::json!(q.report.activations);
        doc["float_weight_bytes"] = serde_json::json!(f.weight_bytes);
        doc["float_parameter_bytes"] = serde_json::json!(f.weight_bytes - f.quantization_bytes);
        doc["float_arena_bytes"] = serde_json::json!(f.arena_bytes);
    }
    doc
}

fn print_quantization(q: &serde_json::Value) {
    println!();
    let ratio = |a: &serde_json::Value, b: &serde_json::Value| match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => format!(" ({:.3}x)", a / b),
        _ => String::new(),
    };
    if let Some(samples) = q["calibration_samples"].as_u64() {
        println!(
            "quantization: int8, calibrated on {samples} samples, {} activations quantized",
            q["quantized_activations"]
        );
        println!(
            "  weights and biases: {} bytes float -> {} bytes int8{}",
            q["float_parameter_bytes"],
            q["parameter_bytes"],
            ratio(&q["parameter_bytes"], &q["float_parameter_bytes"])
        );
        println!(
            "  all constants:      {} bytes float -> {} bytes int8{} (with {} bytes of multipliers, shifts and tables)",
            q["float_weight_bytes"],
            q["weight_bytes"],
            ratio(&q["weight_bytes"], &q["float_weight_bytes"]),
            q["quantization_bytes"]
        );
        println!(
            "  arena:              {} bytes float -> {} bytes int8{}",
            q["float_arena_bytes"],
            q["arena_bytes"],
            ratio(&q["arena_bytes"], &q["float_arena_bytes"])
        );
    } else {
        println!("quantization: integer kernels from the model's own quantization");
    }
    println!("  {:<40}  {:<14}  {:<34}  output", "layer", "op", "inputs");
    for l in q["layers"].as_array().into_iter().flatten() {
        let inputs: Vec<&str> = l["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let node: String = l["node"].as_str().unwrap_or("").chars().take(40).collect();
        println!(
            "  {node:<40}  {:<14}  {:<34}  {}",
            l["op"].as_str().unwrap_or(""),
            inputs.join(", "),
            l["output"].as_str().unwrap_or("")
        );
    }
    match q["float_fallback"].as_array() {
        Some(f) if !f.is_empty() => {
            println!(
                "  float fallback ({} op(s) without an integer kernel):",
                f.len()
            );
            for op in f {
                println!(
                    "    {} ({})",
                    op["node"].as_str().unwrap_or(""),
                    op["op"].as_str().unwrap_or("")
                );
            }
        }
        _ => println!("  float fallback: none (integer kernels only)"),
    }
}

fn summary_json(s: &kiln_passes::GraphSummary) -> serde_json::Value {
    serde_json::json!({
        "nodes": s.nodes,
        "macs": s.macs,
        "weight_bytes": s.weight_bytes,
        "arena_bytes": s.arena_bytes,
    })
}

fn report_json(program: &Compiled, name: &str) -> serde_json::Value {
    let plan = &program.plan;
    let layers: Vec<serde_json::Value> = program
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "node": l.node,
                "op": l.op,
                "kernel": l.kernel,
                "shape": l.output.shape,
                "dtype": l.output.dtype.name(),
                "macs": l.macs,
                "arena_offset": l.arena_offset,
                "bytes": l.bytes,
            })
        })
        .collect();
    serde_json::json!({
        "name": name,
        "arena_bytes": plan.arena_bytes,
        "arena_lower_bound_bytes": plan.lower_bound_bytes,
        "arena_naive_bytes": plan.naive_bytes,
        "weight_bytes": program.weight_bytes,
        "macs": program.layers.iter().map(|l| l.macs).sum::<u64>(),
        "layers": layers,
    })
}

fn print_report(program: &Compiled, dir: &std::path::Path) {
    let plan = &program.plan;
    println!(
        "{:<40}  {:<18}  {:<20}  {:>12}  {:>10}  {:>9}",
        "node", "op", "output", "MACs", "arena off", "bytes"
    );
    for l in &program.layers {
        let offset = l
            .arena_offset
            .map_or_else(|| "-".to_string(), |o| o.to_string());
        let node: String = l.node.chars().take(40).collect();
        println!(
            "{node:<40}  {:<18}  {:<20}  {:>12}  {offset:>10}  {:>9}",
            l.op,
            l.output.to_string(),
            l.macs,
            l.bytes
        );
    }
    println!();
    println!(
        "arena: {} bytes (lower bound for this schedule {}, naive sum {})",
        plan.arena_bytes, plan.lower_bound_bytes, plan.naive_bytes
    );
    println!("weights: {} bytes", program.weight_bytes);
    println!(
        "MACs: {}",
        program.layers.iter().map(|l| l.macs).sum::<u64>()
    );
    let files: Vec<&str> = program.files.iter().map(|(n, _)| n.as_str()).collect();
    println!("wrote {} to {}", files.join(", "), dir.display());
}
