//! MIL emission of one chunk's functions: `decode_q1`, `verify_qK` and prefill, and the stateful
//! sets' `infer` / `prefill_b<T>` ([`stateful`]).
//!
//! One code path emits every layer whatever the chunking and the function: the [`ChunkPlan`] says which
//! layers a chunk holds, which KV slot each KV-owning layer writes, where shared KV comes from (a
//! producer inside the chunk, or the `kv13_*` / `kv14_*` inputs) and what the chunk publishes; the
//! [`FunctionKind`] says how many query positions a call carries (decode 1, verify K, prefill N) and
//! what happens to the caches (decode: updated and returned; verify: updated locally, new rows returned;
//! prefill: no cache, every layer's K/V returned). The cache update follows the plan's
//! [`crate::plan::CachePolicy`] per attention kind and full attention follows its
//! [`crate::plan::AttentionForm`] (prefill always attends plainly).
//!
//! Masks (additive, 0 = visible, −∞ or a large negative = hidden), built by the host:
//!
//! * decode: `causal_mask_*` `[1, 1, 1, T]` as the runtime builds them.
//! * verify at positions `p..p+K−1`: after the in-graph shift, sliding slot `j` holds position
//!   `p − W + K + j`, so query `q` must see slots `W−K−p ≤ j ≤ W−K+q` (triangular over the last K
//!   slots; the lower bound hides slots before position 0). Positional caches: slot `j` visible to
//!   query `q` iff `j ≤ p + q` (and `j > p + q − W` for a positional sliding cache).
//!   `update_indicator[0, 0, c, j] = 1` iff `c = p + j`. Note the 11c shift drops the K oldest rows
//!   before any query runs: once `p > W − K`, the first queries of the block lose the oldest
//!   `K − 1 − q` positions of their window (serial decode would still see them).
//! * prefill (positions `0..N−1`): `causal_mask` `[1, 1, N, N]` (strictly causal: 0 for keys
//!   `j ≤ i`) serves the full layers as given; the sliding layers use `causal_mask + band`, where
//!   `band` hides keys `j ≤ i − W` (so prompts longer than the window get HF's sliding-window
//!   semantics; the reference pipeline's prefill was not window-limited). The band is derived from
//!   the mask itself (row `i ≥ W` is `−65504·exp(causal_mask[i − W])`, rows above are 0), so no
//!   constant is needed: a prefill chunk's weight file holds exactly the blobs of the decode chunk
//!   with the same layers. No extra input is needed because prefill starts at position 0.
//!
//! Names: layer `i`'s ops live in scope `L{i}` (`L3_attn_q_proj`, ...); the softcapped pre-argmax
//! logits are the value named [`LOGITS`] (`[1, S, V]` in verify, `[1, 1, V]` otherwise) so the
//! runtime's parity check can read them.
//!
//! Taps (the plan's [`chunkset::Taps`]): with `eagle3`, the decode function of a chunk holding an
//! EAGLE-3 layer `l` also outputs layer `l`'s output as `hidden_at_L{l}` (an `identity` when it is
//! also `hidden_states_out`; times the carried factor when `layer_scalar` is folded there); with `verify-logits`, the head chunk's verify function outputs the
//! softcapped logits as `logits_fp16` (`identity` in fp16 builds, `cast` in fp32 ones).
//!
//! Op forms (the plan's [`chunkset::GraphForms`]) are applied in `blocks`: softmax, GQA, layout.

mod blocks;
mod layer;
pub mod stateful;

use crate::error::{ExportError, Result};
use crate::layout::LayerKind;
use crate::plan::{ChunkPlan, ChunkSpec, FunctionKind, GqaForm, IoDType};
use crate::weights::Weights;
use blocks::{from_nchw, group_mask, rms_norm, to_nchw};
use chunkset::names::{self, Dir, KvPart};
use mil::builder::FunctionBuilder;
use mil::{DType, Function, TensorType, Var};
use std::collections::BTreeMap;

