//! Per-layer resolution: the attention type of every layer, its head dim and KV heads (from
//! `per_layer_config`, else `global_head_dim` / `num_global_key_value_heads` on full layers), its
//! MLP width, and where its K/V come from (KV sharing).

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::{Fields, check_range};
use super::scalars::Scalars;
use super::{KvSource, LayerConfig, LayerType, MAX_COUNT, MAX_HEAD_DIM};
use crate::error::{Error, Result};

/// `layer_types` (default: 5 sliding, 1 full), with the last layer forced to full attention.
pub(super) fn layer_types(f: &Fields<'_>, num_layers: usize) -> Result<Vec<LayerType>> {
    let mut layer_types = match f.get("layer_types") {
        None => (0..num_layers)
            .map(|i| {
                if (i + 1) % 6 == 0 {
                    LayerType::Full
                } else {
                    LayerType::Sliding
                }
            })
            .collect::<Vec<_>>(),
        Some(Value::Array(a)) => {
            if a.len() != num_layers {
                return Err(Error::InvalidField {
                    field: f.path("layer_types"),
                    reason: format!("has {} entries for {num_layers} layers", a.len()),
                });
            }
            let mut out = Vec::with_capacity(a.len());
            for (index, v) in a.iter().enumerate() {
                let s = v.as_str().ok_or_else(|| Error::UnknownLayerType {
                    index,
                    value: v.to_string(),
                })?;
                out.push(LayerType::parse(s).ok_or_else(|| Error::UnknownLayerType {
                    index,
                    value: s.to_string(),
                })?);
            }
            out
        }
        Some(v) => {
            return Err(Error::InvalidField {
                field: f.path("layer_types"),
                reason: format!("must be a list of strings, got {v}"),
            });
        }
    };
    // HF forces the last layer to full attention whatever the config says.
    if let Some(last) = layer_types.last_mut() {
        *last = LayerType::Full;
    }
    Ok(layer_types)
}

/// `(head_dim, kv_heads)` of every layer.
fn head_dims(
    f: &Fields<'_>,
    s: &Scalars,
    layer_types: &[LayerType],
) -> Result<Vec<(usize, usize)>> {
    let (head_dim, num_kv_heads, num_layers, num_heads, attention_k_eq_v) = (
        s.head_dim,
        s.num_kv_heads,
        s.num_layers,
        s.num_heads,
        s.attention_k_eq_v,
    );
    let mut dims: Vec<(usize, usize)> = vec![(head_dim, num_kv_heads); num_layers];
    match f.get("per_layer_config") {
        Some(Value::Object(plc)) => {
            for (key, over) in plc {
                let field = f.path(&format!("per_layer_config.{key}"));
                let idx: usize = key.parse().map_err(|_| Error::InvalidField {
                    field: field.clone(),
                    reason: "key is not a layer index".into(),
                })?;
                if idx >= num_layers {
                    return Err(Error::InvalidField {
                        field,
                        reason: format!("layer {idx} does not exist ({num_layers} layers)"),
                    });
                }
                let over = over.as_object().ok_or_else(|| Error::InvalidField {
                    field: field.clone(),
                    reason: "must be an object".into(),
                })?;
                let prefix = format!("{field}.");
                let of = Fields {
                    obj: over,
                    prefix: &prefix,
                };
                for k in over.keys() {
                    if k != "head_dim" && k != "num_key_value_heads" {
                        return Err(Error::Unsupported {
                            feature: format!("per-layer override `{prefix}{k}`"),
                        });
                    }
                }
                if let Some(v) = of.get("head_dim") {
                    dims[idx].0 = check_range(
                        of.path("head_dim"),
                        of.usize_of("head_dim", v)?,
                        2,
                        MAX_HEAD_DIM,
                    )?;
                }
                if let Some(v) = of.get("num_key_value_heads") {
                    dims[idx].1 = check_range(
                        of.path("num_key_value_heads"),
                        of.usize_of("num_key_value_heads", v)?,
                        1,
                        MAX_COUNT,
                    )?;
                }
            }
        }
        Some(v) => {
            return Err(Error::InvalidField {
                field: f.path("per_layer_config"),
                reason: format!("must be an object, got {v}"),
            });
        }
        None => {
            let global_head_dim = check_range(
                f.path("global_head_dim"),
                f.opt_usize("global_head_dim", 512)?,
                2,
                MAX_HEAD_DIM,
            )?;
            let global_kv = match f.get("num_global_key_value_heads") {
                Some(v) if attention_k_eq_v => Some(check_range(
                    f.path("num_global_key_value_heads"),
                    f.usize_of("num_global_key_value_heads", v)?,
                    1,
                    MAX_COUNT,
                )?),
                _ => None,
            };
            for (i, t) in layer_types.iter().enumerate() {
                if *t == LayerType::Full {
                    dims[i].0 = global_head_dim;
                    if let Some(kv) = global_kv {
                        dims[i].1 = kv;
                    }
                }
            }
        }
    }
    for (i, (d, kv)) in dims.iter().enumerate() {
        if d % 2 != 0 {
            return Err(Error::InvalidField {
                field: f.path(&format!("head_dim (layer {i})")),
                reason: format!("head dim {d} must be even for RoPE"),
            });
        }
        if num_heads % kv != 0 {
            return Err(Error::InvalidField {
                field: f.path(&format!("num_key_value_heads (layer {i})")),
                reason: format!("{kv} KV heads do not divide {num_heads} attention heads"),
            });
        }
    }
    Ok(dims)
}

