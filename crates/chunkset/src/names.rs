//! Every name the writer and the runtime must agree on: chunk inputs and outputs, the hand-over
//! between chunks, and the side files. Names are the reference pipeline's (the Swift runtime binds
//! them literally), including the opaque `kv13_*` / `kv14_*` of the shared-KV producers.

use crate::kinds::LayerKind;

/// The step's hidden state (`[1, S, H]`), the scaled token embedding for the first chunk.
pub const HIDDEN_STATES: &str = "hidden_states";
/// A chunk's output hidden state, handed to the next chunk as [`HIDDEN_STATES`].
pub const HIDDEN_STATES_OUT: &str = "hidden_states_out";
/// The scaled per-layer embedding rows, input of the chunk that computes the PLE.
pub const PER_LAYER_RAW: &str = "per_layer_raw";
/// The combined per-layer input, input of every later chunk.
pub const PER_LAYER_COMBINED: &str = "per_layer_combined";
/// Output of the chunk that computes the PLE, handed over as [`PER_LAYER_COMBINED`].
pub const PER_LAYER_COMBINED_OUT: &str = "per_layer_combined_out";
/// Decode: one-hot `[1, 1, C, 1]` of the position a positional cache writes.
pub const UPDATE_MASK: &str = "update_mask";
/// Verify: `[1, 1, C, K]`, column `j` one-hot at position `p + j`.
pub const UPDATE_INDICATOR: &str = "update_indicator";
/// Prefill: the strictly causal `[1, 1, N, N]` mask.
pub const CAUSAL_MASK: &str = "causal_mask";
/// Prefill, head chunk: one-hot `[1, N, 1]` at the last real position.
pub const LAST_POSITION_MASK: &str = "last_position_mask";
/// Head chunk, decode and prefill: in-graph argmax `[1]` (int32).
pub const TOKEN_ID: &str = "token_id";
/// Head chunk, decode and prefill: the logit of [`TOKEN_ID`] `[1]`.
pub const TOKEN_LOGIT: &str = "token_logit";
/// Head chunk, verify: argmax per position `[1, K]` (int32).
pub const TOKEN_IDS: &str = "token_ids";
/// The softcapped, pre-argmax logits value inside the head chunk (read by parity through taps).
pub const LOGITS: &str = "logits";
/// Stateful sets, head chunk: the final-normed hidden state of the last row `[1, 1, H]`.
pub const HIDDEN_NORMED: &str = "hidden_normed";
/// Stateful sets: the absolute position of the call's first row (`[1]` int32, the full caches'
/// write slot).
pub const CURRENT_POS: &str = "current_pos";
/// Stateful sets: `current_pos mod W` (`[1]` int32, the sliding ring's write slot).
pub const RING_POS: &str = "ring_pos";
/// Stateful `prefill_b<T>`, head chunk: the final-normed hidden state of every row `[1, T, H]` (an
/// internal value read by parity through taps; the last row is [`HIDDEN_NORMED`]).
pub const NORMED_ROWS: &str = "final_norm_out";
/// Head chunk: the LM head weight `[V, H, 1, 1]` (after any LUT expansion; read through taps).
pub const LM_HEAD_WEIGHT: &str = "lm_head_weight";
/// Verify, head chunk, with the `verify-logits` tap: the softcapped logits `[1, K, V]` in fp16
/// (CoreML-LLM's `verifyCandidatesWithLogits` reads it).
pub const LOGITS_FP16: &str = "logits_fp16";

/// Decode, with the `eagle3` tap: the output hidden state of layer `layer` (after its
/// `layer_scalar`, before any later layer or the final norm), `[1, 1, H]`, named as CoreML-LLM's
/// EAGLE-3 path reads it (`hidden_at_L8`, `hidden_at_L17`, `hidden_at_L34` on E2B).
pub fn hidden_at(layer: usize) -> String {
    format!("hidden_at_L{layer}")
}

/// `K` or `V` of a KV pair.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvPart {
    K,
    V,
}

impl KvPart {
    /// Both, K first.
    pub const BOTH: [KvPart; 2] = [KvPart::K, KvPart::V];

    /// `K` or `V`.
    pub fn letter(self) -> &'static str {
        match self {
            KvPart::K => "K",
            KvPart::V => "V",
        }
    }
}

