//! `Writer`, the ONNX graph under construction: unique value and node names, the nodes in
//! order, and the initializers (each IR constant written once, the first time a node reads it).

use std::collections::{BTreeMap, BTreeSet};

use kiln_ir::{Graph, Tensor, ValueDef, ValueId};
use onnx_protobuf::{AttributeProto, NodeProto, TensorProto};

use super::proto::tensor_proto;
use super::ExportError;

/// The model being written: unique names, nodes and initializers.
pub(super) struct Writer<'g> {
    pub(super) g: &'g Graph,
    /// The ONNX name of every IR value named so far.
    pub(super) names: BTreeMap<ValueId, String>,
    used: BTreeSet<String>,
    pub(super) nodes: Vec<NodeProto>,
    pub(super) initializers: Vec<TensorProto>,
    written_consts: BTreeSet<ValueId>,
}

impl<'g> Writer<'g> {
    /// An empty model for the nodes of `g`.
    pub(super) fn new(g: &'g Graph) -> Self {
        Writer {
            g,
            names: BTreeMap::new(),
            used: BTreeSet::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            written_consts: BTreeSet::new(),
        }
    }

    pub(super) fn unique(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "kiln" } else { base };
        let mut name = base.to_string();
        let mut i = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.used.insert(name.clone());
        name
    }

    pub(super) fn name_value(&mut self, v: ValueId) {
        if self.names.contains_key(&v) {
            return;
        }
        let base = self.g.value(v).name.clone();
        let base = if base.is_empty() {
            format!("v{}", v.index())
        } else {
            base
        };
        let n = self.unique(&base);
        self.names.insert(v, n);
    }

    /// The name of `v`, writing it as an initializer the first time a constant is read.
    pub(super) fn input(&mut self, v: ValueId) -> String {
        self.name_value(v);
        let name = self.names[&v].clone();
        if let ValueDef::Const(t) = &self.g.value(v).def {
            if self.written_consts.insert(v) {
                self.initializers.push(tensor_proto(&name, t));
            }
        }
        name
    }

    /// A new initializer for an attribute ONNX takes as an input.
    pub(super) fn constant(&mut self, base: &str, t: &Tensor) -> String {
        let name = self.unique(base);
        self.initializers.push(tensor_proto(&name, t));
        name
    }

    pub(super) fn i64s(&mut self, base: &str, v: &[i64]) -> Result<String, ExportError> {
        let t = Tensor::from_i64(vec![v.len()], v.to_vec())
            .map_err(|e| ExportError::Graph(e.to_string()))?;
        Ok(self.constant(base, &t))
    }

    pub(super) fn f32_scalar(&mut self, base: &str, v: f32) -> String {
        self.constant(base, &Tensor::scalar_f32(v))
    }

    pub(super) fn push(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        let name = self.unique_node_name(name);
        self.nodes.push(NodeProto {
            name,
            op_type: op_type.into(),
            input: inputs,
            output: outputs,
            attribute,
            ..Default::default()
        });
    }

    fn unique_node_name(&self, name: &str) -> String {
        let taken = |n: &str| self.nodes.iter().any(|x| x.name == n);
        if !taken(name) {
            return name.to_string();
        }
        (1..)
            .map(|i| format!("{name}_{i}"))
            .find(|n| !taken(n))
            .unwrap_or_default()
    }
}
