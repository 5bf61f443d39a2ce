//! The static memory planner: one schedule, the lifetime of every intermediate tensor, and its
//! offset in ONE arena. The plan is data (an offset table) that backends print.
//!
//! - Graph inputs live in the caller's input buffers, constants in flash, graph outputs in the
//!   caller's output buffers; only the other node results take arena space.
//! - Reshape, Identity and a mask-less Dropout's output are aliases: they share their input's storage
//!   and cost no code (unless they produce a graph output, which needs a copy).
//! - An element-wise node whose input dies there and has the output's size works in place.
//! - Offsets come from greedy-by-size placement (largest first, lowest free offset among the
//!   tensors whose lifetimes overlap), which in practice lands within a few percent of the lower
//!   bound: the largest sum of sizes of tensors live at one step of the schedule.

use std::collections::HashMap;

use kiln_ir::op::OpFamily;
use kiln_ir::{Graph, IrError, NodeId, Op, ValueDef, ValueId};

/// Where a value lives at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Graph input at this position.
    Input(usize),
    /// Graph output at this position.
    Output(usize),
    /// A constant (weights in flash).
    Const,
    /// `offset` bytes into the arena.
    Arena { offset: usize },
    /// The same bytes as another value (zero-copy reshape).
    Alias(ValueId),
}

/// The memory plan of a graph.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// Nodes in execution order.
    pub schedule: Vec<NodeId>,
    /// Storage of every value the schedule touches.
    pub storage: HashMap<ValueId, Storage>,
    /// Nodes that need no code because their output aliases their input.
    pub elided: Vec<NodeId>,
    pub arena_bytes: usize,
    /// The largest sum of sizes (aligned) of arena tensors live at one step of the schedule.
    pub lower_bound_bytes: usize,
    /// The sum of sizes of all arena tensors, as if nothing were reused.
    pub naive_bytes: usize,
    pub alignment: usize,
}

impl MemoryPlan {
    /// The storage a value resolves to after following aliases.
    pub fn resolve(&self, mut v: ValueId) -> Option<&Storage> {
        for _ in 0..self.storage.len() + 1 {
            match self.storage.get(&v)? {
                Storage::Alias(src) => v = *src,
                s => return Some(s),
            }
        }
        None
    }

    /// Byte offset of `v` in the arena, if it lives there.
    pub fn arena_offset(&self, v: ValueId) -> Option<usize> {
        match self.resolve(v) {
            Some(Storage::Arena { offset }) => Some(*offset),
            _ => None,
        }
    }
}

fn align_up(n: usize, a: usize) -> usize {
    n.div_ceil(a) * a
}

/// True for ops whose output is their first input's bytes under another shape. A Dropout
/// with its mask output is not: its kernel must run to write the mask.
fn is_alias_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. } | Op::Identity | Op::Dropout { mask: false }
    )
}

/// True for ops that may write their output over a dying input of the same size: each output
/// element depends only on the input element at the same index.
fn may_work_in_place(graph: &Graph, node: NodeId, input: ValueId) -> bool {
    let n = graph.node(node);
    // The integer element-wise ops (Requantize, QTable, QAdd, QMul) read element i before
    // writing element i, as the float ones do.
    let elementwise = (matches!(n.op.family(), OpFamily::Unary | OpFamily::Binary)
        && !matches!(n.op, Op::Cast { .. } | Op::Dropout { .. }))
        || matches!(
            n.op,
            Op::Requantize { .. } | Op::QTable | Op::QAdd { .. } | Op::QMul { .. }
        );
    let Some(&out) = n.outputs.first() else {
        return false;
    };
    let (i, o) = (&graph.value(input).ty, &graph.value(out).ty);
    elementwise
        && n.outputs.len() == 1
        && i.shape == o.shape
        && i.dtype.size_bytes() == o.dtype.size_bytes()
}

