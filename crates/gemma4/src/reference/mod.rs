//! Reference forward of the Gemma 4 text decoder on candle (spec/gemma4-text.md §2–§4).
//!
//! Our own implementation (not candle-transformers'): prefill and cached decode over an explicit
//! [`KvState`], in f32, f16 or bf16 compute, with optional per-layer taps.
//!
//! Per step over `S` new tokens at positions `pos..pos+S`:
//! 1. `x = embed_tokens[ids] · sqrt(H)` (scale rounded to the compute dtype, as HF).
//! 2. PLE (if P > 0): `((RMSNorm_P(x @ Wpᵀ · H^−½) + E_ple[ids] · sqrt(P)) · 2^−½`, one
//!    `[S, P]` slice per layer.
//! 3. Each layer: attention (q/k RMSNorm then RoPE, parameter-free v-norm, scale 1.0, causal
//!    mask, window W on sliding layers, GQA), post-attn norm + residual; MLP (tanh-GELU gate),
//!    post-ff norm + residual; PLE gate block + residual; then the whole stream × `layer_scalar`.
//!    KV-shared layers attend over their producer's K/V of the same step (past + current).
//! 4. Final RMSNorm, tied lm_head (unscaled embedding matrix), softcap `c·tanh(z/c)`.
//!
//! RMSNorm and softmax run in f32, GELU in f32 rounded once; matmuls in the compute dtype. The
//! kernels are candle-nn's where their semantics equal the spec (linear, RMSNorm, RoPE, softmax;
//! see `ops`).
//!
//! Weights are either resident ([`Reference::load`]) or streamed from the memory-mapped checkpoint
//! ([`Reference::load_streaming`]: embedding and PLE rows on demand, one decoder layer at a time,
//! the LM head slab by slab), so a full-size model runs in a few GB beyond its KV caches.
//! [`Reference::forward_last`] computes the LM head only for the last rows of a call (HF's
//! `logits_to_keep`).
//! Not covered: MoE blocks, attention biases, bidirectional attention (rejected by the config).

mod ops;
mod state;
mod weights;

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

pub use state::KvState;

use crate::checkpoint::Checkpoint;
use crate::config::{Gemma4Config, KvSource, LayerType};
use crate::error::{CandleContext, Error, Result};
use crate::rope::RopeTable;
use state::LayerKv;
use weights::{DecoderLayer, Store};

/// Intermediate results of one forward call.
#[derive(Debug, Default, Clone)]
pub struct Taps {
    /// Output hidden state of every decoder layer, `[S, H]` f32 each.
    pub layer_outputs: Vec<Tensor>,
    /// Hidden state after the final norm, `[S, H]` f32.
    pub final_hidden: Option<Tensor>,
}

/// K/V one layer attends over: `[kv, T, D]` each, key `t` at absolute position `start + t`.
#[derive(Clone)]
struct AttendKv {
    k: Tensor,
    v: Tensor,
    start: usize,
}

/// The loaded reference model.
#[derive(Debug, Clone)]
pub struct Reference {
    config: Gemma4Config,
    dtype: DType,
    store: Store,
    rope: BTreeMap<LayerType, RopeTable>,
}

impl Reference {
    /// Load every weight of `ckpt` into compute dtype `dtype` (F32, F16 or BF16).
    pub fn load(ckpt: &Checkpoint, dtype: DType) -> Result<Reference> {
        Self::check_dtype(dtype)?;
        Self::with_store(ckpt.config().clone(), dtype, Store::resident(ckpt, dtype)?)
    }

    /// Keep `ckpt` memory-mapped and read weights when a forward call needs them: the embedding
    /// and PLE rows of its ids, one decoder layer at a time, the LM head in slabs of vocabulary
    /// rows. Same numbers as [`Reference::load`]; memory beyond the KV caches stays at about one
    /// layer's weights in the compute dtype, whatever the model size.
    pub fn load_streaming(ckpt: Checkpoint, dtype: DType) -> Result<Reference> {
        Self::check_dtype(dtype)?;
        let config = ckpt.config().clone();
        let store = Store::streamed(Arc::new(ckpt), dtype)?;
        Self::with_store(config, dtype, store)
    }

