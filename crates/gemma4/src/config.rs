//! Gemma 4 text config: parse, resolve per layer, validate.
//!
//! Accepts both serialisations found in the wild (spec/gemma4-text.md §1):
//! * flat `Gemma4TextConfig` (`model_type: "gemma4_text"`, what `Gemma4ForCausalLM` saves), and
//! * nested `Gemma4Config` (`model_type: "gemma4"`) with the text part under `text_config`.
//!
//! Per-layer head dims / KV heads come from, in order: `per_layer_config` (string keys, possibly
//! zero-padded, as transformers ≥ 5.2x writes it), else for full-attention layers
//! `global_head_dim` (default 512, as HF) and — only when `attention_k_eq_v` — a non-null
//! `num_global_key_value_heads`, else the global `head_dim` / `num_key_value_heads`.
//! `layer_types` defaults to "5 sliding, 1 full"; the last layer is always forced to full
//! attention. KV sharing: the last `num_kv_shared_layers` layers reuse the KV of the last
//! non-shared layer of the same type (its "producer"); the double-wide MLP applies exactly to
//! those consumer layers.
//!
//! Not covered (rejected with [`Error::Unsupported`]): MoE blocks, attention biases,
//! `use_bidirectional_attention = "all"`, activations other than tanh-GELU, RoPE types other
//! than `default` and `proportional`, `per_layer_config` overrides other than `head_dim` and
//! `num_key_value_heads`.
//!
//! The raw JSON stays available ([`Gemma4Config::raw`]) so exporters can copy fields verbatim.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Largest vocabulary accepted (rows of the embedding tables).
pub const MAX_VOCAB: usize = 1 << 24;
/// Largest hidden / PLE / intermediate width accepted.
pub const MAX_WIDTH: usize = 1 << 20;
/// Largest number of layers or heads accepted.
pub const MAX_COUNT: usize = 4096;
/// Largest head dim accepted.
pub const MAX_HEAD_DIM: usize = 1 << 14;
/// Largest element count of any single tensor implied by the config.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 36;
/// Largest total parameter count implied by the config.
pub const MAX_TOTAL_ELEMENTS: u64 = 1 << 40;

/// Attention type of a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayerType {
    /// Local attention over the last `sliding_window` positions (including the current one).
    Sliding,
    /// Global causal attention over the whole context.
    Full,
}

impl LayerType {
    /// The string used in `layer_types` and `rope_parameters`.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerType::Sliding => "sliding_attention",
            LayerType::Full => "full_attention",
        }
    }

    /// Parse a `layer_types` entry.
    pub fn parse(s: &str) -> Option<LayerType> {
        match s {
            "sliding_attention" => Some(LayerType::Sliding),
            "full_attention" => Some(LayerType::Full),
            _ => None,
        }
    }
}

impl std::fmt::Display for LayerType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RoPE flavour of a layer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeType {
    /// Every dimension pair rotates: `inv_freq[j] = θ^(−2j/D)`.
    Default,
    /// Only the first `int(p·D // 2)` pairs rotate (exponent still over the full D); the rest
    /// get frequency 0. All frequencies are divided by `factor`.
    Proportional,
}

/// RoPE parameters of one layer type.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeParams {
    /// Flavour.
    pub rope_type: RopeType,
    /// Base θ.
    pub theta: f64,
    /// Fraction of the head dim that rotates (proportional only; `default` ignores it, as HF).
    pub partial_rotary_factor: f64,
    /// Frequency divisor (proportional only; `default` ignores it, as HF).
    pub factor: f64,
}

/// Where a layer's attention keys/values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvSource {
    /// The layer projects its own K/V and keeps a cache. `stores` is true for the last
    /// non-shared layer of its type (it publishes its K/V of the step to the consumers).
    Own {
        /// Whether this layer is the producer of its type.
        stores: bool,
    },
    /// KV-shared consumer: attends over `producer`'s K/V of the same step.
    Shared {
        /// Index of the producing layer.
        producer: usize,
    },
}

/// Resolved per-layer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerConfig {
    /// Attention type.
    pub layer_type: LayerType,
    /// Head dim D_i (queries, keys and values).
    pub head_dim: usize,
    /// KV heads kv_i.
    pub num_kv_heads: usize,
    /// MLP width I_i (2·I on consumers when `use_double_wide_mlp`).
    pub intermediate_size: usize,
    /// Own K/V or shared from a producer.
    pub kv_source: KvSource,
}

