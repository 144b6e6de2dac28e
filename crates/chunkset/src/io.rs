//! The I/O contract of every function of a chunk: names, shapes and dtypes in declared order (every
//! shape static; `S` positions per call). The exporter emits exactly these; the runtime binds them.
//!
//! * `decode_q1` ([`IoContract::decode_io`], S = 1): the step function; caches in, updated caches out.
//! * `verify_qK` ([`IoContract::verify_io`], S = K, in the same packages): K draft positions against
//!   the cache of the positions before them ("11c" protocol). Caches are updated only inside the call
//!   (shift register: drop the oldest K rows, append the K new ones; positional: one-hot
//!   `update_indicator` `[1, 1, C, K]` scatters row j to the slot of position `p + j`) and not
//!   returned; the new per-position rows are returned at the true head dim (`new_K_sliding` /
//!   `new_V_sliding` `[slots, kv, K, D_s]`, `new_K_full` / `new_V_full` `[slots, kv, K, D_f]`) so the
//!   host commits only accepted positions. The head chunk returns `token_ids` `[1, K]` and its
//!   `hidden_states_out` is the pre-final-norm hidden.
//! * prefill (separate single-function packages `prefill_chunk{i}`, [`IoContract::prefill_io`],
//!   S = N): positions `0..N−1`, one `causal_mask` `[1, 1, N, N]`; every KV-owning layer returns its
//!   K/V `[1, kv, N, D]` (`K{j}` / `V{j}` with `j` = layer − first layer of the chunk, producers as
//!   `kv13_*` / `kv14_*`).
//! * stateful sets (`infer`, `prefill_b<T>`, [`IoContract::stateful_io`], S = 1 or T): the KV lives
//!   in the chunk's states ([`IoContract::states`]); KV-owning chunks take `current_pos` /
//!   `ring_pos`; the last chunk returns the last row's `token_id`, `token_logit`, `hidden_normed`
//!   (docs/STATEFUL.md).

use crate::chunk::{ChunkSpec, PrefillKv};
use crate::forms::{Taps, eagle3_layers};
use crate::function::FunctionKind;
use crate::kinds::{CachePolicy, LayerKind};
use crate::names::{self, Dir, KvPart, RopeTable};
use serde::{Deserialize, Serialize};

/// Element type of a chunk input or output.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDType {
    Float16,
    Float32,
    Int32,
}

impl IoDType {
    /// The name used in `reference-io/*.json` and in Core ML descriptions.
    pub fn as_str(self) -> &'static str {
        match self {
            IoDType::Float16 => "float16",
            IoDType::Float32 => "float32",
            IoDType::Int32 => "int32",
        }
    }
}

/// One named chunk input or output.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IoTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: IoDType,
}

/// The sizes of one attention kind.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct KindIo {
    /// Head dim of the layers of this kind (0 when there are none).
    pub head_dim: usize,
    /// KV heads of the layers of this kind (1 when there are none).
    pub kv_heads: usize,
    /// How the kind's KV is kept (its length is the mask length `T`).
    pub cache: CachePolicy,
}

/// The set-wide sizes and facts every function's I/O is derived from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct IoContract {
    /// Hidden size `H`.
    pub hidden: usize,
    /// Total PLE width `L·P` (0 = no PLE).
    pub ple_total: usize,
    /// Context length `C` (rows of `update_mask` / `update_indicator`).
    pub ctx: usize,
    /// dtype of every float input and output.
    pub float: IoDType,
    /// KV slot width of the decode caches (the widest head dim).
    pub slot_width: usize,
    pub sliding: KindIo,
    pub full: KindIo,
    /// Producer layers (`kv13_*` = sliding producer, `kv14_*` = full producer).
    pub sliding_producer: Option<usize>,
    pub full_producer: Option<usize>,
    /// Vocabulary size `V` (rows of `logits_fp16`).
    pub vocab: usize,
    /// Decoder layers `L` (the EAGLE-3 tap layers follow from it).
    pub num_layers: usize,
    /// Optional outputs.
    pub taps: Taps,
}

type Io = (Vec<IoTensor>, Vec<IoTensor>);

impl IoContract {
    /// The sizes of `kind`.
    pub fn kind(&self, kind: LayerKind) -> &KindIo {
        match kind {
            LayerKind::Sliding => &self.sliding,
            LayerKind::Full => &self.full,
        }
    }

