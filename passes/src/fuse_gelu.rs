//! `fuse-gelu`: fuses GELU, as exporters decompose it, into one Gelu.
//!
//! Matches the erf form, `t = Div(x, sqrt 2) | Mul(x, 1/sqrt 2)`, `e = Erf(t)`, and the tanh
//! form PyTorch exports for `approximate="tanh"`, `c = x^3` (`Pow(x, 3)`, `Mul(x, Mul(x, x))`
//! or `Mul(Mul(x, x), x)`), `u = Add(x, Mul(c, 0.044715))`, `e = Tanh(Mul(u, sqrt(2/pi)))`;
//! then, for both, `a = Add(e, 1)` and the product of `x`, `a` and the constant `0.5` in any
//! association (`Mul(Mul(x, a), 0.5)`, `Mul(Mul(x, 0.5), a)`, `Mul(x, Mul(a, 0.5))`), with
//! constants compared to f32 precision and every intermediate read only inside the pattern.
//! Produces `Gelu {tanh_approx}(x)`. Sound because `0.5 * x * (1 + erf(x / sqrt 2))` is the
//! ONNX definition of Gelu and `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))` that of
//! its tanh approximation.

use kiln_ir::{Graph, IrError, NodeId, Op, ValueId};

use crate::pipeline::Pass;
use crate::util;

#[derive(Debug)]
pub struct FuseGelu;

impl Pass for FuseGelu {
    fn name(&self) -> &'static str {
        "fuse-gelu"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in g.topo_order()? {
            if !g.contains_node(id) || !matches!(g.node(id).op, Op::Erf | Op::Tanh) {
                continue;
            }
            let tanh_approx = g.node(id).op == Op::Tanh;
            let Some((x, last, nodes)) = match_gelu(g, id) else {
                continue;
            };
            let name = g.node(last).name.clone();
            let gelu = g.add_node(
                util::derived_name(&name, "fused"),
                Op::Gelu { tanh_approx },
                vec![x],
                vec![],
            )?;
            let y = g.node(gelu).outputs[0];
            if !util::redirect(g, g.node(last).outputs[0], y) {
                g.remove_node(gelu)?;
                continue;
            }
            g.remove_nodes(&nodes)?;
            changed = true;
        }
        Ok(changed)
    }
}

fn close(v: f32, want: f64) -> bool {
    (f64::from(v) - want).abs() <= want.abs() * 1e-6
}

fn out(g: &Graph, n: NodeId) -> ValueId {
    g.node(n).outputs[0]
}

fn sole_consumer(g: &Graph, v: ValueId) -> Option<NodeId> {
    if !util::single_use(g, v) {
        return None;
    }
    g.consumers(v).first().map(|&(n, _)| n)
}

/// `(other operand, constant)` of a binary node with one scalar-constant operand.
fn with_const(g: &Graph, n: NodeId) -> Option<(ValueId, f32)> {
    let ins = &g.node(n).inputs;
    if ins.len() != 2 {
        return None;
    }
    if let Some(c) = util::const_scalar(g, ins[1]) {
        return Some((ins[0], c));
    }
    util::const_scalar(g, ins[0]).map(|c| (ins[1], c))
}

fn is_mul(g: &Graph, n: NodeId) -> bool {
    g.node(n).op == Op::Mul
}

/// The erf form's head: `Erf(Div(x, sqrt 2) | Mul(x, 1/sqrt 2))`, as `(x, its nodes)`.
fn erf_head(g: &Graph, erf: NodeId) -> Option<(ValueId, Vec<NodeId>)> {
    let sqrt2 = std::f64::consts::SQRT_2;
    let t = *g.node(erf).inputs.first()?;
    let scale = util::producer(g, t)?;
    let x = match g.node(scale).op {
        Op::Div => {
            let ins = &g.node(scale).inputs;
            (util::const_scalar(g, ins[1]).is_some_and(|c| close(c, sqrt2))).then_some(ins[0])?
        }
        Op::Mul => {
            let (x, c) = with_const(g, scale)?;
            close(c, 1.0 / sqrt2).then_some(x)?
        }
        _ => return None,
    };
    Some((x, vec![scale, erf]))
}

