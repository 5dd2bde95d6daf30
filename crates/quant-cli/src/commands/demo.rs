//! `quant demo`: a deterministic synthetic transformer block quantized under several schemes.
//!
//! The block has the attention projections `q k v o` (768 x 768) and the MLP `gate up`
//! (3072 x 768) and `down` (768 x 3072), `[out, in]` like PyTorch's `Linear`, in `f32`. The
//! weights are normal (sigma 0.02) with what real LLM weights have: six input features whose
//! column is eight times larger in every projection that reads the hidden state, and a few single
//! weights near 1. Every scheme quantizes all seven tensors; the table gives the bytes (codes and
//! parameters), the compression against `f32`, and the error over the whole block.

use quant_analysis::error_stats;
use quant_core::{BlockFormat, QuantError, QuantSpec, Scheme};

use crate::measure::measure;
use crate::scheme::{file_bytes, Gran, Plan};

const HIDDEN: usize = 768;
const MLP: usize = 3072;

/// A small deterministic generator (SplitMix64) with normal samples (Box-Muller).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

/// The block's tensors: name, rows (out), cols (in), values.
pub fn block() -> Vec<(&'static str, usize, usize, Vec<f32>)> {
    let mut g = Gen(768_3072);
    let outlier_features = [11usize, 93, 250, 251, 480, 700];
    let mut make = |rows: usize, cols: usize, features: bool| -> Vec<f32> {
        let mut w: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let boost = if features && outlier_features.contains(&(i % cols)) { 8.0 } else { 1.0 };
                (0.02 * boost * g.normal()) as f32
            })
            .collect();
        for _ in 0..4 {
            let i = (g.next() % w.len() as u64) as usize;
            w[i] = (0.5 + 0.5 * g.unit()) as f32 * if g.next().is_multiple_of(2) { 1.0 } else { -1.0 };
        }
        w
    };
    vec![
        ("attn.q", HIDDEN, HIDDEN, make(HIDDEN, HIDDEN, true)),
        ("attn.k", HIDDEN, HIDDEN, make(HIDDEN, HIDDEN, true)),
        ("attn.v", HIDDEN, HIDDEN, make(HIDDEN, HIDDEN, true)),
        ("attn.o", HIDDEN, HIDDEN, make(HIDDEN, HIDDEN, false)),
        ("mlp.gate", MLP, HIDDEN, make(MLP, HIDDEN, true)),
        ("mlp.up", MLP, HIDDEN, make(MLP, HIDDEN, true)),
        ("mlp.down", HIDDEN, MLP, make(HIDDEN, MLP, false)),
    ]
}

/// One row of the table.
pub struct Line {
    /// The scheme as shown.
    pub scheme: String,
    /// Bits per code.
    pub bits: u32,
    /// Granularity as shown.
    pub granularity: String,
    /// Bytes of codes and parameters.
    pub bytes: usize,
    /// Mean squared error over the block.
    pub mse: f64,
    /// Largest error over the block.
    pub max_error: f64,
    /// SNR over the block, dB.
    pub snr_db: f64,
}

/// Accumulates per-tensor statistics into block-wide ones.
#[derive(Default)]
struct Total {
    sq_err: f64,
    signal: f64,
    n: f64,
    max: f64,
}

impl Total {
    fn add(&mut self, s: &quant_analysis::ErrorStats) {
        let n = s.len as f64;
        self.sq_err += s.mse * n;
        self.signal += s.signal_power * n;
        self.n += n;
        self.max = self.max.max(s.max_error);
    }

    fn line(&self, scheme: &str, bits: u32, granularity: &str, bytes: usize) -> Line {
        Line {
            scheme: scheme.to_string(),
            bits,
            granularity: granularity.to_string(),
            bytes,
            mse: self.sq_err / self.n,
            max_error: self.max,
            snr_db: 10.0 * (self.signal / self.sq_err).log10(),
        }
    }
}

