//! `Gemm` with arbitrary shapes, values, zero points (in range or not) and requantization
//! parameters (fixed-point multipliers and shifts of any value), on the automatic kernel tier
//! and the portable one, 1 and 2 threads. Oracle: an `Ok` equals the naive reference in `i64`
//! (then TFLite's fixed-point arithmetic); an `Err` is `ZeroPointOutOfRange` for a zero point
//! outside `u8`/`i8` or `InvalidFixedPoint` for a multiplier or shift outside the documented
//! ranges, and nothing else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quant_matmul::{
    check_fixed_point, multiply_by_quantized_multiplier, Gemm, KernelChoice, MatMut, MatRef, Operands, QuantError,
    Requant, ZeroPoint,
};

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<16>() else { return };
    let (m, k, n) = (usize::from(head[0] % 40), usize::from(head[1]) % 150, usize::from(head[2] % 40));
    let za = i32::from(i16::from_le_bytes([head[3], head[4]]));
    let zb = i32::from(i16::from_le_bytes([head[5], head[6]]));
    let multiplier = i32::from_le_bytes([head[7], head[8], head[9], head[10]]);
    let shift = i32::from(head[11] as i8);
    let zero_out = i32::from(head[12] as i8);
    let threads = 1 + usize::from(head[13] & 1);
    let (a, b): (Vec<u8>, Vec<i8>) = {
        let mut bytes = body.iter().copied().cycle();
        let take = |len: usize, bytes: &mut dyn Iterator<Item = u8>| -> Vec<u8> {
            if body.is_empty() {
                vec![0; len]
            } else {
                bytes.take(len).collect()
            }
        };
        let a = take(m * k, &mut bytes);
        let b = take(k * n, &mut bytes).into_iter().map(|v| v as i8).collect();
        (a, b)
    };
    let av = MatRef::row_major(&a, m, k).expect("shape");
    let bv = MatRef::row_major(&b, k, n).expect("shape");
    let ops = match Operands::new(av, ZeroPoint::PerTensor(za), bv, ZeroPoint::PerTensor(zb)) {
        Ok(ops) => ops,
        Err(QuantError::ZeroPointOutOfRange { zero_point, .. }) => {
            let a_bad = !(0..=255).contains(&za);
            let b_bad = !(-128..=127).contains(&zb);
            assert!(a_bad && zero_point == za || b_bad && zero_point == zb, "za {za}, zb {zb}: refused {zero_point}");
            return;
        }
        Err(e) => panic!("undocumented error: {e:?}"),
    };
    assert!((0..=255).contains(&za) && (-128..=127).contains(&zb), "zero points {za}, {zb} accepted");
    let want: Vec<i64> = (0..m * n)
        .map(|x| {
            let (i, j) = (x / n.max(1), x % n.max(1));
            (0..k).map(|p| (i64::from(a[i * k + p]) - i64::from(za)) * (i64::from(b[p * n + j]) - i64::from(zb))).sum()
        })
        .collect();
    for g in [Gemm::new(), Gemm::new().kernel(KernelChoice::Portable)] {
        let g = g.threads(threads);
        let mut c = vec![0i32; m * n];
        g.i32(&ops, MatMut::row_major(&mut c, m, n).expect("shape")).expect("i32 output of 8-bit operands");
        assert!(c.iter().zip(&want).all(|(&c, &w)| i64::from(c) == w), "i32 {m}x{k}x{n}");
        let mut q = vec![0i8; m * n];
        let r = Requant::FixedPoint { multiplier, shift, zero_point: zero_out };
        match g.requant(&ops, r, MatMut::row_major(&mut q, m, n).expect("shape")) {
            Ok(()) => {
                assert!(check_fixed_point(multiplier, shift).is_ok(), "accepted {multiplier} >> {shift}");
                for (&got, &acc) in q.iter().zip(&want) {
                    let acc = i32::try_from(acc).expect("fits");
                    let v = multiply_by_quantized_multiplier(acc, multiplier, shift).saturating_add(zero_out);
                    assert_eq!(i32::from(got), v.clamp(-128, 127), "acc {acc}, {multiplier} >> {shift}");
                }
            }
            Err(QuantError::InvalidFixedPoint { .. }) => {
                assert!(check_fixed_point(multiplier, shift).is_err(), "refused {multiplier} >> {shift}");
                assert!(q.iter().all(|&v| v == 0), "wrote output before refusing");
            }
            Err(e) => panic!("undocumented error: {e:?}"),
        }
    }
});