/// The tanh form's head: `Tanh(Mul(Add(x, Mul(x^3, 0.044715)), sqrt(2/pi)))` (either operand
/// order of each Add and Mul), as `(x, its nodes)`.
fn tanh_head(g: &Graph, tanh: NodeId) -> Option<(ValueId, Vec<NodeId>)> {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let scaled = util::producer(g, *g.node(tanh).inputs.first()?)?;
    let (u, c) = with_const(g, scaled).filter(|_| is_mul(g, scaled))?;
    if !close(c, k) {
        return None;
    }
    let sum = util::producer(g, u)?;
    if !matches!(g.node(sum).op, Op::Add { activation } if activation.is_none()) {
        return None;
    }
    let [p, q] = g.node(sum).inputs.as_slice() else {
        return None;
    };
    // One operand is x, the other Mul(x^3, 0.044715).
    let (x, cubic_term) = [(*p, *q), (*q, *p)].into_iter().find_map(|(x, t)| {
        let m = util::producer(g, t).filter(|&m| is_mul(g, m))?;
        let (cube, c) = with_const(g, m)?;
        (close(c, 0.044715) && is_cube_of(g, cube, x)).then_some((x, m))
    })?;
    let cube = g
        .node(cubic_term)
        .inputs
        .iter()
        .copied()
        .find_map(|v| util::producer(g, v).filter(|_| util::const_scalar(g, v).is_none()))?;
    let mut nodes = vec![cube];
    // Mul(x, Mul(x, x)) or Mul(Mul(x, x), x): the inner square too.
    if is_mul(g, cube) {
        nodes.extend(
            g.node(cube)
                .inputs
                .iter()
                .filter_map(|&v| util::producer(g, v))
                .filter(|&n| is_mul(g, n) && g.node(n).inputs == [x, x]),
        );
    }
    nodes.extend([cubic_term, sum, scaled, tanh]);
    Some((x, nodes))
}

/// Whether `v` is `x^3`: `Pow(x, 3)`, `Mul(x, Mul(x, x))` or `Mul(Mul(x, x), x)`.
fn is_cube_of(g: &Graph, v: ValueId, x: ValueId) -> bool {
    let Some(p) = util::producer(g, v) else {
        return false;
    };
    let ins = &g.node(p).inputs;
    match g.node(p).op {
        Op::Pow => ins[0] == x && util::const_scalar(g, ins[1]) == Some(3.0),
        Op::Mul => {
            let square = |s: ValueId| {
                util::producer(g, s).is_some_and(|q| is_mul(g, q) && g.node(q).inputs == [x, x])
            };
            (ins[0] == x && square(ins[1])) || (ins[1] == x && square(ins[0]))
        }
        _ => false,
    }
}

/// Returns `(x, last node, every node of the pattern)` for the Erf or Tanh node `e`.
fn match_gelu(g: &Graph, erf: NodeId) -> Option<(ValueId, NodeId, Vec<NodeId>)> {
    let (x, head) = match g.node(erf).op {
        Op::Erf => erf_head(g, erf)?,
        Op::Tanh => tanh_head(g, erf)?,
        _ => return None,
    };
    if g.value(x).ty.dtype != kiln_ir::DType::F32 || g.value(out(g, erf)).ty != g.value(x).ty {
        return None;
    }
    let add = sole_consumer(g, out(g, erf))?;
    if !matches!(g.node(add).op, Op::Add { activation } if activation.is_none()) {
        return None;
    }
    let (_, one) = with_const(g, add)?;
    if one != 1.0 {
        return None;
    }
    let a = out(g, add);
    let mut nodes = head;
    nodes.push(add);
    let m1 = sole_consumer(g, a)?;
    if !is_mul(g, m1) {
        return None;
    }
    let m1_ins = g.node(m1).inputs.clone();
    let other = if m1_ins[0] == a { m1_ins[1] } else { m1_ins[0] };
    nodes.push(m1);
    let last = if other == x {
        // Mul(Mul(x, a), 0.5)
        let m2 = sole_consumer(g, out(g, m1))?;
        let (_, half) = if is_mul(g, m2) {
            with_const(g, m2)?
        } else {
            return None;
        };
        if half != 0.5 {
            return None;
        }
        nodes.push(m2);
        m2
    } else if let Some(h) = util::producer(g, other).filter(|&h| is_mul(g, h)) {
        // Mul(Mul(x, 0.5), a)
        let (hx, half) = with_const(g, h)?;
        if hx != x || half != 0.5 || !util::single_use(g, other) {
            return None;
        }
        nodes.insert(0, h);
        m1
    } else if util::const_scalar(g, other) == Some(0.5) {
        // Mul(x, Mul(a, 0.5))
        let m2 = sole_consumer(g, out(g, m1))?;
        if !is_mul(g, m2) {
            return None;
        }
        let ins = &g.node(m2).inputs;
        if !(ins[0] == x || ins[1] == x) {
            return None;
        }
        nodes.push(m2);
        m2
    } else {
        return None;
    };
    if g.value(out(g, last)).ty != g.value(x).ty
        || !util::pattern_is_closed(g, &nodes, out(g, last))
    {
        return None;
    }
    Some((x, last, nodes))
}
