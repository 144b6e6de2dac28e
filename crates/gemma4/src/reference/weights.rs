//! Weights of the reference forward; struct fields mirror the checkpoint keys.
//!
//! Two stores behind one interface ([`Store`]):
//!
//! * **resident** ([`Store::resident`]): every tensor loaded once in the compute dtype — small
//!   models and tests;
//! * **streamed** ([`Store::streamed`]): nothing but the final norm is held. Each forward call reads
//!   the embedding and PLE rows of its token ids, the PLE projection, then one decoder layer at a
//!   time (dropped before the next is read), and computes the tied (or untied) LM head slab by slab
//!   of [`LM_HEAD_SLAB_ROWS`] vocabulary rows — all straight from the memory-mapped checkpoint. So
//!   the memory beyond the KV caches is one layer's weights plus one slab, whatever the model
//!   size (a full-size E2B or E4B forward fits in a few GB).
//!
//! Both give the same numbers: rows and tensors are converted from the storage dtype to the
//! compute dtype by the same rule. Matrices are held in the compute dtype. Norm weights and
//! `layer_scalar` are loaded in the compute dtype and then widened to f32, as HF multiplies
//! `weight.float()` inside its f32 RMSNorm.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::config::{Gemma4Config, KvSource, LayerType};
use crate::error::{CandleContext, Result};
use crate::layout::LM_HEAD;

use super::ops;

/// Vocabulary rows of the LM head multiplied per slab by the streamed store.
pub(crate) const LM_HEAD_SLAB_ROWS: usize = 8192;

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

/// The context half of the PLE: `per_layer_model_projection` and its norm.
#[derive(Debug, Clone)]
pub(crate) struct PleProjection {
    pub per_layer_model_projection: Tensor,
    pub per_layer_projection_norm: Tensor,
}

/// Every weight, loaded.
#[derive(Debug, Clone)]
pub(crate) struct Resident {
    embed_tokens: Tensor,
    embed_tokens_per_layer: Option<Tensor>,
    ple: Option<PleProjection>,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    lm_head: Tensor,
}

