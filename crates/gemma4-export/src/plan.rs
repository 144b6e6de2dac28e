//! Variants as data, and the `ChunkPlan` derived from a [`ModelLayout`].
//!
//! A variant says how the decoder is cut into chunks and how each attention kind keeps its KV cache.
//! The plan derived from it lists, per chunk: the layers, the KV slot of every KV-owning layer, whether
//! the chunk computes the PLE (`per_layer_combined`), publishes the shared-KV producers (`kv13_*` /
//! `kv14_*`, opaque names kept for the Swift runtime whatever the producer layers are), or carries the
//! LM head — and from those facts its exact I/O contract (names, shapes, dtypes, order).
//!
//! Chunk boundaries (`swa4`), derived from the config rather than hard-coded for E2B: with `F` the first
//! KV-shared layer, chunk1 = `[0, ⌈F/2⌉)`, chunk2 = `[⌈F/2⌉, F)` (so it ends right after both producers
//! and can publish them), chunk3 = `[F, F + ⌊(L−F)/2⌋)`, chunk4 = the rest. E2B gives L0–7 / L8–14 /
//! L15–24 / L25–34 as the reference pipeline does (its formula uses `full producer + 1`, which equals `F`
//! on E2B and E4B but not on configs whose last owning layer is sliding).
//!
//! Functions and their I/O (every shape static; `S` positions per call):
//!
//! * `decode_q1` ([`ChunkPlan::decode_io`], S = 1): the step function; caches in, updated caches out.
//! * `verify_qK` ([`ChunkPlan::verify_io`], S = K, in the same packages): K draft positions against the
//!   cache of the positions before them ("11c" protocol). Caches are updated only inside the call (shift
//!   register: drop the oldest K rows, append the K new ones; positional: one-hot `update_indicator`
//!   `[1, 1, C, K]` scatters row j to the slot of position `p + j`) and not returned; the new per-position
//!   rows are returned at the true head dim (`new_K_sliding` / `new_V_sliding` `[slots, kv, K, D_s]`,
//!   `new_K_full` / `new_V_full` `[slots, kv, K, D_f]`) so the host commits only accepted positions. The
//!   head chunk returns `token_ids` `[1, K]` and its `hidden_states_out` is the pre-final-norm hidden.
//! * prefill (separate single-function packages `prefill_chunk{i}`, [`ChunkPlan::prefill_io`], S = N):
//!   always the swa4 cut (its boundaries nest inside every variant's decode chunks), positions
//!   `0..N−1`, one `causal_mask` `[1, 1, N, N]`; every KV-owning layer returns its K/V `[1, kv, N, D]`
//!   (`K{j}` / `V{j}` with `j` = layer − first layer of the chunk, producers as `kv13_*` / `kv14_*`).

use crate::layout::{LayerKind, ModelLayout};
use serde::Serialize;
use std::ops::Range;

/// Errors planning a chunk set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "unknown variant `{0}` (expected one of swa4, merged, merged2, merged1, wfa, flash, lite)"
    )]
    UnknownVariant(String),
    #[error("variant {variant} needs {what}")]
    Unsupported { variant: String, what: String },
    #[error("invalid option: {0}")]
    BadOption(String),
}

/// How the decoder is cut and how full-attention KV is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
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
}

impl Variant {
    /// Parse a variant name; `fw` / `flash_block` are used by `wfa` / `flash`.
    pub fn parse(
        name: &str,
        fw: Option<usize>,
        flash_block: Option<usize>,
    ) -> Result<Variant, PlanError> {
        Ok(match name {
            "swa4" => Variant::Swa4,
            "merged" => Variant::Merged,
            "merged2" => Variant::Merged2,
            "merged1" => Variant::Merged1,
            "wfa" => Variant::Wfa {
                fw: fw.unwrap_or(2048),
            },
            "flash" => Variant::Flash {
                block: flash_block.unwrap_or(1024),
            },
            "lite" => Variant::Lite,
            other => return Err(PlanError::UnknownVariant(other.to_string())),
        })
    }