pub use chunkset::names::LOGITS;
pub use chunkset::{DECODE_FN, PREFILL_FN, VERIFY_FN};

/// Fill of the sliding band of prefill (hidden keys); finite, so no infinity is introduced.
const BAND_FILL: f32 = -65504.0;

fn io_dtype(d: IoDType) -> DType {
    match d {
        IoDType::Float16 => DType::F16,
        IoDType::Float32 => DType::F32,
        IoDType::Int32 => DType::I32,
    }
}

/// Per-function emission state.
pub(crate) struct Ctx<'p> {
    pub plan: &'p ChunkPlan,
    pub chunk: &'p ChunkSpec,
    pub kind: FunctionKind,
    pub inputs: BTreeMap<String, Var>,
    /// `1 − update_mask` (decode) or `1 − Σ_j update_indicator` (verify), built once when some cache
    /// is positional.
    pub keep_mask: Option<Var>,
    /// The attention mask of each kind, grouped for GQA ([`group_mask`]).
    pub masks: BTreeMap<LayerKind, Var>,
    /// Verify / prefill: the new K/V rows `[1, kv, S, D]` of each KV-owning layer.
    pub rows: BTreeMap<usize, (Var, Var)>,
    /// `per_layer_combined` (input, or computed by the chunk holding layer 0).
    pub ple: Option<Var>,
    /// New cache per (kind, slot): (K, V), full padded width.
    pub new_caches: BTreeMap<(LayerKind, usize), (Var, Var)>,
    /// K/V a producer layer attends over (true head dim), by kind.
    pub shared: BTreeMap<LayerKind, (Var, Var)>,
    /// Stateful functions: the states, write positions and per-row ring weights.
    pub stateful: Option<stateful::StatefulCtx>,
    /// The residual stream being emitted is the true one divided by this factor (1 unless
    /// `layer_scalar` is folded, see [`crate::numerics::LayerScalar`]).
    pub carried: f64,
    /// The layer whose end restores the true stream (folded `layer_scalar` in a chunk that hands the
    /// pre-norm stream on).
    pub restore_after: Option<usize>,
    /// The RoPE matrix of each attention kind (single-position functions with
    /// [`crate::numerics::Rope::Matmul`]).
    pub rope_mats: BTreeMap<LayerKind, Var>,
}

impl Ctx<'_> {
    /// Query positions per call.
    pub(crate) fn positions(&self) -> usize {
        self.kind.positions()
    }

    /// The attention mask of layers of `kind`.
    pub(crate) fn mask(&self, kind: LayerKind) -> Result<Var> {
        self.masks
            .get(&kind)
            .cloned()
            .ok_or_else(|| ExportError::Internal(format!("no {} attention mask", kind.label())))
    }

    /// The declared input `name`.
    pub(crate) fn input(&self, name: &str) -> Result<Var> {
        self.inputs
            .get(name)
            .cloned()
            .ok_or_else(|| ExportError::Internal(format!("no input `{name}`")))
    }
}

/// Emit one function of `chunk` (decode, verify with K positions, or prefill of N positions for a
/// prefill chunk from [`ChunkPlan::prefill_chunks`]); its I/O is [`ChunkPlan::io`]. Functions of one
/// chunk share `w`'s prepared weights. Errors name the chunk and function.
pub fn emit_function(
    plan: &ChunkPlan,
    chunk: &ChunkSpec,
    kind: FunctionKind,
    w: &mut Weights<'_>,
) -> Result<Function> {
    emit(plan, chunk, kind, w).map_err(|e| e.in_chunk(&chunk.name, Some(&kind.name())))
}

