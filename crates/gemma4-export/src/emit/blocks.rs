//! Building blocks shared by every layer and chunk, in the ANE-friendly forms of the reference
//! pipeline (spec §3) with HF's numerics (spec gemma4-text §3):
//!
//! * RMSNorm as `layer_norm` over `concat([x, −x])` (mean 0, so layer_norm = x·(mean(x²)+ε)^−½) with
//!   the gain (`w`, not `1 + w`) folded into `layer_norm`'s `gamma` as `[w, w]`, first half kept: one
//!   rounding per norm like HF (which normalises and scales in fp32, then rounds once), and one op
//!   fewer than a separate gain multiply; the parameter-free v-norm has `gamma` = ones.
//! * RoPE in the non-interleaved rotate-half layout: `x·cos + concat(−x₂, x₁)·sin` with host-fed rows
//!   (HF-correct tables: proportional RoPE on full layers has cos 1 / sin 0 on non-rotating pairs).
//! * Projections as 1×1 convs on NCHW `[1, C, 1, S]` activations (the residual stream is `[1, S, C]`;
//!   for one position the layout change is a reshape, for `S > 1` a transpose and a reshape).
//! * Per-head tensors `[1, heads, S, D]`.
//! * Attention with scale 1.0: `softmax(q·Kᵀ + mask)·V`, grouped-query heads without repeating K/V:
//!   queries `[1, nh, S, D]` are viewed as `[1, kv, n_rep·S, D]` (row `r·S + s` = head `g·n_rep + r`,
//!   position `s`), so the mask `[1, 1, S, T]` must be tiled `n_rep` times along its rows when `S > 1`
//!   ([`group_mask`]); or flash decoding over key blocks.
//!
//! Where the reference pipeline's graphs spell an op differently, the build's
//! [`chunkset::GraphForms`] choose (see `chunkset::forms` for the defaults and why): the softmax
//! native or decomposed (`max, sub, exp, sum, div`), GQA by the query reshape above or by repeating
//! K/V `n_rep` times (then the mask broadcasts over the heads), and single-position layout changes
//! as reshapes or as the reference's transposes (`permute` / `unsqueeze` / `squeeze`).

use crate::numerics::NormGain;
use chunkset::{GqaForm, GraphForms, LayoutForm, SoftmaxForm};
use mil::builder::{FunctionBuilder, GeluMode, Split};
use mil::{MilError, TensorType, TensorValue, Var};

pub(crate) type R<T> = Result<T, MilError>;

/// `y = x·(mean(x², last axis) + eps)^−½ [· gain]` over the last axis of size `dim`: `layer_norm`
/// of `concat([x, −x])` with `gamma = [gain, gain]` (ones without gain), first half kept; with
/// [`NormGain::Multiply`] the gain is a separate multiply after the slice instead.
pub(crate) fn rms_norm(
    b: &mut FunctionBuilder,
    name: &str,
    x: &Var,
    gain: Option<TensorValue>,
    eps: f64,
    dim: usize,
    form: NormGain,
) -> R<Var> {
    let (gamma, after) = match (gain, form) {
        (Some(g), NormGain::Folded) => (Some(mirrored_gain(name, &g, dim)?), None),
        (g, _) => (None, g),
    };
    b.with_scope(name, |b| {
        let neg = b.mul("neg", x, -1.0)?;
        let both = b.concat("mirror", [x, &neg], -1, false)?;
        let ln = b.layer_norm("ln", &both, &[-1], gamma.map(Into::into), None, eps)?;
        match after {
            None => b.slice_axis("out", &ln, -1, 0, Some(dim as i32)),
            Some(g) => {
                let half = b.slice_axis("half", &ln, -1, 0, Some(dim as i32))?;
                b.mul("out", &half, g)
            }
        }
    })
}

