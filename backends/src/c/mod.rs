//! The C99 emitter: a graph, its memory plan and its kernels become `PREFIX.h`, `PREFIX.c` and
//! the runtime header, a self-contained directory that `cc -c DIR/*.c` builds, plus the
//! `PREFIX.cmake` and `PREFIX.mk` fragments that add it to a CMake or Make project.
//!
//! Output is byte-deterministic for a given graph and options: no timestamps, paths or hashes.

mod build_fragments;
mod expr;
mod int8;
mod writer;

use kiln_ir::{Graph, TensorData, TensorType, ValueId};
use kiln_passes::MemoryPlan;

use crate::error::BackendError;
use crate::kernel::{Kernel, Schedule};
pub use crate::program::LayerInfo;
use crate::program::{lower_program, Buffer, LoweredProgram};
pub use expr::c_type;
use expr::{float_literal, int_literal, ExprPrinter};
pub use int8::{Isa, WeightLayout};
use writer::Writer;

/// The runtime header shipped into every output directory.
pub const RUNTIME_HEADER: &str = include_str!("../../../runtime/kiln_runtime.h");
pub const RUNTIME_HEADER_NAME: &str = "kiln_runtime.h";

/// Who provides the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ArenaMode {
    /// The caller passes a buffer of at least `PREFIX_ARENA_BYTES` to `PREFIX_run`.
    #[default]
    Caller,
    /// The generated code defines `PREFIX_arena` (checked at compile time) for the caller to pass.
    Static,
}

#[derive(Clone, Debug)]
pub struct COptions {
    /// Prefix of every exported symbol and of the file names.
    pub name: String,
    pub arena: ArenaMode,
    pub weights_section: Option<String>,
    pub arena_section: Option<String>,
    /// Use the runtime's own math approximations instead of libm.
    pub no_libm: bool,
    /// Arena alignment in bytes.
    pub alignment: usize,
    /// Loop schedule knobs (unrolling, ...).
    pub schedule: Schedule,
    /// The instructions the int8 kernels may use (`None`: portable C; `kiln verify` picks
    /// its target's).
    pub isa: Option<Isa>,
    /// How much flash those kernels may spend on widened weights.
    pub int8_weights: WeightLayout,
    /// A profiling build (`kiln profile`): `PREFIX_run` calls `kiln_layer_mark()`, which the
    /// caller defines, before its first layer and after every layer. Off, the code is
    /// byte-identical to a build without the option.
    pub profile_layers: bool,
}

impl Default for COptions {
    fn default() -> Self {
        COptions {
            name: "model".into(),
            arena: ArenaMode::Caller,
            weights_section: None,
            arena_section: None,
            no_libm: false,
            alignment: 16,
            schedule: Schedule::default(),
            isa: None,
            int8_weights: WeightLayout::Balanced,
            profile_layers: false,
        }
    }
}

/// A compiled program: file contents plus the figures reports need.
#[derive(Debug)]
pub struct CProgram {
    /// (file name, contents), in a fixed order.
    pub files: Vec<(String, String)>,
    pub plan: MemoryPlan,
    pub layers: Vec<LayerInfo>,
    pub weight_bytes: usize,
}

/// Checks that `name` can prefix C identifiers.
pub(crate) fn check_prefix(name: &str) -> Result<(), BackendError> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(BackendError::Lowering(format!(
            "--name '{name}' is not a C identifier (letters, digits and '_', not starting with a digit)"
        )))
    }
}

pub fn emit_c(graph: &Graph, opts: &COptions) -> Result<CProgram, BackendError> {
    check_prefix(&opts.name)?;
    let p = &opts.name;
    let program = lower_program(graph, p, &opts.schedule, opts.alignment, "C")?;
    let weight_bytes = program.weight_bytes(graph);
    let header = emit_header(graph, &program.plan, opts);
    let native = int8::specialize(graph, &program, opts)?;
    let source = emit_source(graph, &program, opts, &native);
    let libm = build_fragments::libm_calls(&source, opts.no_libm);
    Ok(CProgram {
        files: vec![
            (format!("{p}.h"), header),
            (format!("{p}.c"), source),
            (RUNTIME_HEADER_NAME.to_string(), RUNTIME_HEADER.to_string()),
            (
                format!("{p}.cmake"),
                build_fragments::cmake_fragment(p, &libm),
            ),
            (format!("{p}.mk"), build_fragments::make_fragment(p, &libm)),
        ],
        plan: program.plan,
        layers: program.layers,
        weight_bytes,
    })
}

