//! Ops whose IR attributes ONNX takes as constant inputs: kiln resolved them at import, and the
//! exporter writes them back as initializers next to the node (Reshape's and Expand's shape,
//! Tile's repeats, Split's sizes, Slice's starts/ends/axes/steps, Pad's pads and value,
//! ReduceSum's axes, ConstantOfShape's shape, Range's start/limit/delta, Resize's roi and
//! scales or sizes).

use kiln_ir::op::{CoordTransform, NearestMode, PadMode, ResizeMode};
use kiln_ir::{DType, Op, Tensor};

use super::proto::{attr_float, attr_int, attr_string, attr_tensor};
use super::writer::Writer;
use super::{unsupported, ExportError};

/// Reshape or Expand (`node`'s op) with the target `shape` as their second input.
pub(super) fn with_shape_input(
    w: &mut Writer<'_>,
    node: &kiln_ir::Node,
    x: &str,
    outs: &[String],
    shape: &[usize],
) -> Result<(), ExportError> {
    let name = &node.name;
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let s = w.i64s(&format!("{name}/shape"), &dims)?;
    w.push(
        name,
        node.op.name(),
        vec![x.to_string(), s],
        outs.to_vec(),
        vec![],
    );
    Ok(())
}

/// Tile with its `repeats` input.
pub(super) fn tile(
    w: &mut Writer<'_>,
    name: &str,
    x: &str,
    outs: &[String],
    repeats: &[usize],
) -> Result<(), ExportError> {
    let r: Vec<i64> = repeats.iter().map(|&d| d as i64).collect();
    let s = w.i64s(&format!("{name}/repeats"), &r)?;
    w.push(name, "Tile", vec![x.to_string(), s], outs.to_vec(), vec![]);
    Ok(())
}

/// Split with its `split` (output sizes) input.
pub(super) fn split(
    w: &mut Writer<'_>,
    name: &str,
    x: &str,
    outs: &[String],
    axis: usize,
    sizes: &[usize],
) -> Result<(), ExportError> {
    let s: Vec<i64> = sizes.iter().map(|&d| d as i64).collect();
    let split = w.i64s(&format!("{name}/split"), &s)?;
    w.push(
        name,
        "Split",
        vec![x.to_string(), split],
        outs.to_vec(),
        vec![attr_int("axis", axis as i64)],
    );
    Ok(())
}

/// Slice with its starts, ends, axes (every axis, in order) and steps inputs.
pub(super) fn slice(
    w: &mut Writer<'_>,
    name: &str,
    x: &str,
    outs: &[String],
    starts: &[i64],
    ends: &[i64],
    steps: &[i64],
) -> Result<(), ExportError> {
    // A negative step's end of -1 means "past index 0": ONNX spells that INT64_MIN.
    let ends: Vec<i64> = ends
        .iter()
        .zip(steps)
        .map(|(&e, &s)| if s < 0 && e < 0 { i64::MIN } else { e })
        .collect();
    let axes: Vec<i64> = (0..starts.len() as i64).collect();
    let inputs = vec![
        x.to_string(),
        w.i64s(&format!("{name}/starts"), starts)?,
        w.i64s(&format!("{name}/ends"), &ends)?,
        w.i64s(&format!("{name}/axes"), &axes)?,
        w.i64s(&format!("{name}/steps"), steps)?,
    ];
    w.push(name, "Slice", inputs, outs.to_vec(), vec![]);
    Ok(())
}