    /// The CLI name.
    pub fn name(&self) -> &'static str {
        match self {
            Variant::Swa4 => "swa4",
            Variant::Merged => "merged",
            Variant::Merged2 => "merged2",
            Variant::Merged1 => "merged1",
            Variant::Wfa { .. } => "wfa",
            Variant::Flash { .. } => "flash",
            Variant::Lite => "lite",
        }
    }
}

/// How one attention kind stores its KV.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CachePolicy {
    /// A shift register of `len` positions: every step drops slot 0 and appends the new entry at
    /// `len − 1`; valid entries are right-aligned; the mask is right-aligned too.
    ShiftRegister { len: usize },
    /// `len` absolute positions; the new entry is blended in at `update_mask`'s one-hot slot.
    Positional { len: usize },
}

impl CachePolicy {
    /// Number of positions kept.
    pub fn len(&self) -> usize {
        match *self {
            CachePolicy::ShiftRegister { len } | CachePolicy::Positional { len } => len,
        }
    }

    /// True if the cache has no positions (never for valid plans).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How attention over the keys is computed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttentionForm {
    /// scores = q·Kᵀ + mask → softmax → ·V.
    Plain,
    /// Keys in blocks of `block`, combined with a running max / denominator (flash decoding).
    Flash { block: usize },
}

/// Element type of a chunk input or output.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IoTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: IoDType,
}

/// A KV slot assignment inside a chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KvSlot {
    pub layer: usize,
    pub kind: LayerKind,
    /// Index into `K_sliding_*` (sliding) or `K_full_*` (full).
    pub slot: usize,
}

/// One chunk of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

/// The function of a chunk package being emitted, with its number of query positions.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FunctionKind {
    /// `decode_q1`: one position.
    Decode,
    /// `verify_qK`: `k` draft positions after the cached ones.
    Verify { k: usize },
    /// Prefill of `n` positions from position 0 (no cache).
    Prefill { n: usize },
}

impl FunctionKind {
    /// Query positions per call (`S`).
    pub fn positions(&self) -> usize {
        match *self {
            FunctionKind::Decode => 1,
            FunctionKind::Verify { k } => k,
            FunctionKind::Prefill { n } => n,
        }
    }
}

/// One KV output of a prefill chunk: the layer and the names of its K and V outputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrefillKv {
    pub layer: usize,
    pub kind: LayerKind,
    pub k: String,
    pub v: String,
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
}

/// User-facing build options that shape the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlanOptions {
    pub variant: Variant,
    /// Context length `C` (full-attention cache length).
    pub ctx: usize,
    /// Compute and I/O precision.
    pub fp32: bool,
}

/// The complete plan of a chunk set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChunkPlan {
    pub variant: Variant,
    pub ctx: usize,
    pub fp32: bool,
    pub layout: ModelLayout,
    pub sliding_cache: CachePolicy,
    pub full_cache: CachePolicy,
    pub full_attention: AttentionForm,
    /// Producer layers (`kv13_*` = sliding producer, `kv14_*` = full producer).
    pub sliding_producer: Option<usize>,
    pub full_producer: Option<usize>,
    pub chunks: Vec<ChunkSpec>,
}

fn check_layout(l: &ModelLayout, variant: &str) -> Result<(), PlanError> {
    let unsupported = |what: &str| PlanError::Unsupported {
        variant: variant.to_string(),
        what: what.to_string(),
    };
    if l.layers.is_empty() {
        return Err(unsupported("at least one layer"));
    }
    for kind in [LayerKind::Sliding, LayerKind::Full] {
        let mut of_kind = l.layers.iter().filter(|x| x.kind == kind);
        if let Some(first) = of_kind.next()
            && of_kind.any(|x| x.head_dim != first.head_dim || x.kv_heads != first.kv_heads)
        {
            return Err(unsupported(
                "one head_dim and one KV-head count per attention kind (KV tensors stack the layers of a kind)",
            ));
        }
    }
    for (i, layer) in l.layers.iter().enumerate() {
        if let Some(src) = layer.kv_source
            && (src >= i || l.layers[src].kind != layer.kind || l.layers[src].kv_source.is_some())
        {
            return Err(unsupported(&format!(
                "layer {i} to read KV from an earlier KV-owning layer of its kind (it names layer {src})"
            )));
        }
    }
    let f = l.first_shared();
    if l.layers[f..].iter().any(|x| x.kv_source.is_none()) {
        return Err(unsupported("KV-shared layers to be the last layers"));
    }
    Ok(())
}

