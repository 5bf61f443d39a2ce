//! The integer ops against real arithmetic: each op's integer-only result must be within one
//! step of the exactly rounded real-valued result (dequantize, compute in f64, quantize), on
//! seeded random data with per-channel scales, padding, broadcasting and clamped ranges.
#![allow(clippy::unwrap_used)] // tests may unwrap

use kiln_ir::fixed_point::{FixedPoint, Rounding};
use kiln_ir::op::QOut;
use kiln_ir::ops::eval;
use kiln_ir::{DType, Op, Tensor, TensorData};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn int(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u64) as i32
    }
    fn unit(&mut self) -> f64 {
        self.next() as f64 / (1u64 << 31) as f64
    }
}

fn i8s(shape: &[usize], rng: &mut Rng) -> (Tensor, Vec<i32>) {
    let n: usize = shape.iter().product();
    let v: Vec<i32> = (0..n).map(|_| rng.int(-128, 127)).collect();
    let t = Tensor::new(
        shape.to_vec(),
        TensorData::I8(v.iter().map(|&x| x as i8).collect()),
    )
    .unwrap();
    (t, v)
}

fn i32s(shape: &[usize], v: Vec<i32>) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::I32(v)).unwrap()
}

fn values(t: &Tensor) -> Vec<i32> {
    t.to_i64_vec()
        .unwrap()
        .into_iter()
        .map(|v| v as i32)
        .collect()
}

fn quantize(real: f64, out: &QOut) -> i32 {
    ((real.round() as i64 + i64::from(out.zero_point))
        .clamp(i64::from(out.min), i64::from(out.max))) as i32
}

fn assert_within_one(got: &[i32], want: &[i32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .max()
        .unwrap_or(0);
    assert!(worst <= 1, "{what}: off by {worst}");
}

#[test]
fn qconv_per_channel_with_padding_and_groups() {
    let mut rng = Rng(1);
    let (n, c, h, w, m, group) = (1, 4, 6, 5, 6, 2);
    let (x, xv) = i8s(&[n, c, h, w], &mut rng);
    let (wt, wv) = i8s(&[m, c / group, 3, 3], &mut rng);
    let x_zp = -7;
    let (s_in, s_out) = (0.05, 0.4);
    let s_w: Vec<f64> = (0..m).map(|_| 0.002 + 0.01 * rng.unit()).collect();
    let raw_bias: Vec<i32> = (0..m).map(|_| rng.int(-2000, 2000)).collect();
    // The op's bias holds the folded term -x_zp * sum(w) per output channel.
    let per = (c / group) * 9;
    let bias: Vec<i32> = (0..m)
        .map(|o| raw_bias[o] - x_zp * wv[o * per..(o + 1) * per].iter().sum::<i32>())
        .collect();
    let fps: Vec<FixedPoint> = s_w
        .iter()
        .map(|sw| FixedPoint::from_real(s_in * sw / s_out))
        .collect();
    let out = QOut {
        dtype: DType::I8,
        zero_point: 3,
        min: -128,
        max: 100,
    };
    let op = Op::QConv {
        kernel_shape: vec![3, 3],
        strides: vec![2, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group,
        x_zero_point: x_zp,
        output: Some(out),
        rounding: Rounding::TfLite,
    };
    let mult = i32s(&[m], fps.iter().map(|f| f.multiplier).collect());
    let shift = i32s(&[m], fps.iter().map(|f| f.shift).collect());
    let bias_t = i32s(&[m], bias);
    let y = eval(&op, &[&x, &wt, &bias_t, &mult, &shift])
        .unwrap()
        .remove(0);
    assert_eq!(y.shape(), &[1, 6, 3, 5]);
    // Real arithmetic: padding reads the zero point, i.e. contributes nothing.
    let (oh, ow) = (3, 5);
    let mut want = Vec::new();
    for o in 0..m {
        let g = o / (m / group);
        for yy in 0..oh {
            for xx in 0..ow {
                let mut acc = f64::from(raw_bias[o]);
                for ic in 0..c / group {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = (yy as i64 * 2 - 1 + ky, xx as i64 - 1 + kx);
                            if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                continue;
                            }
                            let xi = ((g * (c / group) + ic) * h + iy as usize) * w + ix as usize;
                            let wi = ((o * (c / group) + ic) * 3 + ky as usize) * 3 + kx as usize;
                            acc += f64::from(xv[xi] - x_zp) * f64::from(wv[wi]);
                        }
                    }
                }
                want.push(quantize(acc * s_in * s_w[o] / s_out, &out));
            }
        }
    }
    assert_within_one(&values(&y), &want, "QConv");
    // Without requantization the result is the raw accumulator.
    let raw = Op::QConv {
        kernel_shape: vec![3, 3],
        strides: vec![2, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group,
        x_zero_point: x_zp,
        output: None,
        rounding: Rounding::HalfEven,
    };
    let acc = eval(&raw, &[&x, &wt, &bias_t]).unwrap().remove(0);
    assert_eq!(acc.dtype(), DType::I32);
}

