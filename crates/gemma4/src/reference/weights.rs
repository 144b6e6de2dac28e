//! Weights of the reference forward; struct fields mirror the checkpoint keys.
//!
//! Matrices are held in the compute dtype. Norm weights and `layer_scalar` are loaded in the
//! compute dtype and then widened to f32, as HF multiplies `weight.float()` inside its f32
//! RMSNorm. The tied lm_head shares the `embed_tokens` tensor.

use candle_core::{DType, Tensor};

use crate::checkpoint::Checkpoint;
use crate::config::{KvSource, LayerType};
use crate::error::{CandleContext, Result};
use crate::layout::LM_HEAD;

/// `layers.{i}.self_attn.*`.
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    pub q_proj: Tensor,
    pub q_norm: Tensor,
    /// `Some` on KV-owning layers.
    pub k_proj: Option<Tensor>,
    /// `Some` on KV-owning layers unless `attention_k_eq_v` on a full layer.
    pub v_proj: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    pub o_proj: Tensor,
}

/// `layers.{i}.mlp.*`.
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    pub gate_proj: Tensor,
    pub up_proj: Tensor,
    pub down_proj: Tensor,
}

/// Per-layer-embedding block of a decoder layer.
#[derive(Debug, Clone)]
pub(crate) struct PerLayerInput {
    pub per_layer_input_gate: Tensor,
    pub per_layer_projection: Tensor,
    pub post_per_layer_input_norm: Tensor,
}

/// `layers.{i}.*`.
#[derive(Debug, Clone)]
pub(crate) struct DecoderLayer {
    pub input_layernorm: Tensor,
    pub self_attn: Attention,
    pub post_attention_layernorm: Tensor,
    pub pre_feedforward_layernorm: Tensor,
    pub mlp: Mlp,
    pub post_feedforward_layernorm: Tensor,
    pub per_layer: Option<PerLayerInput>,
    pub layer_scalar: Tensor,
}

/// Top-level PLE tensors.
#[derive(Debug, Clone)]
pub(crate) struct PleWeights {
    pub embed_tokens_per_layer: Tensor,
    pub per_layer_model_projection: Tensor,
    pub per_layer_projection_norm: Tensor,
}

/// All weights of the text decoder.
#[derive(Debug, Clone)]
pub(crate) struct Weights {
    pub embed_tokens: Tensor,
    pub ple: Option<PleWeights>,
    pub layers: Vec<DecoderLayer>,
    pub norm: Tensor,
    pub lm_head: Tensor,
}

struct Loader<'a> {
    ckpt: &'a Checkpoint,
    dtype: DType,
}

impl Loader<'_> {
    fn mat(&self, name: &str) -> Result<Tensor> {
        self.ckpt.load(name, self.dtype)
    }

    /// Norm weight / scalar: rounded to the compute dtype, then widened to f32.
    fn f32_param(&self, name: &str) -> Result<Tensor> {
        self.ckpt
            .load(name, self.dtype)?
            .to_dtype(DType::F32)
            .ctx(|| format!("widen `{name}` to f32"))
    }
}

impl Weights {
    pub(crate) fn load(ckpt: &Checkpoint, dtype: DType) -> Result<Weights> {
        let cfg = ckpt.config();
        let ld = Loader { ckpt, dtype };
        let embed_tokens = ld.mat("embed_tokens.weight")?;
        let ple = if cfg.has_ple() {
            Some(PleWeights {
                embed_tokens_per_layer: ld.mat("embed_tokens_per_layer.weight")?,
                per_layer_model_projection: ld.mat("per_layer_model_projection.weight")?,
                per_layer_projection_norm: ld.f32_param("per_layer_projection_norm.weight")?,
            })
        } else {
            None
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers());
        for (i, lc) in cfg.layers().iter().enumerate() {
            let a = format!("layers.{i}.self_attn");
            let owns = matches!(lc.kv_source, KvSource::Own { .. });
            let k_eq_v = cfg.attention_k_eq_v() && lc.layer_type == LayerType::Full;
            let self_attn = Attention {
                q_proj: ld.mat(&format!("{a}.q_proj.weight"))?,
                q_norm: ld.f32_param(&format!("{a}.q_norm.weight"))?,
                k_proj: if owns {
                    Some(ld.mat(&format!("{a}.k_proj.weight"))?)
                } else {
                    None
                },
                v_proj: if owns && !k_eq_v {
                    Some(ld.mat(&format!("{a}.v_proj.weight"))?)
                } else {
                    None
                },
                k_norm: if owns {
                    Some(ld.f32_param(&format!("{a}.k_norm.weight"))?)
                } else {
                    None
                },
                o_proj: ld.mat(&format!("{a}.o_proj.weight"))?,
            };
            let per_layer = if cfg.has_ple() {
                Some(PerLayerInput {
                    per_layer_input_gate: ld
                        .mat(&format!("layers.{i}.per_layer_input_gate.weight"))?,
                    per_layer_projection: ld
                        .mat(&format!("layers.{i}.per_layer_projection.weight"))?,
                    post_per_layer_input_norm: ld
                        .f32_param(&format!("layers.{i}.post_per_layer_input_norm.weight"))?,
                })
            } else {
                None
            };
            layers.push(DecoderLayer {
                input_layernorm: ld.f32_param(&format!("layers.{i}.input_layernorm.weight"))?,
                self_attn,
                post_attention_layernorm: ld
                    .f32_param(&format!("layers.{i}.post_attention_layernorm.weight"))?,
                pre_feedforward_layernorm: ld
                    .f32_param(&format!("layers.{i}.pre_feedforward_layernorm.weight"))?,
                mlp: Mlp {
                    gate_proj: ld.mat(&format!("layers.{i}.mlp.gate_proj.weight"))?,
                    up_proj: ld.mat(&format!("layers.{i}.mlp.up_proj.weight"))?,
                    down_proj: ld.mat(&format!("layers.{i}.mlp.down_proj.weight"))?,
                },
                post_feedforward_layernorm: ld
                    .f32_param(&format!("layers.{i}.post_feedforward_layernorm.weight"))?,
                per_layer,
                layer_scalar: ld.mat(&format!("layers.{i}.layer_scalar"))?,
            });
        }
        let norm = ld.f32_param("norm.weight")?;
        let lm_head = if cfg.tie_word_embeddings() {
            embed_tokens.clone()
        } else {
            ld.mat(LM_HEAD)?
        };
        Ok(Weights {
            embed_tokens,
            ple,
            layers,
            norm,
            lm_head,
        })
    }
}
