//! Dense tensors with static shapes: the values constants hold and the interpreter computes.

use std::fmt;

use crate::dtype::DType;
use crate::error::IrError;

/// The largest tensor kiln will create, in bytes. Firmware models are far below this; the limit
/// exists so a corrupt or hostile model is refused before any allocation is attempted.
pub const MAX_TENSOR_BYTES: usize = 1 << 31;

/// The type of a value: element type and static shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<usize>) -> Self {
        TensorType { dtype, shape }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements. Overflow is impossible for types built through
    /// [`TensorType::checked`]; other callers get a saturated value.
    pub fn numel(&self) -> usize {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX)
    }

    pub fn size_bytes(&self) -> usize {
        self.numel().saturating_mul(self.dtype.size_bytes())
    }

    /// Builds a type, refusing shapes whose byte size exceeds [`MAX_TENSOR_BYTES`].
    pub fn checked(dtype: DType, shape: Vec<usize>) -> Result<Self, IrError> {
        let bytes = shape
            .iter()
            .try_fold(dtype.size_bytes(), |acc, &d| acc.checked_mul(d));
        match bytes {
            Some(b) if b <= MAX_TENSOR_BYTES => Ok(TensorType { dtype, shape }),
            _ => Err(IrError::TooLarge {
                shape: shape.clone(),
                dtype,
            }),
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Element storage, one variant per [`DType`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::I16(_) => DType::I16,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I16(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A zero-filled buffer (false for bool) of `n` elements.
    pub fn zeros(dtype: DType, n: usize) -> Self {
        match dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::I8 => TensorData::I8(vec![0; n]),
            DType::U8 => TensorData::U8(vec![0; n]),
            DType::I16 => TensorData::I16(vec![0; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
        }
    }

    /// The elements as little-endian bytes (bool as 0 or 1): the layout of `.npy` files, of
    /// ONNX `raw_data`, and of tensors in memory on every target kiln supports.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.dtype().size_bytes());
        match self {
            TensorData::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::I8(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::U8(v) => out.extend_from_slice(v),
            TensorData::I16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::I32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        }
        out
    }

    /// Decodes little-endian elements of `dtype`; `None` unless `bytes` holds a whole number
    /// of elements.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Option<TensorData> {
        if !bytes.len().is_multiple_of(dtype.size_bytes()) {
            return None;
        }
        macro_rules! le {
            ($t:ty, $w:expr) => {
                bytes
                    .chunks_exact($w)
                    .map(|c| {
                        let mut b = [0u8; $w];
                        b.copy_from_slice(c);
                        <$t>::from_le_bytes(b)
                    })
                    .collect()
            };
        }
        Some(match dtype {
            DType::F32 => TensorData::F32(le!(f32, 4)),
            DType::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
            DType::U8 => TensorData::U8(bytes.to_vec()),
            DType::I16 => TensorData::I16(le!(i16, 2)),
            DType::I32 => TensorData::I32(le!(i32, 4)),
            DType::I64 => TensorData::I64(le!(i64, 8)),
            DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        })
    }

    /// Element `i` widened to f64 (exact for every type except i64 beyond 2^53).
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            TensorData::F32(v) => f64::from(v[i]),
            TensorData::I8(v) => f64::from(v[i]),
            TensorData::U8(v) => f64::from(v[i]),
            TensorData::I16(v) => f64::from(v[i]),
            TensorData::I32(v) => f64::from(v[i]),
            TensorData::I64(v) => v[i] as f64,
            TensorData::Bool(v) => f64::from(u8::from(v[i])),
        }
    }
}

/// A dense, row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that the element count matches the shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self, IrError> {
        let ty = TensorType::checked(data.dtype(), shape)?;
        if ty.numel() != data.len() {
            return Err(IrError::DataLength {
                shape: ty.shape,
                len: data.len(),
            });
        }
        Ok(Tensor {
            shape: ty.shape,
            data,
        })
    }

    pub fn zeros(ty: &TensorType) -> Self {
        Tensor {
            shape: ty.shape.clone(),
            data: TensorData::zeros(ty.dtype, ty.numel()),
        }
    }

    pub fn from_f32(shape: Vec<usize>, v: Vec<f32>) -> Result<Self, IrError> {
        Tensor::new(shape, TensorData::F32(v))
    }

    pub fn from_i64(shape: Vec<usize>, v: Vec<i64>) -> Result<Self, IrError> {
        Tensor::new(shape, TensorData::I64(v))
    }

    pub fn scalar_f32(v: f32) -> Self {
        Tensor {
            shape: vec![],
            data: TensorData::F32(vec![v]),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype(), self.shape.clone())
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut TensorData {
        &mut self.data
    }

    pub fn into_data(self) -> TensorData {
        self.data
    }

    /// The same elements under another shape with the same element count.
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Self, IrError> {
        Tensor::new(shape, self.data)
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements as i64, for integer tensors that carry shapes, axes or indices.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match &self.data {
            TensorData::I64(v) => Some(v.clone()),
            TensorData::I32(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
            TensorData::I16(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
            TensorData::I8(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
            TensorData::U8(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
            TensorData::F32(_) | TensorData::Bool(_) => None,
        }
    }

    /// The elements widened to f64 (for scalars such as Clip bounds and Pad values).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.numel()).map(|i| self.data.get_f64(i)).collect()
    }

    /// Size in bytes of the element data.
    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype().size_bytes()
    }
}

/// Row-major strides of a shape, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}
