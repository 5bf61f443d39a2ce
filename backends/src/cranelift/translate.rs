//! Kernel IR to Cranelift IR: one kernel becomes one function over buffer pointers.
//!
//! Semantics follow the C emitter exactly (C99 on a two's-complement target), so the two
//! backends agree bit for bit where C does:
//! - integers narrower than 32 bits live as `i32` values holding their C-promoted value (sign-
//!   or zero-extended); they are narrowed where C converts: stores, assignments to narrow
//!   locals, casts, and the runtime helpers that return the narrow type (div, rem, min, max, abs);
//! - comparisons and logical operators give `i32` 0 or 1;
//! - integer division and remainder by zero give 0 (the runtime's `kiln_div`/`kiln_rem`), and
//!   `MIN / -1` wraps instead of trapping;
//! - float-to-int casts saturate (C leaves out-of-range values undefined);
//! - `Select`, `And` and `Or` evaluate lazily when an operand loads memory, as C's `?:`, `&&`
//!   and `||` do, so a guarded out-of-bounds index is never dereferenced.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, AbiParam, FuncRef, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use kiln_ir::fixed_point::Rounding;
use kiln_ir::DType;

use crate::error::BackendError;
use crate::kernel::{BinOp, Expr, Kernel, ScalarType, Stmt, UnOp, Var};

/// Math functions the kernels call, by their C names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MathFn {
    Expf,
    Logf,
    Tanhf,
    Erff,
    Powf,
}

impl MathFn {
    pub const ALL: [MathFn; 5] = [
        MathFn::Expf,
        MathFn::Logf,
        MathFn::Tanhf,
        MathFn::Erff,
        MathFn::Powf,
    ];

    /// The libm function computing a unary op, if it is one.
    pub fn of(op: UnOp) -> Option<MathFn> {
        match op {
            UnOp::Exp => Some(MathFn::Expf),
            UnOp::Log => Some(MathFn::Logf),
            UnOp::Tanh => Some(MathFn::Tanhf),
            UnOp::Erf => Some(MathFn::Erff),
            _ => None,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            MathFn::Expf => "expf",
            MathFn::Logf => "logf",
            MathFn::Tanhf => "tanhf",
            MathFn::Erff => "erff",
            MathFn::Powf => "powf",
        }
    }

    pub fn arity(self) -> usize {
        if self == MathFn::Powf {
            2
        } else {
            1
        }
    }
}

/// The float unary ops that are single instructions, for `f32` and `f32x4` alike.
pub fn float_instruction(b: &mut FunctionBuilder, op: UnOp, x: Value) -> Option<Value> {
    Some(match op {
        UnOp::Neg => b.ins().fneg(x),
        UnOp::Abs => b.ins().fabs(x),
        UnOp::Sqrt => b.ins().sqrt(x),
        UnOp::Floor => b.ins().floor(x),
        UnOp::Ceil => b.ins().ceil(x),
        UnOp::RoundEven => b.ins().nearest(x),
        _ => return None,
    })
}

/// Resolves the functions a kernel calls into references inside the function being built.
pub trait Callees {
    fn math(&mut self, builder: &mut FunctionBuilder, f: MathFn) -> Result<FuncRef, BackendError>;
    /// `int64_t kiln_pow_i64(int64_t, int64_t)`, defined in the same module.
    fn pow_i64(&mut self, builder: &mut FunctionBuilder) -> Result<FuncRef, BackendError>;
}

/// The register type holding values of a kernel scalar type.
pub fn reg_type(t: ScalarType) -> Type {
    match t {
        DType::F32 => types::F32,
        DType::I64 => types::I64,
        _ => types::I32,
    }
}

fn mem() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// Translates one kernel's body. The function's block parameters are the buffer pointers, in
/// the kernel's parameter order.
pub struct KernelTranslator<'a, 'b, C: Callees> {
    pub kernel: &'a Kernel,
    pub builder: &'a mut FunctionBuilder<'b>,
    pub params: Vec<Value>,
    pub pointer: Type,
    pub callees: &'a mut C,
    /// Vectorize loops that qualify (see `simd/mod.rs`).
    pub simd: bool,
    /// No output of this kernel shares memory with an input (it does not work in place), so
    /// input loads may be marked read-only: Cranelift then treats them as pure, hoisting
    /// loop-invariant ones (weights) out of loops and placing the others next to their use,
    /// which keeps register pressure down.
    pub readonly_inputs: bool,
    /// Fuse float `a * b + c` into `fma` (the ISA has it; see `CraneliftOptions::fma`).
    pub fma: bool,
    /// 128-bit vectors per vectorized iteration (see `CraneliftOptions::vector_parts`).
    pub vector_parts: usize,
    vars: HashMap<Var, Variable>,
}