/// Where the reference forward's weights come from.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    /// Everything in memory.
    Resident(Box<Resident>),
    /// Read from the checkpoint when needed; only the final norm is held.
    Streamed {
        ckpt: Arc<Checkpoint>,
        dtype: DType,
        norm: Tensor,
    },
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

    /// Rows `ids` of a `[rows, cols]` table in the compute dtype, touching only those rows.
    fn rows(&self, name: &str, ids: &[u32]) -> Result<Tensor> {
        let mut data = Vec::new();
        for &id in ids {
            data.extend(self.ckpt.load_rows_f32(name, id as usize, 1)?);
        }
        let cols = data.len() / ids.len().max(1);
        self.f32_to_dtype(data, ids.len(), cols, name)
    }

    /// Rows `start..start+n` of a table in the compute dtype.
    fn row_range(&self, name: &str, start: usize, n: usize) -> Result<Tensor> {
        let data = self.ckpt.load_rows_f32(name, start, n)?;
        let cols = data.len() / n.max(1);
        self.f32_to_dtype(data, n, cols, name)
    }

    fn f32_to_dtype(&self, data: Vec<f32>, rows: usize, cols: usize, name: &str) -> Result<Tensor> {
        Tensor::from_vec(data, (rows, cols), &Device::Cpu)
            .and_then(|t| t.to_dtype(self.dtype))
            .ctx(|| format!("rows of `{name}`"))
    }

    fn ple_projection(&self) -> Result<PleProjection> {
        Ok(PleProjection {
            per_layer_model_projection: self.mat("per_layer_model_projection.weight")?,
            per_layer_projection_norm: self.f32_param("per_layer_projection_norm.weight")?,
        })
    }

    fn layer(&self, cfg: &Gemma4Config, i: usize) -> Result<DecoderLayer> {
        let lc = &cfg.layers()[i];
        let a = format!("layers.{i}.self_attn");
        let owns = matches!(lc.kv_source, KvSource::Own { .. });
        let k_eq_v = cfg.attention_k_eq_v() && lc.layer_type == LayerType::Full;
        let self_attn = Attention {
            q_proj: self.mat(&format!("{a}.q_proj.weight"))?,
            q_norm: self.f32_param(&format!("{a}.q_norm.weight"))?,
            k_proj: if owns {
                Some(self.mat(&format!("{a}.k_proj.weight"))?)
            } else {
                None
            },
            v_proj: if owns && !k_eq_v {
                Some(self.mat(&format!("{a}.v_proj.weight"))?)
            } else {
                None
            },
            k_norm: if owns {
                Some(self.f32_param(&format!("{a}.k_norm.weight"))?)
            } else {
                None
            },
            o_proj: self.mat(&format!("{a}.o_proj.weight"))?,
        };
        let per_layer = if cfg.has_ple() {
            Some(PerLayerInput {
                per_layer_input_gate: self
                    .mat(&format!("layers.{i}.per_layer_input_gate.weight"))?,
                per_layer_projection: self
                    .mat(&format!("layers.{i}.per_layer_projection.weight"))?,
                post_per_layer_input_norm: self
                    .f32_param(&format!("layers.{i}.post_per_layer_input_norm.weight"))?,
            })
        } else {
            None
        };
        Ok(DecoderLayer {
            input_layernorm: self.f32_param(&format!("layers.{i}.input_layernorm.weight"))?,
            self_attn,
            post_attention_layernorm: self
                .f32_param(&format!("layers.{i}.post_attention_layernorm.weight"))?,
            pre_feedforward_layernorm: self
                .f32_param(&format!("layers.{i}.pre_feedforward_layernorm.weight"))?,
            mlp: Mlp {
                gate_proj: self.mat(&format!("layers.{i}.mlp.gate_proj.weight"))?,
                up_proj: self.mat(&format!("layers.{i}.mlp.up_proj.weight"))?,
                down_proj: self.mat(&format!("layers.{i}.mlp.down_proj.weight"))?,
            },
            post_feedforward_layernorm: self
                .f32_param(&format!("layers.{i}.post_feedforward_layernorm.weight"))?,
            per_layer,
            layer_scalar: self.mat(&format!("layers.{i}.layer_scalar"))?,
        })
    }
}

/// Name of the LM head matrix: the embedding table when tied.
fn lm_head_name(cfg: &Gemma4Config) -> &'static str {
    if cfg.tie_word_embeddings() {
        "embed_tokens.weight"
    } else {
        LM_HEAD
    }
}

impl Store {
    /// Load every weight of `ckpt` in compute dtype `dtype`.
    pub(crate) fn resident(ckpt: &Checkpoint, dtype: DType) -> Result<Store> {
        let cfg = ckpt.config();
        let ld = Loader { ckpt, dtype };
        let embed_tokens = ld.mat("embed_tokens.weight")?;
        let (embed_tokens_per_layer, ple) = if cfg.has_ple() {
            (
                Some(ld.mat("embed_tokens_per_layer.weight")?),
                Some(ld.ple_projection()?),
            )
        } else {
            (None, None)
        };
        let layers = (0..cfg.num_hidden_layers())
            .map(|i| ld.layer(cfg, i))
            .collect::<Result<Vec<_>>>()?;
        let norm = ld.f32_param("norm.weight")?;
        let lm_head = if cfg.tie_word_embeddings() {
            embed_tokens.clone()
        } else {
            ld.mat(LM_HEAD)?
        };
        Ok(Store::Resident(Box::new(Resident {
            embed_tokens,
            embed_tokens_per_layer,
            ple,
            layers,
            norm,
            lm_head,
        })))
    }

    /// Hold only the final norm; read everything else from `ckpt` when needed.
    pub(crate) fn streamed(ckpt: Arc<Checkpoint>, dtype: DType) -> Result<Store> {
        let norm = Loader { ckpt: &ckpt, dtype }.f32_param("norm.weight")?;
        Ok(Store::Streamed { ckpt, dtype, norm })
    }

