//! RoPE parameters per layer type (`rope_parameters.{sliding_attention,full_attention}`), with HF's
//! defaults when the object is absent; only `default` and `proportional` are implemented.

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::Fields;
use super::{LayerType, RopeParams, RopeType};
use crate::error::{Error, Result};

/// Parameters of every layer type that occurs in `layer_types`.
pub(super) fn rope_params(
    f: &Fields<'_>,
    layer_types: &[LayerType],
) -> Result<BTreeMap<LayerType, RopeParams>> {
    let rope_obj = match f.get("rope_parameters") {
        None => None,
        Some(Value::Object(m)) => Some(m),
        Some(v) => {
            return Err(Error::InvalidField {
                field: f.path("rope_parameters"),
                reason: format!("must be an object keyed by layer type, got {v}"),
            });
        }
    };
    let mut rope = BTreeMap::new();
    for t in [LayerType::Sliding, LayerType::Full] {
        if !layer_types.contains(&t) {
            continue;
        }
        let params = match rope_obj {
            None => default_rope(t),
            Some(m) => {
                let field = f.path(&format!("rope_parameters.{}", t.as_str()));
                let entry = match m.get(t.as_str()) {
                    Some(Value::Object(e)) => e,
                    Some(v) if !v.is_null() => {
                        return Err(Error::InvalidField {
                            field,
                            reason: format!("must be an object, got {v}"),
                        });
                    }
                    _ => return Err(Error::MissingField { field }),
                };
                let prefix = format!("{field}.");
                parse_rope(&Fields {
                    obj: entry,
                    prefix: &prefix,
                })?
            }
        };
        rope.insert(t, params);
    }
    Ok(rope)
}

/// HF's defaults when `rope_parameters` is absent.
fn default_rope(t: LayerType) -> RopeParams {
    match t {
        LayerType::Sliding => RopeParams {
            rope_type: RopeType::Default,
            theta: 10_000.0,
            partial_rotary_factor: 1.0,
            factor: 1.0,
        },
        LayerType::Full => RopeParams {
            rope_type: RopeType::Proportional,
            theta: 1_000_000.0,
            partial_rotary_factor: 0.25,
            factor: 1.0,
        },
    }
}

/// One `rope_parameters.<type>` entry.
fn parse_rope(f: &Fields<'_>) -> Result<RopeParams> {
    let rope_type = match f.opt_str("rope_type")?.unwrap_or("default") {
        "default" => RopeType::Default,
        "proportional" => RopeType::Proportional,
        other => {
            return Err(Error::Unsupported {
                feature: format!(
                    "{} = {other:?} (only default and proportional)",
                    f.path("rope_type")
                ),
            });
        }
    };
    let theta = f.opt_f64("rope_theta")?.unwrap_or(10_000.0);
    if theta <= 1.0 {
        return Err(Error::InvalidField {
            field: f.path("rope_theta"),
            reason: format!("must be greater than 1, got {theta}"),
        });
    }
    let partial_rotary_factor = f.opt_f64("partial_rotary_factor")?.unwrap_or(1.0);
    if !(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0) {
        return Err(Error::InvalidField {
            field: f.path("partial_rotary_factor"),
            reason: format!("must be in (0, 1], got {partial_rotary_factor}"),
        });
    }
    let factor = f.opt_f64("factor")?.unwrap_or(1.0);
    if factor <= 0.0 {
        return Err(Error::InvalidField {
            field: f.path("factor"),
            reason: format!("must be positive, got {factor}"),
        });
    }
    Ok(RopeParams {
        rope_type,
        theta,
        partial_rotary_factor,
        factor,
    })
}