    /// The producer layer of `kind`.
    pub fn producer(&self, kind: LayerKind) -> Option<usize> {
        match kind {
            LayerKind::Sliding => self.sliding_producer,
            LayerKind::Full => self.full_producer,
        }
    }

    /// The `hidden_at_L{l}` taps of `chunk`'s decode function: the EAGLE-3 layers it holds.
    pub fn eagle3_taps(&self, chunk: &ChunkSpec) -> Vec<usize> {
        if !self.taps.eagle3 {
            return Vec::new();
        }
        let mut v: Vec<usize> = eagle3_layers(self.num_layers)
            .into_iter()
            .filter(|l| chunk.layers.contains(l))
            .collect();
        v.dedup();
        v
    }

    /// True for a stateful set: the sliding KV is a ring in a Core ML state.
    pub fn is_stateful(&self) -> bool {
        matches!(self.sliding.cache, CachePolicy::Ring { .. })
    }

    /// True if decode feeds `update_mask` (some cache is positional and not in a state).
    pub fn uses_update_mask(&self) -> bool {
        !self.is_stateful()
            && (self.sliding.cache.is_positional() || self.full.cache.is_positional())
    }

    fn float(&self, name: &str, shape: Vec<usize>) -> IoTensor {
        IoTensor {
            name: name.to_string(),
            shape,
            dtype: self.float,
        }
    }

    fn int(name: &str, shape: Vec<usize>) -> IoTensor {
        IoTensor {
            name: name.to_string(),
            shape,
            dtype: IoDType::Int32,
        }
    }

