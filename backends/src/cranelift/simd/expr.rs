//! Kernel expressions translated into lanes: variables, loads, unary and binary operations,
//! selects and casts of a vectorized loop. Float arithmetic, fused multiply-adds, clamps
//! against a constant (compare and blend), per-lane math calls and affine index arithmetic
//! are here; integer lanes go to `integer.rs`, vector addresses and strided loads to
//! `memory.rs`.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use kiln_ir::DType;

use super::analysis::{clamp_bound, is_comparison, Shape};
use super::memory::part_offset;
use super::{not_vectorizable, Lanes, VectorScope, LANES};
use crate::cranelift::translate::{float_instruction, Callees, KernelTranslator, MathFn};
use crate::error::BackendError;
use crate::kernel::{BinOp, Expr, UnOp};

impl<C: Callees> KernelTranslator<'_, '_, C> {
    pub(super) fn vexpr(&mut self, scope: &VectorScope, e: &Expr) -> Result<Lanes, BackendError> {
        Ok(match e {
            Expr::Int(_) | Expr::Const(..) => Lanes::Uniform(self.expr(e)?),
            Expr::Var(v) => {
                if let Some(vars) = scope.vectors.get(v) {
                    Lanes::Vector(vars.iter().map(|&x| self.builder.use_var(x)).collect())
                } else if let Some(vars) = scope.ints.get(v) {
                    Lanes::IVector(vars.iter().map(|&x| self.builder.use_var(x)).collect())
                } else {
                    let value = self.expr(e)?;
                    match scope.affine.get(v) {
                        Some(&k) => Lanes::Affine(value, k),
                        None => Lanes::Uniform(value),
                    }
                }
            }
            Expr::Load { param, index } => match self.vexpr_shape(scope, index) {
                None => Lanes::Uniform(self.expr(e)?),
                Some(1) if self.param_type(*param) != DType::F32 => {
                    Lanes::IVector(self.int_load(scope, *param, index)?)
                }
                Some(1) => {
                    let (addr, offset) = self.vector_address(scope, *param, index)?;
                    let flags = self.vector_load_flags(*param);
                    let parts = (0..scope.parts)
                        .map(|j| {
                            Ok(self.builder.ins().load(
                                types::F32X4,
                                flags,
                                addr,
                                part_offset(offset, j)?,
                            ))
                        })
                        .collect::<Result<_, BackendError>>()?;
                    Lanes::Vector(parts)
                }
                Some(k) => Lanes::Vector(self.gather(scope, *param, index, k)?),
            },
            Expr::Unary(op, a) => {
                let x = self.vexpr(scope, a)?;
                match x {
                    Lanes::Uniform(_) => Lanes::Uniform(self.expr(e)?),
                    Lanes::Affine(v, k) if *op == UnOp::Neg => {
                        Lanes::Affine(self.builder.ins().ineg(v), -k)
                    }
                    Lanes::Vector(v) => Lanes::Vector(
                        v.into_iter()
                            .map(|x| self.vunary(*op, x))
                            .collect::<Result<_, _>>()?,
                    ),
                    Lanes::IVector(v) if *op == UnOp::Neg => {
                        Lanes::IVector(v.into_iter().map(|x| self.builder.ins().ineg(x)).collect())
                    }
                    Lanes::IVector(v) if *op == UnOp::Abs => {
                        Lanes::IVector(v.into_iter().map(|x| self.builder.ins().iabs(x)).collect())
                    }
                    _ => return Err(not_vectorizable("unary")),
                }
            }
            Expr::Binary(op, a, b) => self.vbinary(scope, e, *op, a, b)?,
            Expr::Select(c, a, b) => {
                let (lc, la, lb) = (
                    self.vexpr(scope, c)?,
                    self.vexpr(scope, a)?,
                    self.vexpr(scope, b)?,
                );
                match (lc, la, lb) {
                    (Lanes::Uniform(_), Lanes::Uniform(_), Lanes::Uniform(_)) => {
                        Lanes::Uniform(self.expr(e)?)
                    }
                    (Lanes::Uniform(c), x, y) => {
                        let (x, y) = (
                            self.splat_to_vector(scope, x),
                            self.splat_to_vector(scope, y),
                        );
                        let parts = x
                            .into_iter()
                            .zip(y)
                            .map(|(x, y)| self.builder.ins().select(c, x, y))
                            .collect();
                        Lanes::Vector(parts)
                    }
                    (Lanes::Mask(m), x, y) => {
                        let (x, y) = (
                            self.splat_to_vector(scope, x),
                            self.splat_to_vector(scope, y),
                        );
                        let parts = m
                            .into_iter()
                            .zip(x.into_iter().zip(y))
                            .map(|(m, (x, y))| {
                                let m = self.builder.ins().bitcast(
                                    types::F32X4,
                                    MemFlagsData::new(),
                                    m,
                                );
                                self.builder.ins().bitselect(m, x, y)
                            })
                            .collect();
                        Lanes::Vector(parts)
                    }
                    _ => return Err(not_vectorizable("select")),
                }
            }
            Expr::Cast(t, a) => match self.vexpr(scope, a)? {
                Lanes::Uniform(_) => Lanes::Uniform(self.expr(e)?),
                Lanes::Vector(v) if *t == DType::F32 => Lanes::Vector(v),
                // Float to integer as the scalar path converts: truncate saturating to i32,
                // then wrap to the narrow type.
                Lanes::Vector(v) => {
                    let ints = v
                        .into_iter()
                        .map(|x| self.builder.ins().fcvt_to_sint_sat(types::I32X4, x))
                        .collect();
                    Lanes::IVector(self.narrow_lanes(ints, *t))
                }
                Lanes::IVector(v) if *t == DType::F32 => Lanes::Vector(
                    v.into_iter()
                        .map(|x| self.builder.ins().fcvt_from_sint(types::F32X4, x))
                        .collect(),
                ),
                Lanes::IVector(v) => Lanes::IVector(self.narrow_lanes(v, *t)),
                Lanes::Affine(v, k) if *t == DType::I32 => Lanes::Affine(v, k),
                _ => return Err(not_vectorizable("cast")),
            },
            Expr::Requantize {
                value,
                multiplier,
                shift,
                rounding,
            } => match self.lane_shape(scope, e) {
                Some(Shape::Uniform) => Lanes::Uniform(self.expr(e)?),
                Some(Shape::IVector) => {
                    self.requantize_lanes(scope, (value, multiplier, shift), *rounding)?
                }
                _ => return Err(not_vectorizable("requantization")),
            },
        })
    }

