//! Kernel lowering of element-wise ops (unary and broadcasting binary families), matching the
//! reference semantics of `kiln_ir::ops::unary` and `kiln_ir::ops::binary`.
//!
//! Every kernel is one loop nest over the output, with dimensions merged where no input's
//! broadcasting tells them apart (a single flat loop when nothing broadcasts) and each input's
//! index specialized at compile time. The body binds each input element to a local, then stores
//! the op's value.
//!
//! Differences from the interpreter, all outside what the tests exercise:
//! - float functions are computed in f32 (the interpreter rounds an f64 result once);
//!   `Elu`/`Selu` use `exp(x) - 1` and `Softplus` uses `log(1 + e)`, which lose relative
//!   precision for tiny results but stay far inside the absolute tolerance;
//! - out-of-range or NaN float -> integer conversions (Cast, Pow with an integer base and a
//!   float exponent) are undefined in C; in-range values match exactly;
//! - i32 Add/Sub/Mul/Neg wrap exactly (computed in i64); i64 overflow, i32/i64 `MIN / -1` and
//!   `Abs(MIN)` are undefined in C.

use kiln_ir::{DType, Op};

use super::Lowering;
use crate::error::BackendError;
use crate::kernel::{flat_index, loop_nest, BinOp, Expr, Stmt, UnOp, Var};

/// The index into an input of `in_shape` broadcast to the output multi-index `idx`.
pub fn broadcast_index(idx: &[Expr], in_shape: &[usize], out_rank: usize) -> Expr {
    let offset = out_rank - in_shape.len();
    let sub: Vec<Expr> = in_shape
        .iter()
        .enumerate()
        .map(|(d, &n)| {
            if n == 1 {
                Expr::Int(0)
            } else {
                idx[d + offset].clone()
            }
        })
        .collect();
    flat_index(&sub, in_shape)
}

/// The loops of an element-wise kernel and the element indices they produce.
pub(super) struct Space {
    pub vars: Vec<Var>,
    pub extents: Vec<usize>,
    /// Index of the current element in each input.
    pub inputs: Vec<Expr>,
    /// Index of the current element in the outputs.
    pub output: Expr,
}

/// The output shape with unit dimensions dropped and adjacent dimensions merged wherever every
/// input broadcasts the same way along both, with each input's shape in the same terms (1 where
/// it broadcasts). Same-shape and scalar operands thus collapse to one flat loop, and index
/// arithmetic only remains where broadcasting needs it.
fn merged_shapes(out: &[usize], inputs: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut merged_out: Vec<usize> = Vec::new();
    let mut merged_in: Vec<Vec<usize>> = vec![Vec::new(); inputs.len()];
    for (d, &n) in out.iter().enumerate() {
        if n == 1 {
            continue;
        }
        // Whether each input is full along d (else it broadcasts: its extent is 1).
        let full: Vec<bool> = inputs
            .iter()
            .map(|s| {
                let offset = out.len().saturating_sub(s.len());
                d >= offset && s.get(d - offset) == Some(&n)
            })
            .collect();
        let same_pattern = !merged_out.is_empty()
            && merged_in
                .iter()
                .zip(&full)
                .all(|(m, &f)| m.last().is_some_and(|&e| (e != 1) == f));
        if let (true, Some(last)) = (same_pattern, merged_out.last_mut()) {
            *last *= n;
            for (m, &f) in merged_in.iter_mut().zip(&full) {
                if let (true, Some(e)) = (f, m.last_mut()) {
                    *e *= n;
                }
            }
        } else {
            merged_out.push(n);
            for (m, &f) in merged_in.iter_mut().zip(&full) {
                m.push(if f { n } else { 1 });
            }
        }
    }
    (merged_out, merged_in)
}

/// The loop nest over the (merged) output shape and the element indices it produces.
fn space(cx: &mut Lowering) -> Space {
    space_of(cx, cx.inputs.len())
}

/// [`space`] for the first `operands` inputs (the others are tables, not broadcast).
pub(super) fn space_of(cx: &mut Lowering, operands: usize) -> Space {
    let in_shapes: Vec<&[usize]> = cx
        .inputs
        .iter()
        .take(operands)
        .map(|t| t.shape.as_slice())
        .collect();
    let out = cx.outputs.first().map_or(&[][..], |t| t.shape.as_slice());
    let (out_shape, in_shapes) = merged_shapes(out, &in_shapes);
    let vars = cx.counters(out_shape.len());
    let idx: Vec<Expr> = vars.iter().map(|&v| Expr::Var(v)).collect();
    let inputs = in_shapes
        .iter()
        .map(|s| broadcast_index(&idx, s, out_shape.len()))
        .collect();
    Space {
        vars,
        extents: out_shape.clone(),
        inputs,
        output: flat_index(&idx, &out_shape),
    }
}

