//! The kernel IR: one loop-level representation that every graph op lowers to, and that every
//! emitter (C text today, Cranelift later) consumes. An op's semantics are written once, in its
//! lowering under `lower/`; emitters only translate these constructs.
//!
//! A [`Kernel`] is a function over typed buffer parameters (the node's inputs, then its outputs)
//! whose body is a tree of statements: counted loops with constant bounds, scalar locals,
//! stores, and conditionals. Expressions are typed scalars: index arithmetic is `I32` (tensors
//! never exceed 2^31 elements, and 32-bit math is what microcontrollers do fast), element math
//! is in the tensor's type. Integer kernels widen narrow values to `I32` explicitly, use `I64`
//! where a sum or product can leave `I32`, and rescale with [`Expr::Requantize`], the one
//! fixed-point construct.

use kiln_ir::fixed_point::Rounding;
use kiln_ir::DType;

/// A scalar variable: a loop counter or a local. Ids are unique within a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

/// Scalar types of kernel expressions: the tensor element types, plus `I32` for indices.
pub type ScalarType = DType;

/// A buffer parameter of a kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The ONNX name of the operand (`X`, `W`, `B`, `Y`, ...), used as the C parameter name.
    pub name: String,
    pub dtype: DType,
    /// Number of elements.
    pub len: usize,
    /// True for outputs (written), false for inputs (read only).
    pub output: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Abs,
    Not,
    /// Math library calls; emitters map them to libm or to the runtime's approximations.
    Exp,
    Log,
    Sqrt,
    Tanh,
    Erf,
    Floor,
    Ceil,
    /// Round half to even (`rintf` in the default rounding mode).
    RoundEven,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// Float division, or integer division truncating toward zero (division by zero gives 0).
    Div,
    /// Remainder with the sign of the dividend (C `%`), integers only.
    Rem,
    /// NaN-propagating for floats, as numpy's maximum.
    Max,
    Min,
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// An integer constant of type `I32`.
    Int(i64),
    /// A constant of the given type, held as f64 (exact for every type kiln uses, but i64
    /// beyond 2^53, which kernels never need).
    Const(f64, ScalarType),
    Var(Var),
    /// Element `index` (an `I32` expression) of parameter `param`.
    Load {
        param: usize,
        index: Box<Expr>,
    },
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `cond ? then : otherwise`; `cond` is a bool expression.
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Conversion with C semantics (float to int truncates).
    Cast(ScalarType, Box<Expr>),
    /// Integer requantization of an `I32` value by a fixed-point `multiplier` and power-of-two
    /// `shift` (both `I32`), giving an `I32`: TFLite's `MultiplyByQuantizedMultiplier` with
    /// gemmlowp's double rounding, equal bit for bit to
    /// `kiln_ir::fixed_point::multiply_by_quantized_multiplier` (`shift` taken within
    /// `-31..=31`). One construct, so every emitter has one exact implementation of it:
    /// `kiln_requantize` in the C runtime, one instruction sequence in Cranelift.
    Requantize {
        value: Box<Expr>,
        multiplier: Box<Expr>,
        shift: Box<Expr>,
        /// TFLite's double rounding, or one rounding with ties to even
        /// (`kiln_ir::fixed_point::Rounding`; `kiln_requantize_half_even` in C).
        rounding: Rounding,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `for var in 0..extent` (an `I32` counter). `unroll` asks the emitter to unroll fully.
    For {
        var: Var,
        extent: usize,
        unroll: bool,
        body: Vec<Stmt>,
    },
    /// Declares and initializes a local.
    Let {
        var: Var,
        ty: ScalarType,
        init: Expr,
    },
    Assign {
        var: Var,
        value: Expr,
    },
    Store {
        param: usize,
        index: Expr,
        value: Expr,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
        otherwise: Vec<Stmt>,
    },
}

/// One layer's code.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// A C identifier naming the layer (`conv_3`).
    pub name: String,
    /// Inputs first, then outputs, in the node's order.
    pub params: Vec<Param>,
    pub body: Vec<Stmt>,
    /// Types of the kernel's variables, by id (loop counters are `I32`).
    pub vars: Vec<ScalarType>,
}