fn emit(
    plan: &ChunkPlan,
    chunk: &ChunkSpec,
    kind: FunctionKind,
    w: &mut Weights<'_>,
) -> Result<Function> {
    match kind {
        FunctionKind::Decode => {}
        FunctionKind::Verify { k } => plan.check_verify(k)?,
        FunctionKind::Prefill { n } => {
            if n == 0 {
                return Err(ExportError::BadOption("prefill:0".into()));
            }
        }
        FunctionKind::Stateful { t } => {
            return stateful::emit(plan, chunk, t, w, stateful::PrefillRows::PerRow);
        }
    }
    let mut b = FunctionBuilder::new(kind.name());
    let (ins, outs) = plan.io(chunk, kind);
    let (carried, restore_after) = fold_state(plan, chunk, kind, w)?;
    let mut ctx = Ctx {
        plan,
        chunk,
        kind,
        inputs: BTreeMap::new(),
        keep_mask: None,
        masks: BTreeMap::new(),
        rows: BTreeMap::new(),
        ple: None,
        new_caches: BTreeMap::new(),
        shared: BTreeMap::new(),
        stateful: None,
        carried,
        restore_after,
        rope_mats: BTreeMap::new(),
    };
    for t in &ins {
        let v = b.input(&t.name, TensorType::new(io_dtype(t.dtype), &t.shape))?;
        ctx.inputs.insert(t.name.clone(), v);
    }
    let lay = &plan.layout;

    if let Some(um) = ctx.inputs.get(names::UPDATE_MASK).cloned() {
        ctx.keep_mask = Some(b.sub("update_keep", 1.0, &um)?);
    }
    if let Some(ind) = ctx.inputs.get(names::UPDATE_INDICATOR).cloned() {
        let written = b.reduce_sum("update_written", &ind, &[-1], true)?;
        ctx.keep_mask = Some(b.sub("update_keep", 1.0, &written)?);
    }
    build_masks(&mut b, &mut ctx)?;
    build_rope_mats(&mut b, &mut ctx)?;

    let mut x = ctx.input(names::HIDDEN_STATES)?;
    let mut named_outputs: Vec<(String, Var)> = Vec::new();

    // PLE: chunk 1 builds per_layer_combined from per_layer_raw and the scaled embedding.
    if chunk.computes_ple {
        let combined = emit_ple_combine(&mut b, &ctx, &x, w)?;
        named_outputs.push((names::PER_LAYER_COMBINED_OUT.into(), combined.clone()));
        ctx.ple = Some(combined);
    } else if lay.ple_dim > 0 {
        ctx.ple = Some(ctx.input(names::PER_LAYER_COMBINED)?);
    }

    // EAGLE-3 taps: the output of the tap layers, from the decode function
    let taps = match kind {
        FunctionKind::Decode => plan.io_contract().eagle3_taps(chunk),
        _ => Vec::new(),
    };
    for i in chunk.layers.clone() {
        x = layer::emit_layer(&mut b, &mut ctx, w, i, &x)?;
        if taps.contains(&i) {
            // a folded layer_scalar carries the stream as x / c inside the chunk: taps hand out x
            let tap = if ctx.carried == 1.0 {
                x.clone()
            } else {
                b.mul(&format!("tap_L{i}_restored"), &x, ctx.carried)?
            };
            named_outputs.push((names::hidden_at(i), tap));
        }
    }

    let mut all: BTreeMap<String, Var> = match kind {
        FunctionKind::Decode => decode_outputs(&mut b, &ctx, w, x)?,
        FunctionKind::Verify { .. } => verify_outputs(&mut b, &ctx, w, x)?,
        FunctionKind::Prefill { .. } => prefill_outputs(&mut b, &ctx, w, x)?,
        FunctionKind::Stateful { .. } => {
            return Err(ExportError::Internal(
                "stateful functions are emitted by emit::stateful".into(),
            ));
        }
    };
    if chunk.emits_shared_kv && !matches!(kind, FunctionKind::Prefill { .. }) {
        for kind in LayerKind::ALL {
            let (k, v) = ctx.shared.get(&kind).cloned().ok_or_else(|| {
                ExportError::Internal(format!(
                    "publishes shared KV but holds no {} producer",
                    kind.label()
                ))
            })?;
            let (k_name, v_name) = kind.shared_kv();
            all.insert(k_name.into(), k);
            all.insert(v_name.into(), v);
        }
    }
    all.extend(named_outputs);

    // Declared order of the contract.
    for t in &outs {
        let v = all.get(&t.name).ok_or_else(|| {
            ExportError::Internal(format!("output `{}` was not produced", t.name))
        })?;
        b.output(&t.name, v)?;
    }

    Ok(b.finish()?)
}

