//! Explicit KV state of the reference forward.
//!
//! One slot per KV-owning layer (consumers hold nothing: they read their producer's K/V of the
//! same step). Keys are stored post-k_norm, post-RoPE; values post-v_norm; shape
//! `[kv_heads, T, head_dim]` in the compute dtype.
//!
//! * full-attention layers keep every past position;
//! * sliding layers keep at most `W − 1` past positions (the newest ones): together with the
//!   current token that is exactly the W keys a sliding query may see (as HF's sliding cache).
//!
//! The cached positions of a layer are always the most recent ones, so the absolute position of
//! cached entry `t` is `pos − cached_len + t`.

use candle_core::{DType, Tensor};

/// Cached K/V of one layer.
#[derive(Debug, Clone)]
pub(crate) struct LayerKv {
    /// `[kv_heads, T, D]`.
    pub k: Tensor,
    /// `[kv_heads, T, D]`.
    pub v: Tensor,
}

/// KV state of one sequence, created by [`crate::Reference::new_state`].
#[derive(Debug, Clone)]
pub struct KvState {
    pub(crate) pos: usize,
    pub(crate) dtype: DType,
    pub(crate) layers: Vec<Option<LayerKv>>,
}

impl KvState {
    pub(crate) fn new(num_layers: usize, dtype: DType) -> KvState {
        KvState {
            pos: 0,
            dtype,
            layers: vec![None; num_layers],
        }
    }

    /// Tokens consumed so far (= position of the next token).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Cached positions of layer `i` (0 for KV-shared layers and before the first token).
    pub fn cached_len(&self, i: usize) -> usize {
        self.layers
            .get(i)
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.k.dims().get(1).copied().unwrap_or(0))
    }

    /// Forget everything (start a new sequence).
    pub fn reset(&mut self) {
        self.pos = 0;
        for l in &mut self.layers {
            *l = None;
        }
    }
}
