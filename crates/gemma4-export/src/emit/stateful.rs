//! Emission of the stateful functions, `infer` (T = 1) and `prefill_b<T>` (docs/STATEFUL.md); the
//! I/O is the contract's `IoContract::stateful_io` and `IoContract::states`.
//!
//! The layers go through [`super::layer`] like every other function; what differs is here:
//!
//! * the states `kv_cache_sliding` / `kv_cache_full` are function inputs, and every KV-owning layer
//!   writes its T new K/V rows (padded to the slot width) in place, K then V, each the way
//!   coremltools lowers torch's slice assignment (`fixtures/coreml/tiny_state_multi`):
//!   `read_state → slice_update(begin = concat(slot, 0, pos, 0), end = concat(slot + 1, 0, pos + T,
//!   0), end_mask [F, T, F, T]) → write_state → read_state`, at `ring_pos` (sliding) or
//!   `current_pos` (full), with no bounds checks (the host keeps `ring_pos + T ≤ W`);
//! * full layers attend over their whole updated slot with `causal_mask_full`;
//! * sliding layers: `infer` attends over the updated ring with `causal_mask_sliding`; `prefill_b<T>`
//!   gives each query row `t` its own view of the ring — slot `s` from the updated ring if
//!   `s − ring_pos ≤ t`, else from the ring before this call: `after·c + before·(1 − c)` with the
//!   0/1 weights `c` `[T, 1, W, 1]` of [`StatefulCtx`] (exact for finite values; coremltools'
//!   `select` infers its output shape from its two value operands only, so it cannot broadcast the
//!   rows in) — i.e. the ring as if positions `p … p+t` had been written one at a time, which makes
//!   the engine's mask row `t` exact even past the window. The sliding producer publishes these
//!   views as `kv13_*` (`[T, kv, W, Ds]`); the KV-shared layers attend over them the same way;
//! * the head chunk normalises every row (value [`names::NORMED_ROWS`] in `prefill_b<T>`), then runs
//!   the LM head, softcap and argmax on the last row only.

use super::blocks::{R, group_mask, rms_norm};
use super::{Ctx, argmax_head, emit_ple_combine, io_dtype, layer, lm_head_logits};
use crate::error::{ExportError, Result};
use crate::layout::LayerKind;
use crate::plan::{ChunkPlan, ChunkSpec, FunctionKind};
use crate::weights::Weights;
use chunkset::names;
use mil::builder::{FunctionBuilder, Operand, Slice};
use mil::{DType, Function, StateVar, TensorType, TensorValue, Var};
use std::collections::BTreeMap;

/// What each query row of a `prefill_b<T>` sliding layer attends over.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum PrefillRows {
    /// Row `t` sees the ring as if positions `p … p+t` had been written one at a time; `kv13_*` are
    /// `[T, kv, W, Ds]` (exact at every position; what we build).
    #[default]
    PerRow,
    /// Every row sees the whole updated ring and `kv13_*` are `[1, kv, W, Ds]`: the reference
    /// pipeline's `prefill_b<T>`, which lets rows see later rows of their batch once `p ≥ W`. Kept
    /// only to measure that defect (tests); never built by the CLI.
    SharedRing,
}

/// Per-function state of a stateful emission.
pub(crate) struct StatefulCtx {
    /// The state input holding each kind's KV.
    states: BTreeMap<LayerKind, StateVar>,
    /// `(start, start + T)` of each kind's write: `ring_pos` (sliding), `current_pos` (full).
    pos: BTreeMap<LayerKind, (Var, Var)>,
    /// Per-row views: `(c, 1 − c)`, `[T, 1, W, 1]` floats; `c = 1` iff slot `s` of row `t` comes
    /// from the updated ring (`s − ring_pos ≤ t`).
    rows_mix: Option<(Var, Var)>,
    /// Sliding layers attend per row ([`crate::plan::AttentionForm::Rows`]).
    per_row: bool,
}

impl StatefulCtx {
    /// True when sliding layers attend per row.
    pub(crate) fn per_row(&self) -> bool {
        self.per_row
    }
}

fn i32_1(v: i32) -> Result<Operand> {
    TensorValue::from_i32(&[1], &[v])
        .map(Operand::from)
        .map_err(|source| ExportError::Value {
            tensor: "slice index".into(),
            source,
        })
}

