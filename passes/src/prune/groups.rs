//! Channel dependency analysis: which channels of which layers must be removed together.
//!
//! Every layer whose output channels can be removed (a Conv with group 1, a depthwise Conv, a
//! Gemm or a MatMul by a constant matrix) opens a *channel space*: one element per output
//! channel. The analysis walks the graph in topological order and gives every value that
//! carries channels a [`Layout`]: the axis the channels run along, how many consecutive
//! indices one channel covers there (`block`: 1, or H*W after a Flatten), and which element
//! each position is. Ops then *couple* elements, with a union-find over them:
//!
//! - a residual Add/Mul (any broadcasting element-wise op) unifies its operands' elements
//!   position by position, so every branch keeps the same channel set;
//! - a Concat along the channels concatenates its inputs' positions (offsets shift);
//! - a depthwise Conv ties each output channel to its input channel (its `group` shrinks with
//!   them); with a channel multiplier, the `m` outputs of one input channel go together;
//! - Flatten/Reshape map a channel to a block of features when the reshape provably keeps each
//!   channel's data contiguous and in order; Transpose moves the axis; pools, unary ops,
//!   BatchNormalization and friends keep it.
//!
//! A *class* (a union-find component) is the unit of pruning: removing it removes each of its
//! elements from every layer and every value. A *group* is a set of coupled spaces (e.g. the
//! stem conv and every residual branch of a ResNet stage) with their classes.
//!
//! What kiln cannot prove is left alone: when a value's channels reach an op this analysis does
//! not model (a Gather, a Softmax across the channels, a grouped conv, a reshape that mixes
//! channels, a graph output, ...), every class of that value is *pinned*, with the reason, and
//! no pruning touches it. Anything not listed here pins: the default is to refuse.

use std::collections::{BTreeMap, BTreeSet};

use kiln_ir::{Graph, IrError, NodeId, Op, Tensor, ValueId};

/// Index of an element: one output channel of one space.
pub type ElemId = usize;
/// Index of a class (a set of elements that go together), dense after analysis.
pub type ClassId = usize;
/// Index of a channel space.
pub type SpaceId = usize;

/// The output channels of one layer (or of a value kiln cannot prune, created pinned).
#[derive(Clone, Debug)]
pub struct Space {
    /// The node whose output channels these are; `None` for channels from outside any
    /// prunable layer (a graph input concatenated with layer outputs, ...), always pinned.
    pub node: Option<NodeId>,
    pub len: usize,
    first: ElemId,
}

impl Space {
    pub fn elems(&self) -> std::ops::Range<ElemId> {
        self.first..self.first + self.len
    }
}

/// Where a value's channels are: along `axis`, position `i` of `slots` covering indices
/// `i * block .. (i + 1) * block`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub axis: usize,
    pub block: usize,
    pub slots: Vec<ElemId>,
}

/// How pruning rewrites a node whose inputs or outputs lose channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Conv with group 1 and constant weights: weights sliced on axis 0 (output channels, its
    /// own space) and axis 1 (input channels, the input's layout).
    Conv,
    /// Depthwise Conv (group = input channels): weights and bias follow the output layout,
    /// `group` the input's.
    Depthwise,
    /// Gemm with constant B (and C): B sliced along N (its space) and K (the input's layout).
    Gemm,
    /// MatMul by a constant 2-D B: sliced along N and K.
    MatMul,
    /// Broadcasting element-wise op: these constant inputs are sliced along these of their axes.
    Elementwise { consts: Vec<(usize, usize)> },
    /// Per-channel parameters (BatchNormalization, InstanceNormalization) in these input
    /// slots, sliced along axis 0.
    ChannelParams { params: Vec<usize> },
    /// Reshape: its `shape` attribute follows the output layout.
    Reshape,
    /// Split along the channels: `sizes` follow the outputs' layouts.
    Split,
    /// Slice whose `ends` on the channel axis follow the input's.
    Slice,
    /// Resize whose `out_shape` on the channel axis follows the input's.
    Resize,
    /// Nothing to rewrite: the op's result follows its input's channel count.
    Follow,
}

/// One set of elements that must be removed together.
#[derive(Clone, Debug, Default)]
pub struct Class {
    pub elems: Vec<ElemId>,
    /// Why it cannot be removed (empty: it can).
    pub pins: Vec<String>,
    pub group: usize,
}

