//! IR ops that opset 17 writes as several ONNX nodes: a fused activation as its own node after
//! the op, MatMul operand permutations as Transposes before it, Gelu as its erf or tanh formula,
//! and an opset-11 style Softmax (`coerce_2d`) as Flatten -> Softmax -> Reshape.

use kiln_ir::Activation;

use super::proto::{attr_float, attr_int, attr_ints};
use super::writer::Writer;
use super::ExportError;

/// Writes a fused activation as its own node from `x` to `y` (`node` names the op it was fused
/// into).
pub(super) fn activation(w: &mut Writer<'_>, node: &str, act: Activation, x: String, y: String) {
    let name = format!("{node}/activation");
    match act {
        Activation::None => w.push(&name, "Identity", vec![x], vec![y], vec![]),
        Activation::Relu => w.push(&name, "Relu", vec![x], vec![y], vec![]),
        Activation::Clip { min, max } => {
            let lo = min
                .map(|v| w.f32_scalar(&format!("{node}/clip_min"), v as f32))
                .unwrap_or_default();
            let hi = max
                .map(|v| w.f32_scalar(&format!("{node}/clip_max"), v as f32))
                .unwrap_or_default();
            let mut inputs = vec![x, lo, hi];
            while inputs.last().is_some_and(String::is_empty) {
                inputs.pop();
            }
            w.push(&name, "Clip", inputs, vec![y], vec![]);
        }
        Activation::LeakyRelu { alpha } => w.push(
            &name,
            "LeakyRelu",
            vec![x],
            vec![y],
            vec![attr_float("alpha", alpha)],
        ),
        Activation::HardSwish => w.push(&name, "HardSwish", vec![x], vec![y], vec![]),
        Activation::HardSigmoid { alpha, beta } => w.push(
            &name,
            "HardSigmoid",
            vec![x],
            vec![y],
            vec![attr_float("alpha", alpha), attr_float("beta", beta)],
        ),
        Activation::Sigmoid => w.push(&name, "Sigmoid", vec![x], vec![y], vec![]),
        Activation::Tanh => w.push(&name, "Tanh", vec![x], vec![y], vec![]),
    }
}

/// MatMul with its operand permutations (`a_perm`, `b_perm`; empty for none) written as
/// Transposes of its inputs.
pub(super) fn matmul(
    w: &mut Writer<'_>,
    name: &str,
    ins: &[String],
    outs: &[String],
    a_perm: &[usize],
    b_perm: &[usize],
) {
    let mut inputs = ins.to_vec();
    for (i, perm) in [(0, a_perm), (1, b_perm)] {
        if !perm.is_empty() {
            let t = w.unique(&format!("{}/transposed", inputs[i]));
            w.push(
                &format!("{name}/transpose_{i}"),
                "Transpose",
                vec![inputs[i].clone()],
                vec![t.clone()],
                vec![attr_ints("perm", perm)],
            );
            inputs[i] = t;
        }
    }
    w.push(name, "MatMul", inputs, outs.to_vec(), vec![]);
}

/// Softmax or LogSoftmax with opset < 13 semantics (`coerce_2d`): over everything from `axis`
/// on, written as Flatten -> (Log)Softmax over axis 1 -> Reshape back to the input's shape.
pub(super) fn softmax_2d(
    w: &mut Writer<'_>,
    node: &kiln_ir::Node,
    x: &str,
    outs: &[String],
    axis: usize,
) -> Result<(), ExportError> {
    let name = &node.name;
    let op_type = node.op.name();
    let g = w.g;
    let x_ty = &g.value(node.inputs[0]).ty;
    let flat = w.unique(&format!("{x}/flat"));
    w.push(
        &format!("{name}/flatten"),
        "Flatten",
        vec![x.to_string()],
        vec![flat.clone()],
        vec![attr_int("axis", axis as i64)],
    );
    let soft = w.unique(&format!("{}/2d", outs[0]));
    w.push(
        name,
        op_type,
        vec![flat],
        vec![soft.clone()],
        vec![attr_int("axis", 1)],
    );
    let dims: Vec<i64> = x_ty.shape.iter().map(|&d| d as i64).collect();
    let shape = w.i64s(&format!("{name}/shape"), &dims)?;
    w.push(
        &format!("{name}/reshape"),
        "Reshape",
        vec![soft, shape],
        outs.to_vec(),
        vec![],
    );
    Ok(())
}

/// Gelu as its formula (ONNX has the op only from opset 20).
pub(super) fn gelu(w: &mut Writer<'_>, name: &str, x: &str, y: &str, tanh_approx: bool) {
    let t = |w: &mut Writer<'_>, s: &str| w.unique(&format!("{y}/{s}"));
    let half = w.f32_scalar(&format!("{name}/half"), 0.5);
    let one = w.f32_scalar(&format!("{name}/one"), 1.0);
    let inner = if tanh_approx {
        // tanh(sqrt(2/pi) * (x + 0.044715 x^3))
        let c = w.f32_scalar(&format!("{name}/c"), 0.044715);
        let k = w.f32_scalar(
            &format!("{name}/k"),
            (2.0 / std::f64::consts::PI).sqrt() as f32,
        );
        let three = w.f32_scalar(&format!("{name}/three"), 3.0);
        let cube = t(w, "cube");
        w.push(
            &format!("{name}/cube"),
            "Pow",
            vec![x.into(), three],
            vec![cube.clone()],
            vec![],
        );
        let cc = t(w, "c_cube");
        w.push(
            &format!("{name}/c_cube"),
            "Mul",
            vec![cube, c],
            vec![cc.clone()],
            vec![],
        );
        let s = t(w, "sum");
        w.push(
            &format!("{name}/sum"),
            "Add",
            vec![x.into(), cc],
            vec![s.clone()],
            vec![],
        );
        let ks = t(w, "scaled");
        w.push(
            &format!("{name}/scaled"),
            "Mul",
            vec![s, k],
            vec![ks.clone()],
            vec![],
        );
        let th = t(w, "tanh");
        w.push(
            &format!("{name}/tanh"),
            "Tanh",
            vec![ks],
            vec![th.clone()],
            vec![],
        );
        th
    } else {
        // erf(x / sqrt(2))
        let r = w.f32_scalar(&format!("{name}/rsqrt2"), std::f32::consts::FRAC_1_SQRT_2);
        let s = t(w, "scaled");
        w.push(
            &format!("{name}/scaled"),
            "Mul",
            vec![x.into(), r],
            vec![s.clone()],
            vec![],
        );
        let e = t(w, "erf");
        w.push(
            &format!("{name}/erf"),
            "Erf",
            vec![s],
            vec![e.clone()],
            vec![],
        );
        e
    };
    let p = t(w, "one_plus");
    w.push(
        &format!("{name}/one_plus"),
        "Add",
        vec![inner, one],
        vec![p.clone()],
        vec![],
    );
    let hx = t(w, "half_x");
    w.push(
        &format!("{name}/half_x"),
        "Mul",
        vec![x.into(), half],
        vec![hx.clone()],
        vec![],
    );
    w.push(name, "Mul", vec![hx, p], vec![y.into()], vec![]);
}
