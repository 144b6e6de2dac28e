//! RoPE tables per layer type, computed exactly as HF transformers does (fp32 throughout).
//!
//! * `default`: `inv_freq[j] = 1 / θ^(2j/D)`, j = 0..D/2 (the exponent `2j/D` is an f32
//!   division, the power an f32 power, as torch computes it).
//! * `proportional`: the first `n_rot = floor(p·D / 2)` entries as above (exponent still over the
//!   full D), the remaining `D/2 − n_rot` entries 0 (those dims do not rotate); all entries
//!   divided by `factor`.
//!
//! Angles: `f[pos, j] = f32(pos) · inv_freq[j]`; tables are `cos/sin = cat(f, f)` of width D, so
//! dim `j` pairs with `j + D/2` ("rotate_half", NeoX layout):
//! `rope(x) = x·cos + rotate_half(x)·sin`, `rotate_half(x) = cat(−x[D/2:], x[:D/2])`.
//! Attention scaling is 1 for both types. Exporters write these tables as side files; the
//! reference forward uses the same functions.

use std::collections::BTreeMap;

use crate::config::{Gemma4Config, LayerType, RopeParams, RopeType};
use crate::error::{Error, Result};

/// Inverse frequencies (length `head_dim / 2`) for one layer type.
pub fn inv_freq(params: &RopeParams, head_dim: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let dim = head_dim as f32;
    let theta = params.theta as f32;
    let freq = |j: usize| 1.0f32 / theta.powf((2 * j) as f32 / dim);
    match params.rope_type {
        RopeType::Default => (0..half).map(freq).collect(),
        RopeType::Proportional => {
            let n_rot = ((params.partial_rotary_factor * head_dim as f64) / 2.0).floor() as usize;
            let n_rot = n_rot.min(half);
            let factor = params.factor as f32;
            (0..half)
                .map(|j| if j < n_rot { freq(j) / factor } else { 0.0 })
                .collect()
        }
    }
}

/// The RoPE table of one layer type: head dim and inverse frequencies.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeTable {
    /// Layer type the table belongs to.
    pub layer_type: LayerType,
    /// Head dim D of that type.
    pub head_dim: usize,
    /// `D/2` inverse frequencies.
    pub inv_freq: Vec<f32>,
}

impl RopeTable {
    /// Table for layer type `t` of `cfg`.
    pub fn new(cfg: &Gemma4Config, t: LayerType) -> Result<RopeTable> {
        let params = cfg.rope(t).ok_or_else(|| Error::MissingField {
            field: format!("rope_parameters.{}", t.as_str()),
        })?;
        let head_dim = cfg.head_dim_of_type(t).ok_or_else(|| Error::BadInput {
            reason: format!("the model has no {t} layer"),
        })?;
        Ok(RopeTable {
            layer_type: t,
            head_dim,
            inv_freq: inv_freq(params, head_dim),
        })
    }

    /// `(cos, sin)` for positions `start..start+len`, each row-major `[len, head_dim]`.
    pub fn cos_sin(&self, start: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
        let d = self.head_dim;
        let half = d / 2;
        let mut cos = vec![0f32; len * d];
        let mut sin = vec![0f32; len * d];
        for r in 0..len {
            let pos = (start + r) as f32;
            for (j, f) in self.inv_freq.iter().enumerate() {
                let a = pos * f;
                let (s, c) = a.sin_cos();
                cos[r * d + j] = c;
                cos[r * d + j + half] = c;
                sin[r * d + j] = s;
                sin[r * d + j + half] = s;
            }
        }
        (cos, sin)
    }
}

/// Tables for every layer type of the model.
pub fn tables(cfg: &Gemma4Config) -> Result<BTreeMap<LayerType, RopeTable>> {
    cfg.layer_types_present()
        .into_iter()
        .map(|t| Ok((t, RopeTable::new(cfg, t)?)))
        .collect()
}
