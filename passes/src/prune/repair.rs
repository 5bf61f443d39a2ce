//! Repair without training: after pruning, each layer that lost inputs (a Conv with group 1,
//! a Gemm or a MatMul: the readers of removed channels) gets new weights and bias, fit by
//! least squares so that its output (before its activation) on calibration samples matches the
//! unpruned model's at its kept outputs. Its inputs are the pruned model's own activations, so
//! each refit also absorbs the drift of the layers before it (the reconstruction of He et al.'s
//! channel pruning and AIMET's weight reconstruction, one layer at a time, in waves: a layer
//! is refit after every refit layer upstream of it).
//!
//! The caller runs the samples on its own engine (the CLI compiles with the Cranelift JIT),
//! through the `compile` callback; this file only builds the graphs to run and solves.
//!
//! Least squares can make a layer worse on unseen inputs (it fits the calibration samples,
//! and a user of He et al.'s code reports worse ResNet accuracy after reconstruction). So every
//! fourth sample is held out (with 8 samples or more): a refit is kept only if it has a lower
//! error on the held-out samples than the pruned weights, and is then solved again on all
//! samples. The normal equations carry a small ridge (1e-4 of their mean diagonal) against
//! dead (always-zero) inputs.

use kiln_ir::{Activation, Graph, IrError, NodeId, Op, Tensor};

use super::{bias_vector, matrix_to_weights, weight_matrix, Applied, WeightMatrix};

/// Runs one compiled graph on one sample (the caller's engine).
pub trait Runner {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String>;
}

/// Compiles a graph for the caller's engine.
pub type Compile<'a> = dyn FnMut(&Graph) -> Result<Box<dyn Runner>, String> + 'a;

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("repair: {0}")]
    Engine(String),
    #[error(transparent)]
    Ir(#[from] IrError),
}

/// What repair did to one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct RefitLayer {
    pub node: String,
    pub op: &'static str,
    /// Equations (samples x output positions) and unknowns per output.
    pub rows: usize,
    pub unknowns: usize,
    /// Squared error relative to the target's energy on the held-out samples (all samples
    /// with fewer than 8): with the pruned weights, and with the refit ones.
    pub error_pruned: f64,
    pub error_refit: f64,
    /// Whether the refit weights replaced the pruned ones.
    pub accepted: bool,
    /// Why the layer was not refit, if it was not.
    pub skipped: Option<String>,
}

/// How a layer turns its input into equations.
#[derive(Clone, Debug)]
enum Shape {
    /// A 1-D or 2-D Conv with group 1 (1-D as a height of 1).
    Conv {
        k: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
        p: [usize; 2],
        out: [usize; 2],
    },
    /// Gemm or MatMul: one equation per row of the input.
    Dense { bias: bool },
}

fn layer_shape(pruned: &Graph, id: NodeId) -> Result<Shape, String> {
    let node = pruned.node(id);
    let y = &pruned.value(node.outputs[0]).ty.shape;
    match &node.op {
        Op::Conv {
            kernel_shape,
            strides,
            dilations,
            pads,
            group: 1,
            ..
        } => match kernel_shape.len() {
            2 => Ok(Shape::Conv {
                k: [kernel_shape[0], kernel_shape[1]],
                s: [strides[0], strides[1]],
                d: [dilations[0], dilations[1]],
                p: [pads[0], pads[1]],
                out: [y[2], y[3]],
            }),
            1 => Ok(Shape::Conv {
                k: [1, kernel_shape[0]],
                s: [1, strides[0]],
                d: [1, dilations[0]],
                p: [0, pads[0]],
                out: [1, y[2]],
            }),
            n => Err(format!("{n}-D convolutions are not refit")),
        },
        Op::Gemm { trans_a: false, .. } => {
            let outs = y.get(1).copied().unwrap_or(0);
            if node.inputs.len() > 2 && bias_vector(pruned, id, outs).is_none() {
                return Err("its C is not one bias row".into());
            }
            Ok(Shape::Dense { bias: true })
        }
        Op::MatMul { .. } => Ok(Shape::Dense { bias: false }),
        _ => Err("only Conv (group 1), Gemm and MatMul are refit".into()),
    }
}