/// The sizes every I/O contract is built from.
#[derive(Clone, Copy, Debug)]
struct IoDims {
    h: usize,
    /// Head dims of sliding / full layers.
    ds: usize,
    df: usize,
    /// KV heads of sliding / full layers.
    nkv_s: usize,
    nkv_f: usize,
    /// KV slot width (the widest head dim).
    maxhd: usize,
    /// Cache lengths of sliding / full layers.
    ls: usize,
    lf: usize,
    fd: IoDType,
}

impl IoDims {
    fn tensor(&self, name: &str, shape: Vec<usize>) -> IoTensor {
        IoTensor {
            name: name.to_string(),
            shape,
            dtype: self.fd,
        }
    }
}

impl ChunkPlan {
    fn io_dims(&self) -> IoDims {
        let lay = &self.layout;
        IoDims {
            h: lay.hidden,
            ds: lay.head_dim(LayerKind::Sliding).unwrap_or(0),
            df: lay.head_dim(LayerKind::Full).unwrap_or(0),
            nkv_s: lay.kv_heads(LayerKind::Sliding).unwrap_or(1),
            nkv_f: lay.kv_heads(LayerKind::Full).unwrap_or(1),
            maxhd: lay.max_head_dim(),
            ls: self.sliding_cache.len(),
            lf: self.full_cache.len(),
            fd: self.float_dtype(),
        }
    }
}