pub fn lower(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let sp = space(cx);
    // Bind each input element to a local: ops such as Clip or PRelu read it more than once.
    let mut body = Vec::new();
    let mut args = Vec::new();
    let types: Vec<DType> = cx.inputs.iter().map(|t| t.dtype).collect();
    for (i, (index, &ty)) in sp.inputs.iter().zip(&types).enumerate() {
        let var = cx.var(ty);
        body.push(Stmt::Let {
            var,
            ty,
            init: Expr::load(cx.input(i), index.clone()),
        });
        args.push((Expr::Var(var), ty));
    }
    let value = match args.as_slice() {
        [(x, ty)] if is_unary(op) => unary(op, x.clone(), *ty, cx, &mut body)?,
        _ => binary(op, &args)?,
    };
    body.push(Stmt::Store {
        param: cx.output(0),
        index: sp.output.clone(),
        value,
    });
    if let (Op::Dropout { mask: true }, 2) = (op, cx.outputs.len()) {
        // Inference-mode dropout keeps every element.
        body.push(Stmt::Store {
            param: cx.output(1),
            index: sp.output.clone(),
            value: Expr::Const(1.0, DType::Bool),
        });
    }
    Ok(loop_nest(&sp.vars, &sp.extents, body))
}

fn is_unary(op: &Op) -> bool {
    op.family() == kiln_ir::op::OpFamily::Unary
}

/// An f32 constant given in f64 (rounded once when emitted).
fn f(v: f64) -> Expr {
    Expr::Const(v, DType::F32)
}

/// `e` converted from `from` to `to` as the interpreter's Cast does (for in-range values).
fn convert(e: Expr, from: DType, to: DType) -> Expr {
    match (from, to) {
        _ if from == to => e,
        // Anything to bool is `x != 0`, not C's truncating conversion of the value.
        (_, DType::Bool) => Expr::bin(BinOp::Ne, e, Expr::Const(0.0, from)),
        // Float to a narrow integer goes through i32 and wraps, as on x86 (300.0 -> i8 44).
        (DType::F32, DType::I8 | DType::U8 | DType::I16) => {
            Expr::cast(to, Expr::cast(DType::I32, e))
        }
        _ => Expr::cast(to, e),
    }
}

/// `a op b` with wrapping integer overflow: i32 is computed in i64 (C's i32 overflow is
/// undefined), narrower types are promoted by C and wrapped by the store.
fn wrapping(op: BinOp, a: Expr, b: Expr, ty: DType) -> Expr {
    if ty == DType::I32 {
        let wide = Expr::bin(op, Expr::cast(DType::I64, a), Expr::cast(DType::I64, b));
        Expr::cast(DType::I32, wide)
    } else {
        Expr::bin(op, a, b)
    }
}