/// Normal equations `A w = B` of one layer, for one set of samples.
#[derive(Clone, Debug)]
struct Normal {
    k: usize,
    o: usize,
    /// Upper triangle of `sum x x^T`, row-major `k x k`.
    a: Vec<f64>,
    /// `sum x y^T`, `k x o`.
    b: Vec<f64>,
    /// `sum y^2` per output.
    yy: Vec<f64>,
    rows: usize,
}

impl Normal {
    fn new(k: usize, o: usize) -> Self {
        Normal {
            k,
            o,
            a: vec![0.0; k * k],
            b: vec![0.0; k * o],
            yy: vec![0.0; o],
            rows: 0,
        }
    }

    fn add(&mut self, x: &[f64], y: &[f64]) {
        let (k, o) = (self.k, self.o);
        for i in 0..k {
            let xi = x[i];
            if xi == 0.0 {
                continue;
            }
            let row = &mut self.a[i * k..(i + 1) * k];
            for j in i..k {
                row[j] += xi * x[j];
            }
            let brow = &mut self.b[i * o..(i + 1) * o];
            for t in 0..o {
                brow[t] += xi * y[t];
            }
        }
        for (acc, &v) in self.yy.iter_mut().zip(y) {
            *acc += v * v;
        }
        self.rows += 1;
    }

    fn merged(&self, other: &Normal) -> Normal {
        let sum = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x + y).collect();
        Normal {
            k: self.k,
            o: self.o,
            a: sum(&self.a, &other.a),
            b: sum(&self.b, &other.b),
            yy: sum(&self.yy, &other.yy),
            rows: self.rows + other.rows,
        }
    }

    fn a_at(&self, i: usize, j: usize) -> f64 {
        if i <= j {
            self.a[i * self.k + j]
        } else {
            self.a[j * self.k + i]
        }
    }

    /// Squared error of weights `w` (`o` columns of `k`, column-major by output).
    fn error(&self, w: &[Vec<f64>]) -> f64 {
        let k = self.k;
        let mut total = 0.0;
        for (t, wt) in w.iter().enumerate() {
            let mut quad = 0.0;
            for i in 0..k {
                let s: f64 = wt
                    .iter()
                    .enumerate()
                    .map(|(j, &w)| self.a_at(i, j) * w)
                    .sum();
                quad += wt[i] * s;
            }
            let lin: f64 = (0..k).map(|i| wt[i] * self.b[i * self.o + t]).sum();
            total += quad - 2.0 * lin + self.yy[t];
        }
        total.max(0.0)
    }

    fn energy(&self) -> f64 {
        self.yy.iter().sum()
    }

    /// Solves `(A + ridge) w = B` by Cholesky, one column per output.
    fn solve(&self) -> Option<Vec<Vec<f64>>> {
        let k = self.k;
        let mean_diag = (0..k).map(|i| self.a_at(i, i)).sum::<f64>() / k.max(1) as f64;
        let mut ridge = 1e-4 * mean_diag.max(1e-12);
        for _ in 0..6 {
            if let Some(l) = self.cholesky(ridge) {
                return Some(
                    (0..self.o)
                        .map(|t| {
                            let rhs: Vec<f64> = (0..k).map(|i| self.b[i * self.o + t]).collect();
                            cholesky_solve(&l, k, &rhs)
                        })
                        .collect(),
                );
            }
            ridge *= 10.0;
        }
        None
    }

    fn cholesky(&self, ridge: f64) -> Option<Vec<f64>> {
        let k = self.k;
        let mut l = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..=i {
                let mut s = self.a_at(i, j) + if i == j { ridge } else { 0.0 };
                for p in 0..j {
                    s -= l[i * k + p] * l[j * k + p];
                }
                if i == j {
                    if s <= 0.0 || !s.is_finite() {
                        return None;
                    }
                    l[i * k + i] = s.sqrt();
                } else {
                    l[i * k + j] = s / l[j * k + j];
                }
            }
        }
        Some(l)
    }
}

