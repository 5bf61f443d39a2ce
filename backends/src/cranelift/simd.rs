//! Outer-loop vectorization over 128-bit vectors (`f32x4`, and `i32x4` for integer data).
//!
//! A loop qualifies when every store it makes writes `param[base + v]` (stride one in the loop
//! variable `v`) of an f32 or integer buffer, and every value that varies with `v` is either
//! such a stride-one load, arithmetic on those, a conversion between them, or an `i32` index
//! affine in `v`. Then `4 * vector_parts` consecutive iterations run as one: varying floats
//! become `f32x4` lanes and varying integers `i32x4` lanes (i8, u8 and i16 data widened on
//! load and packed on store, as the scalar path holds narrow integers in `i32` registers),
//! uniform values are splatted, stride-one loads and stores become vector accesses, and nested
//! loops (the channel and tap loops of a convolution inside its output-width loop) run once per
//! group. Leftover iterations run single vectors, then the scalar translation. The outermost
//! qualifying loop is chosen, which for convolutions and matrix products is the loop over
//! output columns, so each lane computes one output exactly as the scalar code does: without
//! fused multiply-adds, results are bit-identical (a test checks it on every model).
//!
//! Float loads at stride two (stride-2 convolutions) deinterleave two vectors with a shuffle;
//! other strides gather scalar loads into lanes. Max and min against a constant (Relu, Clip)
//! are a compare and a blend. Math calls (`expf`, ...) run per lane; conditions that vary per
//! lane, and integer comparisons, keep the scalar path.
//!
//! Integer kernels: an `i32` local of the loop that takes per-lane values (the accumulators of
//! QConv and QMatMul, a widened input) becomes `i32x4` lanes (see [`lane_locals`]), and
//! `Expr::Requantize` on lanes runs the scalar instruction sequence lane by lane, since it
//! needs a 64-bit product; integer results are exact either way.

use std::collections::{HashMap, HashSet};

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, ConstantData, Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::Variable;
use kiln_ir::DType;

use super::translate::{
    expr_type, float_instruction, int_constant, var_type, Callees, KernelTranslator, MathFn, Shift,
};
use crate::error::BackendError;
use crate::kernel::{BinOp, Expr, Kernel, Stmt, UnOp, Var};

pub const LANES: usize = 4;

/// How a value behaves across the lanes of a vectorized loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// The same in every lane.
    Uniform,
    /// An `i32` equal to `lane0 + stride * lane`.
    Affine(i64),
    /// An f32 per lane.
    Vector,
    /// An integer per lane, held in `i32` lanes (sign- or zero-extended from its kernel type,
    /// as the scalar path holds narrow integers in `i32` registers).
    IVector,
    /// A comparison result per lane.
    Mask,
}

/// When the loop over `var` can be vectorized (see the module doc), the `i32` locals declared in it that hold one
/// value per lane (integer accumulators, widened inputs); `None` when it cannot. A local
/// becomes a lane local when the analysis finds a per-lane value assigned to it, and the
/// analysis then runs again with it as one.
pub fn lane_locals(
    kernel: &Kernel,
    var: Var,
    extent: usize,
    body: &[Stmt],
) -> Option<HashSet<Var>> {
    if extent < LANES {
        return None;
    }
    let mut int_locals = HashSet::new();
    loop {
        let mut a = Analysis {
            kernel,
            shapes: HashMap::from([(var, Shape::Affine(1))]),
            declared: HashSet::new(),
            vector_stores: 0,
            int_locals: &int_locals,
            promote: Vec::new(),
        };
        if a.stmts(body).is_some() {
            return (a.vector_stores > 0).then_some(int_locals);
        }
        let before = int_locals.len();
        let promote = a.promote;
        int_locals.extend(promote);
        if int_locals.len() == before {
            return None;
        }
    }
}

struct Analysis<'k> {
    kernel: &'k Kernel,
    shapes: HashMap<Var, Shape>,
    /// Locals declared inside the loop.
    declared: HashSet<Var>,
    vector_stores: usize,
    /// `i32` locals held as lanes (see [`lane_locals`]).
    int_locals: &'k HashSet<Var>,
    /// `i32` locals of the loop that a per-lane value reaches: lane locals for the next try.
    promote: Vec<Var>,
}

