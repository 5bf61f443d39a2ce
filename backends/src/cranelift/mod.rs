//! The Cranelift emitter: the same kernel program the C backend prints, compiled to machine
//! code. [`emit_object`] writes an ELF relocatable object for x86_64, aarch64 or riscv64 that
//! exports the C backend's ABI (`PREFIX_run(arena, in..., out...)`, declared by the same
//! generated header), so firmware links either without changing a line. [`JitProgram`]
//! compiles for the host and runs in-process (`kiln run --backend cranelift`, benchmarks).
//!
//! Layout: `translate.rs` turns one kernel into one function; this file builds the module around
//! the kernels (weights as read-only data, the `PREFIX_run` entry point, math imports);
//! `object.rs` and `jit.rs` are the two ways out.

mod jit;
mod object;
mod simd;
mod translate;

use std::collections::BTreeMap;

use cranelift_codegen::ir::{
    types, AbiParam, FuncRef, Function, InstBuilder, MemFlagsData, Signature, UserFuncName, Value,
};
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use kiln_ir::{Graph, ValueId};

use crate::c::ArenaMode;
use crate::error::BackendError;
use crate::kernel::Schedule;
use crate::program::{lower_program, Buffer, LoweredProgram};
pub use jit::JitProgram;
pub use object::{emit_object, ObjectProgram};
use translate::{kernel_signature, Callees, KernelTranslator, MathFn};

/// Which machine to generate code for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CraneliftTarget {
    /// The machine kiln runs on (for the JIT).
    #[default]
    Host,
    X86_64,
    Aarch64,
    Riscv64,
}

impl CraneliftTarget {
    /// The target triple's text, e.g. for `--target aarch64`.
    pub fn triple(self) -> Option<&'static str> {
        match self {
            CraneliftTarget::Host => None,
            CraneliftTarget::X86_64 => Some("x86_64-unknown-linux-gnu"),
            CraneliftTarget::Aarch64 => Some("aarch64-unknown-linux-gnu"),
            CraneliftTarget::Riscv64 => Some("riscv64gc-unknown-linux-gnu"),
        }
    }
}

/// Options of the Cranelift backend.
#[derive(Clone, Debug)]
pub struct CraneliftOptions {
    /// Prefix of every exported symbol and of the file names.
    pub name: String,
    pub target: CraneliftTarget,
    pub arena: ArenaMode,
    /// Use 128-bit vectors for inner loops where the target has them (SSE4.1, NEON).
    pub simd: bool,
    /// Fuse `a * b + c` into one fused multiply-add where the target has one (FMA3 on
    /// x86_64, every aarch64 and riscv64 core). Faster, and rounds once instead of twice, so
    /// results differ from the interpreter's in the last bits (as onnxruntime's do); turn it
    /// off to round every product before it is added, as the interpreter does.
    pub fma: bool,
    /// How many 128-bit vectors a vectorized loop computes per iteration (1 or 2): two
    /// halve the uniform loads and splats (the weights of a convolution) per multiply-add.
    pub vector_parts: usize,
    /// Give each padded convolution a zero-padded copy of its input (`kiln_passes::explicit_pad`):
    /// more arena, but border-free rows that vectorize whole. For application processors, not
    /// for microcontrollers, which is why it is a Cranelift option and not an `-O` pass.
    pub explicit_padding: bool,
    /// Call the C runtime's libm-free approximations (`kiln_expf`, ... of `kiln_runtime.h`)
    /// instead of libm: the object then calls `PREFIX_expf`, ..., defined by the generated
    /// `PREFIX_math.c`, which compiles exactly the code `kiln compile --emit c --no-libm` inlines.
    /// Objects only: the JIT uses the host's libm.
    pub no_libm: bool,
    /// Loop schedule knobs, as for the C backend.
    pub schedule: Schedule,
    /// Arena alignment in bytes.
    pub alignment: usize,
}