impl<'a, 'b, C: Callees> KernelTranslator<'a, 'b, C> {
    pub fn new(
        kernel: &'a Kernel,
        builder: &'a mut FunctionBuilder<'b>,
        params: Vec<Value>,
        pointer: Type,
        callees: &'a mut C,
    ) -> Self {
        KernelTranslator {
            kernel,
            builder,
            params,
            pointer,
            callees,
            simd: false,
            readonly_inputs: false,
            fma: false,
            vector_parts: 1,
            vars: HashMap::new(),
        }
    }

    pub(super) fn var_type_of(&self, v: Var) -> ScalarType {
        self.var_type(v)
    }

    fn var_type(&self, v: Var) -> ScalarType {
        var_type(self.kernel, v)
    }

    pub(super) fn variable(&mut self, v: Var) -> Variable {
        if let Some(&var) = self.vars.get(&v) {
            return var;
        }
        let ty = reg_type(self.var_type(v));
        let var = self.builder.declare_var(ty);
        self.vars.insert(v, var);
        var
    }

    /// The kernel scalar type of an expression (as the C emitter types it).
    pub fn type_of(&self, e: &Expr) -> ScalarType {
        expr_type(self.kernel, e)
    }

    pub fn stmts(&mut self, body: &[Stmt]) -> Result<(), BackendError> {
        for s in body {
            self.stmt(s)?;
        }
        Ok(())
    }

    pub(super) fn scalar_stmt(&mut self, s: &Stmt) -> Result<(), BackendError> {
        self.stmt(s)
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), BackendError> {
        match s {
            Stmt::For {
                var, extent, body, ..
            } => self.for_loop(*var, *extent, body),
            Stmt::Let { var, ty, init } => {
                let value = self.expr_as(init, *ty)?;
                let v = self.variable(*var);
                self.builder.def_var(v, value);
                Ok(())
            }
            Stmt::Assign { var, value } => {
                let ty = self.var_type(*var);
                let value = self.expr_as(value, ty)?;
                let v = self.variable(*var);
                self.builder.def_var(v, value);
                Ok(())
            }
            Stmt::Store {
                param,
                index,
                value,
            } => {
                let dtype = self.param_dtype(*param)?;
                let value = self.expr_as(value, dtype)?;
                let (addr, offset) = self.address(*param, index)?;
                let b = self.builder.ins();
                match dtype {
                    DType::I8 | DType::U8 | DType::Bool => {
                        b.istore8(mem(), value, addr, offset);
                    }
                    DType::I16 => {
                        b.istore16(mem(), value, addr, offset);
                    }
                    _ => {
                        b.store(mem(), value, addr, offset);
                    }
                }
                Ok(())
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let c = self.truth(cond)?;
                let then_block = self.builder.create_block();
                let else_block = self.builder.create_block();
                let join = self.builder.create_block();
                self.builder.ins().brif(c, then_block, &[], else_block, &[]);
                self.builder.switch_to_block(then_block);
                self.builder.seal_block(then_block);
                self.stmts(then)?;
                self.builder.ins().jump(join, &[]);
                self.builder.switch_to_block(else_block);
                self.builder.seal_block(else_block);
                self.stmts(otherwise)?;
                self.builder.ins().jump(join, &[]);
                self.builder.switch_to_block(join);
                self.builder.seal_block(join);
                Ok(())
            }
        }
    }

    /// `for v in 0..extent`, as a bottom-tested loop (extents are constants, never zero here,
    /// but a zero extent is still skipped).
    fn for_loop(&mut self, var: Var, extent: usize, body: &[Stmt]) -> Result<(), BackendError> {
        if self.simd {
            if let Some(int_locals) = super::simd::lane_locals(self.kernel, var, extent, body) {
                return self.vector_loop(var, extent, body, &int_locals);
            }
        }
        self.scalar_loop_from(var, 0, extent, body)
    }

    /// `for v in start..extent`, scalar.
    pub(super) fn scalar_loop_from(
        &mut self,
        var: Var,
        start: usize,
        extent: usize,
        body: &[Stmt],
    ) -> Result<(), BackendError> {
        self.counted_loop(var, start, extent, 1, &mut |t| t.stmts(body))
    }

    /// `for var in (start..end).step_by(step)`, the body emitted once by `body`: nothing for an
    /// empty range, straight-line code for a single iteration, otherwise a bottom-tested loop.
    pub(super) fn counted_loop(
        &mut self,
        var: Var,
        start: usize,
        end: usize,
        step: usize,
        body: &mut dyn FnMut(&mut Self) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        if end <= start {
            return Ok(());
        }
        let counter = self.variable(var);
        let first = self.builder.ins().iconst(types::I32, start as i64);
        self.builder.def_var(counter, first);
        if start + step >= end {
            return body(self);
        }
        let body_block = self.builder.create_block();
        let exit = self.builder.create_block();
        self.builder.ins().jump(body_block, &[]);
        self.builder.switch_to_block(body_block);
        body(self)?;
        let i = self.builder.use_var(counter);
        let next = self.builder.ins().iadd_imm_s(i, step as i64);
        self.builder.def_var(counter, next);
        let more = self
            .builder
            .ins()
            .icmp_imm_s(IntCC::SignedLessThan, next, end as i64);
        self.builder.ins().brif(more, body_block, &[], exit, &[]);
        self.builder.seal_block(body_block);
        self.builder.switch_to_block(exit);
        self.builder.seal_block(exit);
        Ok(())
    }

