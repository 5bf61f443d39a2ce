//! Helpers the integer-kernel tests share: seeded data, quantization parameters, the strict
//! host build options and the bit-for-bit comparison.
#![allow(dead_code)] // each test binary uses a different subset

use kiln_backends::host::HostOptions;
use kiln_ir::{DType, QOut, Tensor, TensorData};

/// A deterministic generator (PCG-style LCG).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// A value in `lo..=hi`.
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    pub fn unit(&mut self) -> f64 {
        self.next() as f64 / (1u64 << 31) as f64
    }
}

/// A tensor of `dtype` (i8, u8 or i16) with values drawn from its whole range.
pub fn random(rng: &mut Rng, dtype: DType, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data = match dtype {
        DType::I8 => TensorData::I8((0..n).map(|_| rng.int(-128, 127) as i8).collect()),
        DType::U8 => TensorData::U8((0..n).map(|_| rng.int(0, 255) as u8).collect()),
        DType::I16 => TensorData::I16((0..n).map(|_| rng.int(-32768, 32767) as i16).collect()),
        other => panic!("random {other}"),
    };
    Tensor::new(shape.to_vec(), data).unwrap()
}

pub fn i32s(shape: &[usize], v: Vec<i32>) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::I32(v)).unwrap()
}

/// The output of a quantized op: `dtype` with `zero_point`, clamped to `[min, max]`.
pub fn qout(dtype: DType, zero_point: i32, min: i32, max: i32) -> QOut {
    QOut {
        dtype,
        zero_point,
        min,
        max,
    }
}

/// Strict warnings, and UBSan with the default compiler (gcc here ships its runtime; others
/// may not); `KILN_KEEP_DIR` keeps the build.
pub fn host_options() -> HostOptions {
    let mut flags: Vec<String> = [
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Wshadow",
        "-Wcast-qual",
        "-Werror",
    ]
    .map(String::from)
    .to_vec();
    if std::env::var_os("CC").is_none() {
        flags.extend(["-fsanitize=undefined", "-fno-sanitize-recover=all"].map(String::from));
    }
    HostOptions {
        cflags: flags,
        keep_dir: std::env::var_os("KILN_KEEP_DIR").map(Into::into),
    }
}

/// Every output identical in type and value.
pub fn assert_same(what: &str, got: &[Tensor], want: &[Tensor]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.ty(), w.ty(), "{what}");
        let (gv, wv) = (g.to_i64_vec().unwrap(), w.to_i64_vec().unwrap());
        if let Some(i) = gv.iter().zip(&wv).position(|(a, b)| a != b) {
            let n = gv.iter().zip(&wv).filter(|(a, b)| a != b).count();
            panic!(
                "{what}: {n} of {} elements differ; first at {i}: got {}, want {}",
                gv.len(),
                gv[i],
                wv[i]
            );
        }
    }
}