#[test]
fn qmatmul_per_column() {
    let mut rng = Rng(2);
    let (mm, k, n) = (3, 20, 5);
    let (a, av) = i8s(&[mm, k], &mut rng);
    let (b, bv) = i8s(&[k, n], &mut rng);
    let a_zp = 11;
    let s_w: Vec<f64> = (0..n).map(|_| 0.001 + 0.01 * rng.unit()).collect();
    let (s_a, s_y) = (0.1, 0.7);
    let bias: Vec<i32> = (0..n)
        .map(|j| 100 - a_zp * (0..k).map(|i| bv[i * n + j]).sum::<i32>())
        .collect();
    let fps: Vec<FixedPoint> = s_w
        .iter()
        .map(|sw| FixedPoint::from_real(s_a * sw / s_y))
        .collect();
    let out = QOut::full(DType::I8, -5);
    let op = Op::QMatMul {
        output: Some(out),
        rounding: Rounding::HalfEven,
    };
    let inputs = [
        a,
        b,
        i32s(&[n], bias),
        i32s(&[n], fps.iter().map(|f| f.multiplier).collect()),
        i32s(&[n], fps.iter().map(|f| f.shift).collect()),
    ];
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let y = eval(&op, &refs).unwrap().remove(0);
    let mut want = Vec::new();
    for i in 0..mm {
        for j in 0..n {
            let acc: f64 = 100.0
                + (0..k)
                    .map(|t| f64::from(av[i * k + t] - a_zp) * f64::from(bv[t * n + j]))
                    .sum::<f64>();
            want.push(quantize(acc * s_a * s_w[j] / s_y, &out));
        }
    }
    assert_within_one(&values(&y), &want, "QMatMul");
}

#[test]
fn qadd_and_qmul_broadcast() {
    let mut rng = Rng(3);
    let (a, av) = i8s(&[2, 3, 4], &mut rng);
    let (b, bv) = i8s(&[3, 1], &mut rng);
    let (sa, za, sb, zb, sy, zy) = (0.02, 5, 0.05, -9, 0.06, 2);
    let left_shift = 20;
    let twice_max = 2.0 * f64::max(sa, sb);
    let out = QOut::full(DType::I8, zy);
    let add = Op::QAdd {
        a_zero_point: za,
        b_zero_point: zb,
        left_shift,
        a_scale: FixedPoint::from_real(sa / twice_max),
        b_scale: FixedPoint::from_real(sb / twice_max),
        output_scale: FixedPoint::from_real(twice_max / (f64::from(1 << left_shift) * sy)),
        output: out,
        rounding: Rounding::TfLite,
    };
    let mul = Op::QMul {
        a_zero_point: za,
        b_zero_point: zb,
        scale: FixedPoint::from_real(sa * sb / sy),
        output: out,
        rounding: Rounding::HalfEven,
    };
    let add_y = values(&eval(&add, &[&a, &b]).unwrap()[0]);
    let mul_y = values(&eval(&mul, &[&a, &b]).unwrap()[0]);
    let (mut want_add, mut want_mul) = (Vec::new(), Vec::new());
    for i in 0..24 {
        let (ra, rb) = (
            f64::from(av[i] - za) * sa,
            f64::from(bv[(i / 4) % 3] - zb) * sb,
        );
        want_add.push(quantize((ra + rb) / sy, &out));
        want_mul.push(quantize(ra * rb / sy, &out));
    }
    assert_within_one(&add_y, &want_add, "QAdd");
    assert_within_one(&mul_y, &want_mul, "QMul");
}

