//! One decoder layer for `S` query positions (the only per-layer code path: decode S = 1, verify
//! S = K, prefill S = N).
//!
//! ```text
//! h = RMSNorm(x; input_layernorm)                          x: [1, S, H] (NCHW [1, H, 1, S] for projections)
//! q = RoPE(RMSNorm_D(q_proj h; q_norm))                    [1, nh, S, D]
//! own KV:   k = RoPE(RMSNorm_D(k_proj h; k_norm)), v = RMSNorm_D(v_proj h)   (v-norm has no gain)
//!   decode:  padded to the slot width, written into the chunk's cache slot (shift register or
//!            one-hot blend), attended over at the true head dim
//!   verify:  the slot sliced to the true head dim, updated locally (shift register: drop K rows,
//!            append the K new ones; positional: old·keep + update_indicator·new), attended over;
//!            the new rows are returned, the updated cache is not
//!   prefill: attended over directly (N positions from 0), returned
//!   the producer publishes what it attends over
//! shared KV: the producer's K/V of this call (inside the chunk, or `kv13_*` / `kv14_*` inputs)
//! x += RMSNorm(o_proj softmax(q·Kᵀ + mask)·V; post_attention_layernorm)          (scale 1.0)
//! x += RMSNorm(down(gelu_tanh(gate m) · up m); post_feedforward_layernorm), m = RMSNorm(x; pre_ff)
//! x += RMSNorm(proj(gelu_tanh(gate x) · ple_i); post_per_layer_input_norm)        (if PLE)
//! x *= layer_scalar
//! ```
//!
//! With a folded `layer_scalar` ([`crate::numerics::LayerScalar`]) the stream is carried as `x / c`
//! (`ctx.carried = c`): the norms that read it get epsilon `ε/c²`, the branch norms' gains are
//! divided by `c`, the PLE gate weights multiplied by `c`, and the end of the layer multiplies only
//! by a power of two (or by `c` where the chunk restores `x`).

use super::Ctx;
use super::blocks::{
    R, attention, attention_rows, flash_attention, from_nchw, gelu_tanh, rms_norm, rope,
    split_heads, to_nchw,
};
use crate::error::{ExportError, Result};
use crate::layout::LayerKind;
use crate::numerics::{LayerScalar, NormGain};
use crate::plan::{AttentionForm, CachePolicy, FunctionKind, LayoutForm};
use crate::weights::Weights;
use chunkset::names::{self, Dir, KvPart};
use mil::builder::FunctionBuilder;
use mil::{TensorValue, Var};

/// Emit layer `i` on hidden state `x` (`[1, S, H]`), returning the layer output.
pub(crate) fn emit_layer(
    b: &mut FunctionBuilder,
    ctx: &mut Ctx<'_>,
    w: &mut Weights<'_>,
    i: usize,
    x: &Var,
) -> Result<Var> {
    b.push_scope(&format!("L{i}"));
    let r = layer_body(b, ctx, w, i, x);
    b.pop_scope();
    r
}

