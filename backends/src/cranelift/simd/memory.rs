//! Memory access in a vectorized loop: the base address and offset of a stride-one access,
//! the byte offsets of its parts, load flags, and float loads at other strides (stride two
//! deinterleaved with one shuffle, larger strides gathered lane by lane).

use cranelift_codegen::ir::{types, ConstantData, Endianness, InstBuilder, MemFlagsData, Value};
use kiln_ir::DType;

use super::{not_vectorizable, Lanes, VectorScope, LANES};
use crate::cranelift::translate::{split_offset, Callees, KernelTranslator};
use crate::error::BackendError;
use crate::kernel::Expr;

impl<C: Callees> KernelTranslator<'_, '_, C> {
    /// Base address and constant byte offset of the lane-0 element of a stride-one access.
    pub(super) fn vector_address(
        &mut self,
        scope: &VectorScope,
        param: usize,
        index: &Expr,
    ) -> Result<(Value, i32), BackendError> {
        let (rest, constant) = split_offset(index);
        let size = self.elem_bytes(param);
        let offset = i32::try_from(constant * size).map_err(|_| not_vectorizable("offset"))?;
        let base = match rest {
            Some(rest) => match self.vexpr(scope, rest)? {
                Lanes::Affine(lane0, 1) => self.element_address(param, lane0)?,
                other => return Err(not_vectorizable(&format!("index {other:?}"))),
            },
            None => return Err(not_vectorizable("constant vector index")),
        };
        Ok((base, offset))
    }

    /// A load at stride `k` (not one) in the loop: scalar loads gathered into lanes.
    pub(super) fn gather(
        &mut self,
        scope: &VectorScope,
        param: usize,
        index: &Expr,
        k: i64,
    ) -> Result<Vec<Value>, BackendError> {
        let (rest, constant) = split_offset(index);
        let Some(rest) = rest else {
            return Err(not_vectorizable("constant gather index"));
        };
        let Lanes::Affine(lane0, _) = self.vexpr(scope, rest)? else {
            return Err(not_vectorizable("gather index"));
        };
        let base = self.element_address(param, lane0)?;
        if k == 2 {
            return self.deinterleave(scope, param, base, constant);
        }
        let flags = self.load_flags(param);
        let zero = self.builder.ins().f32const(0.0);
        let empty = self.builder.ins().splat(types::F32X4, zero);
        let mut parts = Vec::with_capacity(scope.parts);
        for j in 0..scope.parts {
            let mut v = empty;
            for lane in 0..LANES {
                let element = constant + (j * LANES + lane) as i64 * k;
                let offset =
                    i32::try_from(element * 4).map_err(|_| not_vectorizable("gather offset"))?;
                let x = self.builder.ins().load(types::F32, flags, base, offset);
                v = self.builder.ins().insertlane(v, x, lane as u8);
            }
            parts.push(v);
        }
        Ok(parts)
    }

    /// A stride-two load (a stride-2 convolution's window row): lanes `e, e+2, e+4, e+6` are
    /// lanes 0 and 2 of the vector at `e` and lanes 1 and 3 of the vector at `e + 3`, one
    /// shuffle (`shufps`, `uzp`-like) instead of four loads and inserts. Both vectors lie
    /// within the seven elements the scalar loads would read, so nothing past the buffer is
    /// touched.
    fn deinterleave(
        &mut self,
        scope: &VectorScope,
        param: usize,
        base: Value,
        constant: i64,
    ) -> Result<Vec<Value>, BackendError> {
        let flags = self.vector_load_flags(param);
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        let mask: Vec<u8> = [0u8, 2, 5, 7]
            .iter()
            .flat_map(|&lane| (0..4).map(move |b| lane * 4 + b))
            .collect();
        let mask = self
            .builder
            .func
            .dfg
            .immediates
            .push(ConstantData::from(mask));
        let mut parts = Vec::with_capacity(scope.parts);
        for j in 0..scope.parts {
            let element = constant + (2 * j * LANES) as i64;
            let byte = |e: i64| i32::try_from(e * 4).map_err(|_| not_vectorizable("offset"));
            let (lo, hi) = (byte(element)?, byte(element + 3)?);
            let a = self.builder.ins().load(types::F32X4, flags, base, lo);
            let b = self.builder.ins().load(types::F32X4, flags, base, hi);
            let a = self.builder.ins().bitcast(types::I8X16, little, a);
            let b = self.builder.ins().bitcast(types::I8X16, little, b);
            let even = self.builder.ins().shuffle(a, b, mask);
            parts.push(self.builder.ins().bitcast(types::F32X4, little, even));
        }
        Ok(parts)
    }

    /// Flags of a vector load from `param`: unaligned (only the scalar flags' alignment promise
    /// is dropped), and movable as scalar loads are.
    pub(super) fn vector_load_flags(&self, param: usize) -> MemFlagsData {
        self.movable(param, MemFlagsData::new().with_notrap())
    }

    pub(super) fn param_type(&self, param: usize) -> DType {
        self.kernel
            .params
            .get(param)
            .map_or(DType::F32, |p| p.dtype)
    }

    pub(super) fn elem_bytes(&self, param: usize) -> i64 {
        self.param_type(param).size_bytes() as i64
    }
}

/// The byte offset of part `j` of a stride-one access whose lane 0 is at `offset`.
pub(super) fn part_offset(offset: i32, j: usize) -> Result<i32, BackendError> {
    part_offset_sized(offset, j, 4)
}

/// `part_offset` for elements of `size` bytes.
pub(super) fn part_offset_sized(offset: i32, j: usize, size: i64) -> Result<i32, BackendError> {
    offset
        .checked_add((j as i64 * LANES as i64 * size) as i32)
        .ok_or_else(|| not_vectorizable("offset"))
}
