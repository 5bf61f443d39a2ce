//! kiln's integer element-wise ops (Requantize, QTable, QAdd, QMul) through both backends
//! against the interpreter, bit for bit: the generated C built with strict warnings and UBSan
//! on the host, and the Cranelift JIT (default, scalar, and one vector per iteration without
//! explicit padding). Seeded random data with the edge cases: zero points at both ends of
//! their range, i8 and u8 inputs and outputs, multipliers below and above 1, tables as
//! constants and as inputs, broadcasting in every pattern, and left shifts whose products need
//! i64.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

mod common;

use common::{check_all, next_rounding, qout, random, single, Operand, Rng};
use kiln_backends::kernel::Schedule;
use kiln_ir::fixed_point::FixedPoint;
use kiln_ir::{DType, Op};

#[test]
fn integer_elementwise_ops_match_the_interpreter() {
    let mut rng = Rng(60);
    let fp = |r: f64| FixedPoint::from_real(r);
    let mut cases = Vec::new();
    // Requantize: zero points at both ends, multipliers below and above 1.
    for (i, (t, x_zp, real, out)) in [
        (DType::I8, -128, 0.37, qout(DType::I8, 3, -128, 127)),
        (DType::U8, 255, 2.9, qout(DType::U8, 128, 0, 255)),
        (DType::I8, 0, 1.0, qout(DType::U8, 0, 0, 255)),
        (DType::U8, 0, 0.0019, qout(DType::I8, -7, -20, 90)),
    ]
    .into_iter()
    .enumerate()
    {
        let x = random(&mut rng, t, &[3, 5, 7]);
        let op = Op::Requantize {
            x_zero_point: x_zp,
            scale: fp(real),
            output: out,
            rounding: next_rounding(),
        };
        cases.push(single(
            &format!("requantize {i}"),
            op,
            vec![Operand::Input(x)],
        ));
    }
    // QTable: i8 and u8 inputs, i8 and u8 tables; the table as a constant and as an input.
    for (i, (t, table_t)) in [
        (DType::I8, DType::I8),
        (DType::U8, DType::U8),
        (DType::I8, DType::U8),
    ]
    .into_iter()
    .enumerate()
    {
        let x = random(&mut rng, t, &[2, 3, 50]);
        let table = random(&mut rng, table_t, &[256]);
        let table = if i == 1 {
            Operand::Input(table)
        } else {
            Operand::Const(table)
        };
        cases.push(single(
            &format!("qtable {i}"),
            Op::QTable,
            vec![Operand::Input(x), table],
        ));
    }
    // QAdd and QMul, broadcasting in every pattern.
    let shapes: [(&[usize], &[usize]); 4] = [
        (&[2, 3, 4], &[2, 3, 4]),
        (&[2, 3, 4], &[4]),
        (&[2, 1, 4], &[3, 1]),
        (&[1], &[2, 3, 5]),
    ];
    for (i, (sa, sb)) in shapes.into_iter().enumerate() {
        let (ta, tb) = if i % 2 == 0 {
            (DType::I8, DType::I8)
        } else {
            (DType::U8, DType::I8)
        };
        let a = random(&mut rng, ta, sa);
        let b = random(&mut rng, tb, sb);
        let (a_zp, b_zp) = [(-128, 127), (255, -5), (0, 0), (17, -128)][i];
        let out = [
            qout(DType::I8, -1, -128, 127),
            qout(DType::U8, 200, 0, 255),
            qout(DType::I8, 0, 0, 127),
            qout(DType::U8, 0, 10, 245),
        ][i];
        // TFLite's QAdd: 2^20 headroom, input multipliers below 1/2, an output multiplier that
        // may exceed 1; and a left shift whose products need i64 (k = 24).
        let (ls, sa_real, sb_real, so_real) = [
            (20, 0.5, 0.3, 1.0 / (1 << 20) as f64 * 1.7),
            (20, 0.21, 0.45, 1.0 / (1 << 20) as f64 * 0.4),
            (24, 0.5, 0.5, 1.0 / (1 << 24) as f64 * 3.0),
            (0, 0.25, 0.125, 5.5),
        ][i];
        let add = Op::QAdd {
            a_zero_point: a_zp,
            b_zero_point: b_zp,
            left_shift: ls,
            a_scale: fp(sa_real),
            b_scale: fp(sb_real),
            output_scale: fp(so_real),
            output: out,
            rounding: next_rounding(),
        };
        cases.push(single(
            &format!("qadd {i} {ta}{sa:?} + {tb}{sb:?}"),
            add,
            vec![Operand::Input(a.clone()), Operand::Input(b.clone())],
        ));
        let mul = Op::QMul {
            a_zero_point: a_zp,
            b_zero_point: b_zp,
            scale: fp([0.004, 0.02, 0.0001, 1.3][i]),
            output: out,
            rounding: next_rounding(),
        };
        cases.push(single(
            &format!("qmul {i} {ta}{sa:?} * {tb}{sb:?}"),
            mul,
            vec![Operand::Input(a), Operand::Const(b)],
        ));
    }
    check_all(&cases, &[Schedule::default()]);
}