fn layer_body(
    b: &mut FunctionBuilder,
    ctx: &mut Ctx<'_>,
    w: &mut Weights<'_>,
    i: usize,
    x: &Var,
) -> Result<Var> {
    let lay = ctx.plan.layout.clone();
    let info = &lay.layers[i];
    let (h, nh, d, kvh) = (lay.hidden, lay.num_heads, info.head_dim, info.kv_heads);
    let eps = lay.rms_norm_eps;
    let key = |s: &str| format!("layers.{i}.{s}");
    let kind = info.kind;
    let sq = ctx.positions();
    let forms = ctx.plan.forms;
    let lo = forms.layout;
    let form = ctx.plan.numerics.norm_gain;
    // the stream `x` here is the true residual stream divided by `c` (1 unless layer_scalar is folded)
    let c = ctx.carried;
    let eps_stream = eps / (c * c);
    let (cos, sin) = kind.rope_inputs();
    let (cos, sin, mask) = (ctx.input(cos)?, ctx.input(sin)?, ctx.mask(kind)?);

    // ---- attention
    let g_in = w.vector(&key("input_layernorm.weight"), h)?;
    let hn = rms_norm(b, "input_norm", x, Some(g_in), eps_stream, h, form)?;
    let h4 = to_nchw(b, "input_nchw", &hn, h, sq, lo)?;

    let wq = w.conv_weight(
        b,
        "q_proj_weight",
        &key("self_attn.q_proj.weight"),
        nh * d,
        h,
    )?;
    let g_q = w.vector(&key("self_attn.q_norm.weight"), d)?;
    let q = b.conv_1x1("q_proj", &h4, &wq, None)?;
    let q = split_heads(b, "q_heads", &q, nh, d, sq, lo)?;
    let q = rms_norm(b, "q_norm", &q, Some(g_q), eps, d, form)?;
    let rmat = ctx.rope_mats.get(&kind).cloned();
    let q = rope(b, "q_rope", &q, &cos, &sin, rmat.as_ref())?;

    let (k_att, v_att) = match info.kv_source {
        None => own_kv(b, ctx, w, i, &h4, &cos, &sin)?,
        Some(_) => match ctx.shared.get(&kind) {
            Some(kv) => kv.clone(),
            None => {
                let (kn, vn) = kind.shared_kv();
                (ctx.input(kn)?, ctx.input(vn)?)
            }
        },
    };

    let wo = w.conv_weight(
        b,
        "o_proj_weight",
        &key("self_attn.o_proj.weight"),
        h,
        nh * d,
    )?;
    let g_post = w.vector_scaled(&key("post_attention_layernorm.weight"), h, 1.0 / c)?;
    let attn_form = match (kind, ctx.kind) {
        (LayerKind::Sliding, FunctionKind::Stateful { .. })
            if ctx.stateful.as_ref().is_some_and(|s| s.per_row()) =>
        {
            AttentionForm::Rows
        }
        (_, FunctionKind::Prefill { .. } | FunctionKind::Stateful { .. })
        | (LayerKind::Sliding, _) => AttentionForm::Plain,
        (LayerKind::Full, _) => ctx.plan.full_attention,
    };
    let t_len = ctx.plan.cache(kind).len();
    let ctx4 = b.with_scope("attn", |b| match attn_form {
        AttentionForm::Plain => attention(b, &q, &k_att, &v_att, &mask, nh, kvh, d, sq, forms),
        AttentionForm::Flash { block } => flash_attention(
            b, &q, &k_att, &v_att, &mask, nh, kvh, d, sq, t_len, block, forms,
        ),
        AttentionForm::Rows => attention_rows(b, &q, &k_att, &v_att, &mask, nh, kvh, d, sq, forms),
    })?;
    let a = b.conv_1x1("o_proj", &ctx4, &wo, None)?;
    let a = from_nchw(b, "attn_out", &a, h, sq, lo)?;
    let a = rms_norm(b, "post_attn_norm", &a, Some(g_post), eps, h, form)?;
    let x = b.add("attn_residual", x, &a)?;

    // ---- MLP
    let inter = info.intermediate;
    let g_pre = w.vector(&key("pre_feedforward_layernorm.weight"), h)?;
    let wg = w.conv_weight(
        b,
        "gate_proj_weight",
        &key("mlp.gate_proj.weight"),
        inter,
        h,
    )?;
    let wu = w.conv_weight(b, "up_proj_weight", &key("mlp.up_proj.weight"), inter, h)?;
    let wd = w.conv_weight(
        b,
        "down_proj_weight",
        &key("mlp.down_proj.weight"),
        h,
        inter,
    )?;
    let g_post_ff = w.vector_scaled(&key("post_feedforward_layernorm.weight"), h, 1.0 / c)?;
    let m = rms_norm(b, "pre_ff_norm", &x, Some(g_pre), eps_stream, h, form)?;
    let m4 = to_nchw(b, "mlp_nchw", &m, h, sq, lo)?;
    let g = b.conv_1x1("gate_proj", &m4, &wg, None)?;
    let u = b.conv_1x1("up_proj", &m4, &wu, None)?;
    let g = gelu_tanh(b, "gate_act", &g)?;
    let gu = b.mul("gate_up", &g, &u)?;
    let dn = b.conv_1x1("down_proj", &gu, &wd, None)?;
    let dn = from_nchw(b, "mlp_out", &dn, h, sq, lo)?;
    let dn = rms_norm(b, "post_ff_norm", &dn, Some(g_post_ff), eps, h, form)?;
    let x = b.add("mlp_residual", &x, &dn)?;

    // ---- per-layer input (PLE)
    let x = if let Some(ple) = ctx.ple.clone() {
        let p = lay.ple_dim;
        // the gate reads the stream itself: its weights carry the factor `c`
        let wgate = w.conv_weight_scaled(
            b,
            "ple_gate_weight",
            &key("per_layer_input_gate.weight"),
            (p, h),
            c,
        )?;
        let wproj = w.conv_weight(
            b,
            "ple_proj_weight",
            &key("per_layer_projection.weight"),
            h,
            p,
        )?;
        let g_ple = w.vector_scaled(&key("post_per_layer_input_norm.weight"), h, 1.0 / c)?;
        let x4 = to_nchw(b, "ple_nchw", &x, h, sq, lo)?;
        let g = b.conv_1x1("ple_gate", &x4, &wgate, None)?;
        let g = gelu_tanh(b, "ple_gate_act", &g)?;
        let slice = b.slice_axis(
            "ple_slice",
            &ple,
            -1,
            (i * p) as i32,
            Some(((i + 1) * p) as i32),
        )?;
        let slice = to_nchw(b, "ple_slice_nchw", &slice, p, sq, lo)?;
        let g = b.mul("ple_gated", &g, &slice)?;
        let pr = b.conv_1x1("ple_proj", &g, &wproj, None)?;
        let pr = from_nchw(b, "ple_out", &pr, h, sq, lo)?;
        let pr = rms_norm(b, "post_ple_norm", &pr, Some(g_ple), eps, h, form)?;
        b.add("ple_residual", &x, &pr)?
    } else {
        x
    };

    let s = w.scalar(&key("layer_scalar"))?;
    match ctx.plan.numerics.layer_scalar {
        LayerScalar::Multiply => Ok(b.mul("scaled", &x, s)?),
        LayerScalar::FoldInChunk | LayerScalar::FoldAcrossChunks => {
            let folded = c * s;
            if ctx.restore_after == Some(i) {
                ctx.carried = 1.0;
                return Ok(b.mul("scaled", &x, folded)?);
            }
            let (k, rest) = pow2_split(folded);
            ctx.carried = rest;
            if k == 0 {
                Ok(x)
            } else {
                Ok(b.mul("scaled", &x, 2f64.powi(k))?)
            }
        }
    }
}