fn cholesky_solve(l: &[f64], k: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; k];
    for i in 0..k {
        let mut s = b[i];
        for p in 0..i {
            s -= l[i * k + p] * y[p];
        }
        y[i] = s / l[i * k + i];
    }
    let mut x = vec![0.0; k];
    for i in (0..k).rev() {
        let mut s = y[i];
        for p in i + 1..k {
            s -= l[p * k + i] * x[p];
        }
        x[i] = s / l[i * k + i];
    }
    x
}

/// The layers to refit, in waves: each wave's layers have no layer of a later wave upstream.
pub fn waves(g: &Graph, layers: &[NodeId]) -> Vec<Vec<NodeId>> {
    let mut pending: Vec<NodeId> = layers.to_vec();
    let mut out = Vec::new();
    while !pending.is_empty() {
        let upstream_of = |id: NodeId| -> Vec<NodeId> {
            let mut seen = std::collections::BTreeSet::new();
            let mut stack: Vec<NodeId> = g
                .node(id)
                .inputs
                .iter()
                .filter_map(|&v| crate::util::producer(g, v))
                .collect();
            while let Some(n) = stack.pop() {
                if seen.insert(n) {
                    stack.extend(
                        g.node(n)
                            .inputs
                            .iter()
                            .filter_map(|&v| crate::util::producer(g, v)),
                    );
                }
            }
            seen.into_iter().collect()
        };
        let wave: Vec<NodeId> = pending
            .iter()
            .copied()
            .filter(|&p| {
                let up = upstream_of(p);
                !pending.iter().any(|q| *q != p && up.contains(q))
            })
            .collect();
        if wave.is_empty() {
            break;
        }
        pending.retain(|p| !wave.contains(p));
        out.push(wave);
    }
    out
}

/// One layer being refit in the current wave.
struct Fit {
    id: NodeId,
    shape: Shape,
    kept_out: Vec<usize>,
    ins: usize,
    taps: usize,
    fit: Normal,
    held: Normal,
}

impl Fit {
    fn unknowns(&self) -> usize {
        self.ins * self.taps + usize::from(!matches!(self.shape, Shape::Dense { bias: false }))
    }

    /// Adds one sample: `x` the pruned model's input to the layer, `y` the original layer's
    /// output before its activation.
    fn observe(&mut self, x: &Tensor, y: &Tensor, held: bool) -> Result<(), String> {
        let (Some(xd), Some(yd)) = (x.as_f32(), y.as_f32()) else {
            return Err("a refit layer's input or output is not f32".into());
        };
        let k = self.unknowns();
        let target = if held { &mut self.held } else { &mut self.fit };
        let o_all = match &self.shape {
            Shape::Conv { .. } => y.shape().get(1).copied().unwrap_or(0),
            Shape::Dense { .. } => y.shape().last().copied().unwrap_or(0),
        };
        let mut row = vec![0.0f64; k];
        let mut ty = vec![0.0f64; self.kept_out.len()];
        match &self.shape {
            Shape::Conv {
                k: kk,
                s,
                d,
                p,
                out,
            } => {
                let xs = x.shape();
                let (n, c) = (xs[0], xs[1]);
                let (h, w) = if xs.len() == 4 {
                    (xs[2], xs[3])
                } else {
                    (1, xs[2])
                };
                let plane = out[0] * out[1];
                for b in 0..n {
                    for oh in 0..out[0] {
                        for ow in 0..out[1] {
                            let mut col = 0;
                            for ci in 0..c {
                                for i in 0..kk[0] {
                                    for j in 0..kk[1] {
                                        let ih = (oh * s[0] + i * d[0]) as isize - p[0] as isize;
                                        let iw = (ow * s[1] + j * d[1]) as isize - p[1] as isize;
                                        row[col] = if ih >= 0
                                            && iw >= 0
                                            && (ih as usize) < h
                                            && (iw as usize) < w
                                        {
                                            f64::from(
                                                xd[((b * c + ci) * h + ih as usize) * w
                                                    + iw as usize],
                                            )
                                        } else {
                                            0.0
                                        };
                                        col += 1;
                                    }
                                }
                            }
                            row[col] = 1.0;
                            let pos = oh * out[1] + ow;
                            for (t, &o) in self.kept_out.iter().enumerate() {
                                ty[t] = f64::from(yd[(b * o_all + o) * plane + pos]);
                            }
                            target.add(&row, &ty);
                        }
                    }
                }
            }
            Shape::Dense { bias } => {
                let kin = x.shape().last().copied().unwrap_or(0);
                let rows = xd.len().checked_div(kin).unwrap_or(0);
                for r in 0..rows {
                    for i in 0..kin {
                        row[i] = f64::from(xd[r * kin + i]);
                    }
                    if *bias {
                        row[kin] = 1.0;
                    }
                    for (t, &o) in self.kept_out.iter().enumerate() {
                        ty[t] = f64::from(yd[r * o_all + o]);
                    }
                    target.add(&row, &ty);
                }
            }
        }
        Ok(())
    }
}

