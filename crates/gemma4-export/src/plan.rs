//! The `ChunkPlan` of a [`Variant`] for a [`ModelLayout`].
//!
//! A variant (see [`chunkset::variant`]) says how the decoder is cut into chunks and how each
//! attention kind keeps its KV cache. The plan derived from it lists, per chunk: the layers, the KV
//! slot of every KV-owning layer, whether the chunk computes the PLE (`per_layer_combined`),
//! publishes the shared-KV producers (`kv13_*` / `kv14_*`, opaque names kept for the Swift runtime
//! whatever the producer layers are), or carries the LM head. The exact I/O of every function
//! follows from those facts through the contract's [`IoContract`] ([`ChunkPlan::io_contract`]).
//!
//! Chunk boundaries (`swa4`), derived from the config rather than hard-coded for E2B: with `F` the first
//! KV-shared layer, chunk1 = `[0, ⌈F/2⌉)`, chunk2 = `[⌈F/2⌉, F)` (so it ends right after both producers
//! and can publish them), chunk3 = `[F, F + ⌊(L−F)/2⌋)`, chunk4 = the rest. E2B gives L0–7 / L8–14 /
//! L15–24 / L25–34 as the reference pipeline does (its formula uses `full producer + 1`, which equals `F`
//! on E2B and E4B but not on configs whose last owning layer is sliding).
//!
//! Prefill packages always use the swa4 cut (its boundaries nest inside every variant's decode
//! chunks), named `prefill_chunk{i}`.
//!
//! The stateful variants (docs/STATEFUL.md) use the swa4 cut (`stateful`: `chunk_1` … `chunk_4`) or
//! the merged one (`stateful3`: `chunk_1`, `chunk_2`, `chunk_3`), a [`CachePolicy::Ring`] of W
//! slots for sliding layers and ctx positions for full layers, both kept in Core ML states; their
//! functions are `infer` and `prefill_b<T>` ([`ChunkPlan::check_prefill_batch`]).

use crate::layout::{LayerKind, ModelLayout};
use chunkset::LayerStack;
use std::ops::Range;

pub use chunkset::{
    CachePolicy, ChunkSpec, FunctionKind, GqaForm, GraphForms, IoContract, IoDType, IoTensor,
    KindIo, KvSlot, LayoutForm, PrefillKv, SoftmaxForm, Taps, Variant,
};

/// Errors planning a chunk set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("variant {variant} needs {what}")]
    Unsupported { variant: String, what: String },
    #[error("invalid option: {0}")]
    BadOption(String),
}

/// How attention over the keys is computed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AttentionForm {
    /// scores = q·Kᵀ + mask → softmax → ·V.
    Plain,
    /// Keys in blocks of `block`, combined with a running max / denominator (flash decoding).
    Flash { block: usize },
    /// Every query row attends over its own keys (`[S, kv, T, D]`, row `s` = the sliding ring as
    /// query `s` sees it): sliding layers of the stateful `prefill_b<T>` (docs/STATEFUL.md).
    Rows,
}

/// User-facing build options that shape the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    pub variant: Variant,
    /// Context length `C` (full-attention cache length).
    pub ctx: usize,
    /// Compute and I/O precision.
    pub fp32: bool,
}

/// The complete plan of a chunk set.
#[derive(Clone, Debug, PartialEq)]
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
    /// Op forms of the emitted graphs (default from [`ChunkPlan::new`]; see [`chunkset::forms`]).
    pub forms: GraphForms,
    /// Optional outputs (none from [`ChunkPlan::new`]).
    pub taps: Taps,
    /// Numerics choices of the emitted graphs (default from [`ChunkPlan::new`]; see
    /// [`crate::numerics`]).
    pub numerics: crate::numerics::Numerics,
}