/// `c = 2^k · r` with `r ∈ [2^−½, 2^½]` (`k = round(log2 c)`): the stream carried as `x / c` is
/// multiplied by `2^k` (exact in fp16) so that it is carried as `x / r`.
pub(crate) fn pow2_split(c: f64) -> (i32, f64) {
    let k = c.log2().round() as i32;
    (k, c / 2f64.powi(k))
}

/// Project, normalise and rotate this layer's K/V, update the layer's cache slot per the function
/// (see the module doc) and return what attention reads (`[1, kv, T, D]`).
fn own_kv(
    b: &mut FunctionBuilder,
    ctx: &mut Ctx<'_>,
    w: &mut Weights<'_>,
    i: usize,
    h4: &Var,
    cos: &Var,
    sin: &Var,
) -> Result<(Var, Var)> {
    let lay = ctx.plan.layout.clone();
    let info = &lay.layers[i];
    let (h, d, kvh) = (lay.hidden, info.head_dim, info.kv_heads);
    let sq = ctx.positions();
    let eps = lay.rms_norm_eps;
    let form = ctx.plan.numerics.norm_gain;
    let rmat = ctx.rope_mats.get(&info.kind).cloned();
    let key = |s: &str| format!("layers.{i}.{s}");
    let wk = w.conv_weight(
        b,
        "k_proj_weight",
        &key("self_attn.k_proj.weight"),
        kvh * d,
        h,
    )?;
    let wv = w.conv_weight(
        b,
        "v_proj_weight",
        &key("self_attn.v_proj.weight"),
        kvh * d,
        h,
    )?;
    let g_k = w.vector(&key("self_attn.k_norm.weight"), d)?;
    let lo = ctx.plan.forms.layout;
    let (k, v) = project_kv(
        b,
        h4,
        &wk,
        &wv,
        g_k,
        cos,
        sin,
        (kvh, d, sq),
        eps,
        form,
        rmat.as_ref(),
        lo,
    )?;
    let (ka, va) = match ctx.kind {
        FunctionKind::Decode => update_cache(b, ctx, i, &k, &v, slot_padding(ctx, i))?,
        FunctionKind::Verify { .. } => {
            let kv = update_cache(b, ctx, i, &k, &v, None)?;
            ctx.rows.insert(i, (k, v));
            kv
        }
        FunctionKind::Prefill { .. } => {
            ctx.rows.insert(i, (k.clone(), v.clone()));
            (k, v)
        }
        FunctionKind::Stateful { .. } => super::stateful::write_kv(b, ctx, i, &k, &v)?,
    };
    if ctx.plan.producer(info.kind) == Some(i) {
        ctx.shared.insert(info.kind, (ka.clone(), va.clone()));
    }
    Ok((ka, va))
}