/// A validated Gemma 4 text-decoder configuration.
#[derive(Debug, Clone)]
pub struct Gemma4Config {
    raw: Value,
    nested: bool,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    rms_norm_eps: f64,
    sliding_window: usize,
    final_logit_softcapping: Option<f64>,
    vocab_size_per_layer_input: usize,
    hidden_size_per_layer_input: usize,
    num_kv_shared_layers: usize,
    use_double_wide_mlp: bool,
    attention_k_eq_v: bool,
    tie_word_embeddings: bool,
    max_position_embeddings: usize,
    bos_token_id: Option<u32>,
    eos_token_ids: Vec<u32>,
    pad_token_id: Option<u32>,
    layers: Vec<LayerConfig>,
    rope: BTreeMap<LayerType, RopeParams>,
    producers: BTreeMap<LayerType, usize>,
}

/// Typed access to one JSON object with dotted field names in errors.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    fn path(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// The value, treating JSON null as absent.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    fn usize_of(&self, name: &str, v: &Value) -> Result<usize> {
        let invalid = |reason: String| Error::InvalidField {
            field: self.path(name),
            reason,
        };
        if let Some(u) = v.as_u64() {
            return usize::try_from(u).map_err(|_| invalid(format!("{u} does not fit in usize")));
        }
        if let Some(i) = v.as_i64() {
            return Err(invalid(format!("must not be negative, got {i}")));
        }
        if let Some(f) = v.as_f64() {
            // JSON writers sometimes emit integral floats (e.g. 64.0).
            if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= 9.0e15 {
                return Ok(f as usize);
            }
            return Err(invalid(format!("must be a non-negative integer, got {f}")));
        }
        Err(invalid(format!("must be an integer, got {v}")))
    }

    fn req_usize(&self, name: &str) -> Result<usize> {
        match self.get(name) {
            Some(v) => self.usize_of(name, v),
            None => Err(Error::MissingField {
                field: self.path(name),
            }),
        }
    }

    fn opt_usize(&self, name: &str, default: usize) -> Result<usize> {
        match self.get(name) {
            Some(v) => self.usize_of(name, v),
            None => Ok(default),
        }
    }

    fn opt_f64(&self, name: &str) -> Result<Option<f64>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f)),
                _ => Err(Error::InvalidField {
                    field: self.path(name),
                    reason: format!("must be a finite number, got {v}"),
                }),
            },
        }
    }

    fn opt_bool(&self, name: &str, default: bool) -> Result<bool> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(Error::InvalidField {
                field: self.path(name),
                reason: format!("must be true or false, got {v}"),
            }),
        }
    }

    fn opt_str(&self, name: &str) -> Result<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(Error::InvalidField {
                field: self.path(name),
                reason: format!("must be a string, got {v}"),
            }),
        }
    }

    fn opt_token(&self, name: &str, default: Option<u32>) -> Result<Option<u32>> {
        if !self.obj.contains_key(name) {
            return Ok(default);
        }
        match self.get(name) {
            None => Ok(None),
            Some(v) => Ok(Some(self.token_of(name, v)?)),
        }
    }

    fn token_of(&self, name: &str, v: &Value) -> Result<u32> {
        let u = self.usize_of(name, v)?;
        u32::try_from(u).map_err(|_| Error::InvalidField {
            field: self.path(name),
            reason: format!("token id {u} does not fit in u32"),
        })
    }
}

fn check_range(field: String, value: usize, min: usize, max: usize) -> Result<usize> {
    if value < min {
        return Err(Error::InvalidField {
            field,
            reason: format!("must be at least {min}, got {value}"),
        });
    }
    if value > max {
        return Err(Error::InvalidField {
            field,
            reason: format!("{value} is absurdly large (limit {max})"),
        });
    }
    Ok(value)
}

impl Gemma4Config {
    /// Read and validate `config.json` (either serialisation).
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::st::require_regular_file(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_value(raw)
    }