    fn param_dtype(&self, param: usize) -> Result<DType, BackendError> {
        self.kernel
            .params
            .get(param)
            .map(|p| p.dtype)
            .ok_or_else(|| BackendError::Lowering(format!("kernel parameter {param} is missing")))
    }

    /// Address of element `index` (an `i32` value) of parameter `param`.
    pub(super) fn element_address(
        &mut self,
        param: usize,
        index: Value,
    ) -> Result<Value, BackendError> {
        let size = self.param_dtype(param)?.size_bytes() as i64;
        let base = *self.params.get(param).ok_or_else(|| {
            BackendError::Lowering(format!("kernel parameter {param} is missing"))
        })?;
        let i = if self.pointer == types::I32 {
            index
        } else {
            self.builder.ins().sextend(self.pointer, index)
        };
        // A shift, not a multiply: backends fold `base + (i << k)` into one addressing mode.
        let offset = if size.count_ones() == 1 {
            self.builder
                .ins()
                .ishl_imm_s(i, i64::from(size.trailing_zeros()))
        } else {
            self.builder.ins().imul_imm_s(i, size)
        };
        Ok(self.builder.ins().iadd(base, offset))
    }

    /// Address of element `index` of parameter `param`, as a base and a constant byte offset
    /// (the memory instruction's immediate), so `X[i + 3]` costs no extra add.
    fn address(&mut self, param: usize, index: &Expr) -> Result<(Value, i32), BackendError> {
        let size = self.param_dtype(param)?.size_bytes() as i64;
        let (rest, constant) = split_offset(index);
        let offset = i32::try_from(constant * size).ok();
        match (rest, offset) {
            (None, Some(offset)) => {
                let base = *self.params.get(param).ok_or_else(|| {
                    BackendError::Lowering(format!("kernel parameter {param} is missing"))
                })?;
                Ok((base, offset))
            }
            (Some(rest), Some(offset)) => {
                let i = self.expr_as(rest, DType::I32)?;
                Ok((self.element_address(param, i)?, offset))
            }
            (_, None) => {
                let i = self.expr_as(index, DType::I32)?;
                Ok((self.element_address(param, i)?, 0))
            }
        }
    }

    /// A condition as a Cranelift truth value (non-zero is true).
    fn truth(&mut self, e: &Expr) -> Result<Value, BackendError> {
        self.expr(e)
    }

    /// Evaluates `e` and converts it to `target` as a C assignment would.
    pub fn expr_as(&mut self, e: &Expr, target: ScalarType) -> Result<Value, BackendError> {
        let from = self.type_of(e);
        let v = self.expr(e)?;
        Ok(self.convert(v, from, target))
    }

    /// C conversion of a value of type `from` to type `to`.
    fn convert(&mut self, v: Value, from: ScalarType, to: ScalarType) -> Value {
        if from == to {
            return v;
        }
        let (rf, rt) = (reg_type(from), reg_type(to));
        let b = &mut *self.builder;
        let widened = match (from == DType::F32, to == DType::F32) {
            (true, true) => v,
            // int -> float: promoted narrow values are exact in i32.
            (false, true) => b.ins().fcvt_from_sint(types::F32, v),
            // float -> int: truncate toward zero, saturating.
            (true, false) => b.ins().fcvt_to_sint_sat(rt, v),
            (false, false) => {
                if rf == rt {
                    v
                } else if rt == types::I64 {
                    b.ins().sextend(types::I64, v)
                } else {
                    b.ins().ireduce(types::I32, v)
                }
            }
        };
        self.narrow(widened, to)
    }

    /// Wraps an `i32` register to the range of a narrow type, as C's conversion does.
    fn narrow(&mut self, v: Value, t: ScalarType) -> Value {
        let b = &mut *self.builder;
        match t {
            DType::I8 => {
                let r = b.ins().ireduce(types::I8, v);
                b.ins().sextend(types::I32, r)
            }
            DType::U8 | DType::Bool => b.ins().band_imm_s(v, 0xff),
            DType::I16 => {
                let r = b.ins().ireduce(types::I16, v);
                b.ins().sextend(types::I32, r)
            }
            _ => v,
        }
    }

    fn bool_to_i32(&mut self, flag: Value) -> Value {
        self.builder.ins().uextend(types::I32, flag)
    }