/// The value of a unary-family op at element `x` of type `ty`.
/// `cx` and `body` let an op bind intermediate values to locals. Also the fused-activation
/// epilogue of Conv, Gemm, MatMul and Add (see `lower_op`).
pub(crate) fn unary(
    op: &Op,
    x: Expr,
    ty: DType,
    cx: &mut Lowering,
    body: &mut Vec<Stmt>,
) -> Result<Expr, BackendError> {
    let un = |o: UnOp, e: Expr| Expr::un(o, e);
    Ok(match op {
        Op::Identity | Op::Dropout { .. } => x,
        Op::Abs if ty == DType::U8 => x,
        Op::Abs => un(UnOp::Abs, x),
        Op::Neg if ty == DType::I32 => {
            Expr::cast(DType::I32, un(UnOp::Neg, Expr::cast(DType::I64, x)))
        }
        Op::Neg => un(UnOp::Neg, x),
        Op::Not => un(UnOp::Not, x),
        Op::Sqrt => un(UnOp::Sqrt, x),
        Op::Reciprocal => f(1.0).div(x),
        Op::Exp => un(UnOp::Exp, x),
        Op::Log => un(UnOp::Log, x),
        Op::Erf => un(UnOp::Erf, x),
        Op::Floor => un(UnOp::Floor, x),
        Op::Ceil => un(UnOp::Ceil, x),
        Op::Round => un(UnOp::RoundEven, x),
        Op::Tanh => un(UnOp::Tanh, x),
        Op::Relu => x.max(Expr::Const(0.0, ty)),
        Op::Sigmoid => {
            let e = cx.var(DType::F32);
            body.push(Stmt::Let {
                var: e,
                ty: DType::F32,
                init: un(UnOp::Exp, un(UnOp::Neg, un(UnOp::Abs, x.clone()))),
            });
            sigmoid(x, Expr::Var(e))
        }
        Op::Softplus => {
            // max(x, 0) + ln(1 + e^-|x|): neither overflows for large |x|.
            let e = un(UnOp::Exp, un(UnOp::Neg, un(UnOp::Abs, x.clone())));
            x.max(f(0.0)).add(un(UnOp::Log, f(1.0).add(e)))
        }
        Op::HardSwish => {
            let gate = x.clone().div(f(6.0)).add(f(0.5));
            x.mul(gate.max(f(0.0)).min(f(1.0)))
        }
        Op::HardSigmoid { alpha, beta } => f(f64::from(*alpha))
            .mul(x)
            .add(f(f64::from(*beta)))
            .max(f(0.0))
            .min(f(1.0)),
        Op::LeakyRelu { alpha } => {
            Expr::select(x.clone().lt(f(0.0)), f(f64::from(*alpha)).mul(x.clone()), x)
        }
        Op::Elu { alpha } => Expr::select(
            x.clone().lt(f(0.0)),
            f(f64::from(*alpha)).mul(expm1(x.clone())),
            x,
        ),
        Op::Selu { alpha, gamma } => {
            let g = f64::from(*gamma);
            Expr::select(
                Expr::bin(BinOp::Gt, x.clone(), f(0.0)),
                f(g).mul(x.clone()),
                f(g * f64::from(*alpha)).mul(expm1(x)),
            )
        }
        Op::Gelu { tanh_approx: false } => {
            let erf = un(UnOp::Erf, x.clone().mul(f(std::f64::consts::FRAC_1_SQRT_2)));
            f(0.5).mul(x).mul(f(1.0).add(erf))
        }
        Op::Gelu { tanh_approx: true } => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            let cube = f(0.044715).mul(x.clone()).mul(x.clone()).mul(x.clone());
            let t = un(UnOp::Tanh, f(k).mul(x.clone().add(cube)));
            f(0.5).mul(x).mul(f(1.0).add(t))
        }
        Op::Clip { min, max } => clip(x, ty, *min, *max),
        Op::Cast { to } => convert(x, ty, *to),
        _ => return crate::cannot!("{} is not a unary element-wise op", op.name()),
    })
}

/// `e^x - 1` (no expm1 in the kernel IR; the absolute error stays at f32 resolution).
fn expm1(x: Expr) -> Expr {
    Expr::un(UnOp::Exp, x).sub(f(1.0))
}

/// The logistic function with a single exp that never overflows: given `e = exp(-|x|)`, it is
/// `1 / (1 + e)` for `x >= 0` and `e / (1 + e)` otherwise (NaN takes the second branch).
fn sigmoid(x: Expr, e: Expr) -> Expr {
    let denom = f(1.0).add(e.clone());
    Expr::select(x.ge(f(0.0)), f(1.0).div(denom.clone()), e.div(denom))
}

/// Clip: max with the lower bound then min with the upper (so min > max gives max, as ONNX
/// says); NaN propagates. Integer bounds saturate to the type's range.
fn clip(x: Expr, ty: DType, min: Option<f64>, max: Option<f64>) -> Expr {
    let bound = |v: f64| Expr::Const(saturate(v, ty), ty);
    let (lo, hi) = kiln_ir::ops::unary::clip_bounds(min, max);
    // For integers a missing bound is the type's own limit: no clamp to emit on that side.
    let emit = |given: Option<f64>| given.is_some() || ty == DType::F32;
    let x = if emit(min) { x.max(bound(lo)) } else { x };
    if emit(max) {
        x.min(bound(hi))
    } else {
        x
    }
}