impl Default for CraneliftOptions {
    fn default() -> Self {
        CraneliftOptions {
            name: "model".into(),
            target: CraneliftTarget::Host,
            arena: ArenaMode::Caller,
            simd: true,
            fma: true,
            vector_parts: 2,
            explicit_padding: true,
            no_libm: false,
            schedule: Schedule {
                unroll_limit: 3,
                oc_tile: 4,
                windowed_oc_tile: WINDOWED_OC_TILE,
                loop_order: Default::default(),
            },
            alignment: 16,
        }
    }
}

/// Output channels per pass of windowed convolutions (3x3 and larger) in vector code: measured
/// on ResNet-8 in the JIT, 8 is 12% faster than 4 (0.82 against 0.94 ms); 12 and 16 are
/// slower than 8.
const WINDOWED_OC_TILE: usize = 8;

impl CraneliftOptions {
    /// `schedule` (a `kiln compile` schedule, shared with the C backend) with this backend's
    /// wider windowed-convolution tile filled in where it tiles channels but leaves that unset.
    pub fn native_schedule(schedule: Schedule) -> Schedule {
        if schedule.oc_tile > 1 && schedule.windowed_oc_tile == 0 {
            Schedule {
                windowed_oc_tile: WINDOWED_OC_TILE,
                ..schedule
            }
        } else {
            schedule
        }
    }
}

fn codegen_error(context: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Lowering(format!("Cranelift: {context}: {e}"))
}

/// The target ISA, optimizing for speed.
fn target_isa(target: CraneliftTarget, pic: bool) -> Result<OwnedTargetIsa, BackendError> {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, k: &str, v: &str| {
        flags
            .set(k, v)
            .map_err(|e| codegen_error(&format!("setting {k}={v}"), e))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    let flags = settings::Flags::new(flags);
    let builder = match target.triple() {
        None => cranelift_native::builder().map_err(|e| codegen_error("host ISA", e))?,
        Some(triple) => {
            let triple: target_lexicon::Triple = triple
                .parse()
                .map_err(|e| codegen_error("target triple", e))?;
            let mut b = cranelift_codegen::isa::lookup(triple)
                .map_err(|e| codegen_error("target ISA", e))?;
            if target == CraneliftTarget::X86_64 {
                // The SIMD lowering relies on SSE4.1 (every x86_64 CPU since 2008 has it).
                for f in ["has_sse3", "has_ssse3", "has_sse41"] {
                    b.enable(f).map_err(|e| codegen_error(f, e))?;
                }
            }
            b
        }
    };
    builder
        .finish(flags)
        .map_err(|e| codegen_error("building the ISA", e))
}

/// Whether the ISA has 128-bit float vectors with the operations the SIMD path uses.
fn has_simd(isa: &dyn TargetIsa) -> bool {
    match isa.triple().architecture {
        target_lexicon::Architecture::X86_64 => {
            // cranelift-native enables the host's features; SSE4.1 is the baseline we need.
            isa.isa_flags()
                .iter()
                .any(|f| f.name == "has_sse41" && f.as_bool() == Some(true))
        }
        target_lexicon::Architecture::Aarch64(_) => true,
        _ => false,
    }
}

/// Whether the ISA has a fused multiply-add instruction for `f32` and `f32x4`.
fn has_fma(isa: &dyn TargetIsa) -> bool {
    match isa.triple().architecture {
        target_lexicon::Architecture::X86_64 => isa
            .isa_flags()
            .iter()
            .any(|f| f.name == "has_fma" && f.as_bool() == Some(true)),
        target_lexicon::Architecture::Aarch64(_) | target_lexicon::Architecture::Riscv64(_) => true,
        _ => false,
    }
}

/// Whether some output of `node` shares its buffer with one of its inputs.
fn works_in_place(graph: &Graph, program: &LoweredProgram, node: kiln_ir::NodeId) -> bool {
    let n = graph.node(node);
    let inputs: Vec<Buffer> = n.inputs.iter().map(|&v| program.buffer(v)).collect();
    n.outputs
        .iter()
        .any(|&v| inputs.contains(&program.buffer(v)))
}

/// Ids of what a program module defines.
pub(crate) struct ProgramIds {
    /// `PREFIX_run_packed(void **args)`: the arena, inputs and outputs from one pointer array,
    /// so the JIT can call any arity through one Rust signature.
    pub packed: FuncId,
}

/// Lazily declared imports and helpers shared by every kernel of a module.
struct ModuleCallees<'m, M: Module> {
    module: &'m mut M,
    math: BTreeMap<MathFn, FuncId>,
    pow_i64: Option<FuncId>,
    prefix: String,
    /// Import `PREFIX_expf`, ... (see `CraneliftOptions::no_libm`) instead of libm's names.
    no_libm: bool,
}