impl LayerKind {
    /// The decode / verify attention mask of this kind (`causal_mask_sliding`, `causal_mask_full`).
    pub fn causal_mask(self) -> &'static str {
        match self {
            LayerKind::Sliding => "causal_mask_sliding",
            LayerKind::Full => "causal_mask_full",
        }
    }

    /// The RoPE row inputs `(cos, sin)` of this kind (`cos_s`, `sin_s` / `cos_f`, `sin_f`).
    pub fn rope_inputs(self) -> (&'static str, &'static str) {
        match self {
            LayerKind::Sliding => ("cos_s", "sin_s"),
            LayerKind::Full => ("cos_f", "sin_f"),
        }
    }

    /// Stateful sets: the state holding this kind's KV (`kv_cache_sliding`, `kv_cache_full`).
    pub fn state(self) -> &'static str {
        match self {
            LayerKind::Sliding => "kv_cache_sliding",
            LayerKind::Full => "kv_cache_full",
        }
    }

    /// Stateful sets: the write position input of this kind (`ring_pos`, `current_pos`).
    pub fn write_pos(self) -> &'static str {
        match self {
            LayerKind::Sliding => RING_POS,
            LayerKind::Full => CURRENT_POS,
        }
    }

    /// The shared-KV names `(k, v)` of this kind's producer (`kv13_*` sliding, `kv14_*` full).
    pub fn shared_kv(self) -> (&'static str, &'static str) {
        match self {
            LayerKind::Sliding => ("kv13_k", "kv13_v"),
            LayerKind::Full => ("kv14_k", "kv14_v"),
        }
    }

    /// A decode chunk's persistent cache buffer of this kind: `K_sliding_in`, `V_full_out`, ...
    pub fn cache(self, part: KvPart, dir: Dir) -> String {
        format!("{}_{}_{}", part.letter(), self.label(), dir.suffix())
    }

    /// Verify: the new rows of this kind, `new_K_sliding`, ...
    pub fn new_rows(self, part: KvPart) -> String {
        format!("new_{}_{}", part.letter(), self.label())
    }

    /// The RoPE side file of this kind, `cos_sliding.npy`, `sin_full.npy`.
    pub fn rope_file(self, table: RopeTable) -> String {
        format!("{}_{}.npy", table.name(), self.label())
    }
}

/// Input or output side of a cache buffer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    In,
    Out,
}

impl Dir {
    /// `in` or `out`.
    pub fn suffix(self) -> &'static str {
        match self {
            Dir::In => "in",
            Dir::Out => "out",
        }
    }
}

/// Which RoPE table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum RopeTable {
    Cos,
    Sin,
}

impl RopeTable {
    /// `cos` then `sin`.
    pub const BOTH: [RopeTable; 2] = [RopeTable::Cos, RopeTable::Sin];

    /// `cos` or `sin`.
    pub fn name(self) -> &'static str {
        match self {
            RopeTable::Cos => "cos",
            RopeTable::Sin => "sin",
        }
    }
}

/// The RoPE row input of `kind` and `table` (`cos_s`, ...).
pub fn rope_input(kind: LayerKind, table: RopeTable) -> &'static str {
    let (cos, sin) = kind.rope_inputs();
    match table {
        RopeTable::Cos => cos,
        RopeTable::Sin => sin,
    }
}

/// The kind and table of a RoPE row input, if `input` is one.
pub fn rope_of_input(input: &str) -> Option<(LayerKind, RopeTable)> {
    LayerKind::ALL.into_iter().find_map(|kind| {
        RopeTable::BOTH
            .into_iter()
            .find(|&t| rope_input(kind, t) == input)
            .map(|t| (kind, t))
    })
}

/// Prefill: the K/V outputs `K{j}` / `V{j}` of the `j`-th layer of a prefill chunk.
pub fn prefill_kv(j: usize) -> (String, String) {
    (format!("K{j}"), format!("V{j}"))
}

/// The earlier output an input is handed over from (`hidden_states` ← `hidden_states_out`,
/// `per_layer_combined` ← `per_layer_combined_out`; shared KV keeps its name).
pub fn handoff_source(input: &str) -> &str {
    match input {
        HIDDEN_STATES => HIDDEN_STATES_OUT,
        PER_LAYER_COMBINED => PER_LAYER_COMBINED_OUT,
        other => other,
    }
}

/// The decode cache buffer an output replaces (`K_sliding_out` → `K_sliding_in`), if it is one.
pub fn cache_input_of(output: &str) -> Option<String> {
    LayerKind::ALL.into_iter().find_map(|kind| {
        KvPart::BOTH
            .into_iter()
            .find(|&p| kind.cache(p, Dir::Out) == output)
            .map(|p| kind.cache(p, Dir::In))
    })
}

/// True if `input` is a decode cache buffer (`K_sliding_in`, ...).
pub fn is_cache_input(input: &str) -> bool {
    LayerKind::ALL.into_iter().any(|kind| {
        KvPart::BOTH
            .into_iter()
            .any(|p| kind.cache(p, Dir::In) == input)
    })
}

/// Stem of the int8 token embedding side files.
pub const EMBED_TOKENS: &str = "embed_tokens";
/// Stem of the int8 per-layer embedding side files.
pub const EMBED_TOKENS_PER_LAYER: &str = "embed_tokens_per_layer";

/// The int8 table and its fp16 row scales of an embedding `stem`: `(<stem>_q8.bin,
/// <stem>_scales.bin)`.
pub fn int8_files(stem: &str) -> (String, String) {
    (format!("{stem}_q8.bin"), format!("{stem}_scales.bin"))
}

/// fp16 `[L·P, H]` PLE projection side file.
pub const PER_LAYER_PROJECTION_FILE: &str = "per_layer_projection.bin";
/// fp16 `[P]` PLE norm side file.
pub const PER_LAYER_NORM_FILE: &str = "per_layer_norm_weight.bin";
/// Directory of the checkpoint's config and tokenizer files.
pub const HF_MODEL_DIR: &str = "hf_model";