// Expression constructors, so lowerings read like the math they implement. They are named after
// the `BinOp`s they build; operator traits would make building IR nodes look like arithmetic.
#[allow(clippy::should_implement_trait)]
impl Expr {
    pub fn int(v: i64) -> Expr {
        Expr::Int(v)
    }
    pub fn f32(v: f32) -> Expr {
        Expr::Const(f64::from(v), DType::F32)
    }
    pub fn load(param: usize, index: Expr) -> Expr {
        Expr::Load {
            param,
            index: Box::new(index),
        }
    }
    pub fn un(op: UnOp, a: Expr) -> Expr {
        Expr::Unary(op, Box::new(a))
    }
    pub fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }
    pub fn select(c: Expr, a: Expr, b: Expr) -> Expr {
        Expr::Select(Box::new(c), Box::new(a), Box::new(b))
    }
    pub fn cast(ty: ScalarType, a: Expr) -> Expr {
        Expr::Cast(ty, Box::new(a))
    }
    pub fn requantize(value: Expr, multiplier: Expr, shift: Expr, rounding: Rounding) -> Expr {
        Expr::Requantize {
            value: Box::new(value),
            multiplier: Box::new(multiplier),
            shift: Box::new(shift),
            rounding,
        }
    }
    pub fn add(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Add, self, b)
    }
    pub fn sub(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Sub, self, b)
    }
    pub fn mul(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Mul, self, b)
    }
    pub fn div(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Div, self, b)
    }
    pub fn rem(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Rem, self, b)
    }
    pub fn max(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Max, self, b)
    }
    pub fn min(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Min, self, b)
    }
    pub fn lt(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Lt, self, b)
    }
    pub fn ge(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Ge, self, b)
    }
    pub fn and(self, b: Expr) -> Expr {
        Expr::bin(BinOp::And, self, b)
    }
    /// Whether `self` reads variable `v`.
    pub fn uses(&self, v: Var) -> bool {
        match self {
            Expr::Var(x) => *x == v,
            Expr::Int(_) | Expr::Const(..) => false,
            Expr::Load { index, .. } => index.uses(v),
            Expr::Unary(_, a) | Expr::Cast(_, a) => a.uses(v),
            Expr::Binary(_, a, b) => a.uses(v) || b.uses(v),
            Expr::Select(c, a, b) => c.uses(v) || a.uses(v) || b.uses(v),
            Expr::Requantize {
                value,
                multiplier,
                shift,
                ..
            } => value.uses(v) || multiplier.uses(v) || shift.uses(v),
        }
    }
    /// `self * k + b` with the trivial cases folded, for readable index expressions.
    pub fn affine(self, k: i64, b: i64) -> Expr {
        let scaled = match (k, &self) {
            (0, _) => return Expr::Int(b),
            (1, _) => self,
            _ => self.mul(Expr::Int(k)),
        };
        if b == 0 {
            scaled
        } else {
            scaled.add(Expr::Int(b))
        }
    }
}

/// Builds a kernel: allocates variables and nests statements.
#[derive(Debug)]
pub struct KernelBuilder {
    name: String,
    params: Vec<Param>,
    vars: Vec<ScalarType>,
}

impl KernelBuilder {
    pub fn new(name: impl Into<String>) -> Self {
        KernelBuilder {
            name: name.into(),
            params: Vec::new(),
            vars: Vec::new(),
        }
    }

    /// Adds a buffer parameter and returns its index.
    pub fn param(&mut self, name: &str, dtype: DType, len: usize, output: bool) -> usize {
        self.params.push(Param {
            name: name.to_string(),
            dtype,
            len,
            output,
        });
        self.params.len() - 1
    }

    /// A fresh variable of type `ty`.
    pub fn var(&mut self, ty: ScalarType) -> Var {
        self.vars.push(ty);
        Var(self.vars.len() as u32 - 1)
    }

    /// A fresh loop counter.
    pub fn counter(&mut self) -> Var {
        self.var(DType::I32)
    }

    pub fn finish(self, body: Vec<Stmt>) -> Kernel {
        Kernel {
            name: self.name,
            params: self.params,
            body,
            vars: self.vars,
        }
    }
}

/// `for v in 0..extent { body }`.
pub fn for_loop(var: Var, extent: usize, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var,
        extent,
        unroll: false,
        body,
    }
}

/// Nested loops over `extents` (outermost first) around `body`; `vars` are their counters.
pub fn loop_nest(vars: &[Var], extents: &[usize], body: Vec<Stmt>) -> Vec<Stmt> {
    let mut stmts = body;
    for (&v, &e) in vars.iter().zip(extents).rev() {
        stmts = vec![for_loop(v, e, stmts)];
    }
    stmts
}

