//! Command-line definitions (clap) and dispatch to one module per subcommand.

mod compare;
mod compile;
mod eval;
mod inspect;
mod load;
mod profile;
mod progress;
mod prune;
mod quantize;
mod report_html;
mod report_svg;
mod report_table;
mod run;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// kiln: an ahead-of-time compiler that turns ONNX models into firmware.
///
/// Every command takes an .onnx file. Shapes must be static: give symbolic or dynamic (-1)
/// input dimensions with --input-shape NAME=D0,D1,..., and bake inputs that carry shapes into
/// the model with --const-input NAME=FILE.npy. Errors name the ONNX node and op and exit with
/// code 2.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compile a model to C99 sources that link into firmware.
    ///
    /// Example: kiln compile model.onnx --emit c -o build/model --name kws
    Compile(compile::CompileArgs),
    /// Run a model on this computer and write its outputs as .npy files.
    ///
    /// Example: kiln run model.onnx --input input=x.npy --output-dir out/
    Run(run::RunArgs),
    /// List a model's layers, parameters and MACs, and check that kiln supports all of it.
    ///
    /// Exits non-zero and lists every unsupported op, attribute and element type at once when
    /// the model cannot be compiled. Example: kiln inspect model.onnx
    Inspect(inspect::InspectArgs),
    /// Run a model on an emulated board (QEMU) and check its outputs against the interpreter.
    ///
    /// Cross-compiles the generated C for the target, runs one inference on the board, and
    /// prints the error, flash, RAM and executed instructions. Exits 1 when the outputs differ.
    /// Example: kiln verify model.onnx --target cortex-m4
    Verify(verify::VerifyArgs),
    /// Measure a build's accuracy on labelled data (top-1; for a quantized build also the
    /// float model's top-1, their agreement and the output error).
    ///
    /// Example: kiln eval model.onnx --data x.npy --labels y.npy --quantize int8 --calibrate c.npy
    Eval(eval::EvalArgs),
    /// Build and run every (target, config) pair on its emulated board, in parallel, and
    /// compare flash, RAM, stack, instructions, error and accuracy in one table.
    ///
    /// Example: kiln compare model.onnx --targets cortex-m4,rv32imac --configs O0,O2,Os,int8
    /// --calibrate calib.npy --html report.html
    Compare(compare::CompareArgs),
    /// Instructions per layer on an emulated board, sorted by cost, with MACs, instructions
    /// per MAC, and each layer's code and weight bytes.
    ///
    /// Example: kiln profile model.onnx --target cortex-m4
    Profile(profile::ProfileArgs),
}

/// Options shared by every command that loads a model.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The ONNX model file.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Static shape for an input with symbolic or missing dimensions, e.g. input=1,3,224,224.
    /// Repeat for several inputs.
    #[arg(long = "input-shape", value_name = "NAME=D0,D1,...")]
    pub input_shapes: Vec<String>,
    /// Bake a graph input into the model as a constant with the value in FILE.npy, e.g.
    /// shape=shape.npy: for inputs that carry shapes (Reshape's shape, Resize's scales, ...),
    /// which kiln needs at compile time. The model then no longer has that input. Repeat for
    /// several inputs.
    #[arg(long = "const-input", value_name = "NAME=FILE.npy")]
    pub const_inputs: Vec<String>,
}

/// Optimization options, shared by `compile`, `run`, `verify` and `inspect` so that levels can
/// be compared in one command.
#[derive(Debug, Args)]
pub struct OptArgs {
    /// Optimization level: 0 (none), 1 (clean-up, constant and BatchNormalization folding),
    /// 2 (everything: also transpose clean-up, fusion of activations, Pad, MatMul+Add,
    /// LayerNorm and GELU). Default 2; `inspect` shows the imported graph unless -O is given.
    #[arg(short = 'O', value_name = "LEVEL", value_parser = ["0", "1", "2"])]
    pub level: Option<String>,
    /// Print the IR text dump after PASS (a pass name, or `all`) to stderr.
    #[arg(long, value_name = "PASS")]
    pub dump_ir_after: Option<String>,
    /// Print how long each pass took to stderr.
    #[arg(long)]
    pub time_passes: bool,
}

impl OptArgs {
    /// The level given, or `default`.
    pub fn level_or(&self, default: kiln_passes::OptLevel) -> kiln_passes::OptLevel {
        match self.level.as_deref() {
            Some("0") => kiln_passes::OptLevel::O0,
            Some("1") => kiln_passes::OptLevel::O1,
            Some("2") => kiln_passes::OptLevel::O2,
            _ => default,
        }
    }
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Compile(args) => compile::compile(&args),
        Command::Run(args) => run::run(&args),
        Command::Inspect(args) => inspect::inspect(&args),
        Command::Verify(args) => verify::verify(&args),
        Command::Eval(args) => eval::eval(&args),
        Command::Compare(args) => compare::compare(&args),
        Command::Profile(args) => profile::profile(&args),
    }
}