#[test]
fn qaverage_pool_both_modes() {
    let mut rng = Rng(4);
    let (x, xv) = i8s(&[1, 2, 5, 5], &mut rng);
    let zp = -3;
    // Same quantization in and out: TFLite's rounding division of the raw sum.
    let same = Op::QAveragePool {
        kernel_shape: vec![3, 3],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        ceil_mode: false,
        count_include_pad: false,
        x_zero_point: zp,
        output: QOut::full(DType::I8, zp),
        rescale: false,
        rounding: Rounding::TfLite,
    };
    let y = values(&eval(&same, &[&x]).unwrap()[0]);
    let mut want = Vec::new();
    for c in 0..2 {
        for oy in 0..3 {
            for ox in 0..3 {
                let mut taps = Vec::new();
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = (oy * 2 + ky, ox * 2 + kx);
                        if (1..=5).contains(&iy) && (1..=5).contains(&ix) {
                            taps.push(xv[(c * 5 + iy - 1) * 5 + ix - 1]);
                        }
                    }
                }
                let mean = f64::from(taps.iter().sum::<i32>()) / taps.len() as f64;
                want.push(mean.round() as i32);
            }
        }
    }
    assert_eq!(y, want, "TFLite average pool rounds half away from zero");
    // Another output scale: the per-count multipliers.
    let (s_in, s_out, out_zp) = (0.1, 0.03, 7);
    let out = QOut::full(DType::I8, out_zp);
    let rescaled = Op::QAveragePool {
        kernel_shape: vec![3, 3],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        ceil_mode: false,
        count_include_pad: false,
        x_zero_point: zp,
        output: out,
        rescale: true,
        rounding: Rounding::HalfEven,
    };
    let fps: Vec<FixedPoint> = (0..=9)
        .map(|n| {
            FixedPoint::from_real(if n == 0 {
                0.0
            } else {
                s_in / (s_out * n as f64)
            })
        })
        .collect();
    let m = i32s(&[10], fps.iter().map(|f| f.multiplier).collect());
    let s = i32s(&[10], fps.iter().map(|f| f.shift).collect());
    let y2 = values(&eval(&rescaled, &[&x, &m, &s]).unwrap()[0]);
    let want2: Vec<i32> = want
        .iter()
        .zip(&y)
        .enumerate()
        .map(|(i, _)| {
            // Recompute the exact mean from the taps of output i.
            let (c, oy, ox) = (i / 9, (i / 3) % 3, i % 3);
            let mut taps = Vec::new();
            for ky in 0..3 {
                for kx in 0..3 {
                    let (iy, ix) = (oy * 2 + ky, ox * 2 + kx);
                    if (1..=5).contains(&iy) && (1..=5).contains(&ix) {
                        taps.push(xv[(c * 5 + iy - 1) * 5 + ix - 1] - zp);
                    }
                }
            }
            let mean = f64::from(taps.iter().sum::<i32>()) / taps.len() as f64;
            quantize(mean * s_in / s_out, &out)
        })
        .collect();
    assert_within_one(&y2, &want2, "QAveragePool rescaled");
}

#[test]
fn qsoftmax_matches_float_softmax() {
    let mut rng = Rng(5);
    let (x, xv) = i8s(&[3, 12], &mut rng);
    let s_in = 0.17;
    let table: Vec<i32> = (0..256)
        .map(|d| ((1u64 << 30) as f64 * (-(d as f64) * s_in).exp()).round() as i32)
        .collect();
    let out = QOut::full(DType::I8, -128);
    let op = Op::QSoftmax {
        axis: 1,
        inv_scale: 256 << 16,
        output: out,
    };
    let y = values(&eval(&op, &[&x, &i32s(&[256], table)]).unwrap()[0]);
    let mut want = Vec::new();
    for r in 0..3 {
        let row = &xv[r * 12..(r + 1) * 12];
        let max = *row.iter().max().unwrap();
        let e: Vec<f64> = row
            .iter()
            .map(|&v| (f64::from(v - max) * s_in).exp())
            .collect();
        let sum: f64 = e.iter().sum();
        want.extend(e.iter().map(|v| quantize(v / sum * 256.0, &out)));
    }
    assert_within_one(&y, &want, "QSoftmax");
}

#[test]
fn requantize_and_table() {
    let mut rng = Rng(6);
    let (x, xv) = i8s(&[40], &mut rng);
    let out = QOut::full(DType::U8, 128);
    let op = Op::Requantize {
        x_zero_point: -4,
        scale: FixedPoint::from_real(0.37),
        output: out,
        rounding: Rounding::TfLite,
    };
    let y = values(&eval(&op, &[&x]).unwrap()[0]);
    let want: Vec<i32> = xv
        .iter()
        .map(|&v| quantize(f64::from(v + 4) * 0.37, &out))
        .collect();
    assert_within_one(&y, &want, "Requantize");
    let table = Tensor::new(
        vec![256],
        TensorData::I8((0..256).map(|i| (255 - i) as u8 as i8).collect()),
    )
    .unwrap();
    let t = values(&eval(&Op::QTable, &[&x, &table]).unwrap()[0]);
    for (&got, &v) in t.iter().zip(&xv) {
        assert_eq!(got, ((255 - (v + 128)) as u8) as i8 as i32);
    }
}

#[test]
fn accumulator_overflow_is_an_error() {
    let n = 140_000;
    let x = Tensor::new(vec![1, n], TensorData::I8(vec![127; n])).unwrap();
    let w = Tensor::new(vec![n, 1], TensorData::I8(vec![127; n])).unwrap();
    let err = eval(
        &Op::QMatMul {
            output: None,
            rounding: Rounding::HalfEven,
        },
        &[&x, &w, &i32s(&[1], vec![0])],
    )
    .unwrap_err();
    assert!(err.to_string().contains("overflows i32"), "{err}");
}