impl Class {
    pub fn is_pinned(&self) -> bool {
        !self.pins.is_empty()
    }
}

/// Coupled spaces and their classes.
#[derive(Clone, Debug, Default)]
pub struct Group {
    pub spaces: Vec<SpaceId>,
    pub classes: Vec<ClassId>,
}

/// The result of the analysis.
#[derive(Clone, Debug, Default)]
pub struct ChannelGroups {
    pub spaces: Vec<Space>,
    /// The space of each element.
    pub elem_space: Vec<SpaceId>,
    /// The class of each element.
    pub elem_class: Vec<ClassId>,
    pub classes: Vec<Class>,
    pub groups: Vec<Group>,
    pub layouts: BTreeMap<ValueId, Layout>,
    pub roles: BTreeMap<NodeId, Role>,
}

impl ChannelGroups {
    pub fn class_of(&self, e: ElemId) -> ClassId {
        self.elem_class[e]
    }

    /// The classes of a value's channel positions, if it carries channels.
    pub fn value_classes(&self, v: ValueId) -> Option<Vec<ClassId>> {
        self.layouts
            .get(&v)
            .map(|l| l.slots.iter().map(|&e| self.class_of(e)).collect())
    }

    /// The reasons a group is (partly) pinned, deduplicated, in order.
    pub fn group_pins(&self, group: usize) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for &c in &self.groups[group].classes {
            for p in &self.classes[c].pins {
                if seen.insert(p.clone()) {
                    out.push(p.clone());
                }
            }
        }
        out
    }

    /// A readable name for a group: its layers' names.
    pub fn group_name(&self, g: &Graph, group: usize) -> String {
        let names: Vec<String> = self.groups[group]
            .spaces
            .iter()
            .filter_map(|&s| self.spaces[s].node)
            .filter(|&n| g.contains_node(n))
            .map(|n| g.node(n).name.clone())
            .collect();
        if names.is_empty() {
            "(channels outside any layer)".to_string()
        } else {
            names.join(" + ")
        }
    }
}

/// Analyzes `g` (see the module docs).
pub fn analyze(g: &Graph) -> Result<ChannelGroups, IrError> {
    let mut b = Builder::default();
    for id in g.topo_order()? {
        b.node(g, id);
    }
    for &o in g.outputs() {
        let name = &g.value(o).name;
        b.pin_value(o, &format!("graph output '{name}'"));
    }
    Ok(b.finish())
}

#[derive(Default)]
struct Builder {
    spaces: Vec<Space>,
    elem_space: Vec<SpaceId>,
    parent: Vec<ElemId>,
    pins: BTreeMap<ElemId, Vec<String>>,
    layouts: BTreeMap<ValueId, Layout>,
    roles: BTreeMap<NodeId, Role>,
}

impl Builder {
    fn new_space(&mut self, node: Option<NodeId>, len: usize) -> Vec<ElemId> {
        let first = self.parent.len();
        let id = self.spaces.len();
        self.spaces.push(Space { node, len, first });
        for e in first..first + len {
            self.parent.push(e);
            self.elem_space.push(id);
        }
        (first..first + len).collect()
    }

    fn find(&mut self, mut e: ElemId) -> ElemId {
        while self.parent[e] != e {
            self.parent[e] = self.parent[self.parent[e]];
            e = self.parent[e];
        }
        e
    }

