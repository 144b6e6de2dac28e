//! Numerics choices of the emitted graphs, measured with the fidelity benchmark
//! (`gemma-convert fidelity`, docs/FIDELITY.md). Builds use [`Numerics::default`]; the other forms
//! are kept so a decision can be re-measured (`--numerics` on the build command, hidden from
//! `--help`, recorded in the set's canonical command when not the default).
//!
//! * [`NormGain`]: RMSNorm's gain folded into `layer_norm`'s `gamma` (one fp16 rounding per norm, as
//!   HF rounds once after normalising and scaling in fp32) or multiplied after the norm (a second
//!   rounding).
//! * [`LayerScalar`]: how `x *= layer_scalar` is applied at the end of every layer.
//!   - `multiply`: as HF does, one rounding of the whole residual stream per layer.
//!   - `fold-in-chunk` (default): inside a chunk the stream is carried as `x / c` (`c` the product of the
//!     scalars applied so far in the chunk), so nothing is multiplied: the branch norms' gains are
//!     divided by `c`, the PLE gate weights multiplied by `c`, and the epsilon of the norms that read
//!     the stream divided by `c²` (RMSNorm is scale-invariant up to its epsilon, so this is exact in
//!     real arithmetic). Whenever `c` leaves `[2^−½, 2^½]` the stream is multiplied by the power of
//!     two that brings it back (exact in fp16: no rounding, and the range stays that of `x`). Where
//!     the chunk hands the pre-norm stream on (`hidden_states_out` of every non-head chunk, and of
//!     the head chunk's verify function), one multiply by `c` restores `x`: the chunk's I/O means
//!     what the reference pipeline's means.
//!   - `fold-across-chunks`: the same, never restored; hidden states between chunks carry `x / c`
//!     (chunks can no longer be mixed with the reference pipeline's).
//! * [`Rope`]: how RoPE is applied to q and k.
//!   - `matmul` (default): in single-position functions (decode, the stateful `infer`), `x @ R`
//!     with `R = I·cos + J·sin` built once per attention kind from the host's rows (`I` the
//!     identity, `J` the signed rotate-half permutation, both constants; `R` is exact: each entry
//!     is one of ±cos, ±sin, 0): two non-zero products per output accumulated before one
//!     rounding, where the elementwise form rounds three times. Verify and prefill stay
//!     elementwise (one `R` per position would not fit). Costs two `[D, D]` constants per
//!     attention kind in every package and a `[D, D]` matmul per q and k. Pooled over 800
//!     sequences it moved the mean KL against fp64 from ×0.871 / ×0.993 / ×1.015 of HF fp16's to
//!     ×0.930 / ×0.897 / ×0.955 (tiny-e2b / tiny-gqa / tiny-pal; docs/FIDELITY.md).
//!   - `elementwise`: `x·cos + rotate_half(x)·sin`, three fp16 roundings (as HF).

use serde::Serialize;

/// How RMSNorm's gain is applied.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormGain {
    /// Folded into `layer_norm`'s `gamma`.
    #[default]
    Folded,
    /// A separate multiply after the norm.
    Multiply,
}

/// How `layer_scalar` is applied.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerScalar {
    /// `x *= layer_scalar` at the end of every layer.
    Multiply,
    /// Folded into the norm gains inside a chunk, restored where the stream leaves the chunk.
    #[default]
    FoldInChunk,
    /// Folded into the norm gains everywhere; hidden states between chunks carry `x / c`.
    FoldAcrossChunks,
}

/// How RoPE is applied.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rope {
    /// `x·cos + rotate_half(x)·sin`.
    Elementwise,
    /// `x @ (I·cos + J·sin)` in single-position functions.
    #[default]
    Matmul,
}

/// The numerics choices of a build.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Numerics {
    pub norm_gain: NormGain,
    pub layer_scalar: LayerScalar,
    pub rope: Rope,
}

impl Numerics {
    /// Parse `key=value[,key=value]` with keys `norm-gain` (`folded`, `multiply`),
    /// `layer-scalar` (`multiply`, `fold-in-chunk`, `fold-across-chunks`) and `rope`
    /// (`elementwise`, `matmul`); `default` (or an empty string) is the default. Unset keys keep
    /// their default.
    pub fn parse(s: &str) -> Result<Numerics, String> {
        let mut n = Numerics::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "default" {
                continue;
            }
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("`{part}` is not key=value"));
            };
            match (k.trim(), v.trim()) {
                ("norm-gain", "folded") => n.norm_gain = NormGain::Folded,
                ("norm-gain", "multiply") => n.norm_gain = NormGain::Multiply,
                ("layer-scalar", "multiply") => n.layer_scalar = LayerScalar::Multiply,
                ("layer-scalar", "fold-in-chunk") => n.layer_scalar = LayerScalar::FoldInChunk,
                ("layer-scalar", "fold-across-chunks") => {
                    n.layer_scalar = LayerScalar::FoldAcrossChunks
                }
                ("rope", "elementwise") => n.rope = Rope::Elementwise,
                ("rope", "matmul") => n.rope = Rope::Matmul,
                ("rope", v) => return Err(format!("rope `{v}`: expected elementwise or matmul")),
                ("norm-gain", v) => {
                    return Err(format!("norm-gain `{v}`: expected folded or multiply"));
                }
                ("layer-scalar", v) => {
                    return Err(format!(
                        "layer-scalar `{v}`: expected multiply, fold-in-chunk or fold-across-chunks"
                    ));
                }
                (k, _) => {
                    return Err(format!("unknown key `{k}` (norm-gain, layer-scalar, rope)"));
                }
            }
        }
        Ok(n)
    }

    /// The canonical spelling (every key, `parse` reads it back).
    pub fn name(&self) -> String {
        let g = match self.norm_gain {
            NormGain::Folded => "folded",
            NormGain::Multiply => "multiply",
        };
        let s = match self.layer_scalar {
            LayerScalar::Multiply => "multiply",
            LayerScalar::FoldInChunk => "fold-in-chunk",
            LayerScalar::FoldAcrossChunks => "fold-across-chunks",
        };
        let r = match self.rope {
            Rope::Elementwise => "elementwise",
            Rope::Matmul => "matmul",
        };
        format!("norm-gain={g},layer-scalar={s},rope={r}")
    }

    /// True for the default.
    pub fn is_default(&self) -> bool {
        *self == Numerics::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_every_form() {
        for g in [NormGain::Folded, NormGain::Multiply] {
            for s in [
                LayerScalar::Multiply,
                LayerScalar::FoldInChunk,
                LayerScalar::FoldAcrossChunks,
            ] {
                for rope in [Rope::Elementwise, Rope::Matmul] {
                    let n = Numerics {
                        norm_gain: g,
                        layer_scalar: s,
                        rope,
                    };
                    assert_eq!(Numerics::parse(&n.name()), Ok(n));
                }
            }
        }
        assert_eq!(Numerics::parse(""), Ok(Numerics::default()));
        assert_eq!(Numerics::parse("default"), Ok(Numerics::default()));
        assert_eq!(
            Numerics::parse("norm-gain=multiply").map(|n| n.norm_gain),
            Ok(NormGain::Multiply)
        );
        assert!(
            Numerics::parse("norm-gain=twice")
                .unwrap_err()
                .contains("norm-gain")
        );
        assert!(
            Numerics::parse("gain=folded")
                .unwrap_err()
                .contains("unknown key")
        );
        assert!(Numerics::parse("folded").unwrap_err().contains("key=value"));
    }
}
