//! The graph IR: values (graph inputs, constants, node results) and the nodes that compute them.
//!
//! Nodes live in a `petgraph` stable graph whose edges run from producer to consumer, so that
//! dependency queries (topological order, cycles) are graph algorithms; values live in a flat
//! table indexed by [`ValueId`]. Neither petgraph type leaks out of this module.

use crate::fixed_point::Rounding;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use petgraph::Direction;

use crate::error::{IrError, OpError};
use crate::op::Op;
use crate::ops;
use crate::tensor::{Tensor, TensorType};

/// Identifies a value (a tensor flowing through the graph). Printed as `%N`, or `@N` for constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Identifies a node. Ids are never reused, and ties in topological order are broken by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }

    fn from_petgraph(ix: NodeIndex) -> Self {
        NodeId(ix.index() as u32)
    }

    fn to_petgraph(self) -> NodeIndex {
        NodeIndex::new(self.index())
    }
}

/// Quantization parameters of an integer tensor: `real = scale * (q - zero_point)`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantParams {
    /// One entry per tensor (per-tensor) or one per slice along `axis` (per-axis).
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
    pub axis: Option<usize>,
}

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueDef {
    /// The graph input at this position.
    Input(usize),
    /// A constant (weights); shared, stored once.
    Const(Arc<Tensor>),
    /// Output `slot` of `node`.
    Node { node: NodeId, slot: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// The name the model gave it (ONNX tensor name); may be empty.
    pub name: String,
    pub ty: TensorType,
    pub def: ValueDef,
    pub quant: Option<QuantParams>,
}

impl Value {
    pub fn is_const(&self) -> bool {
        matches!(self.def, ValueDef::Const(_))
    }

    pub fn const_tensor(&self) -> Option<&Arc<Tensor>> {
        match &self.def {
            ValueDef::Const(t) => Some(t),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The name the model gave the node; used in every diagnostic.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

#[derive(Clone, Debug)]
pub struct Graph {
    name: String,
    /// Edge weight: the consumer's input slot.
    dag: StableDiGraph<Node, usize>,
    values: Vec<Value>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    /// How the integer ops of this model round (the model's own reference decides).
    rounding: Rounding,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            dag: StableDiGraph::new(),
            values: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            rounding: Rounding::default(),
        }
    }

    /// The rounding convention of the graph's integer ops (lowerings read it; see
    /// [`Rounding`]).
    pub fn rounding(&self) -> Rounding {
        self.rounding
    }

    pub fn set_rounding(&mut self, rounding: Rounding) {
        self.rounding = rounding;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn push_value(&mut self, value: Value) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(value);
        id
    }

    /// Appends a graph input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let position = self.inputs.len();
        let id = self.push_value(Value {
            name: name.into(),
            ty,
            def: ValueDef::Input(position),
            quant: None,
        });
        self.inputs.push(id);
        id
    }

    /// Adds a constant value.
    pub fn add_const(
        &mut self,
        name: impl Into<String>,
        tensor: impl Into<Arc<Tensor>>,
    ) -> ValueId {
        let tensor = tensor.into();
        self.push_value(Value {
            name: name.into(),
            ty: tensor.ty(),
            def: ValueDef::Const(tensor),
            quant: None,
        })
    }

    /// Adds a node, inferring the types of its outputs. `output_names` may be shorter than the
    /// op's output count; missing names are empty.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<ValueId>,
        output_names: Vec<String>,
    ) -> Result<NodeId, IrError> {
        let name = name.into();
        let in_types: Vec<&TensorType> =
            inputs.iter().map(|&v| &self.values[v.index()].ty).collect();
        let out_types = ops::infer(&op, &in_types).map_err(|source| IrError::Node {
            node: name.clone(),
            op: op.name().to_string(),
            source,
        })?;
        let ix = self.dag.add_node(Node {
            name,
            op,
            inputs: inputs.clone(),
            outputs: Vec::new(),
        });
        let node = NodeId::from_petgraph(ix);
        let mut names = output_names.into_iter();
        let outputs: Vec<ValueId> = out_types
            .into_iter()
            .enumerate()
            .map(|(slot, ty)| {
                self.push_value(Value {
                    name: names.next().unwrap_or_default(),
                    ty,
                    def: ValueDef::Node { node, slot },
                    quant: None,
                })
            })
            .collect();
        self.dag[ix].outputs = outputs;
        for (slot, v) in inputs.iter().enumerate() {
            if let ValueDef::Node { node: producer, .. } = self.values[v.index()].def {
                self.dag.add_edge(producer.to_petgraph(), ix, slot);
            }
        }
        Ok(node)
    }

    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) {
        self.outputs = outputs;
    }

    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.index()]
    }

    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.index()]
    }

    /// Every value id ever created, in creation order.
    pub fn value_ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        (0..self.values.len() as u32).map(ValueId)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id.to_petgraph()]
    }

    pub fn node_mut_op(&mut self, id: NodeId) -> &mut Op {
        &mut self.dag[id.to_petgraph()].op
    }

    pub fn contains_node(&self, id: NodeId) -> bool {
        self.dag.contains_node(id.to_petgraph())
    }

    pub fn node_count(&self) -> usize {
        self.dag.node_count()
    }

    /// Node ids in ascending id order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.dag.node_indices().map(NodeId::from_petgraph).collect();
        ids.sort();
        ids
    }

    /// Nodes that read `value`, with the input slot, in (node, slot) order.
    pub fn consumers(&self, value: ValueId) -> Vec<(NodeId, usize)> {
        let mut uses: Vec<(NodeId, usize)> = self
            .dag
            .node_indices()
            .flat_map(|ix| {
                self.dag[ix]
                    .inputs
                    .iter()
                    .enumerate()
                    .filter(move |(_, &v)| v == value)
                    .map(move |(slot, _)| (NodeId::from_petgraph(ix), slot))
            })
            .collect();
        uses.sort();
        uses
    }

    /// Points input `slot` of `node` at `value`, keeping the dependency edges in step.
    pub fn set_node_input(&mut self, node: NodeId, slot: usize, value: ValueId) {
        let ix = node.to_petgraph();
        let stale: Vec<_> = self
            .dag
            .edges_directed(ix, Direction::Incoming)
            .filter(|e| *e.weight() == slot)
            .map(|e| e.id())
            .collect();
        for e in stale {
            self.dag.remove_edge(e);
        }
        self.dag[ix].inputs[slot] = value;
        if let ValueDef::Node { node: producer, .. } = self.values[value.index()].def {
            self.dag.add_edge(producer.to_petgraph(), ix, slot);
        }
    }

    /// Replaces every input list of `node` at once, keeping the dependency edges in step.
    pub fn set_node_inputs(&mut self, node: NodeId, inputs: Vec<ValueId>) {
        let ix = node.to_petgraph();
        let stale: Vec<_> = self
            .dag
            .edges_directed(ix, Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for e in stale {
            self.dag.remove_edge(e);
        }
        for (slot, v) in inputs.iter().enumerate() {
            if let ValueDef::Node { node: producer, .. } = self.values[v.index()].def {
                self.dag.add_edge(producer.to_petgraph(), ix, slot);
            }
        }
        self.dag[ix].inputs = inputs;
    }

    /// Points every use of `old` (node inputs and graph outputs) at `new`.
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) {
        for (node, slot) in self.consumers(old) {
            self.set_node_input(node, slot, new);
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Re-runs shape inference for `node` and stores the resulting output types.
    pub fn refresh_types(&mut self, node: NodeId) -> Result<(), OpError> {
        let types = self.infer_node(node)?;
        let outs = self.node(node).outputs.clone();
        if types.len() != outs.len() {
            return Err(OpError::Invalid(format!(
                "shape inference gives {} outputs, the node has {}",
                types.len(),
                outs.len()
            )));
        }
        for (v, ty) in outs.into_iter().zip(types) {
            self.values[v.index()].ty = ty;
        }
        Ok(())
    }

    /// Replaces the op of `node` and re-infers its output types.
    pub fn set_node_op(&mut self, node: NodeId, op: Op) -> Result<(), OpError> {
        self.dag[node.to_petgraph()].op = op;
        self.refresh_types(node)
    }

    /// Whether `value` is a graph output.
    pub fn is_output(&self, value: ValueId) -> bool {
        self.outputs.contains(&value)
    }

    /// Drops the data of a constant nothing uses any more (its id stays valid, as an empty
    /// tensor of the same dtype), so unused initializers take no memory.
    pub fn release_const(&mut self, value: ValueId) {
        let v = &mut self.values[value.index()];
        if let ValueDef::Const(t) = &v.def {
            let empty = Tensor::zeros(&TensorType::new(t.dtype(), vec![0]));
            v.ty = empty.ty();
            v.def = ValueDef::Const(Arc::new(empty));
        }
    }

    /// Removes a node whose results nothing reads any more (see [`Graph::remove_nodes`]).
    pub fn remove_node(&mut self, node: NodeId) -> Result<(), IrError> {
        self.remove_nodes(&[node])
    }

    /// Removes a set of nodes, refusing (and changing nothing) if any of their results is still
    /// read by a node outside the set or is a graph output. Results that a rewrite has already
    /// turned into constants no longer belong to their node and are not checked. Their value
    /// ids stay in the table, orphaned.
    ///
    /// Every pass deletes nodes through here, so a rewrite that forgot a reader fails with an
    /// error naming the node and the reader instead of leaving a graph that reads an undefined
    /// value.
    pub fn remove_nodes(&mut self, nodes: &[NodeId]) -> Result<(), IrError> {
        self.check_removable(nodes)?;
        for &n in nodes {
            self.dag.remove_node(n.to_petgraph());
        }
        Ok(())
    }

    /// Whether [`Graph::remove_nodes`] would accept `nodes`: the first result still read from
    /// outside the set, as an error.
    pub fn check_removable(&self, nodes: &[NodeId]) -> Result<(), IrError> {
        for &n in nodes {
            if !self.contains_node(n) {
                continue;
            }
            let node = self.node(n);
            for &v in &node.outputs {
                if !matches!(self.value(v).def, ValueDef::Node { node: p, .. } if p == n) {
                    continue;
                }
                let reader = if self.is_output(v) {
                    Some("the graph outputs".to_string())
                } else {
                    self.consumers(v)
                        .into_iter()
                        .find(|(c, _)| !nodes.contains(c))
                        .map(|(c, _)| format!("node '{}'", self.node(c).name))
                };
                if let Some(reader) = reader {
                    return Err(IrError::StillRead {
                        node: node.name.clone(),
                        op: node.op.name().to_string(),
                        value: self.value(v).name.clone(),
                        reader,
                    });
                }
            }
        }
        Ok(())
    }

    /// Nodes in a topological order; among ready nodes the lowest id goes first, so the order is
    /// deterministic and follows the model's own order where it can.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, IrError> {
        let mut indegree: Vec<usize> = vec![0; self.dag.node_bound()];
        for ix in self.dag.node_indices() {
            indegree[ix.index()] = self.dag.edges_directed(ix, Direction::Incoming).count();
        }
        let mut ready: BinaryHeap<Reverse<usize>> = self
            .dag
            .node_indices()
            .filter(|ix| indegree[ix.index()] == 0)
            .map(|ix| Reverse(ix.index()))
            .collect();
        let mut order = Vec::with_capacity(self.dag.node_count());
        while let Some(Reverse(i)) = ready.pop() {
            let ix = NodeIndex::new(i);
            order.push(NodeId::from_petgraph(ix));
            for e in self.dag.edges_directed(ix, Direction::Outgoing) {
                let t = e.target().index();
                indegree[t] -= 1;
                if indegree[t] == 0 {
                    ready.push(Reverse(t));
                }
            }
        }
        if order.len() != self.dag.node_count() {
            let stuck = self
                .dag
                .node_indices()
                .find(|ix| indegree[ix.index()] > 0)
                .map(|ix| self.dag[ix].name.clone())
                .unwrap_or_default();
            return Err(IrError::Cycle { node: stuck });
        }
        Ok(order)
    }

    /// Re-runs shape inference for one node against its current inputs.
    pub fn infer_node(&self, id: NodeId) -> Result<Vec<TensorType>, OpError> {
        let node = self.node(id);
        let in_types: Vec<&TensorType> = node.inputs.iter().map(|&v| &self.value(v).ty).collect();
        ops::infer(&node.op, &in_types)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn small_graph() -> (Graph, NodeId, NodeId) {
        let mut g = Graph::new("small");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 4]));
        let w = g.add_const(
            "w",
            Tensor::from_f32(vec![4], vec![1.0, -2.0, 3.0, -4.0]).unwrap(),
        );
        let relu = g
            .add_node("relu0", Op::Relu, vec![x], vec!["r".into()])
            .unwrap();
        let r = g.node(relu).outputs[0];
        let add = g
            .add_node(
                "add0",
                Op::Add {
                    activation: Default::default(),
                },
                vec![r, w],
                vec!["y".into()],
            )
            .unwrap();
        let y = g.node(add).outputs[0];
        g.set_outputs(vec![y]);
        (g, relu, add)
    }

    #[test]
    fn builds_types_and_order() {
        let (g, relu, add) = small_graph();
        assert_eq!(g.topo_order().unwrap(), vec![relu, add]);
        let y = g.outputs()[0];
        assert_eq!(g.value(y).ty, TensorType::new(DType::F32, vec![1, 4]));
        assert_eq!(g.consumers(g.node(relu).outputs[0]), vec![(add, 0)]);
        crate::verify::verify(&g).unwrap();
    }

    #[test]
    fn text_dump_format() {
        let (g, _, _) = small_graph();
        insta::assert_snapshot!(crate::dump::to_text(&g), @r#"
        graph "small" {
          %0 = input "x": f32[1,4]
          @1 = const "w": f32[4] = [1.0,-2.0,3.0,-4.0]
          %2:f32[1,4] = relu(%0)  # "relu0"
          %3:f32[1,4] = add(%2, @1)  # "add0"
          return %3 "y"
        }
        "#);
    }

    #[test]
    fn interpreter_runs_it() {
        let (g, _, _) = small_graph();
        let x = Tensor::from_f32(vec![1, 4], vec![-1.0, 1.0, -1.0, 1.0]).unwrap();
        let y = crate::interp::run(&g, &[x]).unwrap();
        assert_eq!(y[0].as_f32().unwrap(), &[1.0, -1.0, 3.0, -3.0]);
    }

    #[test]
    fn verifier_collects_every_problem() {
        let (mut g, relu, add) = small_graph();
        // Rewire relu to read add's output: a cycle, and nothing else is wrong.
        let y = g.node(add).outputs[0];
        g.set_node_input(relu, 0, y);
        let err = crate::verify::verify(&g).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
        // Now also break a type: a [3] constant into the add.
        let c = g.add_const("c", Tensor::from_f32(vec![3], vec![0.0; 3]).unwrap());
        g.set_node_input(add, 1, c);
        let err = crate::verify::verify(&g).unwrap_err().to_string();
        assert!(err.contains("cycle") && err.contains("add0"), "{err}");
    }

    #[test]
    fn removed_producer_is_reported() {
        let (mut g, relu, add) = small_graph();
        // The checked removal refuses: add0 still reads relu0's result.
        let err = g.remove_node(relu).unwrap_err().to_string();
        assert!(err.contains("still read by node 'add0'"), "{err}");
        assert!(g.contains_node(relu));
        // Removing both together is fine only if add0's result is not a graph output.
        let err = g.remove_nodes(&[relu, add]).unwrap_err().to_string();
        assert!(err.contains("still read by the graph outputs"), "{err}");
        // Forced past the check, the verifier reports the dangling read.
        g.dag.remove_node(relu.to_petgraph());
        let err = crate::verify::verify(&g).unwrap_err().to_string();
        assert!(
            err.contains("node 'add0' (Add): input 0 (%2) is not defined"),
            "{err}"
        );
    }
}
