//! The `kiln` command line: compile ONNX models for microcontrollers, run and inspect them.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            // One line: context first, then the cause (`{:#}` joins the chain with ": ").
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
