//! Which weights to palettize: coremltools' defaults, with a typed, serialisable reason for every
//! weight left uncompressed.
//!
//! coremltools (`OpPalettizerConfig`, spec §5.1) palettizes a const iff its element count is
//! **strictly greater** than `weight_threshold` (default 2048), its rank is ≥ 2 (rank ≤ 1 consts —
//! biases, norm gains — are skipped) and the output-channel dim is divisible by `group_size`
//! (else "skipped with a warning"). [`decide`] applies the same rules in this order: too small,
//! rank too low, channels not divisible. Callers add their own exclusions by name
//! ([`Policy::exclude`], substring match) through [`decide_named`].
//!
//! Records are meant for the chunk-set manifest: [`TensorRecord`] serialises (serde, e.g. JSON) as
//! `{"name": …, "shape": […], "outcome": {"kind": "kept", "reason": "too_small", "elements": 1536,
//! "threshold": 2048}}` and prints as a one-line human-readable sentence via `Display`.

use crate::lut::{LutConfig, Palettized};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Eligibility rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Palettize only tensors with strictly more elements than this (coremltools: 2048).
    pub weight_threshold: usize,
    /// Minimum rank (coremltools: 2).
    pub min_rank: usize,
    /// Tensor-name substrings the caller wants left uncompressed.
    pub exclude: Vec<String>,
}

impl Default for Policy {
    /// coremltools' defaults, no exclusions.
    fn default() -> Self {
        Policy {
            weight_threshold: 2048,
            min_rank: 2,
            exclude: Vec::new(),
        }
    }
}

/// Why a weight stays uncompressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum KeepReason {
    /// Element count not above the threshold.
    TooSmall {
        /// Elements in the tensor.
        elements: usize,
        /// The policy threshold (strictly greater is required).
        threshold: usize,
    },
    /// Rank below the minimum (biases, norm gains, scalars).
    RankTooLow {
        /// Tensor rank.
        rank: usize,
        /// Minimum rank of the policy.
        min_rank: usize,
    },
    /// Output-channel dim not divisible by the group size.
    ChannelsNotDivisible {
        /// Size of axis 0.
        channels: usize,
        /// Requested output channels per LUT.
        group_size: usize,
    },
    /// Excluded by the caller (name matched an exclusion rule).
    Excluded {
        /// The matching rule.
        rule: String,
    },
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::TooSmall {
                elements,
                threshold,
            } => write!(
                f,
                "too small ({elements} elements, needs more than {threshold})"
            ),
            KeepReason::RankTooLow { rank, min_rank } => {
                write!(f, "rank {rank} below minimum {min_rank}")
            }
            KeepReason::ChannelsNotDivisible {
                channels,
                group_size,
            } => write!(
                f,
                "output-channel dim {channels} not divisible by group size {group_size}"
            ),
            KeepReason::Excluded { rule } => write!(f, "excluded by rule {rule:?}"),
        }
    }
}

/// Outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Palettize with the given config.
    Palettize,
    /// Keep the weight as is.
    Keep(KeepReason),
}

/// Shape-based decision (coremltools' rules, see the module docs).
pub fn decide(shape: &[usize], cfg: &LutConfig, policy: &Policy) -> Decision {
    let elements = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX);
    if elements <= policy.weight_threshold {
        return Decision::Keep(KeepReason::TooSmall {
            elements,
            threshold: policy.weight_threshold,
        });
    }
    if shape.len() < policy.min_rank.max(1) {
        return Decision::Keep(KeepReason::RankTooLow {
            rank: shape.len(),
            min_rank: policy.min_rank,
        });
    }
    let channels = shape[0];
    let gs = cfg.effective_group_size(channels);
    if gs == 0 || !channels.is_multiple_of(gs) {
        return Decision::Keep(KeepReason::ChannelsNotDivisible {
            channels,
            group_size: cfg.group_size,
        });
    }
    Decision::Palettize
}

/// [`decide`] preceded by the caller's name exclusions ([`Policy::exclude`], first match wins).
pub fn decide_named(name: &str, shape: &[usize], cfg: &LutConfig, policy: &Policy) -> Decision {
    if let Some(rule) = policy.exclude.iter().find(|r| name.contains(r.as_str())) {
        return Decision::Keep(KeepReason::Excluded { rule: rule.clone() });
    }
    decide(shape, cfg, policy)
}

/// What happened to one tensor (for manifests and logs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Palettized; summary metrics.
    Palettized {
        /// Bits per index.
        nbits: u8,
        /// Output channels per LUT.
        group_size: usize,
        /// Number of LUTs.
        groups: usize,
        /// Mean squared error against the fp16 weight.
        mse: f64,
        /// SQNR in dB (`None` if lossless).
        sqnr_db: Option<f64>,
        /// Largest absolute error.
        max_abs_error: f64,
    },
    /// Left uncompressed.
    Kept {
        /// Why.
        #[serde(flatten)]
        reason: KeepReason,
    },
}

/// One manifest line: tensor name, shape and outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorRecord {
    /// Tensor name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// What was done.
    pub outcome: Outcome,
}

