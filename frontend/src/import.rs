//! The importer: ONNX `ModelProto` -> IR graph.
//!
//! Steps: decode, inline model-local functions, order the nodes topologically (refusing cycles),
//! check every op type up front, create constants and inputs, then lower node by node. While it
//! lowers, it tracks which values are known at compile time (constants, and anything computed
//! from constants and static shapes), because ONNX passes shapes, axes and pads as tensors that
//! kiln must resolve to build a static-shape graph.
//!
//! Graph inputs need static shapes: a dimension the file leaves open (symbolic, missing, or
//! written as -1 or 0, see [`declared_dims`]) is an error naming the input and the
//! `--input-shape` to give. Inputs bound in [`ImportOptions::const_inputs`] become constants.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kiln_ir::{Graph, Op, Tensor, TensorType, ValueDef, ValueId};
use onnx_protobuf::{type_proto, GraphProto, ModelProto, NodeProto, ValueInfoProto};
use protobuf::Message;

use crate::error::FrontendError;
use crate::functions::inline_functions;
use crate::ops::{self, InputInfo, LowerError, NodeCtx};
use crate::tensor::{dtype_from_onnx, tensor_from_proto};

/// Known values larger than this are not computed during import: shape arithmetic is tiny, and
/// folding real compute belongs to the constant-folding pass.
const MAX_KNOWN_ELEMENTS: usize = 1 << 16;

/// Options that complete what the model file leaves open.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Static shapes for inputs with symbolic or missing dimensions (`--input-shape`).
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Graph inputs to bind to fixed values, turning them into constants (`--const-input`):
    /// the graph no longer has these inputs. Each must name a graph input, with the element
    /// type and the static dimensions the model declares for it.
    pub const_inputs: HashMap<String, Tensor>,
}

/// An imported model.
#[derive(Debug, Clone)]
pub struct Model {
    pub graph: Graph,
    /// Version of the default ONNX domain.
    pub opset: i64,
    pub producer: String,
}

/// Decodes and imports an ONNX model.
pub fn import_model(bytes: &[u8], options: &ImportOptions) -> Result<Model, FrontendError> {
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| FrontendError::Parse(format!("protobuf decoding failed: {e}")))?;
    import_proto(&model, options)
}

fn default_opset(model: &ModelProto) -> Result<i64, FrontendError> {
    let mut opset = None;
    for o in &model.opset_import {
        match o.domain.as_str() {
            "" | "ai.onnx" => opset = Some(o.version),
            _ => {}
        }
    }
    match opset {
        Some(v) if v >= 1 => Ok(v),
        Some(v) => Err(FrontendError::Parse(format!("invalid opset version {v}"))),
        None if model.graph.is_some() && !model.graph.node.is_empty() => Err(FrontendError::Parse(
            "no opset_import for the default ONNX domain".into(),
        )),
        None => Err(FrontendError::Parse(
            "no graph and no opset_import: the file is not an ONNX model".into(),
        )),
    }
}

