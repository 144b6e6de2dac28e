//! One chunk of a set: its layers, the KV slots of its KV-owning layers, and the role facts its I/O
//! follows from.

use crate::kinds::LayerKind;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Layer `layer`'s K/V live in slot `slot` of a decode chunk's `K_<kind>_*` / `V_<kind>_*` buffers
/// (sliding slots and full slots each numbered in layer order). `model_config.json` lists them per
/// chunk (`chunks[].kv_slots`), what the Swift runtime re-derives in `buildKVSlotMap`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSlot {
    pub layer: usize,
    pub kind: LayerKind,
    /// Index into `K_sliding_*` (sliding) or `K_full_*` (full).
    pub slot: usize,
}

/// One KV output of a prefill chunk: the layer and the names of its K and V outputs
/// (`model_config.json`'s `prefill_chunks[].kv`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefillKv {
    pub layer: usize,
    pub kind: LayerKind,
    pub k: String,
    pub v: String,
}

/// One chunk of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkSpec {
    /// Package stem (`chunk1` → `chunk1.mlpackage`).
    pub name: String,
    pub layers: Range<usize>,
    /// KV slots of the layers that own KV, sliding slots and full slots each numbered in layer order.
    pub kv_slots: Vec<KvSlot>,
    /// Number of sliding / full slots in the KV tensors (at least 1 each when the chunk owns KV).
    pub sliding_slots: usize,
    pub full_slots: usize,
    /// Computes `per_layer_combined` from `per_layer_raw` (the chunk holding layer 0).
    pub computes_ple: bool,
    /// Reads `kv13_*` / `kv14_*` as inputs (has consumers, lacks the producers).
    pub reads_shared_kv: bool,
    /// Publishes `kv13_*` / `kv14_*` (holds the producers and a later chunk needs them).
    pub emits_shared_kv: bool,
    /// Holds the final norm, LM head, softcap and argmax.
    pub has_head: bool,
}

impl ChunkSpec {
    /// True if the chunk owns KV caches.
    pub fn owns_kv(&self) -> bool {
        !self.kv_slots.is_empty()
    }

    /// The slot of a KV-owning layer.
    pub fn slot_of(&self, layer: usize) -> Option<&KvSlot> {
        self.kv_slots.iter().find(|s| s.layer == layer)
    }

    /// Number of slots of `kind` in the chunk's KV tensors.
    pub fn slots(&self, kind: LayerKind) -> usize {
        match kind {
            LayerKind::Sliding => self.sliding_slots,
            LayerKind::Full => self.full_slots,
        }
    }

    /// The layer in slot `slot` of `kind`, if any.
    pub fn layer_in_slot(&self, kind: LayerKind, slot: usize) -> Option<usize> {
        self.kv_slots
            .iter()
            .find(|s| s.kind == kind && s.slot == slot)
            .map(|s| s.layer)
    }

    /// `[start, end)` as written in the side files.
    pub fn layer_bounds(&self) -> [usize; 2] {
        [self.layers.start, self.layers.end]
    }
}