/// Every scheme of the table, measured on `tensors`.
pub fn lines(tensors: &[(&str, usize, usize, Vec<f32>)]) -> Result<Vec<Line>, QuantError> {
    let plans = [
        (Scheme::Symmetric, 8, Gran::Tensor),
        (Scheme::Symmetric, 8, Gran::Channel),
        (Scheme::Asymmetric, 8, Gran::Channel),
        (Scheme::Symmetric, 4, Gran::Channel),
        (Scheme::Symmetric, 4, Gran::Group(128)),
        (Scheme::Symmetric, 4, Gran::Group(32)),
        (Scheme::Asymmetric, 4, Gran::Group(32)),
    ];
    let mut out = Vec::new();
    for (scheme, bits, gran) in plans {
        let plan = Plan { spec: QuantSpec::new(scheme, bits)?, gran };
        let mut total = Total::default();
        let mut bytes = 0;
        for (_, rows, cols, w) in tensors {
            let (stats, _) = measure(w, *rows, *cols, plan).map_err(|_| QuantError::InvalidBits { bits })?;
            total.add(&stats);
            bytes += file_bytes(plan, *rows, *cols, 4);
        }
        out.push(total.line(plan.scheme_name(), bits, &gran.to_string(), bytes));
    }
    for (format, bits, gran) in [
        (BlockFormat::Q8_0, 8, "group:32"),
        (BlockFormat::Q6_K, 6, "k:16/256"),
        (BlockFormat::Q5_0, 5, "group:32"),
        (BlockFormat::Q5_1, 5, "group:32"),
        (BlockFormat::Q5_K, 5, "k:32/256"),
        (BlockFormat::Q4_0, 4, "group:32"),
        (BlockFormat::Q4_1, 4, "group:32"),
        (BlockFormat::Q4_K, 4, "k:32/256"),
        (BlockFormat::Q3_K, 3, "k:16/256"),
        (BlockFormat::Q2_K, 2, "k:16/256"),
    ] {
        let mut total = Total::default();
        let mut bytes = 0;
        for (_, _, _, w) in tensors {
            let q = format.quantize(w)?;
            bytes += q.len();
            total.add(&error_stats(w, &format.dequantize(&q)?)?);
        }
        out.push(total.line(format.name(), bits, gran, bytes));
    }
    // Our two-level formats (quant_core::superblock), searched.
    for (name, gran) in
        [("levels4/16@256", "16/s6/256"), ("levels5/16@256", "16/s6/256"), ("levels6/16:s8@256", "16/s8/256")]
    {
        let spec = crate::scheme::parse_super(name, quant_core::superblock::Fit::Search)
            .map_err(|_| QuantError::InvalidSuperSpec { reason: "demo format" })?;
        let mut total = Total::default();
        let mut bytes = 0;
        for (_, rows, cols, w) in tensors {
            let q = crate::scheme::quantize_super_2d(w, *rows, *cols, spec, None)?;
            bytes += q.bytes();
            total.add(&error_stats(w, &q.dequantize::<f32>())?);
        }
        out.push(total.line("levels", spec.bits(), gran, bytes));
    }
    Ok(out)
}