pub fn import_proto(model: &ModelProto, options: &ImportOptions) -> Result<Model, FrontendError> {
    let opset = default_opset(model)?;
    let Some(graph_proto) = model.graph.as_ref() else {
        return Err(FrontendError::Parse("the model has no graph".into()));
    };
    let mut nodes = inline_functions(&graph_proto.node, &model.functions)?;
    name_unnamed_nodes(&mut nodes);
    let nodes = topo_sort(&nodes, graph_proto)?;
    let mut importer = Importer {
        graph: Graph::new(graph_proto.name.clone()),
        names: HashMap::new(),
        known: HashMap::new(),
        real_inputs: HashSet::new(),
    };
    // Every problem is collected, so that one run reports all of them (`kiln inspect` is the
    // support check users run before a firmware build).
    let mut errors = unsupported_ops(&nodes);
    let mut tensor_errors = importer.add_initializers(graph_proto, options);
    tensor_errors.extend(importer.add_inputs(graph_proto, options));
    errors.extend(tensor_errors.into_iter().map(|e| name_reader(e, &nodes)));
    // Tensors that failed to import block their consumers (which are not reported again).
    let mut failed: HashSet<String> = graph_proto
        .initializer
        .iter()
        .map(|t| &t.name)
        .chain(graph_proto.input.iter().map(|i| &i.name))
        .filter(|n| !importer.names.contains_key(n.as_str()))
        .cloned()
        .collect();
    for node in &nodes {
        let unsupported_op = errors.iter().any(|e| matches!(e, FrontendError::Unsupported { node: n, op, .. } if *n == node.name && *op == node.op_type));
        // Nodes downstream of a failed node cannot be checked unless the model declares the
        // failed outputs' types (see `stand_in`); the failure upstream explains why.
        let blocked = unsupported_op || node.input.iter().any(|i| failed.contains(i.as_str()));
        let missing = node.input.iter().find(|i| {
            !i.is_empty()
                && !importer.names.contains_key(i.as_str())
                && !failed.contains(i.as_str())
        });
        let result = match (blocked, missing) {
            (true, _) => Err(None),
            (false, Some(name)) => Err(Some(FrontendError::Invalid {
                node: node.name.clone(),
                op: node.op_type.clone(),
                reason: format!(
                    "input '{name}' is not produced by any node, initializer or graph input"
                ),
            })),
            (false, None) => importer.add_node(node, opset).map_err(Some),
        };
        if let Err(e) = result {
            errors.extend(e);
            for output in node.output.iter().filter(|o| !o.is_empty()) {
                if !importer.stand_in(graph_proto, output) {
                    failed.insert(output.clone());
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(if errors.len() == 1 {
            errors.remove(0)
        } else {
            FrontendError::Many(errors)
        });
    }
    importer.set_outputs(graph_proto)?;
    Ok(Model {
        graph: importer.graph,
        opset,
        producer: model.producer_name.clone(),
    })
}

/// Every diagnostic names a node, so unnamed nodes are named after their op and first output,
/// as `Relu:y`.
fn name_unnamed_nodes(nodes: &mut [NodeProto]) {
    for n in nodes.iter_mut().filter(|n| n.name.is_empty()) {
        let output = n.output.first().map(String::as_str).unwrap_or("");
        n.name = format!("{}:{output}", n.op_type);
    }
}

/// Orders nodes so that every tensor is produced before it is used (ONNX requires this order,
/// but not every exporter keeps it). A cycle is an error naming a node on it.
fn topo_sort(nodes: &[NodeProto], g: &GraphProto) -> Result<Vec<NodeProto>, FrontendError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.insert(o.as_str(), i);
        }
    }
    let external: HashSet<&str> = g
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .chain(g.input.iter().map(|i| i.name.as_str()))
        .collect();
    // Iterative DFS with colours; emits nodes in dependency order, stable w.r.t. file order.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark = vec![Mark::New; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    for root in 0..nodes.len() {
        if mark[root] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::Active;
        while let Some(&mut (n, ref mut next_input)) = stack.last_mut() {
            let inputs = &nodes[n].input;
            if *next_input < inputs.len() {
                let name = inputs[*next_input].as_str();
                *next_input += 1;
                if external.contains(name) {
                    continue;
                }
                if let Some(&p) = producer.get(name) {
                    match mark[p] {
                        Mark::New => {
                            mark[p] = Mark::Active;
                            stack.push((p, 0));
                        }
                        Mark::Active => {
                            return Err(FrontendError::Invalid {
                                node: nodes[p].name.clone(),
                                op: nodes[p].op_type.clone(),
                                reason: format!("the graph has a cycle through tensor '{name}'"),
                            })
                        }
                        Mark::Done => {}
                    }
                }
            } else {
                mark[n] = Mark::Done;
                order.push(nodes[n].clone());
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// A graph input or initializer kiln refused (an element type it lacks, a symbolic
/// dimension), with the node that reads it: the nodes downstream are not checked, so this names
/// the node and op the problem stops.
fn name_reader(e: FrontendError, nodes: &[NodeProto]) -> FrontendError {
    let (name, reason, input) = match e {
        FrontendError::Input { name, reason } => (name, reason, true),
        FrontendError::Tensor { name, reason } => (name, reason, false),
        other => return other,
    };
    let readers: Vec<&NodeProto> = nodes.iter().filter(|n| n.input.contains(&name)).collect();
    let reason = match readers.as_slice() {
        [] => reason,
        [n] => format!("{reason} (read by node '{}' ({}))", n.name, n.op_type),
        [n, rest @ ..] => format!(
            "{reason} (read by node '{}' ({}) and {} more)",
            n.name,
            n.op_type,
            rest.len()
        ),
    };
    if input {
        FrontendError::Input { name, reason }
    } else {
        FrontendError::Tensor { name, reason }
    }
}

/// Every node kiln cannot import because of its op type.
fn unsupported_ops(nodes: &[NodeProto]) -> Vec<FrontendError> {
    let mut errors = Vec::new();
    for n in nodes {
        let reason = match (n.domain.as_str(), n.op_type.as_str()) {
            ("" | "ai.onnx", "If" | "Loop" | "Scan") => {
                Some("control flow (If/Loop/Scan) is not supported; export the model with static control flow".to_string())
            }
            ("" | "ai.onnx", op) if op.starts_with("Sequence") || op.starts_with("Optional") || op == "SplitToSequence" || op == "ConcatFromSequence" => {
                Some("sequence and optional types are not supported".to_string())
            }
            ("" | "ai.onnx", op) if !ops::is_supported_in("", op) => Some("unknown op".to_string()),
            ("" | "ai.onnx", _) => None,
            (ops::MS_DOMAIN, op) if ops::is_supported_in(ops::MS_DOMAIN, op) => None,
            (ops::MS_DOMAIN, _) => Some(format!(
                "op from domain '{}' (kiln imports only its quantized ops: {})",
                ops::MS_DOMAIN,
                ops::ms_ops().collect::<Vec<_>>().join(", ")
            )),
            (domain, _) => Some(format!("op from domain '{domain}'")),
        };
        if let Some(reason) = reason {
            errors.push(FrontendError::Unsupported {
                node: n.name.clone(),
                op: n.op_type.clone(),
                reason,
            });
        }
    }
    errors
}

/// One dimension of a declared tensor type.
#[derive(Debug, Clone, PartialEq)]
enum DeclaredDim {
    Static(usize),
    /// Not fixed by the file (see [`declared_dims`]).
    Dynamic(Dynamic),
}

/// How a file leaves a dimension open.
#[derive(Debug, Clone, PartialEq)]
enum Dynamic {
    Symbolic(String),
    MinusOne,
    Zero,
    Missing,
}

impl Dynamic {
    /// Says what dimension `i` is, for an error.
    fn describe(&self, i: usize) -> String {
        match self {
            Dynamic::Symbolic(p) => format!("dimension {i} is symbolic ('{p}')"),
            Dynamic::MinusOne => format!("dimension {i} is dynamic (-1)"),
            Dynamic::Zero => {
                format!("dimension {i} is 0, which exporters write for a dynamic size")
            }
            Dynamic::Missing => format!("dimension {i} is unknown"),
        }
    }
}

/// The tensor type a value info declares, or why it is not a plain tensor.
fn declared_tensor(
    vi: &ValueInfoProto,
) -> Result<&onnx_protobuf::type_proto::Tensor, FrontendError> {
    let err = |reason: &str| FrontendError::Input {
        name: vi.name.clone(),
        reason: reason.to_string(),
    };
    match vi.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => Ok(t),
        Some(type_proto::Value::SequenceType(_)) => Err(err("sequence inputs are not supported")),
        Some(type_proto::Value::MapType(_)) => Err(err("map inputs are not supported")),
        Some(type_proto::Value::OptionalType(_)) => Err(err("optional inputs are not supported")),
        Some(type_proto::Value::SparseTensorType(_)) => {
            Err(err("sparse tensors are not supported"))
        }
        Some(_) => Err(err("has a type kiln does not know")),
        None => Err(err("has no type")),
    }
}

/// The declared dimensions (`None` when the type has no shape at all).
///
/// A dimension is dynamic when it is symbolic (`dim_param`), missing, or written as -1 or 0.
/// ONNX reserves neither number, but exporters use both for "unknown": Paddle2ONNX and some
/// TensorFlow converters write `dim_value: -1`, others 0. For a graph input, a size-0
/// dimension would make a model that computes on nothing, so kiln reads 0 as unknown and asks
/// for `--input-shape` (where 0 may still be given for an input that really is empty).
/// Initializers and constants keep their 0-sized dimensions: their shapes come from their data.
/// Other negative values are invalid.
fn declared_dims(
    vi: &ValueInfoProto,
    tensor: &onnx_protobuf::type_proto::Tensor,
) -> Result<Option<Vec<DeclaredDim>>, FrontendError> {
    use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
    let Some(shape_proto) = tensor.shape.as_ref() else {
        return Ok(None);
    };
    let mut dims = Vec::with_capacity(shape_proto.dim.len());
    for (i, d) in shape_proto.dim.iter().enumerate() {
        dims.push(match &d.value {
            Some(Dim::DimValue(v)) if *v > 0 => DeclaredDim::Static(*v as usize),
            Some(Dim::DimValue(-1)) => DeclaredDim::Dynamic(Dynamic::MinusOne),
            Some(Dim::DimValue(0)) => DeclaredDim::Dynamic(Dynamic::Zero),
            Some(Dim::DimValue(v)) => {
                return Err(FrontendError::Input {
                    name: vi.name.clone(),
                    reason: format!("dimension {i} is negative ({v})"),
                })
            }
            Some(Dim::DimParam(p)) => DeclaredDim::Dynamic(Dynamic::Symbolic(p.clone())),
            _ => DeclaredDim::Dynamic(Dynamic::Missing),
        });
    }
    Ok(Some(dims))
}

/// Static type of a graph input, or why it has none. `--input-shape` (`shape_override`)
/// replaces the declared shape.
fn value_info_type(
    vi: &ValueInfoProto,
    shape_override: Option<&Vec<usize>>,
) -> Result<TensorType, FrontendError> {
    let err = |reason: String| FrontendError::Input {
        name: vi.name.clone(),
        reason,
    };
    let tensor = declared_tensor(vi)?;
    let dtype = dtype_from_onnx(tensor.elem_type)
        .map_err(|name| err(format!("element type {name} is not supported")))?;
    if let Some(shape) = shape_override {
        return TensorType::checked(dtype, shape.clone()).map_err(|e| err(e.to_string()));
    }
    let Some(dims) = declared_dims(vi, tensor)? else {
        return Err(err(format!(
            "has no shape; give one with --input-shape {}=D0,D1,...",
            vi.name
        )));
    };
    let dynamic: Vec<String> = dims
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            DeclaredDim::Dynamic(how) => Some(how.describe(i)),
            DeclaredDim::Static(_) => None,
        })
        .collect();
    if !dynamic.is_empty() {
        // The --input-shape to write, with the static dimensions filled in.
        let template: Vec<String> = dims
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                DeclaredDim::Static(n) => n.to_string(),
                DeclaredDim::Dynamic(_) => format!("D{i}"),
            })
            .collect();
        let zero = dims.contains(&DeclaredDim::Dynamic(Dynamic::Zero));
        return Err(err(format!(
            "{}; kiln compiles for static shapes: give {} with --input-shape {}={}{}",
            dynamic.join(", "),
            if dynamic.len() == 1 { "it" } else { "them" },
            vi.name,
            template.join(","),
            if zero {
                " (0 there for an input that really is empty)"
            } else {
                ""
            }
        )));
    }
    let shape = dims
        .iter()
        .map(|d| match d {
            DeclaredDim::Static(n) => *n,
            DeclaredDim::Dynamic(_) => 0,
        })
        .collect();
    TensorType::checked(dtype, shape).map_err(|e| err(e.to_string()))
}

