//! `kiln verify`: compile a model, cross-compile it for a target, run one inference on the
//! target's emulated board, and compare the outputs with the host interpreter. Prints the
//! error, flash, RAM and instruction figures (or a JSON object with `--json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kiln_targets::compare::{compare_outputs, Comparison};
use kiln_targets::{BoardOptions, BoardRun, CodeBackend};

use super::compile::CodegenArgs;
use kiln_ir::Tensor;

use super::load::{prepare, write_atomically, Prepared};
use super::run::{bind_inputs, sanitize_file_name};
use super::ModelArgs;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The target CPU: cortex-m0, cortex-m3, cortex-m4, cortex-m7, cortex-m33, cortex-m55,
    /// rv32imac, rv64gc (bare-metal boards), or aarch64 (Linux, QEMU user mode).
    #[arg(long, value_name = "TARGET")]
    target: String,
    /// Which backend generates the code: the C backend (every target) or Cranelift's object
    /// files (rv64gc and aarch64).
    #[arg(long, value_enum, default_value_t = VerifyBackend::C)]
    backend: VerifyBackend,
    /// With --backend cranelift: scalar code only, no 128-bit vectors.
    #[arg(long)]
    no_simd: bool,
    /// With --backend cranelift: no fused multiply-add (every product rounded before it is
    /// added, as the interpreter computes).
    #[arg(long)]
    no_fma: bool,
    /// With --backend cranelift: no zero-padded input copies for convolutions (smaller arena).
    #[arg(long)]
    no_explicit_padding: bool,
    #[command(flatten)]
    run: BoardRunArgs,
    /// Also write the board's outputs here, one <output name>.npy each (created if missing).
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    #[command(flatten)]
    codegen: CodegenArgs,
    #[command(flatten)]
    opt: super::OptArgs,
    #[command(flatten)]
    quant: super::quantize::QuantArgs,
    #[command(flatten)]
    prune: super::prune::PruneArgs,
}

/// The flags of a run on an emulated board, shared by `kiln verify` and `kiln profile`.
#[derive(Debug, Args)]
pub struct BoardRunArgs {
    /// The emulated board (default: the target's first board; rv32imac also runs on sifive_e).
    #[arg(long, value_name = "BOARD")]
    pub board: Option<String>,
    /// Input data: NAME=FILE.npy, or a bare FILE.npy to bind inputs in graph order. Without any
    /// --input, kiln uses the seeded random input of `kiln run`.
    #[arg(long = "input", value_name = "[NAME=]FILE.npy")]
    pub inputs: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Time limit for the emulator, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// Extra flag for the cross compiler (repeatable), e.g. --cflag=-Os.
    #[arg(long = "cflag", value_name = "FLAG", allow_hyphen_values = true)]
    pub cflags: Vec<String>,
    /// Keep the build directory (sources, linker script, ELF) here (kiln profile: the
    /// profiling build's).
    #[arg(long, value_name = "DIR")]
    pub keep_dir: Option<PathBuf>,
}

