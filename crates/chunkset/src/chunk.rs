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

/// The layer facts every chunk's role follows from: each layer's kind and whether it owns its KV
/// (the last `num_kv_shared_layers` layers read the KV of their kind's producer instead). The
/// writer derives it from the checkpoint's layout, a reader from `model_config.json`; both get
/// their chunk specs here, so the two cannot drift apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerStack {
    kinds: Vec<LayerKind>,
    owns_kv: Vec<bool>,
    per_layer_inputs: bool,
}

impl LayerStack {
    /// `kinds[i]` and `owns_kv[i]` describe layer `i` (equal lengths); `per_layer_inputs` is true
    /// when the model has per-layer embeddings (the chunk holding layer 0 computes them).
    ///
    /// # Panics
    /// If the two slices differ in length (a caller's bug, not input).
    pub fn new(kinds: Vec<LayerKind>, owns_kv: Vec<bool>, per_layer_inputs: bool) -> LayerStack {
        assert_eq!(kinds.len(), owns_kv.len(), "one KV fact per layer");
        LayerStack {
            kinds,
            owns_kv,
            per_layer_inputs,
        }
    }

    /// Layers `0..first_shared` own their KV, the rest share: the Gemma 4 layout.
    pub fn with_shared_suffix(
        kinds: Vec<LayerKind>,
        first_shared: usize,
        per_layer_inputs: bool,
    ) -> LayerStack {
        let owns_kv = (0..kinds.len()).map(|i| i < first_shared).collect();
        LayerStack::new(kinds, owns_kv, per_layer_inputs)
    }

    pub fn num_layers(&self) -> usize {
        self.kinds.len()
    }

    /// The first layer that reads another layer's KV (`num_layers` when none does).
    pub fn first_shared(&self) -> usize {
        self.owns_kv
            .iter()
            .position(|o| !o)
            .unwrap_or(self.kinds.len())
    }

    /// The producer of `kind`: its last KV-owning layer before the first shared one.
    pub fn producer(&self, kind: LayerKind) -> Option<usize> {
        (0..self.first_shared())
            .rev()
            .find(|&i| self.kinds[i] == kind && self.owns_kv[i])
    }

    /// The KV slots of the KV-owning layers in `range` (clamped to the stack): sliding and full
    /// slots each numbered in layer order.
    pub fn kv_slots(&self, range: &Range<usize>) -> Vec<KvSlot> {
        let mut next = [0usize; 2];
        (range.start..range.end.min(self.kinds.len()))
            .filter(|&i| self.owns_kv[i])
            .map(|i| {
                let kind = self.kinds[i];
                let n = &mut next[usize::from(kind == LayerKind::Full)];
                *n += 1;
                KvSlot {
                    layer: i,
                    kind,
                    slot: *n - 1,
                }
            })
            .collect()
    }

    /// The chunk specs of consecutive layer ranges `cuts` (name, layers): slots, per-layer inputs,
    /// shared-KV roles and the head.
    pub fn chunk_specs<S: AsRef<str>>(&self, cuts: &[(S, Range<usize>)]) -> Vec<ChunkSpec> {
        let l = self.kinds.len();
        let producers = LayerKind::ALL.map(|k| self.producer(k));
        let has_consumers = |r: &Range<usize>| (r.start..r.end.min(l)).any(|i| !self.owns_kv[i]);
        cuts.iter()
            .enumerate()
            .map(|(ci, (name, range))| {
                let kv_slots = self.kv_slots(range);
                let count = |kind: LayerKind| kv_slots.iter().filter(|s| s.kind == kind).count();
                let owns = !kv_slots.is_empty();
                let slots = |kind| if owns { count(kind).max(1) } else { 0 };
                let holds_producers = producers
                    .iter()
                    .any(|p| p.is_some_and(|p| range.contains(&p)));
                let later_consumers = cuts[ci + 1..].iter().any(|(_, r)| has_consumers(r));
                ChunkSpec {
                    name: name.as_ref().to_string(),
                    layers: range.clone(),
                    sliding_slots: slots(LayerKind::Sliding),
                    full_slots: slots(LayerKind::Full),
                    kv_slots,
                    computes_ple: range.start == 0 && self.per_layer_inputs,
                    reads_shared_kv: has_consumers(range) && !holds_producers,
                    emits_shared_kv: holds_producers && later_consumers,
                    has_head: range.end == l,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LayerKind::{Full as F, Sliding as S};

    /// A 4:1 pattern of 10 layers, the last 4 sharing: producers 4 (sliding) and 5 (full).
    fn stack() -> LayerStack {
        let kinds = vec![S, S, S, S, F, S, S, S, S, F];
        LayerStack::with_shared_suffix(kinds, 6, true)
    }

    #[test]
    fn producers_are_the_last_kv_owning_layers_of_each_kind() {
        let s = stack();
        assert_eq!(s.first_shared(), 6);
        assert_eq!(s.producer(S), Some(5));
        assert_eq!(s.producer(F), Some(4));
        let none_shared = LayerStack::with_shared_suffix(vec![S, F], 2, false);
        assert_eq!(none_shared.first_shared(), 2);
        assert_eq!(none_shared.producer(F), Some(1));
    }

    #[test]
    fn chunk_roles_follow_from_the_cuts() {
        let s = stack();
        let specs = s.chunk_specs(&[("a", 0..3), ("b", 3..6), ("c", 6..8), ("d", 8..10)]);
        let roles: Vec<_> = specs
            .iter()
            .map(|c| {
                (
                    c.sliding_slots,
                    c.full_slots,
                    c.computes_ple,
                    c.reads_shared_kv,
                    c.emits_shared_kv,
                    c.has_head,
                )
            })
            .collect();
        assert_eq!(
            roles,
            vec![
                (3, 1, true, false, false, false),
                (2, 1, false, false, true, false),
                (0, 0, false, true, false, false),
                (0, 0, false, true, false, true),
            ]
        );
        assert_eq!(specs[1].layer_in_slot(F, 0), Some(4));
        assert_eq!(specs[1].layer_in_slot(S, 1), Some(5));
        // one chunk holding everything: producers and consumers together, nothing handed over
        let one = s.chunk_specs(&[("all", 0..10)]);
        assert!(!one[0].reads_shared_kv && !one[0].emits_shared_kv && one[0].has_head);
    }
}