    fn vunary(&mut self, op: UnOp, v: Value) -> Result<Value, BackendError> {
        if let Some(r) = float_instruction(self.builder, op, v) {
            return Ok(r);
        }
        match MathFn::of(op) {
            Some(f) => self.per_lane(f, &[v]),
            None => Err(not_vectorizable("not")),
        }
    }

    /// Calls a scalar math function on each lane of one vector.
    fn per_lane(&mut self, f: MathFn, args: &[Value]) -> Result<Value, BackendError> {
        let mut result = self.builder.ins().f32const(0.0);
        result = self.builder.ins().splat(types::F32X4, result);
        for lane in 0..LANES as u8 {
            let scalars: Vec<Value> = args
                .iter()
                .map(|&v| self.builder.ins().extractlane(v, lane))
                .collect();
            let callee = self.callees.math(self.builder, f)?;
            let call = self.builder.ins().call(callee, &scalars);
            let r = self.builder.inst_results(call)[0];
            result = self.builder.ins().insertlane(result, r, lane);
        }
        Ok(result)
    }

    fn vbinary(
        &mut self,
        scope: &VectorScope,
        e: &Expr,
        op: BinOp,
        a: &Expr,
        b: &Expr,
    ) -> Result<Lanes, BackendError> {
        if let Some((p, q, c)) = self.fusable(op, a, b) {
            let (lp, lq, lc) = (
                self.vexpr(scope, p)?,
                self.vexpr(scope, q)?,
                self.vexpr(scope, c)?,
            );
            if let (Lanes::Uniform(x), Lanes::Uniform(y), Lanes::Uniform(z)) = (&lp, &lq, &lc) {
                return Ok(Lanes::Uniform(self.builder.ins().fma(*x, *y, *z)));
            }
            let (x, y, z) = (
                self.splat_to_vector(scope, lp),
                self.splat_to_vector(scope, lq),
                self.splat_to_vector(scope, lc),
            );
            let parts = (0..scope.parts)
                .map(|j| self.builder.ins().fma(x[j], y[j], z[j]))
                .collect();
            return Ok(Lanes::Vector(parts));
        }
        let (la, lb) = (self.vexpr(scope, a)?, self.vexpr(scope, b)?);
        if let (Lanes::Uniform(_), Lanes::Uniform(_)) = (&la, &lb) {
            return Ok(Lanes::Uniform(self.expr(e)?));
        }
        if matches!(la, Lanes::IVector(_)) || matches!(lb, Lanes::IVector(_)) {
            return self.int_binary(scope, op, (a, la), (b, lb));
        }
        let float = matches!(la, Lanes::Vector(_)) || matches!(lb, Lanes::Vector(_));
        if let (true, Some(bound)) = (float, clamp_bound(op, a, b)) {
            // Max or min against a constant (Relu, Clip): one compare and one blend, where
            // the general NaN-propagating `fmax`/`fmin` lowers to a dozen instructions on
            // x86. A NaN operand fails the compare and is kept, so it still propagates.
            let varying = if matches!(b, Expr::Const(..)) { la } else { lb };
            let x = self.splat_to_vector(scope, varying);
            let c = self.builder.ins().f32const(bound);
            let c = self.builder.ins().splat(types::F32X4, c);
            let cc = if op == BinOp::Max {
                FloatCC::LessThan
            } else {
                FloatCC::GreaterThan
            };
            let parts = x
                .into_iter()
                .map(|x| {
                    let m = self.builder.ins().fcmp(cc, x, c);
                    let m = self
                        .builder
                        .ins()
                        .bitcast(types::F32X4, MemFlagsData::new(), m);
                    self.builder.ins().bitselect(m, c, x)
                })
                .collect();
            return Ok(Lanes::Vector(parts));
        }
        if float {
            let x = self.splat_to_vector(scope, la);
            let y = self.splat_to_vector(scope, lb);
            let mut vector = Vec::with_capacity(scope.parts);
            let mut mask = Vec::with_capacity(scope.parts);
            for (x, y) in x.into_iter().zip(y) {
                let ins = self.builder.ins();
                match op {
                    BinOp::Add => vector.push(ins.fadd(x, y)),
                    BinOp::Sub => vector.push(ins.fsub(x, y)),
                    BinOp::Mul => vector.push(ins.fmul(x, y)),
                    BinOp::Div => vector.push(ins.fdiv(x, y)),
                    BinOp::Max => vector.push(ins.fmax(x, y)),
                    BinOp::Min => vector.push(ins.fmin(x, y)),
                    BinOp::Pow => vector.push(self.per_lane(MathFn::Powf, &[x, y])?),
                    BinOp::Lt => mask.push(ins.fcmp(FloatCC::LessThan, x, y)),
                    BinOp::Le => mask.push(ins.fcmp(FloatCC::LessThanOrEqual, x, y)),
                    BinOp::Gt => mask.push(ins.fcmp(FloatCC::GreaterThan, x, y)),
                    BinOp::Ge => mask.push(ins.fcmp(FloatCC::GreaterThanOrEqual, x, y)),
                    BinOp::Eq => mask.push(ins.fcmp(FloatCC::Equal, x, y)),
                    BinOp::Ne => mask.push(ins.fcmp(FloatCC::NotEqual, x, y)),
                    _ => return Err(not_vectorizable("float op")),
                }
            }
            return Ok(if is_comparison(op) {
                Lanes::Mask(mask)
            } else {
                Lanes::Vector(vector)
            });
        }
        // Affine index arithmetic: the lane-0 value is the scalar computation.
        let shape = |l: &Lanes| match l {
            Lanes::Affine(_, k) => Some(*k),
            Lanes::Uniform(_) => Some(0),
            _ => None,
        };
        let (Some(ka), Some(kb)) = (shape(&la), shape(&lb)) else {
            return Err(not_vectorizable("index op"));
        };
        let value = |l: &Lanes| match l {
            Lanes::Affine(v, _) | Lanes::Uniform(v) => Some(*v),
            _ => None,
        };
        let (Some(x), Some(y)) = (value(&la), value(&lb)) else {
            return Err(not_vectorizable("index op"));
        };
        let constant = |e: &Expr| match e {
            Expr::Int(v) => Some(*v),
            _ => None,
        };
        Ok(match op {
            BinOp::Add => Lanes::Affine(self.builder.ins().iadd(x, y), ka + kb),
            BinOp::Sub => Lanes::Affine(self.builder.ins().isub(x, y), ka - kb),
            BinOp::Mul => {
                let k = match (constant(a), constant(b)) {
                    (_, Some(c)) => ka * c,
                    (Some(c), _) => kb * c,
                    _ => return Err(not_vectorizable("varying product")),
                };
                Lanes::Affine(self.builder.ins().imul(x, y), k)
            }
            _ => return Err(not_vectorizable("index op")),
        })
    }
}
