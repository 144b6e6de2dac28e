//! Build choices that change a set's graphs but not its numerics contract: the op forms where our
//! graphs may be spelled like the reference pipeline's device-proven graphs or leaner
//! ([`GraphForms`]), and the optional outputs the Swift runtime reads when present ([`Taps`]).
//! Both are recorded in `manifest.json`'s `build` when not the default (older manifests read as
//! the default).
//!
//! | choice | values (default first) | the reference pipeline's form | why the default |
//! |---|---|---|---|
//! | [`SoftmaxForm`] | `decomposed`, `native` | decomposed (`reduce_max`, `sub`, `exp`, `reduce_sum`, `real_div`; `conversion/ane_ops.py::ane_softmax`) | its notes say the native op was rejected on the ANE by earlier iOS/chip combinations and was only measured working (zero speed delta) with coremltools 9 on iOS 26 / macOS (`docs/NATIVE_SOFTMAX_PROBE.md`, `docs/SDPA_FUSION_PROBE.md`: "real risk of ANE fallback on the native softmax"); our packages target iOS 18 |
//! | [`GqaForm`] | `reshape`, `repeat` | K/V heads repeated (`repeat_interleave`, `_run_layer_swa`) | no note reports our reshape of the query heads onto the key rows failing; the rejected PR #17 form was a 5-D broadcast matmul (`docs/PRIORITY_ROADMAP.md`), not this one |
//! | [`LayoutForm`] | `reshape`, `transpose` | `permute` + `unsqueeze` around every 1×1 conv and head split | no note reports reshapes failing; the single-position layout changes are pure reshapes |
//!
//! [`Taps`]: `eagle3` adds the hidden states the runtime's EAGLE-3 path reads
//! (`hidden_at_L{l}` `[1, 1, H]`, outputs of the decode function of the chunk holding layer `l`, for
//! `l` in [`eagle3_layers`]); `verify-logits` adds `logits_fp16` `[1, K, V]` (fp16) to the verify
//! function of the head chunk (read by `ChunkedEngine.verifyCandidatesWithLogits`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A form or tap spelling that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormsError {
    #[error("`{part}` is not key=value (keys: softmax, gqa, layout)")]
    NotKeyValue { part: String },
    #[error("unknown key `{0}` (softmax, gqa, layout)")]
    UnknownKey(String),
    #[error("{key} `{value}`: expected {expected}")]
    BadValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("unknown tap `{0}` (eagle3, verify-logits)")]
    UnknownTap(String),
}

macro_rules! form_enum {
    ($(#[$m:meta])* $name:ident, $key:literal, $expected:literal, { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $v,)+
        }

        impl $name {
            /// Every value, the default first.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// The spelling (`--` flag value and manifest text).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = FormsError;

            fn from_str(s: &str) -> Result<$name, FormsError> {
                match s.trim() {
                    $($s => Ok($name::$v),)+
                    other => Err(FormsError::BadValue {
                        key: $key,
                        value: other.to_string(),
                        expected: $expected,
                    }),
                }
            }
        }
    };
}

form_enum!(
    /// How attention probabilities are computed.
    SoftmaxForm, "softmax", "decomposed or native", {
        /// `reduce_max`, `sub`, `exp`, `reduce_sum`, `real_div` (the reference pipeline's form).
        Decomposed = "decomposed",
        /// One `softmax` op.
        Native = "native",
    }
);

form_enum!(
    /// How grouped-query attention meets the shared K/V heads.
    GqaForm, "gqa", "reshape or repeat", {
        /// The `n_rep` query heads of a K/V head are viewed as extra query rows
        /// (`[1, kv, n_rep·S, D]`), one matmul per K/V head, nothing repeated.
        Reshape = "reshape",
        /// K and V are repeated `n_rep` times along the head axis (`tile`; the reference
        /// pipeline's `repeat_interleave`), one matmul per query head.
        Repeat = "repeat",
    }
);

form_enum!(
    /// How single-position activations change layout around the 1×1 convs and the head split.
    LayoutForm, "layout", "reshape or transpose", {
        /// `reshape` only (for one position a transpose only moves a unit axis).
        Reshape = "reshape",
        /// `transpose` + `expand_dims` / `squeeze` + `transpose` and reshape + transpose for the
        /// heads, as the reference pipeline's `permute` / `unsqueeze` / `squeeze` convert.
        Transpose = "transpose",
    }
);

/// The op forms of a build.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct GraphForms {
    pub softmax: SoftmaxForm,
    pub gqa: GqaForm,
    pub layout: LayoutForm,
}

impl Default for GraphForms {
    fn default() -> GraphForms {
        GraphForms {
            softmax: SoftmaxForm::Decomposed,
            gqa: GqaForm::Reshape,
            layout: LayoutForm::Reshape,
        }
    }
}

impl GraphForms {
    /// Every form as the reference pipeline's device-proven graphs spell it.
    pub fn reference() -> GraphForms {
        GraphForms {
            softmax: SoftmaxForm::Decomposed,
            gqa: GqaForm::Repeat,
            layout: LayoutForm::Transpose,
        }
    }

    /// The leanest graphs (fewest ops).
    pub fn lean() -> GraphForms {
        GraphForms {
            softmax: SoftmaxForm::Native,
            gqa: GqaForm::Reshape,
            layout: LayoutForm::Reshape,
        }
    }