impl Analysis<'_> {
    fn var_type(&self, v: Var) -> DType {
        var_type(self.kernel, v)
    }

    fn stmts(&mut self, body: &[Stmt]) -> Option<()> {
        body.iter().try_for_each(|s| self.stmt(s))
    }

    fn stmt(&mut self, s: &Stmt) -> Option<()> {
        match s {
            Stmt::For { var, body, .. } => {
                self.shapes.insert(*var, Shape::Uniform);
                self.declared.insert(*var);
                self.stmts(body)
            }
            Stmt::Let { var, ty, init } => {
                let shape = self.expr(init)?;
                self.declared.insert(*var);
                let lanes = self.int_locals.contains(var);
                let shape = match (ty, shape) {
                    // Float locals are lanes (accumulators start uniform and become varying).
                    (DType::F32, Shape::Uniform | Shape::Vector) => Shape::Vector,
                    (DType::I32, Shape::Uniform | Shape::IVector) if lanes => Shape::IVector,
                    (DType::I32, Shape::IVector) => {
                        self.promote.push(*var);
                        return None;
                    }
                    (DType::I32, Shape::Uniform | Shape::Affine(_)) => shape,
                    (_, Shape::Uniform) => Shape::Uniform,
                    _ => return None,
                };
                self.shapes.insert(*var, shape);
                Some(())
            }
            Stmt::Assign { var, value } => {
                let shape = self.expr(value)?;
                let var_shape = self.shapes.get(var).copied().unwrap_or(Shape::Uniform);
                match (var_shape, shape) {
                    (Shape::Vector, Shape::Uniform | Shape::Vector) => Some(()),
                    (Shape::IVector, Shape::Uniform | Shape::IVector) => Some(()),
                    // An integer local of the loop that takes per-lane values: lanes next try.
                    (Shape::Uniform, Shape::IVector)
                        if self.declared.contains(var) && self.var_type(*var) == DType::I32 =>
                    {
                        self.promote.push(*var);
                        None
                    }
                    // A uniform (or outer) local may only take uniform values.
                    (Shape::Uniform, Shape::Uniform) => Some(()),
                    (Shape::Affine(a), Shape::Affine(b)) if a == b => Some(()),
                    _ => None,
                }
            }
            Stmt::Store {
                param,
                index,
                value,
            } => {
                let dtype = self.kernel.params.get(*param)?.dtype;
                let value = self.expr(value)?;
                match self.expr(index)? {
                    Shape::Affine(1) if dtype == DType::F32 => {
                        self.vector_stores += 1;
                        matches!(value, Shape::Uniform | Shape::Vector).then_some(())
                    }
                    Shape::Affine(1) if int_lanes(dtype) => {
                        self.vector_stores += 1;
                        matches!(value, Shape::Uniform | Shape::IVector).then_some(())
                    }
                    Shape::Uniform if value == Shape::Uniform => Some(()),
                    _ => None,
                }
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                if self.expr(cond)? != Shape::Uniform {
                    return None;
                }
                self.stmts(then)?;
                self.stmts(otherwise)
            }
        }
    }

    fn expr(&self, e: &Expr) -> Option<Shape> {
        Some(match e {
            Expr::Int(_) | Expr::Const(..) => Shape::Uniform,
            Expr::Var(v) => self.shapes.get(v).copied().unwrap_or(Shape::Uniform),
            Expr::Load { param, index } => {
                let dtype = self.kernel.params.get(*param)?.dtype;
                match self.expr(index)? {
                    Shape::Uniform => Shape::Uniform,
                    // Stride one: a vector load; other strides (strided convolutions): four
                    // scalar loads gathered into lanes.
                    Shape::Affine(k) if dtype == DType::F32 && k != 0 => Shape::Vector,
                    // Integer data: stride one only.
                    Shape::Affine(1) if int_lanes(dtype) => Shape::IVector,
                    _ => return None,
                }
            }
            Expr::Unary(op, a) => {
                let s = self.expr(a)?;
                match s {
                    Shape::Uniform => Shape::Uniform,
                    Shape::Vector if *op != UnOp::Not => Shape::Vector,
                    Shape::IVector if matches!(op, UnOp::Neg | UnOp::Abs) => Shape::IVector,
                    Shape::Affine(k) if *op == UnOp::Neg => Shape::Affine(-k),
                    _ => return None,
                }
            }
            Expr::Binary(op, a, b) => self.binary(*op, a, b)?,
            Expr::Select(c, a, b) => {
                let (c, a, b) = (self.expr(c)?, self.expr(a)?, self.expr(b)?);
                match (c, a, b) {
                    (Shape::Uniform, Shape::Uniform, Shape::Uniform) => Shape::Uniform,
                    (
                        Shape::Uniform | Shape::Mask,
                        Shape::Uniform | Shape::Vector,
                        Shape::Uniform | Shape::Vector,
                    ) if self.is_float(e) => Shape::Vector,
                    _ => return None,
                }
            }
            Expr::Cast(t, a) => match self.expr(a)? {
                Shape::Uniform => Shape::Uniform,
                Shape::Vector if *t == DType::F32 => Shape::Vector,
                Shape::Vector | Shape::IVector if int_lanes(*t) => Shape::IVector,
                Shape::IVector if *t == DType::F32 => Shape::Vector,
                Shape::Affine(k) if *t == DType::I32 => Shape::Affine(k),
                _ => return None,
            },
            // Integer lanes are requantized lane by lane (64-bit products).
            Expr::Requantize {
                value,
                multiplier,
                shift,
                ..
            } => {
                let mut shape = Shape::Uniform;
                for e in [value, multiplier, shift] {
                    match self.expr(e)? {
                        Shape::Uniform => {}
                        Shape::IVector => shape = Shape::IVector,
                        _ => return None,
                    }
                }
                shape
            }
        })
    }

    fn is_float(&self, e: &Expr) -> bool {
        match e {
            Expr::Const(_, t) | Expr::Cast(t, _) => *t == DType::F32,
            Expr::Var(v) => self.var_type(*v) == DType::F32,
            Expr::Load { param, .. } => self
                .kernel
                .params
                .get(*param)
                .is_some_and(|p| p.dtype == DType::F32),
            Expr::Unary(UnOp::Not, _) => false,
            Expr::Unary(_, a) => self.is_float(a),
            Expr::Binary(op, a, b) => !is_comparison(*op) && (self.is_float(a) || self.is_float(b)),
            Expr::Select(_, a, _) => self.is_float(a),
            Expr::Int(_) | Expr::Requantize { .. } => false,
        }
    }

    fn binary(&self, op: BinOp, a: &Expr, b: &Expr) -> Option<Shape> {
        let (sa, sb) = (self.expr(a)?, self.expr(b)?);
        let float = self.is_float(a) || self.is_float(b);
        if sa == Shape::Uniform && sb == Shape::Uniform {
            return Some(Shape::Uniform);
        }
        if !float && (sa == Shape::IVector || sb == Shape::IVector) {
            // Integer lanes: both sides integer lanes or uniform, in an i32-lane type.
            let lanes = |s| matches!(s, Shape::Uniform | Shape::IVector);
            let ty = expr_type(self.kernel, a);
            let ty = super::translate::common_type(ty, expr_type(self.kernel, b));
            let arithmetic = matches!(
                op,
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Max | BinOp::Min
            );
            return (lanes(sa) && lanes(sb) && int_lanes(ty) && arithmetic)
                .then_some(Shape::IVector);
        }
        if float {
            if !matches!(sa, Shape::Uniform | Shape::Vector)
                || !matches!(sb, Shape::Uniform | Shape::Vector)
            {
                return None;
            }
            return match op {
                BinOp::Add
                | BinOp::Sub
                | BinOp::Mul
                | BinOp::Div
                | BinOp::Max
                | BinOp::Min
                | BinOp::Pow => Some(Shape::Vector),
                BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => {
                    Some(Shape::Mask)
                }
                _ => None,
            };
        }
        // Integer index arithmetic: affine only.
        let constant = |e: &Expr| match e {
            Expr::Int(v) => Some(*v),
            _ => None,
        };
        match (op, sa, sb) {
            (BinOp::Add, Shape::Affine(k), Shape::Uniform)
            | (BinOp::Add, Shape::Uniform, Shape::Affine(k))
            | (BinOp::Sub, Shape::Affine(k), Shape::Uniform) => Some(Shape::Affine(k)),
            (BinOp::Sub, Shape::Uniform, Shape::Affine(k)) => Some(Shape::Affine(-k)),
            (BinOp::Add, Shape::Affine(x), Shape::Affine(y)) => Some(Shape::Affine(x + y)),
            (BinOp::Sub, Shape::Affine(x), Shape::Affine(y)) => Some(Shape::Affine(x - y)),
            (BinOp::Mul, Shape::Affine(k), Shape::Uniform) => {
                constant(b).map(|c| Shape::Affine(k * c))
            }
            (BinOp::Mul, Shape::Uniform, Shape::Affine(k)) => {
                constant(a).map(|c| Shape::Affine(k * c))
            }
            _ => None,
        }
    }
}

