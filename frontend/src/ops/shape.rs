//! Lowering of the `shape` ONNX ops. (Placeholder: not implemented yet.)

use super::{LowerError, Lowered, NodeCtx};

pub fn lower(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    Err(LowerError::Unsupported(format!("{} is not implemented yet", ctx.op_type)))
}