impl BoardRunArgs {
    /// The board options these flags ask for, with code from `backend`.
    pub fn board_options(&self, backend: CodeBackend) -> BoardOptions {
        BoardOptions {
            backend,
            cflags: self.cflags.clone(),
            timeout: Duration::from_secs(self.timeout),
            keep_dir: self.keep_dir.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum VerifyBackend {
    C,
    Cranelift,
}

/// What `kiln verify` and `kiln profile` start from: the target and its board, the prepared
/// model, and the inputs to run it on (with a note on stderr when they are the seeded random
/// ones and the output is not JSON).
pub(super) struct BoardSetup {
    pub target: &'static kiln_targets::Target,
    pub board: &'static kiln_targets::Board,
    pub prepared: Prepared,
    pub inputs: Vec<Tensor>,
}

impl BoardSetup {
    pub fn new(
        target: &str,
        run: &BoardRunArgs,
        model: &ModelArgs,
        (opt, quant, prune): (
            &super::OptArgs,
            &super::quantize::QuantArgs,
            &super::prune::PruneArgs,
        ),
    ) -> anyhow::Result<BoardSetup> {
        let (target, board) =
            kiln_targets::resolve(target, run.board.as_deref()).map_err(anyhow::Error::new)?;
        let prepared = prepare(model, opt, quant, prune, kiln_passes::OptLevel::O2)?;
        let (inputs, random) = bind_inputs(&prepared.model.graph, &run.inputs)?;
        if random && !run.json {
            eprintln!("note: no --input given: running on a seeded random input (seed 0, uniform in [-1, 1) for float inputs)");
        }
        Ok(BoardSetup {
            target,
            board,
            prepared,
            inputs,
        })
    }
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    if args.codegen.has_isa() && args.backend != VerifyBackend::C {
        anyhow::bail!(
            "--isa selects the C backend's int8 kernels; --backend cranelift does not use it"
        );
    }
    let c = args
        .codegen
        .c_options(args.opt.level_or(kiln_passes::OptLevel::O2))?;
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
    let expected = reference_outputs(&prepared, &inputs)?;
    let options = args.run.board_options(match args.backend {
        VerifyBackend::C => CodeBackend::C,
        VerifyBackend::Cranelift => CodeBackend::Cranelift {
            simd: !args.no_simd,
            fma: !args.no_fma,
            explicit_padding: !args.no_explicit_padding,
        },
    });
    let graph = &prepared.model.graph;
    let run = kiln_targets::run_on_board(graph, &inputs, &c, target, board, &options)
        .map_err(anyhow::Error::new)
        .with_context(|| {
            format!(
                "cannot verify '{}' on {}",
                args.model.model.display(),
                target.name
            )
        })?;
    let comparison = compare_outputs(&run.outputs, &expected);
    if let Some(dir) = &args.output_dir {
        write_outputs(dir, graph, &run.outputs)?;
    }
    if args.run.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(args, &run, &comparison))?
        );
    } else {
        print_report(args, &run, &comparison);
    }
    Ok(if comparison.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What a board run is checked against: the interpreter on the imported graph, so the check
/// covers the passes as well as the code; an integer build is checked against the interpreter
/// on its own integer graph, whose rounding differs from the float one's by design (`kiln
/// eval` measures that), and a pruned build against the interpreter on the pruned graph.
pub fn reference_outputs(prepared: &Prepared, inputs: &[Tensor]) -> anyhow::Result<Vec<Tensor>> {
    let reference = if prepared.is_integer() || prepared.prune.is_some() {
        &prepared.model.graph
    } else {
        &prepared.imported_graph
    };
    kiln_ir::interp::run(reference, inputs)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the reference interpreter failed")
}

fn report_json(args: &VerifyArgs, run: &BoardRun, cmp: &Comparison) -> serde_json::Value {
    let s = &run.sizes;
    serde_json::json!({
        "model": args.model.model.display().to_string(),
        "target": run.target.name,
        "board": run.board.name,
        "passed": cmp.passed,
        "max_abs_error": finite_or_null(cmp.max_abs_error),
        "tolerance": cmp.tolerance,
        "flash_bytes": run.flash_bytes(),
        "ram_bytes": run.ram_bytes(),
        "arena_bytes": run.arena_bytes,
        "stack_bytes": run.stack_bytes,
        "instructions": run.instructions,
        "sections": {
            "text": s.text,
            "rodata": s.rodata,
            "data": s.data,
            "bss": s.bss,
            "test_inputs": s.testdata,
        },
        "board_flash_bytes": run.board.flash.length,
        "board_ram_bytes": run.board.ram.length,
    })
}

pub fn finite_or_null(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}

fn print_report(args: &VerifyArgs, run: &BoardRun, cmp: &Comparison) {
    let s = &run.sizes;
    println!(
        "{} on {} (board {})",
        args.model.model.display(),
        run.target.name,
        run.board.name
    );
    println!(
        "  outputs:      {} (max abs error {:.3e} vs the interpreter, tolerance {:.1e})",
        if cmp.passed { "PASS" } else { "FAIL" },
        cmp.max_abs_error,
        cmp.tolerance
    );
    println!(
        "  flash:        {} bytes (code {}, constants {}, data image {}) of {}",
        run.flash_bytes(),
        s.text,
        s.rodata,
        s.data,
        run.board.flash.length
    );
    println!(
        "  RAM:          {} bytes (data {}, bss {} incl. arena {}, stack peak {}) of {}",
        run.ram_bytes(),
        s.data,
        s.bss,
        run.arena_bytes,
        run.stack_bytes,
        run.board.ram.length
    );
    println!("  instructions: {} (one inference)", run.instructions);
}

fn write_outputs(
    dir: &std::path::Path,
    graph: &kiln_ir::Graph,
    outputs: &[kiln_ir::Tensor],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory '{}'", dir.display()))?;
    for (i, (&v, t)) in graph.outputs().iter().zip(outputs).enumerate() {
        let name = sanitize_file_name(&graph.value(v).name);
        write_atomically(
            &dir.join(format!("{name}_{i}.npy")),
            &kiln_ir::npy::write(t),
        )?;
    }
    Ok(())
}
