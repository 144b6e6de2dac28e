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

    /// The decode (`decode_q1`) I/O contract of a chunk: inputs and outputs in declared order.
    pub fn decode_io(&self, chunk: &ChunkSpec) -> (Vec<IoTensor>, Vec<IoTensor>) {
        let lay = &self.layout;
        let fd = self.float_dtype();
        let t = |name: &str, shape: Vec<usize>| IoTensor {
            name: name.to_string(),
            shape,
            dtype: fd,
        };
        let h = lay.hidden;
        let ds = lay.head_dim(LayerKind::Sliding).unwrap_or(0);
        let df = lay.head_dim(LayerKind::Full).unwrap_or(0);
        let nkv_s = lay.kv_heads(LayerKind::Sliding).unwrap_or(1);
        let nkv_f = lay.kv_heads(LayerKind::Full).unwrap_or(1);
        let maxhd = lay.max_head_dim();
        let (ls, lf) = (self.sliding_cache.len(), self.full_cache.len());

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
