//! ONNX backend node tests through the C backend built for the host (see `conformance/runner.rs`).

mod common;
#[path = "conformance/runner.rs"]
mod runner;

fn main() -> std::process::ExitCode {
    runner::main_for(runner::Engine::C)
}
