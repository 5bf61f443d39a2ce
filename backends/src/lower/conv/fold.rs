//! Constant folding of the kernel IR's `I32` index arithmetic: the generic builders leave
//! `0 * 6`, `x + 0` and `2 + 3` at unit extents, and sums of scaled variables whose constant
//! offsets (padding, region starts) merge into one. Every convolution, pooling and matmul
//! kernel passes through [`fold`] before it is emitted; `window::hoist` folds each index it
//! binds.

use kiln_ir::DType;

use crate::kernel::{BinOp, Expr, Stmt, Var};

/// Folds constant `I32` index arithmetic (`0 * 6`, `x + 0`, `2 + 3`) left by the generic
/// builders at unit extents, so the emitted code carries no dead arithmetic.
/// Locals nothing reads (the row bases of a window that misses the input) are dropped.
pub(in crate::lower) fn fold(stmts: Vec<Stmt>) -> Vec<Stmt> {
    crate::kernel::prune_unused_lets(stmts.into_iter().map(fold_stmt).collect())
}

fn fold_stmt(s: Stmt) -> Stmt {
    match s {
        Stmt::For {
            var,
            extent,
            unroll,
            body,
        } => Stmt::For {
            var,
            extent,
            unroll,
            body: fold(body),
        },
        Stmt::Let { var, ty, init } => Stmt::Let {
            var,
            ty,
            init: if ty == DType::I32 {
                fold_index(init)
            } else {
                fold_expr(init)
            },
        },
        Stmt::Assign { var, value } => Stmt::Assign {
            var,
            value: fold_expr(value),
        },
        Stmt::Store {
            param,
            index,
            value,
        } => Stmt::Store {
            param,
            index: fold_index(index),
            value: fold_expr(value),
        },
        Stmt::If {
            cond,
            then,
            otherwise,
        } => Stmt::If {
            cond: fold_expr(cond),
            then: fold(then),
            otherwise: fold(otherwise),
        },
    }
}

/// Folds an expression of any type; index sub-expressions are normalized.
pub(in crate::lower) fn fold_expr(e: Expr) -> Expr {
    match e {
        Expr::Load { param, index } => Expr::load(param, fold_index(*index)),
        Expr::Unary(op, a) => Expr::un(op, fold_expr(*a)),
        Expr::Select(c, a, b) => Expr::select(fold_expr(*c), fold_expr(*a), fold_expr(*b)),
        Expr::Cast(t, a) => Expr::cast(t, fold_expr(*a)),
        Expr::Requantize {
            value,
            multiplier,
            shift,
            rounding,
        } => Expr::requantize(
            fold_expr(*value),
            fold_expr(*multiplier),
            fold_expr(*shift),
            rounding,
        ),
        Expr::Binary(op, a, b) => {
            // An `Int` operand makes both sides index math (the lowerings here only use
            // `Int` for `I32` values).
            let index = matches!(*a, Expr::Int(_)) || matches!(*b, Expr::Int(_));
            if !index {
                return fold_binary(op, fold_expr(*a), fold_expr(*b));
            }
            let e = Expr::Binary(op, a, b);
            let mut terms = Vec::new();
            match linear(&e, 1, &mut terms) {
                Some(c) => rebuild(terms, c),
                None => match e {
                    Expr::Binary(op, a, b) => fold_binary(op, fold_index(*a), fold_index(*b)),
                    other => other,
                },
            }
        }
        other => other,
    }
}

/// Folds an `I32` index expression, rewriting sums of scaled variables into one
/// `v * a + w * b + c` so constant offsets from padding and region starts merge.
pub(super) fn fold_index(e: Expr) -> Expr {
    let mut terms = Vec::new();
    match linear(&e, 1, &mut terms) {
        Some(c) => rebuild(terms, c),
        None => fold_expr(e),
    }
}

/// Adds `scale * e` to `terms` (variable, coefficient) and returns its constant part, or
/// `None` when `e` is not linear in variables.
fn linear(e: &Expr, scale: i64, terms: &mut Vec<(Var, i64)>) -> Option<i64> {
    match e {
        Expr::Int(v) => Some(v * scale),
        Expr::Var(v) => {
            match terms.iter_mut().find(|(t, _)| t == v) {
                Some((_, c)) => *c += scale,
                None => terms.push((*v, scale)),
            }
            Some(0)
        }
        Expr::Binary(BinOp::Add, a, b) => Some(linear(a, scale, terms)? + linear(b, scale, terms)?),
        Expr::Binary(BinOp::Sub, a, b) => {
            Some(linear(a, scale, terms)? + linear(b, -scale, terms)?)
        }
        Expr::Binary(BinOp::Mul, a, b) => match (a.as_ref(), b.as_ref()) {
            (x, Expr::Int(k)) | (Expr::Int(k), x) => linear(x, scale * k, terms),
            _ => None,
        },
        _ => None,
    }
}

fn rebuild(terms: Vec<(Var, i64)>, c: i64) -> Expr {
    let mut acc: Option<Expr> = None;
    for (v, k) in terms.into_iter().filter(|(_, k)| *k != 0) {
        let term = Expr::Var(v).affine(k.abs(), 0);
        acc = Some(match acc {
            None if k < 0 => Expr::int(0).sub(term),
            None => term,
            Some(a) if k < 0 => a.sub(term),
            Some(a) => a.add(term),
        });
    }
    match acc {
        None => Expr::int(c),
        Some(a) if c > 0 => a.add(Expr::int(c)),
        Some(a) if c < 0 => a.sub(Expr::int(-c)),
        Some(a) => a,
    }
}

/// One binary node with folded operands.
fn fold_binary(op: BinOp, a: Expr, b: Expr) -> Expr {
    match (op, &a, &b) {
        (BinOp::Add, Expr::Int(x), Expr::Int(y)) => Expr::Int(x + y),
        (BinOp::Sub, Expr::Int(x), Expr::Int(y)) => Expr::Int(x - y),
        (BinOp::Mul, Expr::Int(x), Expr::Int(y)) => Expr::Int(x * y),
        (BinOp::Div, Expr::Int(x), Expr::Int(y)) if *y > 0 => Expr::Int(x / y),
        (BinOp::Max, Expr::Int(x), Expr::Int(y)) => Expr::Int(*x.max(y)),
        (BinOp::Min, Expr::Int(x), Expr::Int(y)) => Expr::Int(*x.min(y)),
        (BinOp::Add, _, Expr::Int(0)) | (BinOp::Mul, _, Expr::Int(1)) => a,
        (BinOp::Add, Expr::Int(0), _) | (BinOp::Mul, Expr::Int(1), _) => b,
        (BinOp::Mul, Expr::Int(0), _) | (BinOp::Mul, _, Expr::Int(0)) => Expr::Int(0),
        (BinOp::Div, _, Expr::Int(1)) => a,
        _ => Expr::bin(op, a, b),
    }
}