/// [`emit`] with a choice of [`PrefillRows`], errors naming the chunk and function
/// (`SharedRing` reproduces the reference's inexact `prefill_b<T>`, for measurements only).
pub fn emit_stateful_with(
    plan: &ChunkPlan,
    chunk: &ChunkSpec,
    t: usize,
    w: &mut Weights<'_>,
    rows: PrefillRows,
) -> Result<Function> {
    let kind = FunctionKind::Stateful { t };
    emit(plan, chunk, t, w, rows).map_err(|e| e.in_chunk(&chunk.name, Some(&kind.name())))
}

/// Emit the stateful function of `t` positions of `chunk` (`infer` for `t = 1`, else
/// `prefill_b<t>`).
pub(crate) fn emit(
    plan: &ChunkPlan,
    chunk: &ChunkSpec,
    t: usize,
    w: &mut Weights<'_>,
    rows: PrefillRows,
) -> Result<Function> {
    if !plan.variant.is_stateful() {
        return Err(ExportError::BadOption(format!(
            "stateful functions need --variant stateful or stateful3, not {}",
            plan.variant.name()
        )));
    }
    if t != 1 {
        plan.check_prefill_batch(t)?;
    }
    let lay = &plan.layout;
    let kind = FunctionKind::Stateful { t };
    let mut b = FunctionBuilder::new(kind.name());
    let (mut ins, mut outs) = plan.stateful_io(chunk, t);
    let per_row = t > 1 && rows == PrefillRows::PerRow;
    if rows == PrefillRows::SharedRing {
        let (k13, v13) = LayerKind::Sliding.shared_kv();
        for x in ins.iter_mut().chain(outs.iter_mut()) {
            if x.name == k13 || x.name == v13 {
                x.shape[0] = 1;
            }
        }
    }
    let mut inputs = BTreeMap::new();
    for x in &ins {
        let v = b.input(&x.name, TensorType::new(io_dtype(x.dtype), &x.shape))?;
        inputs.insert(x.name.clone(), v);
    }
    let mut st = StatefulCtx {
        states: BTreeMap::new(),
        pos: BTreeMap::new(),
        rows_mix: None,
        per_row,
    };
    for s in plan.states(chunk) {
        let v = b.state_input(&s.name, TensorType::new(io_dtype(s.dtype), &s.shape))?;
        let kind = LayerKind::ALL
            .into_iter()
            .find(|k| k.state() == s.name)
            .ok_or_else(|| ExportError::Internal(format!("unknown state `{}`", s.name)))?;
        st.states.insert(kind, v);
    }
    let owns = |kind: LayerKind| chunk.kv_slots.iter().any(|s| s.kind == kind);
    for kind in LayerKind::ALL {
        if owns(kind) {
            let start = inputs
                .get(kind.write_pos())
                .cloned()
                .ok_or_else(|| ExportError::Internal(format!("no `{}`", kind.write_pos())))?;
            let end = b.add(&format!("{}_end", kind.write_pos()), &start, t as i32)?;
            st.pos.insert(kind, (start, end));
        }
    }
    if per_row && owns(LayerKind::Sliding) {
        let wl = plan.sliding_cache.len();
        let d: Vec<i32> = (0..t)
            .flat_map(|r| (0..wl).map(move |s| s as i32 - r as i32))
            .collect();
        let d = b.const_i32("ring_slot_minus_row", &[t, 1, wl, 1], &d)?;
        let cond = b.less_equal("ring_rows_cond", &d, &inputs[names::RING_POS])?;
        let fd = if plan.fp32 { DType::F32 } else { DType::F16 };
        let c = b.cast("ring_rows_new", &cond, fd)?;
        let nc = b.sub("ring_rows_old", 1.0, &c)?;
        st.rows_mix = Some((c, nc));
    }

    let (carried, restore_after) = super::fold_state(plan, chunk, kind, w)?;
    let mut ctx = Ctx {
        plan,
        chunk,
        kind,
        inputs,
        keep_mask: None,
        masks: BTreeMap::new(),
        rows: BTreeMap::new(),
        ple: None,
        new_caches: BTreeMap::new(),
        shared: BTreeMap::new(),
        stateful: Some(st),
        carried,
        restore_after,
        rope_mats: BTreeMap::new(),
    };
    build_masks(&mut b, &mut ctx, per_row)?;
    super::build_rope_mats(&mut b, &mut ctx)?;

    let mut x = ctx.input(names::HIDDEN_STATES)?;
    let mut all: BTreeMap<String, Var> = BTreeMap::new();
    if chunk.computes_ple {
        let combined = emit_ple_combine(&mut b, &ctx, &x, w)?;
        all.insert(names::PER_LAYER_COMBINED_OUT.into(), combined.clone());
        ctx.ple = Some(combined);
    } else if lay.ple_dim > 0 {
        ctx.ple = Some(ctx.input(names::PER_LAYER_COMBINED)?);
    }
    for i in chunk.layers.clone() {
        x = layer::emit_layer(&mut b, &mut ctx, w, i, &x)?;
    }
    if chunk.has_head {
        let h = lay.hidden;
        let gain = w.vector("norm.weight", h)?;
        // named `final_norm_out` (names::NORMED_ROWS): every row's normed hidden
        // the stream may be carried as x / c (folded layer_scalar): RMSNorm_{ε/c²}(x / c)
        let eps = lay.rms_norm_eps / (ctx.carried * ctx.carried);
        let form = plan.numerics.norm_gain;
        let rows = rms_norm(&mut b, "final_norm", &x, Some(gain), eps, h, form)?;
        let last = if t > 1 {
            b.slice_axis("hidden_normed_last", &rows, 1, t as i32 - 1, Some(t as i32))?
        } else {
            rows
        };
        let logits = lm_head_logits(&mut b, &ctx, w, &last, 1)?;
        let (tok, logit) = argmax_head(&mut b, &logits)?;
        all.insert(names::TOKEN_ID.into(), tok);
        all.insert(names::TOKEN_LOGIT.into(), logit);
        all.insert(names::HIDDEN_NORMED.into(), last);
    } else {
        all.insert(names::HIDDEN_STATES_OUT.into(), x);
    }
    if chunk.emits_shared_kv {
        for kind in LayerKind::ALL {
            let (k, v) = ctx.shared.get(&kind).cloned().ok_or_else(|| {
                ExportError::Internal(format!(
                    "publishes shared KV but holds no {} producer",
                    kind.label()
                ))
            })?;
            let (kn, vn) = kind.shared_kv();
            all.insert(kn.into(), k);
            all.insert(vn.into(), v);
        }
    }
    for o in &outs {
        let v = all.get(&o.name).ok_or_else(|| {
            ExportError::Internal(format!("output `{}` was not produced", o.name))
        })?;
        b.output(&o.name, v)?;
    }
    Ok(b.finish()?)
}