impl<M: Module> Callees for ModuleCallees<'_, M> {
    fn math(&mut self, builder: &mut FunctionBuilder, f: MathFn) -> Result<FuncRef, BackendError> {
        let id = match self.math.get(&f) {
            Some(&id) => id,
            None => {
                let mut sig = self.module.make_signature();
                for _ in 0..f.arity() {
                    sig.params.push(AbiParam::new(types::F32));
                }
                sig.returns.push(AbiParam::new(types::F32));
                let name = if self.no_libm {
                    format!("{}_{}", self.prefix, f.symbol())
                } else {
                    f.symbol().to_string()
                };
                let id = self
                    .module
                    .declare_function(&name, Linkage::Import, &sig)
                    .map_err(|e| codegen_error(&format!("importing {name}"), e))?;
                self.math.insert(f, id);
                id
            }
        };
        Ok(self.module.declare_func_in_func(id, builder.func))
    }

    fn pow_i64(&mut self, builder: &mut FunctionBuilder) -> Result<FuncRef, BackendError> {
        let id = match self.pow_i64 {
            Some(id) => id,
            None => {
                let sig = pow_i64_signature(self.module);
                let id = self
                    .module
                    .declare_function(&format!("{}_pow_i64", self.prefix), Linkage::Local, &sig)
                    .map_err(|e| codegen_error("declaring the integer power helper", e))?;
                self.pow_i64 = Some(id);
                id
            }
        };
        Ok(self.module.declare_func_in_func(id, builder.func))
    }
}

fn pow_i64_signature<M: Module>(module: &M) -> Signature {
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    sig.returns.push(AbiParam::new(types::I64));
    sig
}

fn weight_symbol(prefix: &str, v: ValueId) -> String {
    format!("{prefix}_w{}", v.index())
}