/// A set of values sharing one arena buffer, with the schedule steps it is live.
#[derive(Debug)]
struct Group {
    bytes: usize,
    first: usize,
    last: usize,
    members: Vec<ValueId>,
}

/// Plans memory for the best of a few schedules: the graph's own topological order, a greedy
/// order that runs whichever ready node frees the most (allocates the least) memory, and a
/// depth-first order that finishes one branch (of a residual block, say) before starting the
/// next. The smallest arena wins; ties keep the earlier candidate, so plans are deterministic.
pub fn plan_memory(graph: &Graph, alignment: usize) -> Result<MemoryPlan, IrError> {
    let base = graph.topo_order()?;
    let mut candidates = vec![base.clone()];
    for order in [
        greedy_memory_order(graph, &base),
        depth_first_order(graph, &base),
    ] {
        if !candidates.contains(&order) {
            candidates.push(order);
        }
    }
    let mut best: Option<MemoryPlan> = None;
    for schedule in candidates {
        let plan = plan_with_schedule(graph, schedule, alignment);
        if best
            .as_ref()
            .is_none_or(|b| plan.arena_bytes < b.arena_bytes)
        {
            best = Some(plan);
        }
    }
    best.ok_or_else(|| IrError::Verify(vec!["internal: no schedule".into()]))
}

/// Bytes a value takes in the arena if it is a node result (graph inputs and constants live
/// elsewhere).
fn node_result_bytes(graph: &Graph, v: ValueId) -> usize {
    match graph.value(v).def {
        ValueDef::Node { .. } => graph.value(v).ty.size_bytes(),
        _ => 0,
    }
}

/// A topological order built one ready node at a time, choosing by `pick` among the ready
/// nodes (given in id order) and the values consumed so far.
fn build_order(
    graph: &Graph,
    base: &[NodeId],
    mut pick: impl FnMut(&[NodeId], &HashMap<ValueId, usize>, &[NodeId]) -> usize,
) -> Vec<NodeId> {
    let mut waiting: HashMap<NodeId, usize> = HashMap::new();
    let producer = |v: ValueId| match graph.value(v).def {
        ValueDef::Node { node, .. } => Some(node),
        _ => None,
    };
    for &n in base {
        let deps: std::collections::BTreeSet<NodeId> = graph
            .node(n)
            .inputs
            .iter()
            .filter_map(|&v| producer(v))
            .collect();
        waiting.insert(n, deps.len());
    }
    let mut remaining_uses: HashMap<ValueId, usize> = HashMap::new();
    for &n in base {
        for &v in &graph.node(n).inputs {
            *remaining_uses.entry(v).or_insert(0) += 1;
        }
    }
    let mut ready: Vec<NodeId> = base.iter().copied().filter(|n| waiting[n] == 0).collect();
    let mut order = Vec::with_capacity(base.len());
    while !ready.is_empty() {
        ready.sort();
        let i = pick(&ready, &remaining_uses, &order).min(ready.len() - 1);
        let n = ready.remove(i);
        order.push(n);
        for &v in &graph.node(n).inputs {
            if let Some(u) = remaining_uses.get_mut(&v) {
                *u = u.saturating_sub(1);
            }
        }
        let mut released: std::collections::BTreeSet<NodeId> = std::collections::BTreeSet::new();
        for &out in &graph.node(n).outputs {
            for (c, _) in graph.consumers(out) {
                released.insert(c);
            }
        }
        for c in released {
            if let Some(w) = waiting.get_mut(&c) {
                *w -= 1;
                if *w == 0 {
                    ready.push(c);
                }
            }
        }
    }
    if order.len() == base.len() {
        order
    } else {
        base.to_vec()
    }
}