/// With [`crate::numerics::Rope::Matmul`] in a single-position function: one RoPE matrix per
/// attention kind the chunk's layers use, from the host's cos/sin rows.
fn build_rope_mats(b: &mut FunctionBuilder, ctx: &mut Ctx<'_>) -> Result<()> {
    if ctx.plan.numerics.rope != crate::numerics::Rope::Matmul || ctx.positions() != 1 {
        return Ok(());
    }
    let lay = &ctx.plan.layout;
    for kind in LayerKind::ALL {
        let Some(i) = ctx
            .chunk
            .layers
            .clone()
            .find(|&i| lay.layers[i].kind == kind)
        else {
            continue;
        };
        let (c, s) = kind.rope_inputs();
        let (cos, sin) = (ctx.input(c)?, ctx.input(s)?);
        let m = blocks::rope_matrix(
            b,
            &format!("rope_{}", kind.label()),
            &cos,
            &sin,
            lay.layers[i].head_dim,
            ctx.plan.fp32,
        )?;
        ctx.rope_mats.insert(kind, m);
    }
    Ok(())
}

/// The factor the stream entering `chunk` is carried with and the layer that restores the true
/// stream ([`crate::numerics::LayerScalar`]): folding inside a chunk starts at 1 and restores at the
/// last layer when the function hands the pre-norm stream on (every non-head chunk, and the head
/// chunk's verify); folding across chunks replays the scalars of every earlier layer and never
/// restores.
fn fold_state(
    plan: &ChunkPlan,
    chunk: &ChunkSpec,
    kind: FunctionKind,
    w: &Weights<'_>,
) -> Result<(f64, Option<usize>)> {
    use crate::numerics::LayerScalar;
    let hands_on_stream = !chunk.has_head || matches!(kind, FunctionKind::Verify { .. });
    Ok(match plan.numerics.layer_scalar {
        LayerScalar::Multiply => (1.0, None),
        LayerScalar::FoldInChunk => (
            1.0,
            hands_on_stream.then(|| chunk.layers.end.saturating_sub(1)),
        ),
        LayerScalar::FoldAcrossChunks => {
            let mut c = 1.0;
            for j in 0..chunk.layers.start {
                let s = w.load_checked(&format!("layers.{j}.layer_scalar"), &[1])?[0];
                c = layer::pow2_split(c * f64::from(s)).1;
            }
            (c, None)
        }
    })
}

/// Decode: `token_id` / `token_logit` (head chunk; `hidden_states_out` is then the normed hidden),
/// `hidden_states_out`, the new caches.
fn decode_outputs(
    b: &mut FunctionBuilder,
    ctx: &Ctx<'_>,
    w: &mut Weights<'_>,
    mut x: Var,
) -> Result<BTreeMap<String, Var>> {
    let mut all = BTreeMap::new();
    if ctx.chunk.has_head {
        let (tok, logit, normed) = emit_head(b, ctx, w, &x)?;
        all.insert(names::TOKEN_ID.into(), tok);
        all.insert(names::TOKEN_LOGIT.into(), logit);
        x = normed;
    }
    let cache_outputs = decode_cache_outputs(b, ctx)?;
    all.insert(names::HIDDEN_STATES_OUT.into(), x);
    all.extend(cache_outputs);
    Ok(all)
}

