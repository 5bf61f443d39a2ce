//! Ops of the `pool` family: shape inference and reference evaluation.
//! (Placeholder: the ops of this family are not implemented yet.)

use crate::error::OpError;
use crate::op::Op;
use crate::tensor::{Tensor, TensorType};

pub fn infer(op: &Op, _inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    Err(OpError::Unsupported(format!("{} is not implemented yet", op.name())))
}

pub fn eval(op: &Op, _inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    Err(OpError::Unsupported(format!("{} is not implemented yet", op.name())))
}