impl ChunkPlan {
    /// Derive the plan of `opts.variant` for `layout`.
    pub fn new(layout: &ModelLayout, opts: &PlanOptions) -> Result<ChunkPlan, PlanError> {
        let vname = opts.variant.name();
        check_layout(layout, vname)?;
        if opts.ctx == 0 {
            return Err(PlanError::BadOption("--ctx must be positive".into()));
        }
        let l = layout.num_layers();
        let f = layout.first_shared();
        let w = layout.sliding_window;
        let (sliding_cache, full_cache, full_attention) = match opts.variant {
            Variant::Lite => (
                CachePolicy::Positional { len: opts.ctx },
                CachePolicy::Positional { len: opts.ctx },
                AttentionForm::Plain,
            ),
            Variant::Wfa { fw } => {
                if fw == 0 || fw > opts.ctx {
                    return Err(PlanError::BadOption(format!(
                        "--fw {fw} must be between 1 and --ctx {}",
                        opts.ctx
                    )));
                }
                (
                    CachePolicy::ShiftRegister { len: w },
                    CachePolicy::ShiftRegister { len: fw },
                    AttentionForm::Plain,
                )
            }
            Variant::Flash { block } => {
                if block == 0 || !opts.ctx.is_multiple_of(block) {
                    return Err(PlanError::BadOption(format!(
                        "--flash-block {block} must divide --ctx {}",
                        opts.ctx
                    )));
                }
                (
                    CachePolicy::ShiftRegister { len: w },
                    CachePolicy::Positional { len: opts.ctx },
                    AttentionForm::Flash { block },
                )
            }
            _ => (
                CachePolicy::ShiftRegister { len: w },
                CachePolicy::Positional { len: opts.ctx },
                AttentionForm::Plain,
            ),
        };
        if w == 0 {
            return Err(PlanError::BadOption(
                "sliding_window must be positive".into(),
            ));
        }

        let c1 = f.div_ceil(2);
        let c3 = f + (l - f) / 2;
        let cuts: Vec<(&str, Range<usize>)> = match opts.variant {
            Variant::Swa4 | Variant::Wfa { .. } | Variant::Flash { .. } => vec![
                ("chunk1", 0..c1),
                ("chunk2", c1..f),
                ("chunk3", f..c3),
                ("chunk4", c3..l),
            ],
            Variant::Merged => vec![
                ("chunk1", 0..c1),
                ("chunk2_3way", c1..c3),
                ("chunk3_3way", c3..l),
            ],
            Variant::Merged2 => vec![("merged_chunk1", 0..f), ("merged_chunk2", f..l)],
            Variant::Lite => vec![("lite_chunk1", 0..f), ("lite_chunk2", f..l)],
            Variant::Merged1 => vec![("merged_full", 0..l)],
        };
        if cuts.iter().any(|(_, r)| r.is_empty()) {
            return Err(PlanError::Unsupported {
                variant: vname.to_string(),
                what: format!(
                    "every chunk to hold at least one layer (layers {l}, first KV-shared layer {f}: chunks {:?})",
                    cuts.iter()
                        .map(|(n, r)| format!("{n}={r:?}"))
                        .collect::<Vec<_>>()
                ),
            });
        }

        let sliding_producer = layout.producer(LayerKind::Sliding);
        let full_producer = layout.producer(LayerKind::Full);
        let consumers_of = |kind: LayerKind, range: &Range<usize>| {
            range
                .clone()
                .any(|i| layout.layers[i].kind == kind && layout.layers[i].kv_source.is_some())
        };

        let mut chunks = Vec::with_capacity(cuts.len());
        for (ci, (name, range)) in cuts.iter().enumerate() {
            let mut kv_slots = Vec::new();
            let (mut ns, mut nf) = (0, 0);
            for i in range.clone() {
                let layer = &layout.layers[i];
                if layer.kv_source.is_some() {
                    continue;
                }
                let slot = match layer.kind {
                    LayerKind::Sliding => {
                        ns += 1;
                        ns - 1
                    }
                    LayerKind::Full => {
                        nf += 1;
                        nf - 1
                    }
                };
                kv_slots.push(KvSlot {
                    layer: i,
                    kind: layer.kind,
                    slot,
                });
            }
            let owns = !kv_slots.is_empty();
            let holds = |p: Option<usize>| p.is_some_and(|p| range.contains(&p));
            let has_consumers =
                consumers_of(LayerKind::Sliding, range) || consumers_of(LayerKind::Full, range);
            let later_consumers = cuts[ci + 1..].iter().any(|(_, r)| {
                consumers_of(LayerKind::Sliding, r) || consumers_of(LayerKind::Full, r)
            });
            let holds_producers = holds(sliding_producer) || holds(full_producer);
            chunks.push(ChunkSpec {
                name: (*name).to_string(),
                layers: range.clone(),
                sliding_slots: if owns { ns.max(1) } else { 0 },
                full_slots: if owns { nf.max(1) } else { 0 },
                kv_slots,
                computes_ple: range.start == 0 && layout.ple_dim > 0,
                reads_shared_kv: has_consumers && !holds_producers,
                emits_shared_kv: holds_producers && later_consumers,
                has_head: range.end == l,
            });
        }
        Ok(ChunkPlan {
            variant: opts.variant.clone(),
            ctx: opts.ctx,
            fp32: opts.fp32,
            layout: layout.clone(),
            sliding_cache,
            full_cache,
            full_attention,
            sliding_producer,
            full_producer,
            chunks,
        })
    }

    /// The chunk with a given name.
    pub fn chunk(&self, name: &str) -> Option<&ChunkSpec> {
        self.chunks.iter().find(|c| c.name == name)
    }

    /// Float dtype of activations and I/O.
    pub fn float_dtype(&self) -> IoDType {
        if self.fp32 {
            IoDType::Float32
        } else {
            IoDType::Float16
        }
    }

    /// True if the variant feeds `update_mask` (some cache is positional).
    pub fn uses_update_mask(&self) -> bool {
        matches!(self.full_cache, CachePolicy::Positional { .. })
            || matches!(self.sliding_cache, CachePolicy::Positional { .. })
    }

    /// Check that a `verify_qK` function with `k` positions fits the caches (`1 ≤ k ≤` every cache
    /// length: the shift register drops `k` rows, the positional cache holds `k` new slots).
    pub fn check_verify(&self, k: usize) -> Result<(), PlanError> {
        let limit = self.sliding_cache.len().min(self.full_cache.len());
        if k == 0 || k > limit {
            return Err(PlanError::BadOption(format!(
                "verify:{k} must be between 1 and the shortest KV cache ({limit} positions)"
            )));
        }
        Ok(())
    }