/// Verify: `token_ids` (head chunk), `hidden_states_out` (pre-final-norm), the new rows.
fn verify_outputs(
    b: &mut FunctionBuilder,
    ctx: &Ctx<'_>,
    w: &mut Weights<'_>,
    x: Var,
) -> Result<BTreeMap<String, Var>> {
    let mut all = BTreeMap::new();
    if ctx.chunk.has_head {
        let (logits, _) = emit_logits(b, ctx, w, &x, ctx.positions())?;
        let ids = b.reduce_argmax("argmax", &logits, -1, false, DType::I32)?;
        all.insert(names::TOKEN_IDS.into(), ids);
        if ctx.plan.taps.verify_logits {
            // always fp16, as the name says (the runtime reads the buffer as fp16)
            let out = if logits.dtype() == DType::F16 {
                b.identity(names::LOGITS_FP16, &logits)?
            } else {
                b.cast(names::LOGITS_FP16, &logits, DType::F16)?
            };
            all.insert(names::LOGITS_FP16.into(), out);
        }
    }
    all.insert(names::HIDDEN_STATES_OUT.into(), x);
    all.extend(verify_row_outputs(b, ctx)?);
    Ok(all)
}

/// Prefill: `token_id` / `token_logit` of the last real position (head chunk) or
/// `hidden_states_out`, then every KV-owning layer's K/V.
fn prefill_outputs(
    b: &mut FunctionBuilder,
    ctx: &Ctx<'_>,
    w: &mut Weights<'_>,
    x: Var,
) -> Result<BTreeMap<String, Var>> {
    let mut all = BTreeMap::new();
    if ctx.chunk.has_head {
        let m = ctx.input(names::LAST_POSITION_MASK)?;
        let picked = b.mul("last_position_select", &x, &m)?;
        let last = b.reduce_sum("last_position_hidden", &picked, &[1], true)?;
        let (tok, logit, _) = emit_head(b, ctx, w, &last)?;
        all.insert(names::TOKEN_ID.into(), tok);
        all.insert(names::TOKEN_LOGIT.into(), logit);
    } else {
        all.insert(names::HIDDEN_STATES_OUT.into(), x);
    }
    for kv in ctx.plan.prefill_kv_outputs(ctx.chunk) {
        let (k, v) =
            ctx.rows.get(&kv.layer).cloned().ok_or_else(|| {
                ExportError::Internal(format!("layer {} produced no K/V", kv.layer))
            })?;
        all.insert(kv.k, k);
        all.insert(kv.v, v);
    }
    Ok(all)
}

/// The attention mask of every kind the chunk's layers use: decode takes the inputs as they are;
/// verify groups them for GQA; prefill derives the sliding mask from `causal_mask` and a constant
/// band (see the module doc), then groups both.
fn build_masks(b: &mut FunctionBuilder, ctx: &mut Ctx<'_>) -> Result<()> {
    let lay = &ctx.plan.layout;
    for kind in LayerKind::ALL {
        if !ctx.chunk.layers.clone().any(|i| lay.layers[i].kind == kind) {
            continue;
        }
        let base = match ctx.kind {
            FunctionKind::Decode | FunctionKind::Verify { .. } | FunctionKind::Stateful { .. } => {
                ctx.input(kind.causal_mask())?
            }
            FunctionKind::Prefill { n } => {
                let causal = ctx.input(names::CAUSAL_MASK)?;
                let w = lay.sliding_window;
                if kind == LayerKind::Sliding && n > w {
                    // band[i, j] = BAND_FILL·exp(causal[i − W, j]) for rows i ≥ W, 0 above: the
                    // keys j ≤ i − W, derived in-graph so no constant (and no blob) is needed
                    let rows = b.slice_axis("band_rows", &causal, 2, 0, Some((n - w) as i32))?;
                    let seen = b.exp("band_seen", &rows)?;
                    let low = b.mul("band_low", &seen, BAND_FILL)?;
                    let band = b.pad_constant("sliding_band", &low, &[w as i32, 0, 0, 0], 0.0)?;
                    b.add(kind.causal_mask(), &causal, &band)?
                } else {
                    causal
                }
            }
        };
        let n_rep = lay.num_heads / lay.kv_heads(kind).unwrap_or(1).max(1);
        let mask = if ctx.kind == FunctionKind::Decode || ctx.plan.forms.gqa == GqaForm::Repeat {
            base
        } else {
            group_mask(b, &format!("mask_{}_groups", kind.label()), &base, n_rep)?
        };
        ctx.masks.insert(kind, mask);
    }
    Ok(())
}