    pub fn expr(&mut self, e: &Expr) -> Result<Value, BackendError> {
        Ok(match e {
            Expr::Int(v) => self.builder.ins().iconst(types::I32, *v as i32 as i64),
            Expr::Const(v, t) => match t {
                DType::F32 => self.builder.ins().f32const(*v as f32),
                DType::I64 => self.builder.ins().iconst(types::I64, *v as i64),
                other => {
                    let c = self
                        .builder
                        .ins()
                        .iconst(types::I32, *v as i64 as i32 as i64);
                    self.narrow(c, *other)
                }
            },
            Expr::Var(v) => {
                let var = self.variable(*v);
                self.builder.use_var(var)
            }
            Expr::Load { param, index } => {
                let dtype = self.param_dtype(*param)?;
                let (addr, offset) = self.address(*param, index)?;
                let flags = self.load_flags(*param);
                let b = self.builder.ins();
                match dtype {
                    DType::I8 => b.sload8(types::I32, mem(), addr, offset),
                    DType::U8 | DType::Bool => b.uload8(types::I32, mem(), addr, offset),
                    DType::I16 => b.sload16(types::I32, mem(), addr, offset),
                    other => b.load(reg_type(other), flags, addr, offset),
                }
            }
            Expr::Unary(op, a) => self.unary(*op, a)?,
            Expr::Binary(op, a, b) => self.binary(*op, a, b)?,
            Expr::Select(c, a, b) => {
                let t = self.type_of(e);
                if loads_memory(a) || loads_memory(b) {
                    self.lazy_select(c, a, b, t)?
                } else {
                    let cv = self.truth(c)?;
                    let av = self.expr_as(a, t)?;
                    let bv = self.expr_as(b, t)?;
                    self.builder.ins().select(cv, av, bv)
                }
            }
            Expr::Cast(t, a) => self.expr_as(a, *t)?,
            Expr::Requantize {
                value,
                multiplier,
                shift,
                rounding,
            } => self.requantize(value, multiplier, shift, *rounding)?,
        })
    }

    /// `Expr::Requantize`: the operands evaluated, then [`Self::requantize_values`].
    fn requantize(
        &mut self,
        value: &Expr,
        multiplier: &Expr,
        shift: &Expr,
        rounding: Rounding,
    ) -> Result<Value, BackendError> {
        let x = self.expr_as(value, DType::I32)?;
        let m = self.expr_as(multiplier, DType::I32)?;
        let s = match int_constant(shift) {
            Some(c) => Shift::Const(c),
            None => Shift::Value(self.expr_as(shift, DType::I32)?),
        };
        Ok(self.requantize_values(x, m, int_constant(multiplier), s, rounding))
    }

    /// The steps of the C runtime's `kiln_requantize` on `i32` values: the left shift, the
    /// rounding doubling high multiply in i64 (`floor((a * m + 2^30) / 2^31)`, saturated when
    /// both operands are `i32::MIN`) and the rounding right shift. A constant multiplier
    /// (`m_const`) or shift (per-tensor requantization) drops the steps it makes no-ops.
    pub(super) fn requantize_values(
        &mut self,
        x: Value,
        m: Value,
        m_const: Option<i32>,
        shift: Shift,
        rounding: Rounding,
    ) -> Value {
        if rounding == Rounding::HalfEven {
            return self.requantize_half_even(x, m, shift);
        }
        let b = &mut *self.builder;
        // (left, right) shift amounts: constants, or values clamped as the runtime clamps them.
        let (left, right) = match shift {
            Shift::Const(s) => {
                let s = s.clamp(-31, 31);
                (Shift::Const(s.max(0)), Shift::Const((-s).max(0)))
            }
            Shift::Value(s) => {
                let lo = b.ins().iconst(types::I32, -31);
                let hi = b.ins().iconst(types::I32, 31);
                let zero = b.ins().iconst(types::I32, 0);
                let s = b.ins().smax(s, lo);
                let s = b.ins().smin(s, hi);
                let left = b.ins().smax(s, zero);
                let neg = b.ins().ineg(s);
                let right = b.ins().smax(neg, zero);
                (Shift::Value(left), Shift::Value(right))
            }
        };
        let a = match left {
            Shift::Const(0) => x,
            Shift::Const(k) => b.ins().ishl_imm_s(x, i64::from(k)),
            Shift::Value(k) => b.ins().ishl(x, k),
        };
        let wide_a = b.ins().sextend(types::I64, a);
        let wide_m = b.ins().sextend(types::I64, m);
        let product = b.ins().imul(wide_a, wide_m);
        let nudged = b.ins().iadd_imm_s(product, 1 << 30);
        let shifted = b.ins().sshr_imm_s(nudged, 31);
        let mut high = b.ins().ireduce(types::I32, shifted);
        if m_const.is_none_or(|c| c == i32::MIN) {
            let a_min = b.ins().icmp_imm_s(IntCC::Equal, a, i64::from(i32::MIN));
            let m_min = b.ins().icmp_imm_s(IntCC::Equal, m, i64::from(i32::MIN));
            let both = b.ins().band(a_min, m_min);
            let max = b.ins().iconst(types::I32, i64::from(i32::MAX));
            high = b.ins().select(both, max, high);
        }
        // RoundingDivideByPOT: (high >> right) + (remainder > (mask >> 1) + (high < 0)).
        let (mask, quotient) = match right {
            Shift::Const(0) => return high,
            Shift::Const(k) => (
                b.ins().iconst(types::I32, (1i64 << k) - 1),
                b.ins().sshr_imm_s(high, i64::from(k)),
            ),
            Shift::Value(k) => {
                let one = b.ins().iconst(types::I32, 1);
                let pow = b.ins().ishl(one, k);
                (b.ins().iadd_imm_s(pow, -1), b.ins().sshr(high, k))
            }
        };
        let remainder = b.ins().band(high, mask);
        let negative = b.ins().icmp_imm_s(IntCC::SignedLessThan, high, 0);
        let negative = b.ins().uextend(types::I32, negative);
        let half = b.ins().sshr_imm_s(mask, 1);
        let threshold = b.ins().iadd(half, negative);
        let up = b.ins().icmp(IntCC::SignedGreaterThan, remainder, threshold);
        let up = b.ins().uextend(types::I32, up);
        b.ins().iadd(quotient, up)
    }

