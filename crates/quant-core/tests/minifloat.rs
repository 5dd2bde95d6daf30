//! float8 and float4 conversions against `ml_dtypes` as ONNX drives it
//! (`crates/quant-core/tests/fixtures/minifloat.py`): every code's value, and the code of 15 750 `f32` inputs at
//! and around every rounding boundary, saturating and not.

use quant_core::MiniFloat;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/minifloat");

fn lines(name: &str) -> Vec<Vec<String>> {
    let path = format!("{DIR}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
    text.lines().map(|l| l.split(' ').map(str::to_string).collect()).collect()
}

fn format(name: &str) -> MiniFloat {
    MiniFloat::ALL.into_iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("format {name}"))
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).expect("hex")
}

#[test]
fn every_code_decodes_to_ml_dtypes_value() {
    let rows = lines("values.txt");
    assert_eq!(rows.len(), 4 * 256 + 16);
    for r in rows {
        let (f, code, want) = (format(&r[0]), u8::try_from(hex(&r[1])).expect("code"), f64::from_bits(hex(&r[2])));
        let got = f.decode(code);
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "{} {code:#x}: {got} vs {want}",
            r[0]
        );
    }
}

#[test]
fn every_conversion_matches_ml_dtypes() {
    let rows = lines("cases.txt");
    assert_eq!(rows.len(), 15_750);
    let mut checked = 0;
    for r in rows {
        let f = format(&r[0]);
        let saturate = r[1] == "1";
        let x = f32::from_bits(u32::try_from(hex(&r[2])).expect("f32 bits"));
        let want = u8::try_from(hex(&r[3])).expect("code");
        if f == MiniFloat::E2M1 && x.is_nan() {
            // float4e2m1 has no NaN: ml_dtypes writes a sign-flipped zero; the quantizers
            // refuse NaN for it instead (tested in tests/tensor.rs).
            continue;
        }
        assert_eq!(f.encode(f64::from(x), saturate), want, "{} saturate={saturate} x={x:e} ({:#x})", r[0], x.to_bits());
        checked += 1;
    }
    assert_eq!(checked, 15_750 - 4);
}