/// Decode: the new caches of every slot concatenated in slot order (a chunk owning no layer of a kind
/// passes its dummy slot through).
fn decode_cache_outputs(b: &mut FunctionBuilder, ctx: &Ctx<'_>) -> Result<Vec<(String, Var)>> {
    let chunk = ctx.chunk;
    let mut cache_outputs: Vec<(String, Var)> = Vec::new();
    if !chunk.owns_kv() {
        return Ok(cache_outputs);
    }
    for kind in LayerKind::ALL {
        let slots = chunk.slots(kind);
        for part in KvPart::BOTH {
            let parts: Vec<Var> = (0..slots)
                .filter_map(|s| ctx.new_caches.get(&(kind, s)))
                .map(|kv| pick(kv, part))
                .collect();
            let out = if parts.len() == slots && slots > 1 {
                let name = format!("{}_{}_stack", part.letter(), kind.label());
                b.concat(&name, &parts, 0, false)?
            } else if parts.len() == 1 && slots == 1 {
                parts[0].clone()
            } else {
                ctx.input(&kind.cache(part, Dir::In))?
            };
            cache_outputs.push((kind.cache(part, Dir::Out), out));
        }
    }
    Ok(cache_outputs)
}

/// The K or V of a pair.
fn pick((k, v): &(Var, Var), part: KvPart) -> Var {
    match part {
        KvPart::K => k.clone(),
        KvPart::V => v.clone(),
    }
}

/// Verify: `new_{K,V}_{sliding,full}` `[slots, kv, K, D]`, the new rows of every slot in slot order
/// at the true head dim. A kind the chunk owns no layer of returns the first `K` rows of its dummy
/// slot (host-held, never written: zeros).
fn verify_row_outputs(b: &mut FunctionBuilder, ctx: &Ctx<'_>) -> Result<Vec<(String, Var)>> {
    let chunk = ctx.chunk;
    let lay = &ctx.plan.layout;
    let sq = ctx.positions();
    let mut out = Vec::new();
    if !chunk.owns_kv() {
        return Ok(out);
    }
    for kind in LayerKind::ALL {
        let slots = chunk.slots(kind);
        let layers: Vec<usize> = (0..slots)
            .filter_map(|s| chunk.layer_in_slot(kind, s))
            .collect();
        for part in KvPart::BOTH {
            let name = kind.new_rows(part);
            let parts: Vec<Var> = layers
                .iter()
                .filter_map(|l| ctx.rows.get(l))
                .map(|kv| pick(kv, part))
                .collect();
            let v = if parts.len() == slots && slots > 1 {
                b.concat(&name, &parts, 0, false)?
            } else if parts.len() == 1 && slots == 1 {
                parts[0].clone()
            } else if parts.is_empty() {
                let d = lay.head_dim(kind).unwrap_or(0);
                let input_name = kind.cache(part, Dir::In);
                let input = ctx.input(&input_name)?;
                let dims = input.static_shape().unwrap_or_default();
                let (Some(&s0), Some(&kvh)) = (dims.first(), dims.get(1)) else {
                    return Err(ExportError::Internal(format!(
                        "{input_name} has no static shape"
                    )));
                };
                let slice = mil::builder::Slice::new(
                    &[0, 0, 0, 0],
                    &[s0 as i32, kvh as i32, sq as i32, d as i32],
                );
                b.slice_by_index(&format!("{name}_dummy"), &input, slice)?
            } else {
                return Err(ExportError::Internal(format!(
                    "{} slots {slots} but {} layers wrote rows",
                    kind.label(),
                    parts.len()
                )));
            };
            out.push((name, v));
        }
    }
    Ok(out)
}