    /// The prefill chunks: the swa4 cut of this plan's layout (names `prefill_chunk{i}`), whatever
    /// the decode variant (its chunk boundaries nest inside every variant's). Prefill of `n`
    /// positions needs `1 ≤ n ≤ ctx` (the host writes the positions into the full caches).
    pub fn prefill_chunks(&self, n: usize) -> Result<Vec<ChunkSpec>, PlanError> {
        if n == 0 || n > self.ctx {
            return Err(PlanError::BadOption(format!(
                "prefill:{n} must be between 1 and --ctx {}",
                self.ctx
            )));
        }
        let swa4 = ChunkPlan::new(
            &self.layout,
            &PlanOptions {
                variant: Variant::Swa4,
                ctx: self.ctx,
                fp32: self.fp32,
            },
        )?;
        Ok(swa4
            .chunks
            .into_iter()
            .map(|mut c| {
                c.name = format!("prefill_{}", c.name);
                c
            })
            .collect())
    }

    /// The decode chunk whose layers contain all of `chunk`'s (prefill chunks nest in decode chunks).
    pub fn containing_chunk(&self, chunk: &ChunkSpec) -> Option<&ChunkSpec> {
        self.chunks
            .iter()
            .find(|c| c.layers.start <= chunk.layers.start && chunk.layers.end <= c.layers.end)
    }

    /// True if `layer`'s prefill K/V leave the chunk as `kv13_*` / `kv14_*` (a producer whose chunk
    /// publishes shared KV) rather than `K{j}` / `V{j}`.
    fn prefill_publishes(&self, chunk: &ChunkSpec, layer: usize) -> bool {
        chunk.emits_shared_kv
            && (self.sliding_producer == Some(layer) || self.full_producer == Some(layer))
    }

    /// The KV outputs of a prefill chunk, in declared order (`K{j}`/`V{j}` per KV-owning layer, then
    /// the producers' `kv13_*` / `kv14_*`).
    pub fn prefill_kv_outputs(&self, chunk: &ChunkSpec) -> Vec<PrefillKv> {
        let mut own = Vec::new();
        let mut published = Vec::new();
        for s in &chunk.kv_slots {
            if self.prefill_publishes(chunk, s.layer) {
                let (k, v) = match s.kind {
                    LayerKind::Sliding => ("kv13_k", "kv13_v"),
                    LayerKind::Full => ("kv14_k", "kv14_v"),
                };
                published.push(PrefillKv {
                    layer: s.layer,
                    kind: s.kind,
                    k: k.into(),
                    v: v.into(),
                });
            } else {
                let j = s.layer - chunk.layers.start;
                own.push(PrefillKv {
                    layer: s.layer,
                    kind: s.kind,
                    k: format!("K{j}"),
                    v: format!("V{j}"),
                });
            }
        }
        published.sort_by_key(|p| p.kind);
        own.extend(published);
        own
    }

    /// The I/O contract of `kind` for `chunk` (see [`ChunkPlan::decode_io`], [`ChunkPlan::verify_io`],
    /// [`ChunkPlan::prefill_io`]).
    pub fn io(&self, chunk: &ChunkSpec, kind: FunctionKind) -> (Vec<IoTensor>, Vec<IoTensor>) {
        match kind {
            FunctionKind::Decode => self.decode_io(chunk),
            FunctionKind::Verify { k } => self.verify_io(chunk, k),
            FunctionKind::Prefill { n } => self.prefill_io(chunk, n),
        }
    }