/// Integer kernel types whose values fit `i32` lanes (what the scalar path holds in `i32`).
fn int_lanes(t: DType) -> bool {
    matches!(t, DType::I8 | DType::U8 | DType::I16 | DType::I32)
}

fn is_comparison(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
    )
}

/// A translated value in a vectorized loop of `parts` vectors (`4 * parts` lanes).
#[derive(Clone, Debug)]
enum Lanes {
    /// A scalar, the same in every lane.
    Uniform(Value),
    /// `lane0 + stride * lane` (an `i32`).
    Affine(Value, i64),
    /// One `f32x4` per part.
    Vector(Vec<Value>),
    /// One `i32x4` per part (see `Shape::IVector`).
    IVector(Vec<Value>),
    /// One `i32x4` of all-ones or zero lanes per part.
    Mask(Vec<Value>),
}

/// State of the vectorized loop being translated.
pub(super) struct VectorScope<'l> {
    /// f32 locals as one `f32x4` variable per part.
    vectors: HashMap<Var, Vec<Variable>>,
    /// The `i32` lane locals (see [`lane_locals`]), and their `i32x4` variables per part once
    /// declared.
    int_locals: &'l HashSet<Var>,
    ints: HashMap<Var, Vec<Variable>>,
    /// Strides of affine `i32` locals (their lane-0 value lives in the scalar variable).
    affine: HashMap<Var, i64>,
    /// Vectors per iteration: part `j` holds lanes `4j..4j+4`.
    parts: usize,
}