/// Pad with its pads and constant-value inputs (the value in the input's dtype).
pub(super) fn pad(
    w: &mut Writer<'_>,
    node: &kiln_ir::Node,
    x: &str,
    outs: &[String],
    pads: &[i64],
    mode: PadMode,
    value: f64,
) -> Result<(), ExportError> {
    let name = &node.name;
    let p = w.i64s(&format!("{name}/pads"), pads)?;
    let dt = w.g.value(node.inputs[0]).ty.dtype;
    let v = kiln_ir::ops::util::int_tensor(dt, vec![], vec![value as i32]);
    let v = match dt {
        DType::F32 => Tensor::scalar_f32(value as f32),
        _ => v.map_err(|e| unsupported(node, &e.to_string()))?,
    };
    let v = w.constant(&format!("{name}/value"), &v);
    let mode = match mode {
        PadMode::Constant => "constant",
        PadMode::Reflect => "reflect",
        PadMode::Edge => "edge",
        PadMode::Wrap => {
            return Err(unsupported(
                node,
                "wrap padding needs opset 19 (kiln writes opset 17)",
            ))
        }
    };
    w.push(
        name,
        "Pad",
        vec![x.to_string(), p, v],
        outs.to_vec(),
        vec![attr_string("mode", mode)],
    );
    Ok(())
}

/// ReduceSum with its `axes` input (an input since opset 13, unlike the other reductions).
pub(super) fn reduce_sum(
    w: &mut Writer<'_>,
    name: &str,
    x: &str,
    outs: &[String],
    axes: &[usize],
    keepdims: bool,
) -> Result<(), ExportError> {
    let a: Vec<i64> = axes.iter().map(|&x| x as i64).collect();
    let axes = w.i64s(&format!("{name}/axes"), &a)?;
    w.push(
        name,
        "ReduceSum",
        vec![x.to_string(), axes],
        outs.to_vec(),
        vec![attr_int("keepdims", i64::from(keepdims))],
    );
    Ok(())
}

/// ConstantOfShape with its `shape` input and the fill value as a one-element tensor attribute.
pub(super) fn constant_of_shape(
    w: &mut Writer<'_>,
    node: &kiln_ir::Node,
    outs: &[String],
    shape: &[usize],
    value: f64,
    dtype: DType,
) -> Result<(), ExportError> {
    let name = &node.name;
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let s = w.i64s(&format!("{name}/shape"), &dims)?;
    let v = match dtype {
        DType::F32 => Tensor::from_f32(vec![1], vec![value as f32]).map_err(|e| e.to_string()),
        DType::I64 => Tensor::from_i64(vec![1], vec![value as i64]).map_err(|e| e.to_string()),
        _ => kiln_ir::ops::util::int_tensor(dtype, vec![1], vec![value as i32])
            .map_err(|e| e.to_string()),
    }
    .map_err(|e| unsupported(node, &e))?;
    w.push(
        name,
        "ConstantOfShape",
        vec![s],
        outs.to_vec(),
        vec![attr_tensor("value", &v)],
    );
    Ok(())
}

/// Range with its start, limit and delta inputs (scalars of `dtype`) for `count` elements.
pub(super) fn range(
    w: &mut Writer<'_>,
    node: &kiln_ir::Node,
    outs: &[String],
    start: f64,
    delta: f64,
    count: usize,
    dtype: DType,
) -> Result<(), ExportError> {
    let name = &node.name;
    // ONNX counts ceil((limit - start) / delta) elements: half a step short of the
    // end keeps float rounding from adding or dropping one.
    let limit = match dtype {
        DType::F32 => start + (count as f64 - 0.5) * delta,
        _ => start + count as f64 * delta,
    };
    let scalar = |v: f64| -> Result<Tensor, ExportError> {
        match dtype {
            DType::F32 => Ok(Tensor::scalar_f32(v as f32)),
            DType::I64 => Tensor::from_i64(vec![], vec![v as i64])
                .map_err(|e| unsupported(node, &e.to_string())),
            _ => kiln_ir::ops::util::int_tensor(dtype, vec![], vec![v as i32])
                .map_err(|e| unsupported(node, &e.to_string())),
        }
    };
    let inputs = vec![
        w.constant(&format!("{name}/start"), &scalar(start)?),
        w.constant(&format!("{name}/limit"), &scalar(limit)?),
        w.constant(&format!("{name}/delta"), &scalar(delta)?),
    ];
    w.push(name, "Range", inputs, outs.to_vec(), vec![]);
    Ok(())
}