    /// The `verify_qK` I/O contract of a chunk for `k` positions (the reference pipeline's, §2.6):
    /// decode's inputs with `k` rows (`hidden_states` `[1, K, H]`, masks `[1, 1, K, T]`, RoPE rows
    /// `[1, 1, K, D]`, PLE `[1, K, L·P]`), `update_indicator` `[1, 1, C, K]` instead of `update_mask`
    /// (KV-owning chunks only); outputs `[token_ids]`, `hidden_states_out`, `[per_layer_combined_out]`,
    /// `[new_K_sliding, new_V_sliding, new_K_full, new_V_full]`, `[kv13_*, kv14_*]`.
    pub fn verify_io(&self, chunk: &ChunkSpec, k: usize) -> (Vec<IoTensor>, Vec<IoTensor>) {
        let lay = &self.layout;
        let d = self.io_dims();
        let t = |name: &str, shape: Vec<usize>| d.tensor(name, shape);
        let IoDims {
            h,
            ds,
            df,
            nkv_s,
            nkv_f,
            ls,
            lf,
            ..
        } = d;
        let (dec_ins, _) = self.decode_io(chunk);
        let mut ins = Vec::new();
        for d in dec_ins {
            let shape = match d.name.as_str() {
                "hidden_states" => vec![1, k, h],
                "causal_mask_full" => vec![1, 1, k, lf],
                "causal_mask_sliding" => vec![1, 1, k, ls],
                "update_mask" => {
                    if chunk.owns_kv() {
                        ins.push(t("update_indicator", vec![1, 1, self.ctx, k]));
                    }
                    continue;
                }
                "per_layer_raw" | "per_layer_combined" => vec![1, k, lay.ple_total()],
                "cos_s" | "sin_s" => vec![1, 1, k, ds],
                "cos_f" | "sin_f" => vec![1, 1, k, df],
                _ => d.shape.clone(),
            };
            ins.push(IoTensor { shape, ..d });
        }
        let mut outs = Vec::new();
        if chunk.has_head {
            outs.push(IoTensor {
                name: "token_ids".into(),
                shape: vec![1, k],
                dtype: IoDType::Int32,
            });
        }
        outs.push(t("hidden_states_out", vec![1, k, h]));
        if chunk.computes_ple {
            outs.push(t("per_layer_combined_out", vec![1, k, lay.ple_total()]));
        }
        if chunk.owns_kv() {
            outs.extend([
                t("new_K_sliding", vec![chunk.sliding_slots, nkv_s, k, ds]),
                t("new_V_sliding", vec![chunk.sliding_slots, nkv_s, k, ds]),
                t("new_K_full", vec![chunk.full_slots, nkv_f, k, df]),
                t("new_V_full", vec![chunk.full_slots, nkv_f, k, df]),
            ]);
        }
        if chunk.emits_shared_kv {
            outs.extend([
                t("kv13_k", vec![1, nkv_s, ls, ds]),
                t("kv13_v", vec![1, nkv_s, ls, ds]),
                t("kv14_k", vec![1, nkv_f, lf, df]),
                t("kv14_v", vec![1, nkv_f, lf, df]),
            ]);
        }
        (ins, outs)
    }

    /// The prefill I/O contract of a prefill chunk (from [`ChunkPlan::prefill_chunks`]) for `n`
    /// positions (§2.7): inputs `hidden_states` `[1, N, H]`, `causal_mask` `[1, 1, N, N]`, PLE
    /// `[1, N, L·P]`, RoPE rows `[1, 1, N, D]`, `kv13_*` / `kv14_*` `[1, kv, N, D]` (consumers without the
    /// producers), `last_position_mask` `[1, N, 1]` (head chunk); outputs `token_id`, `token_logit`
    /// (head chunk) or `hidden_states_out`, `[per_layer_combined_out]`, then
    /// [`ChunkPlan::prefill_kv_outputs`] each `[1, kv, N, D]` at the layer's true head dim.
    pub fn prefill_io(&self, chunk: &ChunkSpec, n: usize) -> (Vec<IoTensor>, Vec<IoTensor>) {
        let lay = &self.layout;
        let d = self.io_dims();
        let t = |name: &str, shape: Vec<usize>| d.tensor(name, shape);
        let IoDims {
            h,
            ds,
            df,
            nkv_s,
            nkv_f,
            ..
        } = d;
        let mut ins = vec![
            t("hidden_states", vec![1, n, h]),
            t("causal_mask", vec![1, 1, n, n]),
        ];
        if lay.ple_dim > 0 {
            let ple = if chunk.computes_ple {
                "per_layer_raw"
            } else {
                "per_layer_combined"
            };
            ins.push(t(ple, vec![1, n, lay.ple_total()]));
        }
        ins.extend([
            t("cos_s", vec![1, 1, n, ds]),
            t("sin_s", vec![1, 1, n, ds]),
            t("cos_f", vec![1, 1, n, df]),
            t("sin_f", vec![1, 1, n, df]),
        ]);
        if chunk.reads_shared_kv {
            ins.extend([
                t("kv13_k", vec![1, nkv_s, n, ds]),
                t("kv13_v", vec![1, nkv_s, n, ds]),
                t("kv14_k", vec![1, nkv_f, n, df]),
                t("kv14_v", vec![1, nkv_f, n, df]),
            ]);
        }
        if chunk.has_head {
            ins.push(t("last_position_mask", vec![1, n, 1]));
        }
        let mut outs = Vec::new();
        if chunk.has_head {
            outs.push(IoTensor {
                name: "token_id".into(),
                shape: vec![1],
                dtype: IoDType::Int32,
            });
            outs.push(t("token_logit", vec![1]));
        } else {
            outs.push(t("hidden_states_out", vec![1, n, h]));
        }
        if chunk.computes_ple {
            outs.push(t("per_layer_combined_out", vec![1, n, lay.ple_total()]));
        }
        for kv in self.prefill_kv_outputs(chunk) {
            let info = &lay.layers[kv.layer];
            let shape = vec![1, info.kv_heads, n, info.head_dim];
            outs.push(t(&kv.k, shape.clone()));
            outs.push(t(&kv.v, shape));
        }
        (ins, outs)
    }

