//! `model_config.json`: every field the Swift runtime reads (CoreML-LLM `ModelConfig.swift`, spelled
//! as it spells them: `model_name`, `architecture`, `hidden_size`, `num_layers` /
//! `num_hidden_layers`, `layer_types`, `num_kv_shared_layers`, `context_length`, `vocab_size`,
//! `bos_token_id`, `eos_token_id`, `per_layer_dim`, `sliding_window`, `embed_scale`,
//! `per_layer_model_projection_scale`, `per_layer_input_scale`, `per_layer_embed_scale`), the HF
//! facts beside them, and the plan facts our own runtime uses (`variant`, `chunks` with their KV slot
//! maps, cache lengths and policies, RoPE rows) — plus, only when those functions are built (so a
//! decode-only set is unchanged), `verify_k` / `verify_function` and `prefill_length` /
//! `prefill_chunks` / `prefill_sliding_mask`.
//!
//! Written with every object's keys sorted (see [`crate::error::to_sorted_json`]); read strictly:
//! a missing or unknown field is a [`ContractError`] naming the file and the field.

use crate::chunk::{KvSlot, PrefillKv};
use crate::error::{ContractError, nullable, read_json, to_sorted_json};
use crate::kinds::{CacheKind, CachePolicy, LayerKind, Precision};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name of the set's model config.
pub const MODEL_CONFIG_NAME: &str = "model_config.json";
/// `architecture`.
pub const ARCHITECTURE: &str = "gemma4";
/// `compute_units` (the Swift runtime's default placement).
pub const COMPUTE_UNITS: &str = "CPU_AND_NE";
/// `rope`: the RoPE tables are HF-correct (proportional RoPE on full layers).
pub const ROPE_HF: &str = "hf";
/// `prefill_sliding_mask`: sliding layers of prefill use `causal_mask` plus an in-graph window band.
pub const PREFILL_SLIDING_MASK: &str = "causal_mask_plus_window_band";

/// A decode chunk: package stem, layers `[start, end)` and the slots of its KV-owning layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkEntry {
    pub name: String,
    pub layers: [usize; 2],
    pub kv_slots: Vec<KvSlot>,
}

/// A prefill chunk: package stem, layers and the layer behind each of its K/V outputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefillChunkEntry {
    pub name: String,
    pub layers: [usize; 2],
    pub kv: Vec<PrefillKv>,
}

/// The content of `model_config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub model_name: String,
    /// [`ARCHITECTURE`].
    pub architecture: String,
    pub hidden_size: usize,
    /// Both spellings the Swift runtime accepts, equal.
    pub num_hidden_layers: usize,
    pub num_layers: usize,
    pub num_attention_heads: usize,
    /// KV heads of the sliding layers (else of the full layers).
    #[serde(deserialize_with = "nullable")]
    pub num_key_value_heads: Option<usize>,
    /// Head dim of the sliding layers.
    #[serde(deserialize_with = "nullable")]
    pub head_dim: Option<usize>,
    /// Head dim of the full layers.
    #[serde(deserialize_with = "nullable")]
    pub global_head_dim: Option<usize>,
    pub vocab_size: usize,
    pub vocab_size_per_layer_input: usize,
    pub context_length: usize,
    pub sliding_window: usize,
    /// PLE width per layer `P` (0 = no PLE).
    pub per_layer_dim: usize,
    pub num_kv_shared_layers: usize,
    /// Per layer, `sliding_attention` or `full_attention`.
    #[serde(with = "attention_types")]
    pub layer_types: Vec<LayerKind>,
    /// `√H`.
    pub embed_scale: f64,
    /// `√P`.
    pub per_layer_embed_scale: f64,
    /// `1/√H`.
    pub per_layer_model_projection_scale: f64,
    /// `1/√2`.
    pub per_layer_input_scale: f64,
    pub rms_norm_eps: f64,
    #[serde(deserialize_with = "nullable")]
    pub bos_token_id: Option<u32>,
    /// The first of `eos_token_ids`.
    #[serde(deserialize_with = "nullable")]
    pub eos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    #[serde(deserialize_with = "nullable")]
    pub pad_token_id: Option<u32>,
    #[serde(deserialize_with = "nullable")]
    pub final_logit_softcapping: Option<f64>,
    /// `int4`, ..., or `fp16` / `fp32` for dense sets.
    pub quantization: String,
    /// [`COMPUTE_UNITS`].
    pub compute_units: String,
    /// Directory of the tokenizer files ([`crate::names::HF_MODEL_DIR`]).
    pub tokenizer_repo: String,
    pub precision: Precision,
    /// The variant name (`swa4`, ...).
    pub variant: String,
    /// The decode chunks in call order.
    pub chunks: Vec<ChunkEntry>,
    pub sliding_cache_length: usize,
    pub full_cache_length: usize,
    pub sliding_cache_policy: CacheKind,
    pub full_cache_policy: CacheKind,
    /// Rows of the RoPE tables.
    pub rope_rows: usize,
    /// [`ROPE_HF`].
    pub rope: String,
    /// K of `verify_qK`, when built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_k: Option<usize>,
    /// The verify function's name, when built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_function: Option<String>,
    /// N of the prefill packages, when built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_length: Option<usize>,
    /// [`PREFILL_SLIDING_MASK`], when prefill is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_sliding_mask: Option<String>,
    /// The prefill packages in call order, when built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_chunks: Option<Vec<PrefillChunkEntry>>,
}

impl ModelConfig {
    /// Read `dir/model_config.json`.
    pub fn read(dir: &Path) -> Result<ModelConfig, ContractError> {
        read_json(&dir.join(MODEL_CONFIG_NAME))
    }

    /// The file's bytes: pretty JSON, keys sorted, trailing newline.
    pub fn to_json(&self) -> Result<String, ContractError> {
        to_sorted_json(MODEL_CONFIG_NAME, self)
    }

    /// The sliding layers' cache policy.
    pub fn sliding_cache(&self) -> CachePolicy {
        CachePolicy::new(self.sliding_cache_policy, self.sliding_cache_length)
    }

    /// The full layers' cache policy.
    pub fn full_cache(&self) -> CachePolicy {
        CachePolicy::new(self.full_cache_policy, self.full_cache_length)
    }

    /// The cache policy of `kind`.
    pub fn cache(&self, kind: LayerKind) -> CachePolicy {
        match kind {
            LayerKind::Sliding => self.sliding_cache(),
            LayerKind::Full => self.full_cache(),
        }
    }

    /// The prefill packages (empty when the set has none).
    pub fn prefill_chunks(&self) -> &[PrefillChunkEntry] {
        self.prefill_chunks.as_deref().unwrap_or_default()
    }
}

/// `layer_types` as the strings the Swift runtime compares against.
mod attention_types {
    use crate::kinds::LayerKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[LayerKind], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|k| k.attention_type()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LayerKind>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                LayerKind::from_attention_type(s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "`{s}` is not sliding_attention or full_attention"
                    ))
                })
            })
            .collect()
    }
}