/// `k = RoPE(k_norm(k_proj h))`, `v = v_norm(v_proj h)`, both `[1, kv, S, D]`.
#[allow(clippy::too_many_arguments)]
fn project_kv(
    b: &mut FunctionBuilder,
    h4: &Var,
    wk: &Var,
    wv: &Var,
    g_k: TensorValue,
    cos: &Var,
    sin: &Var,
    (kvh, d, s): (usize, usize, usize),
    eps: f64,
    form: NormGain,
    rmat: Option<&Var>,
    lo: LayoutForm,
) -> R<(Var, Var)> {
    let k = b.conv_1x1("k_proj", h4, wk, None)?;
    let k = split_heads(b, "k_heads", &k, kvh, d, s, lo)?;
    let k = rms_norm(b, "k_norm", &k, Some(g_k), eps, d, form)?;
    let k = rope(b, "k_rope", &k, cos, sin, rmat)?;
    let v = b.conv_1x1("v_proj", h4, wv, None)?;
    let v = split_heads(b, "v_heads", &v, kvh, d, s, lo)?;
    let v = rms_norm(b, "v_norm", &v, None, eps, d, form)?;
    Ok((k, v))
}

/// Decode: how many zero columns pad layer `i`'s new row `[1, kv, 1, D]` to the slot width, if it is
/// narrower (a `pad` op, as the reference pipeline's `F.pad`: no constant, so the chunk's weight
/// file holds the same blobs as its prefill twin's).
fn slot_padding(ctx: &Ctx<'_>, i: usize) -> Option<usize> {
    let lay = &ctx.plan.layout;
    let d = lay.layers[i].head_dim;
    let maxhd = lay.max_head_dim();
    (d < maxhd).then_some(maxhd - d)
}

/// How new rows enter a positional cache.
enum Write {
    /// Decode: `old·keep + new·update_mask` (one-hot row).
    Blend { keep: Var, mask: Var },
    /// Verify: `old·keep + update_indicator·new` (row `j` to the slot of position `p + j`).
    Scatter { keep: Var, indicator: Var },
}