fn io_param(graph: &Graph, v: ValueId, dir: &str, i: usize, constness: &str) -> String {
    format!("{constness}{} *{dir}{i}", c_type(graph.value(v).ty.dtype))
}

fn run_signature(graph: &Graph, p: &str) -> String {
    let mut params = vec!["void *arena".to_string()];
    for (i, &v) in graph.inputs().iter().enumerate() {
        params.push(io_param(graph, v, "in", i, "const "));
    }
    for (i, &v) in graph.outputs().iter().enumerate() {
        params.push(io_param(graph, v, "out", i, ""));
    }
    format!("int {p}_run({})", params.join(", "))
}

fn shape_macro(ty: &TensorType) -> String {
    let dims: Vec<String> = ty.shape.iter().map(|d| d.to_string()).collect();
    format!("{{{}}}", dims.join(", "))
}

pub(crate) fn emit_header(graph: &Graph, plan: &MemoryPlan, opts: &COptions) -> String {
    let p = &opts.name;
    let up = p.to_ascii_uppercase();
    let mut w = Writer::new();
    w.line(format!(
        "/* {p}.h: generated by kiln from graph \"{}\". Do not edit. */",
        graph.name().replace("*/", "")
    ));
    w.line("/*");
    w.line(" * Usage from firmware:");
    w.line(format!(
        " *   static uint8_t arena[{up}_ARENA_BYTES] __attribute__((aligned({up}_ARENA_ALIGN)));"
    ));
    w.line(format!(
        " *   int status = {p}_run(arena, input0, ..., output0, ...);  // 0 on success"
    ));
    w.line(" * Buffers are row-major (the ONNX layout); element counts and shapes are below. The arena");
    w.line(" * holds intermediates only: reuse it between models that never run at the same time.");
    w.line(" * The code is reentrant for distinct arenas: it keeps no state of its own.");
    w.line(" */");
    w.line(format!("#ifndef {up}_H"));
    w.line(format!("#define {up}_H"));
    w.line("");
    w.line("#include <stdint.h>");
    if opts.no_libm {
        w.line("#ifndef KILN_NO_LIBM");
        w.line("#define KILN_NO_LIBM 1");
        w.line("#endif");
    }
    w.line("");
    w.line(format!(
        "#define {up}_ARENA_BYTES {}",
        plan.arena_bytes.max(1)
    ));
    w.line(format!("#define {up}_ARENA_ALIGN {}", plan.alignment));
    w.line(format!("#define {up}_NUM_INPUTS {}", graph.inputs().len()));
    w.line(format!(
        "#define {up}_NUM_OUTPUTS {}",
        graph.outputs().len()
    ));
    for (dir, ids) in [("IN", graph.inputs()), ("OUT", graph.outputs())] {
        for (i, &v) in ids.iter().enumerate() {
            let val = graph.value(v);
            w.line(format!(
                "/* {} {i}: \"{}\" {} */",
                if dir == "IN" { "input" } else { "output" },
                val.name.replace("*/", ""),
                val.ty
            ));
            w.line(format!("#define {up}_{dir}{i}_ELEMS {}", val.ty.numel()));
            w.line(format!("#define {up}_{dir}{i}_RANK {}", val.ty.rank()));
            w.line(format!(
                "#define {up}_{dir}{i}_SHAPE {}",
                shape_macro(&val.ty)
            ));
            // An integer input or output (`--io int8`, or a model quantized end to end):
            // real = SCALE * (q - ZERO_POINT).
            if let (Some(q), true) = (&val.quant, val.ty.dtype.is_integer()) {
                if let ([scale], [zp]) = (q.scale.as_slice(), q.zero_point.as_slice()) {
                    w.line(format!(
                        "#define {up}_{dir}{i}_SCALE {}",
                        float_literal(*scale)
                    ));
                    w.line(format!("#define {up}_{dir}{i}_ZERO_POINT {zp}"));
                }
            }
        }
    }
    w.line("");
    w.line(format!("/* A compile-time check that a caller's buffer is large enough: {up}_ARENA_CHECK(my_arena); */"));
    w.line(format!("#define {up}_ARENA_CHECK(buf) typedef char {p}_arena_too_small_##buf[(sizeof(buf) >= {up}_ARENA_BYTES) ? 1 : -1]"));
    if opts.arena == ArenaMode::Static {
        w.line(format!(
            "/* The arena kiln allocated (pass it to {p}_run). */"
        ));
        w.line(format!("extern uint8_t {p}_arena[{up}_ARENA_BYTES];"));
    }
    w.line("");
    w.line("/* Runs one inference. Returns 0 on success, 1 if a pointer is NULL. */");
    w.line(format!("{};", run_signature(graph, p)));
    w.line("");
    w.line(format!("#endif /* {up}_H */"));
    w.finish()
}