/// Why a `const_inputs` value does not fit the type the model declares for that input (only
/// static dimensions are compared), or `None` when it fits.
fn const_input_mismatch(vi: &ValueInfoProto, value: &TensorType) -> Option<String> {
    let tensor = declared_tensor(vi).ok()?;
    let declared_dtype = match dtype_from_onnx(tensor.elem_type) {
        Ok(d) => d.name(),
        Err(name) => name,
    };
    let dims = declared_dims(vi, tensor).ok().flatten();
    let dtype_ok = declared_dtype == value.dtype.name();
    let shape_ok = dims.as_ref().is_none_or(|dims| {
        dims.len() == value.shape.len()
            && dims.iter().zip(&value.shape).all(|(d, &n)| match d {
                DeclaredDim::Static(m) => *m == n,
                DeclaredDim::Dynamic(_) => true,
            })
    });
    if dtype_ok && shape_ok {
        return None;
    }
    let declared_shape = match &dims {
        None => String::new(),
        Some(dims) => format!(
            "[{}]",
            dims.iter()
                .map(|d| match d {
                    DeclaredDim::Static(n) => n.to_string(),
                    DeclaredDim::Dynamic(_) => "?".to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    Some(format!(
        "the --const-input value is {value} but the model declares {declared_dtype}{declared_shape}"
    ))
}

struct Importer {
    graph: Graph,
    /// ONNX tensor name -> IR value.
    names: HashMap<String, ValueId>,
    /// Values known at compile time that are not constants in the graph.
    known: HashMap<ValueId, Arc<Tensor>>,
    /// The model's graph inputs (not the placeholders of [`Importer::stand_in`]).
    real_inputs: HashSet<ValueId>,
}

impl Importer {
    /// Adds initializers and bound inputs as constants; returns every problem found.
    fn add_initializers(&mut self, g: &GraphProto, options: &ImportOptions) -> Vec<FrontendError> {
        let mut errors = Vec::new();
        for init in &g.initializer {
            match tensor_from_proto(init) {
                Ok(t) => {
                    let v = self.graph.add_const(init.name.clone(), t);
                    self.names.insert(init.name.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
        for (name, t) in BTreeMap::from_iter(options.const_inputs.iter()) {
            let v = self.graph.add_const(name.clone(), t.clone());
            self.names.insert(name.clone(), v);
        }
        errors
    }

    /// Adds the graph inputs that are not constants; returns every problem found.
    fn add_inputs(&mut self, g: &GraphProto, options: &ImportOptions) -> Vec<FrontendError> {
        let mut errors = Vec::new();
        for vi in &g.input {
            // Bound inputs are constants, and must have the type the model declares (its
            // dynamic dimensions match any size).
            if let Some(value) = options.const_inputs.get(&vi.name) {
                if let Some(reason) = const_input_mismatch(vi, &value.ty()) {
                    errors.push(FrontendError::Input {
                        name: vi.name.clone(),
                        reason,
                    });
                }
                continue;
            }
            // Inputs that also have an initializer are constants (IR version < 4 models list
            // every weight as an input).
            if self.names.contains_key(&vi.name) {
                // Only the element type is compared: the shape comes from the data.
                let declared = declared_tensor(vi)
                    .ok()
                    .and_then(|t| dtype_from_onnx(t.elem_type).ok());
                if let (Some(&v), Some(dtype)) = (self.names.get(&vi.name), declared) {
                    let actual = self.graph.value(v).ty.dtype;
                    if dtype != actual {
                        errors.push(FrontendError::Input {
                            name: vi.name.clone(),
                            reason: format!("declared {dtype} but its value is {actual}"),
                        });
                    }
                }
                continue;
            }
            match value_info_type(vi, options.input_shapes.get(&vi.name)) {
                Ok(ty) => {
                    let v = self.graph.add_input(vi.name.clone(), ty);
                    self.names.insert(vi.name.clone(), v);
                    self.real_inputs.insert(v);
                }
                Err(e) => errors.push(e),
            }
        }
        for name in BTreeMap::from_iter(options.const_inputs.iter()).keys() {
            if !g.input.iter().any(|i| &i.name == *name) {
                let initializers: HashSet<&str> =
                    g.initializer.iter().map(|t| t.name.as_str()).collect();
                let inputs: Vec<&str> = g
                    .input
                    .iter()
                    .map(|i| i.name.as_str())
                    .filter(|n| !initializers.contains(n))
                    .collect();
                errors.push(FrontendError::Input {
                    name: name.to_string(),
                    reason: format!(
                        "--const-input names an input the model does not have (its inputs: {})",
                        if inputs.is_empty() {
                            "none".to_string()
                        } else {
                            inputs.join(", ")
                        }
                    ),
                });
            }
        }
        for name in options.input_shapes.keys() {
            if !g.input.iter().any(|i| &i.name == name) {
                errors.push(FrontendError::Input {
                    name: name.clone(),
                    reason: "--input-shape names an input the model does not have".into(),
                });
            }
        }
        errors
    }

    /// After a node failed, stands in for its output `name` with a placeholder of the type the
    /// model declares for it (`value_info`, as exporters and onnx shape inference write), so
    /// that the nodes downstream are still checked and every problem is reported in one run.
    /// The graph is discarded when any error was found. Returns false when no type is declared.
    fn stand_in(&mut self, g: &GraphProto, name: &str) -> bool {
        let declared = g
            .value_info
            .iter()
            .chain(&g.output)
            .find(|vi| vi.name == name);
        match declared.map(|vi| value_info_type(vi, None)) {
            Some(Ok(ty)) => {
                let v = self.graph.add_input(name.to_string(), ty);
                self.names.insert(name.to_string(), v);
                true
            }
            _ => false,
        }
    }

    /// The graph inputs that keep the value `name` from being known at compile time: those it
    /// is computed from through values that are not known (Shape reads only static types).
    fn unknown_sources(&self, name: &str) -> Vec<String> {
        let mut found = HashSet::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<ValueId> = self.names.get(name).copied().into_iter().collect();
        while let Some(v) = stack.pop() {
            if !seen.insert(v) || self.known_value(v).is_some() {
                continue;
            }
            match self.graph.value(v).def {
                ValueDef::Input(_) if self.real_inputs.contains(&v) => {
                    found.insert(v);
                }
                ValueDef::Node { node, .. }
                    if !matches!(self.graph.node(node).op, Op::Shape { .. }) =>
                {
                    stack.extend(self.graph.node(node).inputs.iter().copied());
                }
                _ => {}
            }
        }
        self.graph
            .inputs()
            .iter()
            .filter(|v| found.contains(v))
            .map(|&v| self.graph.value(v).name.clone())
            .collect()
    }

    fn known_value(&self, v: ValueId) -> Option<Arc<Tensor>> {
        match &self.graph.value(v).def {
            ValueDef::Const(t) => Some(t.clone()),
            _ => self.known.get(&v).cloned(),
        }
    }

    fn add_node(&mut self, node: &NodeProto, opset: i64) -> Result<(), FrontendError> {
        let invalid = |reason: String| FrontendError::Invalid {
            node: node.name.clone(),
            op: node.op_type.clone(),
            reason,
        };
        if node.op_type == "Constant" {
            return self.add_constant_node(node);
        }
        let inputs: Vec<Option<InputInfo>> = node
            .input
            .iter()
            .map(|name| {
                if name.is_empty() {
                    return None;
                }
                self.names.get(name).map(|&v| InputInfo {
                    ty: self.graph.value(v).ty.clone(),
                    known: self.known_value(v),
                })
            })
            .collect();
        let num_outputs = node
            .output
            .iter()
            .rposition(|o| !o.is_empty())
            .map_or(0, |p| p + 1);
        let ctx = NodeCtx {
            name: &node.name,
            domain: match node.domain.as_str() {
                "ai.onnx" => "",
                d => d,
            },
            op_type: &node.op_type,
            opset,
            attrs: &node.attribute,
            inputs,
            num_outputs,
        };
        let lowered = ops::lower(&ctx).map_err(|e| match e {
            LowerError::Unsupported(reason) => FrontendError::Unsupported {
                node: node.name.clone(),
                op: node.op_type.clone(),
                reason,
            },
            LowerError::Invalid(reason) => invalid(reason),
            LowerError::NeedsConstant(i) => {
                let input = node.input.get(i).cloned().unwrap_or_default();
                FrontendError::NeedsConstant {
                    node: node.name.clone(),
                    op: node.op_type.clone(),
                    sources: self.unknown_sources(&input),
                    input,
                }
            }
        })?;
        let consts: Vec<ValueId> = lowered
            .consts
            .into_iter()
            .map(|(label, t)| self.graph.add_const(format!("{}/{label}", node.name), t))
            .collect();
        let last = lowered.nodes.len().checked_sub(1);
        let mut produced: Vec<ValueId> = Vec::with_capacity(lowered.nodes.len());
        let mut outputs = Vec::new();
        for (k, step) in lowered.nodes.into_iter().enumerate() {
            let mut ir_inputs = Vec::with_capacity(step.args.len());
            for arg in &step.args {
                let v = match *arg {
                    ops::Arg::Input(i) => node
                        .input
                        .get(i)
                        .filter(|n| !n.is_empty())
                        .and_then(|n| self.names.get(n))
                        .copied(),
                    ops::Arg::Node(j) => produced.get(j).copied(),
                    ops::Arg::Const(j) => consts.get(j).copied(),
                };
                match v {
                    Some(v) => ir_inputs.push(v),
                    None => {
                        return Err(invalid(format!(
                            "internal: lowering used missing input {arg:?}"
                        )))
                    }
                }
            }
            // The last node is the ONNX node; the ones before it are named after it.
            let (name, output_names) = if Some(k) == last {
                (node.name.clone(), node.output.to_vec())
            } else {
                let name = format!("{}/{}", node.name, step.label);
                (name.clone(), vec![name])
            };
            let id = self
                .graph
                .add_node(name, step.op.clone(), ir_inputs.clone(), output_names)
                .map_err(|e| match e {
                    kiln_ir::IrError::Node { source, .. } => match source {
                        kiln_ir::OpError::Unsupported(r) => FrontendError::Unsupported {
                            node: node.name.clone(),
                            op: node.op_type.clone(),
                            reason: r,
                        },
                        kiln_ir::OpError::Invalid(r) => invalid(r),
                    },
                    other => invalid(other.to_string()),
                })?;
            outputs = self.graph.node(id).outputs.clone();
            self.propagate_known(&step.op, &ir_inputs, &outputs);
            match outputs.first() {
                Some(&v) => produced.push(v),
                None if Some(k) == last => {}
                None => return Err(invalid("internal: intermediate node has no output".into())),
            }
        }
        if last.is_none() {
            return Err(invalid("internal: lowering produced no node".into()));
        }
        if num_outputs > outputs.len() {
            return Err(FrontendError::Unsupported {
                node: node.name.clone(),
                op: node.op_type.clone(),
                reason: format!(
                    "output {} ('{}') is not supported",
                    outputs.len(),
                    node.output[outputs.len()]
                ),
            });
        }
        for (name, &v) in node.output.iter().zip(&outputs) {
            if !name.is_empty() {
                self.names.insert(name.clone(), v);
            }
        }
        Ok(())
    }

    /// Computes the node's outputs at compile time when its inputs are known (or, for Shape,
    /// when the static shape is all it reads).
    fn propagate_known(&mut self, op: &Op, inputs: &[ValueId], outputs: &[ValueId]) {
        let args: Option<Vec<Arc<Tensor>>> = match op {
            // Shape reads only the static type: any tensor of that type will do.
            Op::Shape { .. } => inputs.first().map(|&v| {
                let ty = &self.graph.value(v).ty;
                vec![Arc::new(Tensor::zeros(&TensorType::new(
                    ty.dtype,
                    ty.shape.clone(),
                )))]
            }),
            _ => inputs.iter().map(|&v| self.known_value(v)).collect(),
        };
        let Some(args) = args else { return };
        let small = outputs
            .iter()
            .all(|&v| self.graph.value(v).ty.numel() <= MAX_KNOWN_ELEMENTS);
        if !small {
            return;
        }
        if matches!(op, Op::Shape { .. }) && args.iter().any(|t| t.numel() > MAX_KNOWN_ELEMENTS) {
            // Avoid materializing a big dummy tensor: compute Shape directly.
            if let (Op::Shape { start, end }, Some(&v)) = (op, inputs.first()) {
                let shape = &self.graph.value(v).ty.shape;
                let dims: Vec<i64> = shape[*start..*end].iter().map(|&d| d as i64).collect();
                if let (Ok(t), Some(&out)) =
                    (Tensor::from_i64(vec![dims.len()], dims), outputs.first())
                {
                    self.known.insert(out, Arc::new(t));
                }
            }
            return;
        }
        let refs: Vec<&Tensor> = args.iter().map(|t| t.as_ref()).collect();
        if let Ok(results) = kiln_ir::ops::eval(op, &refs) {
            for (&v, t) in outputs.iter().zip(results) {
                self.known.insert(v, Arc::new(t));
            }
        }
    }

    fn add_constant_node(&mut self, node: &NodeProto) -> Result<(), FrontendError> {
        let invalid = |reason: String| FrontendError::Invalid {
            node: node.name.clone(),
            op: node.op_type.clone(),
            reason,
        };
        let attr = node
            .attribute
            .first()
            .ok_or_else(|| invalid("has no value attribute".into()))?;
        let tensor = match attr.name.as_str() {
            "value" => tensor_from_proto(&attr.t)?,
            "value_float" => Tensor::scalar_f32(attr.f),
            "value_floats" => Tensor::from_f32(vec![attr.floats.len()], attr.floats.clone())
                .map_err(|e| invalid(e.to_string()))?,
            "value_int" => {
                Tensor::from_i64(vec![], vec![attr.i]).map_err(|e| invalid(e.to_string()))?
            }
            "value_ints" => Tensor::from_i64(vec![attr.ints.len()], attr.ints.clone())
                .map_err(|e| invalid(e.to_string()))?,
            other => {
                return Err(FrontendError::Unsupported {
                    node: node.name.clone(),
                    op: node.op_type.clone(),
                    reason: format!("attribute '{other}'"),
                })
            }
        };
        let out = node
            .output
            .first()
            .ok_or_else(|| invalid("has no output".into()))?;
        let v = self.graph.add_const(out.clone(), tensor);
        self.names.insert(out.clone(), v);
        Ok(())
    }

    fn set_outputs(&mut self, g: &GraphProto) -> Result<(), FrontendError> {
        let mut outputs = Vec::with_capacity(g.output.len());
        for vi in &g.output {
            let Some(&v) = self.names.get(&vi.name) else {
                return Err(FrontendError::Input {
                    name: vi.name.clone(),
                    reason: "graph output is not produced by any node".into(),
                });
            };
            // Where the model declares a static output type, it must agree with inference.
            if let Ok(declared) = value_info_type(vi, None) {
                let got = &self.graph.value(v).ty;
                if declared != *got {
                    return Err(FrontendError::Input {
                        name: vi.name.clone(),
                        reason: format!(
                            "graph output is declared {declared} but kiln infers {got}"
                        ),
                    });
                }
            }
            outputs.push(v);
        }
        self.graph.set_outputs(outputs);
        if cfg!(debug_assertions) {
            kiln_ir::verify::verify(&self.graph)
                .map_err(|e| FrontendError::Parse(format!("internal: {e}")))?;
        }
        Ok(())
    }
}