/// Keep every declared input alive with an `identity` op, as coremltools does (the Swift runtime feeds
/// the same inputs to every chunk, e.g. `update_mask` to chunks without full-attention owners), and
/// every unused state with a `read_state` (a stateful chunk owning no layer of a kind still declares
/// that kind's state). Runs after the optimisation passes, whose dead-code elimination would drop
/// these ops.
pub fn keep_inputs_alive(f: &mut Function) {
    let used: std::collections::BTreeSet<String> = f
        .block
        .operations
        .iter()
        .flat_map(|op| op.inputs.values().flatten())
        .filter_map(|bd| bd.name().map(str::to_string))
        .chain(f.block.outputs.iter().cloned())
        .collect();
    let taken: std::collections::BTreeSet<String> = f
        .block
        .operations
        .iter()
        .flat_map(|op| op.outputs.iter().map(|o| o.name.clone()))
        .collect();
    for input in f.inputs.clone() {
        if used.contains(&input.name) {
            continue;
        }
        let mut name = format!("{}_unused", input.name);
        while taken.contains(&name) {
            name.push('_');
        }
        // a state is kept alive by reading it (`identity` takes tensors only)
        let (op_type, param, ty) = match &input.ty {
            mil::ValueType::State(t) => ("read_state", "input", mil::ValueType::Tensor(t.clone())),
            ty => ("identity", "x", ty.clone()),
        };
        let mut op = mil::Operation::new(op_type, name.clone());
        op.inputs
            .insert(param.into(), vec![mil::Binding::Name(input.name.clone())]);
        op.outputs.push(mil::NamedValueType { name, ty });
        f.block.operations.push(op);
    }
}

/// `per_layer_combined = (RMSNorm_P(proj(x)·H^−½) + per_layer_raw)·2^−½`, `[1, S, L·P]`.
fn emit_ple_combine(
    b: &mut FunctionBuilder,
    ctx: &Ctx<'_>,
    x: &Var,
    w: &mut Weights<'_>,
) -> Result<Var> {
    b.push_scope("ple");
    let r = ple_combine_body(b, ctx, x, w);
    b.pop_scope();
    r
}

fn ple_combine_body(
    b: &mut FunctionBuilder,
    ctx: &Ctx<'_>,
    x: &Var,
    w: &mut Weights<'_>,
) -> Result<Var> {
    let lay = &ctx.plan.layout;
    let (h, l, p) = (lay.hidden, lay.num_layers(), lay.ple_dim);
    let sq = ctx.positions();
    let x4 = to_nchw(b, "x_nchw", x, h, sq, ctx.plan.forms.layout)?;
    let wt = w.conv_weight(
        b,
        "model_projection_weight",
        "per_layer_model_projection.weight",
        l * p,
        h,
    )?;
    let gain = w.vector("per_layer_projection_norm.weight", p)?;
    let proj = b.conv_1x1("model_projection", &x4, &wt, None)?;
    let proj = b.mul("projection_scaled", &proj, (h as f64).powf(-0.5))?;
    let (l, p, s) = (l as i32, p as i32, sq as i32);
    let proj = if sq == 1 {
        b.reshape("projection_slices", &proj, &[1, l, p])?
    } else {
        let rows = from_nchw(
            b,
            "projection_rows",
            &proj,
            (l * p) as usize,
            sq,
            ctx.plan.forms.layout,
        )?;
        b.reshape("projection_slices", &rows, &[1, s, l, p])?
    };
    let normed = rms_norm(
        b,
        "projection_norm",
        &proj,
        Some(gain),
        lay.rms_norm_eps,
        p as usize,
        ctx.plan.numerics.norm_gain,
    )?;
    let raw = ctx.input(names::PER_LAYER_RAW)?;
    let slices: &[i32] = if sq == 1 { &[1, l, p] } else { &[1, s, l, p] };
    let raw = b.reshape("raw_slices", &raw, slices)?;
    let sum = b.add("sum", &normed, &raw)?;
    let sum = b.mul("combined_scaled", &sum, std::f64::consts::FRAC_1_SQRT_2)?;
    Ok(b.reshape("combined", &sum, &[1, s, l * p])?)
}

