//! One module per `quant` command: each has its arguments (`Args`, or none) and `run`.

pub mod demo;
pub mod dequantize;
pub mod eval;
pub mod imatrix;
pub mod inspect;
pub mod quantize;
pub mod report;

use clap::ValueEnum;
use quant_core::{QuantSpec, Scheme};

use crate::scheme::{Gran, Plan};
use crate::CliError;

/// `--scheme`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SchemeArg {
    /// Symmetric: zero point 0.
    Sym,
    /// Asymmetric: a zero point per scale.
    Asym,
}

/// `--fit`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum FitArg {
    /// Least-squares search over candidate scales (and offsets), never worse than min-max.
    Search,
    /// Scales from the extremes alone.
    Minmax,
}

impl FitArg {
    /// The library's fit.
    pub fn fit(self) -> quant_core::superblock::Fit {
        match self {
            FitArg::Search => quant_core::superblock::Fit::Search,
            FitArg::Minmax => quant_core::superblock::Fit::MinMax,
        }
    }
}

/// The plan of `--scheme`, `--bits` and `--granularity`.
pub fn plan(scheme: SchemeArg, bits: u32, granularity: &str) -> Result<Plan, CliError> {
    let kind = if scheme == SchemeArg::Sym { Scheme::Symmetric } else { Scheme::Asymmetric };
    let spec = QuantSpec::new(kind, bits).map_err(|e| CliError::usage(format!("--bits {bits}: {e}")))?;
    let gran = Gran::parse(granularity).map_err(CliError::usage)?;
    Ok(Plan { spec, gran })
}

/// The llama.cpp format `--type NAME` names (case ignored).
pub fn block_format(name: &str) -> Result<quant_core::BlockFormat, CliError> {
    quant_core::BlockFormat::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(name)).ok_or_else(|| {
        let all: Vec<String> = quant_core::BlockFormat::ALL.iter().map(|f| f.name().to_ascii_lowercase()).collect();
        CliError::usage(format!("--type {name}: not one of {}", all.join(", ")))
    })
}