/// Runs next the ready node whose outputs minus the inputs it frees is smallest.
fn greedy_memory_order(graph: &Graph, base: &[NodeId]) -> Vec<NodeId> {
    build_order(graph, base, |ready, uses, _| {
        let delta = |n: NodeId| -> i64 {
            let node = graph.node(n);
            let alloc: usize = node
                .outputs
                .iter()
                .map(|&v| node_result_bytes(graph, v))
                .sum();
            let mut inputs = node.inputs.clone();
            inputs.sort();
            inputs.dedup();
            let freed: usize = inputs
                .iter()
                .filter(|&&v| {
                    uses.get(&v) == Some(&node.inputs.iter().filter(|&&i| i == v).count())
                })
                .map(|&v| node_result_bytes(graph, v))
                .sum();
            alloc as i64 - freed as i64
        };
        (0..ready.len())
            .min_by_key(|&i| (delta(ready[i]), i))
            .unwrap_or(0)
    })
}

/// Runs next the ready node that reads the most recently computed value, so one branch is
/// finished before the next starts.
fn depth_first_order(graph: &Graph, base: &[NodeId]) -> Vec<NodeId> {
    build_order(graph, base, |ready, _, done| {
        let recency = |n: NodeId| -> usize {
            graph
                .node(n)
                .inputs
                .iter()
                .filter_map(|&v| match graph.value(v).def {
                    ValueDef::Node { node, .. } => {
                        done.iter().position(|&d| d == node).map(|p| p + 1)
                    }
                    _ => None,
                })
                .max()
                .unwrap_or(0)
        };
        (0..ready.len())
            .max_by_key(|&i| (recency(ready[i]), std::cmp::Reverse(i)))
            .unwrap_or(0)
    })
}