/// Resize with its roi (for `tf_crop_and_resize`) and scales inputs, or sizes when the f32
/// scales would not give the output shape.
pub(super) fn resize(
    w: &mut Writer<'_>,
    node: &kiln_ir::Node,
    x: &str,
    outs: &[String],
) -> Result<(), ExportError> {
    let Op::Resize {
        mode,
        coord,
        nearest,
        scales,
        out_shape,
        cubic_coeff_a,
        exclude_outside,
        antialias,
        roi,
        extrapolation_value,
    } = &node.op
    else {
        return Ok(());
    };
    if *antialias {
        return Err(unsupported(
            node,
            "an antialiased Resize needs opset 18 (kiln writes opset 17)",
        ));
    }
    let in_shape = &w.g.value(node.inputs[0]).ty.shape;
    let name = &node.name;
    let roi_name = if *coord == CoordTransform::TfCropAndResize {
        let r: Vec<f32> = roi.iter().map(|&v| v as f32).collect();
        let t =
            Tensor::from_f32(vec![r.len()], r).map_err(|e| unsupported(node, &e.to_string()))?;
        w.constant(&format!("{name}/roi"), &t)
    } else {
        String::new()
    };
    // Scales as the model gave them when they are f32 values that give this output shape;
    // otherwise the sizes (ONNX then takes the exact ratio, as kiln did).
    let as_f32: Vec<f32> = scales.iter().map(|&s| s as f32).collect();
    let exact = as_f32
        .iter()
        .zip(scales)
        .zip(in_shape.iter().zip(out_shape))
        .all(|((&f, &s), (&i, &o))| {
            f64::from(f) == s && (i as f64 * f64::from(f)).floor() as usize == o
        });
    let (scales_name, sizes_name) = if exact {
        let t = Tensor::from_f32(vec![as_f32.len()], as_f32)
            .map_err(|e| unsupported(node, &e.to_string()))?;
        (w.constant(&format!("{name}/scales"), &t), None)
    } else {
        let s: Vec<i64> = out_shape.iter().map(|&d| d as i64).collect();
        (String::new(), Some(w.i64s(&format!("{name}/sizes"), &s)?))
    };
    let mut inputs = vec![x.to_string(), roi_name, scales_name];
    if let Some(s) = sizes_name {
        inputs.push(s);
    }
    let attrs = vec![
        attr_string(
            "mode",
            match mode {
                ResizeMode::Nearest => "nearest",
                ResizeMode::Linear => "linear",
                ResizeMode::Cubic => "cubic",
            },
        ),
        attr_string(
            "coordinate_transformation_mode",
            match coord {
                CoordTransform::HalfPixel => "half_pixel",
                CoordTransform::HalfPixelSymmetric => {
                    return Err(unsupported(
                        node,
                        "half_pixel_symmetric needs opset 19 (kiln writes opset 17)",
                    ))
                }
                CoordTransform::PytorchHalfPixel => "pytorch_half_pixel",
                CoordTransform::AlignCorners => "align_corners",
                CoordTransform::Asymmetric => "asymmetric",
                CoordTransform::TfCropAndResize => "tf_crop_and_resize",
            },
        ),
        attr_string(
            "nearest_mode",
            match nearest {
                NearestMode::RoundPreferFloor => "round_prefer_floor",
                NearestMode::RoundPreferCeil => "round_prefer_ceil",
                NearestMode::Floor => "floor",
                NearestMode::Ceil => "ceil",
            },
        ),
        attr_float("cubic_coeff_a", *cubic_coeff_a as f32),
        attr_int("exclude_outside", i64::from(*exclude_outside)),
        attr_float("extrapolation_value", *extrapolation_value as f32),
    ];
    w.push(name, "Resize", inputs, outs.to_vec(), attrs);
    Ok(())
}
