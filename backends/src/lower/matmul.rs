//! Kernel lowering of the `matmul` ops. (Placeholder: not implemented yet.)

use kiln_ir::Op;

use super::Lowering;
use crate::error::BackendError;
use crate::kernel::Stmt;

pub fn lower(op: &Op, _cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    crate::cannot!("{} has no kernel lowering yet", op.name())
}