/// A bound converted to `ty` as Rust's `as` does: integers truncate and saturate (NaN -> 0).
fn saturate(v: f64, ty: DType) -> f64 {
    let (lo, hi) = match ty {
        DType::I8 => (-128.0, 127.0),
        DType::U8 => (0.0, 255.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::I32 => (-2_147_483_648.0, 2_147_483_647.0),
        DType::I64 => (-9_223_372_036_854_775_808.0, 9_223_372_036_854_775_807.0),
        DType::F32 | DType::Bool => return f64::from(v as f32),
    };
    if v.is_nan() {
        0.0
    } else {
        v.trunc().clamp(lo, hi)
    }
}

/// The value of a binary-family op at elements `args` (value and type of each input).
fn binary(op: &Op, args: &[(Expr, DType)]) -> Result<Expr, BackendError> {
    if let Some(v) = variadic(op, args) {
        return Ok(v);
    }
    let value = match (op, args) {
        (Op::Add { .. }, [(a, t), (b, _)]) => wrapping(BinOp::Add, a.clone(), b.clone(), *t),
        (Op::Sub, [(a, t), (b, _)]) => wrapping(BinOp::Sub, a.clone(), b.clone(), *t),
        (Op::Mul, [(a, t), (b, _)]) => wrapping(BinOp::Mul, a.clone(), b.clone(), *t),
        (Op::Div, [(a, _), (b, _)]) => a.clone().div(b.clone()),
        (Op::Pow, [(a, ta), (b, tb)]) => pow(a.clone(), *ta, b.clone(), *tb),
        (Op::Equal, [(a, _), (b, _)]) => Expr::bin(BinOp::Eq, a.clone(), b.clone()),
        (Op::Less, [(a, _), (b, _)]) => a.clone().lt(b.clone()),
        (Op::Greater, [(a, _), (b, _)]) => Expr::bin(BinOp::Gt, a.clone(), b.clone()),
        (Op::And, [(a, _), (b, _)]) => a.clone().and(b.clone()),
        (Op::Or, [(a, _), (b, _)]) => Expr::bin(BinOp::Or, a.clone(), b.clone()),
        (Op::PRelu, [(x, t), (slope, _)]) => Expr::select(
            x.clone().lt(Expr::Const(0.0, *t)),
            wrapping(BinOp::Mul, x.clone(), slope.clone(), *t),
            x.clone(),
        ),
        (Op::Where, [(c, _), (x, _), (y, _)]) => Expr::select(c.clone(), x.clone(), y.clone()),
        _ => {
            return crate::cannot!(
                "{} with {} inputs is not a binary element-wise op",
                op.name(),
                args.len()
            )
        }
    };
    Ok(value)
}

/// Max, Min, Sum, Mean: a left fold over the inputs, as the interpreter folds them (Sum and
/// Mean are f32 only, so the additions need no wrapping).
fn variadic(op: &Op, args: &[(Expr, DType)]) -> Option<Expr> {
    let fold = |o: BinOp| {
        let (first, rest) = args.split_first()?;
        Some(
            rest.iter()
                .fold(first.0.clone(), |acc, (e, _)| Expr::bin(o, acc, e.clone())),
        )
    };
    match op {
        Op::Max => fold(BinOp::Max),
        Op::Min => fold(BinOp::Min),
        Op::Sum => fold(BinOp::Add),
        Op::Mean => Some(fold(BinOp::Add)?.div(f(args.len() as f64))),
        _ => None,
    }
}

/// Pow with the result in the base's type `ta` and an exponent of any numeric type `tb`.
fn pow(a: Expr, ta: DType, b: Expr, tb: DType) -> Expr {
    match (ta == DType::F32, tb == DType::F32) {
        (true, _) => Expr::bin(BinOp::Pow, a, convert(b, tb, DType::F32)),
        // Exact integer power with wrapping: computing in i64 and truncating gives the same bits.
        (false, false) => convert(
            Expr::bin(
                BinOp::Pow,
                convert(a, ta, DType::I64),
                convert(b, tb, DType::I64),
            ),
            DType::I64,
            ta,
        ),
        // An integer base with a float exponent: the real power, truncated.
        (false, true) => convert(
            Expr::bin(BinOp::Pow, convert(a, ta, DType::F32), b),
            DType::F32,
            ta,
        ),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cloned_ref_to_slice_refs
)] // tests may unwrap; `&[x.clone()]` reads better than `from_ref`
pub(crate) mod tests {
    use kiln_ir::{Graph, Tensor, TensorData};

    use super::*;
    use crate::c::COptions;
    use crate::host::{run_c, HostOptions};

    /// Runs `op` on `inputs` through the interpreter and through generated C (built with the
    /// strict warning flags and UBSan) and checks that they agree. (`-Wno-type-limits`: the
    /// runtime header's `kiln_abs_u8` compares a `uint8_t` with 0, which gcc flags at -O2.)
    pub(crate) fn check(op: Op, inputs: &[Tensor]) {
        let mut g = Graph::new("t");
        let ids = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| g.add_input(format!("in{i}"), t.ty()))
            .collect();
        let node = g.add_node("n", op.clone(), ids, vec![]).unwrap();
        let outs = g.node(node).outputs.clone();
        g.set_outputs(outs);
        let want = kiln_ir::interp::run(&g, inputs).unwrap();
        let mut flags =
            "-Wall -Wextra -Wpedantic -Wshadow -Wcast-qual -Werror -Wno-type-limits".to_string();
        if std::env::var_os("CC").is_none() {
            // The default compiler (gcc here) ships the UBSan runtime; others may not.
            flags.push_str(" -fsanitize=undefined -fno-sanitize-recover=all");
        }
        let host = HostOptions {
            cflags: flags.split(' ').map(String::from).collect(),
            keep_dir: None,
        };
        let got = run_c(&g, inputs, &COptions::default(), &host)
            .unwrap_or_else(|e| panic!("{}: {e}", op.name()));
        for (w, o) in want.iter().zip(&got) {
            assert_eq!(w.ty(), o.ty(), "{}", op.name());
            match (w.data(), o.data()) {
                (TensorData::F32(a), TensorData::F32(b)) => {
                    for (x, y) in a.iter().zip(b) {
                        let close = x == y
                            || (x.is_nan() && y.is_nan())
                            || (x - y).abs() <= 1e-5 + 1e-4 * x.abs();
                        assert!(close, "{}: want {a:?}, got {b:?}", op.name());
                    }
                }
                (a, b) => assert_eq!(a, b, "{}", op.name()),
            }
        }
    }

    fn t(shape: &[usize], data: TensorData) -> Tensor {
        Tensor::new(shape.to_vec(), data).unwrap()
    }

    fn f(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn ramp(shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (i as f32 - n as f32 / 2.0) * scale)
            .collect();
        f(shape, &v)
    }

    #[test]
    fn integer_arithmetic_wraps_and_divides_like_the_interpreter() {
        let a8 = t(&[4], TensorData::I8(vec![100, -100, 127, -128]));
        let b8 = t(&[4], TensorData::I8(vec![100, -100, 1, -1]));
        for op in [
            Op::Add {
                activation: Default::default(),
            },
            Op::Sub,
            Op::Mul,
            Op::Div,
            Op::Max,
            Op::Min,
        ] {
            check(op, &[a8.clone(), b8.clone()]);
        }
        let a32 = t(&[5], TensorData::I32(vec![i32::MAX, i32::MIN, 7, -7, 5]));
        let b32 = t(&[5], TensorData::I32(vec![1, 1, -2, 2, 0]));
        for op in [
            Op::Add {
                activation: Default::default(),
            },
            Op::Sub,
            Op::Mul,
            Op::Div,
            Op::PRelu,
        ] {
            check(op, &[a32.clone(), b32.clone()]);
        }
        let u = t(&[3], TensorData::U8(vec![200, 3, 0]));
        let v = t(&[3], TensorData::U8(vec![100, 5, 0]));
        for op in [
            Op::Add {
                activation: Default::default(),
            },
            Op::Sub,
            Op::Mul,
            Op::Div,
            Op::Equal,
            Op::Less,
            Op::Greater,
        ] {
            check(op, &[u.clone(), v.clone()]);
        }
        check(Op::Neg, &[a8.clone()]);
        check(Op::Abs, &[a8.clone()]);
        check(Op::Relu, &[a8]);
        check(Op::Abs, &[u]);
        check(Op::Neg, &[t(&[2], TensorData::I32(vec![i32::MIN, 3]))]);
    }

    #[test]
    fn pow_with_mixed_types() {
        let bi = t(&[6], TensorData::I32(vec![2, -3, 1, -1, 0, 7]));
        let ei = t(&[6], TensorData::I64(vec![3, 3, -2, -3, 2, 40]));
        check(Op::Pow, &[bi.clone(), ei.clone()]);
        let ef = f(&[6], &[3.0, 2.0, 0.5, 2.0, 1.0, 1.5]);
        check(Op::Pow, &[bi, ef.clone()]);
        let bf = f(&[6], &[2.0, -3.0, 1.5, 4.0, 0.0, 0.7]);
        check(Op::Pow, &[bf.clone(), ei]);
        check(Op::Pow, &[bf, ef]);
    }

    #[test]
    fn casts_between_every_pair_of_types() {
        let x = f(
            &[8],
            &[300.0, -1.0, -129.5, 3.7, -3.7, 0.0, 65535.9, -40000.0],
        );
        let types = [
            DType::F32,
            DType::I8,
            DType::U8,
            DType::I16,
            DType::I32,
            DType::I64,
            DType::Bool,
        ];
        for to in types {
            check(Op::Cast { to }, &[x.clone()]);
        }
        let ints = t(&[4], TensorData::I64(vec![300, -1, 1 << 40, 0]));
        let bools = t(&[2], TensorData::Bool(vec![true, false]));
        for to in types {
            check(Op::Cast { to }, &[ints.clone()]);
            check(Op::Cast { to }, &[bools.clone()]);
        }
    }

    #[test]
    fn clip_bounds() {
        let x = t(&[3], TensorData::I8(vec![-100, 5, 100]));
        check(
            Op::Clip {
                min: Some(-1000.0),
                max: Some(10.0),
            },
            &[x],
        );
        let y = f(&[4], &[-2.0, 0.5, 1.5, 3.0]);
        check(
            Op::Clip {
                min: Some(2.0),
                max: Some(1.0),
            },
            &[y.clone()],
        );
        check(
            Op::Clip {
                min: None,
                max: Some(1.0),
            },
            &[y],
        );
    }

    #[test]
    fn fused_activation_on_add() {
        let op = Op::Add {
            activation: kiln_ir::Activation::Relu,
        };
        check(op, &[ramp(&[3, 1, 5], 0.5), ramp(&[1, 4, 1], -0.25)]);
        let op = Op::Add {
            activation: kiln_ir::Activation::HardSwish,
        };
        check(op, &[ramp(&[2, 6], 1.5), ramp(&[6], -0.75)]);
    }

    #[test]
    fn broadcasting_patterns() {
        check(
            Op::Add {
                activation: Default::default(),
            },
            &[ramp(&[3, 1, 5], 0.5), ramp(&[1, 4, 1], 0.25)],
        );
        check(Op::Sub, &[ramp(&[2, 3, 4], 0.5), ramp(&[3, 1], 1.0)]);
        check(Op::Mul, &[ramp(&[2, 3, 4], 0.5), ramp(&[], 1.0)]);
        check(Op::Div, &[ramp(&[], 3.0), ramp(&[2, 1, 4], 0.5)]);
        check(
            Op::Mean,
            &[ramp(&[2, 3], 1.0), ramp(&[3], 2.0), ramp(&[2, 1], 3.0)],
        );
        check(
            Op::Sum,
            &[ramp(&[4, 1, 2], 1.0), ramp(&[3, 1], 2.0), ramp(&[2], 3.0)],
        );
        check(Op::Max, &[ramp(&[1], 1.0)]);
        check(
            Op::PRelu,
            &[ramp(&[2, 3, 2, 2], 0.5), ramp(&[3, 1, 1], 0.1)],
        );
        let c = t(&[2, 1], TensorData::Bool(vec![true, false]));
        check(
            Op::And,
            &[
                c.clone(),
                t(&[3], TensorData::Bool(vec![true, false, true])),
            ],
        );
        check(
            Op::Or,
            &[
                c.clone(),
                t(&[3], TensorData::Bool(vec![true, false, true])),
            ],
        );
        check(Op::Not, &[c]);
    }

    #[test]
    fn float_functions() {
        let x = f(
            &[12],
            &[
                -100.0, -20.0, -3.0, -1.0, -0.5, -1e-3, 0.0, 1e-3, 0.5, 1.0, 3.0, 100.0,
            ],
        );
        let ops = [
            Op::Sigmoid,
            Op::Softplus,
            Op::Tanh,
            Op::Erf,
            Op::Exp,
            Op::HardSwish,
            Op::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Op::LeakyRelu { alpha: 0.1 },
            Op::Elu { alpha: 1.0 },
            Op::Selu {
                alpha: 1.673_263_2,
                gamma: 1.050_701,
            },
            Op::Gelu { tanh_approx: false },
            Op::Gelu { tanh_approx: true },
            Op::Round,
            Op::Floor,
            Op::Ceil,
            Op::Reciprocal,
            Op::Relu,
            Op::Identity,
            Op::Dropout { mask: true },
        ];
        for op in ops {
            check(op, &[x.clone()]);
        }
        let pos = f(&[4], &[0.5, 2.0, 2.5, 1e6]);
        check(Op::Sqrt, &[pos.clone()]);
        check(Op::Log, &[pos]);
    }
}
