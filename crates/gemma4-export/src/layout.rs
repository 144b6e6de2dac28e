//! `ModelLayout`: the facts about a Gemma 4 text decoder that chunk planning needs.
//!
//! Derived from the parsed config (see `gemma4::Gemma4Config`) but kept as plain data so plans can be
//! computed and tested without weights.

pub use chunkset::LayerKind;

/// The contract's kind of a `gemma4` layer type (`gemma4` does not depend on the contract; this is
/// the boundary).
pub fn layer_kind(t: gemma4::config::LayerType) -> LayerKind {
    match t {
        gemma4::config::LayerType::Sliding => LayerKind::Sliding,
        gemma4::config::LayerType::Full => LayerKind::Full,
    }
}

/// The `gemma4` layer type of a contract kind.
pub fn layer_type(k: LayerKind) -> gemma4::config::LayerType {
    match k {
        LayerKind::Sliding => gemma4::config::LayerType::Sliding,
        LayerKind::Full => gemma4::config::LayerType::Full,
    }
}

/// One decoder layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    pub kind: LayerKind,
    /// Head dim of this layer (sliding vs full differ on Gemma 4).
    pub head_dim: usize,
    /// KV heads of this layer.
    pub kv_heads: usize,
    /// MLP width of this layer (doubled on KV-shared layers with `use_double_wide_mlp`).
    pub intermediate: usize,
    /// `None` if the layer computes its own K/V, else the producer layer it reads K/V from.
    pub kv_source: Option<usize>,
}

/// Layout of the text decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelLayout {
    pub hidden: usize,
    pub num_heads: usize,
    pub vocab: usize,
    /// PLE width per layer (`hidden_size_per_layer_input`), 0 = no PLE.
    pub ple_dim: usize,
    pub sliding_window: usize,
    /// RMSNorm epsilon of every norm.
    pub rms_norm_eps: f64,
    /// Final logit softcap `c` (`logits = c·tanh(logits/c)`), if any.
    pub final_logit_softcapping: Option<f64>,
    /// The LM head is the embedding matrix (else a separate `lm_head.weight`).
    pub tie_word_embeddings: bool,
    pub layers: Vec<LayerInfo>,
}

impl ModelLayout {
    /// The layout of a parsed, validated Gemma 4 config.
    pub fn from_config(cfg: &gemma4::config::Gemma4Config) -> ModelLayout {
        use gemma4::config::KvSource;
        ModelLayout {
            hidden: cfg.hidden_size(),
            num_heads: cfg.num_attention_heads(),
            vocab: cfg.vocab_size(),
            ple_dim: if cfg.has_ple() {
                cfg.hidden_size_per_layer_input()
            } else {
                0
            },
            sliding_window: cfg.sliding_window(),
            rms_norm_eps: cfg.rms_norm_eps(),
            final_logit_softcapping: cfg.final_logit_softcapping(),
            tie_word_embeddings: cfg.tie_word_embeddings(),
            layers: cfg
                .layers()
                .iter()
                .map(|l| LayerInfo {
                    kind: layer_kind(l.layer_type),
                    head_dim: l.head_dim,
                    kv_heads: l.num_kv_heads,
                    intermediate: l.intermediate_size,
                    kv_source: match l.kv_source {
                        KvSource::Own { .. } => None,
                        KvSource::Shared { producer } => Some(producer),
                    },
                })
                .collect(),
        }
    }
}

impl ModelLayout {
    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// First KV-shared layer (`L − num_kv_shared_layers`); `L` when nothing is shared.
    pub fn first_shared(&self) -> usize {
        self.layers
            .iter()
            .position(|l| l.kv_source.is_some())
            .unwrap_or(self.layers.len())
    }

    /// The producer ("store") layer of a kind: the last KV-owning layer of that kind before the first
    /// shared layer.
    pub fn producer(&self, kind: LayerKind) -> Option<usize> {
        (0..self.first_shared())
            .rev()
            .find(|&i| self.layers[i].kind == kind && self.layers[i].kv_source.is_none())
    }

    /// Head dim of the sliding (resp. full) layers; the first layer of that kind decides.
    pub fn head_dim(&self, kind: LayerKind) -> Option<usize> {
        self.layers
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.head_dim)
    }

    /// KV heads of the layers of a kind.
    pub fn kv_heads(&self, kind: LayerKind) -> Option<usize> {
        self.layers
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.kv_heads)
    }

    /// The widest head dim: every KV cache slot is padded to it (the runtime's layout).
    pub fn max_head_dim(&self) -> usize {
        self.layers.iter().map(|l| l.head_dim).max().unwrap_or(0)
    }

    /// Checkpoint key of the LM head weight.
    pub fn lm_head_key(&self) -> &'static str {
        if self.tie_word_embeddings {
            "embed_tokens.weight"
        } else {
            "lm_head.weight"
        }
    }

    /// Total PLE width (`L · P`).
    pub fn ple_total(&self) -> usize {
        self.ple_dim * self.layers.len()
    }
}