fn weight_name(p: &str, v: ValueId) -> String {
    format!("{p}_w{}", v.index())
}

/// The C symbol of the weight array holding constant `v` (a value whose buffer is
/// `Buffer::Weight(v)`), for tools that read sizes from a linked program.
pub fn weight_symbol(prefix: &str, v: ValueId) -> String {
    weight_name(prefix, v)
}

/// The marker a profiling build calls around each layer (see [`COptions::profile_layers`]).
pub const LAYER_MARK: &str = "kiln_layer_mark";

fn emit_weights(
    w: &mut Writer,
    graph: &Graph,
    weights: &[ValueId],
    opts: &COptions,
    native: &int8::Specialized,
) {
    let section = opts
        .weights_section
        .as_ref()
        .map(|s| format!(" KILN_SECTION(\"{s}\")"))
        .unwrap_or_default();
    for &v in weights {
        let val = graph.value(v);
        let Some(t) = val.const_tensor() else {
            continue;
        };
        if let Some(packed) = native.packed.get(&v) {
            // Rearranged for the int8 kernel that is its only reader.
            w.line(format!(
                "/* \"{}\" {}, {} */",
                val.name.replace("*/", ""),
                val.ty,
                packed.note
            ));
            emit_array(
                w,
                packed.ctype,
                &weight_name(&opts.name, v),
                &section,
                &packed.items,
            );
            continue;
        }
        w.line(format!(
            "/* \"{}\" {} */",
            val.name.replace("*/", ""),
            val.ty
        ));
        let items: Vec<String> = match t.data() {
            TensorData::F32(d) => d.iter().map(|&x| float_literal(x)).collect(),
            TensorData::I8(d) => d.iter().map(|&x| x.to_string()).collect(),
            TensorData::U8(d) => d.iter().map(|&x| x.to_string()).collect(),
            TensorData::I16(d) => d.iter().map(|&x| x.to_string()).collect(),
            TensorData::I32(d) => d
                .iter()
                .map(|&x| int_literal(i64::from(x), kiln_ir::DType::I32))
                .collect(),
            TensorData::I64(d) => d
                .iter()
                .map(|&x| int_literal(x, kiln_ir::DType::I64))
                .collect(),
            TensorData::Bool(d) => d.iter().map(|&x| u8::from(x).to_string()).collect(),
        };
        emit_array(
            w,
            c_type(val.ty.dtype),
            &weight_name(&opts.name, v),
            &section,
            &items,
        );
    }
}

/// `static const TYPE NAME[n] = {...};`, aligned for word loads, eight items a line.
fn emit_array(w: &mut Writer, ctype: &str, name: &str, section: &str, items: &[String]) {
    let zero = ["0".to_string()];
    let items = if items.is_empty() { &zero[..] } else { items };
    w.line(format!(
        "static const {ctype} {name}[{}] KILN_ALIGNED(16){section} = {{",
        items.len()
    ));
    w.indent();
    for chunk in items.chunks(8) {
        w.line(format!("{},", chunk.join(", ")));
    }
    w.dedent();
    w.line("};");
}

