//! The ONNX node tests of the integer convolutions and products (QLinearConv, QLinearMatMul,
//! ConvInteger, MatMulInteger) through the C backend at -O2 with each ISA's int8 kernels
//! (scalar, Arm DSP, Helium), built for the host, every input but the first baked in as a
//! deployed model's weights are (see `conformance/runner.rs`). These cases mostly take the
//! portable kernels a specialization declines (non-zero weight zero points widen the weights
//! to int16, int32 outputs have no output stage, QLinearMatMul's 3-D case stays in float), so
//! this checks each ISA's choice of kernel; `backends/tests/int8_isa.rs` covers the fast paths
//! themselves and `tests/int8.rs` runs them on the boards.

mod common;
#[path = "conformance/runner.rs"]
mod runner;

use kiln_backends::c::Isa;

fn main() -> std::process::ExitCode {
    let mut filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if filters.is_empty() {
        filters = [
            "qlinearconv",
            "qlinearmatmul",
            "convinteger",
            "matmulinteger",
        ]
        .map(String::from)
        .to_vec();
    }
    let mut code = std::process::ExitCode::SUCCESS;
    for isa in [Isa::Scalar, Isa::ArmDsp, Isa::ArmMve] {
        println!("isa {}:", isa.name());
        if runner::main_with(runner::Engine::CIsa(isa), &filters) != std::process::ExitCode::SUCCESS
        {
            code = std::process::ExitCode::FAILURE;
        }
    }
    code
}