fn plan_with_schedule(graph: &Graph, schedule: Vec<NodeId>, alignment: usize) -> MemoryPlan {
    let mut storage: HashMap<ValueId, Storage> = HashMap::new();
    for (i, &v) in graph.inputs().iter().enumerate() {
        storage.insert(v, Storage::Input(i));
    }
    let mut output_taken = vec![false; graph.outputs().len()];
    let mut elided = Vec::new();
    // Storage roots: each arena value and what aliases it.
    for &n in &schedule {
        let node = graph.node(n);
        for (slot, &v) in node.outputs.iter().enumerate() {
            if let Some(pos) = graph.outputs().iter().position(|&o| o == v) {
                if !output_taken[pos] {
                    output_taken[pos] = true;
                    storage.insert(v, Storage::Output(pos));
                    continue;
                }
            }
            if slot == 0 && is_alias_op(&node.op) {
                storage.insert(v, Storage::Alias(node.inputs[0]));
                elided.push(n);
                continue;
            }
            storage.insert(v, Storage::Arena { offset: 0 });
        }
        for &v in &node.inputs {
            if let ValueDef::Const(_) = graph.value(v).def {
                storage.insert(v, Storage::Const);
            }
        }
    }
    // Lifetimes: a value is live from its producer's step to its last reader's step, where
    // readers of aliases count as readers of the aliased value.
    let root = |storage: &HashMap<ValueId, Storage>, mut v: ValueId| -> ValueId {
        while let Some(Storage::Alias(src)) = storage.get(&v) {
            v = *src;
        }
        v
    };
    let mut last_use: HashMap<ValueId, usize> = HashMap::new();
    for (step, &n) in schedule.iter().enumerate() {
        if elided.contains(&n) {
            continue;
        }
        for &v in &graph.node(n).inputs {
            let r = root(&storage, v);
            let e = last_use.entry(r).or_insert(step);
            *e = (*e).max(step);
        }
    }
    // Graph outputs that alias an arena value must be copied out at the end: keep it live.
    let end = schedule.len();
    for &v in graph.outputs() {
        let r = root(&storage, v);
        if matches!(storage.get(&r), Some(Storage::Arena { .. })) {
            last_use.insert(r, end);
        }
    }
    // Groups: one per arena value, merged when a node works in place over a dying input.
    let mut group_of: HashMap<ValueId, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for (step, &n) in schedule.iter().enumerate() {
        let node = graph.node(n);
        for &v in &node.outputs {
            if !matches!(storage.get(&v), Some(Storage::Arena { .. })) {
                continue;
            }
            let bytes = align_up(graph.value(v).ty.size_bytes().max(1), alignment);
            let last = last_use.get(&v).copied().unwrap_or(step);
            // The input as the node sees it decides safety (same shape: the kernel reads it at
            // the output's own index); its storage root decides which buffer is reused.
            let in_place = node
                .inputs
                .iter()
                .filter(|&&i| may_work_in_place(graph, n, i))
                .map(|&i| root(&storage, i))
                .find(|&r| {
                    group_of
                        .get(&r)
                        .is_some_and(|&g| groups[g].last == step && groups[g].bytes == bytes)
                        && last_use.get(&r) == Some(&step)
                });
            match in_place.and_then(|i| group_of.get(&i).copied()) {
                Some(g) => {
                    groups[g].last = last.max(step);
                    groups[g].members.push(v);
                    group_of.insert(v, g);
                }
                None => {
                    groups.push(Group {
                        bytes,
                        first: step,
                        last,
                        members: vec![v],
                    });
                    group_of.insert(v, groups.len() - 1);
                }
            }
        }
    }
    let lower_bound_bytes = (0..=end)
        .map(|s| {
            groups
                .iter()
                .filter(|g| g.first <= s && s <= g.last)
                .map(|g| g.bytes)
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    let naive_bytes = groups
        .iter()
        .flat_map(|g| g.members.iter())
        .map(|&v| align_up(graph.value(v).ty.size_bytes().max(1), alignment))
        .sum();
    // Several greedy placements (different orders, first fit or best fit); keep the smallest.
    // Each is deterministic, and so is the choice (first minimum wins).
    let mut best: Option<(usize, Vec<usize>)> = None;
    for order in placement_orders(&groups) {
        for best_fit in [false, true] {
            let (size, offsets) = place(&groups, &order, best_fit);
            if best.as_ref().is_none_or(|(b, _)| size < *b) {
                best = Some((size, offsets));
            }
        }
    }
    let (arena_bytes, offsets) = best.unwrap_or_default();
    for (g, group) in groups.iter().enumerate() {
        for &v in &group.members {
            storage.insert(
                v,
                Storage::Arena {
                    offset: offsets.get(g).copied().unwrap_or(0),
                },
            );
        }
    }
    MemoryPlan {
        schedule,
        storage,
        elided,
        arena_bytes,
        lower_bound_bytes,
        naive_bytes,
        alignment,
    }
}

fn overlaps(a: &Group, b: &Group) -> bool {
    a.first <= b.last && b.first <= a.last
}

/// Candidate orders in which to place groups: by size (the classic greedy-by-size), by size
/// times lifetime, and by first use. Ties break by first use and value id.
fn placement_orders(groups: &[Group]) -> Vec<Vec<usize>> {
    let key = |g: &Group| (g.first, g.members[0]);
    let mut by_size: Vec<usize> = (0..groups.len()).collect();
    by_size.sort_by_key(|&g| (std::cmp::Reverse(groups[g].bytes), key(&groups[g])));
    let mut by_area: Vec<usize> = (0..groups.len()).collect();
    by_area.sort_by_key(|&g| {
        let span = groups[g].last - groups[g].first + 1;
        (std::cmp::Reverse(groups[g].bytes * span), key(&groups[g]))
    });
    let mut by_start: Vec<usize> = (0..groups.len()).collect();
    by_start.sort_by_key(|&g| {
        (
            groups[g].first,
            std::cmp::Reverse(groups[g].bytes),
            groups[g].members[0],
        )
    });
    let mut by_span: Vec<usize> = (0..groups.len()).collect();
    by_span.sort_by_key(|&g| {
        (
            std::cmp::Reverse(groups[g].last - groups[g].first),
            std::cmp::Reverse(groups[g].bytes),
            key(&groups[g]),
        )
    });
    let mut orders = vec![by_size, by_area, by_start, by_span];
    // Seeded shuffles of the size order within runs of equal size: many graphs have dozens of
    // same-sized tensors, and the tie order decides whether they pack into the bound. The seed
    // is fixed, so the plan stays deterministic.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..RESTARTS {
        let mut order = orders[0].clone();
        let mut i = 0;
        while i < order.len() {
            let j = (i..order.len())
                .find(|&j| groups[order[j]].bytes != groups[order[i]].bytes)
                .unwrap_or(order.len());
            for k in (i + 1..j).rev() {
                let r = i + (next() % (k - i + 1) as u64) as usize;
                order.swap(k, r);
            }
            i = j;
        }
        orders.push(order);
    }
    orders
}

/// Extra shuffled placement orders tried per plan.
const RESTARTS: usize = 24;

/// Places groups in `order`, each at the lowest free offset (first fit) or in the smallest gap
/// that holds it (best fit) among the groups already placed whose lifetimes overlap it.
/// Returns the arena size and each group's offset.
fn place(groups: &[Group], order: &[usize], best_fit: bool) -> (usize, Vec<usize>) {
    let mut offsets: Vec<Option<usize>> = vec![None; groups.len()];
    let mut arena = 0;
    for &g in order {
        let mut busy: Vec<(usize, usize)> = order
            .iter()
            .filter_map(|&h| offsets[h].map(|o| (h, o)))
            .filter(|&(h, _)| overlaps(&groups[g], &groups[h]))
            .map(|(h, o)| (o, o + groups[h].bytes))
            .collect();
        busy.sort();
        let need = groups[g].bytes;
        // Gaps between busy ranges, then the open end.
        let mut gaps: Vec<(usize, usize)> = Vec::new();
        let mut cursor = 0;
        for (start, stop) in busy {
            if start > cursor {
                gaps.push((cursor, start - cursor));
            }
            cursor = cursor.max(stop);
        }
        let fitting = gaps.iter().filter(|&&(_, len)| len >= need);
        let chosen = if best_fit {
            fitting
                .min_by_key(|&&(start, len)| (len, start))
                .map(|&(start, _)| start)
        } else {
            fitting.map(|&(start, _)| start).next()
        };
        let offset = chosen.unwrap_or(cursor);
        offsets[g] = Some(offset);
        arena = arena.max(offset + need);
    }
    (arena, offsets.into_iter().map(|o| o.unwrap_or(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{DType, Tensor, TensorType};

    /// x -> relu -> reshape -> sigmoid -> add(x_relu_reshaped, sigmoid) -> out
    fn chain() -> Graph {
        let mut g = Graph::new("chain");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![4, 8]));
        let r = g.add_node("relu", Op::Relu, vec![x], vec![]).unwrap();
        let r = g.node(r).outputs[0];
        let s = g
            .add_node("flat", Op::Reshape { shape: vec![32] }, vec![r], vec![])
            .unwrap();
        let s = g.node(s).outputs[0];
        let t = g.add_node("tanh", Op::Tanh, vec![s], vec![]).unwrap();
        let t = g.node(t).outputs[0];
        let e = g.add_node("exp", Op::Exp, vec![t], vec![]).unwrap();
        let e = g.node(e).outputs[0];
        let b = g.add_const("b", Tensor::from_f32(vec![32], vec![1.0; 32]).unwrap());
        let y = g
            .add_node(
                "add",
                Op::Add {
                    activation: Default::default(),
                },
                vec![e, b],
                vec![],
            )
            .unwrap();
        let y = g.node(y).outputs[0];
        g.set_outputs(vec![y]);
        g
    }

    #[test]
    fn reshape_is_an_alias_and_elementwise_ops_work_in_place() {
        let g = chain();
        let plan = plan_memory(&g, 16).unwrap();
        let order = &plan.schedule;
        let relu_out = g.node(order[0]).outputs[0];
        let flat = order[1];
        let tanh_out = g.node(order[2]).outputs[0];
        let exp_out = g.node(order[3]).outputs[0];
        assert_eq!(plan.elided, vec![flat]);
        assert_eq!(
            plan.storage[&g.node(flat).outputs[0]],
            Storage::Alias(relu_out)
        );
        // relu's output dies in tanh (through the alias), tanh's in exp: one buffer for all.
        assert_eq!(plan.arena_offset(relu_out), Some(0));
        assert_eq!(plan.arena_offset(tanh_out), Some(0));
        assert_eq!(plan.arena_offset(exp_out), Some(0));
        assert_eq!(plan.arena_bytes, 128);
        assert_eq!(plan.lower_bound_bytes, 128);
        assert_eq!(plan.naive_bytes, 3 * 128);
        assert_eq!(plan.resolve(g.outputs()[0]), Some(&Storage::Output(0)));
    }

    #[test]
    fn live_tensors_never_overlap() {
        // Two branches from x both live until the final add.
        let mut g = Graph::new("branches");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![16]));
        let a = g.add_node("a", Op::Relu, vec![x], vec![]).unwrap();
        let a = g.node(a).outputs[0];
        let b = g.add_node("b", Op::Sigmoid, vec![x], vec![]).unwrap();
        let b = g.node(b).outputs[0];
        let c = g.add_node("c", Op::Tanh, vec![b], vec![]).unwrap();
        let c = g.node(c).outputs[0];
        let y = g
            .add_node(
                "y",
                Op::Add {
                    activation: Default::default(),
                },
                vec![a, c],
                vec![],
            )
            .unwrap();
        let y = g.node(y).outputs[0];
        g.set_outputs(vec![y]);
        let plan = plan_memory(&g, 16).unwrap();
        let (oa, oc) = (plan.arena_offset(a).unwrap(), plan.arena_offset(c).unwrap());
        assert!(oa.abs_diff(oc) >= 64, "a and c are live together");
        assert_eq!(plan.arena_bytes, plan.lower_bound_bytes);
    }

    #[test]
    fn schedule_finishes_a_branch_before_starting_the_next() {
        // Nodes are created so that id order runs both big producers first.
        let mut g = Graph::new("branches");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 4, 8, 8]));
        let big = |g: &mut Graph, name: &str| {
            let w = g.add_const(
                format!("{name}.w"),
                Tensor::from_f32(vec![16, 4, 1, 1], vec![0.5; 64]).unwrap(),
            );
            let conv = Op::Conv {
                kernel_shape: vec![1, 1],
                strides: vec![1, 1],
                dilations: vec![1, 1],
                pads: vec![0; 4],
                group: 1,
                activation: Default::default(),
            };
            let n = g.add_node(name, conv, vec![x, w], vec![]).unwrap();
            g.node(n).outputs[0]
        };
        let a1 = big(&mut g, "a1");
        let b1 = big(&mut g, "b1");
        let small = |g: &mut Graph, name: &str, v| {
            let n = g
                .add_node(name, Op::GlobalAveragePool, vec![v], vec![])
                .unwrap();
            g.node(n).outputs[0]
        };
        let a2 = small(&mut g, "a2", a1);
        let b2 = small(&mut g, "b2", b1);
        let y = g
            .add_node(
                "y",
                Op::Add {
                    activation: Default::default(),
                },
                vec![a2, b2],
                vec![],
            )
            .unwrap();
        let y = g.node(y).outputs[0];
        g.set_outputs(vec![y]);
        let plan = plan_memory(&g, 16).unwrap();
        // One 4 KiB conv output live at a time, plus the pooled results.
        assert_eq!(plan.arena_bytes, 4096 + 64 + 64, "{:?}", plan.schedule);
        let by_id = plan_with_schedule(&g, g.topo_order().unwrap(), 16);
        assert!(by_id.arena_bytes >= 2 * 4096);
    }
}