/// The demo's report.
pub fn run() -> Result<String, QuantError> {
    let tensors = block();
    let f32_bytes: usize = tensors.iter().map(|(_, r, c, _)| r * c * 4).sum();
    let mut out = format!(
        "quant demo: a synthetic transformer block (hidden {HIDDEN}, MLP {MLP}; attn q k v o, mlp gate up down),\n\
         {:.1} M f32 weights ({:.1} MB), sigma 0.02, 6 outlier input features x8, a few single weights near 1.\n\
         Codes + scales (f32) + zero points (i32); error over the whole block.\n\n",
        f32_bytes as f64 / 4e6,
        f32_bytes as f64 / 1e6
    );
    out.push_str(&format!(
        "{:<8} {:>4} {:<11} {:>12} {:>7} {:>7} {:>11} {:>10} {:>8}\n",
        "scheme", "bits", "granularity", "bytes", "bpw", "ratio", "MSE", "max error", "SNR dB"
    ));
    out.push_str(&format!("{}\n", "-".repeat(86)));
    for l in lines(&tensors)? {
        out.push_str(&format!(
            "{:<8} {:>4} {:<11} {:>12} {:>7.3} {:>6.2}x {:>11.3e} {:>10.3e} {:>8.2}\n",
            l.scheme,
            l.bits,
            l.granularity,
            l.bytes,
            8.0 * l.bytes as f64 * 4.0 / f32_bytes as f64,
            f32_bytes as f64 / l.bytes as f64,
            l.mse,
            l.max_error,
            l.snr_db
        ));
    }
    out.push_str(
        "\nQ8_0 .. Q2_K: llama.cpp's block formats, byte for byte (f16 scales; k-quants: sub-blocks of 16\n\
         or 32 with 6- or 8-bit scales in super-blocks of 256). levels: our two-level formats (sub-blocks of\n\
         16, 6- or 8-bit scales under an f16 per 256, non-uniform levels, searched scales). Try a real model:\n\
         quant report model.safetensors --super levels4/16@256 --type q4_k,q6_k --sort bpw\n",
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(l: &[Line], scheme: &str) -> usize {
        l.iter().find(|x| x.scheme == scheme).map_or(0, |x| x.bytes)
    }

    /// What the demo is there to show, held: groups beat channels at 4 bits, smaller groups beat
    /// larger ones, per channel beats per tensor at 8 bits, and the byte counts are right.
    #[test]
    fn the_table_shows_what_it_claims() -> Result<(), QuantError> {
        let tensors = block();
        let l = lines(&tensors)?;
        let snr = |scheme: &str, bits: u32, g: &str| {
            l.iter().find(|x| x.scheme == scheme && x.bits == bits && x.granularity == g).map_or(f64::NAN, |x| x.snr_db)
        };
        assert!(snr("sym", 8, "channel") > snr("sym", 8, "tensor") + 3.0);
        assert!(snr("sym", 4, "group:128") > snr("sym", 4, "channel") + 1.0);
        assert!(snr("sym", 4, "group:32") > snr("sym", 4, "group:128") + 1.0);
        assert!(snr("asym", 4, "group:32") > snr("sym", 4, "group:32"));
        let elements: usize = tensors.iter().map(|(_, r, c, _)| r * c).sum();
        let q4_0 = l.iter().find(|x| x.scheme == "Q4_0").map_or(0, |x| x.bytes);
        assert_eq!(q4_0, elements / 32 * 18);
        let sym4_g32 =
            l.iter().find(|x| x.scheme == "sym" && x.bits == 4 && x.granularity == "group:32").map_or(0, |x| x.bytes);
        assert_eq!(sym4_g32, elements / 2 + elements / 32 * 4);
        // The k-quants: 4.5, 5.5 and 6.5625 bits per weight, and each beats the legacy format
        // of its width at the same or a smaller size.
        let (q4_k, q5_k, q6_k) = (bytes_of(&l, "Q4_K"), bytes_of(&l, "Q5_K"), bytes_of(&l, "Q6_K"));
        assert_eq!((q4_k, q5_k, q6_k), (elements / 256 * 144, elements / 256 * 176, elements / 256 * 210));
        assert!(snr("Q4_K", 4, "k:32/256") > snr("Q4_0", 4, "group:32"));
        assert!(snr("Q5_K", 5, "k:32/256") > snr("Q5_0", 5, "group:32"));
        assert!(snr("Q6_K", 6, "k:16/256") > snr("Q5_K", 5, "k:32/256") + 3.0);
        assert!(snr("Q4_K", 4, "k:32/256") > snr("Q3_K", 3, "k:16/256") + 3.0);
        assert!(snr("Q3_K", 3, "k:16/256") > snr("Q2_K", 2, "k:16/256") + 3.0);
        assert_eq!((bytes_of(&l, "Q3_K"), bytes_of(&l, "Q2_K")), (elements / 256 * 110, elements / 256 * 84));
        // Our levels at no more bytes than the k-quant of their width, and more accurate.
        let ours = |bits: u32| {
            l.iter().find(|x| x.scheme == "levels" && x.bits == bits).map_or((0, f64::NAN), |x| (x.bytes, x.snr_db))
        };
        for (bits, k, g) in [(4, "Q4_K", "k:32/256"), (5, "Q5_K", "k:32/256"), (6, "Q6_K", "k:16/256")] {
            let (b, s) = ours(bits);
            assert!(b <= bytes_of(&l, k) && s > snr(k, bits, g) + 0.3, "levels{bits}: {b} bytes {s:.2} dB vs {k}");
        }
        assert_eq!(ours(4).0, elements / 256 * (128 + 12 + 2));
        Ok(())
    }
}