/// Final norm, LM head and softcap of `x` `[1, S, H]`: returns `(logits [1, S, V] named` [`LOGITS`]`,
/// normed hidden [1, S, H])`.
fn emit_logits(
    b: &mut FunctionBuilder,
    ctx: &Ctx<'_>,
    w: &mut Weights<'_>,
    x: &Var,
    sq: usize,
) -> Result<(Var, Var)> {
    let lay = &ctx.plan.layout;
    let h = lay.hidden;
    let gain = w.vector("norm.weight", h)?;
    // the stream may be carried as x / c (folded layer_scalar): RMSNorm(x) = RMSNorm_{ε/c²}(x / c)
    let eps = lay.rms_norm_eps / (ctx.carried * ctx.carried);
    let form = ctx.plan.numerics.norm_gain;
    let normed = rms_norm(b, "final_norm", x, Some(gain), eps, h, form)?;
    Ok((lm_head_logits(b, ctx, w, &normed, sq)?, normed))
}

/// LM head and softcap of the final-normed `normed` `[1, S, H]`: the logits `[1, S, V]` named
/// [`LOGITS`] (the weight is the value named `lm_head_weight`, [`names::LM_HEAD_WEIGHT`]).
fn lm_head_logits(
    b: &mut FunctionBuilder,
    ctx: &Ctx<'_>,
    w: &mut Weights<'_>,
    normed: &Var,
    sq: usize,
) -> Result<Var> {
    let lay = &ctx.plan.layout;
    let (h, v) = (lay.hidden, lay.vocab);
    let lm = w.conv_weight(b, names::LM_HEAD_WEIGHT, lay.lm_head_key(), v, h)?;
    let lo = ctx.plan.forms.layout;
    let x4 = to_nchw(b, "final_nchw", normed, h, sq, lo)?;
    let logits = b.conv_1x1("lm_head", &x4, &lm, None)?;
    let logits = match lay.final_logit_softcapping {
        Some(c) => {
            let raw = from_nchw(b, "logits_raw", &logits, v, sq, lo)?;
            let t = b.mul("logits_over_cap", &raw, 1.0 / c)?;
            let t = b.tanh("logits_tanh", &t)?;
            b.mul(LOGITS, &t, c)?
        }
        None => from_nchw(b, LOGITS, &logits, v, sq, lo)?,
    };
    Ok(logits)
}

/// Final norm, LM head, softcap, argmax of one position `x` `[1, 1, H]`: returns `(token_id [1] int32,
/// token_logit [1], normed hidden [1, 1, H])`.
fn emit_head(
    b: &mut FunctionBuilder,
    ctx: &Ctx<'_>,
    w: &mut Weights<'_>,
    x: &Var,
) -> Result<(Var, Var, Var)> {
    let (logits, normed) = emit_logits(b, ctx, w, x, 1)?;
    let (tok, logit) = argmax_head(b, &logits)?;
    Ok((tok, logit, normed))
}

/// `token_id` `[1]` int32 and `token_logit` `[1]` of one position's logits `[1, 1, V]`.
fn argmax_head(b: &mut FunctionBuilder, logits: &Var) -> Result<(Var, Var)> {
    let idx = b.reduce_argmax("argmax", logits, -1, true, DType::I32)?;
    let picked = b.gather_along_axis("picked_logit", logits, &idx, -1, false)?;
    let tok = b.reshape("token_id_flat", &idx, &[1])?;
    let logit = b.reshape("token_logit_flat", &picked, &[1])?;
    Ok((tok, logit))
}