impl<C: Callees> KernelTranslator<'_, '_, C> {
    /// `for var in 0..extent` in iterations of `vector_parts` vectors, then one single-vector
    /// iteration if four lanes remain, then the scalar remainder.
    /// `int_locals` are the loop's lane locals.
    pub(super) fn vector_loop(
        &mut self,
        var: Var,
        extent: usize,
        body: &[Stmt],
        int_locals: &HashSet<Var>,
    ) -> Result<(), BackendError> {
        let mut done = 0;
        let mut parts = self.vector_parts.max(1);
        while parts >= 1 {
            let step = parts * LANES;
            let groups = (extent - done) / step;
            if groups > 0 {
                self.vector_groups(var, (done, groups, parts), body, int_locals)?;
                done += groups * step;
            }
            parts /= 2;
        }
        self.scalar_loop_from(var, done, extent, body)
    }

    /// `groups` iterations of `parts` vectors each, from `start`.
    fn vector_groups(
        &mut self,
        var: Var,
        (start, groups, parts): (usize, usize, usize),
        body: &[Stmt],
        int_locals: &HashSet<Var>,
    ) -> Result<(), BackendError> {
        let step = parts * LANES;
        let mut scope = VectorScope {
            vectors: HashMap::new(),
            int_locals,
            ints: HashMap::new(),
            affine: HashMap::from([(var, 1)]),
            parts,
        };
        let end = start + groups * step;
        self.counted_loop(var, start, end, step, &mut |t| t.vstmts(&mut scope, body))
    }

    fn vstmts(&mut self, scope: &mut VectorScope, body: &[Stmt]) -> Result<(), BackendError> {
        for s in body {
            self.vstmt(scope, s)?;
        }
        Ok(())
    }