fn emit_kernel(w: &mut Writer, k: &Kernel) {
    let printer = ExprPrinter { kernel: k };
    let params: Vec<String> = k
        .params
        .iter()
        .map(|p| {
            format!(
                "{}{} *{}",
                if p.output { "" } else { "const " },
                c_type(p.dtype),
                p.name
            )
        })
        .collect();
    w.block(
        format!(
            "static KILN_NOINLINE void {}({})",
            k.name,
            params.join(", ")
        ),
        "",
        |w| {
            let mut body = Writer::new();
            printer.stmts(&mut body, &k.body);
            let text = body.finish();
            for p in &k.params {
                if !text.contains(&format!("{}[", p.name)) {
                    w.line(format!("(void){};", p.name));
                }
            }
            for line in text.lines() {
                w.line(line);
            }
        },
    );
}

/// The C expression for a buffer inside `PREFIX_run`.
fn buffer(graph: &Graph, program: &LoweredProgram, p: &str, v: ValueId) -> String {
    c_buffer(p, program.buffer(v), c_type(graph.value(v).ty.dtype))
}

fn c_buffer(p: &str, b: Buffer, ty: &str) -> String {
    match b {
        Buffer::Input(i) => format!("in{i}"),
        Buffer::Output(i) => format!("out{i}"),
        Buffer::Arena(offset) => format!("({ty} *)(void *)(a + {offset})"),
        Buffer::Weight(root) => weight_name(p, root),
    }
}

fn emit_source(
    graph: &Graph,
    program: &LoweredProgram,
    opts: &COptions,
    native: &int8::Specialized,
) -> String {
    let p = &opts.name;
    let up = p.to_ascii_uppercase();
    let mut w = Writer::new();
    w.line(format!("/* {p}.c: generated by kiln. Do not edit. */"));
    w.line(format!("#include \"{p}.h\""));
    w.line(format!("#include \"{RUNTIME_HEADER_NAME}\""));
    w.line("");
    if opts.arena == ArenaMode::Static {
        let section = opts
            .arena_section
            .as_ref()
            .map(|s| format!(" KILN_SECTION(\"{s}\")"))
            .unwrap_or_default();
        w.line(format!(
            "uint8_t {p}_arena[{up}_ARENA_BYTES] KILN_ALIGNED({up}_ARENA_ALIGN){section};"
        ));
        w.line(format!("{up}_ARENA_CHECK({p}_arena);"));
        w.line("");
    }
    emit_weights(&mut w, graph, &program.weights, opts, native);
    w.line("");
    for (n, k) in &program.kernels {
        match native.kernels.get(n) {
            Some(text) => text.lines().for_each(|l| w.line(l)),
            None => emit_kernel(&mut w, k),
        }
        w.line("");
    }
    let graph_outputs = graph.outputs().to_vec();
    if opts.profile_layers {
        w.line(format!(
            "/* Profiling build: {LAYER_MARK}() runs before the first layer and after each. */"
        ));
        w.line(format!("void {LAYER_MARK}(void);"));
        w.line("");
    }
    w.block(run_signature(graph, p), "", |w| {
        w.line("uint8_t *const a = (uint8_t *)arena;");
        let mut nulls = vec!["arena == 0".to_string()];
        nulls.extend((0..graph.inputs().len()).map(|i| format!("in{i} == 0")));
        nulls.extend((0..graph_outputs.len()).map(|i| format!("out{i} == 0")));
        w.line(format!("if ({}) {{", nulls.join(" || ")));
        w.line("    return KILN_ERR_NULL_ARGUMENT;");
        w.line("}");
        w.line("(void)a;");
        if opts.profile_layers {
            w.line(format!("{LAYER_MARK}();"));
        }
        for (n, k) in &program.kernels {
            let node = graph.node(*n);
            let args: Vec<String> = node
                .inputs
                .iter()
                .chain(&node.outputs)
                .map(|&v| buffer(graph, program, p, v))
                .collect();
            w.line(format!(
                "{}({}); /* {} */",
                k.name,
                args.join(", "),
                node.name.replace("*/", "")
            ));
            if opts.profile_layers {
                w.line(format!("{LAYER_MARK}();"));
            }
        }
        // Outputs that no kernel wrote: graph inputs, constants, aliases or repeated values.
        for (i, src, bytes) in program.output_copies(graph) {
            let ty = c_type(graph.value(graph_outputs[i]).ty.dtype);
            w.line(format!(
                "memcpy(out{i}, {}, {bytes});",
                c_buffer(p, src, ty)
            ));
        }
        w.line("return KILN_OK;");
    });
    w.finish()
}
