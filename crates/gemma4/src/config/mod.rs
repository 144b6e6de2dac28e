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
//!
//! Files: this one holds the validated type and its accessors; `fields` the typed JSON access,
//! `scalars` the model-wide field validation, `layers` the per-layer resolution (types, head dims,
//! KV sharing), `rope` the RoPE parameters.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use fields::Fields;
use scalars::Scalars;

use crate::error::{Error, Result};

mod fields;
mod layers;
mod rope;
mod scalars;

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
        scalars::reject_unsupported(f)?;
        let s = Scalars::parse(f, top)?;
        let layer_types = layers::layer_types(f, s.num_layers)?;
        let (layers, producers) = layers::resolve(f, &s, &layer_types)?;
        let rope = rope::rope_params(f, &layer_types)?;
        let cfg = Gemma4Config {
            raw,
            nested,
            vocab_size: s.vocab_size,
            hidden_size: s.hidden_size,
            intermediate_size: s.intermediate_size,
            num_attention_heads: s.num_heads,
            num_key_value_heads: s.num_kv_heads,
            head_dim: s.head_dim,
            rms_norm_eps: s.rms_norm_eps,
            sliding_window: s.sliding_window,
            final_logit_softcapping: s.final_logit_softcapping,
            vocab_size_per_layer_input: s.vocab_size_per_layer_input,
            hidden_size_per_layer_input: s.hidden_size_per_layer_input,
            num_kv_shared_layers: s.num_kv_shared_layers,
            use_double_wide_mlp: s.use_double_wide_mlp,
            attention_k_eq_v: s.attention_k_eq_v,
            tie_word_embeddings: s.tie_word_embeddings,
            max_position_embeddings: s.max_position_embeddings,
            bos_token_id: s.bos_token_id,
            eos_token_ids: s.eos_token_ids,
            pad_token_id: s.pad_token_id,
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
