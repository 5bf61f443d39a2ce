//! `fold-batchnorm`: folds inference BatchNormalization into the producer's weights, or turns it
//! into a per-channel Mul + Add.
//!
//! BN computes `y = x * k + t` per channel `c`, with `k = scale / sqrt(var + eps)` and
//! `t = B - mean * k` (all constants). When `x` comes from a Conv, ConvTranspose or Gemm with
//! constant weights (and bias) whose result nothing else reads, the producer's output channel
//! `c` is a linear function of its weights `W[c]` plus its bias `b[c]`, so scaling `W[c]` by
//! `k[c]` and replacing the bias with `b[c] * k[c] + t[c]` gives exactly `x * k + t`; the BN
//! goes. Any other BN becomes `Mul(x, k) + t` with `k`, `t` shaped `[C, 1, ..]` to broadcast over
//! the channel axis. Constants are computed in f64 and rounded once.

use std::sync::Arc;

use kiln_ir::{Graph, IrError, NodeId, Op, Tensor};

use crate::pipeline::Pass;
use crate::util;

#[derive(Debug)]
pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in g.topo_order()? {
            let node = g.node(id);
            let Op::BatchNormalization { epsilon } = node.op else {
                continue;
            };
            let Some(param_values) = node.inputs.get(1..5) else {
                continue;
            };
            let params: Option<Vec<Vec<f32>>> = param_values
                .iter()
                .map(|&v| util::const_f32(g, v))
                .collect();
            let Some(params) = params else {
                continue;
            };
            let x = node.inputs[0];
            let y = node.outputs[0];
            let shape = g.value(x).ty.shape.clone();
            let Some(&channels) = shape.get(1) else {
                continue;
            };
            if params.iter().any(|p| p.len() != channels) {
                continue;
            }
            let (k, t): (Vec<f64>, Vec<f64>) = (0..channels)
                .map(|c| {
                    let k = f64::from(params[0][c])
                        / (f64::from(params[3][c]) + f64::from(epsilon)).sqrt();
                    (k, f64::from(params[1][c]) - f64::from(params[2][c]) * k)
                })
                .unzip();
            if let Some(p) = util::producer(g, x) {
                if util::single_use(g, x) && util::can_redirect(g, y, x) && fold_into(g, p, &k, &t)?
                {
                    util::redirect(g, y, x);
                    g.remove_node(id)?;
                    changed = true;
                    continue;
                }
            }
            // Standalone: y = x * k + t, per channel.
            let mut cshape = vec![channels];
            cshape.extend(std::iter::repeat_n(1, shape.len() - 2));
            let name = g.node(id).name.clone();
            let kc = g.add_const(
                util::derived_name(&name, "scale"),
                Arc::new(Tensor::from_f32(cshape.clone(), to_f32(&k))?),
            );
            let tc = g.add_const(
                util::derived_name(&name, "shift"),
                Arc::new(Tensor::from_f32(cshape, to_f32(&t))?),
            );
            let mul = g.add_node(
                util::derived_name(&name, "mul"),
                Op::Mul,
                vec![x, kc],
                vec![],
            )?;
            let m = g.node(mul).outputs[0];
            g.set_node_inputs(id, vec![m, tc]);
            g.set_node_op(
                id,
                Op::Add {
                    activation: Default::default(),
                },
            )
            .map_err(|source| node_err(&name, source))?;
            changed = true;
        }
        Ok(changed)
    }
}