/// Write the `S` new rows `k`, `v` (`[1, kv, S, D]`) of KV-owning layer `i` into its cache slot and
/// return what attention reads (`[1, kv, T, D]`): shift register — drop the oldest `S` rows and
/// append; positional — [`Write::Blend`] (decode) or [`Write::Scatter`] (verify).
///
/// Decode (`pad` columns given when the layer's head dim is narrower than the slot) works at the slot width:
/// the rows are padded first, the updated slot is recorded for the `*_out` caches, and attention
/// reads its true-width columns. Verify works at the true width: the slot is narrowed first, and the
/// updated cache is only attended over.
fn update_cache(
    b: &mut FunctionBuilder,
    ctx: &mut Ctx<'_>,
    i: usize,
    k: &Var,
    v: &Var,
    pad: Option<usize>,
) -> Result<(Var, Var)> {
    let decode = ctx.kind == FunctionKind::Decode;
    let kind = ctx.plan.layout.layers[i].kind;
    let d = ctx.plan.layout.layers[i].head_dim;
    let narrow = d < ctx.plan.layout.max_head_dim();
    let sq = ctx.positions() as i32;
    let slot = ctx
        .chunk
        .slot_of(i)
        .ok_or_else(|| ExportError::Internal(format!("layer {i} owns KV but has no slot")))?
        .slot as i32;
    let policy = ctx.plan.cache(kind);
    let write = match (policy, ctx.keep_mask.clone()) {
        (CachePolicy::ShiftRegister { .. }, _) => None,
        (CachePolicy::Positional { .. }, Some(keep)) if decode => Some(Write::Blend {
            keep,
            mask: ctx.input(names::UPDATE_MASK)?,
        }),
        (CachePolicy::Positional { .. }, Some(keep)) => Some(Write::Scatter {
            keep,
            indicator: ctx.input(names::UPDATE_INDICATOR)?,
        }),
        (CachePolicy::Positional { .. }, None) => {
            return Err(ExportError::Internal(format!(
                "layer {i}: positional cache without update_mask / update_indicator"
            )));
        }
        (CachePolicy::Ring { .. }, _) => {
            return Err(ExportError::Internal(format!(
                "layer {i}: a ring cache lives in a state and is written by the stateful functions"
            )));
        }
    };
    let mut upd = |scope: &str, new: &Var, part: KvPart| -> Result<(Var, Var)> {
        let cache_in = ctx.input(&kind.cache(part, Dir::In))?;
        Ok(b.with_scope(scope, |b| -> R<(Var, Var)> {
            let new = match pad {
                Some(z) => b.pad_constant("padded", new, &[0, z as i32], 0.0)?,
                None => new.clone(),
            };
            let old = b.slice_axis("old", &cache_in, 0, slot, Some(slot + 1))?;
            let old = if narrow && !decode {
                b.slice_axis("old_true", &old, -1, 0, Some(d as i32))?
            } else {
                old
            };
            let cache = match &write {
                None => {
                    let kept = b.slice_axis("shifted", &old, 2, sq, None)?;
                    b.concat("cache", [&kept, &new], 2, false)?
                }
                Some(Write::Blend { keep, mask }) => {
                    let a = b.mul("kept", &old, keep)?;
                    let c = b.mul("written", &new, mask)?;
                    b.add("cache", &a, &c)?
                }
                Some(Write::Scatter { keep, indicator }) => {
                    let a = b.mul("kept", &old, keep)?;
                    let c = b.matmul("written", indicator, &new, false, false)?;
                    b.add("cache", &a, &c)?
                }
            };
            let attend = if narrow && decode {
                b.slice_axis("attend", &cache, -1, 0, Some(d as i32))?
            } else {
                cache.clone()
            };
            Ok((cache, attend))
        })?)
    };
    let (kc, ka) = upd("k_cache", k, KvPart::K)?;
    let (vc, va) = upd("v_cache", v, KvPart::V)?;
    if decode {
        ctx.new_caches.insert((kind, slot as usize), (kc, vc));
    }
    Ok((ka, va))
}