/// The layer's current weights (and bias) as `o` columns of unknowns, as a refit writes them.
fn current_weights(g: &Graph, id: NodeId, bias: bool) -> Option<Vec<Vec<f64>>> {
    let m = weight_matrix(g, id)?;
    let (alpha, b) = match &g.node(id).op {
        Op::Gemm { alpha, .. } => (f64::from(*alpha), bias_vector(g, id, m.outs)),
        _ => (1.0, bias_vector(g, id, m.outs)),
    };
    Some(
        (0..m.outs)
            .map(|o| {
                let mut w: Vec<f64> = m.out_row(o).iter().map(|&x| alpha * f64::from(x)).collect();
                if bias {
                    w.push(b.as_ref().map_or(0.0, |b| f64::from(b[o])));
                }
                w
            })
            .collect(),
    )
}

/// Writes solved weights (one column of unknowns per output) into layer `id`.
fn write_weights(g: &mut Graph, fit: &Fit, w: &[Vec<f64>]) -> Result<(), IrError> {
    let id = fit.id;
    let n = fit.ins * fit.taps;
    let m = WeightMatrix {
        data: w
            .iter()
            .flat_map(|col| col[..n].iter().map(|&x| x as f32))
            .collect(),
        outs: w.len(),
        ins: fit.ins,
        taps: fit.taps,
    };
    let t = matrix_to_weights(g, id, &m)?;
    let node = g.node(id).clone();
    let name = g.value(node.inputs[1]).name.clone();
    let wv = g.add_const(name, std::sync::Arc::new(t));
    g.set_node_input(id, 1, wv);
    let mut op = node.op.clone();
    if let Op::Gemm { alpha, .. } = &mut op {
        *alpha = 1.0;
    }
    if !matches!(fit.shape, Shape::Dense { bias: false }) {
        let b: Vec<f32> = w.iter().map(|col| col[n] as f32).collect();
        super::set_bias(g, id, &mut op, b)?;
    }
    g.set_node_op(id, op).map_err(|source| IrError::Node {
        node: node.name.clone(),
        op: node.op.name().to_string(),
        source,
    })
}