    fn union(&mut self, a: ElemId, b: ElemId) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // The lower id stays the root, so class order is deterministic.
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi] = lo;
        }
    }

    fn pin_elems(&mut self, elems: &[ElemId], reason: &str) {
        for &e in elems {
            let list = self.pins.entry(e).or_default();
            if !list.iter().any(|r| r == reason) {
                list.push(reason.to_string());
            }
        }
    }

    fn pin_value(&mut self, v: ValueId, reason: &str) {
        if let Some(l) = self.layouts.get(&v) {
            let slots = l.slots.clone();
            self.pin_elems(&slots, reason);
        }
    }

    /// Pins every input of `id` that carries channels.
    fn pin_inputs(&mut self, g: &Graph, id: NodeId, why: &str) {
        let node = g.node(id);
        let reason = format!("{} '{}' {why}", node.op.name(), node.name);
        for &v in &node.inputs {
            self.pin_value(v, &reason);
        }
    }

    /// A node that keeps its first input's channels in place when `keeps` holds: its first
    /// output takes the layout `l` and the node the role `role`; otherwise its inputs are
    /// pinned for `why`.
    fn keep_or_pin(
        &mut self,
        g: &Graph,
        id: NodeId,
        l: Layout,
        keeps: bool,
        role: Role,
        why: &str,
    ) {
        if !keeps {
            self.pin_inputs(g, id, why);
            return;
        }
        if let Some(&y) = g.node(id).outputs.first() {
            self.layouts.insert(y, l);
        }
        self.roles.insert(id, role);
    }

    /// The output channels of a layer kiln cannot prune, as a pinned space of their own (along
    /// the output's last axis for a Gemm/MatMul, axis 1 for a Conv), so the report lists them
    /// with the reason and whatever they are coupled with stays too.
    fn pinned_outputs(&mut self, g: &Graph, id: NodeId, n: usize, why: &str) {
        let node = g.node(id);
        let Some(&y) = node.outputs.first() else {
            return;
        };
        let rank = g.value(y).ty.rank();
        let axis = match node.op {
            Op::Conv { .. } => 1,
            _ => rank.saturating_sub(1),
        };
        if rank <= axis || g.value(y).ty.shape[axis] != n || n == 0 {
            return;
        }
        let reason = format!("{} '{}' {why}", node.op.name(), node.name);
        let elems = self.new_space(Some(id), n);
        self.pin_elems(&elems, &reason);
        self.set(y, axis, 1, elems);
    }

    fn set(&mut self, v: ValueId, axis: usize, block: usize, slots: Vec<ElemId>) {
        self.layouts.insert(v, Layout { axis, block, slots });
    }

    /// A pinned layout for a value with no channels of its own (so that couplings through it
    /// stay well defined), over `axis` with `block`.
    fn fresh_pinned(&mut self, g: &Graph, v: ValueId, axis: usize, block: usize, why: &str) {
        let dim = g.value(v).ty.shape.get(axis).copied().unwrap_or(0);
        if block == 0 || !dim.is_multiple_of(block) {
            return;
        }
        let elems = self.new_space(None, dim / block);
        self.pin_elems(&elems, why);
        self.set(v, axis, block, elems);
    }

    fn node(&mut self, g: &Graph, id: NodeId) {
        let node = g.node(id);
        let has_layout = node.inputs.iter().any(|v| self.layouts.contains_key(v));
        let shape = |v: ValueId| g.value(v).ty.shape.clone();
        let is_const = |v: ValueId| g.value(v).is_const();
        let out = node.outputs.first().copied();
        match &node.op {
            Op::Conv { group, .. } => self.conv(g, id, *group),
            Op::Gemm { trans_a, .. } => {
                let (Some(&a), Some(&w), Some(y)) = (node.inputs.first(), node.inputs.get(1), out)
                else {
                    return;
                };
                let c_ok = node.inputs.get(2).is_none_or(|&c| is_const(c));
                if !is_const(w) || !c_ok || g.value(y).ty.rank() != 2 {
                    let why = "has weights that are not constants (computed at run time)";
                    self.pin_inputs(g, id, why);
                    if g.value(y).ty.rank() == 2 {
                        self.pinned_outputs(g, id, shape(y)[1], why);
                    }
                    return;
                }
                if *trans_a {
                    self.pin_inputs(g, id, "reads its input transposed");
                } else if self.layouts.get(&a).is_some_and(|l| l.axis != 1) {
                    self.pin_inputs(g, id, "reads channels along its batch axis");
                }
                let n = shape(y)[1];
                let elems = self.new_space(Some(id), n);
                self.set(y, 1, 1, elems);
                self.roles.insert(id, Role::Gemm);
            }
            Op::MatMul { a_perm, b_perm, .. } => {
                let (Some(&a), Some(&w), Some(y)) = (node.inputs.first(), node.inputs.get(1), out)
                else {
                    return;
                };
                let ra = g.value(a).ty.rank();
                if !a_perm.is_empty() || !b_perm.is_empty() || !is_const(w) || shape(w).len() != 2 {
                    let why = "is not a product by a constant matrix";
                    self.pin_inputs(g, id, why);
                    let n = shape(y).last().copied().unwrap_or(0);
                    self.pinned_outputs(g, id, n, why);
                    return;
                }
                if self
                    .layouts
                    .get(&a)
                    .is_some_and(|l| l.axis + 1 != ra.max(1))
                {
                    self.pin_inputs(g, id, "reads channels along a batch or row axis");
                }
                let ry = g.value(y).ty.rank();
                let n = shape(y).last().copied().unwrap_or(0);
                let elems = self.new_space(Some(id), n);
                self.set(y, ry.saturating_sub(1), 1, elems);
                self.roles.insert(id, Role::MatMul);
            }
            op if op.family() == kiln_ir::op::OpFamily::Unary => {
                if let Some(l) = node
                    .inputs
                    .first()
                    .and_then(|v| self.layouts.get(v))
                    .cloned()
                {
                    for &o in &node.outputs {
                        self.layouts.insert(o, l.clone());
                    }
                    self.roles.insert(id, Role::Follow);
                }
            }
            op if op.family() == kiln_ir::op::OpFamily::Binary => {
                if has_layout {
                    self.elementwise(g, id);
                }
            }
            Op::MaxPool { indices: false, .. }
            | Op::AveragePool { .. }
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool => {
                let Some(&x) = node.inputs.first() else {
                    return;
                };
                match self.layouts.get(&x).cloned() {
                    Some(l) if l.axis == 1 => {
                        if let Some(y) = out {
                            self.layouts.insert(y, l);
                        }
                        self.roles.insert(id, Role::Follow);
                    }
                    Some(_) => self.pin_inputs(g, id, "pools along the channels"),
                    None => {}
                }
            }
            Op::BatchNormalization { .. } | Op::InstanceNormalization { .. } => {
                let Some(&x) = node.inputs.first() else {
                    return;
                };
                let Some(l) = self.layouts.get(&x).cloned() else {
                    return;
                };
                let c = shape(x).get(1).copied().unwrap_or(0);
                let params: Vec<usize> = (1..node.inputs.len()).collect();
                let ok = l.axis == 1
                    && params.iter().all(|&p| {
                        let v = node.inputs[p];
                        is_const(v) && shape(v) == [c]
                    });
                if ok {
                    if let Some(y) = out {
                        self.layouts.insert(y, l);
                    }
                    self.roles.insert(id, Role::ChannelParams { params });
                } else {
                    self.pin_inputs(g, id, "has parameters kiln cannot slice");
                }
            }
            Op::LayerNormalization { axis, .. } => {
                let Some(l) = node
                    .inputs
                    .first()
                    .and_then(|v| self.layouts.get(v))
                    .cloned()
                else {
                    return;
                };
                if l.axis < *axis {
                    for &o in &node.outputs {
                        self.layouts.insert(o, l.clone());
                    }
                    self.roles.insert(id, Role::Follow);
                } else {
                    self.pin_inputs(g, id, "normalizes across the channels");
                }
            }
            Op::Softmax { axis, coerce_2d } | Op::LogSoftmax { axis, coerce_2d } => {
                let Some(l) = node
                    .inputs
                    .first()
                    .and_then(|v| self.layouts.get(v))
                    .cloned()
                else {
                    return;
                };
                let ok = if *coerce_2d {
                    l.axis < *axis
                } else {
                    l.axis != *axis
                };
                self.keep_or_pin(g, id, l, ok, Role::Follow, "normalizes across the channels");
            }
            Op::ReduceMean { axes, keepdims }
            | Op::ReduceSum { axes, keepdims }
            | Op::ReduceMax { axes, keepdims }
            | Op::ReduceMin { axes, keepdims } => self.reduce(g, id, axes, *keepdims),
            Op::ArgMax { axis, keepdims, .. } => self.reduce(g, id, &[*axis], *keepdims),
            Op::Reshape { .. } => self.reshape(g, id),
            Op::Transpose { perm } => {
                let Some(l) = node
                    .inputs
                    .first()
                    .and_then(|v| self.layouts.get(v))
                    .cloned()
                else {
                    return;
                };
                if let (Some(new_axis), Some(y)) = (perm.iter().position(|&p| p == l.axis), out) {
                    self.layouts.insert(
                        y,
                        Layout {
                            axis: new_axis,
                            ..l
                        },
                    );
                    self.roles.insert(id, Role::Follow);
                } else {
                    self.pin_inputs(g, id, "has an invalid permutation");
                }
            }
            Op::Concat { axis } => {
                if has_layout {
                    self.concat(g, id, *axis);
                }
            }
            Op::Split { axis, sizes } => {
                let Some(l) = node
                    .inputs
                    .first()
                    .and_then(|v| self.layouts.get(v))
                    .cloned()
                else {
                    return;
                };
                if l.axis != *axis {
                    for &o in &node.outputs {
                        self.layouts.insert(o, l.clone());
                    }
                    self.roles.insert(id, Role::Follow);
                } else if sizes.iter().all(|s| s.is_multiple_of(l.block)) {
                    let mut off = 0;
                    for (&o, &s) in node.outputs.iter().zip(sizes) {
                        let n = s / l.block;
                        let slots = l.slots[off..off + n].to_vec();
                        off += n;
                        self.set(o, l.axis, l.block, slots);
                    }
                    self.roles.insert(id, Role::Split);
                } else {
                    self.pin_inputs(g, id, "splits inside a channel's block");
                }
            }
            Op::Slice {
                starts,
                ends,
                steps,
            } => {
                let Some(&x) = node.inputs.first() else {
                    return;
                };
                let Some(l) = self.layouts.get(&x).cloned() else {
                    return;
                };
                let dim = shape(x)[l.axis] as i64;
                let a = l.axis;
                let whole = starts.get(a) == Some(&0)
                    && ends.get(a).is_some_and(|&e| e >= dim)
                    && steps.get(a) == Some(&1);
                self.keep_or_pin(g, id, l, whole, Role::Slice, "slices the channels");
            }
            Op::Pad { pads, .. } => {
                let Some(&x) = node.inputs.first() else {
                    return;
                };
                let Some(l) = self.layouts.get(&x).cloned() else {
                    return;
                };
                let r = shape(x).len();
                let keeps = pads.get(l.axis) == Some(&0) && pads.get(l.axis + r) == Some(&0);
                self.keep_or_pin(g, id, l, keeps, Role::Follow, "pads the channels");
            }
            Op::Tile { repeats } => {
                let Some(l) = node
                    .inputs
                    .first()
                    .and_then(|v| self.layouts.get(v))
                    .cloned()
                else {
                    return;
                };
                let keeps = repeats.get(l.axis) == Some(&1);
                self.keep_or_pin(g, id, l, keeps, Role::Follow, "repeats the channels");
            }
            Op::Resize {
                scales,
                out_shape,
                coord,
                ..
            } => {
                let Some(&x) = node.inputs.first() else {
                    return;
                };
                let Some(l) = self.layouts.get(&x).cloned() else {
                    return;
                };
                let a = l.axis;
                let ok = scales.get(a) == Some(&1.0)
                    && out_shape.get(a) == shape(x).get(a)
                    && *coord != kiln_ir::op::CoordTransform::TfCropAndResize;
                self.keep_or_pin(g, id, l, ok, Role::Resize, "resizes along the channels");
            }
            Op::Shape { start, end } => {
                if let Some(l) = node.inputs.first().and_then(|v| self.layouts.get(v)) {
                    if (*start..*end).contains(&l.axis) {
                        self.pin_inputs(g, id, "reads the channel count");
                    }
                }
            }
            Op::ConstantOfShape { .. } | Op::Range { .. } => {}
            _ => {
                if has_layout {
                    self.pin_inputs(g, id, "is not modelled by the channel analysis");
                }
            }
        }
    }

    fn conv(&mut self, g: &Graph, id: NodeId, group: usize) {
        let node = g.node(id);
        let (Some(&x), Some(&w), Some(&y)) = (
            node.inputs.first(),
            node.inputs.get(1),
            node.outputs.first(),
        ) else {
            return;
        };
        let consts =
            g.value(w).is_const() && node.inputs.get(2).is_none_or(|&b| g.value(b).is_const());
        let c_in = g.value(x).ty.shape.get(1).copied().unwrap_or(0);
        let c_out = g.value(y).ty.shape.get(1).copied().unwrap_or(0);
        if !consts {
            let why = "has weights that are not constants (computed at run time)";
            self.pin_inputs(g, id, why);
            self.pinned_outputs(g, id, c_out, why);
            return;
        }
        if let Some(l) = self.layouts.get(&x) {
            if l.axis != 1 || l.block != 1 {
                self.pin_inputs(g, id, "reads channels in blocks or along another axis");
            }
        }
        if group == 1 {
            let elems = self.new_space(Some(id), c_out);
            self.set(y, 1, 1, elems);
            self.roles.insert(id, Role::Conv);
        } else if group == c_in && c_in > 0 && c_out.is_multiple_of(c_in) {
            let m = c_out / c_in;
            if !self.layouts.contains_key(&x) {
                let reason = format!(
                    "the input channels of depthwise Conv '{}' are not prunable",
                    node.name
                );
                self.fresh_pinned(g, x, 1, 1, &reason);
            }
            let Some(l) = self.layouts.get(&x).cloned() else {
                return;
            };
            if l.axis != 1 || l.block != 1 {
                let elems = self.new_space(Some(id), c_out);
                let reason = format!(
                    "depthwise Conv '{}' reads channels kiln cannot map",
                    node.name
                );
                self.pin_elems(&elems, &reason);
                self.set(y, 1, 1, elems);
                return;
            }
            let slots = if m == 1 {
                l.slots.clone()
            } else {
                let elems = self.new_space(Some(id), c_out);
                for (c, &e) in l.slots.iter().enumerate() {
                    for j in 0..m {
                        self.union(elems[c * m + j], e);
                    }
                }
                elems
            };
            self.set(y, 1, 1, slots);
            self.roles.insert(id, Role::Depthwise);
        } else {
            let why = format!("is a grouped convolution (group={group})");
            self.pin_inputs(g, id, &why);
            let elems = self.new_space(Some(id), c_out);
            let reason = format!("Conv '{}' {why}", node.name);
            self.pin_elems(&elems, &reason);
            self.set(y, 1, 1, elems);
        }
    }

    fn elementwise(&mut self, g: &Graph, id: NodeId) {
        let node = g.node(id);
        let Some(&y) = node.outputs.first() else {
            return;
        };
        let out_shape = g.value(y).ty.shape.clone();
        let r = out_shape.len();
        // (input slot, output axis, layout) of the inputs that carry channels.
        let mut with: Vec<(usize, usize, Layout)> = Vec::new();
        for (slot, &v) in node.inputs.iter().enumerate() {
            let Some(l) = self.layouts.get(&v) else {
                continue;
            };
            let in_shape = &g.value(v).ty.shape;
            let off = r - in_shape.len().min(r);
            let axis = l.axis + off;
            if in_shape.get(l.axis) != out_shape.get(axis) {
                self.pin_inputs(g, id, "broadcasts a value's channels");
                return;
            }
            with.push((slot, axis, l.clone()));
        }
        let Some((_, axis, first)) = with.first().cloned() else {
            return;
        };
        if with.iter().any(|(_, a, l)| {
            *a != axis || l.block != first.block || l.slots.len() != first.slots.len()
        }) {
            self.pin_inputs(g, id, "combines channels laid out differently");
            return;
        }
        for (_, _, l) in &with[1..] {
            for (&a, &b) in first.slots.iter().zip(&l.slots) {
                self.union(a, b);
            }
        }
        let mut consts = Vec::new();
        for (slot, &v) in node.inputs.iter().enumerate() {
            if with.iter().any(|(s, _, _)| *s == slot) {
                continue;
            }
            let in_shape = &g.value(v).ty.shape;
            let off = r - in_shape.len().min(r);
            let Some(own) = axis.checked_sub(off) else {
                continue;
            };
            match in_shape.get(own) {
                None | Some(1) => {}
                Some(_) if g.value(v).is_const() => consts.push((slot, own)),
                Some(_) => {
                    self.pin_inputs(
                        g,
                        id,
                        "combines the channels with a value kiln cannot prune",
                    );
                    break;
                }
            }
        }
        for &o in &node.outputs {
            self.set(o, axis, first.block, first.slots.clone());
        }
        self.roles.insert(id, Role::Elementwise { consts });
    }

    fn reduce(&mut self, g: &Graph, id: NodeId, axes: &[usize], keepdims: bool) {
        let node = g.node(id);
        let Some(l) = node
            .inputs
            .first()
            .and_then(|v| self.layouts.get(v))
            .cloned()
        else {
            return;
        };
        if axes.contains(&l.axis) {
            self.pin_inputs(g, id, "reduces across the channels");
            return;
        }
        let axis = if keepdims {
            l.axis
        } else {
            l.axis - axes.iter().filter(|&&a| a < l.axis).count()
        };
        if let Some(&y) = node.outputs.first() {
            self.layouts.insert(y, Layout { axis, ..l });
        }
        self.roles.insert(id, Role::Follow);
    }

    /// A reshape keeps channels when, in the flat order, each channel's data stays one
    /// contiguous run that the output splits into whole indices of one output axis.
    fn reshape(&mut self, g: &Graph, id: NodeId) {
        let node = g.node(id);
        let (Some(&x), Some(&y)) = (node.inputs.first(), node.outputs.first()) else {
            return;
        };
        let Some(l) = self.layouts.get(&x).cloned() else {
            return;
        };
        let ins = g.value(x).ty.shape.clone();
        let outs = g.value(y).ty.shape.clone();
        match reshape_axis(&ins, &outs, l.axis, l.block) {
            Some((axis, block)) => {
                self.set(y, axis, block, l.slots);
                self.roles.insert(id, Role::Reshape);
            }
            None => self.pin_inputs(g, id, "mixes the channels with other axes"),
        }
    }

    fn concat(&mut self, g: &Graph, id: NodeId, axis: usize) {
        let node = g.node(id);
        let Some(&y) = node.outputs.first() else {
            return;
        };
        let layouts: Vec<Option<Layout>> = node
            .inputs
            .iter()
            .map(|v| self.layouts.get(v).cloned())
            .collect();
        let present: Vec<&Layout> = layouts.iter().flatten().collect();
        let block = present[0].block;
        let same_axis = present.iter().all(|l| l.axis == axis);
        if same_axis && present.iter().all(|l| l.block == block) {
            // Offsets shift: the output's positions are the inputs' in order.
            let mut slots = Vec::new();
            for (&v, l) in node.inputs.iter().zip(&layouts) {
                let l = match l {
                    Some(l) => l.clone(),
                    None => {
                        let reason = format!(
                            "Concat '{}' joins them with channels from outside any layer",
                            node.name
                        );
                        self.fresh_pinned(g, v, axis, block, &reason);
                        match self.layouts.get(&v) {
                            Some(l) => l.clone(),
                            None => {
                                self.pin_inputs(g, id, "joins channels in uneven blocks");
                                return;
                            }
                        }
                    }
                };
                slots.extend(l.slots);
            }
            self.set(y, axis, block, slots);
            self.roles.insert(id, Role::Follow);
            return;
        }
        // Concatenated along another axis: every input must carry the same channels.
        let first = present[0].clone();
        let all = layouts.iter().all(|l| {
            l.as_ref().is_some_and(|l| {
                l.axis == first.axis && l.block == first.block && l.slots.len() == first.slots.len()
            })
        });
        if first.axis == axis || !all {
            self.pin_inputs(g, id, "joins channels laid out differently");
            return;
        }
        for l in layouts.iter().flatten().skip(1) {
            for (&a, &b) in first.slots.iter().zip(&l.slots) {
                self.union(a, b);
            }
        }
        self.set(y, first.axis, first.block, first.slots);
        self.roles.insert(id, Role::Follow);
    }

    fn finish(mut self) -> ChannelGroups {
        let n = self.parent.len();
        let mut class_of_root: BTreeMap<ElemId, ClassId> = BTreeMap::new();
        let mut elem_class = vec![0; n];
        let mut classes: Vec<Class> = Vec::new();
        for (e, slot) in elem_class.iter_mut().enumerate() {
            let r = self.find(e);
            let c = *class_of_root.entry(r).or_insert_with(|| {
                classes.push(Class::default());
                classes.len() - 1
            });
            *slot = c;
            classes[c].elems.push(e);
        }
        for (e, reasons) in &self.pins {
            let c = &mut classes[elem_class[*e]];
            for r in reasons {
                if !c.pins.contains(r) {
                    c.pins.push(r.clone());
                }
            }
        }
        // Groups: spaces joined by any class.
        let mut space_parent: Vec<SpaceId> = (0..self.spaces.len()).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for c in &classes {
            let s0 = self.elem_space[c.elems[0]];
            for &e in &c.elems[1..] {
                let (a, b) = (
                    find(&mut space_parent, s0),
                    find(&mut space_parent, self.elem_space[e]),
                );
                if a != b {
                    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                    space_parent[hi] = lo;
                }
            }
        }
        let mut group_of_root: BTreeMap<SpaceId, usize> = BTreeMap::new();
        let mut groups: Vec<Group> = Vec::new();
        for s in 0..self.spaces.len() {
            let r = find(&mut space_parent, s);
            let gi = *group_of_root.entry(r).or_insert_with(|| {
                groups.push(Group::default());
                groups.len() - 1
            });
            groups[gi].spaces.push(s);
        }
        for (ci, c) in classes.iter_mut().enumerate() {
            let gi = group_of_root[&find(&mut space_parent, self.elem_space[c.elems[0]])];
            c.group = gi;
            groups[gi].classes.push(ci);
        }
        ChannelGroups {
            spaces: self.spaces,
            elem_space: self.elem_space,
            elem_class,
            classes,
            groups,
            layouts: self.layouts,
            roles: self.roles,
        }
    }
}