/// Defines every weight, kernel and the entry points of `program` in `module`.
pub(crate) fn define_program<M: Module>(
    module: &mut M,
    graph: &Graph,
    program: &LoweredProgram,
    opts: &CraneliftOptions,
) -> Result<ProgramIds, BackendError> {
    let p = opts.name.as_str();
    let pointer = module.target_config().pointer_type();
    let simd = opts.simd && has_simd(module.isa());
    let fma = opts.fma && has_fma(module.isa());
    // Weights: read-only data, 16-byte aligned.
    let mut weights: BTreeMap<ValueId, DataId> = BTreeMap::new();
    for &v in &program.weights {
        let Some(t) = graph.value(v).const_tensor() else {
            continue;
        };
        let id = module
            .declare_data(&weight_symbol(p, v), Linkage::Local, false, false)
            .map_err(|e| codegen_error("declaring a weight", e))?;
        let mut desc = DataDescription::new();
        let mut bytes = t.data().to_le_bytes();
        if bytes.is_empty() {
            bytes.push(0);
        }
        desc.define(bytes.into_boxed_slice());
        desc.set_align(16);
        module
            .define_data(id, &desc)
            .map_err(|e| codegen_error("defining a weight", e))?;
        weights.insert(v, id);
    }
    let static_arena = if opts.arena == ArenaMode::Static {
        let id = module
            .declare_data(&format!("{p}_arena"), Linkage::Export, true, false)
            .map_err(|e| codegen_error("declaring the arena", e))?;
        let mut desc = DataDescription::new();
        desc.define_zeroinit(program.plan.arena_bytes.max(1));
        desc.set_align(program.plan.alignment as u64);
        module
            .define_data(id, &desc)
            .map_err(|e| codegen_error("defining the arena", e))?;
        Some(id)
    } else {
        None
    };

    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut kernel_ids = Vec::with_capacity(program.kernels.len());
    let mut math = BTreeMap::new();
    let mut pow_i64 = None;
    for (node, kernel) in &program.kernels {
        let mut sig = module.make_signature();
        kernel_signature(&mut sig, kernel, pointer);
        let id = module
            .declare_function(&kernel.name, Linkage::Local, &sig)
            .map_err(|e| codegen_error(&format!("declaring {}", kernel.name), e))?;
        ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
        {
            let mut builder = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = builder.create_block();
            builder.append_block_params_for_function_params(entry);
            builder.switch_to_block(entry);
            builder.seal_block(entry);
            let params = builder.block_params(entry).to_vec();
            let mut callees = ModuleCallees {
                module: &mut *module,
                math: std::mem::take(&mut math),
                pow_i64,
                prefix: p.to_string(),
                no_libm: opts.no_libm,
            };
            let mut t = KernelTranslator::new(kernel, &mut builder, params, pointer, &mut callees);
            t.simd = simd;
            t.readonly_inputs = !works_in_place(graph, program, *node);
            t.fma = fma;
            t.vector_parts = opts.vector_parts.clamp(1, 4);
            t.stmts(&kernel.body)?;
            builder.ins().return_(&[]);
            math = std::mem::take(&mut callees.math);
            pow_i64 = callees.pow_i64;
            builder.finalize(module.target_config());
        }
        module
            .define_function(id, &mut ctx)
            .map_err(|e| codegen_error(&format!("compiling {}", kernel.name), e))?;
        module.clear_context(&mut ctx);
        kernel_ids.push(id);
    }
    if let Some(id) = pow_i64 {
        define_pow_i64(module, id, &mut ctx, &mut fctx)?;
    }
    let run = define_run(
        module,
        graph,
        program,
        &kernel_ids,
        &weights,
        static_arena,
        opts,
        &mut ctx,
        &mut fctx,
    )?;
    let packed = define_packed(module, graph, run, p, &mut ctx, &mut fctx)?;
    Ok(ProgramIds { packed })
}