fn node_err(name: &str, source: kiln_ir::OpError) -> IrError {
    IrError::Node {
        node: name.to_string(),
        op: "BatchNormalization".into(),
        source,
    }
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Folds `x * k + t` (per output channel) into `p`'s weights and bias, if `p` is a Conv,
/// ConvTranspose or Gemm with constant f32 weights and bias. Returns whether it did.
fn fold_into(g: &mut Graph, p: NodeId, k: &[f64], t: &[f64]) -> Result<bool, IrError> {
    let node = g.node(p).clone();
    // The op kind first: only these three have weights in slot 1 (a Relu or Reshape before the
    // BN has one input, or a shape there).
    let weighted = matches!(
        node.op,
        Op::Conv { .. } | Op::ConvTranspose { .. } | Op::Gemm { .. }
    );
    if !weighted || !node.op.activation().is_none() {
        return Ok(false);
    }
    let Some(w) = node.inputs.get(1).and_then(|&w| util::const_of(g, w)) else {
        return Ok(false);
    };
    let Some(wd) = w.as_f32() else {
        return Ok(false);
    };
    let channels = k.len();
    let bias: Option<Vec<f32>> = match node.inputs.get(2) {
        Some(&b) => match util::const_f32(g, b) {
            Some(v) => Some(v),
            None => return Ok(false),
        },
        None => None,
    };
    let ws = w.shape().to_vec();
    let mut new_w = wd.to_vec();
    let new_bias: Vec<f64>;
    let mut new_op = node.op.clone();
    match &node.op {
        Op::Conv { .. } => {
            if ws.first() != Some(&channels) {
                return Ok(false);
            }
            let per = new_w.len() / channels.max(1);
            for (i, w) in new_w.iter_mut().enumerate() {
                *w = (f64::from(*w) * k[i / per.max(1)]) as f32;
            }
            let b = bias.unwrap_or_else(|| vec![0.0; channels]);
            if b.len() != channels {
                return Ok(false);
            }
            new_bias = (0..channels)
                .map(|c| f64::from(b[c]) * k[c] + t[c])
                .collect();
        }
        Op::ConvTranspose { group, .. } => {
            // W is [C_in, C_out / group, k..]; output channel = group_of(i) * (C_out/group) + j.
            if ws.len() < 2 || ws[1] * group != channels {
                return Ok(false);
            }
            let (cin, opg) = (ws[0], ws[1]);
            let per: usize = ws[2..].iter().product();
            let in_per_group = cin / group;
            for i in 0..cin {
                for j in 0..opg {
                    let oc = (i / in_per_group.max(1)) * opg + j;
                    let base = (i * opg + j) * per;
                    for w in &mut new_w[base..base + per] {
                        *w = (f64::from(*w) * k[oc]) as f32;
                    }
                }
            }
            let b = bias.unwrap_or_else(|| vec![0.0; channels]);
            if b.len() != channels {
                return Ok(false);
            }
            new_bias = (0..channels)
                .map(|c| f64::from(b[c]) * k[c] + t[c])
                .collect();
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
            ..
        } => {
            // Y[m, n] = alpha * (A B)[m, n] + beta * C[n]: scale column n of B.
            if ws.len() != 2 {
                return Ok(false);
            }
            let (kdim, n) = if *trans_b {
                (ws[1], ws[0])
            } else {
                (ws[0], ws[1])
            };
            if n != channels {
                return Ok(false);
            }
            for r in 0..ws[0] {
                for c in 0..ws[1] {
                    let col = if *trans_b { r } else { c };
                    let w = &mut new_w[r * ws[1] + c];
                    *w = (f64::from(*w) * k[col]) as f32;
                }
            }
            let _ = kdim;
            let c = match (&bias, node.inputs.get(2)) {
                (Some(b), Some(&bv)) => {
                    let cs = &g.value(bv).ty.shape;
                    let per_column = match cs.as_slice() {
                        [] | [1] | [1, 1] => false,
                        [m] | [1, m] if *m == channels => true,
                        _ => return Ok(false),
                    };
                    (0..channels)
                        .map(|i| f64::from(if per_column { b[i] } else { b[0] }) * f64::from(*beta))
                        .collect()
                }
                _ => vec![0.0; channels],
            };
            new_bias = (0..channels).map(|i| c[i] * k[i] + t[i]).collect();
            new_op = Op::Gemm {
                alpha: *alpha,
                beta: 1.0,
                trans_a: *trans_a,
                trans_b: *trans_b,
                activation: Default::default(),
            };
        }
        _ => return Ok(false),
    }
    let wname = g.value(node.inputs[1]).name.clone();
    let wv = g.add_const(wname, Arc::new(Tensor::from_f32(ws, new_w)?));
    let bname = match node.inputs.get(2) {
        Some(&b) => g.value(b).name.clone(),
        None => util::derived_name(&node.name, "bias"),
    };
    let bv = g.add_const(
        bname,
        Arc::new(Tensor::from_f32(vec![channels], to_f32(&new_bias))?),
    );
    let mut inputs = node.inputs.clone();
    inputs.truncate(2);
    inputs[1] = wv;
    inputs.push(bv);
    g.set_node_inputs(p, inputs);
    g.set_node_op(p, new_op).map_err(|source| IrError::Node {
        node: node.name.clone(),
        op: node.op.name().to_string(),
        source,
    })?;
    Ok(true)
}