/// `[g, g]` (length `2·dim`, same dtype and bytes as `g`), the `gamma` of the mirrored `layer_norm`.
fn mirrored_gain(name: &str, g: &TensorValue, dim: usize) -> R<TensorValue> {
    let bad = |msg: String| MilError::Argument {
        op: "rms_norm".into(),
        name: name.into(),
        msg,
    };
    if g.shape() != [dim] {
        return Err(bad(format!(
            "gain of shape {:?}, expected [{dim}]",
            g.shape()
        )));
    }
    let bytes = g
        .bytes()
        .ok_or_else(|| bad("gain is not a numeric tensor".into()))?
        .as_bytes();
    let both = [bytes, bytes].concat();
    TensorValue::from_bytes(TensorType::new(g.dtype(), &[2 * dim]), both)
        .map_err(|e| bad(e.to_string()))
}

/// Rotate-half RoPE: `x·cos + concat(−x[D/2:], x[:D/2])·sin` (cos/sin broadcast over heads), or
/// `x @ mat` with a matrix from [`rope_matrix`] (one rounding instead of three).
pub(crate) fn rope(
    b: &mut FunctionBuilder,
    name: &str,
    x: &Var,
    cos: &Var,
    sin: &Var,
    mat: Option<&Var>,
) -> R<Var> {
    if let Some(m) = mat {
        return b.matmul(name, x, m, false, false);
    }
    b.with_scope(name, |b| {
        let halves = b.split("halves", x, Split::Num(2), -1)?;
        let neg = b.mul("neg_hi", &halves[1], -1.0)?;
        let rot = b.concat("rotated", [&neg, &halves[0]], -1, false)?;
        let a = b.mul("x_cos", x, cos)?;
        let c = b.mul("rot_sin", &rot, sin)?;
        b.add("out", &a, &c)
    })
}

/// The RoPE matrix of one position, `R = I·cos + J·sin` (`[1, 1, D, D]`, `cos`/`sin` `[1, 1, 1, D]`
/// broadcast along rows), so that `x @ R = x·cos + rotate_half(x)·sin`: `J[j + D/2][j] = −1` and
/// `J[j − D/2][j] = 1`. Both products are exact and their supports disjoint, so `R` is exact.
pub(crate) fn rope_matrix(
    b: &mut FunctionBuilder,
    name: &str,
    cos: &Var,
    sin: &Var,
    d: usize,
    fp32: bool,
) -> R<Var> {
    b.with_scope(name, |b| {
        let h = d / 2;
        let mut eye = vec![0f32; d * d];
        let mut jm = vec![0f32; d * d];
        for j in 0..d {
            eye[j * d + j] = 1.0;
            if j < h {
                jm[(j + h) * d + j] = -1.0;
            } else {
                jm[(j - h) * d + j] = 1.0;
            }
        }
        let shape = [1, 1, d, d];
        let (i, jv) = if fp32 {
            (
                b.const_f32("eye", &shape, &eye)?,
                b.const_f32("rot", &shape, &jm)?,
            )
        } else {
            (
                b.const_f16("eye", &shape, &eye)?,
                b.const_f16("rot", &shape, &jm)?,
            )
        };
        let c = b.mul("cos", &i, cos)?;
        let s = b.mul("sin", &jv, sin)?;
        b.add("mat", &c, &s)
    })
}

/// GELU with the tanh approximation (`gelu_pytorch_tanh`).
pub(crate) fn gelu_tanh(b: &mut FunctionBuilder, name: &str, x: &Var) -> R<Var> {
    b.gelu(name, x, GeluMode::TanhApproximation)
}

/// `[1, S, C]` → `[1, C, 1, S]`.
pub(crate) fn to_nchw(
    b: &mut FunctionBuilder,
    name: &str,
    x: &Var,
    c: usize,
    s: usize,
    layout: LayoutForm,
) -> R<Var> {
    if s == 1 {
        return match layout {
            LayoutForm::Reshape => b.reshape(name, x, &[1, c as i32, 1, 1]),
            LayoutForm::Transpose => {
                let t = b.transpose(&format!("{name}_cs"), x, &[0, 2, 1])?;
                b.expand_dims(name, &t, &[2])
            }
        };
    }
    let t = b.transpose(&format!("{name}_cs"), x, &[0, 2, 1])?;
    b.reshape(name, &t, &[1, c as i32, 1, s as i32])
}