/// Refits every layer `applied` shows lost inputs (see the module docs). `original` is the
/// graph before pruning (same node ids), `pruned` is rewritten in place. `progress` is told
/// the number of sample runs done and the total.
pub fn repair(
    original: &Graph,
    pruned: &mut Graph,
    applied: &Applied,
    samples: &[Vec<Tensor>],
    compile: &mut Compile<'_>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<RefitLayer>, RepairError> {
    let mut report = Vec::new();
    let mut layers = Vec::new();
    for id in applied.consumers() {
        match layer_shape(pruned, id) {
            Ok(_) => layers.push(id),
            Err(why) => report.push(RefitLayer {
                node: pruned.node(id).name.clone(),
                op: pruned.node(id).op.name(),
                rows: 0,
                unknowns: 0,
                error_pruned: 0.0,
                error_refit: 0.0,
                accepted: false,
                skipped: Some(why),
            }),
        }
    }
    let waves = waves(pruned, &layers);
    let total = waves.len() * samples.len();
    let mut done = 0;
    let hold_out = samples.len() >= 8;
    for wave in waves {
        let mut fits = Vec::new();
        for &id in &wave {
            let shape = layer_shape(pruned, id).map_err(RepairError::Engine)?;
            let Some(m) = weight_matrix(pruned, id) else {
                continue;
            };
            let outs = m.outs;
            let kept_out = applied
                .kept_out
                .get(&id)
                .cloned()
                .unwrap_or_else(|| (0..outs).collect());
            let k = m.ins * m.taps + usize::from(!matches!(shape, Shape::Dense { bias: false }));
            fits.push(Fit {
                id,
                shape,
                kept_out,
                ins: m.ins,
                taps: m.taps,
                fit: Normal::new(k, outs),
                held: Normal::new(k, outs),
            });
        }
        // The original layers' outputs before their activations, and the pruned layers' inputs.
        let mut targets = original.clone();
        let mut target_outputs = Vec::new();
        for f in &fits {
            let node = original.node(f.id).clone();
            let op = node
                .op
                .with_activation(Activation::None)
                .unwrap_or(node.op.clone());
            let t = targets.add_node(
                format!("{}/refit_target", node.name),
                op,
                node.inputs.clone(),
                vec![],
            )?;
            target_outputs.push(targets.node(t).outputs[0]);
        }
        targets.set_outputs(target_outputs);
        let mut inputs_graph = pruned.clone();
        let mut observed = Vec::new();
        for f in &fits {
            let x = pruned.node(f.id).inputs[0];
            if !observed.contains(&x) {
                observed.push(x);
            }
        }
        inputs_graph.set_outputs(observed.clone());
        let mut t_run = compile(&targets).map_err(RepairError::Engine)?;
        let mut x_run = compile(&inputs_graph).map_err(RepairError::Engine)?;
        for (i, sample) in samples.iter().enumerate() {
            let ys = t_run.run(sample).map_err(RepairError::Engine)?;
            let xs = x_run.run(sample).map_err(RepairError::Engine)?;
            let held = hold_out && i % 4 == 3;
            for (j, f) in fits.iter_mut().enumerate() {
                let x = pruned.node(f.id).inputs[0];
                let xi = observed.iter().position(|&v| v == x).unwrap_or(0);
                let (Some(xt), Some(yt)) = (xs.get(xi), ys.get(j)) else {
                    return Err(RepairError::Engine(
                        "the engine returned too few outputs".into(),
                    ));
                };
                f.observe(xt, yt, held).map_err(RepairError::Engine)?;
            }
            done += 1;
            progress(done, total);
        }
        for f in fits {
            let node = pruned.node(f.id);
            let (name, op) = (node.name.clone(), node.op.name());
            let bias = !matches!(f.shape, Shape::Dense { bias: false });
            let check = if hold_out { &f.held } else { &f.fit };
            let energy = check.energy().max(1e-30);
            let before = current_weights(pruned, f.id, bias)
                .map(|w| check.error(&w) / energy)
                .unwrap_or(f64::INFINITY);
            let solved = f.fit.solve();
            let after = solved
                .as_ref()
                .map(|w| check.error(w) / energy)
                .unwrap_or(f64::INFINITY);
            let accepted = after < before;
            let mut layer = RefitLayer {
                node: name,
                op,
                rows: f.fit.rows + f.held.rows,
                unknowns: f.unknowns(),
                error_pruned: before,
                error_refit: after,
                accepted,
                skipped: None,
            };
            if accepted {
                let all = f.fit.merged(&f.held);
                match all.solve() {
                    Some(w) => write_weights(pruned, &f, &w)?,
                    None => {
                        layer.accepted = false;
                        layer.skipped = Some("the normal equations are singular".into());
                    }
                }
            } else if solved.is_none() {
                layer.skipped = Some("the normal equations are singular".into());
            }
            report.push(layer);
        }
    }
    Ok(report)
}