    /// Unscaled `embed_tokens` rows of `ids`, `[S, H]` in the compute dtype.
    pub(crate) fn embed(&self, ids: &[u32], ids_t: &Tensor) -> Result<Tensor> {
        match self {
            Store::Resident(r) => r
                .embed_tokens
                .index_select(ids_t, 0)
                .ctx(|| "embed_tokens lookup".to_string()),
            Store::Streamed { ckpt, dtype, .. } => Loader {
                ckpt,
                dtype: *dtype,
            }
            .rows("embed_tokens.weight", ids),
        }
    }

    /// Unscaled `embed_tokens_per_layer` rows of `ids`, `[S, L·P]` in the compute dtype.
    pub(crate) fn ple_tokens(&self, ids: &[u32], ids_t: &Tensor) -> Result<Option<Tensor>> {
        match self {
            Store::Resident(r) => r
                .embed_tokens_per_layer
                .as_ref()
                .map(|t| {
                    t.index_select(ids_t, 0)
                        .ctx(|| "embed_tokens_per_layer lookup".to_string())
                })
                .transpose(),
            Store::Streamed { ckpt, dtype, .. } => {
                if !ckpt.config().has_ple() {
                    return Ok(None);
                }
                Loader {
                    ckpt,
                    dtype: *dtype,
                }
                .rows("embed_tokens_per_layer.weight", ids)
                .map(Some)
            }
        }
    }

    /// `per_layer_model_projection` and its norm (`None` without PLE).
    pub(crate) fn ple_projection(&self) -> Result<Option<Cow<'_, PleProjection>>> {
        match self {
            Store::Resident(r) => Ok(r.ple.as_ref().map(Cow::Borrowed)),
            Store::Streamed { ckpt, dtype, .. } => {
                if !ckpt.config().has_ple() {
                    return Ok(None);
                }
                Loader {
                    ckpt,
                    dtype: *dtype,
                }
                .ple_projection()
                .map(|p| Some(Cow::Owned(p)))
            }
        }
    }

    /// Decoder layer `i` (read from the checkpoint when streamed).
    pub(crate) fn layer(&self, cfg: &Gemma4Config, i: usize) -> Result<Cow<'_, DecoderLayer>> {
        match self {
            Store::Resident(r) => Ok(Cow::Borrowed(&r.layers[i])),
            Store::Streamed { ckpt, dtype, .. } => Loader {
                ckpt,
                dtype: *dtype,
            }
            .layer(cfg, i)
            .map(Cow::Owned),
        }
    }

    /// Final norm weight (f32).
    pub(crate) fn norm(&self) -> &Tensor {
        match self {
            Store::Resident(r) => &r.norm,
            Store::Streamed { norm, .. } => norm,
        }
    }

    /// `xn @ lm_headᵀ`: `[S, V]` in the compute dtype.
    pub(crate) fn lm_head(&self, cfg: &Gemma4Config, xn: &Tensor) -> Result<Tensor> {
        match self {
            Store::Resident(r) => ops::linear(xn, &r.lm_head, "lm_head"),
            Store::Streamed { ckpt, dtype, .. } => {
                let ld = Loader {
                    ckpt,
                    dtype: *dtype,
                };
                let name = lm_head_name(cfg);
                let v = cfg.vocab_size();
                let mut parts = Vec::with_capacity(v.div_ceil(LM_HEAD_SLAB_ROWS));
                let mut start = 0;
                while start < v {
                    let n = LM_HEAD_SLAB_ROWS.min(v - start);
                    let slab = ld.row_range(name, start, n)?;
                    parts.push(ops::linear(xn, &slab, "lm_head")?);
                    start += n;
                }
                Tensor::cat(&parts, 1).ctx(|| "lm_head slabs".to_string())
            }
        }
    }
}
