//! The functions of a chunk and the set of functions a build writes.
//!
//! | function | MIL name | where | positions |
//! |---|---|---|---|
//! | [`FunctionKind::Decode`] | `decode_q1` | every decode chunk package (default function) | 1 |
//! | [`FunctionKind::Verify`] | `verify_qK` | every decode chunk package, beside `decode_q1` | K |
//! | [`FunctionKind::Prefill`] | `main` | single-function `prefill_chunk{i}` packages | N |
//! | [`FunctionKind::Stateful`] `t = 1` | `infer` | every stateful chunk package (default function) | 1 |
//! | [`FunctionKind::Stateful`] `t > 1` | `prefill_b<t>` | every stateful chunk package, beside `infer` | t |
//!
//! Stateful functions keep the KV in the package's states (one state schema for every function of a
//! package, so one `MLState` serves them all); `Gemma4StatefulEngine` probes `prefill_b16`,
//! `prefill_b8`, `prefill_b4` (docs/STATEFUL.md).

use crate::variant::Variant;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Name of the decode function.
pub const DECODE_FN: &str = "decode_q1";
/// Name of the verify function (the reference runtime loads it by this literal name, whatever K).
pub const VERIFY_FN: &str = "verify_qK";
/// Name of the prefill function (prefill packages are single-function, like the reference's).
pub const PREFILL_FN: &str = "main";
/// Name of the one-position function of a stateful package (its default function).
pub const INFER_FN: &str = "infer";
/// Prefix of the batched prefill functions of a stateful package (`prefill_b<T>`).
pub const PREFILL_B_PREFIX: &str = "prefill_b";
/// The batch sizes `Gemma4StatefulEngine` probes, in its order of preference.
pub const ENGINE_BATCHES: [usize; 3] = [16, 8, 4];

/// A function of a chunk package, with its number of query positions.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FunctionKind {
    /// `decode_q1`: one position.
    Decode,
    /// `verify_qK`: `k` draft positions after the cached ones.
    Verify { k: usize },
    /// Prefill of `n` positions from position 0 (no cache).
    Prefill { n: usize },
    /// A stateful set's function of `t` positions from `current_pos`, KV in the chunk's states:
    /// `infer` (`t = 1`) or `prefill_b<t>`.
    Stateful { t: usize },
}

impl FunctionKind {
    /// The MIL function name.
    pub fn name(&self) -> String {
        match *self {
            FunctionKind::Decode => DECODE_FN.into(),
            FunctionKind::Verify { .. } => VERIFY_FN.into(),
            FunctionKind::Prefill { .. } => PREFILL_FN.into(),
            FunctionKind::Stateful { t: 1 } => INFER_FN.into(),
            FunctionKind::Stateful { t } => format!("{PREFILL_B_PREFIX}{t}"),
        }
    }

    /// The stateful function called `name` (`infer`, `prefill_b<T>`), if it is one.
    pub fn stateful(name: &str) -> Option<FunctionKind> {
        if name == INFER_FN {
            return Some(FunctionKind::Stateful { t: 1 });
        }
        let t: usize = name.strip_prefix(PREFILL_B_PREFIX)?.parse().ok()?;
        (t > 1).then_some(FunctionKind::Stateful { t })
    }

    /// Query positions per call (`S`).
    pub fn positions(&self) -> usize {
        match *self {
            FunctionKind::Decode => 1,
            FunctionKind::Verify { k } => k,
            FunctionKind::Prefill { n } => n,
            FunctionKind::Stateful { t } => t,
        }
    }
}

/// Which functions a build writes: `decode_q1` always, `verify_qK` and prefill packages on request;
/// in stateful sets `infer` always (`decode` in the list) and `prefill_b<T>` on request.
///
/// Written as its canonical text, `decode[,verify:K][,prefill:N][,prefill_b:T1,T2,…]`
/// (`manifest.json`'s `build.functions`, and the value of the CLI's `--functions`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Functions {
    /// `verify_qK` with this K, in every chunk package beside `decode_q1`.
    pub verify: Option<usize>,
    /// Prefill packages `prefill_chunk{i}` (swa4 cut, one `main` function) of N positions.
    pub prefill: Option<usize>,
    /// Stateful sets: one `prefill_b<T>` function per T beside `infer` in every package, largest
    /// first (the engine's order of preference).
    pub prefill_batches: Vec<usize>,
}

/// A function list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionsError {
    #[error("`{part}` needs a positive {what}")]
    BadCount { part: String, what: &'static str },
    #[error("unknown function `{0}` (expected decode, verify:K, prefill:N, prefill_b:T[,T…])")]
    Unknown(String),
    #[error("the list must include `decode`")]
    NoDecode,
    #[error("`{0}` is given more than once")]
    Twice(String),
}

impl Functions {
    /// `decode_q1` only.
    pub fn decode_only() -> Functions {
        Functions::default()
    }

    /// The chunk-package functions of a set of `variant`, the default function first (prefill lives
    /// in its own packages): `decode_q1` [, `verify_qK`], or for a stateful variant `infer`
    /// [, `prefill_b<T>` …].
    pub fn chunk_functions(&self, variant: &Variant) -> Vec<FunctionKind> {
        if variant.is_stateful() {
            let mut v = vec![FunctionKind::Stateful { t: 1 }];
            v.extend(
                self.prefill_batches
                    .iter()
                    .map(|&t| FunctionKind::Stateful { t }),
            );
            return v;
        }
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
        for (i, t) in self.prefill_batches.iter().enumerate() {
            if i == 0 {
                write!(f, ",prefill_b:{t}")?;
            } else {
                write!(f, ",{t}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Functions {
    type Err = FunctionsError;

    /// Parse `decode[,verify:K][,prefill:N][,prefill_b:T1,T2,…]` (any order, blanks and empty
    /// items ignored; a bare number continues the `prefill_b:` list before it).
    fn from_str(s: &str) -> Result<Functions, FunctionsError> {
        let mut f = Functions::default();
        let mut decode = false;
        let mut in_batches = false;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if in_batches && part.bytes().all(|b| b.is_ascii_digit()) {
                let t = part
                    .parse::<usize>()
                    .ok()
                    .filter(|&t| t > 0)
                    .ok_or_else(|| FunctionsError::BadCount {
                        part: part.to_string(),
                        what: "T",
                    })?;
                f.prefill_batches.push(t);
                continue;
            }
            in_batches = false;
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
                "decode" if decode => return Err(FunctionsError::Twice(name.into())),
                "verify" if f.verify.is_some() => return Err(FunctionsError::Twice(name.into())),
                "prefill" if f.prefill.is_some() => {
                    return Err(FunctionsError::Twice(name.into()));
                }
                "decode" => decode = true,
                "verify" => f.verify = Some(num("K")?),
                "prefill" => f.prefill = Some(num("N")?),
                "prefill_b" => {
                    f.prefill_batches.push(num("T")?);
                    in_batches = true;
                }
                other => return Err(FunctionsError::Unknown(other.to_string())),
            }
        }
        f.prefill_batches.sort_unstable_by(|a, b| b.cmp(a));
        f.prefill_batches.dedup();
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
