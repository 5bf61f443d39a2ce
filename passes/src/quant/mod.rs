//! Quantization: post-training quantization of float graphs, and lowering quantized (QDQ)
//! graphs to kiln's integer ops.
//!
//! - `params.rs`: reading scales and zero points off QuantizeLinear/DequantizeLinear nodes;
//! - `integer.rs`: the compile-time arithmetic of integer ops (multipliers, folded biases,
//!   the accumulator bound, output ranges, lookup tables);
//! - `lower_qdq.rs`: the `lower-qdq` pass;
//! - `observers.rs`, `calibrate.rs`: activation ranges from sample runs (min/max,
//!   percentile, MSE);
//! - `quantize.rs`: post-training quantization of a float graph into a QDQ graph;
//! - `bias_correction.rs`: empirical bias correction of the quantized layers;
//! - `io.rs`: integer graph inputs and outputs (`--io int8`).

pub mod bias_correction;
pub mod calibrate;
pub mod integer;
pub mod io;
pub mod lower_qdq;
pub mod observers;
pub mod params;
pub mod quantize;