    fn vstmt(&mut self, scope: &mut VectorScope, s: &Stmt) -> Result<(), BackendError> {
        match s {
            Stmt::For {
                var, extent, body, ..
            } => {
                // A nested loop runs once per group, with a uniform counter.
                self.counted_loop(*var, 0, *extent, 1, &mut |t| t.vstmts(scope, body))
            }
            Stmt::Let { var, ty, init } => {
                let value = self.vexpr(scope, init)?;
                if *ty == DType::F32 {
                    let vars = self.vector_variable(scope, *var);
                    let parts = self.splat_to_vector(scope, value);
                    for (v, x) in vars.into_iter().zip(parts) {
                        self.builder.def_var(v, x);
                    }
                } else if scope.int_locals.contains(var) {
                    let parts = self.int_parts(scope, (init, value), DType::I32)?;
                    let vars: Vec<Variable> = (0..scope.parts)
                        .map(|_| self.builder.declare_var(types::I32X4))
                        .collect();
                    for (&v, x) in vars.iter().zip(parts) {
                        self.builder.def_var(v, x);
                    }
                    scope.ints.insert(*var, vars);
                } else {
                    self.define_scalar_or_affine(scope, *var, *ty, value)?;
                }
                Ok(())
            }
            Stmt::Assign { var, value } => {
                let lanes = self.vexpr(scope, value)?;
                if let Some(vars) = scope.vectors.get(var).cloned() {
                    let parts = self.splat_to_vector(scope, lanes);
                    for (v, x) in vars.into_iter().zip(parts) {
                        self.builder.def_var(v, x);
                    }
                    Ok(())
                } else if let Some(vars) = scope.ints.get(var).cloned() {
                    let parts = self.int_parts(scope, (value, lanes), DType::I32)?;
                    for (v, x) in vars.into_iter().zip(parts) {
                        self.builder.def_var(v, x);
                    }
                    Ok(())
                } else {
                    let ty = self.var_type_of(*var);
                    self.define_scalar_or_affine(scope, *var, ty, lanes)
                }
            }
            Stmt::Store {
                param,
                index,
                value,
            } => match self.vexpr_shape(scope, index) {
                Some(1) if self.param_type(*param) != DType::F32 => {
                    self.int_store(scope, *param, index, value)
                }
                Some(1) => {
                    let lanes = self.vexpr(scope, value)?;
                    let parts = self.splat_to_vector(scope, lanes);
                    let (addr, offset) = self.vector_address(scope, *param, index)?;
                    for (j, x) in parts.into_iter().enumerate() {
                        self.builder.ins().store(
                            MemFlagsData::new().with_notrap(),
                            x,
                            addr,
                            part_offset(offset, j)?,
                        );
                    }
                    Ok(())
                }
                None => self.scalar_stmt(s),
                Some(k) => Err(not_vectorizable(&format!("store index stride {k}"))),
            },
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let Lanes::Uniform(c) = self.vexpr(scope, cond)? else {
                    return Err(not_vectorizable("varying condition"));
                };
                let then_block = self.builder.create_block();
                let else_block = self.builder.create_block();
                let join = self.builder.create_block();
                self.builder.ins().brif(c, then_block, &[], else_block, &[]);
                self.builder.switch_to_block(then_block);
                self.builder.seal_block(then_block);
                self.vstmts(scope, then)?;
                self.builder.ins().jump(join, &[]);
                self.builder.switch_to_block(else_block);
                self.builder.seal_block(else_block);
                self.vstmts(scope, otherwise)?;
                self.builder.ins().jump(join, &[]);
                self.builder.switch_to_block(join);
                self.builder.seal_block(join);
                Ok(())
            }
        }
    }

    /// The stride of an index expression in the vectorized loop (`None`: uniform), without
    /// emitting code.
    fn vexpr_shape(&self, scope: &VectorScope, e: &Expr) -> Option<i64> {
        match self.lane_shape(scope, e) {
            Some(Shape::Affine(k)) => Some(k),
            _ => None,
        }
    }

    /// How `e` varies across the lanes of the vectorized loop (`None`: not vectorizable).
    fn lane_shape(&self, scope: &VectorScope, e: &Expr) -> Option<Shape> {
        let mut a = Analysis {
            kernel: self.kernel,
            shapes: scope
                .affine
                .iter()
                .map(|(&v, &k)| (v, Shape::Affine(k)))
                .collect(),
            declared: HashSet::new(),
            vector_stores: 0,
            int_locals: scope.int_locals,
            promote: Vec::new(),
        };
        for &v in scope.vectors.keys() {
            a.shapes.insert(v, Shape::Vector);
        }
        for &v in scope.ints.keys() {
            a.shapes.insert(v, Shape::IVector);
        }
        a.expr(e)
    }

    /// Base address and constant byte offset of the lane-0 element of a stride-one access.
    fn vector_address(
        &mut self,
        scope: &VectorScope,
        param: usize,
        index: &Expr,
    ) -> Result<(Value, i32), BackendError> {
        let (rest, constant) = super::translate::split_offset(index);
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

    fn vector_variable(&mut self, scope: &mut VectorScope, v: Var) -> Vec<Variable> {
        if let Some(vars) = scope.vectors.get(&v) {
            return vars.clone();
        }
        let vars: Vec<Variable> = (0..scope.parts)
            .map(|_| self.builder.declare_var(types::F32X4))
            .collect();
        scope.vectors.insert(v, vars.clone());
        vars
    }

    fn define_scalar_or_affine(
        &mut self,
        scope: &mut VectorScope,
        var: Var,
        ty: DType,
        value: Lanes,
    ) -> Result<(), BackendError> {
        let scalar = match value {
            Lanes::Uniform(v) => {
                scope.affine.remove(&var);
                v
            }
            Lanes::Affine(v, k) => {
                scope.affine.insert(var, k);
                v
            }
            _ => return Err(not_vectorizable("vector value in a scalar local")),
        };
        let _ = ty;
        let v = self.variable(var);
        self.builder.def_var(v, scalar);
        Ok(())
    }

    /// The parts of a float value; a uniform one is splatted once and shared by every part.
    fn splat_to_vector(&mut self, scope: &VectorScope, lanes: Lanes) -> Vec<Value> {
        match lanes {
            Lanes::Vector(v) => v,
            Lanes::Uniform(s) => vec![self.builder.ins().splat(types::F32X4, s); scope.parts],
            // The analysis admits neither into a float vector.
            Lanes::Affine(v, _) => vec![v; scope.parts],
            Lanes::Mask(v) | Lanes::IVector(v) => v,
        }
    }

    fn vexpr(&mut self, scope: &VectorScope, e: &Expr) -> Result<Lanes, BackendError> {
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

    /// A requantization of integer lanes: the scalar sequence on each lane (it needs a 64-bit
    /// product), uniform operands evaluated once.
    fn requantize_lanes(
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

    /// A load at stride `k` (not one) in the loop: scalar loads gathered into lanes.
    fn gather(
        &mut self,
        scope: &VectorScope,
        param: usize,
        index: &Expr,
        k: i64,
    ) -> Result<Vec<Value>, BackendError> {
        let (rest, constant) = super::translate::split_offset(index);
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
    fn vector_load_flags(&self, param: usize) -> MemFlagsData {
        self.movable(param, MemFlagsData::new().with_notrap())
    }

    fn param_type(&self, param: usize) -> DType {
        self.kernel
            .params
            .get(param)
            .map_or(DType::F32, |p| p.dtype)
    }

    fn elem_bytes(&self, param: usize) -> i64 {
        self.param_type(param).size_bytes() as i64
    }

    /// Wraps `i32` lanes to a narrow type's range, as the scalar `narrow` does per value.
    fn narrow_lanes(&mut self, parts: Vec<Value>, t: DType) -> Vec<Value> {
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
    fn int_parts(
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
    fn int_binary(
        &mut self,
        scope: &VectorScope,
        op: BinOp,
        (a, la): (&Expr, Lanes),
        (b, lb): (&Expr, Lanes),
    ) -> Result<Lanes, BackendError> {
        let t = super::translate::common_type(self.type_of(a), self.type_of(b));
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
    fn int_load(
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
    fn int_store(
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

/// The constant of `max(x, c)` or `min(x, c)` (either operand order) when it is a number:
/// such clamps need no NaN handling beyond keeping `x` when the compare fails.
pub(super) fn clamp_bound(op: BinOp, a: &Expr, b: &Expr) -> Option<f32> {
    if !matches!(op, BinOp::Max | BinOp::Min) {
        return None;
    }
    match (a, b) {
        (Expr::Const(c, DType::F32), other) | (other, Expr::Const(c, DType::F32))
            if !matches!(other, Expr::Const(..)) && !c.is_nan() =>
        {
            Some(*c as f32)
        }
        _ => None,
    }
}

/// The byte offset of part `j` of a stride-one access whose lane 0 is at `offset`.
fn part_offset(offset: i32, j: usize) -> Result<i32, BackendError> {
    part_offset_sized(offset, j, 4)
}

/// `part_offset` for elements of `size` bytes.
fn part_offset_sized(offset: i32, j: usize, size: i64) -> Result<i32, BackendError> {
    offset
        .checked_add((j as i64 * LANES as i64 * size) as i32)
        .ok_or_else(|| not_vectorizable("offset"))
}

fn not_vectorizable(what: &str) -> BackendError {
    // The analysis admitted the loop, so reaching this is a bug in this file, reported as an
    // error rather than wrong code.
    BackendError::Lowering(format!("vectorizer: unexpected {what}"))
}
