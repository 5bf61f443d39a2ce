//! ONNX backend node tests through the Cranelift backend's host JIT (see `conformance/runner.rs`).

mod common;
#[path = "conformance/runner.rs"]
mod runner;

fn main() -> std::process::ExitCode {
    runner::main_for(runner::Engine::Cranelift)
}