/// Where channels along `axis` of `ins` (each covering `block` indices) land in `outs` after a
/// reshape: the output axis and block, if every channel stays one contiguous run split into
/// whole indices of that axis.
pub fn reshape_axis(
    ins: &[usize],
    outs: &[usize],
    axis: usize,
    block: usize,
) -> Option<(usize, usize)> {
    let prod = |s: &[usize]| s.iter().product::<usize>();
    let outer = prod(ins.get(..axis)?);
    let inner = prod(ins.get(axis + 1..)?);
    let dim = *ins.get(axis)?;
    if block == 0 || !dim.is_multiple_of(block) {
        return None;
    }
    let slots = dim / block;
    let chunk = block * inner;
    (0..outs.len()).find_map(|a| {
        let inner_out = prod(&outs[a + 1..]);
        let ok = prod(&outs[..a]) == outer
            && outs[a] * inner_out == dim * inner
            && inner_out > 0
            && chunk.is_multiple_of(inner_out)
            && outs[a] == slots * (chunk / inner_out);
        ok.then_some((a, chunk / inner_out))
    })
}

/// The indices of a value's channel axis that survive when `removed` classes go.
pub fn kept_indices(groups: &ChannelGroups, l: &Layout, removed: &BTreeSet<ClassId>) -> Vec<usize> {
    let mut kept = Vec::new();
    for (i, &e) in l.slots.iter().enumerate() {
        if !removed.contains(&groups.class_of(e)) {
            kept.extend(i * l.block..(i + 1) * l.block);
        }
    }
    kept
}