/// Every layer resolved, and the producer layer of each type.
pub(super) fn resolve(
    f: &Fields<'_>,
    s: &Scalars,
    layer_types: &[LayerType],
) -> Result<(Vec<LayerConfig>, BTreeMap<LayerType, usize>)> {
    let dims = head_dims(f, s, layer_types)?;
    let (num_layers, num_kv_shared_layers, use_double_wide_mlp, intermediate_size) = (
        s.num_layers,
        s.num_kv_shared_layers,
        s.use_double_wide_mlp,
        s.intermediate_size,
    );
    let first_shared = num_layers - num_kv_shared_layers;
    let mut producers = BTreeMap::new();
    for (i, t) in layer_types.iter().enumerate().take(first_shared) {
        producers.insert(*t, i);
    }
    let mut layers = Vec::with_capacity(num_layers);
    for (i, t) in layer_types.iter().enumerate() {
        let kv_source = if i < first_shared {
            KvSource::Own {
                stores: producers.get(t) == Some(&i),
            }
        } else {
            match producers.get(t) {
                Some(&p) => KvSource::Shared { producer: p },
                None => {
                    return Err(Error::InvalidField {
                        field: f.path("num_kv_shared_layers"),
                        reason: format!(
                            "KV-shared layer {i} ({t}) has no producer: no {t} layer before layer {first_shared}"
                        ),
                    });
                }
            }
        };
        let (hd, kv) = dims[i];
        let (phd, pkv) = match kv_source {
            KvSource::Shared { producer } => dims[producer],
            KvSource::Own { .. } => (hd, kv),
        };
        if (phd, pkv) != (hd, kv) {
            return Err(Error::InvalidField {
                field: f.path("per_layer_config"),
                reason: format!(
                    "KV-shared layer {i} (head_dim {hd}, {kv} KV heads) differs from its producer (head_dim {phd}, {pkv} KV heads)"
                ),
            });
        }
        let wide = use_double_wide_mlp && i >= first_shared;
        layers.push(LayerConfig {
            layer_type: *t,
            head_dim: hd,
            num_kv_heads: kv,
            intermediate_size: if wide {
                2 * intermediate_size
            } else {
                intermediate_size
            },
            kv_source,
        });
    }
    Ok((layers, producers))
}