    /// The steps of the C runtime's `kiln_requantize_half_even`: the i64 product shifted right
    /// by `r = 31 - shift` (0 to 62) bits, plus one when the dropped bits exceed half, or equal
    /// it and the quotient is odd; saturated to i32.
    fn requantize_half_even(&mut self, x: Value, m: Value, shift: Shift) -> Value {
        let b = &mut *self.builder;
        let wide_x = b.ins().sextend(types::I64, x);
        let wide_m = b.ins().sextend(types::I64, m);
        let p = b.ins().imul(wide_x, wide_m);
        let q = match shift {
            Shift::Const(s) => {
                let r = i64::from(31 - s.clamp(-31, 31));
                if r == 0 {
                    p
                } else {
                    let q = b.ins().sshr_imm_s(p, r);
                    let rem = b.ins().band_imm_s(p, (1i64 << r) - 1);
                    let half = 1i64 << (r - 1);
                    let above = b.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, rem, half);
                    let tie = b.ins().icmp_imm_s(IntCC::Equal, rem, half);
                    let odd = b.ins().band_imm_s(q, 1);
                    let odd = b.ins().icmp_imm_s(IntCC::NotEqual, odd, 0);
                    let tie_odd = b.ins().band(tie, odd);
                    let up = b.ins().bor(above, tie_odd);
                    let up = b.ins().uextend(types::I64, up);
                    b.ins().iadd(q, up)
                }
            }
            Shift::Value(s) => {
                let lo = b.ins().iconst(types::I32, -31);
                let hi = b.ins().iconst(types::I32, 31);
                let s = b.ins().smax(s, lo);
                let s = b.ins().smin(s, hi);
                let k31 = b.ins().iconst(types::I32, 31);
                let r = b.ins().isub(k31, s);
                let r64 = b.ins().uextend(types::I64, r);
                let q = b.ins().sshr(p, r64);
                let one = b.ins().iconst(types::I64, 1);
                let pow = b.ins().ishl(one, r64);
                let mask = b.ins().iadd_imm_s(pow, -1);
                let rem = b.ins().band(p, mask);
                let half = b.ins().ushr_imm_s(pow, 1);
                let above = b.ins().icmp(IntCC::UnsignedGreaterThan, rem, half);
                let tie = b.ins().icmp(IntCC::Equal, rem, half);
                let odd = b.ins().band_imm_s(q, 1);
                let odd = b.ins().icmp_imm_s(IntCC::NotEqual, odd, 0);
                // With r = 0 nothing is dropped: rem and half are both 0, which is no tie.
                let shifted = b.ins().icmp_imm_s(IntCC::NotEqual, r, 0);
                let tie_odd = b.ins().band(tie, odd);
                let tie_odd = b.ins().band(tie_odd, shifted);
                let up = b.ins().bor(above, tie_odd);
                let up = b.ins().uextend(types::I64, up);
                b.ins().iadd(q, up)
            }
        };
        let lo = b.ins().iconst(types::I64, i64::from(i32::MIN));
        let hi = b.ins().iconst(types::I64, i64::from(i32::MAX));
        let q = b.ins().smax(q, lo);
        let q = b.ins().smin(q, hi);
        b.ins().ireduce(types::I32, q)
    }

    /// `c ? a : b` with only the chosen arm evaluated.
    fn lazy_select(
        &mut self,
        c: &Expr,
        a: &Expr,
        b: &Expr,
        t: ScalarType,
    ) -> Result<Value, BackendError> {
        let cv = self.truth(c)?;
        let then_block = self.builder.create_block();
        let else_block = self.builder.create_block();
        let join = self.builder.create_block();
        let result = self.builder.append_block_param(join, reg_type(t));
        self.builder
            .ins()
            .brif(cv, then_block, &[], else_block, &[]);
        self.builder.switch_to_block(then_block);
        self.builder.seal_block(then_block);
        let av = self.expr_as(a, t)?;
        self.builder.ins().jump(join, &[av.into()]);
        self.builder.switch_to_block(else_block);
        self.builder.seal_block(else_block);
        let bv = self.expr_as(b, t)?;
        self.builder.ins().jump(join, &[bv.into()]);
        self.builder.switch_to_block(join);
        self.builder.seal_block(join);
        Ok(result)
    }

    fn call_math(&mut self, f: MathFn, args: &[Value]) -> Result<Value, BackendError> {
        let callee = self.callees.math(self.builder, f)?;
        let call = self.builder.ins().call(callee, args);
        Ok(self.builder.inst_results(call)[0])
    }

    fn unary(&mut self, op: UnOp, a: &Expr) -> Result<Value, BackendError> {
        let t = self.type_of(a);
        let x = self.expr(a)?;
        let float = t == DType::F32;
        if float {
            if let Some(v) = float_instruction(self.builder, op, x) {
                return Ok(v);
            }
        }
        if let Some(f) = MathFn::of(op) {
            return self.call_math(f, &[x]);
        }
        let b = &mut *self.builder;
        Ok(match op {
            UnOp::Neg => b.ins().ineg(x),
            UnOp::Abs => {
                let r = b.ins().iabs(x);
                self.narrow(r, t)
            }
            UnOp::Not => {
                let flag = if float {
                    let zero = b.ins().f32const(0.0);
                    b.ins().fcmp(FloatCC::Equal, x, zero)
                } else {
                    b.ins().icmp_imm_s(IntCC::Equal, x, 0)
                };
                self.bool_to_i32(flag)
            }
            // Sqrt and rounding are float-only in the kernel IR (the lowerings cast first).
            UnOp::Sqrt
            | UnOp::Floor
            | UnOp::Ceil
            | UnOp::RoundEven
            | UnOp::Exp
            | UnOp::Log
            | UnOp::Tanh
            | UnOp::Erf => {
                return Err(BackendError::Lowering(format!(
                    "{op:?} of a {t} value: the kernel IR defines it for f32 only"
                )))
            }
        })
    }

    fn binary(&mut self, op: BinOp, a: &Expr, b: &Expr) -> Result<Value, BackendError> {
        if matches!(op, BinOp::And | BinOp::Or) {
            return self.logical(op, a, b);
        }
        if let Some((p, q, c)) = self.fusable(op, a, b) {
            let (x, y, z) = (
                self.expr_as(p, DType::F32)?,
                self.expr_as(q, DType::F32)?,
                self.expr_as(c, DType::F32)?,
            );
            return Ok(self.builder.ins().fma(x, y, z));
        }
        let t = self.type_of(a);
        let tb = self.type_of(b);
        // C's usual arithmetic conversions: the wider (or float) operand type wins.
        let common = common_type(t, tb);
        let x = self.expr_as(a, common)?;
        let y = self.expr_as(b, common)?;
        let float = common == DType::F32;
        let positive_const = matches!(b, Expr::Int(v) if *v > 0);
        let cmp = |s: &mut Self, fcc: FloatCC, icc: IntCC| {
            let flag = if float {
                s.builder.ins().fcmp(fcc, x, y)
            } else {
                s.builder.ins().icmp(icc, x, y)
            };
            s.bool_to_i32(flag)
        };
        if float && super::simd::clamp_bound(op, a, b).is_some() {
            // As in the vector path: a compare and a select, NaN kept by the failed compare.
            let (v, c) = if matches!(b, Expr::Const(..)) {
                (x, y)
            } else {
                (y, x)
            };
            let cc = if op == BinOp::Max {
                FloatCC::LessThan
            } else {
                FloatCC::GreaterThan
            };
            let below = self.builder.ins().fcmp(cc, v, c);
            return Ok(self.builder.ins().select(below, c, v));
        }
        Ok(match op {
            BinOp::Add if float => self.builder.ins().fadd(x, y),
            BinOp::Add => self.builder.ins().iadd(x, y),
            BinOp::Sub if float => self.builder.ins().fsub(x, y),
            BinOp::Sub => self.builder.ins().isub(x, y),
            BinOp::Mul if float => self.builder.ins().fmul(x, y),
            BinOp::Mul => self.builder.ins().imul(x, y),
            BinOp::Div if float => self.builder.ins().fdiv(x, y),
            BinOp::Div if positive_const => self.builder.ins().sdiv(x, y),
            BinOp::Div => {
                let q = self.guarded_division(x, y, false);
                self.narrow(q, common)
            }
            BinOp::Rem if positive_const => self.builder.ins().srem(x, y),
            BinOp::Rem => {
                let r = self.guarded_division(x, y, true);
                self.narrow(r, common)
            }
            BinOp::Max if float => self.builder.ins().fmax(x, y),
            BinOp::Max => self.builder.ins().smax(x, y),
            BinOp::Min if float => self.builder.ins().fmin(x, y),
            BinOp::Min => self.builder.ins().smin(x, y),
            BinOp::Pow if float => self.call_math(MathFn::Powf, &[x, y])?,
            BinOp::Pow => {
                let x64 = self.convert(x, common, DType::I64);
                let y64 = self.convert(y, common, DType::I64);
                let callee = self.callees.pow_i64(self.builder)?;
                let call = self.builder.ins().call(callee, &[x64, y64]);
                let r = self.builder.inst_results(call)[0];
                self.convert(r, DType::I64, common)
            }
            BinOp::Lt => cmp(self, FloatCC::LessThan, IntCC::SignedLessThan),
            BinOp::Le => cmp(self, FloatCC::LessThanOrEqual, IntCC::SignedLessThanOrEqual),
            BinOp::Gt => cmp(self, FloatCC::GreaterThan, IntCC::SignedGreaterThan),
            BinOp::Ge => cmp(
                self,
                FloatCC::GreaterThanOrEqual,
                IntCC::SignedGreaterThanOrEqual,
            ),
            BinOp::Eq => cmp(self, FloatCC::Equal, IntCC::Equal),
            BinOp::Ne => cmp(self, FloatCC::NotEqual, IntCC::NotEqual),
            BinOp::And | BinOp::Or => {
                return Err(BackendError::Lowering(
                    "logical operators are translated by `logical`".into(),
                ))
            }
        })
    }

    /// Flags of a scalar load from `param`: trusted (in bounds, aligned), plus `movable`.
    pub(super) fn load_flags(&self, param: usize) -> MemFlagsData {
        self.movable(param, mem())
    }

    /// `flags` marked read-only and movable when `param` is an input of a kernel that does not
    /// work in place (see `readonly_inputs`).
    pub(super) fn movable(&self, param: usize, flags: MemFlagsData) -> MemFlagsData {
        if self.readonly_inputs && self.kernel.params.get(param).is_some_and(|p| !p.output) {
            flags.with_readonly().with_can_move()
        } else {
            flags
        }
    }

    /// `(p, q, c)` when `a op b` is the f32 sum `p * q + c` (either order) and fusing is on.
    pub(super) fn fusable<'e>(
        &self,
        op: BinOp,
        a: &'e Expr,
        b: &'e Expr,
    ) -> Option<(&'e Expr, &'e Expr, &'e Expr)> {
        if !self.fma || op != BinOp::Add {
            return None;
        }
        let f32s = |s: &Self, es: &[&Expr]| es.iter().all(|e| s.type_of(e) == DType::F32);
        match (a, b) {
            (Expr::Binary(BinOp::Mul, p, q), c) | (c, Expr::Binary(BinOp::Mul, p, q))
                if f32s(self, &[p, q, c]) =>
            {
                Some((p, q, c))
            }
            _ => None,
        }
    }

    /// The runtime's `kiln_div`/`kiln_rem`: 0 for a zero divisor, and `MIN / -1` wraps.
    fn guarded_division(&mut self, x: Value, y: Value, remainder: bool) -> Value {
        let ty = self.builder.func.dfg.value_type(x);
        let b = &mut *self.builder;
        let zero = b.ins().iconst(ty, 0);
        let one = b.ins().iconst(ty, 1);
        let is_zero = b.ins().icmp_imm_s(IntCC::Equal, y, 0);
        let is_minus_one = b.ins().icmp_imm_s(IntCC::Equal, y, -1);
        let special = b.ins().bor(is_zero, is_minus_one);
        let safe = b.ins().select(special, one, y);
        if remainder {
            let r = b.ins().srem(x, safe);
            b.ins().select(special, zero, r)
        } else {
            let q = b.ins().sdiv(x, safe);
            let negated = b.ins().ineg(x);
            let q = b.ins().select(is_minus_one, negated, q);
            b.ins().select(is_zero, zero, q)
        }
    }

    /// `a && b`, `a || b`: 0 or 1; `b` is evaluated only when needed if it loads memory.
    fn logical(&mut self, op: BinOp, a: &Expr, b: &Expr) -> Result<Value, BackendError> {
        let av = self.truth_flag(a)?;
        if !loads_memory(b) {
            let bv = self.truth_flag(b)?;
            let r = if op == BinOp::And {
                self.builder.ins().band(av, bv)
            } else {
                self.builder.ins().bor(av, bv)
            };
            return Ok(r);
        }
        let rhs_block = self.builder.create_block();
        let join = self.builder.create_block();
        let result = self.builder.append_block_param(join, types::I32);
        if op == BinOp::And {
            self.builder
                .ins()
                .brif(av, rhs_block, &[], join, &[av.into()]);
        } else {
            self.builder
                .ins()
                .brif(av, join, &[av.into()], rhs_block, &[]);
        }
        self.builder.switch_to_block(rhs_block);
        self.builder.seal_block(rhs_block);
        let bv = self.truth_flag(b)?;
        self.builder.ins().jump(join, &[bv.into()]);
        self.builder.switch_to_block(join);
        self.builder.seal_block(join);
        Ok(result)
    }

    /// 1 if `e` is non-zero, else 0, as an `i32`.
    fn truth_flag(&mut self, e: &Expr) -> Result<Value, BackendError> {
        let t = self.type_of(e);
        let v = self.expr(e)?;
        let flag = if t == DType::F32 {
            let zero = self.builder.ins().f32const(0.0);
            self.builder.ins().fcmp(FloatCC::NotEqual, v, zero)
        } else {
            self.builder.ins().icmp_imm_s(IntCC::NotEqual, v, 0)
        };
        Ok(self.bool_to_i32(flag))
    }
}