    /// True for the default forms.
    pub fn is_default(&self) -> bool {
        *self == GraphForms::default()
    }
}

impl fmt::Display for GraphForms {
    /// `softmax=…,gqa=…,layout=…` (every key).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "softmax={},gqa={},layout={}",
            self.softmax, self.gqa, self.layout
        )
    }
}

impl FromStr for GraphForms {
    type Err = FormsError;

    /// `key=value[,key=value]` (keys `softmax`, `gqa`, `layout`; unset keys keep their default;
    /// `default`, `reference` and `lean` name the whole sets).
    fn from_str(s: &str) -> Result<GraphForms, FormsError> {
        let mut g = GraphForms::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "default" => continue,
                "reference" => {
                    g = GraphForms::reference();
                    continue;
                }
                "lean" => {
                    g = GraphForms::lean();
                    continue;
                }
                _ => {}
            }
            let Some((k, v)) = part.split_once('=') else {
                return Err(FormsError::NotKeyValue {
                    part: part.to_string(),
                });
            };
            match k.trim() {
                "softmax" => g.softmax = v.parse()?,
                "gqa" => g.gqa = v.parse()?,
                "layout" => g.layout = v.parse()?,
                other => return Err(FormsError::UnknownKey(other.to_string())),
            }
        }
        Ok(g)
    }
}

impl Serialize for GraphForms {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GraphForms {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<GraphForms, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Optional outputs the Swift runtime reads when a chunk has them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Taps {
    /// `hidden_at_L{l}` `[1, 1, H]` from the decode function of the chunk holding layer `l`, for
    /// each `l` of [`eagle3_layers`] (the EAGLE-3 draft's fusion inputs).
    pub eagle3: bool,
    /// `logits_fp16` `[1, K, V]` fp16 (the softcapped logits of every position) from the verify
    /// function of the head chunk.
    pub verify_logits: bool,
}

impl Taps {
    /// No optional output.
    pub fn none() -> Taps {
        Taps::default()
    }

    /// True if no optional output is requested.
    pub fn is_none(&self) -> bool {
        *self == Taps::default()
    }
}

impl fmt::Display for Taps {
    /// `eagle3,verify-logits`, `eagle3`, `verify-logits` or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [
            (self.eagle3, "eagle3"),
            (self.verify_logits, "verify-logits"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

impl FromStr for Taps {
    type Err = FormsError;

    /// A comma-separated list of `eagle3`, `verify-logits` (or `none`).
    fn from_str(s: &str) -> Result<Taps, FormsError> {
        let mut t = Taps::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "none" => {}
                "eagle3" => t.eagle3 = true,
                "verify-logits" => t.verify_logits = true,
                other => return Err(FormsError::UnknownTap(other.to_string())),
            }
        }
        Ok(t)
    }
}

impl Serialize for Taps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Taps {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Taps, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The EAGLE-3 fusion layers of a decoder of `num_layers` layers: low / mid / high =
/// `⌊L/4⌋, ⌊L/2⌋, L − 1` ("roughly quartile-spaced", the reference's
/// `conversion/diagnose_fusion_layers.py`), which is the reference's `[8, 17, 34]` for E2B's 35
/// layers (`conversion/build_eagle3_chunks.py::FUSION_LAYERS`, `eagle3_config.json`).
pub fn eagle3_layers(num_layers: usize) -> [usize; 3] {
    let l = num_layers.max(1);
    [l / 4, l / 2, l - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_round_trip_and_name_their_errors() {
        for &softmax in SoftmaxForm::ALL {
            for &gqa in GqaForm::ALL {
                for &layout in LayoutForm::ALL {
                    let g = GraphForms {
                        softmax,
                        gqa,
                        layout,
                    };
                    assert_eq!(g.to_string().parse::<GraphForms>(), Ok(g));
                }
            }
        }
        assert_eq!("".parse(), Ok(GraphForms::default()));
        assert_eq!("reference".parse(), Ok(GraphForms::reference()));
        assert_eq!(
            "lean,gqa=repeat".parse::<GraphForms>().map(|g| g.gqa),
            Ok(GqaForm::Repeat)
        );
        assert!(
            "softmax=fast"
                .parse::<GraphForms>()
                .unwrap_err()
                .to_string()
                .contains("decomposed or native")
        );
        assert!(matches!(
            "heads=2".parse::<GraphForms>(),
            Err(FormsError::UnknownKey(_))
        ));
        assert!(matches!(
            "native".parse::<GraphForms>(),
            Err(FormsError::NotKeyValue { .. })
        ));
    }

    #[test]
    fn taps_round_trip() {
        for (eagle3, verify_logits) in [(false, false), (true, false), (false, true), (true, true)]
        {
            let t = Taps {
                eagle3,
                verify_logits,
            };
            assert_eq!(t.to_string().parse::<Taps>(), Ok(t));
        }
        assert!("eagle2".parse::<Taps>().is_err());
    }

    #[test]
    fn eagle3_layers_are_the_references_on_e2b() {
        assert_eq!(eagle3_layers(35), [8, 17, 34]);
        assert_eq!(eagle3_layers(42), [10, 21, 41]);
        assert_eq!(eagle3_layers(10), [2, 5, 9]);
    }
}