/// `[1, C, 1, S]` → `[1, S, C]`.
pub(crate) fn from_nchw(
    b: &mut FunctionBuilder,
    name: &str,
    x: &Var,
    c: usize,
    s: usize,
    layout: LayoutForm,
) -> R<Var> {
    if s == 1 {
        return match layout {
            LayoutForm::Reshape => b.reshape(name, x, &[1, 1, c as i32]),
            LayoutForm::Transpose => {
                let t = b.squeeze(&format!("{name}_cs"), x, &[2])?;
                b.transpose(name, &t, &[0, 2, 1])
            }
        };
    }
    let t = b.reshape(&format!("{name}_cs"), x, &[1, c as i32, s as i32])?;
    b.transpose(name, &t, &[0, 2, 1])
}

/// Conv output `[1, n·D, 1, S]` → per-head `[1, n, S, D]`.
pub(crate) fn split_heads(
    b: &mut FunctionBuilder,
    name: &str,
    x: &Var,
    n: usize,
    d: usize,
    s: usize,
    layout: LayoutForm,
) -> R<Var> {
    if s == 1 {
        return match layout {
            LayoutForm::Reshape => b.reshape(name, x, &[1, n as i32, 1, d as i32]),
            LayoutForm::Transpose => {
                let t = b.reshape(&format!("{name}_ds"), x, &[1, n as i32, d as i32, 1])?;
                b.transpose(name, &t, &[0, 1, 3, 2])
            }
        };
    }
    let t = b.reshape(&format!("{name}_ds"), x, &[1, n as i32, d as i32, s as i32])?;
    b.transpose(name, &t, &[0, 1, 3, 2])
}

/// Per-head `[1, n, S, D]` (as `[1, kv, n_rep·S, D]`) → NCHW `[1, n·D, 1, S]` for the output projection.
fn merge_heads(
    b: &mut FunctionBuilder,
    name: &str,
    x: &Var,
    n: usize,
    d: usize,
    s: usize,
    layout: LayoutForm,
) -> R<Var> {
    if s == 1 {
        return match layout {
            LayoutForm::Reshape => b.reshape(name, x, &[1, (n * d) as i32, 1, 1]),
            LayoutForm::Transpose => {
                let h = if x.dim(1) == Some(n) {
                    x.clone()
                } else {
                    b.reshape(&format!("{name}_heads"), x, &[1, n as i32, 1, d as i32])?
                };
                let t = b.transpose(&format!("{name}_sh"), &h, &[0, 2, 1, 3])?;
                let t = b.reshape(&format!("{name}_flat"), &t, &[1, 1, (n * d) as i32])?;
                let t = b.transpose(&format!("{name}_cs"), &t, &[0, 2, 1])?;
                b.expand_dims(name, &t, &[2])
            }
        };
    }
    let t = b.reshape(
        &format!("{name}_heads"),
        x,
        &[1, n as i32, s as i32, d as i32],
    )?;
    let t = b.transpose(&format!("{name}_ds"), &t, &[0, 1, 3, 2])?;
    b.reshape(name, &t, &[1, (n * d) as i32, 1, s as i32])
}

/// The additive mask `[1, 1, S, T]` tiled to the grouped query rows `[1, 1, n_rep·S, T]` (unchanged
/// when `S = 1`, where it broadcasts, or without grouping).
pub(crate) fn group_mask(b: &mut FunctionBuilder, name: &str, mask: &Var, n_rep: usize) -> R<Var> {
    if n_rep <= 1 || mask.dim(2) == Some(1) {
        return Ok(mask.clone());
    }
    b.tile(name, mask, &[1, 1, n_rep as i32, 1])
}

/// `softmax(x)` over the last axis in the chosen form: one `softmax` op, or the reference
/// pipeline's decomposition `exp(x − max(x)) / Σ exp(x − max(x))`.
pub(crate) fn softmax(b: &mut FunctionBuilder, name: &str, x: &Var, form: SoftmaxForm) -> R<Var> {
    match form {
        SoftmaxForm::Native => b.softmax(name, x, -1),
        SoftmaxForm::Decomposed => b.with_scope(name, |b| {
            let m = b.reduce_max("max", x, &[-1], true)?;
            let e = b.sub("shifted", x, &m)?;
            let e = b.exp("exp", &e)?;
            let sum = b.reduce_sum("sum", &e, &[-1], true)?;
            b.real_div("out", &e, &sum)
        }),
    }
}