/// `kiln_pow_i64` of the C runtime: power by squaring, wrapping; negative exponents give the
/// truncated real result.
fn define_pow_i64<M: Module>(
    module: &mut M,
    id: FuncId,
    ctx: &mut cranelift_codegen::Context,
    fctx: &mut FunctionBuilderContext,
) -> Result<(), BackendError> {
    use cranelift_codegen::ir::condcodes::IntCC;
    let sig = pow_i64_signature(module);
    ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        let negative = b.create_block();
        let head = b.create_block();
        let body = b.create_block();
        let done = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let base = b.block_params(entry)[0];
        let e = b.block_params(entry)[1];
        let is_negative = b.ins().icmp_imm_s(IntCC::SignedLessThan, e, 0);
        let one = b.ins().iconst(types::I64, 1);
        b.ins().brif(
            is_negative,
            negative,
            &[],
            head,
            &[one.into(), base.into(), e.into()],
        );
        // e < 0: base 1 -> 1; base -1 -> +-1 by parity; otherwise 0.
        b.switch_to_block(negative);
        let zero = b.ins().iconst(types::I64, 0);
        let minus_one = b.ins().iconst(types::I64, -1);
        let odd = b.ins().band_imm_s(e, 1);
        let odd = b.ins().icmp_imm_s(IntCC::NotEqual, odd, 0);
        let sign = b.ins().select(odd, minus_one, one);
        let is_one = b.ins().icmp_imm_s(IntCC::Equal, base, 1);
        let is_minus_one = b.ins().icmp_imm_s(IntCC::Equal, base, -1);
        let r = b.ins().select(is_minus_one, sign, zero);
        let r = b.ins().select(is_one, one, r);
        b.ins().return_(&[r]);
        // Square and multiply.
        let result = b.append_block_param(head, types::I64);
        let acc = b.append_block_param(head, types::I64);
        let exp = b.append_block_param(head, types::I64);
        b.switch_to_block(head);
        let more = b.ins().icmp_imm_s(IntCC::NotEqual, exp, 0);
        b.ins().brif(more, body, &[], done, &[]);
        b.switch_to_block(body);
        let bit = b.ins().band_imm_s(exp, 1);
        let bit = b.ins().icmp_imm_s(IntCC::NotEqual, bit, 0);
        let multiplied = b.ins().imul(result, acc);
        let result2 = b.ins().select(bit, multiplied, result);
        let acc2 = b.ins().imul(acc, acc);
        let exp2 = b.ins().ushr_imm_u(exp, 1);
        b.ins()
            .jump(head, &[result2.into(), acc2.into(), exp2.into()]);
        b.switch_to_block(done);
        b.ins().return_(&[result]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module
        .define_function(id, ctx)
        .map_err(|e| codegen_error("compiling the integer power helper", e))?;
    module.clear_context(ctx);
    Ok(())
}

/// `int PREFIX_run(void *arena, const T *in0, ..., T *out0, ...)`: checks for NULL pointers,
/// calls the kernels in order over their buffers, and copies outputs no kernel wrote.
#[allow(clippy::too_many_arguments)]
fn define_run<M: Module>(
    module: &mut M,
    graph: &Graph,
    program: &LoweredProgram,
    kernel_ids: &[FuncId],
    weights: &BTreeMap<ValueId, DataId>,
    static_arena: Option<DataId>,
    opts: &CraneliftOptions,
    ctx: &mut cranelift_codegen::Context,
    fctx: &mut FunctionBuilderContext,
) -> Result<FuncId, BackendError> {
    let pointer = module.target_config().pointer_type();
    let n_in = graph.inputs().len();
    let n_out = graph.outputs().len();
    let mut sig = module.make_signature();
    for _ in 0..1 + n_in + n_out {
        sig.params.push(AbiParam::new(pointer));
    }
    sig.returns.push(AbiParam::new(types::I32));
    let id = module
        .declare_function(&format!("{}_run", opts.name), Linkage::Export, &sig)
        .map_err(|e| codegen_error("declaring the run function", e))?;
    ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        let fail = b.create_block();
        let work = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let args = b.block_params(entry).to_vec();
        let mut any_null = None;
        for &a in &args {
            let is_null = b
                .ins()
                .icmp_imm_s(cranelift_codegen::ir::condcodes::IntCC::Equal, a, 0);
            any_null = Some(match any_null {
                None => is_null,
                Some(prev) => b.ins().bor(prev, is_null),
            });
        }
        match any_null {
            Some(flag) => {
                b.ins().brif(flag, fail, &[], work, &[]);
            }
            None => {
                b.ins().jump(work, &[]);
            }
        }
        b.switch_to_block(fail);
        let err = b.ins().iconst(types::I32, 1);
        b.ins().return_(&[err]);
        b.switch_to_block(work);
        let arena = match static_arena {
            // The header tells callers to pass PREFIX_arena; any arena they pass works.
            Some(_) | None => args[0],
        };
        let mut weight_values: BTreeMap<ValueId, Value> = BTreeMap::new();
        let mut resolve = |b: &mut FunctionBuilder, module: &mut M, buf: Buffer| -> Value {
            match buf {
                Buffer::Input(i) => args[1 + i],
                Buffer::Output(i) => args[1 + n_in + i],
                Buffer::Arena(offset) => b.ins().iadd_imm_s(arena, offset as i64),
                Buffer::Weight(v) => *weight_values.entry(v).or_insert_with(|| {
                    let data = weights[&v];
                    let gv = module.declare_data_in_func(data, b.func);
                    b.ins().symbol_value(pointer, gv)
                }),
            }
        };
        for ((n, _), &kid) in program.kernels.iter().zip(kernel_ids) {
            let node = graph.node(*n);
            let callee = module.declare_func_in_func(kid, b.func);
            let call_args: Vec<Value> = node
                .inputs
                .iter()
                .chain(&node.outputs)
                .map(|&v| resolve(&mut b, module, program.buffer(v)))
                .collect();
            b.ins().call(callee, &call_args);
        }
        for (i, src, bytes) in program.output_copies(graph) {
            let dest = args[1 + n_in + i];
            let src = resolve(&mut b, module, src);
            let size = b.ins().iconst(pointer, bytes as i64);
            b.call_memcpy(module.target_config(), dest, src, size);
        }
        let ok = b.ins().iconst(types::I32, 0);
        b.ins().return_(&[ok]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module
        .define_function(id, ctx)
        .map_err(|e| codegen_error("compiling the run function", e))?;
    module.clear_context(ctx);
    Ok(id)
}

fn define_packed<M: Module>(
    module: &mut M,
    graph: &Graph,
    run: FuncId,
    prefix: &str,
    ctx: &mut cranelift_codegen::Context,
    fctx: &mut FunctionBuilderContext,
) -> Result<FuncId, BackendError> {
    let pointer = module.target_config().pointer_type();
    let n = 1 + graph.inputs().len() + graph.outputs().len();
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(pointer));
    sig.returns.push(AbiParam::new(types::I32));
    let id = module
        .declare_function(&format!("{prefix}_run_packed"), Linkage::Local, &sig)
        .map_err(|e| codegen_error("declaring the packed entry", e))?;
    ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let array = b.block_params(entry)[0];
        let step = pointer.bytes() as i32;
        let args: Vec<Value> = (0..n)
            .map(|i| {
                b.ins()
                    .load(pointer, MemFlagsData::trusted(), array, step * i as i32)
            })
            .collect();
        let callee = module.declare_func_in_func(run, b.func);
        let call = b.ins().call(callee, &args);
        let status = b.inst_results(call)[0];
        b.ins().return_(&[status]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module
        .define_function(id, ctx)
        .map_err(|e| codegen_error("compiling the packed entry", e))?;
    module.clear_context(ctx);
    Ok(id)
}

/// Lowers the graph for this backend.
/// The graph this backend compiles for `opts`: `graph` itself, or a copy with the padding made
/// explicit.
pub(crate) fn prepare<'g>(
    graph: &'g Graph,
    opts: &CraneliftOptions,
) -> Result<std::borrow::Cow<'g, Graph>, BackendError> {
    if !opts.explicit_padding {
        return Ok(std::borrow::Cow::Borrowed(graph));
    }
    let mut padded = graph.clone();
    kiln_passes::explicit_pad(&mut padded)?;
    Ok(std::borrow::Cow::Owned(padded))
}

