//! Calibration: the quantization range of every float activation, from running the float
//! graph on sample inputs.
//!
//! The caller runs the samples on whatever engine is fastest (the CLI uses the Cranelift JIT)
//! through [`Calibrator::observation_graph`], a copy of the graph whose outputs are every
//! observed value, and hands each run's results to [`Calibrator::observe`]. Methods that need
//! a histogram take a second pass over the same samples.

use std::collections::BTreeMap;

use kiln_ir::{DType, Graph, Tensor, ValueDef, ValueId};

use super::observers::{CalibrationMethod, Histogram, MinMax};

/// Ranges of float activations, by value.
pub type Ranges = BTreeMap<ValueId, (f32, f32)>;

/// Collects observations of every float activation of a graph.
#[derive(Debug)]
pub struct Calibrator {
    method: CalibrationMethod,
    values: Vec<ValueId>,
    /// Graph outputs: always min/max ("the last layer's range is never clipped").
    outputs: Vec<ValueId>,
    minmax: Vec<MinMax>,
    histograms: Vec<Histogram>,
    pass: usize,
    samples: usize,
}

impl Calibrator {
    /// Observes every f32 value that is a graph input or a node result.
    pub fn new(g: &Graph, method: CalibrationMethod) -> Self {
        let values: Vec<ValueId> = g
            .value_ids()
            .filter(|&v| {
                let value = g.value(v);
                value.ty.dtype == DType::F32
                    && match value.def {
                        ValueDef::Input(_) => true,
                        ValueDef::Node { node, .. } => g.contains_node(node),
                        ValueDef::Const(_) => false,
                    }
            })
            .collect();
        Calibrator {
            method,
            minmax: vec![MinMax::default(); values.len()],
            outputs: g.outputs().to_vec(),
            values,
            histograms: Vec::new(),
            pass: 0,
            samples: 0,
        }
    }

    /// The values a run must report, in the order [`Calibrator::observe`] expects them.
    pub fn observed(&self) -> &[ValueId] {
        &self.values
    }

    /// `g` with the observed values as its outputs.
    pub fn observation_graph(&self, g: &Graph) -> Graph {
        let mut copy = g.clone();
        copy.set_outputs(self.values.clone());
        copy
    }

    /// How many passes over the samples the method needs (1 or 2).
    pub fn passes(&self) -> usize {
        if self.method.needs_histogram() {
            2
        } else {
            1
        }
    }

    /// Starts pass `pass` (0-based): the second pass bins values over the first pass's ranges.
    pub fn start_pass(&mut self, pass: usize) {
        self.pass = pass;
        if pass == 1 {
            self.histograms = self
                .minmax
                .iter()
                .map(|m| {
                    let (lo, hi) = m.with_zero();
                    Histogram::new(lo, hi)
                })
                .collect();
        }
    }

    /// Takes one sample's results (one tensor per observed value, in order).
    pub fn observe(&mut self, results: &[Tensor]) {
        if self.pass == 0 {
            self.samples += 1;
        }
        for (i, t) in results.iter().enumerate() {
            let Some(data) = t.as_f32() else { continue };
            if self.pass == 0 {
                if let Some(m) = self.minmax.get_mut(i) {
                    m.observe(data);
                }
            } else if let Some(h) = self.histograms.get_mut(i) {
                h.observe(data);
            }
        }
    }

    /// Samples seen in the first pass.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The range of every observed value, 0 always inside.
    pub fn ranges(&self) -> Ranges {
        let mut ranges = Ranges::new();
        for (i, &v) in self.values.iter().enumerate() {
            let minmax = self.minmax[i].with_zero();
            let range = match (self.method, self.histograms.get(i)) {
                _ if self.outputs.contains(&v) => minmax,
                (CalibrationMethod::Percentile(p), Some(h)) => h.percentile_range(p),
                (CalibrationMethod::Mse, Some(h)) => h.mse_range(),
                _ => minmax,
            };
            ranges.insert(v, range);
        }
        ranges
    }
}
