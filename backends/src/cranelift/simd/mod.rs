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
//!
//! Layout: `analysis.rs` decides which loops qualify and how each value varies across lanes;
//! this file runs the vectorized loop and its statements; `expr.rs` translates expressions
//! into lanes (float arithmetic, clamps, math calls, affine indices); `integer.rs` holds the
//! `i32x4` lane code (widening loads, packing stores, narrowing, requantization);
//! `memory.rs` computes vector addresses and the strided float loads.

mod analysis;
mod expr;
mod integer;
mod memory;

use std::collections::{HashMap, HashSet};

use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::Variable;
use kiln_ir::DType;

pub(super) use analysis::clamp_bound;
pub use analysis::lane_locals;
use memory::part_offset;

use super::translate::{Callees, KernelTranslator};
use crate::error::BackendError;
use crate::kernel::{Stmt, Var};

pub const LANES: usize = 4;

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
}

fn not_vectorizable(what: &str) -> BackendError {
    // The analysis admitted the loop, so reaching this is a bug in this file, reported as an
    // error rather than wrong code.
    BackendError::Lowering(format!("vectorizer: unexpected {what}"))
}
