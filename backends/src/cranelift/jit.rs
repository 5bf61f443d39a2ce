//! The host JIT: compiles a program into this process's memory and runs it on tensors.
//!
//! Calling generated machine code is inherently unsafe; this is the one module of the backend
//! that does it, behind a safe API that owns the buffers the code reads and writes.
#![allow(unsafe_code)]

use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::default_libcall_names;
use kiln_ir::{Graph, Tensor, TensorData, TensorType};

use super::{
    codegen_error, define_program, lower, prepare, target_isa, CraneliftOptions, CraneliftTarget,
};
use crate::error::BackendError;

/// A model compiled for the host, ready to run.
pub struct JitProgram {
    // Keeps the code alive; dropped (and its memory freed) with the program.
    module: Option<JITModule>,
    entry: extern "C" fn(*const *mut u8) -> i32,
    arena: AlignedBuffer,
    inputs: Vec<TensorType>,
    outputs: Vec<TensorType>,
    /// Bytes of weights compiled in (for reports).
    pub weight_bytes: usize,
    pub arena_bytes: usize,
}

impl std::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitProgram")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("arena_bytes", &self.arena_bytes)
            .finish()
    }
}

/// A zeroed, 16-byte aligned byte buffer (vector loads and stores want the alignment).
struct AlignedBuffer {
    words: Vec<u128>,
    len: usize,
}

impl AlignedBuffer {
    fn new(len: usize) -> Self {
        AlignedBuffer {
            words: vec![0; len.div_ceil(16).max(1)],
            len,
        }
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let mut b = AlignedBuffer::new(bytes.len());
        b.bytes_mut().copy_from_slice(bytes);
        b
    }

    fn ptr(&mut self) -> *mut u8 {
        self.words.as_mut_ptr().cast()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        // SAFETY: `words` holds at least `len` bytes, and u8 has no alignment or validity
        // requirements.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), len) }
    }
}

impl JitProgram {
    /// Compiles `graph` for the host.
    pub fn compile(graph: &Graph, opts: &CraneliftOptions) -> Result<JitProgram, BackendError> {
        if opts.target != CraneliftTarget::Host {
            return Err(BackendError::Lowering(
                "the JIT compiles for the host only; use emit_object for other targets".into(),
            ));
        }
        if opts.no_libm {
            return Err(BackendError::Lowering(
                "no_libm applies to objects (emit_object); the JIT uses the host's libm".into(),
            ));
        }
        let graph = &*prepare(graph, opts)?;
        let program = lower(graph, opts)?;
        let isa = target_isa(CraneliftTarget::Host, false)?;
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let ids = define_program(&mut module, graph, &program, opts)?;
        module
            .finalize_definitions()
            .map_err(|e| codegen_error("linking", e))?;
        let code = module.get_finalized_function(ids.packed);
        // SAFETY: `packed` was defined above with exactly this signature (one pointer in, i32
        // out, the platform's C calling convention); the module stays alive as long as `self`.
        let entry =
            unsafe { std::mem::transmute::<*const u8, extern "C" fn(*const *mut u8) -> i32>(code) };
        let types =
            |ids: &[kiln_ir::ValueId]| ids.iter().map(|&v| graph.value(v).ty.clone()).collect();
        Ok(JitProgram {
            module: Some(module),
            entry,
            arena: AlignedBuffer::new(program.plan.arena_bytes.max(1)),
            inputs: types(graph.inputs()),
            outputs: types(graph.outputs()),
            weight_bytes: program.weight_bytes(graph),
            arena_bytes: program.plan.arena_bytes,
        })
    }

    /// Runs one inference.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        if inputs.len() != self.inputs.len() {
            return Err(BackendError::Lowering(format!(
                "the model takes {} inputs, got {}",
                self.inputs.len(),
                inputs.len()
            )));
        }
        let mut in_bufs = Vec::with_capacity(inputs.len());
        for (t, want) in inputs.iter().zip(&self.inputs) {
            if t.ty() != *want {
                return Err(BackendError::Lowering(format!(
                    "input expects {want}, got {}",
                    t.ty()
                )));
            }
            in_bufs.push(AlignedBuffer::from_bytes(&t.data().to_le_bytes()));
        }
        let mut out_bufs: Vec<AlignedBuffer> = self
            .outputs
            .iter()
            .map(|t| AlignedBuffer::new(t.size_bytes().max(1)))
            .collect();
        let mut args: Vec<*mut u8> = vec![self.arena.ptr()];
        args.extend(in_bufs.iter_mut().map(AlignedBuffer::ptr));
        args.extend(out_bufs.iter_mut().map(AlignedBuffer::ptr));
        let status = (self.entry)(args.as_ptr());
        if status != 0 {
            return Err(BackendError::Lowering(format!(
                "the compiled model returned status {status}"
            )));
        }
        self.outputs
            .iter()
            .zip(&mut out_bufs)
            .map(|(ty, buf)| {
                let bytes = &buf.bytes_mut()[..ty.size_bytes()];
                let data = TensorData::from_le_bytes(ty.dtype, bytes)
                    .ok_or_else(|| BackendError::Lowering("output bytes do not decode".into()))?;
                Ok(Tensor::new(ty.shape.clone(), data)?)
            })
            .collect()
    }
}

impl Drop for JitProgram {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the entry pointer is never used after this: `self` is being dropped.
            unsafe { module.free_memory() };
        }
    }
}
