//! ONNX protobuf messages built from kiln values: dtype codes, initializers (`TensorProto`),
//! typed graph inputs and outputs (`ValueInfoProto`) and node attributes (`AttributeProto`).

use kiln_ir::{DType, Tensor, TensorType};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{
    type_proto, AttributeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The ONNX element type code of a kiln dtype.
pub fn dtype_to_onnx(dt: DType) -> i32 {
    match dt {
        DType::F32 => 1,
        DType::U8 => 2,
        DType::I8 => 3,
        DType::I16 => 5,
        DType::I32 => 6,
        DType::I64 => 7,
        DType::Bool => 9,
    }
}

pub(super) fn tensor_proto(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: dtype_to_onnx(t.dtype()),
        raw_data: t.data().to_le_bytes(),
        ..Default::default()
    }
}

pub(super) fn value_info(name: &str, ty: &TensorType) -> ValueInfoProto {
    let shape = TensorShapeProto {
        dim: ty
            .shape
            .iter()
            .map(|&d| onnx_protobuf::tensor_shape_proto::Dimension {
                value: Some(
                    onnx_protobuf::tensor_shape_proto::dimension::Value::DimValue(d as i64),
                ),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.to_string(),
        type_: protobuf::MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: dtype_to_onnx(ty.dtype),
                shape: protobuf::MessageField::some(shape),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INT.into(),
        i: v,
        ..Default::default()
    }
}

pub(super) fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INTS.into(),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

pub(super) fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::FLOAT.into(),
        f: v,
        ..Default::default()
    }
}

pub(super) fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::STRING.into(),
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub(super) fn attr_tensor(name: &str, t: &Tensor) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::TENSOR.into(),
        t: protobuf::MessageField::some(tensor_proto("", t)),
        ..Default::default()
    }
}
