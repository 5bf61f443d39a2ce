//! Inlining of model-local ONNX functions (`ModelProto.functions`), as the dynamo-based
//! `torch.onnx` exporter emits them. After this step the node list has only primitive ops.

use std::collections::HashMap;

use onnx_protobuf::{AttributeProto, FunctionProto, NodeProto};

use crate::error::FrontendError;

/// Functions may call functions; deeper nesting than this is treated as runaway recursion.
const MAX_DEPTH: usize = 16;

/// Replaces every call to a model-local function with the function's body.
pub fn inline_functions(
    nodes: &[NodeProto],
    functions: &[FunctionProto],
) -> Result<Vec<NodeProto>, FrontendError> {
    if functions.is_empty() {
        return Ok(nodes.to_vec());
    }
    let table: HashMap<(&str, &str), &FunctionProto> = functions
        .iter()
        .map(|f| ((f.domain.as_str(), f.name.as_str()), f))
        .collect();
    let mut out = Vec::with_capacity(nodes.len());
    let mut counter = 0usize;
    for n in nodes {
        expand(n, &table, 0, &mut counter, &mut out)?;
    }
    Ok(out)
}

fn expand(
    node: &NodeProto,
    table: &HashMap<(&str, &str), &FunctionProto>,
    depth: usize,
    counter: &mut usize,
    out: &mut Vec<NodeProto>,
) -> Result<(), FrontendError> {
    let Some(func) = table.get(&(node.domain.as_str(), node.op_type.as_str())) else {
        out.push(node.clone());
        return Ok(());
    };
    if depth >= MAX_DEPTH {
        return Err(FrontendError::Invalid {
            node: node.name.clone(),
            op: node.op_type.clone(),
            reason: format!("functions nested more than {MAX_DEPTH} deep (recursive function?)"),
        });
    }
    *counter += 1;
    let prefix = format!("{}::{}#{}/", node.name, func.name, counter);
    // Formal parameter -> actual tensor name; everything else gets the unique prefix.
    let mut rename: HashMap<&str, String> = HashMap::new();
    for (i, formal) in func.input.iter().enumerate() {
        rename.insert(formal, node.input.get(i).cloned().unwrap_or_default());
    }
    for (i, formal) in func.output.iter().enumerate() {
        rename.insert(formal, node.output.get(i).cloned().unwrap_or_default());
    }
    let map_name = |n: &str| -> String {
        if n.is_empty() {
            return String::new();
        }
        rename
            .get(n)
            .cloned()
            .unwrap_or_else(|| format!("{prefix}{n}"))
    };
    for inner in &func.node {
        let mut inner = inner.clone();
        inner.input = inner.input.iter().map(|n| map_name(n)).collect();
        inner.output = inner.output.iter().map(|n| map_name(n)).collect();
        inner.name = format!("{prefix}{}", inner.name);
        inner.attribute = bind_attributes(&inner.attribute, &node.attribute, &func.attribute_proto);
        expand(&inner, table, depth + 1, counter, out)?;
    }
    Ok(())
}

/// Resolves `ref_attr_name` references against the caller's attributes, then the function's
/// declared defaults; a reference to an attribute that is given nowhere is dropped, as the ONNX
/// spec says.
fn bind_attributes(
    inner: &[AttributeProto],
    caller: &[AttributeProto],
    defaults: &[AttributeProto],
) -> Vec<AttributeProto> {
    inner
        .iter()
        .filter_map(|a| {
            if a.ref_attr_name.is_empty() {
                return Some(a.clone());
            }
            let source = caller
                .iter()
                .find(|c| c.name == a.ref_attr_name)
                .or_else(|| defaults.iter().find(|d| d.name == a.ref_attr_name))?;
            let mut bound = source.clone();
            bound.name = a.name.clone();
            Some(bound)
        })
        .collect()
}
