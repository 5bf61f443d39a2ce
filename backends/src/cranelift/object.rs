//! ELF relocatable objects for x86_64, aarch64 and riscv64 with the C backend's ABI and header.

use cranelift_module::default_libcall_names;
use cranelift_object::{ObjectBuilder, ObjectModule};
use kiln_ir::Graph;
use kiln_passes::MemoryPlan;

use super::{codegen_error, define_program, lower, prepare, target_isa, CraneliftOptions};
use crate::c::{emit_header, COptions};
use crate::error::BackendError;
use crate::program::LayerInfo;

/// A compiled object and what reports need.
#[derive(Debug)]
pub struct ObjectProgram {
    /// `PREFIX.o` (bytes) and `PREFIX.h` (the C backend's header); with `no_libm`, also
    /// `PREFIX_math.c` and `kiln_runtime.h` (the approximations the object calls).
    pub files: Vec<(String, Vec<u8>)>,
    pub plan: MemoryPlan,
    pub layers: Vec<LayerInfo>,
    pub weight_bytes: usize,
}

/// Compiles `graph` to an object file for `opts.target`.
pub fn emit_object(graph: &Graph, opts: &CraneliftOptions) -> Result<ObjectProgram, BackendError> {
    let graph = &*prepare(graph, opts)?;
    let program = lower(graph, opts)?;
    // Position-independent, so the object links into PIE executables and shared libraries.
    let isa = target_isa(opts.target, true)?;
    let builder = ObjectBuilder::new(isa, opts.name.as_bytes().to_vec(), default_libcall_names())
        .map_err(|e| codegen_error("object builder", e))?;
    let mut module = ObjectModule::new(builder);
    define_program(&mut module, graph, &program, opts)?;
    let product = module.finish();
    let bytes = product
        .emit()
        .map_err(|e| codegen_error("writing the object", e))?;
    let header = emit_header(
        graph,
        &program.plan,
        &COptions {
            name: opts.name.clone(),
            arena: opts.arena,
            alignment: opts.alignment,
            ..COptions::default()
        },
    );
    let weight_bytes = program.weight_bytes(graph);
    let mut files = vec![
        (format!("{}.o", opts.name), bytes),
        (format!("{}.h", opts.name), header.into_bytes()),
    ];
    if opts.no_libm {
        files.push((
            format!("{}_math.c", opts.name),
            super::math_source(&opts.name).into_bytes(),
        ));
        files.push((
            crate::c::RUNTIME_HEADER_NAME.to_string(),
            crate::c::RUNTIME_HEADER.as_bytes().to_vec(),
        ));
    }
    Ok(ObjectProgram {
        files,
        plan: program.plan,
        layers: program.layers,
        weight_bytes,
    })
}
