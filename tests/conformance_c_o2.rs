//! ONNX backend node tests through the generated C after the O2 passes (see
//! `conformance/runner.rs`): the same cases, and the same known failures, as `conformance_c`.

mod common;
#[path = "conformance/runner.rs"]
mod runner;

fn main() -> std::process::ExitCode {
    runner::main_for(runner::Engine::COptimized)
}
