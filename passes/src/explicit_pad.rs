//! `explicit-pad`: the inverse of `fold-pad`, for targets with memory to spare. Each padded
//! Conv gets a zero Pad node in front and reads the padded copy with no padding of its own.
//!
//! Not part of any `-O` level: it trades arena bytes (one padded copy of each padded Conv's
//! input, live only around that Conv) for speed, which suits the Cranelift backend's
//! application-class targets and not a microcontroller. It is sound for the same reason
//! `fold-pad` is: a Conv's implicit padding is zeros. What it buys is loop shape: without
//! borders every output row is one run of identical windows, so the vectorized loops over it
//! cover whole rows instead of stopping at the border columns.

use kiln_ir::op::PadMode;
use kiln_ir::{Graph, IrError, Op};

/// Whether padding `node`'s input explicitly saves more than the copy costs. The saving is the
/// border columns, which otherwise run scalar (about four times the vector cost, so three
/// times extra) over their share of the MACs; the cost is the padded copy, written twice (fill
/// and copy) at four lanes a store, about half a cycle an element. Wide rows with light
/// windows (a depthwise 3x3 over 112 columns) do not pay; narrow rows, or heavy windows, do.
fn pays_off(g: &Graph, node: kiln_ir::NodeId, pads: &[usize], spatial: usize) -> bool {
    let n = g.node(node);
    let (Some(&x), Some(&w), Some(&y)) = (n.inputs.first(), n.inputs.get(1), n.outputs.first())
    else {
        return false;
    };
    let (xs, ws, ys) = (
        &g.value(x).ty.shape,
        &g.value(w).ty.shape,
        &g.value(y).ty.shape,
    );
    let (Some(&out_w), Some(&stride)) = (
        ys.last(),
        match &n.op {
            Op::Conv { strides, .. } => strides.last(),
            _ => None,
        },
    ) else {
        return false;
    };
    if out_w == 0 || stride == 0 || spatial == 0 {
        return false;
    }
    let border_cols = (pads[spatial - 1] + pads[2 * spatial - 1]).div_ceil(stride);
    let border_share = (border_cols as f64 / out_w as f64).min(1.0);
    // Weights are [out, in / group, taps...]: MACs per output are their product past dim 0.
    let per_output: usize = ws.iter().skip(1).product();
    let macs = (ys.iter().product::<usize>() * per_output) as f64;
    let padded: usize = xs
        .iter()
        .enumerate()
        .map(|(d, &len)| match d.checked_sub(2) {
            Some(a) => len + pads[a] + pads[spatial + a],
            None => len,
        })
        .product();
    6.0 * border_share * macs > padded as f64
}

/// Rewrites each Conv with nonzero padding where that pays (see [`pays_off`]) as described in
/// the module doc; returns whether anything changed.
pub fn explicit_pad(g: &mut Graph) -> Result<bool, IrError> {
    let mut changed = false;
    for id in g.topo_order()? {
        let node = g.node(id);
        let Op::Conv { pads, .. } = &node.op else {
            continue;
        };
        let Some(&x) = node.inputs.first() else {
            continue;
        };
        let spatial = pads.len() / 2;
        if pads.iter().all(|&p| p == 0)
            || g.value(x).ty.rank() != spatial + 2
            || !pays_off(g, id, pads, spatial)
        {
            continue;
        }
        // ONNX Pad order: every axis's begin amount, then every axis's end amount.
        let begin = pads[..spatial].iter().map(|&p| p as i64);
        let end = pads[spatial..].iter().map(|&p| p as i64);
        let pad_amounts: Vec<i64> = [0, 0]
            .into_iter()
            .chain(begin)
            .chain([0, 0])
            .chain(end)
            .collect();
        let name = format!("{}/explicit_pad", node.name);
        let mut conv = node.op.clone();
        if let Op::Conv { pads, .. } = &mut conv {
            pads.iter_mut().for_each(|p| *p = 0);
        }
        let pad = g.add_node(
            name.clone(),
            Op::Pad {
                pads: pad_amounts,
                mode: PadMode::Constant,
                value: 0.0,
            },
            vec![x],
            vec![name],
        )?;
        let padded = g.node(pad).outputs[0];
        g.set_node_input(id, 0, padded);
        g.set_node_op(id, conv).map_err(|source| IrError::Node {
            node: g.node(id).name.clone(),
            op: "Conv".into(),
            source,
        })?;
        changed = true;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{DType, Tensor, TensorType};

    #[test]
    fn padded_conv_reads_an_explicit_pad_and_computes_the_same() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 2, 5, 4]));
        let w_data: Vec<f32> = (0..3 * 2 * 3 * 3)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let w = g.add_const("w", Tensor::from_f32(vec![3, 2, 3, 3], w_data).expect("w"));
        let conv = Op::Conv {
            kernel_shape: vec![3, 3],
            strides: vec![2, 1],
            dilations: vec![1, 1],
            pads: vec![1, 0, 2, 1],
            group: 1,
            activation: kiln_ir::op::Activation::None,
        };
        let c = g
            .add_node("c", conv, vec![x, w], vec!["y".into()])
            .expect("conv");
        g.set_outputs(vec![g.node(c).outputs[0]]);
        let input: Vec<f32> = (0..40).map(|i| (i as f32 * 0.11).cos()).collect();
        let input = Tensor::from_f32(vec![1, 2, 5, 4], input).expect("x");
        let want = kiln_ir::interp::run(&g, std::slice::from_ref(&input)).expect("before");
        assert!(explicit_pad(&mut g).expect("pass"));
        assert!(matches!(&g.node(c).op, Op::Conv { pads, .. } if pads.iter().all(|&p| p == 0)));
        let got = kiln_ir::interp::run(&g, std::slice::from_ref(&input)).expect("after");
        assert_eq!(got, want);
        // Unpadded convolutions are left alone.
        assert!(!explicit_pad(&mut g).expect("second run"));
    }
}