/// `t` with only `indices` (in order) along `axis`.
pub fn slice_axis(t: &Tensor, axis: usize, indices: &[usize]) -> Result<Tensor, IrError> {
    let shape = t.shape();
    let outer: usize = shape[..axis].iter().product();
    let dim = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut picks = Vec::with_capacity(outer * indices.len() * inner);
    for o in 0..outer {
        for &i in indices {
            let base = (o * dim + i) * inner;
            picks.extend(base..base + inner);
        }
    }
    let mut new_shape = shape.to_vec();
    new_shape[axis] = indices.len();
    use kiln_ir::TensorData as D;
    let data = match t.data() {
        D::F32(v) => D::F32(picks.iter().map(|&i| v[i]).collect()),
        D::I8(v) => D::I8(picks.iter().map(|&i| v[i]).collect()),
        D::U8(v) => D::U8(picks.iter().map(|&i| v[i]).collect()),
        D::I16(v) => D::I16(picks.iter().map(|&i| v[i]).collect()),
        D::I32(v) => D::I32(picks.iter().map(|&i| v[i]).collect()),
        D::I64(v) => D::I64(picks.iter().map(|&i| v[i]).collect()),
        D::Bool(v) => D::Bool(picks.iter().map(|&i| v[i]).collect()),
    };
    Tensor::new(new_shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_axis_cases() {
        // Flatten after a global pool: a channel is one feature.
        assert_eq!(reshape_axis(&[1, 64, 1, 1], &[1, 64], 1, 1), Some((1, 1)));
        // Flatten of a feature map: a channel is a block of H*W features.
        assert_eq!(reshape_axis(&[1, 8, 2, 2], &[1, 32], 1, 1), Some((1, 4)));
        // Unsqueeze and back.
        assert_eq!(reshape_axis(&[1, 8], &[1, 8, 1, 1], 1, 1), Some((1, 1)));
        assert_eq!(reshape_axis(&[1, 32], &[1, 8, 4], 1, 4), Some((1, 1)));
        // Channels split over two axes, or merged with the batch: not provable.
        assert_eq!(reshape_axis(&[1, 8, 2], &[1, 2, 8], 1, 1), None);
        assert_eq!(reshape_axis(&[2, 8], &[16], 1, 1), None);
    }
}
