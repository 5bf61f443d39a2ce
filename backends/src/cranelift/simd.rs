//! Vectorization of inner loops over channels (128-bit: f32x4).

use crate::error::BackendError;
use crate::kernel::{Kernel, Stmt};

use super::translate::{Callees, KernelTranslator};

/// A vectorized body for `kernel`, when it has loops this pass knows how to vectorize.
pub fn vectorize(_kernel: &Kernel) -> Option<Vec<Stmt>> {
    None
}

pub fn translate<C: Callees>(
    t: &mut KernelTranslator<'_, '_, C>,
    body: &[Stmt],
) -> Result<(), BackendError> {
    t.stmts(body)
}
