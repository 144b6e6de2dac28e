//! Variants: how the decoder is cut into chunks and how each attention kind keeps its KV (the
//! exporter's plan turns a variant into chunk boundaries and cache policies).

use crate::kinds::CachePolicy;
use serde::{Deserialize, Serialize};

/// How the decoder is cut and how full-attention KV is kept. Written into `manifest.json` as
/// `{"name": "wfa", "fw": 2048}`; `model_config.json` records [`Variant::name`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum Variant {
    /// 4 chunks, sliding layers keep a W-long shift register, full layers a ctx-long cache written by a
    /// one-hot `update_mask`.
    Swa4,
    /// 3 chunks: chunk1, chunk2+3 merged (`chunk2_3way`), chunk4 (`chunk3_3way`).
    Merged,
    /// 2 chunks: all KV-owning layers, all shared layers + head.
    Merged2,
    /// 1 chunk: everything.
    Merged1,
    /// Like swa4 but full layers keep a shift register of `fw` positions (windowed full attention).
    Wfa { fw: usize },
    /// Like swa4 but full attention is computed in blocks of `block` keys with an online softmax.
    Flash { block: usize },
    /// 2 chunks, every KV-owning layer keeps a ctx-long cache written by `update_mask`.
    Lite,
    /// 4 chunks `chunk_1` … `chunk_4` (the swa4 cut) whose KV caches are Core ML states: a ring of W
    /// slots (`kv_cache_sliding`) and ctx slots (`kv_cache_full`), written in place; for CoreML-LLM's
    /// `Gemma4StatefulEngine` (docs/STATEFUL.md).
    Stateful,
    /// 3 chunks `chunk_1`, `chunk_2` (the merged middle), `chunk_3` (the final chunk), stateful.
    Stateful3,
}

/// Which runtime loads a set of a variant. Every variant is loaded by gemma-convert's own host loop
/// ([`HOST_LOOP`]); `swift` names the path of the CoreML-LLM Swift runtime (`ChunkedEngine`, the
/// app's engine) that loads it, if any.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RuntimeSupport {
    /// The Swift runtime's path that loads the set (`None`: that runtime has no loader for it).
    pub swift: Option<&'static str>,
    /// What that runtime skips, or why it cannot load the set.
    pub note: &'static str,
}

/// gemma-convert's own runtime: `parity` and `bench` (mil-runtime's host loop, driven by
/// `model_config.json`'s plan facts), on the CPU interpreter or Core ML.
pub const HOST_LOOP: &str = "gemma-convert's host loop (parity, bench)";

/// Every variant name, in the order the CLI lists them.
pub const VARIANT_NAMES: [&str; 9] = [
    "swa4",
    "merged",
    "merged2",
    "merged1",
    "wfa",
    "flash",
    "lite",
    "stateful",
    "stateful3",
];

/// Full-attention window of `wfa` when none is given.
pub const DEFAULT_FW: usize = 2048;
/// Key block of `flash` when none is given.
pub const DEFAULT_FLASH_BLOCK: usize = 1024;

/// A variant name that is not one of [`VARIANT_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown variant `{0}` (expected one of swa4, merged, merged2, merged1, wfa, flash, lite, stateful, stateful3)"
)]
pub struct UnknownVariant(pub String);

impl Variant {
    /// The variant called `name`; `fw` / `flash_block` parameterise `wfa` / `flash` (defaults
    /// [`DEFAULT_FW`], [`DEFAULT_FLASH_BLOCK`]).
    pub fn parse(
        name: &str,
        fw: Option<usize>,
        flash_block: Option<usize>,
    ) -> Result<Variant, UnknownVariant> {
        Ok(match name {
            "swa4" => Variant::Swa4,
            "merged" => Variant::Merged,
            "merged2" => Variant::Merged2,
            "merged1" => Variant::Merged1,
            "wfa" => Variant::Wfa {
                fw: fw.unwrap_or(DEFAULT_FW),
            },
            "flash" => Variant::Flash {
                block: flash_block.unwrap_or(DEFAULT_FLASH_BLOCK),
            },
            "lite" => Variant::Lite,
            "stateful" => Variant::Stateful,
            "stateful3" => Variant::Stateful3,
            other => return Err(UnknownVariant(other.to_string())),
        })
    }