/// K or V `[1, kv, T, D]` repeated `n_rep` times along the heads (`[1, kv·n_rep, T, D]`, head
/// `g·n_rep + r` = K/V head `g`), as the reference pipeline's `repeat_interleave` does.
fn repeat_heads(b: &mut FunctionBuilder, name: &str, x: &Var, kv: usize, n_rep: usize) -> R<Var> {
    if n_rep <= 1 {
        return Ok(x.clone());
    }
    if kv == 1 {
        return b.tile(name, x, &[1, n_rep as i32, 1, 1]);
    }
    let (t, d) = (x.dim(2).unwrap_or(0), x.dim(3).unwrap_or(0));
    let e = b.expand_dims(&format!("{name}_groups"), x, &[2])?;
    let e = b.tile(&format!("{name}_tiled"), &e, &[1, 1, n_rep as i32, 1, 1])?;
    b.reshape(name, &e, &[1, (kv * n_rep) as i32, t as i32, d as i32])
}

/// The queries and K/V attention multiplies in the chosen GQA form: `(q, k, v, groups)` with `q`
/// viewed as `[1, kv, n_rep·S, D]` (reshape) or as is with K/V repeated (repeat; `groups` = heads).
#[allow(clippy::too_many_arguments)]
fn gqa(
    b: &mut FunctionBuilder,
    q: &Var,
    k: &Var,
    v: &Var,
    nh: usize,
    kv: usize,
    d: usize,
    s: usize,
    form: GqaForm,
) -> R<(Var, Var, Var)> {
    match form {
        GqaForm::Reshape => {
            let rows = (nh / kv * s) as i32;
            let qg = b.reshape("q_groups", q, &[1, kv as i32, rows, d as i32])?;
            Ok((qg, k.clone(), v.clone()))
        }
        GqaForm::Repeat => {
            let n_rep = nh / kv;
            let kr = repeat_heads(b, "k_repeated", k, kv, n_rep)?;
            let vr = repeat_heads(b, "v_repeated", v, kv, n_rep)?;
            Ok((q.clone(), kr, vr))
        }
    }
}

/// Plain attention for `s` query positions. `q`: `[1, nh, S, D]`; `k`, `v`: `[1, kv, T, D]`;
/// `mask`: additive, `[1, 1, S, T]` for one position or with [`GqaForm::Repeat`], grouped by
/// [`group_mask`] otherwise. Returns `[1, nh·D, 1, S]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    b: &mut FunctionBuilder,
    q: &Var,
    k: &Var,
    v: &Var,
    mask: &Var,
    nh: usize,
    kv: usize,
    d: usize,
    s: usize,
    forms: GraphForms,
) -> R<Var> {
    let (qg, k, v) = gqa(b, q, k, v, nh, kv, d, s, forms.gqa)?;
    let sc = b.matmul("scores", &qg, &k, false, true)?;
    let sc = b.add("scores_masked", &sc, mask)?;
    let p = softmax(b, "probs", &sc, forms.softmax)?;
    let o = b.matmul("context", &p, &v, false, false)?;
    merge_heads(b, "context_nchw", &o, nh, d, s, forms.layout)
}

