//! The backend-neutral program: a graph lowered to scheduled kernels, with its memory plan and
//! where each value's bytes live. The C and Cranelift emitters both start here, so they run the
//! same kernels in the same order over the same arena layout.

use kiln_ir::{Graph, NodeId, TensorType, ValueId};
use kiln_passes::{plan_memory, MemoryPlan, Storage};

use crate::error::BackendError;
use crate::kernel::{apply_schedule, Kernel, Schedule};
use crate::lower::{copy_kernel, lower_op};

/// One row of the per-layer report.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    pub node: String,
    pub op: &'static str,
    pub kernel: Option<String>,
    pub output: TensorType,
    pub macs: u64,
    /// Arena placement of the first output, if it lives in the arena.
    pub arena_offset: Option<usize>,
    pub bytes: usize,
}

/// A graph lowered to kernels.
#[derive(Debug)]
pub struct LoweredProgram {
    pub plan: MemoryPlan,
    /// Kernels in execution order, with the node each computes.
    pub kernels: Vec<(NodeId, Kernel)>,
    pub layers: Vec<LayerInfo>,
    /// Constants the program reads, in value-id order.
    pub weights: Vec<ValueId>,
}

/// Where a value's bytes are during `PREFIX_run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    Input(usize),
    Output(usize),
    /// Byte offset into the arena.
    Arena(usize),
    /// A constant, by the value that owns the bytes.
    Weight(ValueId),
}

impl LoweredProgram {
    pub fn weight_bytes(&self, graph: &Graph) -> usize {
        self.weights
            .iter()
            .map(|&v| graph.value(v).ty.size_bytes())
            .sum()
    }

    /// The buffer holding value `v`.
    pub fn buffer(&self, v: ValueId) -> Buffer {
        match self.plan.resolve(v) {
            Some(Storage::Input(i)) => Buffer::Input(*i),
            Some(Storage::Output(i)) => Buffer::Output(*i),
            Some(Storage::Arena { offset }) => Buffer::Arena(*offset),
            _ => {
                // Constants (possibly through an alias).
                let mut root = v;
                while let Some(Storage::Alias(src)) = self.plan.storage.get(&root) {
                    root = *src;
                }
                Buffer::Weight(root)
            }
        }
    }

    /// Graph outputs that no kernel wrote (graph inputs, constants, aliases or repeated values):
    /// (output index, where the bytes are, byte count), to copy at the end of the run.
    pub fn output_copies(&self, graph: &Graph) -> Vec<(usize, Buffer, usize)> {
        graph
            .outputs()
            .iter()
            .enumerate()
            .filter_map(|(i, &v)| {
                let src = self.buffer(v);
                let bytes = graph.value(v).ty.size_bytes();
                (src != Buffer::Output(i) && bytes > 0).then_some((i, src, bytes))
            })
            .collect()
    }
}

/// Turns an arbitrary op/node name into a short identifier fragment.
fn ident(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(24);
    out.trim_matches('_').to_string()
}

/// Plans memory and lowers every scheduled node to a kernel named `{prefix}_l{i}_{op}`.
/// `backend` names the emitter in errors.
pub fn lower_program(
    graph: &Graph,
    prefix: &str,
    schedule: &Schedule,
    alignment: usize,
    backend: &'static str,
) -> Result<LoweredProgram, BackendError> {
    // Every emitter starts here: a graph that breaks an IR invariant (a read of a value no node
    // defines, a stale type) is an error, never a panic or code that does not compile.
    kiln_ir::verify::verify(graph)?;
    let plan = plan_memory(graph, alignment)?;
    let mut kernels: Vec<(NodeId, Kernel)> = Vec::new();
    let mut layers = Vec::new();
    for (i, &n) in plan.schedule.iter().enumerate() {
        let node = graph.node(n);
        let in_types: Vec<&TensorType> = node.inputs.iter().map(|&v| &graph.value(v).ty).collect();
        let out_types: Vec<&TensorType> =
            node.outputs.iter().map(|&v| &graph.value(v).ty).collect();
        let name = format!("{prefix}_l{i}_{}", ident(&node.op.dump_name()));
        let kernel = if plan.elided.contains(&n) {
            None
        } else if matches!(node.op, kiln_ir::Op::Reshape { .. } | kiln_ir::Op::Identity) {
            Some(copy_kernel(&name, out_types[0]))
        } else {
            Some(
                lower_op(&name, &node.op, &in_types, &out_types, schedule).map_err(
                    |e| match e {
                        BackendError::Lowering(reason) => BackendError::Unsupported {
                            node: node.name.clone(),
                            op: node.op.name().to_string(),
                            backend,
                            reason,
                        },
                        other => other,
                    },
                )?,
            )
        };
        let owned: Vec<TensorType> = out_types.iter().map(|t| (*t).clone()).collect();
        layers.push(LayerInfo {
            node: node.name.clone(),
            op: node.op.name(),
            kernel: kernel.as_ref().map(|k| k.name.clone()),
            output: owned
                .first()
                .cloned()
                .unwrap_or_else(|| TensorType::new(kiln_ir::DType::F32, vec![])),
            macs: kiln_ir::ops::macs(&node.op, &in_types, &owned),
            arena_offset: node.outputs.first().and_then(|&v| plan.arena_offset(v)),
            bytes: owned.first().map_or(0, |t| t.size_bytes()),
        });
        if let Some(k) = kernel {
            kernels.push((n, apply_schedule(k, schedule)));
        }
    }
    let weights = collect_weights(graph, &plan);
    Ok(LoweredProgram {
        plan,
        kernels,
        layers,
        weights,
    })
}

/// Constants the program reads, in value-id order.
fn collect_weights(graph: &Graph, plan: &MemoryPlan) -> Vec<ValueId> {
    let mut used = std::collections::BTreeSet::new();
    for &n in &plan.schedule {
        for &v in &graph.node(n).inputs {
            if graph.value(v).is_const() {
                used.insert(v);
            }
        }
    }
    for &v in graph.outputs() {
        if graph.value(v).is_const() {
            used.insert(v);
        }
    }
    used.into_iter().collect()
}