/// Full layers: `causal_mask_full`, tiled for grouped queries when T > 1. Sliding layers:
/// `causal_mask_sliding` (`infer`; tiled like the full mask for [`PrefillRows::SharedRing`]), or its
/// rows as `[T, 1, 1, W]` for the per-row attention.
fn build_masks(b: &mut FunctionBuilder, ctx: &mut Ctx<'_>, per_row: bool) -> Result<()> {
    let lay = &ctx.plan.layout;
    let t = ctx.positions();
    for kind in LayerKind::ALL {
        if !ctx.chunk.layers.clone().any(|i| lay.layers[i].kind == kind) {
            continue;
        }
        let base = ctx.input(kind.causal_mask())?;
        let n_rep = lay.num_heads / lay.kv_heads(kind).unwrap_or(1).max(1);
        let mask = if t == 1 {
            base
        } else if kind == LayerKind::Sliding && per_row {
            let wl = ctx.plan.sliding_cache.len() as i32;
            b.reshape("mask_sliding_rows", &base, &[t as i32, 1, 1, wl])?
        } else if ctx.plan.forms.gqa == chunkset::GqaForm::Repeat {
            // K/V repeated per query head: the mask broadcasts over the heads
            base
        } else {
            group_mask(b, &format!("mask_{}_groups", kind.label()), &base, n_rep)?
        };
        ctx.masks.insert(kind, mask);
    }
    Ok(())
}

