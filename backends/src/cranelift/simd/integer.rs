//! Integer lanes: kernel integers held as `i32x4` (i8, u8 and i16 data widened on load and
//! packed on store, as the scalar path holds narrow integers in `i32` registers), wrapped to
//! narrow types, integer arithmetic, and requantization run lane by lane.

use cranelift_codegen::ir::{types, ConstantData, Endianness, InstBuilder, MemFlagsData, Value};
use kiln_ir::DType;

use super::memory::part_offset_sized;
use super::{not_vectorizable, Lanes, VectorScope, LANES};
use crate::cranelift::translate::{common_type, int_constant, Callees, KernelTranslator, Shift};
use crate::error::BackendError;
use crate::kernel::{BinOp, Expr};

impl<C: Callees> KernelTranslator<'_, '_, C> {
    /// A requantization of integer lanes: the scalar sequence on each lane (it needs a 64-bit
    /// product), uniform operands evaluated once.
    pub(super) fn requantize_lanes(
        &mut self,
        scope: &VectorScope,
        (value, multiplier, shift): (&Expr, &Expr, &Expr),
        rounding: kiln_ir::fixed_point::Rounding,
    ) -> Result<Lanes, BackendError> {
        /// An operand: a constant shift, one scalar for every lane, or `i32x4` parts.
        enum Operand {
            Const(i32),
            Scalar(Value),
            Parts(Vec<Value>),
        }
        let operand = |t: &mut Self, e: &Expr| -> Result<Operand, BackendError> {
            Ok(match t.vexpr(scope, e)? {
                Lanes::Uniform(_) => Operand::Scalar(t.expr_as(e, DType::I32)?),
                lanes => Operand::Parts(t.int_parts(scope, (e, lanes), DType::I32)?),
            })
        };
        let x = operand(self, value)?;
        let m = operand(self, multiplier)?;
        let s = match int_constant(shift) {
            Some(c) => Operand::Const(c),
            None => operand(self, shift)?,
        };
        let m_const = int_constant(multiplier);
        let lane = |t: &mut Self, o: &Operand, j: usize, l: u8| match o {
            Operand::Const(c) => Shift::Const(*c),
            Operand::Scalar(v) => Shift::Value(*v),
            Operand::Parts(p) => Shift::Value(t.builder.ins().extractlane(p[j], l)),
        };
        let value_of = |s: Shift| match s {
            Shift::Value(v) => Ok(v),
            Shift::Const(_) => Err(not_vectorizable("constant operand")),
        };
        let mut parts = Vec::with_capacity(scope.parts);
        for j in 0..scope.parts {
            let zero = self.builder.ins().iconst(types::I32, 0);
            let mut result = self.builder.ins().splat(types::I32X4, zero);
            for l in 0..LANES as u8 {
                let xl = value_of(lane(self, &x, j, l))?;
                let ml = value_of(lane(self, &m, j, l))?;
                let sl = lane(self, &s, j, l);
                let r = self.requantize_values(xl, ml, m_const, sl, rounding);
                result = self.builder.ins().insertlane(result, r, l);
            }
            parts.push(result);
        }
        Ok(Lanes::IVector(parts))
    }

    /// Wraps `i32` lanes to a narrow type's range, as the scalar `narrow` does per value.
    pub(super) fn narrow_lanes(&mut self, parts: Vec<Value>, t: DType) -> Vec<Value> {
        let shift = match t {
            DType::I8 => 24,
            DType::I16 => 16,
            DType::U8 | DType::Bool => {
                let mask = self.builder.ins().iconst(types::I32, 0xff);
                let mask = self.builder.ins().splat(types::I32X4, mask);
                return parts
                    .into_iter()
                    .map(|x| self.builder.ins().band(x, mask))
                    .collect();
            }
            _ => return parts,
        };
        parts
            .into_iter()
            .map(|x| {
                let up = self.builder.ins().ishl_imm_s(x, shift);
                self.builder.ins().sshr_imm_s(up, shift)
            })
            .collect()
    }

    /// The `i32x4` parts of an integer operand converted to type `t`: a uniform one converted
    /// as the scalar path would, then splatted.
    pub(super) fn int_parts(
        &mut self,
        scope: &VectorScope,
        (e, lanes): (&Expr, Lanes),
        t: DType,
    ) -> Result<Vec<Value>, BackendError> {
        match lanes {
            Lanes::IVector(v) => Ok(self.narrow_lanes(v, t)),
            Lanes::Uniform(_) => {
                let v = self.expr_as(e, t)?;
                Ok(vec![self.builder.ins().splat(types::I32X4, v); scope.parts])
            }
            _ => Err(not_vectorizable("integer operand")),
        }
    }

