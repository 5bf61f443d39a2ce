//! The vectorizer's analysis: whether a loop qualifies (see the module doc of `simd`), which
//! `i32` locals become lanes, and how each expression varies across lanes ([`Shape`]), both
//! before translation ([`lane_locals`]) and for one expression during it.

use std::collections::{HashMap, HashSet};

use kiln_ir::DType;

use super::{VectorScope, LANES};
use crate::cranelift::translate::{common_type, expr_type, var_type, Callees, KernelTranslator};
use crate::kernel::{BinOp, Expr, Kernel, Stmt, UnOp, Var};

/// How a value behaves across the lanes of a vectorized loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shape {
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

/// When the loop over `var` can be vectorized (see the `simd` module doc), the `i32` locals
/// declared in it that hold one value per lane (integer accumulators, widened inputs); `None`
/// when it cannot. A local becomes a lane local when the analysis finds a per-lane value
/// assigned to it, and the analysis then runs again with it as one.
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
            let ty = common_type(ty, expr_type(self.kernel, b));
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

pub(super) fn is_comparison(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
    )
}

/// The constant of `max(x, c)` or `min(x, c)` (either operand order) when it is a number:
/// such clamps need no NaN handling beyond keeping `x` when the compare fails.
pub(in crate::cranelift) fn clamp_bound(op: BinOp, a: &Expr, b: &Expr) -> Option<f32> {
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

impl<C: Callees> KernelTranslator<'_, '_, C> {
    /// The stride of an index expression in the vectorized loop (`None`: uniform), without
    /// emitting code.
    pub(super) fn vexpr_shape(&self, scope: &VectorScope, e: &Expr) -> Option<i64> {
        match self.lane_shape(scope, e) {
            Some(Shape::Affine(k)) => Some(k),
            _ => None,
        }
    }

    /// How `e` varies across the lanes of the vectorized loop (`None`: not vectorizable).
    pub(super) fn lane_shape(&self, scope: &VectorScope, e: &Expr) -> Option<Shape> {
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
}