impl TensorRecord {
    /// Record of a palettized tensor.
    pub fn palettized(name: &str, p: &Palettized) -> Self {
        let sqnr = p.stats.sqnr_db();
        TensorRecord {
            name: name.to_owned(),
            shape: p.shape.clone(),
            outcome: Outcome::Palettized {
                nbits: p.nbits,
                group_size: p.group_size,
                groups: p.num_groups(),
                mse: p.stats.mse(),
                sqnr_db: sqnr.is_finite().then_some(sqnr),
                max_abs_error: p.stats.max_abs_error,
            },
        }
    }

    /// Record of a tensor left uncompressed.
    pub fn kept(name: &str, shape: &[usize], reason: KeepReason) -> Self {
        TensorRecord {
            name: name.to_owned(),
            shape: shape.to_vec(),
            outcome: Outcome::Kept { reason },
        }
    }
}

impl fmt::Display for TensorRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: ", self.name, self.shape)?;
        match &self.outcome {
            Outcome::Palettized {
                nbits,
                group_size,
                groups,
                mse,
                sqnr_db,
                ..
            } => {
                write!(
                    f,
                    "palettized {nbits}-bit, {groups} LUT(s) of {group_size} channels, MSE {mse:.3e}"
                )?;
                match sqnr_db {
                    Some(db) => write!(f, ", SQNR {db:.2} dB"),
                    None => write!(f, ", lossless"),
                }
            }
            Outcome::Kept { reason } => write!(f, "kept: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coremltools_rules() {
        let cfg = LutConfig::new(4, 32);
        let p = Policy::default();
        assert_eq!(decide(&[2048, 1536], &cfg, &p), Decision::Palettize);
        assert_eq!(
            decide(&[64, 32], &cfg, &p),
            Decision::Keep(KeepReason::TooSmall {
                elements: 2048,
                threshold: 2048
            })
        );
        assert_eq!(decide(&[64, 33], &cfg, &p), Decision::Palettize);
        assert_eq!(
            decide(&[4096], &cfg, &p),
            Decision::Keep(KeepReason::RankTooLow {
                rank: 1,
                min_rank: 2
            })
        );
        assert_eq!(
            decide(&[100, 64], &cfg, &p),
            Decision::Keep(KeepReason::ChannelsNotDivisible {
                channels: 100,
                group_size: 32
            })
        );
        // Group covering all channels means per-tensor: always divisible.
        assert_eq!(
            decide(&[100, 64], &LutConfig::new(4, 0), &p),
            Decision::Palettize
        );
        assert_eq!(
            decide(&[20, 200], &LutConfig::new(4, 32), &p),
            Decision::Palettize
        );
        assert_eq!(decide(&[64, 64, 1, 1], &cfg, &p), Decision::Palettize);
    }

    #[test]
    fn palettized_record() {
        let w: Vec<half::f16> = (0..64 * 64)
            .map(|i| half::f16::from_f32(((i * 37) % 101) as f32 / 100.0))
            .collect();
        let p = crate::palettize_f16("w", &w, &[64, 64], &LutConfig::new(4, 32), None).unwrap();
        let rec = TensorRecord::palettized("w", &p);
        let Outcome::Palettized {
            groups,
            sqnr_db,
            mse,
            ..
        } = rec.outcome
        else {
            panic!("expected palettized")
        };
        assert_eq!(groups, 2);
        assert!(mse > 0.0 && sqnr_db.is_some_and(|d| d > 20.0));
        let text = rec.to_string();
        assert!(
            text.starts_with("w [64, 64]: palettized 4-bit, 2 LUT(s) of 32 channels, MSE "),
            "{text}"
        );
        let json = serde_json::to_string(&rec).unwrap();
        assert!(
            json.contains(r#""kind":"palettized","nbits":4,"group_size":32,"groups":2"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<TensorRecord>(&json).unwrap(), rec);
    }

    #[test]
    fn exclusions_and_records_serialise() {
        let cfg = LutConfig::default();
        let p = Policy {
            exclude: vec!["embed_tokens".into()],
            ..Policy::default()
        };
        let d = decide_named("model.embed_tokens.weight", &[262144, 1536], &cfg, &p);
        let Decision::Keep(reason) = d else {
            panic!("expected Keep, got {d:?}")
        };
        assert_eq!(reason.to_string(), "excluded by rule \"embed_tokens\"");
        let rec = TensorRecord::kept("model.embed_tokens.weight", &[262144, 1536], reason);
        let json = serde_json::to_string(&rec).unwrap();
        assert_eq!(
            json,
            r#"{"name":"model.embed_tokens.weight","shape":[262144,1536],"outcome":{"kind":"kept","reason":"excluded","rule":"embed_tokens"}}"#
        );
        let back: TensorRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
        let small = TensorRecord::kept(
            "n.weight",
            &[1536],
            KeepReason::TooSmall {
                elements: 1536,
                threshold: 2048,
            },
        );
        assert_eq!(
            small.to_string(),
            "n.weight [1536]: kept: too small (1536 elements, needs more than 2048)"
        );
        let json = serde_json::to_value(&small).unwrap();
        assert_eq!(json["outcome"]["reason"], "too_small");
        assert_eq!(json["outcome"]["elements"], 1536);
        let d = decide(&[100, 64], &cfg, &Policy::default());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            r#"{"decision":"keep","reason":"channels_not_divisible","channels":100,"group_size":32}"#
        );
        assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), d);
        assert_eq!(
            serde_json::to_string(&Decision::Palettize).unwrap(),
            r#"{"decision":"palettize"}"#
        );
    }
}