    /// The decode (`decode_q1`) I/O contract of a chunk: inputs and outputs in declared order.
    pub fn decode_io(&self, chunk: &ChunkSpec) -> (Vec<IoTensor>, Vec<IoTensor>) {
        let lay = &self.layout;
        let d = self.io_dims();
        let t = |name: &str, shape: Vec<usize>| d.tensor(name, shape);
        let IoDims {
            h,
            ds,
            df,
            nkv_s,
            nkv_f,
            maxhd,
            ls,
            lf,
            ..
        } = d;

        let mut ins = vec![
            t("hidden_states", vec![1, 1, h]),
            t("causal_mask_full", vec![1, 1, 1, lf]),
            t("causal_mask_sliding", vec![1, 1, 1, ls]),
        ];
        if self.uses_update_mask() {
            ins.push(t("update_mask", vec![1, 1, self.ctx, 1]));
        }
        if lay.ple_dim > 0 {
            let ple = if chunk.computes_ple {
                "per_layer_raw"
            } else {
                "per_layer_combined"
            };
            ins.push(t(ple, vec![1, 1, lay.ple_total()]));
        }
        ins.extend([
            t("cos_s", vec![1, 1, 1, ds]),
            t("sin_s", vec![1, 1, 1, ds]),
            t("cos_f", vec![1, 1, 1, df]),
            t("sin_f", vec![1, 1, 1, df]),
        ]);
        let kv_tensors = |suffix: &str| {
            vec![
                t(
                    &format!("K_sliding_{suffix}"),
                    vec![chunk.sliding_slots, nkv_s, ls, maxhd],
                ),
                t(
                    &format!("V_sliding_{suffix}"),
                    vec![chunk.sliding_slots, nkv_s, ls, maxhd],
                ),
                t(
                    &format!("K_full_{suffix}"),
                    vec![chunk.full_slots, nkv_f, lf, maxhd],
                ),
                t(
                    &format!("V_full_{suffix}"),
                    vec![chunk.full_slots, nkv_f, lf, maxhd],
                ),
            ]
        };
        let shared = || {
            vec![
                t("kv13_k", vec![1, nkv_s, ls, ds]),
                t("kv13_v", vec![1, nkv_s, ls, ds]),
                t("kv14_k", vec![1, nkv_f, lf, df]),
                t("kv14_v", vec![1, nkv_f, lf, df]),
            ]
        };
        if chunk.owns_kv() {
            ins.extend(kv_tensors("in"));
        }
        if chunk.reads_shared_kv {
            ins.extend(shared());
        }

        let mut outs = Vec::new();
        if chunk.has_head {
            outs.push(IoTensor {
                name: "token_id".into(),
                shape: vec![1],
                dtype: IoDType::Int32,
            });
            outs.push(t("token_logit", vec![1]));
        }
        outs.push(t("hidden_states_out", vec![1, 1, h]));
        if chunk.owns_kv() {
            outs.extend(kv_tensors("out"));
        }
        if chunk.emits_shared_kv {
            outs.extend(shared());
        }
        if chunk.computes_ple {
            outs.push(t("per_layer_combined_out", vec![1, 1, lay.ple_total()]));
        }
        (ins, outs)
    }
}