/// The type C computes a binary operation in: float if either is, else the wider integer.
/// The type of variable `v` of `kernel` (loop counters, and ids it does not know, are `I32`).
pub(super) fn var_type(kernel: &Kernel, v: Var) -> ScalarType {
    kernel.vars.get(v.0 as usize).copied().unwrap_or(DType::I32)
}

/// The kernel scalar type of an expression in `kernel` (as the C emitter types it).
pub(super) fn expr_type(kernel: &Kernel, e: &Expr) -> ScalarType {
    match e {
        Expr::Int(_) => DType::I32,
        Expr::Const(_, t) | Expr::Cast(t, _) => *t,
        Expr::Var(v) => var_type(kernel, *v),
        Expr::Load { param, .. } => kernel.params.get(*param).map_or(DType::F32, |p| p.dtype),
        Expr::Unary(UnOp::Not, _) => DType::Bool,
        Expr::Unary(_, a) => expr_type(kernel, a),
        Expr::Binary(op, a, b) => match op {
            BinOp::Lt
            | BinOp::Le
            | BinOp::Gt
            | BinOp::Ge
            | BinOp::Eq
            | BinOp::Ne
            | BinOp::And
            | BinOp::Or => DType::Bool,
            _ => common_type(expr_type(kernel, a), expr_type(kernel, b)),
        },
        Expr::Select(_, a, _) => expr_type(kernel, a),
        Expr::Requantize { .. } => DType::I32,
    }
}

