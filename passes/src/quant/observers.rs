//! Observers: what calibration records about one activation over many samples, and the range
//! each calibration method derives from it.
//!
//! Every method starts from the running minimum and maximum (the first pass). Percentile and
//! MSE then need the distribution: a second pass fills a histogram of fixed bins over the
//! first pass's range, from which the clipping range is chosen.

/// How an activation's quantization range is chosen from calibration data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CalibrationMethod {
    /// The observed minimum and maximum.
    MinMax,
    /// Clip to the given percentile of |x| on each side (e.g. 99.99).
    Percentile(f64),
    /// The clipping range whose 8-bit quantization has the least mean squared error on the
    /// observed distribution.
    Mse,
}

impl CalibrationMethod {
    /// Whether the method needs the histogram of a second pass.
    pub fn needs_histogram(self) -> bool {
        !matches!(self, CalibrationMethod::MinMax)
    }
}

/// Bins of the second-pass histogram.
pub const HISTOGRAM_BINS: usize = 2048;

/// The running range of one value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MinMax {
    pub min: f32,
    pub max: f32,
}

impl Default for MinMax {
    fn default() -> Self {
        MinMax {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }
}

impl MinMax {
    /// Takes in every finite element of `data`.
    pub fn observe(&mut self, data: &[f32]) {
        for &v in data {
            if v.is_finite() {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
        }
    }

    /// The range widened to contain 0 (zero must be exact in an asymmetric quantization), or
    /// `[0, 0]` when nothing finite was seen.
    pub fn with_zero(self) -> (f32, f32) {
        if self.min > self.max {
            return (0.0, 0.0);
        }
        (self.min.min(0.0), self.max.max(0.0))
    }
}

/// A histogram over `[lo, hi]` with [`HISTOGRAM_BINS`] equal bins.
#[derive(Clone, Debug)]
pub struct Histogram {
    lo: f32,
    hi: f32,
    counts: Vec<u64>,
}

impl Histogram {
    pub fn new(lo: f32, hi: f32) -> Self {
        Histogram {
            lo,
            hi,
            counts: vec![0; HISTOGRAM_BINS],
        }
    }

    fn width(&self) -> f64 {
        (f64::from(self.hi) - f64::from(self.lo)) / HISTOGRAM_BINS as f64
    }

    pub fn observe(&mut self, data: &[f32]) {
        let w = self.width();
        if w <= 0.0 {
            return;
        }
        let last = HISTOGRAM_BINS - 1;
        for &v in data {
            if v.is_finite() {
                let b = ((f64::from(v) - f64::from(self.lo)) / w).floor();
                self.counts[(b.max(0.0) as usize).min(last)] += 1;
            }
        }
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value below which `p` percent of the observations lie (the upper bound of the bin).
    fn quantile(&self, p: f64) -> f32 {
        let total = self.total();
        if total == 0 {
            return self.hi;
        }
        let target = (p / 100.0 * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return (f64::from(self.lo) + (i + 1) as f64 * self.width()) as f32;
            }
        }
        self.hi
    }

    /// The range clipped at percentile `p` on the high side and `100 - p` on the low side,
    /// still containing 0.
    pub fn percentile_range(&self, p: f64) -> (f32, f32) {
        let lo = self.quantile(100.0 - p).min(0.0).max(self.lo);
        let hi = self.quantile(p).max(0.0).min(self.hi);
        (lo, hi)
    }

    /// The clipping range `[lo', hi']` (shrinking both ends of the observed range by the same
    /// fraction, 0 kept inside) whose 256-level quantization has the least expected squared
    /// error over the histogram: rounding error inside the range, clipping error outside.
    pub fn mse_range(&self) -> (f32, f32) {
        let (lo, hi) = (f64::from(self.lo.min(0.0)), f64::from(self.hi.max(0.0)));
        if hi - lo <= 0.0 || self.total() == 0 {
            return (lo as f32, hi as f32);
        }
        let w = self.width();
        let centers: Vec<f64> = (0..HISTOGRAM_BINS)
            .map(|i| f64::from(self.lo) + (i as f64 + 0.5) * w)
            .collect();
        let mut best = (f64::INFINITY, lo, hi);
        for step in 0..100 {
            let frac = 1.0 - step as f64 * 0.01;
            let (a, b) = (lo * frac, hi * frac);
            let scale = (b - a) / 255.0;
            let err: f64 = self
                .counts
                .iter()
                .zip(&centers)
                .filter(|(&c, _)| c > 0)
                .map(|(&c, &x)| {
                    let clipped = x.clamp(a, b);
                    let q = ((clipped - a) / scale).round() * scale + a;
                    c as f64 * ((x - q) * (x - q))
                })
                .sum();
            if err < best.0 {
                best = (err, a, b);
            }
        }
        (best.1 as f32, best.2 as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_keeps_zero_and_skips_non_finite() {
        let mut m = MinMax::default();
        m.observe(&[1.0, 3.0, f32::NAN, f32::INFINITY]);
        assert_eq!(m.with_zero(), (0.0, 3.0));
        assert_eq!(MinMax::default().with_zero(), (0.0, 0.0));
    }

    #[test]
    fn percentile_and_mse_clip_outliers() {
        // 100000 values in [0, 1) and one outlier at 100: keeping the whole range costs every
        // value the rounding of a step of 100/255, clipping costs the outlier its excess; the
        // least total error clips.
        let mut data: Vec<f32> = (0..100_000).map(|i| i as f32 / 100_000.0).collect();
        data.push(100.0);
        let mut h = Histogram::new(0.0, 100.0);
        h.observe(&data);
        let (_, p) = h.percentile_range(99.9);
        assert!(p < 2.0, "percentile ignores the outlier: {p}");
        let (_, m) = h.mse_range();
        assert!(m < 95.0, "mse clips the outlier: {m}");
        // With few values the outlier matters more than their rounding: MSE keeps (nearly)
        // all of it.
        let mut h = Histogram::new(0.0, 100.0);
        h.observe(&data[99_000..]);
        assert!(h.mse_range().1 > m, "fewer values, less clipping");
    }
}
