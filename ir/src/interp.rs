//! The reference interpreter: runs a graph node by node with the op files' `eval`.
//!
//! It defines kiln's semantics. Backends are tested against it, constant folding runs through
//! it, and quantization calibrates with it, so it favours obvious correctness over speed.

use std::sync::Arc;

use crate::error::IrError;
use crate::graph::{Graph, ValueDef, ValueId};
use crate::ops;
use crate::tensor::Tensor;

/// Runs `graph` on `inputs` (in graph-input order) and returns its outputs.
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, IrError> {
    run_observed(graph, inputs, |_, _| {})
}

/// Like [`run`], calling `observe` with every value the moment it is computed (graph inputs
/// and node outputs), e.g. to record activation ranges for calibration.
pub fn run_observed(
    graph: &Graph,
    inputs: &[Tensor],
    mut observe: impl FnMut(ValueId, &Tensor),
) -> Result<Vec<Tensor>, IrError> {
    check_inputs(graph, inputs)?;
    let order = graph.topo_order()?;
    let mut env: Vec<Option<Arc<Tensor>>> = graph.value_ids().map(|_| None).collect();
    // Remaining uses per value, so intermediates are freed as soon as they die.
    let mut uses: Vec<usize> = vec![0; env.len()];
    for &n in &order {
        for v in &graph.node(n).inputs {
            uses[v.index()] += 1;
        }
    }
    for v in graph.outputs() {
        uses[v.index()] += 1;
    }
    for (i, &v) in graph.inputs().iter().enumerate() {
        observe(v, &inputs[i]);
        env[v.index()] = Some(Arc::new(inputs[i].clone()));
    }
    for &n in &order {
        let node = graph.node(n);
        let args: Vec<Arc<Tensor>> = node
            .inputs
            .iter()
            .map(|&v| lookup(graph, &env, v))
            .collect::<Result<_, _>>()?;
        let arg_refs: Vec<&Tensor> = args.iter().map(|t| t.as_ref()).collect();
        let node_err = |source| IrError::Node {
            node: node.name.clone(),
            op: node.op.name().to_string(),
            source,
        };
        let results = ops::eval(&node.op, &arg_refs).map_err(node_err)?;
        drop(args);
        if results.len() != node.outputs.len() {
            return Err(node_err(crate::error::OpError::Invalid(format!(
                "internal: eval returned {} outputs, expected {}",
                results.len(),
                node.outputs.len()
            ))));
        }
        for (&v, t) in node.outputs.iter().zip(results) {
            let want = &graph.value(v).ty;
            if t.ty() != *want {
                return Err(node_err(crate::error::OpError::Invalid(format!(
                    "internal: eval produced {} but shape inference said {}",
                    t.ty(),
                    want
                ))));
            }
            observe(v, &t);
            env[v.index()] = Some(Arc::new(t));
        }
        for &v in &node.inputs {
            uses[v.index()] -= 1;
            if uses[v.index()] == 0 {
                env[v.index()] = None;
            }
        }
    }
    graph
        .outputs()
        .iter()
        .map(|&v| lookup(graph, &env, v).map(Arc::unwrap_or_clone))
        .collect()
}

fn lookup(graph: &Graph, env: &[Option<Arc<Tensor>>], v: ValueId) -> Result<Arc<Tensor>, IrError> {
    if let ValueDef::Const(t) = &graph.value(v).def {
        return Ok(t.clone());
    }
    env[v.index()].clone().ok_or_else(|| {
        IrError::Verify(vec![format!(
            "value %{} ('{}') used before it is defined",
            v.index(),
            graph.value(v).name
        )])
    })
}

fn check_inputs(graph: &Graph, inputs: &[Tensor]) -> Result<(), IrError> {
    if inputs.len() != graph.inputs().len() {
        return Err(IrError::InputCount {
            expected: graph.inputs().len(),
            got: inputs.len(),
        });
    }
    for (index, (&v, t)) in graph.inputs().iter().zip(inputs).enumerate() {
        let value = graph.value(v);
        if t.ty() != value.ty {
            return Err(IrError::InputMismatch {
                index,
                name: value.name.clone(),
                expected: value.ty.to_string(),
                got: t.ty().to_string(),
            });
        }
    }
    Ok(())
}
