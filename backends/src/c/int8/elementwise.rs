//! Element-wise int8 additions (QAdd, operands of the output's shape: ResNet's residual
//! connections) through two 256-entry tables.
//!
//! Each operand's rescaled value `rounding.apply((v - zp) << left_shift, scale)` depends on
//! its byte alone, so kiln computes both at compile time (with the interpreter's own
//! arithmetic, hence bit for bit) into `int32` tables indexed by the byte's unsigned value;
//! the layer adds two table entries and applies the output stage (the cheapest exact form for
//! the sums the tables can make, see `requant`). Helium reads four entries per gather load
//! and requantizes four sums as one vector; the other ISAs do one element per step.

use kiln_ir::{DType, Op};

use super::requant::OutputStage;
use super::{Generated, Isa, Layer};
use crate::error::BackendError;

/// Generates the layer if it is a QAdd this file handles.
pub(super) fn generate(layer: &Layer) -> Result<Option<Generated>, BackendError> {
    let Op::QAdd {
        a_zero_point,
        b_zero_point,
        left_shift,
        a_scale,
        b_scale,
        output_scale,
        output,
        rounding,
    } = &layer.node.op
    else {
        return Ok(None);
    };
    if layer.isa == Isa::Portable {
        return Ok(None);
    }
    let (Some(a), Some(b), Some(y)) = (layer.input(0), layer.input(1), layer.output(0)) else {
        return Ok(None);
    };
    let byte = |d: DType| matches!(d, DType::I8 | DType::U8);
    if a.shape != y.shape
        || b.shape != y.shape
        || !byte(a.dtype)
        || !byte(b.dtype)
        || !byte(output.dtype)
        || !(0..=31).contains(left_shift)
    {
        return Ok(None);
    }
    let table = |dtype: DType, zp: i32, scale| -> Vec<i32> {
        (0..=255u8)
            .map(|u| {
                let v = if dtype == DType::I8 {
                    i32::from(u as i8)
                } else {
                    i32::from(u)
                };
                rounding.apply((v - zp).wrapping_shl(*left_shift as u32), scale)
            })
            .collect()
    };
    let (ta, tb) = (
        table(a.dtype, *a_zero_point, *a_scale),
        table(b.dtype, *b_zero_point, *b_scale),
    );
    let max_abs = |t: &[i32]| t.iter().map(|v| i64::from(*v).abs()).max().unwrap_or(0);
    let bound = max_abs(&ta) + max_abs(&tb);
    // The interpreter's sum wraps; the C sum must not (signed overflow), so a layer whose
    // sums could leave the int32 range keeps the portable kernel.
    if bound > i64::from(i32::MAX) {
        return Ok(None);
    }
    let stage = OutputStage::new(
        *rounding,
        *output,
        &[output_scale.multiplier],
        &[output_scale.shift],
        &[bound],
    );
    let name = &layer.kernel.name;
    let n = y.numel();
    let out_t = stage.c_type();
    let mut helpers = String::new();
    for (t, vals) in [("ta", &ta), ("tb", &tb)] {
        let items: Vec<String> = vals.iter().map(|v| v.to_string()).collect();
        helpers.push_str(&format!(
            "/* rescaled operand by its byte's unsigned value */\nstatic const int32_t {name}_{t}[256] KILN_ALIGNED(16) = {{\n    {}\n}};\n",
            items.join(", ")
        ));
    }
    let (pa, pb, py) = (layer.param(0), layer.param(1), layer.param(2));
    let mut body = vec![
        format!("const uint8_t *a = (const uint8_t *){pa};"),
        format!("const uint8_t *b = (const uint8_t *){pb};"),
    ];
    let vector = match (layer.isa, stage.vector_function(&format!("{name}_out4"))) {
        (Isa::ArmMve, Some(f)) => Some(f),
        _ => None,
    };
    match vector {
        Some(f) => {
            helpers.push_str(&f);
            body.push(format!("for (int32_t i = 0; i < {n}; i += 4) {{"));
            body.push(format!("    const int32_t n = {n} - i;"));
            body.push(format!(
                "    {name}_out4({py} + i, kiln_vadd(kiln_vlut32({name}_ta, a + i, n), kiln_vlut32({name}_tb, b + i, n)), 0, 0, 0, n);"
            ));
            body.push("}".into());
        }
        None => {
            helpers.push_str(&stage.function(&format!("{name}_out")));
            body.push(format!("for (int32_t i = 0; i < {n}; ++i) {{"));
            body.push(format!(
                "    {py}[i] = ({out_t}){name}_out({name}_ta[a[i]] + {name}_tb[b[i]], 0, 0, 0);"
            ));
            body.push("}".into());
        }
    }
    let mut text = String::new();
    for l in body {
        text.push_str("    ");
        text.push_str(&l);
        text.push('\n');
    }
    Ok(Some(Generated {
        helpers,
        body: text,
        packed: Vec::new(),
    }))
}
