//! Target-specific int8 kernels for the C backend: layer functions written for the
//! instructions of one core family, with their weights rearranged at compile time into the
//! order their inner loops read. They replace the portable kernels the kernel IR gives for
//! the integer convolutions and matrix products, and compute the same integers bit for bit.
//!
//! One interface: [`specialize`] looks at every scheduled node and, where a generator here
//! handles it for the chosen [`Isa`], returns the C text of a function with the kernel's
//! name and parameters (a packed weight parameter changes its element type) plus the packed
//! contents of the weights it reads. The C emitter prints those in place of the portable
//! kernel and the original weight array; everything else (the call in `PREFIX_run`, the
//! arena, the other layers) is unchanged. The Cranelift backend keeps the portable kernels.
//!
//! - `gemm`: convolutions with one group and matrix products by constant weights, as a
//!   matrix product over im2col columns (pointwise convolutions read their input directly
//!   where the ISA allows; Helium reads a channels-last copy of the rows a window spans),
//!   register-blocked over output channels and pixels; one emitter per ISA.
//! - `depthwise`: depthwise 3x3 convolutions over a zero-point-padded copy of each plane.
//! - `elementwise`: int8 additions of equal shapes through two 256-entry tables of the
//!   rescaled operands.
//! - `requant`: the output stage (requantization, clamp, zero point) in the cheapest form
//!   that is exact for the layer's accumulators.

mod depthwise;
mod elementwise;
mod gemm;
mod requant;

use std::collections::BTreeMap;

use kiln_ir::{Graph, Node, NodeId, Tensor, TensorType, ValueId};

use super::COptions;
use crate::error::BackendError;
use crate::kernel::Kernel;
use crate::program::{Buffer, LoweredProgram};

/// How much flash the int8 kernels may spend on weights to save instructions: some store a
/// layer's int8 weights widened to 16 bits, in the form their inner loop multiplies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightLayout {
    /// One byte per weight everywhere (the smallest flash).
    Compact,
    /// Widened where the flash it costs is small for the instructions it saves: on the DSP
    /// cores batch-1 products of at most 4 KB of weights; on RV32 every batch-1 product
    /// (two columns per multiply in 16-bit lanes).
    #[default]
    Balanced,
    /// Widened wherever that is faster: also the larger batch-1 products on the DSP cores.
    Fast,
}

/// The instructions the int8 kernels may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// The portable kernels of the kernel IR (any C99 compiler; Cortex-M0/M3, hosts).
    Portable,
    /// Register-blocked scalar C for cores with many registers and no SIMD (RV32IMAC).
    Scalar,
    /// Armv7E-M DSP: dual 16-bit multiply-accumulates (Cortex-M4, M7, M33). The runtime header
    /// emulates them in portable C where `__ARM_FEATURE_DSP` is not defined.
    ArmDsp,
    /// Armv8.1-M Helium (Cortex-M55): `VMLADAVA` products; the DSP kernels where a layer does
    /// not suit them. The runtime header emulates the vector operations where
    /// `__ARM_FEATURE_MVE` is not defined.
    ArmMve,
}

impl Isa {
    /// The name `--isa` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Scalar => "scalar",
            Isa::ArmDsp => "dsp",
            Isa::ArmMve => "mve",
        }
    }

    /// Every ISA, in the order `--isa` lists them.
    pub const ALL: [Isa; 4] = [Isa::Portable, Isa::Scalar, Isa::ArmDsp, Isa::ArmMve];

    /// The ISA named `name`.
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == name)
    }
}

/// A constant array's contents rearranged for a kernel.
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    /// The C element type of the array.
    pub ctype: &'static str,
    /// The C literals of its elements.
    pub items: Vec<String>,
    /// What the rearrangement is, for the comment above the array.
    pub note: String,
}

/// The specialized kernels of a program.
#[derive(Debug, Default)]
pub(crate) struct Specialized {
    /// The C text of each specialized layer function, by node.
    pub kernels: BTreeMap<NodeId, String>,
    /// Weights printed in a packed layout, by value (each read by one kernel only).
    pub packed: BTreeMap<ValueId, Packed>,
}