/// Whether any statement of `body` reads variable `v`.
pub fn uses_var(body: &[Stmt], v: Var) -> bool {
    body.iter().any(|s| match s {
        Stmt::For { body, .. } => uses_var(body, v),
        Stmt::Let { init, .. } => init.uses(v),
        Stmt::Assign { value, .. } => value.uses(v),
        Stmt::Store { index, value, .. } => index.uses(v) || value.uses(v),
        Stmt::If {
            cond,
            then,
            otherwise,
        } => cond.uses(v) || uses_var(then, v) || uses_var(otherwise, v),
    })
}

/// Whether any statement of `body` assigns variable `v`.
fn assigns_var(body: &[Stmt], v: Var) -> bool {
    body.iter().any(|s| match s {
        Stmt::For { body, .. } => assigns_var(body, v),
        Stmt::Assign { var, .. } => *var == v,
        Stmt::If {
            then, otherwise, ..
        } => assigns_var(then, v) || assigns_var(otherwise, v),
        Stmt::Let { .. } | Stmt::Store { .. } => false,
    })
}

/// Drops the `Let`s of locals that the rest of their block never reads nor assigns
/// (expressions have no side effects), until none is left.
pub fn prune_unused_lets(body: Vec<Stmt>) -> Vec<Stmt> {
    let mut out: Vec<Stmt> = Vec::with_capacity(body.len());
    // Backwards, so a local read only by a dropped one is dropped too.
    for s in body.into_iter().rev() {
        let s = match s {
            Stmt::Let { var, .. } if !uses_var(&out, var) && !assigns_var(&out, var) => continue,
            Stmt::For {
                var,
                extent,
                unroll,
                body,
            } => Stmt::For {
                var,
                extent,
                unroll,
                body: prune_unused_lets(body),
            },
            Stmt::If {
                cond,
                then,
                otherwise,
            } => Stmt::If {
                cond,
                then: prune_unused_lets(then),
                otherwise: prune_unused_lets(otherwise),
            },
            other => other,
        };
        out.push(s);
    }
    out.reverse();
    out
}

/// Row-major flat index of the multi-index `idx` in a tensor of `shape`.
pub fn flat_index(idx: &[Expr], shape: &[usize]) -> Expr {
    let strides = kiln_ir::tensor::strides(shape);
    let mut acc: Option<Expr> = None;
    for (e, (&s, &d)) in idx.iter().zip(strides.iter().zip(shape)) {
        if d == 1 {
            continue; // the index along a unit dimension is always 0
        }
        let term = e.clone().affine(s as i64, 0);
        acc = Some(match acc {
            None => term,
            Some(a) => a.add(term),
        });
    }
    acc.unwrap_or(Expr::Int(0))
}

/// Schedule knobs: choices that change speed and code size but never results. Lowerings
/// produce plain loops; [`apply_schedule`] rewrites them, so every emitter gets the same code.
/// The default favours code size: nothing is unrolled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Schedule {
    /// Fully unroll innermost loops whose extent is at most this (0 turns unrolling off). Small
    /// kernel-tap loops (3x3 windows, 2- to 4-wide reductions) are where unrolling pays.
    pub unroll_limit: usize,
    /// Compute this many output channels per pass over the input window (0 or 1: one), so each
    /// loaded input element feeds several accumulators (register tiling of Conv and Gemm/MatMul
    /// columns).
    pub oc_tile: usize,
    /// `oc_tile` for convolutions whose window is larger than one element (0: `oc_tile`). Such
    /// windows give every loaded input element many multiply-adds, so wider tiles pay where a
    /// pointwise convolution would run out of registers (Cranelift uses 8 here, 4 elsewhere).
    pub windowed_oc_tile: usize,
    /// Loop order of convolutions.
    pub loop_order: LoopOrder,
}

/// Which loops of a convolution run outermost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoopOrder {
    /// For each output channel, sweep the output plane (weights stay hot).
    #[default]
    ChannelsOuter,
    /// For each output pixel, compute every output channel (the input window stays hot).
    PixelsOuter,
}

/// Applies the schedule knobs to a kernel.
pub fn apply_schedule(kernel: Kernel, schedule: &Schedule) -> Kernel {
    if schedule.unroll_limit == 0 {
        return kernel;
    }
    let body = unroll(kernel.body, schedule.unroll_limit);
    Kernel { body, ..kernel }
}

