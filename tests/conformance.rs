//! ONNX backend node tests through the reference interpreter (see `conformance/runner.rs`).

mod common;
#[path = "conformance/runner.rs"]
mod runner;

fn main() -> std::process::ExitCode {
    runner::main_for(runner::Engine::Interp)
}
