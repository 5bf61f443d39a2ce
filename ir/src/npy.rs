//! Reading and writing NumPy `.npy` files (format versions 1.0 to 3.0, C order, little endian).

use crate::dtype::DType;
use crate::tensor::{Tensor, TensorData};

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("not a .npy file (bad magic)")]
    BadMagic,
    #[error("truncated .npy file")]
    Truncated,
    #[error("malformed .npy header: {0}")]
    Header(String),
    #[error("unsupported .npy dtype '{0}' (kiln reads float32, int8, uint8, int16, int32, int64 and bool)")]
    DType(String),
    #[error("Fortran-order arrays are not supported; save with np.ascontiguousarray")]
    FortranOrder,
    #[error("{0}")]
    Tensor(#[from] crate::error::IrError),
}

const MAGIC: &[u8] = b"\x93NUMPY";

fn descr(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "<f4",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::Bool => "|b1",
    }
}

fn parse_descr(d: &str) -> Result<DType, NpyError> {
    Ok(match d {
        "<f4" => DType::F32,
        "|i1" | "<i1" | "i1" => DType::I8,
        "|u1" | "<u1" | "u1" => DType::U8,
        "<i2" => DType::I16,
        "<i4" => DType::I32,
        "<i8" => DType::I64,
        "|b1" | "<b1" | "b1" => DType::Bool,
        other => return Err(NpyError::DType(other.to_string())),
    })
}

/// Serializes a tensor as a version 1.0 `.npy` file.
pub fn write(t: &Tensor) -> Vec<u8> {
    let shape = match t.shape() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        descr(t.dtype()),
        shape
    );
    // Pad so that the data starts on a 64-byte boundary, header ends with '\n'.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(header.len() + 10 + t.size_bytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.data().to_le_bytes());
    out
}

/// Value of `key` in the header dict: the text after `'key':` up to the next top-level comma.
fn header_field<'a>(header: &'a str, key: &str) -> Result<&'a str, NpyError> {
    let pat = format!("'{key}':");
    let start = header
        .find(&pat)
        .ok_or_else(|| NpyError::Header(format!("no '{key}'")))?
        + pat.len();
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else {
        rest.find([',', '}'])
    }
    .ok_or_else(|| NpyError::Header(format!("unterminated '{key}'")))?;
    Ok(rest[..end].trim())
}

/// Parses a `.npy` file.
pub fn read(bytes: &[u8]) -> Result<Tensor, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(NpyError::BadMagic);
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (
            usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            10usize,
        ),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(NpyError::Truncated);
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (n as usize, 12)
        }
        v => return Err(NpyError::Header(format!("unknown version {v}"))),
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or(NpyError::Truncated)?;
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| NpyError::Header("not UTF-8".into()))?;
    let d = header_field(header, "descr")?.trim_matches(|c| c == '\'' || c == '"');
    let dtype = parse_descr(d)?;
    if header_field(header, "fortran_order")? != "False" {
        return Err(NpyError::FortranOrder);
    }
    let shape_text = header_field(header, "shape")?;
    let shape: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| NpyError::Header(format!("bad shape {shape_text}")))
        })
        .collect::<Result<_, _>>()?;
    let ty = crate::tensor::TensorType::checked(dtype, shape)?;
    let body = &bytes[data_start..];
    if body.len() < ty.size_bytes() {
        return Err(NpyError::Truncated);
    }
    let n = ty.numel();
    let body = &body[..ty.size_bytes()];
    let data = TensorData::from_le_bytes(dtype, body).ok_or(NpyError::Truncated)?;
    debug_assert_eq!(data.len(), n);
    Ok(Tensor::new(ty.shape, data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Tensor::from_f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]).unwrap();
        let bytes = write(&t);
        assert_eq!(bytes.len() % 16, 24 % 16);
        assert_eq!(read(&bytes).unwrap(), t);
        let s = Tensor::new(vec![], TensorData::I64(vec![7])).unwrap();
        assert_eq!(read(&write(&s)).unwrap(), s);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(read(b"hello world!"), Err(NpyError::BadMagic)));
        let t = Tensor::from_f32(vec![4], vec![1.0; 4]).unwrap();
        let bytes = write(&t);
        assert!(matches!(
            read(&bytes[..bytes.len() - 1]),
            Err(NpyError::Truncated)
        ));
    }
}
