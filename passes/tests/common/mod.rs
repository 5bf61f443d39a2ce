//! Graph-building helpers shared by the pass tests.
#![allow(dead_code)] // each test file uses a different subset

use kiln_ir::{Activation, DType, Graph, Op, Tensor, TensorType, ValueId};

pub fn f32_ty(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, shape.to_vec())
}

/// Deterministic values in [-1, 1).
pub fn ramp(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    let v = (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            ((s >> 8) as f32 / (1u32 << 23) as f32) - 1.0
        })
        .collect();
    Tensor::from_f32(shape.to_vec(), v).expect("ramp")
}

pub fn konst(g: &mut Graph, name: &str, shape: &[usize], seed: u32) -> ValueId {
    g.add_const(name, ramp(shape, seed))
}

pub fn scalar(g: &mut Graph, name: &str, v: f32) -> ValueId {
    g.add_const(name, Tensor::scalar_f32(v))
}

/// Adds a node with one output named after it; returns the output.
pub fn node(g: &mut Graph, name: &str, op: Op, inputs: Vec<ValueId>) -> ValueId {
    let id = g
        .add_node(name, op, inputs, vec![name.to_string()])
        .expect("node");
    g.node(id).outputs[0]
}

/// A 3x3, stride-1 Conv.
pub fn conv(pads: [usize; 4], group: usize) -> Op {
    Op::Conv {
        kernel_shape: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: pads.to_vec(),
        group,
        activation: Activation::None,
    }
}

pub const ADD: Op = Op::Add {
    activation: Activation::None,
};
pub const MATMUL: Op = Op::MatMul {
    activation: Activation::None,
    a_perm: Vec::new(),
    b_perm: Vec::new(),
};

/// How many nodes run op `name`.
pub fn count(g: &Graph, name: &str) -> usize {
    g.node_ids()
        .into_iter()
        .filter(|&n| g.node(n).op.name() == name)
        .count()
}