/// `PREFIX_math.c`: the C runtime's libm-free approximations as the functions a `no_libm`
/// object calls, so the Cranelift and C backends share one implementation of each.
pub fn math_source(prefix: &str) -> String {
    let mut c = format!("/* Generated by kiln: the math functions {prefix}.o calls, from ");
    c.push_str("kiln_runtime.h's libm-free\n * approximations (the code `kiln compile --emit c ");
    c.push_str("--no-libm` uses). */\n#define KILN_NO_LIBM 1\n");
    c.push_str(&format!(
        "#include \"{}\"\n\n",
        crate::c::RUNTIME_HEADER_NAME
    ));
    for f in translate::MathFn::ALL {
        let name = f.symbol();
        let (params, args) = if f.arity() == 2 {
            ("float x, float y", "x, y")
        } else {
            ("float x", "x")
        };
        c.push_str(&format!(
            "float {prefix}_{name}({params});\nfloat {prefix}_{name}({params}) {{ return kiln_{name}({args}); }}\n"
        ));
    }
    c
}

pub(crate) fn lower(
    graph: &Graph,
    opts: &CraneliftOptions,
) -> Result<LoweredProgram, BackendError> {
    crate::c::check_prefix(&opts.name)?;
    lower_program(
        graph,
        &opts.name,
        &opts.schedule,
        opts.alignment,
        "Cranelift",
    )
}
