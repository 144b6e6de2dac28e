//! Tensor names and shapes a Gemma 4 text checkpoint must hold (spec/gemma4-text.md §6).
//!
//! Names are given *after* the checkpoint prefix (`model.` for `Gemma4ForCausalLM`,
//! `model.language_model.` for the release `Gemma4ForConditionalGeneration`), e.g.
//! `layers.3.self_attn.q_proj.weight`. The one exception is [`LM_HEAD`]: an untied lm_head is
//! stored without prefix in both layouts.
//!
//! KV-shared layers (i ≥ F) have no `k_proj` / `v_proj` / `k_norm`; Google's release files still
//! ship them. They are listed by [`unused_tensors`] so that loaders can accept and ignore them.
//! v_norm has no weight; rotary inv_freq and embed scales are not stored.

use crate::config::{Gemma4Config, KvSource, LayerType};
use crate::error::{Error, Result};

/// Name of an untied lm_head (stored without the model prefix).
pub const LM_HEAD: &str = "lm_head.weight";

/// One required tensor: name (after the prefix) and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name after the prefix (or [`LM_HEAD`]).
    pub name: String,
    /// Expected shape.
    pub shape: Vec<usize>,
}

fn mul(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| Error::InvalidField {
        field: what.to_string(),
        reason: format!("{a} × {b} overflows"),
    })
}

/// Every tensor the forward reads, in a fixed order (top level, then layer by layer).
pub fn expected_tensors(cfg: &Gemma4Config) -> Result<Vec<TensorSpec>> {
    let h = cfg.hidden_size();
    let nh = cfg.num_attention_heads();
    let p = cfg.hidden_size_per_layer_input();
    let l = cfg.num_hidden_layers();
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>| out.push(TensorSpec { name, shape });
    push("embed_tokens.weight".into(), vec![cfg.vocab_size(), h]);
    if p > 0 {
        let lp = mul(l, p, "num_hidden_layers × hidden_size_per_layer_input")?;
        push(
            "embed_tokens_per_layer.weight".into(),
            vec![cfg.vocab_size_per_layer_input(), lp],
        );
        push("per_layer_model_projection.weight".into(), vec![lp, h]);
        push("per_layer_projection_norm.weight".into(), vec![p]);
    }
    push("norm.weight".into(), vec![h]);
    if !cfg.tie_word_embeddings() {
        push(LM_HEAD.into(), vec![cfg.vocab_size(), h]);
    }
    for (i, layer) in cfg.layers().iter().enumerate() {
        let d = layer.head_dim;
        let q = mul(nh, d, "num_attention_heads × head_dim")?;
        let kv = mul(layer.num_kv_heads, d, "num_key_value_heads × head_dim")?;
        let im = layer.intermediate_size;
        let a = format!("layers.{i}.self_attn");
        push(format!("layers.{i}.input_layernorm.weight"), vec![h]);
        push(format!("{a}.q_proj.weight"), vec![q, h]);
        push(format!("{a}.q_norm.weight"), vec![d]);
        if let KvSource::Own { .. } = layer.kv_source {
            push(format!("{a}.k_proj.weight"), vec![kv, h]);
            if !(cfg.attention_k_eq_v() && layer.layer_type == LayerType::Full) {
                push(format!("{a}.v_proj.weight"), vec![kv, h]);
            }
            push(format!("{a}.k_norm.weight"), vec![d]);
        }
        push(format!("{a}.o_proj.weight"), vec![h, q]);
        push(
            format!("layers.{i}.post_attention_layernorm.weight"),
            vec![h],
        );
        push(
            format!("layers.{i}.pre_feedforward_layernorm.weight"),
            vec![h],
        );
        push(format!("layers.{i}.mlp.gate_proj.weight"), vec![im, h]);
        push(format!("layers.{i}.mlp.up_proj.weight"), vec![im, h]);
        push(format!("layers.{i}.mlp.down_proj.weight"), vec![h, im]);
        push(
            format!("layers.{i}.post_feedforward_layernorm.weight"),
            vec![h],
        );
        if p > 0 {
            push(
                format!("layers.{i}.per_layer_input_gate.weight"),
                vec![p, h],
            );
            push(
                format!("layers.{i}.per_layer_projection.weight"),
                vec![h, p],
            );
            push(
                format!("layers.{i}.post_per_layer_input_norm.weight"),
                vec![h],
            );
        }
        push(format!("layers.{i}.layer_scalar"), vec![1]);
    }
    Ok(out)
}

/// Tensors a checkpoint may hold that the forward never reads: `k_proj`, `v_proj`, `k_norm`
/// (and a stray `v_norm`) of KV-shared layers.
pub fn unused_tensors(cfg: &Gemma4Config) -> Vec<String> {
    let mut out = Vec::new();
    for (i, layer) in cfg.layers().iter().enumerate() {
        if let KvSource::Shared { .. } = layer.kv_source {
            for n in ["k_proj", "v_proj", "k_norm", "v_norm"] {
                out.push(format!("layers.{i}.self_attn.{n}.weight"));
            }
        }
    }
    out
}