    /// Which runtime loads a set of this variant (from the CoreML-LLM Swift runtime's
    /// `ChunkedEngine.load` and `ModelDownloader` at the mirrored HEAD).
    pub fn runtime(&self) -> RuntimeSupport {
        match self {
            Variant::Swa4 => RuntimeSupport {
                swift: Some(
                    "ChunkedEngine, 4-chunk decode (chunk1..chunk4, the legacy layout), prefill_chunk1..4",
                ),
                note: "verify_qK is loaded (functionName) only with LLM_EAGLE3_ENABLE=1 or SPECULATIVE_PROFILE",
            },
            Variant::Flash { .. } => RuntimeSupport {
                swift: Some(
                    "ChunkedEngine, 4-chunk decode (chunk1..chunk4: the same I/O as swa4), prefill_chunk1..4",
                ),
                note: "flash decoding changes only the full-attention graphs",
            },
            Variant::Merged => RuntimeSupport {
                swift: Some(
                    "ChunkedEngine, Topology II (chunk1 + chunk2_3way + chunk3_3way, chosen by file presence; the app's default), prefill_chunk1..4",
                ),
                note: "verify_qK is not loaded: the engine looks for it in chunk1..chunk4 only; with --taps eagle3 it reads hidden_at_L8 (chunk2_3way) and hidden_at_L34 (chunk3_3way) but sets L17 to nil in this topology, so chunk2_3way's hidden_at_L17 goes unread",
            },
            Variant::Wfa { .. } => RuntimeSupport {
                swift: None,
                note: "ChunkedEngine rejects a chunk whose causal_mask_full width (fw) differs from context_length, and for fw = ctx it would still feed a left-aligned positional full mask and update_mask to the shift-register full cache; the reference's own WFA was only driven from Python (conversion/benchmark_wfa.py)",
            },
            Variant::Merged2 => RuntimeSupport {
                swift: None,
                note: "the 2-chunk loader (merged_chunk1 + merged_chunk2) exists only on the reference's branches, not at its HEAD",
            },
            Variant::Merged1 => RuntimeSupport {
                swift: None,
                note: "no loader at the reference's HEAD; its 35-layer merged_full failed to load on the iPhone ANE (docs/CHUNK_CONSOLIDATION_BENCH.md)",
            },
            Variant::Stateful => RuntimeSupport {
                swift: Some(
                    "Gemma4StatefulEngine, 4-chunk mode (chunk_1..chunk_4, KV in MLState; infer and prefill_b<T>)",
                ),
                note: "the stateful contract and host rules: docs/STATEFUL.md",
            },
            Variant::Stateful3 => RuntimeSupport {
                swift: Some(
                    "Gemma4StatefulEngine, 3-chunk mode (chunk_1..chunk_3, KV in MLState; infer and prefill_b<T>)",
                ),
                note: "the stateful contract and host rules: docs/STATEFUL.md",
            },
            Variant::Lite => RuntimeSupport {
                swift: None,
                note: "ChunkedEngine loads chunk1..; lite_chunk1/2 (every owning layer with a ctx-long positional cache) have no loader",
            },
        }
    }

    /// The name (`swa4`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Variant::Swa4 => "swa4",
            Variant::Merged => "merged",
            Variant::Merged2 => "merged2",
            Variant::Merged1 => "merged1",
            Variant::Wfa { .. } => "wfa",
            Variant::Flash { .. } => "flash",
            Variant::Lite => "lite",
            Variant::Stateful => "stateful",
            Variant::Stateful3 => "stateful3",
        }
    }

    /// True for the variants whose KV caches are Core ML states (`stateful`, `stateful3`).
    pub fn is_stateful(&self) -> bool {
        matches!(self, Variant::Stateful | Variant::Stateful3)
    }

    /// The decode chunks of a set of this variant, in call order (package stems; the runtime finds
    /// them by these names).
    pub fn chunk_names(&self) -> &'static [&'static str] {
        match self {
            Variant::Swa4 | Variant::Wfa { .. } | Variant::Flash { .. } => {
                &["chunk1", "chunk2", "chunk3", "chunk4"]
            }
            Variant::Merged => &["chunk1", "chunk2_3way", "chunk3_3way"],
            Variant::Merged2 => &["merged_chunk1", "merged_chunk2"],
            Variant::Lite => &["lite_chunk1", "lite_chunk2"],
            Variant::Merged1 => &["merged_full"],
            Variant::Stateful => &["chunk_1", "chunk_2", "chunk_3", "chunk_4"],
            Variant::Stateful3 => &["chunk_1", "chunk_2", "chunk_3"],
        }
    }

    /// How the sliding and the full layers keep their KV at context `ctx` with a sliding window of
    /// `window` positions (already capped at `ctx`): `(sliding, full)`. Shift registers of W for
    /// sliding layers (`lite`: ctx positional slots for both kinds; stateful variants: a ring of W
    /// in a state), ctx positional slots for full layers (`wfa`: a shift register of `fw`).
    pub fn cache_policies(&self, ctx: usize, window: usize) -> (CachePolicy, CachePolicy) {
        let sliding = CachePolicy::ShiftRegister { len: window };
        let positional = CachePolicy::Positional { len: ctx };
        match *self {
            Variant::Lite => (positional, positional),
            Variant::Wfa { fw } => (sliding, CachePolicy::ShiftRegister { len: fw }),
            Variant::Stateful | Variant::Stateful3 => {
                (CachePolicy::Ring { len: window }, positional)
            }
            Variant::Swa4
            | Variant::Merged
            | Variant::Merged2
            | Variant::Merged1
            | Variant::Flash { .. } => (sliding, positional),
        }
    }
}
