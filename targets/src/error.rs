//! Errors of building and running on a board. Each names what failed and what to do about it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TargetError {
    #[error("unknown target '{name}' (targets: {known})")]
    UnknownTarget { name: String, known: String },
    #[error("target '{target}' has no board '{board}' (boards for it: {known})")]
    UnknownBoard {
        target: String,
        board: String,
        known: String,
    },
    #[error(
        "'{tool}' is not installed: run scripts/setup-toolchains.sh (Debian packages: {packages})"
    )]
    MissingTool { tool: String, packages: String },
    #[error("the model does not fit board '{board}': {detail}")]
    DoesNotFit { board: String, detail: String },
    #[error("the Cranelift backend has no ISA for target '{target}' (it serves x86_64, aarch64 and riscv64); use --backend c")]
    NoCranelift { target: String },
    #[error("code generation failed: {0}")]
    Codegen(#[from] kiln_backends::BackendError),
    #[error("building for {target} failed:\n{stderr}")]
    Build { target: String, stderr: String },
    #[error("{0}")]
    Io(String),
    #[error("reading the ELF file: {0}")]
    Elf(String),
    #[error("QEMU ({board}) did not finish within {seconds} s; raise --timeout for a slow model")]
    Timeout { board: String, seconds: u64 },
    #[error("the program failed on {board} (exit status {status}):\n{output}")]
    Run {
        board: String,
        status: String,
        output: String,
    },
    #[error("unexpected harness output: {0}")]
    Harness(String),
}