    /// Integer arithmetic on `i32` lanes, operands converted to their common type first, as
    /// the scalar `binary` does.
    pub(super) fn int_binary(
        &mut self,
        scope: &VectorScope,
        op: BinOp,
        (a, la): (&Expr, Lanes),
        (b, lb): (&Expr, Lanes),
    ) -> Result<Lanes, BackendError> {
        let t = common_type(self.type_of(a), self.type_of(b));
        let x = self.int_parts(scope, (a, la), t)?;
        let y = self.int_parts(scope, (b, lb), t)?;
        let parts = x
            .into_iter()
            .zip(y)
            .map(|(x, y)| {
                let ins = self.builder.ins();
                Ok(match op {
                    BinOp::Add => ins.iadd(x, y),
                    BinOp::Sub => ins.isub(x, y),
                    BinOp::Mul => ins.imul(x, y),
                    BinOp::Max => ins.smax(x, y),
                    BinOp::Min => ins.smin(x, y),
                    _ => return Err(not_vectorizable("integer op")),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Lanes::IVector(parts))
    }

    /// A stride-one load of integer `param` as `i32x4` parts: whole vectors for i32, and for
    /// narrow types one scalar load of four elements widened lane by lane (never reading past
    /// the four elements the scalar code reads).
    pub(super) fn int_load(
        &mut self,
        scope: &VectorScope,
        param: usize,
        index: &Expr,
    ) -> Result<Vec<Value>, BackendError> {
        let t = self.param_type(param);
        let size = self.elem_bytes(param);
        let (addr, offset) = self.vector_address(scope, param, index)?;
        let flags = self.vector_load_flags(param);
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        let mut parts = Vec::with_capacity(scope.parts);
        for j in 0..scope.parts {
            let at = part_offset_sized(offset, j, size)?;
            let v = match t {
                DType::I32 => self.builder.ins().load(types::I32X4, flags, addr, at),
                DType::I8 | DType::U8 => {
                    let word = self.builder.ins().load(types::I32, flags, addr, at);
                    let v = self.builder.ins().scalar_to_vector(types::I32X4, word);
                    let bytes = self.builder.ins().bitcast(types::I8X16, little, v);
                    if t == DType::I8 {
                        let half = self.builder.ins().swiden_low(bytes);
                        self.builder.ins().swiden_low(half)
                    } else {
                        let half = self.builder.ins().uwiden_low(bytes);
                        self.builder.ins().uwiden_low(half)
                    }
                }
                DType::I16 => {
                    let quad = self.builder.ins().load(types::I64, flags, addr, at);
                    let v = self.builder.ins().scalar_to_vector(types::I64X2, quad);
                    let halves = self.builder.ins().bitcast(types::I16X8, little, v);
                    self.builder.ins().swiden_low(halves)
                }
                other => return Err(not_vectorizable(&format!("{other} lanes"))),
            };
            parts.push(v);
        }
        Ok(parts)
    }

    /// A stride-one store to integer `param`: the value converted to the param's type as the
    /// scalar store does, then the low bytes of each lane packed and stored in one access.
    pub(super) fn int_store(
        &mut self,
        scope: &mut VectorScope,
        param: usize,
        index: &Expr,
        value: &Expr,
    ) -> Result<(), BackendError> {
        let t = self.param_type(param);
        let size = self.elem_bytes(param);
        let lanes = self.vexpr(scope, value)?;
        let parts = self.int_parts(scope, (value, lanes), t)?;
        let (addr, offset) = self.vector_address(scope, param, index)?;
        let flags = MemFlagsData::new().with_notrap();
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        // Byte lanes to keep, low byte first: the low `size` bytes of each i32 lane.
        let keep: Vec<u8> = (0..LANES as u8)
            .flat_map(|lane| (0..size as u8).map(move |b| lane * 4 + b))
            .collect();
        let mut mask = keep.clone();
        mask.resize(16, 0);
        let mask = self
            .builder
            .func
            .dfg
            .immediates
            .push(ConstantData::from(mask));
        for (j, v) in parts.into_iter().enumerate() {
            let at = part_offset_sized(offset, j, size)?;
            if t == DType::I32 {
                self.builder.ins().store(flags, v, addr, at);
                continue;
            }
            let bytes = self.builder.ins().bitcast(types::I8X16, little, v);
            let packed = self.builder.ins().shuffle(bytes, bytes, mask);
            // Four packed bytes are lane 0 of an i32x4; four packed halves of an i64x2.
            let wide = if keep.len() == 4 {
                types::I32X4
            } else {
                types::I64X2
            };
            let packed = self.builder.ins().bitcast(wide, little, packed);
            let low = self.builder.ins().extractlane(packed, 0);
            self.builder.ins().store(flags, low, addr, at);
        }
        Ok(())
    }
}