    /// Validate a parsed `config.json` value (either serialisation).
    pub fn from_value(raw: Value) -> Result<Self> {
        let top = raw.as_object().ok_or_else(|| Error::InvalidField {
            field: "<root>".into(),
            reason: "config.json must be a JSON object".into(),
        })?;
        let top_fields = Fields {
            obj: top,
            prefix: "",
        };
        let model_type = top_fields.opt_str("model_type")?;
        let nested = match top.get("text_config") {
            Some(Value::Object(_)) => true,
            Some(Value::Null) | None => false,
            Some(v) => {
                return Err(Error::InvalidField {
                    field: "text_config".into(),
                    reason: format!("must be an object, got {v}"),
                });
            }
        };
        match (model_type, nested) {
            (None, _) | (Some("gemma4_text"), false) | (Some("gemma4"), true) => {}
            (Some("gemma4"), false) => {
                return Err(Error::MissingField {
                    field: "text_config".into(),
                });
            }
            (Some(other), _) => {
                return Err(Error::InvalidField {
                    field: "model_type".into(),
                    reason: format!(
                        "{other:?} is not a Gemma 4 model (expected \"gemma4_text\" or \"gemma4\")"
                    ),
                });
            }
        }
        let (obj, prefix) = if nested {
            match top.get("text_config") {
                Some(Value::Object(m)) => (m, "text_config."),
                _ => {
                    return Err(Error::MissingField {
                        field: "text_config".into(),
                    });
                }
            }
        } else {
            (top, "")
        };
        let f = Fields { obj, prefix };
        if nested
            && let Some(mt) = f.opt_str("model_type")?
            && mt != "gemma4_text"
        {
            return Err(Error::InvalidField {
                field: f.path("model_type"),
                reason: format!("{mt:?} is not \"gemma4_text\""),
            });
        }
        Self::parse_text(raw.clone(), nested, &f, &top_fields)
    }

