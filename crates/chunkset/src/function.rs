//! The functions of a chunk and the set of functions a build writes.
//!
//! | function | MIL name | where | positions |
//! |---|---|---|---|
//! | [`FunctionKind::Decode`] | `decode_q1` | every decode chunk package (default function) | 1 |
//! | [`FunctionKind::Verify`] | `verify_qK` | every decode chunk package, beside `decode_q1` | K |
//! | [`FunctionKind::Prefill`] | `main` | single-function `prefill_chunk{i}` packages | N |
//!
//! New functions (a stateful `infer`, batched `prefill_b<T>`) are new variants with their names here.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Name of the decode function.
pub const DECODE_FN: &str = "decode_q1";
/// Name of the verify function (the reference runtime loads it by this literal name, whatever K).
pub const VERIFY_FN: &str = "verify_qK";
/// Name of the prefill function (prefill packages are single-function, like the reference's).
pub const PREFILL_FN: &str = "main";

/// A function of a chunk package, with its number of query positions.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FunctionKind {
    /// `decode_q1`: one position.
    Decode,
    /// `verify_qK`: `k` draft positions after the cached ones.
    Verify { k: usize },
    /// Prefill of `n` positions from position 0 (no cache).
    Prefill { n: usize },
}

impl FunctionKind {
    /// The MIL function name.
    pub fn name(&self) -> &'static str {
        match self {
            FunctionKind::Decode => DECODE_FN,
            FunctionKind::Verify { .. } => VERIFY_FN,
            FunctionKind::Prefill { .. } => PREFILL_FN,
        }
    }

    /// Query positions per call (`S`).
    pub fn positions(&self) -> usize {
        match *self {
            FunctionKind::Decode => 1,
            FunctionKind::Verify { k } => k,
            FunctionKind::Prefill { n } => n,
        }
    }
}

/// Which functions a build writes: `decode_q1` always, `verify_qK` and prefill packages on request.
///
/// Written as its canonical text, `decode[,verify:K][,prefill:N]` (`manifest.json`'s
/// `build.functions`, and the value of the CLI's `--functions`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Functions {
    /// `verify_qK` with this K, in every chunk package beside `decode_q1`.
    pub verify: Option<usize>,
    /// Prefill packages `prefill_chunk{i}` (swa4 cut, one `main` function) of N positions.
    pub prefill: Option<usize>,
}

/// A function list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionsError {
    #[error("`{part}` needs a positive {what}")]
    BadCount { part: String, what: &'static str },
    #[error("unknown function `{0}` (expected decode, verify:K, prefill:N)")]
    Unknown(String),
    #[error("the list must include `decode`")]
    NoDecode,
}

impl Functions {
    /// `decode_q1` only.
    pub fn decode_only() -> Functions {
        Functions::default()
    }

    /// The chunk-package functions, decode first (prefill lives in its own packages).
    pub fn chunk_functions(&self) -> Vec<FunctionKind> {
        let mut v = vec![FunctionKind::Decode];
        if let Some(k) = self.verify {
            v.push(FunctionKind::Verify { k });
        }
        v
    }
}

impl fmt::Display for Functions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("decode")?;
        if let Some(k) = self.verify {
            write!(f, ",verify:{k}")?;
        }
        if let Some(n) = self.prefill {
            write!(f, ",prefill:{n}")?;
        }
        Ok(())
    }
}

impl FromStr for Functions {
    type Err = FunctionsError;

    /// Parse `decode[,verify:K][,prefill:N]` (any order, blanks and empty items ignored).
    fn from_str(s: &str) -> Result<Functions, FunctionsError> {
        let mut f = Functions::default();
        let mut decode = false;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, arg) = part.split_once(':').unwrap_or((part, ""));
            let num = |what: &'static str| {
                arg.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    FunctionsError::BadCount {
                        part: part.to_string(),
                        what,
                    }
                })
            };
            match name {
                "decode" => decode = true,
                "verify" => f.verify = Some(num("K")?),
                "prefill" => f.prefill = Some(num("N")?),
                other => return Err(FunctionsError::Unknown(other.to_string())),
            }
        }
        if !decode {
            return Err(FunctionsError::NoDecode);
        }
        Ok(f)
    }
}

impl Serialize for Functions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Functions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Functions, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