/// Write layer `i`'s new rows `k`, `v` (`[1, kv, T, D_i]`) into its state slots and return what the
/// layer attends over: the updated slot at the true head dim (`[1, kv, len, D_i]`), or for sliding
/// layers with per-row views the rows `[T, kv, W, D_i]`.
pub(crate) fn write_kv(
    b: &mut FunctionBuilder,
    ctx: &mut Ctx<'_>,
    i: usize,
    k: &Var,
    v: &Var,
) -> Result<(Var, Var)> {
    let lay = &ctx.plan.layout;
    let info = &lay.layers[i];
    let (d, kvh, kind) = (info.head_dim, info.kv_heads, info.kind);
    let maxhd = lay.max_head_dim();
    let t = ctx.positions();
    let slot = ctx
        .chunk
        .slot_of(i)
        .ok_or_else(|| ExportError::Internal(format!("layer {i} owns KV but has no slot")))?
        .slot;
    let missing = |what: &str| {
        ExportError::Internal(format!(
            "no {what} for the {} KV of layer {i}",
            kind.label()
        ))
    };
    let st = ctx
        .stateful
        .as_ref()
        .ok_or_else(|| missing("stateful context"))?;
    let state = st
        .states
        .get(&kind)
        .cloned()
        .ok_or_else(|| missing("state"))?;
    let (start, end) = st
        .pos
        .get(&kind)
        .cloned()
        .ok_or_else(|| missing("write position"))?;
    let rows_mix = match kind {
        LayerKind::Sliding if st.per_row => {
            Some(st.rows_mix.clone().ok_or_else(|| missing("row weights"))?)
        }
        _ => None,
    };
    let len = state.ty().shape[2]
        .fixed()
        .ok_or_else(|| missing("static state length"))? as i32;
    let pad = if d < maxhd {
        let n = kvh * t * (maxhd - d);
        let shape = [1, kvh, t, maxhd - d];
        let z = if ctx.plan.fp32 {
            TensorValue::from_f32(&shape, &vec![0.0; n])
        } else {
            TensorValue::from_f16(&shape, &vec![half::f16::ZERO; n])
        };
        Some(z.map_err(|source| ExportError::Value {
            tensor: "kv_pad".into(),
            source,
        })?)
    } else {
        None
    };
    let (ki, vi) = ((2 * slot) as i32, (2 * slot + 1) as i32);
    let idx = |v: i32| i32_1(v);
    let (k_begin, k_end) = (
        [idx(ki)?, idx(0)?, Operand::from(&start), idx(0)?],
        [idx(ki + 1)?, idx(0)?, Operand::from(&end), idx(0)?],
    );
    let (v_begin, v_end) = (
        [idx(vi)?, idx(0)?, Operand::from(&start), idx(0)?],
        [idx(vi + 1)?, idx(0)?, Operand::from(&end), idx(0)?],
    );
    Ok(
        b.with_scope(&format!("{}_state", kind.label()), |b| -> R<(Var, Var)> {
            let padded = |b: &mut FunctionBuilder, name: &str, x: &Var| -> R<Var> {
                match &pad {
                    Some(z) => b.concat(name, [Operand::from(x), z.clone().into()], -1, false),
                    None => Ok(x.clone()),
                }
            };
            let write = |b: &mut FunctionBuilder,
                         name: &str,
                         x: &Var,
                         u: &Var,
                         (begin, stop): ([Operand; 4], [Operand; 4])|
             -> R<Var> {
                let begin = b.concat(&format!("{name}_begin"), begin, 0, false)?;
                let stop = b.concat(&format!("{name}_end"), stop, 0, false)?;
                let s = Slice::dynamic(&begin, &stop).end_mask(&[false, true, false, true]);
                b.slice_update(name, x, u, s)
            };
            let slot_of = |b: &mut FunctionBuilder, name: &str, x: &Var, index: i32| -> R<Var> {
                let s = Slice::new(&[index, 0, 0, 0], &[index + 1, kvh as i32, len, d as i32]);
                b.slice_by_index(name, x, s)
            };
            let before = b.read_state("before", &state)?;
            let kp = padded(b, "k_padded", k)?;
            let vp = padded(b, "v_padded", v)?;
            let s1 = write(b, "k_write", &before, &kp, (k_begin, k_end))?;
            let s1 = b.update_state("k_written", &state, &s1)?;
            let s2 = write(b, "v_write", &s1, &vp, (v_begin, v_end))?;
            let after = b.update_state("v_written", &state, &s2)?;
            let ka = slot_of(b, "k_attend", &after, ki)?;
            let va = slot_of(b, "v_attend", &after, vi)?;
            match &rows_mix {
                None => Ok((ka, va)),
                Some((c, nc)) => {
                    let mut rows = |name: &str, after: &Var, index: i32| -> R<Var> {
                        let old = slot_of(b, &format!("{name}_before"), &before, index)?;
                        let a = b.mul(&format!("{name}_rows_new"), after, c)?;
                        let o = b.mul(&format!("{name}_rows_old"), &old, nc)?;
                        b.add(&format!("{name}_rows"), &a, &o)
                    };
                    let kr = rows("k", &ka, ki)?;
                    let vr = rows("v", &va, vi)?;
                    Ok((kr, vr))
                }
            }
        })?,
    )
}
