//! Field validation of the text config: features we reject, sizes, numeric settings and token
//! ids, each checked against its range with the field's dotted name in the error.

use serde_json::Value;

use super::fields::{Fields, check_range};
use super::{MAX_COUNT, MAX_HEAD_DIM, MAX_VOCAB, MAX_WIDTH};
use crate::error::{Error, Result};

/// The validated model-wide fields of a text config (everything except the per-layer resolution
/// and RoPE).
#[derive(Debug, Clone)]
pub(super) struct Scalars {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub hidden_size_per_layer_input: usize,
    pub vocab_size_per_layer_input: usize,
    pub sliding_window: usize,
    pub max_position_embeddings: usize,
    pub num_kv_shared_layers: usize,
    pub rms_norm_eps: f64,
    pub final_logit_softcapping: Option<f64>,
    pub use_double_wide_mlp: bool,
    pub attention_k_eq_v: bool,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// Reject the features this crate does not implement (MoE, attention biases, bidirectional text
/// attention, activations other than tanh-GELU).
pub(super) fn reject_unsupported(f: &Fields<'_>) -> Result<()> {
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
                reason: format!("unknown value {other:?} (expected null, \"vision\" or \"all\")"),
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
    Ok(())
}

impl Scalars {
    /// Read and range-check every model-wide field of the text config `f` (`top` is the root of a
    /// nested config, where `tie_word_embeddings` may sit instead).
    pub(super) fn parse(f: &Fields<'_>, top: &Fields<'_>) -> Result<Scalars> {
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
        Ok(Scalars {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            hidden_size_per_layer_input,
            vocab_size_per_layer_input,
            sliding_window,
            max_position_embeddings,
            num_kv_shared_layers,
            rms_norm_eps,
            final_logit_softcapping,
            use_double_wide_mlp,
            attention_k_eq_v,
            tie_word_embeddings,
            bos_token_id,
            pad_token_id,
            eos_token_ids,
        })
    }
}
