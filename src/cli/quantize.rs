//! `--quantize int8 --calibrate DATA`: post-training quantization from the command line, shared
//! by every command that compiles (so what `verify` and `eval` measure is what `compile` ships).
//!
//! The float graph is optimized first (BN folded, activations fused), calibrated on the
//! samples with the Cranelift JIT (the fastest host engine) and a progress bar, quantized into a
//! QDQ graph, and optimized again, which lowers it to integer ops.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use kiln_ir::{Graph, Tensor};
use kiln_passes::quant::calibrate::Calibrator;
use kiln_passes::quant::observers::CalibrationMethod;

#[derive(Debug, Args, Default)]
pub struct QuantArgs {
    /// Quantize a float model (post-training, calibrated on --calibrate DATA).
    #[arg(long, value_enum, value_name = "TYPE")]
    pub quantize: Option<Quantize>,
    /// Calibration samples: a .npy whose leading axis is samples ([N, ...] for an input of
    /// shape [1, ...]; samples of the same element count are reshaped), NAME=FILE.npy per input
    /// for several inputs, or a directory of .npy files, one sample each.
    #[arg(long, value_name = "DATA")]
    pub calibrate: Vec<String>,
    /// How activation ranges are chosen from the calibration samples. Min/max is the
    /// default: on the digits models it gave the lowest output error of the three.
    #[arg(long, value_enum, default_value_t = Calibration::Minmax)]
    pub calibration: Calibration,
    /// Use at most N calibration samples (default: all).
    #[arg(long, value_name = "N")]
    pub calibration_samples: Option<usize>,
    /// The model's inputs and outputs in the generated code: `float` (the code quantizes
    /// inputs and dequantizes outputs) or `int8` (raw buffers; each one's scale and zero point
    /// are macros in the header). A model whose inputs are already int8 keeps them.
    #[arg(long, value_enum, default_value_t = Io::Float)]
    pub io: Io,
    /// Rounding of integer arithmetic: `half-even` (one rounding, ties to even: bit-exact with
    /// onnxruntime and with LiteRT on x86) or `tflite` (gemmlowp's double rounding, as TFLite's
    /// reference kernels, TFLM and CMSIS-NN compute).
    #[arg(long, value_enum, default_value_t = IntRounding::HalfEven)]
    pub int8_rounding: IntRounding,
    /// Empirical bias correction: measure each quantized layer's mean output shift on the
    /// calibration samples and subtract it from its bias. On by default: it cut the digits
    /// CNN's mean output error against the float model by 15% (0.109 -> 0.093).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub bias_correction: Switch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Switch {
    #[default]
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum IntRounding {
    #[default]
    HalfEven,
    Tflite,
}

impl IntRounding {
    pub fn rounding(self) -> kiln_ir::fixed_point::Rounding {
        match self {
            IntRounding::HalfEven => kiln_ir::fixed_point::Rounding::HalfEven,
            IntRounding::Tflite => kiln_ir::fixed_point::Rounding::TfLite,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Quantize {
    Int8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Calibration {
    /// Observed minimum and maximum.
    #[default]
    Minmax,
    /// The 99.99th percentile of each side.
    Percentile,
    /// The clipping range of least quantization error.
    Mse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Io {
    #[default]
    Float,
    Int8,
}

impl Calibration {
    fn method(self) -> CalibrationMethod {
        match self {
            Calibration::Minmax => CalibrationMethod::MinMax,
            Calibration::Percentile => CalibrationMethod::Percentile(99.99),
            Calibration::Mse => CalibrationMethod::Mse,
        }
    }
}

/// What quantization did, for reports.
#[derive(Debug, Clone, Default)]
pub struct QuantSummary {
    pub samples: usize,
    pub report: kiln_passes::quant::quantize::QuantizeReport,
}

/// Quantizes the (already optimized, float) graph as `args` ask; `None` when they ask nothing.
pub fn quantize(graph: &mut Graph, args: &QuantArgs) -> anyhow::Result<Option<QuantSummary>> {
    let Some(Quantize::Int8) = args.quantize else {
        if !args.calibrate.is_empty() {
            bail!("--calibrate needs --quantize int8, or --prune without --no-repair (its samples repair the pruned layers)");
        }
        return Ok(None);
    };
    if args.calibrate.is_empty() {
        bail!("--quantize int8 needs calibration data: --calibrate DATA (a .npy of samples, NAME=FILE.npy per input, or a directory of .npy files)");
    }
    let mut samples = load_samples(graph, &args.calibrate)?;
    if let Some(n) = args.calibration_samples {
        samples.truncate(n.max(1));
    }
    let ranges = calibrate(graph, &samples, args.calibration.method())?;
    let float = graph.clone();
    let report = kiln_passes::quant::quantize::quantize(graph, &ranges)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("quantization failed")?;
    if args.bias_correction == Switch::On {
        correct_biases(&float, graph, &samples)?;
    }
    Ok(Some(QuantSummary {
        samples: samples.len(),
        report,
    }))
}

/// Empirical bias correction: the float and the quantized graph on the same samples, each
/// quantized layer's mean output shift subtracted from its bias.
fn correct_biases(
    float: &Graph,
    quantized: &mut Graph,
    samples: &[Vec<Tensor>],
) -> anyhow::Result<()> {
    use kiln_passes::quant::bias_correction::BiasCorrection;
    let mut correction = BiasCorrection::new(quantized);
    let observed = correction.observed();
    if observed.is_empty() {
        return Ok(());
    }
    let jit = |g: &Graph| -> anyhow::Result<kiln_backends::cranelift::JitProgram> {
        let mut copy = g.clone();
        copy.set_outputs(observed.clone());
        kiln_backends::cranelift::JitProgram::compile(&copy, &Default::default())
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("cannot compile the model for bias correction")
    };
    let (mut f, mut q) = (jit(float)?, jit(quantized)?);
    let bar = super::progress::bar(
        samples.len() as u64,
        "correcting biases {bar:30} {pos}/{len}",
    );
    for sample in samples {
        let fo = f.run(sample).map_err(|e| anyhow::anyhow!("{e}"))?;
        let qo = q.run(sample).map_err(|e| anyhow::anyhow!("{e}"))?;
        correction.observe(&fo, &qo);
        bar.inc(1);
    }
    bar.finish_and_clear();
    correction
        .apply(quantized)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("bias correction failed")?;
    Ok(())
}

/// Runs every sample through the JIT-compiled observation graph.
fn calibrate(
    graph: &Graph,
    samples: &[Vec<Tensor>],
    method: CalibrationMethod,
) -> anyhow::Result<kiln_passes::quant::calibrate::Ranges> {
    let mut calibrator = Calibrator::new(graph, method);
    let observing = calibrator.observation_graph(graph);
    let options = kiln_backends::cranelift::CraneliftOptions::default();
    let mut program = kiln_backends::cranelift::JitProgram::compile(&observing, &options)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot compile the model for calibration")?;
    let passes = calibrator.passes();
    let bar = super::progress::bar(
        (samples.len() * passes) as u64,
        "calibrating {bar:30} {pos}/{len} runs ({per_sec}, eta {eta})",
    );
    for pass in 0..passes {
        calibrator.start_pass(pass);
        for sample in samples {
            let results = program
                .run(sample)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("calibration run failed")?;
            calibrator.observe(&results);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(calibrator.ranges())
}

/// The calibration samples, one input list per sample.
pub fn load_samples(graph: &Graph, specs: &[String]) -> anyhow::Result<Vec<Vec<Tensor>>> {
    let inputs: Vec<(String, kiln_ir::TensorType)> = graph
        .inputs()
        .iter()
        .map(|&v| (graph.value(v).name.clone(), graph.value(v).ty.clone()))
        .collect();
    let mut per_input: Vec<Option<Vec<Tensor>>> = vec![None; inputs.len()];
    for (i, spec) in specs.iter().enumerate() {
        let (slot, path) = match spec.split_once('=') {
            Some((name, file)) if !Path::new(spec).exists() => {
                let Some(slot) = inputs.iter().position(|(n, _)| n == name) else {
                    bail!("--calibrate {spec}: the model has no input '{name}'");
                };
                (slot, PathBuf::from(file))
            }
            _ => (i, PathBuf::from(spec)),
        };
        let Some((name, ty)) = inputs.get(slot) else {
            bail!(
                "--calibrate {spec}: the model has only {} input(s)",
                inputs.len()
            );
        };
        per_input[slot] = Some(
            samples_of(&path, ty)
                .with_context(|| format!("calibration data for input '{name}'"))?,
        );
    }
    let mut columns = Vec::with_capacity(inputs.len());
    for (slot, c) in per_input.into_iter().enumerate() {
        let Some(c) = c else {
            bail!(
                "no calibration data for input '{}': add --calibrate {}=FILE.npy",
                inputs[slot].0,
                inputs[slot].0
            );
        };
        columns.push(c);
    }
    let n = columns.iter().map(Vec::len).min().unwrap_or(0);
    if n == 0 {
        bail!("the calibration data holds no samples");
    }
    if columns.iter().any(|c| c.len() != n) {
        bail!("the inputs' calibration data hold different numbers of samples");
    }
    Ok((0..n)
        .map(|i| columns.iter().map(|c| c[i].clone()).collect())
        .collect())
}

/// The samples in `path` for an input of type `ty` (see [`QuantArgs::calibrate`]).
pub fn load_samples_for(ty: &kiln_ir::TensorType, path: &Path) -> anyhow::Result<Vec<Tensor>> {
    samples_of(path, ty).with_context(|| format!("samples for input {ty}"))
}

/// The samples in `path` (a .npy of samples, or a directory of one-sample .npy files) for an
/// input of type `ty`.
fn samples_of(path: &Path, ty: &kiln_ir::TensorType) -> anyhow::Result<Vec<Tensor>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read '{}'", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "npy"))
            .collect();
        files.sort();
        return files
            .iter()
            .map(|f| {
                let t = read_npy(f)?;
                as_sample(&t, ty).with_context(|| format!("'{}'", f.display()))
            })
            .collect();
    }
    let t = read_npy(path)?;
    split_samples(&t, ty).with_context(|| format!("'{}'", path.display()))
}

fn read_npy(path: &Path) -> anyhow::Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    kiln_ir::npy::read(&bytes).with_context(|| format!("cannot parse '{}'", path.display()))
}

/// One sample of input type `ty`, reshaped when the element count matches.
fn as_sample(t: &Tensor, ty: &kiln_ir::TensorType) -> anyhow::Result<Tensor> {
    if t.dtype() != ty.dtype {
        bail!("holds {} data, the input is {}", t.dtype(), ty);
    }
    if t.numel() != ty.numel() {
        bail!(
            "a sample of shape {:?} does not fit the input {}",
            t.shape(),
            ty
        );
    }
    Tensor::new(ty.shape.clone(), t.data().clone()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The samples along the leading axis of `t`.
fn split_samples(t: &Tensor, ty: &kiln_ir::TensorType) -> anyhow::Result<Vec<Tensor>> {
    if t.dtype() != ty.dtype {
        bail!("holds {} data, the input is {}", t.dtype(), ty);
    }
    let per = ty.numel();
    if per == 0 || !t.numel().is_multiple_of(per) || t.shape().first().copied().unwrap_or(0) == 0 {
        bail!(
            "shape {:?} is not a stack of samples for the input {} (expected [N, ...] with {} elements per sample)",
            t.shape(),
            ty,
            per
        );
    }
    let n = t.numel() / per;
    if t.shape()[0] != n {
        bail!(
            "shape {:?}: the leading axis must count the samples ({} elements each for the input {})",
            t.shape(),
            per,
            ty
        );
    }
    let Some(data) = t.as_f32() else {
        bail!(
            "calibration of {} inputs is not supported (only f32)",
            t.dtype()
        );
    };
    (0..n)
        .map(|i| {
            Tensor::from_f32(ty.shape.clone(), data[i * per..(i + 1) * per].to_vec())
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect()
}

/// A value's quantization for tables: `s=0.0394 zp=-128`, `per-axis 1 (16)`, or empty.
pub fn quant_label(value: &kiln_ir::Value) -> String {
    match &value.quant {
        Some(q) if q.scale.len() == 1 => format!(
            "s={:.6} zp={}",
            q.scale[0],
            q.zero_point.first().copied().unwrap_or(0)
        ),
        Some(q) => format!("per-axis {} ({})", q.axis.unwrap_or(0), q.scale.len()),
        None => String::new(),
    }
}

/// A value's quantization as JSON (`null` when it has none).
pub fn quant_json(value: &kiln_ir::Value) -> serde_json::Value {
    match &value.quant {
        Some(q) => serde_json::json!({
            "scale": q.scale,
            "zero_point": q.zero_point,
            "axis": q.axis,
        }),
        None => serde_json::Value::Null,
    }
}

/// The nodes of an integer graph that still compute in float, between a dequantize and a
/// quantize (ops without an integer kernel, or patterns the lowering did not take), as
/// (node, op).
pub fn float_fallbacks(graph: &Graph) -> Vec<(String, &'static str)> {
    let mut ops = Vec::new();
    for id in graph.topo_order().unwrap_or_default() {
        let node = graph.node(id);
        if matches!(
            node.op,
            kiln_ir::Op::QuantizeLinear { .. } | kiln_ir::Op::DequantizeLinear { .. }
        ) {
            continue;
        }
        let float = node
            .outputs
            .iter()
            .any(|&v| graph.value(v).ty.dtype == kiln_ir::DType::F32);
        if float {
            ops.push((node.name.clone(), node.op.name()));
        }
    }
    ops
}

/// A real-valued tensor as an input of the compiled graph: quantized with the input's recorded
/// quantization when the build takes integers (`--io int8`), as is otherwise.
pub fn real_to_input(value: &kiln_ir::Value, x: &Tensor) -> anyhow::Result<Tensor> {
    if value.ty.dtype == x.dtype() || x.dtype() != kiln_ir::DType::F32 {
        return Ok(x.clone());
    }
    let Some(q) = &value.quant else {
        return Ok(x.clone());
    };
    let op = kiln_ir::Op::QuantizeLinear {
        axis: None,
        dtype: value.ty.dtype,
        block_size: 0,
    };
    let scale = Tensor::scalar_f32(q.scale.first().copied().unwrap_or(1.0));
    let zp = kiln_ir::ops::util::int_tensor(
        value.ty.dtype,
        vec![],
        vec![q.zero_point.first().copied().unwrap_or(0)],
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let y = kiln_ir::ops::eval(&op, &[x, &scale, &zp]).map_err(|e| anyhow::anyhow!("{e}"))?;
    y.into_iter()
        .next()
        .context("QuantizeLinear gave no result")
}
