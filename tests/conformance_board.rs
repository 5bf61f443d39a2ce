//! ONNX backend node tests on an emulated Cortex-M4 (QEMU mps2-an386): one case per op, built
//! with arm-none-eabi-gcc and compared with the expected outputs (see `conformance/runner.rs`).

mod common;
#[path = "conformance/runner.rs"]
mod runner;

fn main() -> std::process::ExitCode {
    runner::main_for(runner::Engine::CortexM4)
}