/// The specialized kernels for `opts.isa`, for every node a generator handles.
pub(crate) fn specialize(
    graph: &Graph,
    program: &LoweredProgram,
    opts: &COptions,
) -> Result<Specialized, BackendError> {
    let isa = opts.isa.unwrap_or(Isa::Portable);
    let mut out = Specialized::default();
    if isa == Isa::Portable {
        return Ok(out);
    }
    for (n, kernel) in &program.kernels {
        let node = graph.node(*n);
        let layer = Layer {
            graph,
            program,
            node,
            kernel,
            isa,
            weights: opts.int8_weights,
        };
        let generated = match gemm::generate(&layer)? {
            Some(g) => g,
            None => match depthwise::generate(&layer)? {
                Some(g) => g,
                None => match elementwise::generate(&layer)? {
                    Some(g) => g,
                    None => continue,
                },
            },
        };
        let mut text = String::new();
        let mut params = Vec::new();
        for (i, p) in kernel.params.iter().enumerate() {
            let packed = generated.packed.iter().find(|(slot, _)| *slot == i);
            let ctype = match packed {
                Some((_, pk)) => pk.ctype,
                None => super::c_type(p.dtype),
            };
            let constness = if p.output { "" } else { "const " };
            match packed {
                // The kernel is the array's only reader: print the array packed.
                Some((slot, pk)) if layer.sole_reader(*slot) => {
                    out.packed.insert(node.inputs[*slot], pk.clone());
                    params.push(format!("{constness}{ctype} *{}", p.name));
                }
                // Shared with other kernels: a private packed copy, the parameter unused.
                Some((_, pk)) => {
                    text.push_str(&format!(
                        "/* {} */\nstatic const {ctype} {}_{}[{}] KILN_ALIGNED(16) = {{\n    {}\n}};\n",
                        pk.note,
                        kernel.name,
                        p.name,
                        pk.items.len().max(1),
                        pk.items.join(", ")
                    ));
                    params.push(format!("{constness}{} *{}", super::c_type(p.dtype), p.name));
                }
                None => params.push(format!("{constness}{ctype} *{}", p.name)),
            }
        }
        text.push_str(&generated.helpers);
        text.push_str(&format!(
            "static KILN_NOINLINE void {}({}) {{\n",
            kernel.name,
            params.join(", ")
        ));
        for (slot, _) in &generated.packed {
            if !layer.sole_reader(*slot) {
                // The body reads the private copy (`Layer::packed_name`).
                text.push_str(&format!("    (void){};\n", layer.param(*slot)));
            }
        }
        text.push_str(&generated.body);
        text.push_str("}\n");
        out.kernels.insert(*n, text);
    }
    Ok(out)
}

/// One node and what its generator may ask about it.
pub(super) struct Layer<'a> {
    graph: &'a Graph,
    program: &'a LoweredProgram,
    node: &'a Node,
    kernel: &'a Kernel,
    isa: Isa,
    weights: WeightLayout,
}

impl Layer<'_> {
    /// The type of input `slot`.
    fn input(&self, slot: usize) -> Option<&TensorType> {
        self.node.inputs.get(slot).map(|&v| &self.graph.value(v).ty)
    }

    /// The type of output `slot`.
    fn output(&self, slot: usize) -> Option<&TensorType> {
        self.node
            .outputs
            .get(slot)
            .map(|&v| &self.graph.value(v).ty)
    }

    /// The constant value of input `slot`, if it is one.
    fn constant(&self, slot: usize) -> Option<&Tensor> {
        let v = *self.node.inputs.get(slot)?;
        match self.program.buffer(v) {
            Buffer::Weight(root) => self.graph.value(root).const_tensor().map(|t| t.as_ref()),
            _ => None,
        }
    }

    /// The name of parameter `slot` in the kernel (and in the generated C).
    fn param(&self, slot: usize) -> &str {
        self.kernel
            .params
            .get(slot)
            .map_or("?", |p| p.name.as_str())
    }

    /// The C name a kernel reads packed input `slot` through: its parameter when the node is
    /// the array's only reader, else a private packed copy.
    fn packed_name(&self, slot: usize) -> String {
        if self.sole_reader(slot) {
            self.param(slot).to_string()
        } else {
            format!("{}_{}", self.kernel.name, self.param(slot))
        }
    }

    /// Whether this node is the only reader of constant input `slot`, so its array may be
    /// printed in the node's packed layout.
    fn sole_reader(&self, slot: usize) -> bool {
        let Some(&v) = self.node.inputs.get(slot) else {
            return false;
        };
        self.program.buffer(v) == Buffer::Weight(v)
            && !self.graph.is_output(v)
            && self.node.inputs.iter().filter(|&&x| x == v).count() == 1
            && self
                .graph
                .consumers(v)
                .iter()
                .all(|&(n, _)| std::ptr::eq(self.graph.node(n), self.node))
    }
}

/// What a generator produced for one layer.
pub(super) struct Generated {
    /// Static helper functions, printed before the layer function.
    helpers: String,
    /// The layer function's body (statements, indented one level).
    body: String,
    /// The inputs it reads packed, by input slot.
    packed: Vec<(usize, Packed)>,
}