    fn parse_text(raw: Value, nested: bool, f: &Fields<'_>, top: &Fields<'_>) -> Result<Self> {
        // --- features we do not implement -----------------------------------------------
        if f.opt_bool("enable_moe_block", false)? {
            return Err(Error::Unsupported {
                feature: format!("{} = true (MoE blocks)", f.path("enable_moe_block")),
            });
        }
        if f.opt_bool("attention_bias", false)? {
            return Err(Error::Unsupported {
                feature: format!("{} = true (attention biases)", f.path("attention_bias")),
            });
        }
        match f.opt_str("use_bidirectional_attention")? {
            None | Some("vision") => {}
            Some("all") => {
                return Err(Error::Unsupported {
                    feature: format!(
                        "{} = \"all\" (non-causal text attention)",
                        f.path("use_bidirectional_attention")
                    ),
                });
            }
            Some(other) => {
                return Err(Error::InvalidField {
                    field: f.path("use_bidirectional_attention"),
                    reason: format!(
                        "unknown value {other:?} (expected null, \"vision\" or \"all\")"
                    ),
                });
            }
        }
        let act = f
            .opt_str("hidden_activation")?
            .unwrap_or("gelu_pytorch_tanh");
        if act != "gelu_pytorch_tanh" {
            return Err(Error::Unsupported {
                feature: format!(
                    "{} = {act:?} (only gelu_pytorch_tanh)",
                    f.path("hidden_activation")
                ),
            });
        }

        // --- sizes -------------------------------------------------------------------------
        let vocab_size = check_range(
            f.path("vocab_size"),
            f.req_usize("vocab_size")?,
            1,
            MAX_VOCAB,
        )?;
        let hidden_size = check_range(
            f.path("hidden_size"),
            f.req_usize("hidden_size")?,
            1,
            MAX_WIDTH,
        )?;
        let intermediate_size = check_range(
            f.path("intermediate_size"),
            f.req_usize("intermediate_size")?,
            1,
            MAX_WIDTH,
        )?;
        let num_layers = check_range(
            f.path("num_hidden_layers"),
            f.req_usize("num_hidden_layers")?,
            1,
            MAX_COUNT,
        )?;
        let num_heads = check_range(
            f.path("num_attention_heads"),
            f.req_usize("num_attention_heads")?,
            1,
            MAX_COUNT,
        )?;
        let num_kv_heads = check_range(
            f.path("num_key_value_heads"),
            f.req_usize("num_key_value_heads")?,
            1,
            MAX_COUNT,
        )?;
        let head_dim = check_range(
            f.path("head_dim"),
            f.req_usize("head_dim")?,
            2,
            MAX_HEAD_DIM,
        )?;
        let hidden_size_per_layer_input = check_range(
            f.path("hidden_size_per_layer_input"),
            f.opt_usize("hidden_size_per_layer_input", 256)?,
            0,
            MAX_WIDTH,
        )?;
        let vocab_size_per_layer_input = check_range(
            f.path("vocab_size_per_layer_input"),
            f.opt_usize("vocab_size_per_layer_input", 262_144)?,
            usize::from(hidden_size_per_layer_input > 0),
            MAX_VOCAB,
        )?;
        let sliding_window = check_range(
            f.path("sliding_window"),
            f.opt_usize("sliding_window", 512)?,
            1,
            1 << 40,
        )?;
        let max_position_embeddings = check_range(
            f.path("max_position_embeddings"),
            f.opt_usize("max_position_embeddings", 131_072)?,
            1,
            1 << 40,
        )?;
        let num_kv_shared_layers = f.opt_usize("num_kv_shared_layers", 0)?;
        if num_kv_shared_layers >= num_layers {
            return Err(Error::InvalidField {
                field: f.path("num_kv_shared_layers"),
                reason: format!(
                    "{num_kv_shared_layers} shared layers leave no KV-producing layer among {num_layers}"
                ),
            });
        }
        let rms_norm_eps = f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6);
        if rms_norm_eps <= 0.0 || rms_norm_eps > 1.0 {
            return Err(Error::InvalidField {
                field: f.path("rms_norm_eps"),
                reason: format!("must be in (0, 1], got {rms_norm_eps}"),
            });
        }
        let final_logit_softcapping = f.opt_f64("final_logit_softcapping")?;
        if let Some(c) = final_logit_softcapping
            && c <= 0.0
        {
            return Err(Error::InvalidField {
                field: f.path("final_logit_softcapping"),
                reason: format!("must be positive or null, got {c}"),
            });
        }
        let use_double_wide_mlp = f.opt_bool("use_double_wide_mlp", false)?;
        let attention_k_eq_v = f.opt_bool("attention_k_eq_v", false)?;
        // `tie_word_embeddings` may sit in text_config or at the top of a nested config.
        let tie_word_embeddings = match f.get("tie_word_embeddings") {
            Some(_) => f.opt_bool("tie_word_embeddings", true)?,
            None => top.opt_bool("tie_word_embeddings", true)?,
        };
        let bos_token_id = f.opt_token("bos_token_id", Some(2))?;
        let pad_token_id = f.opt_token("pad_token_id", Some(0))?;
        let eos_token_ids = match f.obj.get("eos_token_id") {
            None => vec![1],
            Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| f.token_of("eos_token_id", v))
                .collect::<Result<Vec<_>>>()?,
            Some(v) => vec![f.token_of("eos_token_id", v)?],
        };

        // --- layer types -------------------------------------------------------------------
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

        // --- per-layer head dims / KV heads ------------------------------------------------
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

        // --- KV sharing --------------------------------------------------------------------
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

        // --- RoPE --------------------------------------------------------------------------
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

        let cfg = Gemma4Config {
            raw,
            nested,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_attention_heads: num_heads,
            num_key_value_heads: num_kv_heads,
            head_dim,
            rms_norm_eps,
            sliding_window,
            final_logit_softcapping,
            vocab_size_per_layer_input,
            hidden_size_per_layer_input,
            num_kv_shared_layers,
            use_double_wide_mlp,
            attention_k_eq_v,
            tie_word_embeddings,
            max_position_embeddings,
            bos_token_id,
            eos_token_ids,
            pad_token_id,
            layers,
            rope,
            producers,
        };
        cfg.check_sizes()?;
        Ok(cfg)
    }

    /// Reject configs whose tensors would overflow or be astronomically large.
    fn check_sizes(&self) -> Result<()> {
        let prefix = if self.nested { "text_config." } else { "" };
        let mut total: u64 = 0;
        for spec in crate::layout::expected_tensors(self)? {
            let n = spec
                .shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
                .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
                .ok_or_else(|| Error::InvalidField {
                    field: format!("{prefix}<sizes>"),
                    reason: format!(
                        "tensor `{}` of shape {:?} is absurdly large",
                        spec.name, spec.shape
                    ),
                })?;
            total = total.saturating_add(n);
        }
        if total > MAX_TOTAL_ELEMENTS {
            return Err(Error::InvalidField {
                field: format!("{prefix}<sizes>"),
                reason: format!(
                    "the config implies {total} parameters (limit {MAX_TOTAL_ELEMENTS})"
                ),
            });
        }
        Ok(())
    }

    /// The whole `config.json` as read (both serialisations).
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The text-decoder part of the raw JSON (`text_config` if nested, else the root).
    pub fn text_raw(&self) -> &Value {
        if self.nested {
            self.raw.get("text_config").unwrap_or(&self.raw)
        } else {
            &self.raw
        }
    }

    /// True for the nested `Gemma4ForConditionalGeneration` serialisation.
    pub fn is_nested(&self) -> bool {
        self.nested
    }

    /// V: rows of `embed_tokens` and of the (tied) lm_head.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// H: residual width.
    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// Base MLP width I (see [`LayerConfig::intermediate_size`] for the per-layer value).
    pub fn intermediate_size(&self) -> usize {
        self.intermediate_size
    }

    /// L: number of decoder layers.
    pub fn num_hidden_layers(&self) -> usize {
        self.layers.len()
    }

    /// nh: query heads (same on every layer).
    pub fn num_attention_heads(&self) -> usize {
        self.num_attention_heads
    }

    /// Global `num_key_value_heads` (see [`LayerConfig::num_kv_heads`] for the per-layer value).
    pub fn num_key_value_heads(&self) -> usize {
        self.num_key_value_heads
    }

    /// Global `head_dim` (the sliding-layer head dim; see [`LayerConfig::head_dim`]).
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Largest head dim over all layers.
    pub fn max_head_dim(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.head_dim)
            .max()
            .unwrap_or(self.head_dim)
    }

    /// RMSNorm epsilon.
    pub fn rms_norm_eps(&self) -> f64 {
        self.rms_norm_eps
    }

    /// W: keys visible to a sliding layer, including the current token.
    pub fn sliding_window(&self) -> usize {
        self.sliding_window
    }

    /// Final logit softcap `c` (`logits = c·tanh(logits/c)`), if any.
    pub fn final_logit_softcapping(&self) -> Option<f64> {
        self.final_logit_softcapping
    }

    /// Vp: rows of the PLE table.
    pub fn vocab_size_per_layer_input(&self) -> usize {
        self.vocab_size_per_layer_input
    }

    /// P: per-layer-embedding width (0 = no PLE).
    pub fn hidden_size_per_layer_input(&self) -> usize {
        self.hidden_size_per_layer_input
    }

    /// Whether the model has per-layer embeddings (P > 0).
    pub fn has_ple(&self) -> bool {
        self.hidden_size_per_layer_input > 0
    }

    /// N: number of trailing KV-shared layers.
    pub fn num_kv_shared_layers(&self) -> usize {
        self.num_kv_shared_layers
    }

    /// F = L − N: index of the first KV-shared layer (= L when nothing is shared).
    pub fn first_shared_layer(&self) -> usize {
        self.layers.len() - self.num_kv_shared_layers
    }

    /// Whether KV-shared layers get a 2·I MLP.
    pub fn use_double_wide_mlp(&self) -> bool {
        self.use_double_wide_mlp
    }

    /// Whether full-attention layers use the raw K projection as V (no `v_proj`).
    pub fn attention_k_eq_v(&self) -> bool {
        self.attention_k_eq_v
    }

    /// Whether lm_head is tied to `embed_tokens`.
    pub fn tie_word_embeddings(&self) -> bool {
        self.tie_word_embeddings
    }

    /// `max_position_embeddings` (informational; RoPE has no scaling).
    pub fn max_position_embeddings(&self) -> usize {
        self.max_position_embeddings
    }

    /// BOS id, if any.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// EOS ids (the config may hold one or a list).
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// PAD id, if any.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token_id
    }

    /// All resolved layers.
    pub fn layers(&self) -> &[LayerConfig] {
        &self.layers
    }

    /// One resolved layer; `None` past the last layer.
    pub fn layer(&self, i: usize) -> Option<&LayerConfig> {
        self.layers.get(i)
    }

    /// Attention type of layer `i`.
    pub fn layer_type(&self, i: usize) -> Option<LayerType> {
        self.layers.get(i).map(|l| l.layer_type)
    }

    /// Where layer `i` gets its K/V.
    pub fn kv_source(&self, i: usize) -> Option<KvSource> {
        self.layers.get(i).map(|l| l.kv_source)
    }

    /// The producer ("store") layer of a type: the last non-shared layer of that type.
    pub fn producer(&self, t: LayerType) -> Option<usize> {
        self.producers.get(&t).copied()
    }

    /// Producers of every type that has one.
    pub fn producers(&self) -> &BTreeMap<LayerType, usize> {
        &self.producers
    }

    /// Layer types that occur in the model, in [`LayerType`] order.
    pub fn layer_types_present(&self) -> Vec<LayerType> {
        self.rope.keys().copied().collect()
    }

    /// RoPE parameters of a layer type (present for every type that occurs).
    pub fn rope(&self, t: LayerType) -> Option<&RopeParams> {
        self.rope.get(&t)
    }

    /// Head dim used by layers of type `t` (the first such layer's; all agree in Gemma 4).
    pub fn head_dim_of_type(&self, t: LayerType) -> Option<usize> {
        self.layers
            .iter()
            .find(|l| l.layer_type == t)
            .map(|l| l.head_dim)
    }
}

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