/// Attention where every query row has its own keys: `q` `[1, nh, S, D]`; `k`, `v` `[S, kv, T, D]`
/// (row `s` = what query `s` attends over, e.g. the sliding ring as that position sees it); `mask`
/// `[S, 1, 1, T]`. Queries are regrouped per row as `[S, kv, n_rep, D]`, so the scores are a batched
/// matmul over rows and KV heads (its own grouping, whatever [`GraphForms::gqa`] says; the softmax
/// and layout forms apply). Returns `[1, nh·D, 1, S]`, like [`attention`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_rows(
    b: &mut FunctionBuilder,
    q: &Var,
    k: &Var,
    v: &Var,
    mask: &Var,
    nh: usize,
    kv: usize,
    d: usize,
    s: usize,
    forms: GraphForms,
) -> R<Var> {
    let (s_, kv_, rep, d_) = (s as i32, kv as i32, (nh / kv) as i32, d as i32);
    let qt = b.transpose("q_rows", q, &[2, 1, 0, 3])?;
    let qg = b.reshape("q_row_groups", &qt, &[s_, kv_, rep, d_])?;
    let sc = b.matmul("scores", &qg, k, false, true)?;
    let sc = b.add("scores_masked", &sc, mask)?;
    let p = softmax(b, "probs", &sc, forms.softmax)?;
    let o = b.matmul("context", &p, v, false, false)?;
    let o = b.reshape("context_rows", &o, &[s_, nh as i32, 1, d_])?;
    let o = b.transpose("context_heads", &o, &[2, 1, 0, 3])?;
    merge_heads(b, "context_nchw", &o, nh, d, s, forms.layout)
}

/// Flash-decoding attention: keys in blocks of `block`, each block's max (floored at −65504 so a
/// fully masked block contributes exactly 0), exp-sums and partial outputs combined with the global
/// max (an online softmax: decomposed whatever [`GraphForms::softmax`] says). Same inputs and
/// output as [`attention`]; `T` must be a multiple of `block`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn flash_attention(
    b: &mut FunctionBuilder,
    q: &Var,
    k: &Var,
    v: &Var,
    mask: &Var,
    nh: usize,
    kv: usize,
    d: usize,
    s: usize,
    t: usize,
    block: usize,
    forms: GraphForms,
) -> R<Var> {
    let (qg, k, v) = gqa(b, q, k, v, nh, kv, d, s, forms.gqa)?;
    let (k, v) = (&k, &v);
    let mut parts = Vec::new();
    for j in 0..t / block {
        let (lo, hi) = ((j * block) as i32, ((j + 1) * block) as i32);
        let part = b.with_scope(&format!("block{j}"), |b| -> R<(Var, Var, Var)> {
            let kj = b.slice_axis("k", k, 2, lo, Some(hi))?;
            let vj = b.slice_axis("v", v, 2, lo, Some(hi))?;
            let mj = b.slice_axis("mask", mask, -1, lo, Some(hi))?;
            let s = b.matmul("scores", &qg, &kj, false, true)?;
            let s = b.add("scores_masked", &s, &mj)?;
            let m = b.reduce_max("max", &s, &[-1], true)?;
            let m = b.maximum("max_floor", &m, -65504.0)?;
            let e = b.sub("shifted", &s, &m)?;
            let e = b.exp("exp", &e)?;
            let l = b.reduce_sum("sum", &e, &[-1], true)?;
            let o = b.matmul("context", &e, &vj, false, false)?;
            Ok((m, l, o))
        })?;
        parts.push(part);
    }
    let mut m = parts[0].0.clone();
    for (j, p) in parts.iter().enumerate().skip(1) {
        m = b.maximum(&format!("max_all{j}"), &m, &p.0)?;
    }
    let mut num: Option<Var> = None;
    let mut den: Option<Var> = None;
    for (j, (mj, lj, oj)) in parts.iter().enumerate() {
        let (n, dn) = b.with_scope(&format!("combine{j}"), |b| -> R<(Var, Var)> {
            let diff = b.sub("rel", mj, &m)?;
            let alpha = b.exp("alpha", &diff)?;
            let n = b.mul("num", oj, &alpha)?;
            let dn = b.mul("den", lj, &alpha)?;
            let n = match &num {
                Some(acc) => b.add("num_acc", acc, &n)?,
                None => n,
            };
            let dn = match &den {
                Some(acc) => b.add("den_acc", acc, &dn)?,
                None => dn,
            };
            Ok((n, dn))
        })?;
        num = Some(n);
        den = Some(dn);
    }
    let (Some(num), Some(den)) = (num, den) else {
        return Err(MilError::Argument {
            op: "flash_attention".into(),
            name: "context".into(),
            msg: "no key blocks".into(),
        });
    };
    let o = b.real_div("context", &num, &den)?;
    merge_heads(b, "context_nchw", &o, nh, d, s, forms.layout)
}