fn check_layout(l: &ModelLayout, variant: &str) -> Result<(), PlanError> {
    let unsupported = |what: &str| PlanError::Unsupported {
        variant: variant.to_string(),
        what: what.to_string(),
    };
    if l.layers.is_empty() {
        return Err(unsupported("at least one layer"));
    }
    for kind in LayerKind::ALL {
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

/// The cache policies of both kinds (the contract's, [`Variant::cache_policies`]) and the full
/// layers' attention form of a variant.
fn caches(
    variant: &Variant,
    ctx: usize,
    window: usize,
) -> Result<(CachePolicy, CachePolicy, AttentionForm), PlanError> {
    let mut form = AttentionForm::Plain;
    match *variant {
        Variant::Wfa { fw } if fw == 0 || fw > ctx => {
            return Err(PlanError::BadOption(format!(
                "--fw {fw} must be between 1 and --ctx {ctx}"
            )));
        }
        Variant::Flash { block } => {
            if block == 0 || !ctx.is_multiple_of(block) {
                return Err(PlanError::BadOption(format!(
                    "--flash-block {block} must divide --ctx {ctx}"
                )));
            }
            form = AttentionForm::Flash { block };
        }
        _ => {}
    }
    let (sliding, full) = variant.cache_policies(ctx, window);
    Ok((sliding, full, form))
}

/// The chunk names (the contract's, [`Variant::chunk_names`]) and layer ranges of a variant (`l`
/// layers, first shared layer `f`).
fn cuts(variant: &Variant, l: usize, f: usize) -> Vec<(&'static str, Range<usize>)> {
    let c1 = f.div_ceil(2);
    let c3 = f + (l - f) / 2;
    let bounds: Vec<Range<usize>> = match variant {
        Variant::Swa4 | Variant::Wfa { .. } | Variant::Flash { .. } | Variant::Stateful => {
            vec![0..c1, c1..f, f..c3, c3..l]
        }
        Variant::Merged | Variant::Stateful3 => vec![0..c1, c1..c3, c3..l],
        Variant::Merged2 | Variant::Lite => vec![0..f, f..l],
        Variant::Merged1 => std::iter::once(0..l).collect(),
    };
    variant.chunk_names().iter().copied().zip(bounds).collect()
}

/// The layer facts of `layout` the chunk roles follow from (the contract's, [`LayerStack`]).
fn layer_stack(layout: &ModelLayout) -> LayerStack {
    LayerStack::new(
        layout.layers.iter().map(|l| l.kind).collect(),
        layout
            .layers
            .iter()
            .map(|l| l.kv_source.is_none())
            .collect(),
        layout.ple_dim > 0,
    )
}

impl ChunkPlan {
    /// Derive the plan of `opts.variant` for `layout`.
    pub fn new(layout: &ModelLayout, opts: &PlanOptions) -> Result<ChunkPlan, PlanError> {
        // A window of at least ctx positions sees every position a ctx-long run has: cap it at ctx
        // (as the runtime does), so caches, masks and model_config.json never exceed the context.
        let layout = &ModelLayout {
            sliding_window: layout.sliding_window.min(opts.ctx.max(1)),
            ..layout.clone()
        };
        let vname = opts.variant.name();
        check_layout(layout, vname)?;
        if opts.ctx == 0 {
            return Err(PlanError::BadOption("--ctx must be positive".into()));
        }
        let (l, f, w) = (
            layout.num_layers(),
            layout.first_shared(),
            layout.sliding_window,
        );
        let (sliding_cache, full_cache, full_attention) = caches(&opts.variant, opts.ctx, w)?;
        if w == 0 {
            return Err(PlanError::BadOption(
                "sliding_window must be positive".into(),
            ));
        }
        let cuts = cuts(&opts.variant, l, f);
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
        Ok(ChunkPlan {
            variant: opts.variant.clone(),
            ctx: opts.ctx,
            fp32: opts.fp32,
            layout: layout.clone(),
            sliding_cache,
            full_cache,
            full_attention,
            sliding_producer: layout.producer(LayerKind::Sliding),
            full_producer: layout.producer(LayerKind::Full),
            chunks: layer_stack(layout).chunk_specs(&cuts),
            forms: GraphForms::default(),
            taps: Taps::none(),
            numerics: crate::numerics::Numerics::default(),
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

    /// The cache policy of `kind`.
    pub fn cache(&self, kind: LayerKind) -> CachePolicy {
        match kind {
            LayerKind::Sliding => self.sliding_cache,
            LayerKind::Full => self.full_cache,
        }
    }

    /// The producer layer of `kind`.
    pub fn producer(&self, kind: LayerKind) -> Option<usize> {
        match kind {
            LayerKind::Sliding => self.sliding_producer,
            LayerKind::Full => self.full_producer,
        }
    }

    /// The sizes and facts the I/O of every function follows from.
    pub fn io_contract(&self) -> IoContract {
        let lay = &self.layout;
        let kind = |k: LayerKind| KindIo {
            head_dim: lay.head_dim(k).unwrap_or(0),
            kv_heads: lay.kv_heads(k).unwrap_or(1),
            cache: self.cache(k),
        };
        IoContract {
            hidden: lay.hidden,
            ple_total: lay.ple_total(),
            ctx: self.ctx,
            float: self.float_dtype(),
            slot_width: lay.max_head_dim(),
            sliding: kind(LayerKind::Sliding),
            full: kind(LayerKind::Full),
            sliding_producer: self.sliding_producer,
            full_producer: self.full_producer,
            vocab: lay.vocab,
            num_layers: lay.num_layers(),
            taps: self.taps,
        }
    }

    /// True if the variant feeds `update_mask` (some cache is positional).
    pub fn uses_update_mask(&self) -> bool {
        self.io_contract().uses_update_mask()
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

    /// Check that a `prefill_b<t>` function fits the set: a stateful variant, `2 ≤ t ≤ W` (a batch
    /// never wraps the sliding ring; the reference refuses `T > W` too; `t = 1` is `infer`) and
    /// `t ≤ ctx`.
    pub fn check_prefill_batch(&self, t: usize) -> Result<(), PlanError> {
        if !self.variant.is_stateful() {
            return Err(PlanError::BadOption(format!(
                "prefill_b:{t} needs --variant stateful or stateful3, not {}",
                self.variant.name()
            )));
        }
        let w = self.sliding_cache.len();
        if t < 2 || t > w || t > self.ctx {
            return Err(PlanError::BadOption(format!(
                "prefill_b:{t} must be between 2 and the sliding window {w} (and at most --ctx {}); \
                 T = 1 is the `infer` function",
                self.ctx
            )));
        }
        Ok(())
    }

    /// The states of a chunk of a stateful set ([`IoContract::states`]).
    pub fn states(&self, chunk: &ChunkSpec) -> Vec<IoTensor> {
        self.io_contract().states(chunk)
    }

    /// The stateful I/O of `chunk` for `t` positions ([`IoContract::stateful_io`]).
    pub fn stateful_io(&self, chunk: &ChunkSpec, t: usize) -> (Vec<IoTensor>, Vec<IoTensor>) {
        self.io_contract().stateful_io(chunk, t)
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

    /// The decode chunk holding exactly the layers of prefill chunk `prefill` (the same weights: their
    /// packages share one byte-identical weight file), if any: every chunk of the 4-chunk cut
    /// (`swa4`, `wfa`, `flash`); `chunk1` and `chunk3_3way` for `merged`; none for `merged2`,
    /// `merged1`, `lite`.
    pub fn weight_twin(&self, prefill: &ChunkSpec) -> Option<&ChunkSpec> {
        self.chunks.iter().find(|c| c.layers == prefill.layers)
    }

    /// The I/O contract of `kind` for `chunk` ([`IoContract::io`]).
    pub fn io(&self, chunk: &ChunkSpec, kind: FunctionKind) -> (Vec<IoTensor>, Vec<IoTensor>) {
        self.io_contract().io(chunk, kind)
    }

    /// The `decode_q1` I/O of `chunk` ([`IoContract::decode_io`]).
    pub fn decode_io(&self, chunk: &ChunkSpec) -> (Vec<IoTensor>, Vec<IoTensor>) {
        self.io_contract().decode_io(chunk)
    }

    /// The `verify_qK` I/O of `chunk` for `k` positions ([`IoContract::verify_io`]).
    pub fn verify_io(&self, chunk: &ChunkSpec, k: usize) -> (Vec<IoTensor>, Vec<IoTensor>) {
        self.io_contract().verify_io(chunk, k)
    }

    /// The prefill I/O of a prefill chunk for `n` positions ([`IoContract::prefill_io`]).
    pub fn prefill_io(&self, chunk: &ChunkSpec, n: usize) -> (Vec<IoTensor>, Vec<IoTensor>) {
        self.io_contract().prefill_io(chunk, n)
    }

    /// The KV outputs of a prefill chunk ([`IoContract::prefill_kv_outputs`]).
    pub fn prefill_kv_outputs(&self, chunk: &ChunkSpec) -> Vec<PrefillKv> {
        self.io_contract().prefill_kv_outputs(chunk)
    }
}