pub(super) fn common_type(a: ScalarType, b: ScalarType) -> ScalarType {
    if a == DType::F32 || b == DType::F32 {
        DType::F32
    } else if a == DType::I64 || b == DType::I64 {
        DType::I64
    } else {
        a
    }
}

/// The shift of a requantization: a constant, or an `i32` value.
#[derive(Clone, Copy, Debug)]
pub(super) enum Shift {
    Const(i32),
    Value(Value),
}

/// The value of an `Int` expression that fits `i32`.
pub(super) fn int_constant(e: &Expr) -> Option<i32> {
    match e {
        Expr::Int(v) => i32::try_from(*v).ok(),
        _ => None,
    }
}

/// Splits an index into a variable part and a constant: `(e + 3) - 1` is `(e, 2)`; a constant
/// index has no variable part.
pub(super) fn split_offset(index: &Expr) -> (Option<&Expr>, i64) {
    match index {
        Expr::Int(c) => (None, *c),
        Expr::Binary(BinOp::Add, a, b) => match (&**a, &**b) {
            (e, Expr::Int(c)) | (Expr::Int(c), e) => {
                let (rest, k) = split_offset(e);
                (rest, k + c)
            }
            _ => (Some(index), 0),
        },
        Expr::Binary(BinOp::Sub, a, b) => match &**b {
            Expr::Int(c) => {
                let (rest, k) = split_offset(a);
                (rest, k - c)
            }
            _ => (Some(index), 0),
        },
        _ => (Some(index), 0),
    }
}

/// Whether evaluating `e` reads a buffer.
fn loads_memory(e: &Expr) -> bool {
    match e {
        Expr::Load { .. } => true,
        Expr::Int(_) | Expr::Const(..) | Expr::Var(_) => false,
        Expr::Unary(_, a) | Expr::Cast(_, a) => loads_memory(a),
        Expr::Binary(_, a, b) => loads_memory(a) || loads_memory(b),
        Expr::Select(c, a, b) => loads_memory(c) || loads_memory(a) || loads_memory(b),
        Expr::Requantize {
            value,
            multiplier,
            shift,
            ..
        } => loads_memory(value) || loads_memory(multiplier) || loads_memory(shift),
    }
}

/// Signature of a kernel: one pointer per buffer parameter.
pub fn kernel_signature(
    sig: &mut cranelift_codegen::ir::Signature,
    kernel: &Kernel,
    pointer: Type,
) {
    for _ in &kernel.params {
        sig.params.push(AbiParam::new(pointer));
    }
}
