//! Conversion of ONNX `TensorProto`s and element types to kiln tensors.

use kiln_ir::{DType, Tensor, TensorData, TensorType};
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::TensorProto;

use crate::error::FrontendError;

/// The kiln type for an ONNX `TensorProto.DataType` code, or its ONNX name if unsupported.
pub fn dtype_from_onnx(code: i32) -> Result<DType, &'static str> {
    Ok(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        0 => return Err("undefined"),
        4 => return Err("uint16"),
        8 => return Err("string"),
        10 => return Err("float16"),
        11 => return Err("float64"),
        12 => return Err("uint32"),
        13 => return Err("uint64"),
        14 => return Err("complex64"),
        15 => return Err("complex128"),
        16 => return Err("bfloat16"),
        17..=20 | 24 => return Err("float8"),
        21 | 22 => return Err("int4"),
        23 => return Err("float4"),
        _ => return Err("unknown"),
    })
}

/// Converts an ONNX tensor (raw_data or typed fields) to a kiln tensor.
pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor, FrontendError> {
    let err = |reason: String| FrontendError::Tensor {
        name: t.name.clone(),
        reason,
    };
    if t.data_location.value() == DataLocation::EXTERNAL as i32 || !t.external_data.is_empty() {
        return Err(err(
            "not supported: weights in external data files; re-save the model with all tensors inside the .onnx file (onnx.save(model, path, save_as_external_data=False))".into(),
        ));
    }
    if t.segment.is_some() {
        return Err(err("segmented tensors are not supported".into()));
    }
    let dtype = dtype_from_onnx(t.data_type)
        .map_err(|name| err(format!("not supported: element type {name}")))?;
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err(format!("negative dimension {d}"))))
        .collect::<Result<_, _>>()?;
    // Checked before anything is allocated: a corrupt header cannot request a huge buffer.
    let ty = TensorType::checked(dtype, shape).map_err(|e| err(e.to_string()))?;
    let n = ty.numel();
    let data = if !t.raw_data.is_empty() {
        decode_raw(dtype, &t.raw_data, n).map_err(err)?
    } else {
        decode_typed(dtype, t, n).map_err(err)?
    };
    Tensor::new(ty.shape, data).map_err(|e| err(e.to_string()))
}

fn decode_raw(dtype: DType, raw: &[u8], n: usize) -> Result<TensorData, String> {
    let need = n * dtype.size_bytes();
    if raw.len() != need {
        return Err(format!(
            "raw_data has {} bytes, shape needs {need}",
            raw.len()
        ));
    }
    TensorData::from_le_bytes(dtype, raw)
        .ok_or_else(|| "raw_data is not a whole number of elements".to_string())
}

fn decode_typed(dtype: DType, t: &TensorProto, n: usize) -> Result<TensorData, String> {
    let check = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(format!("has {len} elements, shape needs {n}"))
        }
    };
    // Narrow types are stored widened in int32_data; out-of-range values are a corrupt model.
    fn narrow<T: TryFrom<i32>>(v: &[i32]) -> Result<Vec<T>, String> {
        v.iter()
            .map(|&x| T::try_from(x).map_err(|_| format!("value {x} out of range")))
            .collect()
    }
    Ok(match dtype {
        DType::F32 => {
            check(t.float_data.len())?;
            TensorData::F32(t.float_data.clone())
        }
        DType::I64 => {
            check(t.int64_data.len())?;
            TensorData::I64(t.int64_data.clone())
        }
        DType::I32 => {
            check(t.int32_data.len())?;
            TensorData::I32(t.int32_data.clone())
        }
        DType::I16 => {
            check(t.int32_data.len())?;
            TensorData::I16(narrow(&t.int32_data)?)
        }
        DType::I8 => {
            check(t.int32_data.len())?;
            TensorData::I8(narrow(&t.int32_data)?)
        }
        DType::U8 => {
            check(t.int32_data.len())?;
            TensorData::U8(narrow(&t.int32_data)?)
        }
        DType::Bool => {
            check(t.int32_data.len())?;
            TensorData::Bool(t.int32_data.iter().map(|&x| x != 0).collect())
        }
    })
}

/// Parses a serialized `TensorProto` (the `.pb` files of the ONNX node tests).
pub fn load_tensor_pb(bytes: &[u8]) -> Result<Tensor, FrontendError> {
    use protobuf::Message;
    let t =
        TensorProto::parse_from_bytes(bytes).map_err(|e| FrontendError::Parse(e.to_string()))?;
    tensor_from_proto(&t)
}