fn contains_loop(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::For { .. } => true,
        Stmt::If {
            then, otherwise, ..
        } => contains_loop(then) || contains_loop(otherwise),
        _ => false,
    })
}

fn declares_locals(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::Let { .. } => true,
        Stmt::If {
            then, otherwise, ..
        } => declares_locals(then) || declares_locals(otherwise),
        Stmt::For { body, .. } => declares_locals(body),
        _ => false,
    })
}

/// Replaces innermost loops of small extent by copies of their body with the counter fixed.
/// Loops whose body declares locals stay loops (copies would redeclare them).
fn unroll(body: Vec<Stmt>, limit: usize) -> Vec<Stmt> {
    let mut out = Vec::with_capacity(body.len());
    for s in body {
        match s {
            Stmt::For {
                var,
                extent,
                unroll: _,
                body,
            } => {
                let body = unroll(body, limit);
                if extent <= limit && !contains_loop(&body) && !declares_locals(&body) {
                    for i in 0..extent {
                        out.extend(body.iter().map(|st| subst_stmt(st, var, i as i64)));
                    }
                } else {
                    out.push(Stmt::For {
                        var,
                        extent,
                        unroll: false,
                        body,
                    });
                }
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => out.push(Stmt::If {
                cond,
                then: unroll(then, limit),
                otherwise: unroll(otherwise, limit),
            }),
            other => out.push(other),
        }
    }
    out
}

fn subst_stmt(s: &Stmt, var: Var, value: i64) -> Stmt {
    let e = |x: &Expr| subst_expr(x, var, value);
    match s {
        Stmt::For {
            var: v,
            extent,
            unroll,
            body,
        } => Stmt::For {
            var: *v,
            extent: *extent,
            unroll: *unroll,
            body: body.iter().map(|b| subst_stmt(b, var, value)).collect(),
        },
        Stmt::Let { var: v, ty, init } => Stmt::Let {
            var: *v,
            ty: *ty,
            init: e(init),
        },
        Stmt::Assign { var: v, value: x } => Stmt::Assign {
            var: *v,
            value: e(x),
        },
        Stmt::Store {
            param,
            index,
            value: x,
        } => Stmt::Store {
            param: *param,
            index: e(index),
            value: e(x),
        },
        Stmt::If {
            cond,
            then,
            otherwise,
        } => Stmt::If {
            cond: e(cond),
            then: then.iter().map(|b| subst_stmt(b, var, value)).collect(),
            otherwise: otherwise
                .iter()
                .map(|b| subst_stmt(b, var, value))
                .collect(),
        },
    }
}

/// Substitutes `value` for `var` and folds the integer arithmetic that becomes constant.
fn subst_expr(e: &Expr, var: Var, value: i64) -> Expr {
    match e {
        Expr::Var(v) if *v == var => Expr::Int(value),
        Expr::Int(_) | Expr::Const(..) | Expr::Var(_) => e.clone(),
        Expr::Load { param, index } => Expr::load(*param, subst_expr(index, var, value)),
        Expr::Unary(op, a) => Expr::un(*op, subst_expr(a, var, value)),
        Expr::Binary(op, a, b) => {
            let (a, b) = (subst_expr(a, var, value), subst_expr(b, var, value));
            match (op, &a, &b) {
                (BinOp::Add, Expr::Int(x), Expr::Int(y)) => Expr::Int(x + y),
                (BinOp::Mul, Expr::Int(x), Expr::Int(y)) => Expr::Int(x * y),
                (BinOp::Add, x, Expr::Int(0)) | (BinOp::Add, Expr::Int(0), x) => x.clone(),
                (BinOp::Mul, x, Expr::Int(1)) | (BinOp::Mul, Expr::Int(1), x) => x.clone(),
                (BinOp::Mul, _, Expr::Int(0)) | (BinOp::Mul, Expr::Int(0), _) => Expr::Int(0),
                _ => Expr::bin(*op, a, b),
            }
        }
        Expr::Select(c, a, b) => Expr::select(
            subst_expr(c, var, value),
            subst_expr(a, var, value),
            subst_expr(b, var, value),
        ),
        Expr::Cast(t, a) => Expr::cast(*t, subst_expr(a, var, value)),
        Expr::Requantize {
            value: v,
            multiplier,
            shift,
            rounding,
        } => Expr::requantize(
            subst_expr(v, var, value),
            subst_expr(multiplier, var, value),
            subst_expr(shift, var, value),
            *rounding,
        ),
    }
}
