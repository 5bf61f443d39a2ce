//! ONNX backend node tests through the `kiln` binary (`kiln run`, with `--const-input` for the
//! inputs that carry shapes and `--input-shape` for open dimensions), each also through the
//! library's interpreter; both pass rates are printed and must agree case by case (see
//! `conformance/runner.rs`).

mod common;
#[path = "conformance/runner.rs"]
mod runner;

fn main() -> std::process::ExitCode {
    runner::main_for(runner::Engine::Cli)
}