    /// The PLE input of `chunk` (`per_layer_raw` for the chunk that computes the PLE).
    fn ple_input(chunk: &ChunkSpec) -> &'static str {
        if chunk.computes_ple {
            names::PER_LAYER_RAW
        } else {
            names::PER_LAYER_COMBINED
        }
    }

    /// RoPE rows of `s` positions: `cos_s`, `sin_s`, `cos_f`, `sin_f`, each `[1, 1, S, D]`.
    fn rope_rows(&self, s: usize) -> Vec<IoTensor> {
        LayerKind::ALL
            .into_iter()
            .flat_map(|kind| {
                RopeTable::BOTH.map(|t| {
                    self.float(
                        names::rope_input(kind, t),
                        vec![1, 1, s, self.kind(kind).head_dim],
                    )
                })
            })
            .collect()
    }

    /// `kv13_k`, `kv13_v`, `kv14_k`, `kv14_v`, each `[1, kv, T, D]` (`T` = `len(kind)`).
    fn shared_kv(&self, len: impl Fn(LayerKind) -> usize) -> Vec<IoTensor> {
        LayerKind::ALL
            .into_iter()
            .flat_map(|kind| {
                let k = self.kind(kind);
                let (kn, vn) = kind.shared_kv();
                let shape = vec![1, k.kv_heads, len(kind), k.head_dim];
                [self.float(kn, shape.clone()), self.float(vn, shape)]
            })
            .collect()
    }

    /// The I/O contract of `kind` for `chunk` (see [`IoContract::decode_io`],
    /// [`IoContract::verify_io`], [`IoContract::prefill_io`]).
    pub fn io(&self, chunk: &ChunkSpec, kind: FunctionKind) -> Io {
        match kind {
            FunctionKind::Decode => self.decode_io(chunk),
            FunctionKind::Verify { k } => self.verify_io(chunk, k),
            FunctionKind::Prefill { n } => self.prefill_io(chunk, n),
            FunctionKind::Stateful { t } => self.stateful_io(chunk, t),
        }
    }

    /// The states of a chunk of a stateful set, in declared order (none for chunks owning no KV):
    /// `kv_cache_sliding` `[2·ns, kv, W, D]`, `kv_cache_full` `[2·nf, kv, C, D]` (`D` the slot width;
    /// the i-th KV-owning layer of a kind has its K at index `2i`, its V at `2i + 1`; at least one
    /// pair per kind, as the reference allocates). Every function of the package declares them.
    pub fn states(&self, chunk: &ChunkSpec) -> Vec<IoTensor> {
        if !self.is_stateful() || !chunk.owns_kv() {
            return Vec::new();
        }
        LayerKind::ALL
            .into_iter()
            .map(|kind| {
                let k = self.kind(kind);
                let shape = vec![
                    2 * chunk.slots(kind),
                    k.kv_heads,
                    k.cache.len(),
                    self.slot_width,
                ];
                self.float(kind.state(), shape)
            })
            .collect()
    }

    /// The I/O of a stateful set's function of `t` positions (`infer` for 1, `prefill_b<t>`), the
    /// reference pipeline's (`build_gemma4_e2b_stateful_chunks.py`): inputs `hidden_states`
    /// `[1, T, H]`, `causal_mask_full` `[1, 1, T, C]`, `causal_mask_sliding` `[1, 1, T, W]`, [PLE
    /// `[1, T, L·P]`], RoPE rows `[1, 1, T, D]`, [`current_pos`, `ring_pos` `[1]` int32 (KV-owning
    /// chunks)], [`kv13_*` `[T, kv, W, Ds]`, `kv14_*` `[1, kv, C, Df]` (shared-KV readers)]; outputs
    /// `token_id` `[1]` int32, `token_logit` `[1]`, `hidden_normed` `[1, 1, H]` (head chunk, last
    /// row) or `hidden_states_out` `[1, T, H]`, [`per_layer_combined_out`], [`kv13_*`, `kv14_*`].
    /// `kv13_*` have one row per query (the sliding ring as that query sees it); the reference's
    /// have one row whatever `T`, which cannot be exact once a batch is past the window
    /// (docs/STATEFUL.md, *Deviation*). States: [`IoContract::states`].
    pub fn stateful_io(&self, chunk: &ChunkSpec, t: usize) -> Io {
        let (w, c) = (self.sliding.cache.len(), self.full.cache.len());
        let shared = || -> Vec<IoTensor> {
            LayerKind::ALL
                .into_iter()
                .flat_map(|kind| {
                    let k = self.kind(kind);
                    let (rows, len) = match kind {
                        LayerKind::Sliding => (t, w),
                        LayerKind::Full => (1, c),
                    };
                    let (kn, vn) = kind.shared_kv();
                    let shape = vec![rows, k.kv_heads, len, k.head_dim];
                    [self.float(kn, shape.clone()), self.float(vn, shape)]
                })
                .collect()
        };
        let mut ins = vec![self.float(names::HIDDEN_STATES, vec![1, t, self.hidden])];
        for kind in [LayerKind::Full, LayerKind::Sliding] {
            ins.push(self.float(
                kind.causal_mask(),
                vec![1, 1, t, self.kind(kind).cache.len()],
            ));
        }
        if self.ple_total > 0 {
            ins.push(self.float(Self::ple_input(chunk), vec![1, t, self.ple_total]));
        }
        ins.extend(self.rope_rows(t));
        if chunk.owns_kv() {
            ins.push(Self::int(names::CURRENT_POS, vec![1]));
            ins.push(Self::int(names::RING_POS, vec![1]));
        }
        if chunk.reads_shared_kv {
            ins.extend(shared());
        }
        let mut outs = Vec::new();
        if chunk.has_head {
            outs.push(Self::int(names::TOKEN_ID, vec![1]));
            outs.push(self.float(names::TOKEN_LOGIT, vec![1]));
            outs.push(self.float(names::HIDDEN_NORMED, vec![1, 1, self.hidden]));
        } else {
            outs.push(self.float(names::HIDDEN_STATES_OUT, vec![1, t, self.hidden]));
        }
        if chunk.computes_ple {
            outs.push(self.float(names::PER_LAYER_COMBINED_OUT, vec![1, t, self.ple_total]));
        }
        if chunk.emits_shared_kv {
            outs.extend(shared());
        }
        (ins, outs)
    }

    /// The decode (`decode_q1`) I/O contract of a chunk: inputs `hidden_states`,
    /// `causal_mask_full`, `causal_mask_sliding`, [`update_mask`], [PLE], RoPE rows, [KV caches in],
    /// [`kv13_*`, `kv14_*`]; outputs [`token_id`, `token_logit`], `hidden_states_out`, [KV caches
    /// out], [`kv13_*`, `kv14_*`], [`per_layer_combined_out`], [`hidden_at_L{l}` of the EAGLE-3
    /// layers the chunk holds, with the `eagle3` tap].
    pub fn decode_io(&self, chunk: &ChunkSpec) -> Io {
        let cache_len = |kind: LayerKind| self.kind(kind).cache.len();
        let mut ins = vec![self.float(names::HIDDEN_STATES, vec![1, 1, self.hidden])];
        for kind in [LayerKind::Full, LayerKind::Sliding] {
            ins.push(self.float(kind.causal_mask(), vec![1, 1, 1, cache_len(kind)]));
        }
        if self.uses_update_mask() {
            ins.push(self.float(names::UPDATE_MASK, vec![1, 1, self.ctx, 1]));
        }
        if self.ple_total > 0 {
            ins.push(self.float(Self::ple_input(chunk), vec![1, 1, self.ple_total]));
        }
        ins.extend(self.rope_rows(1));
        let caches = |dir: Dir| -> Vec<IoTensor> {
            LayerKind::ALL
                .into_iter()
                .flat_map(|kind| {
                    let k = self.kind(kind);
                    let shape = vec![
                        chunk.slots(kind),
                        k.kv_heads,
                        k.cache.len(),
                        self.slot_width,
                    ];
                    KvPart::BOTH.map(|part| self.float(&kind.cache(part, dir), shape.clone()))
                })
                .collect()
        };
        if chunk.owns_kv() {
            ins.extend(caches(Dir::In));
        }
        if chunk.reads_shared_kv {
            ins.extend(self.shared_kv(cache_len));
        }

        let mut outs = Vec::new();
        if chunk.has_head {
            outs.push(Self::int(names::TOKEN_ID, vec![1]));
            outs.push(self.float(names::TOKEN_LOGIT, vec![1]));
        }
        outs.push(self.float(names::HIDDEN_STATES_OUT, vec![1, 1, self.hidden]));
        if chunk.owns_kv() {
            outs.extend(caches(Dir::Out));
        }
        if chunk.emits_shared_kv {
            outs.extend(self.shared_kv(cache_len));
        }
        if chunk.computes_ple {
            outs.push(self.float(names::PER_LAYER_COMBINED_OUT, vec![1, 1, self.ple_total]));
        }
        for l in self.eagle3_taps(chunk) {
            outs.push(self.float(&names::hidden_at(l), vec![1, 1, self.hidden]));
        }
        (ins, outs)
    }

    /// The `verify_qK` I/O contract of a chunk for `k` positions (the reference pipeline's, §2.6):
    /// decode's inputs with `k` rows (`hidden_states` `[1, K, H]`, masks `[1, 1, K, T]`, RoPE rows
    /// `[1, 1, K, D]`, PLE `[1, K, L·P]`), `update_indicator` `[1, 1, C, K]` instead of `update_mask`
    /// (KV-owning chunks only); outputs `[token_ids]`, `hidden_states_out`,
    /// `[per_layer_combined_out]`, `[new_K_sliding, new_V_sliding, new_K_full, new_V_full]`,
    /// `[kv13_*, kv14_*]`, [`logits_fp16` `[1, K, V]` fp16 (head chunk, `verify-logits` tap)].
    pub fn verify_io(&self, chunk: &ChunkSpec, k: usize) -> Io {
        let (dec_ins, _) = self.decode_io(chunk);
        let mut ins = Vec::new();
        for d in dec_ins {
            let rope = names::rope_of_input(&d.name);
            let shape = match d.name.as_str() {
                names::HIDDEN_STATES => vec![1, k, self.hidden],
                names::UPDATE_MASK => {
                    if chunk.owns_kv() {
                        ins.push(self.float(names::UPDATE_INDICATOR, vec![1, 1, self.ctx, k]));
                    }
                    continue;
                }
                names::PER_LAYER_RAW | names::PER_LAYER_COMBINED => vec![1, k, self.ple_total],
                n => match (
                    rope,
                    LayerKind::ALL.into_iter().find(|x| x.causal_mask() == n),
                ) {
                    (Some((kind, _)), _) => vec![1, 1, k, self.kind(kind).head_dim],
                    (_, Some(kind)) => vec![1, 1, k, self.kind(kind).cache.len()],
                    _ => d.shape.clone(),
                },
            };
            ins.push(IoTensor { shape, ..d });
        }
        let mut outs = Vec::new();
        if chunk.has_head {
            outs.push(Self::int(names::TOKEN_IDS, vec![1, k]));
        }
        outs.push(self.float(names::HIDDEN_STATES_OUT, vec![1, k, self.hidden]));
        if chunk.computes_ple {
            outs.push(self.float(names::PER_LAYER_COMBINED_OUT, vec![1, k, self.ple_total]));
        }
        if chunk.owns_kv() {
            for kind in LayerKind::ALL {
                let x = self.kind(kind);
                let shape = vec![chunk.slots(kind), x.kv_heads, k, x.head_dim];
                for part in KvPart::BOTH {
                    outs.push(self.float(&kind.new_rows(part), shape.clone()));
                }
            }
        }
        if chunk.emits_shared_kv {
            outs.extend(self.shared_kv(|kind| self.kind(kind).cache.len()));
        }
        if chunk.has_head && self.taps.verify_logits {
            outs.push(IoTensor {
                name: names::LOGITS_FP16.to_string(),
                shape: vec![1, k, self.vocab],
                dtype: IoDType::Float16,
            });
        }
        (ins, outs)
    }

    /// The prefill I/O contract of a prefill chunk for `n` positions (§2.7): inputs `hidden_states`
    /// `[1, N, H]`, `causal_mask` `[1, 1, N, N]`, PLE `[1, N, L·P]`, RoPE rows `[1, 1, N, D]`,
    /// `kv13_*` / `kv14_*` `[1, kv, N, D]` (consumers without the producers), `last_position_mask`
    /// `[1, N, 1]` (head chunk); outputs `token_id`, `token_logit` (head chunk) or
    /// `hidden_states_out`, `[per_layer_combined_out]`, then [`IoContract::prefill_kv_outputs`] each
    /// `[1, kv, N, D]` at the layer's true head dim.
    pub fn prefill_io(&self, chunk: &ChunkSpec, n: usize) -> Io {
        let mut ins = vec![
            self.float(names::HIDDEN_STATES, vec![1, n, self.hidden]),
            self.float(names::CAUSAL_MASK, vec![1, 1, n, n]),
        ];
        if self.ple_total > 0 {
            ins.push(self.float(Self::ple_input(chunk), vec![1, n, self.ple_total]));
        }
        ins.extend(self.rope_rows(n));
        if chunk.reads_shared_kv {
            ins.extend(self.shared_kv(|_| n));
        }
        if chunk.has_head {
            ins.push(self.float(names::LAST_POSITION_MASK, vec![1, n, 1]));
        }
        let mut outs = Vec::new();
        if chunk.has_head {
            outs.push(Self::int(names::TOKEN_ID, vec![1]));
            outs.push(self.float(names::TOKEN_LOGIT, vec![1]));
        } else {
            outs.push(self.float(names::HIDDEN_STATES_OUT, vec![1, n, self.hidden]));
        }
        if chunk.computes_ple {
            outs.push(self.float(names::PER_LAYER_COMBINED_OUT, vec![1, n, self.ple_total]));
        }
        for kv in self.prefill_kv_outputs(chunk) {
            let k = self.kind(kv.kind);
            let shape = vec![1, k.kv_heads, n, k.head_dim];
            outs.push(self.float(&kv.k, shape.clone()));
            outs.push(self.float(&kv.v, shape));
        }
        (ins, outs)
    }

    /// The KV outputs of a prefill chunk, in declared order: `K{j}` / `V{j}` per KV-owning layer,
    /// then the producers' `kv13_*` / `kv14_*` when the chunk publishes shared KV.
    pub fn prefill_kv_outputs(&self, chunk: &ChunkSpec) -> Vec<PrefillKv> {
        let mut own = Vec::new();
        let mut published = Vec::new();
        for s in &chunk.kv_slots {
            let publishes = chunk.emits_shared_kv
                && LayerKind::ALL
                    .into_iter()
                    .any(|kind| self.producer(kind) == Some(s.layer));
            let (k, v) = if publishes {
                let (k, v) = s.kind.shared_kv();
                (k.to_string(), v.to_string())
            } else {
                names::prefill_kv(s.layer - chunk.layers.start)
            };
            let entry = PrefillKv {
                layer: s.layer,
                kind: s.kind,
                k,
                v,
            };
            if publishes {
                published.push(entry);
            } else {
                own.push(entry);
            }
        }
        published.sort_by_key(|p| p.kind);
        own.extend(published);
        own
    }
}