    fn check_dtype(dtype: DType) -> Result<()> {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::BadInput {
                reason: format!("reference compute dtype must be f32, f16 or bf16, not {dtype:?}"),
            });
        }
        Ok(())
    }

    fn with_store(config: Gemma4Config, dtype: DType, store: Store) -> Result<Reference> {
        let rope = crate::rope::tables(&config)?;
        Ok(Reference {
            config,
            dtype,
            store,
            rope,
        })
    }

    /// The model's config.
    pub fn config(&self) -> &Gemma4Config {
        &self.config
    }

    /// Compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// An empty KV state for a new sequence.
    pub fn new_state(&self) -> KvState {
        KvState::new(self.config.num_hidden_layers(), self.dtype)
    }

    /// Run `ids` (at positions `state.pos()..`) through the model, updating `state`.
    /// Returns f32 logits `[S, V]`. With `taps`, its contents are replaced by this call's taps.
    pub fn forward(
        &self,
        ids: &[u32],
        state: &mut KvState,
        taps: Option<&mut Taps>,
    ) -> Result<Tensor> {
        self.forward_keep(ids, state, taps, ids.len())
    }

    /// Like [`Reference::forward`], but the LM head runs only on the last `keep` positions of the
    /// call (`1 ≤ keep ≤ ids.len()`): f32 logits `[keep, V]`. A long prompt whose earlier logits
    /// are not needed then costs neither the time nor the memory of `S × V` logits.
    pub fn forward_last(&self, ids: &[u32], state: &mut KvState, keep: usize) -> Result<Tensor> {
        if keep == 0 || keep > ids.len() {
            return Err(Error::BadInput {
                reason: format!(
                    "cannot keep the logits of {keep} of {} positions",
                    ids.len()
                ),
            });
        }
        self.forward_keep(ids, state, None, keep)
    }

    fn forward_keep(
        &self,
        ids: &[u32],
        state: &mut KvState,
        taps: Option<&mut Taps>,
        keep: usize,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        self.check_input(ids, state)?;
        let s = ids.len();
        let pos0 = state.pos;
        let dev = Device::Cpu;
        let ids_t = Tensor::from_vec(ids.to_vec(), s, &dev).ctx(|| "token ids".to_string())?;
        let h = cfg.hidden_size();

        // 1. embedding
        let x = self.store.embed(ids, &ids_t)?;
        let mut x = ops::scale_by_buffer(&x, (h as f32).sqrt(), "embed scale")?;

        // 2. per-layer inputs [S, L, P]
        let ple = self.per_layer_inputs(ids, &ids_t, &x)?;

        // 3. RoPE cos/sin per layer type, half-width [S, D/2] in the compute dtype
        let mut rope_cs = BTreeMap::new();
        for (t, table) in &self.rope {
            let (c, sn) = table.cos_sin(pos0, s);
            let d = table.head_dim;
            let half = d / 2;
            let mk = |v: Vec<f32>| -> Result<Tensor> {
                // the full-width rows are cat(f, f): keep the first half of each
                let v: Vec<f32> = v.chunks(d).flat_map(|r| r[..half].to_vec()).collect();
                Tensor::from_vec(v, (s, half), &dev)
                    .and_then(|t| t.to_dtype(self.dtype))
                    .ctx(|| format!("rope table {t}"))
            };
            rope_cs.insert(*t, (mk(c)?, mk(sn)?));
        }

        // 4. layers
        let mut shared: BTreeMap<LayerType, AttendKv> = BTreeMap::new();
        let mut layer_taps = Vec::new();
        let want_taps = taps.is_some();
        for i in 0..cfg.num_hidden_layers() {
            let layer = self.store.layer(cfg, i)?;
            let lc = &cfg.layers()[i];
            let (cos, sin) = rope_cs.get(&lc.layer_type).ok_or_else(|| Error::BadInput {
                reason: format!("no RoPE table for {}", lc.layer_type),
            })?;
            let ple_i = match &ple {
                Some(p) => Some(
                    p.narrow(1, i, 1)
                        .and_then(|t| t.squeeze(1))
                        .ctx(|| format!("layer {i} PLE slice"))?,
                ),
                None => None,
            };
            x = self.layer(
                i,
                &layer,
                &x,
                ple_i.as_ref(),
                cos,
                sin,
                pos0,
                state,
                &mut shared,
            )?;
            if want_taps {
                layer_taps.push(x.to_dtype(DType::F32).ctx(|| format!("layer {i} tap"))?);
            }
        }

        // 5. final norm, lm_head (last `keep` rows), softcap
        let xn = ops::rms_norm(
            &x,
            Some(self.store.norm()),
            cfg.rms_norm_eps(),
            "final norm",
        )?;
        let xk = xn
            .narrow(0, s - keep, keep)
            .ctx(|| "kept positions".to_string())?;
        let logits = self.store.lm_head(cfg, &xk)?;
        let mut logits = logits
            .to_dtype(DType::F32)
            .ctx(|| "logits to f32".to_string())?;
        if let Some(c) = cfg.final_logit_softcapping() {
            logits = logits
                .affine(1.0 / c, 0.0)
                .and_then(|t| t.tanh())
                .and_then(|t| t.affine(c, 0.0))
                .ctx(|| "final softcap".to_string())?;
        }
        if let Some(t) = taps {
            t.layer_outputs = layer_taps;
            t.final_hidden = Some(
                xn.to_dtype(DType::F32)
                    .ctx(|| "final hidden tap".to_string())?,
            );
        }
        state.pos += s;
        Ok(logits)
    }

    fn check_input(&self, ids: &[u32], state: &KvState) -> Result<()> {
        let cfg = &self.config;
        if ids.is_empty() {
            return Err(Error::BadInput {
                reason: "no token ids".into(),
            });
        }
        if state.layers.len() != cfg.num_hidden_layers() || state.dtype != self.dtype {
            return Err(Error::BadInput {
                reason: "KV state was made by another model or dtype".into(),
            });
        }
        let limit = if cfg.has_ple() {
            cfg.vocab_size().min(cfg.vocab_size_per_layer_input())
        } else {
            cfg.vocab_size()
        };
        if let Some((p, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= limit)
        {
            return Err(Error::BadInput {
                reason: format!("token id {id} at index {p} is out of range (vocabulary {limit})"),
            });
        }
        Ok(())
    }

    /// PLE inputs `[S, L, P]` (or `None` without PLE).
    fn per_layer_inputs(&self, ids: &[u32], ids_t: &Tensor, x: &Tensor) -> Result<Option<Tensor>> {
        let cfg = &self.config;
        let (Some(tok), Some(w)) = (
            self.store.ple_tokens(ids, ids_t)?,
            self.store.ple_projection()?,
        ) else {
            return Ok(None);
        };
        let (l, p, h) = (
            cfg.num_hidden_layers(),
            cfg.hidden_size_per_layer_input(),
            cfg.hidden_size(),
        );
        let s = x.dim(0).ctx(|| "PLE".to_string())?;
        let tok = ops::scale_by_buffer(&tok, (p as f32).sqrt(), "PLE token scale")?
            .reshape((s, l, p))
            .ctx(|| "PLE token reshape".to_string())?;
        let ctx = ops::linear(
            x,
            &w.per_layer_model_projection,
            "per_layer_model_projection",
        )?;
        let ctx = ops::scale_by_float(&ctx, (h as f64).powf(-0.5), "PLE projection scale")?
            .reshape((s, l, p))
            .ctx(|| "PLE projection reshape".to_string())?;
        let ctx = ops::rms_norm(
            &ctx,
            Some(&w.per_layer_projection_norm),
            cfg.rms_norm_eps(),
            "per_layer_projection_norm",
        )?;
        let sum = ctx.add(&tok).ctx(|| "PLE sum".to_string())?;
        Ok(Some(ops::scale_by_float(
            &sum,
            0.5f64.sqrt(),
            "PLE combine scale",
        )?))
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        i: usize,
        w: &DecoderLayer,
        x: &Tensor,
        ple: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
        pos0: usize,
        state: &mut KvState,
        shared: &mut BTreeMap<LayerType, AttendKv>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let eps = cfg.rms_norm_eps();
        let op = |what: &str| format!("layer {i} {what}");

        // attention block
        let h = ops::rms_norm(x, Some(&w.input_layernorm), eps, &op("input_layernorm"))?;
        let attn = self.attention(i, w, &h, cos, sin, pos0, state, shared)?;
        let attn = ops::rms_norm(
            &attn,
            Some(&w.post_attention_layernorm),
            eps,
            &op("post_attention_layernorm"),
        )?;
        let x = x.add(&attn).ctx(|| op("attention residual"))?;

        // MLP block
        let h = ops::rms_norm(
            &x,
            Some(&w.pre_feedforward_layernorm),
            eps,
            &op("pre_feedforward_layernorm"),
        )?;
        let gate = ops::linear(&h, &w.mlp.gate_proj, &op("gate_proj"))?;
        let up = ops::linear(&h, &w.mlp.up_proj, &op("up_proj"))?;
        let act = ops::gelu_tanh(&gate, &op("mlp"))?
            .mul(&up)
            .ctx(|| op("gate·up"))?;
        let down = ops::linear(&act, &w.mlp.down_proj, &op("down_proj"))?;
        let down = ops::rms_norm(
            &down,
            Some(&w.post_feedforward_layernorm),
            eps,
            &op("post_feedforward_layernorm"),
        )?;
        let mut x = x.add(&down).ctx(|| op("mlp residual"))?;

        // per-layer input block
        if let (Some(pw), Some(ple)) = (&w.per_layer, ple) {
            let g = ops::linear(&x, &pw.per_layer_input_gate, &op("per_layer_input_gate"))?;
            let g = ops::gelu_tanh(&g, &op("per_layer_input_gate"))?
                .mul(ple)
                .ctx(|| op("PLE gate"))?;
            let g = ops::linear(&g, &pw.per_layer_projection, &op("per_layer_projection"))?;
            let g = ops::rms_norm(
                &g,
                Some(&pw.post_per_layer_input_norm),
                eps,
                &op("post_per_layer_input_norm"),
            )?;
            x = x.add(&g).ctx(|| op("PLE residual"))?;
        }
        x.broadcast_mul(&w.layer_scalar).ctx(|| op("layer_scalar"))
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        i: usize,
        w: &DecoderLayer,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        pos0: usize,
        state: &mut KvState,
        shared: &mut BTreeMap<LayerType, AttendKv>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let lc = &cfg.layers()[i];
        let (s, nh, d, kvh) = (
            h.dim(0).ctx(|| format!("layer {i}"))?,
            cfg.num_attention_heads(),
            lc.head_dim,
            lc.num_kv_heads,
        );
        let eps = cfg.rms_norm_eps();
        let op = |what: &str| format!("layer {i} {what}");
        let a = &w.self_attn;

        let q = ops::linear(h, &a.q_proj, &op("q_proj"))?
            .reshape((s, nh, d))
            .ctx(|| op("q reshape"))?;
        let q = ops::rms_norm(&q, Some(&a.q_norm), eps, &op("q_norm"))?;
        let q = ops::apply_rope(&q, cos, sin, &op("q"))?;
        let q = q
            .transpose(0, 1)
            .and_then(|t| t.contiguous())
            .ctx(|| op("q transpose"))?; // [nh, S, D]

        let kv = match lc.kv_source {
            KvSource::Own { stores } => {
                let (Some(k_proj), Some(k_norm)) = (&a.k_proj, &a.k_norm) else {
                    return Err(Error::BadInput {
                        reason: op("has no k_proj / k_norm"),
                    });
                };
                let k_raw = ops::linear(h, k_proj, &op("k_proj"))?
                    .reshape((s, kvh, d))
                    .ctx(|| op("k reshape"))?;
                let v_raw = match &a.v_proj {
                    Some(v_proj) => ops::linear(h, v_proj, &op("v_proj"))?
                        .reshape((s, kvh, d))
                        .ctx(|| op("v reshape"))?,
                    None => k_raw.clone(), // attention_k_eq_v: V is the raw K projection
                };
                let k = ops::rms_norm(&k_raw, Some(k_norm), eps, &op("k_norm"))?;
                let k = ops::apply_rope(&k, cos, sin, &op("k"))?;
                let v = ops::rms_norm(&v_raw, None, eps, &op("v_norm"))?;
                let k = k
                    .transpose(0, 1)
                    .and_then(|t| t.contiguous())
                    .ctx(|| op("k transpose"))?;
                let v = v
                    .transpose(0, 1)
                    .and_then(|t| t.contiguous())
                    .ctx(|| op("v transpose"))?;
                let slot = state.layers.get_mut(i).ok_or_else(|| Error::BadInput {
                    reason: op("no KV slot"),
                })?;
                let (k_all, v_all, start) = match slot.take() {
                    Some(past) => {
                        let t0 = past.k.dim(1).ctx(|| op("cache"))?;
                        let k_all = Tensor::cat(&[&past.k, &k], 1).ctx(|| op("cache append k"))?;
                        let v_all = Tensor::cat(&[&past.v, &v], 1).ctx(|| op("cache append v"))?;
                        (k_all, v_all, pos0 - t0)
                    }
                    None => (k, v, pos0),
                };
                let total = k_all.dim(1).ctx(|| op("cache"))?;
                let keep = match lc.layer_type {
                    LayerType::Full => total,
                    LayerType::Sliding => total.min(cfg.sliding_window() - 1),
                };
                let stored = LayerKv {
                    k: k_all
                        .narrow(1, total - keep, keep)
                        .ctx(|| op("cache trim k"))?,
                    v: v_all
                        .narrow(1, total - keep, keep)
                        .ctx(|| op("cache trim v"))?,
                };
                *slot = Some(stored);
                let kv = AttendKv {
                    k: k_all,
                    v: v_all,
                    start,
                };
                if stores {
                    shared.insert(lc.layer_type, kv.clone());
                }
                kv
            }
            KvSource::Shared { producer } => {
                shared
                    .get(&lc.layer_type)
                    .cloned()
                    .ok_or_else(|| Error::BadInput {
                        reason: format!(
                            "layer {i}: producer layer {producer} published no K/V this step"
                        ),
                    })?
            }
        };

        let t = kv.k.dim(1).ctx(|| op("kv"))?;
        let n_rep = nh / kvh;
        // group query heads by KV head: head j uses KV head j / n_rep
        let qg = q.reshape((kvh, n_rep * s, d)).ctx(|| op("q group"))?;
        let kt = kv.k.transpose(1, 2).ctx(|| op("k transpose"))?;
        let scores = qg
            .matmul(&kt)
            .and_then(|t| t.reshape((nh, s, t.dim(2)?)))
            .and_then(|t| t.to_dtype(DType::F32))
            .ctx(|| op("attention scores"))?;
        let mask = self.mask(lc.layer_type, pos0, s, kv.start, t)?;
        let scores = scores.broadcast_add(&mask).ctx(|| op("attention mask"))?;
        let p = ops::softmax_f32(&scores, &op("attention"))?
            .to_dtype(self.dtype)
            .and_then(|p| p.reshape((kvh, n_rep * s, t)))
            .ctx(|| op("attention probs"))?;
        let o = p
            .matmul(&kv.v)
            .and_then(|o| o.reshape((nh, s, d)))
            .and_then(|o| o.transpose(0, 1))
            .and_then(|o| o.reshape((s, nh * d)))
            .ctx(|| op("attention output"))?;
        ops::linear(&o, &a.o_proj, &op("o_proj"))
    }

    /// Additive mask `[S, T]`: query `r` (position `pos0 + r`) sees key `c` (position
    /// `start + c`) iff the key is not in the future and, on sliding layers, fewer than W
    /// positions back.
    fn mask(
        &self,
        t: LayerType,
        pos0: usize,
        s: usize,
        start: usize,
        len: usize,
    ) -> Result<Tensor> {
        let w = self.config.sliding_window();
        let mut m = vec![0f32; s * len];
        for r in 0..s {
            let qp = pos0 + r;
            for c in 0..len {
                let kp = start + c;
                let visible = kp <= qp && (t == LayerType::Full || qp - kp < w);
                if !visible {
                    m[r * len + c] = f32::NEG_INFINITY;
                }
            }
        }
        Tensor::from_vec(m, (s, len), &Device::Cpu).ctx(|| format!("{t} mask"))
    }
}
