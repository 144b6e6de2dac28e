//! Numeric building blocks of the reference forward, with HF's precision rules.
//!
//! * RMSNorm: input upcast to f32, `x · (mean(x²) + eps)^(−1/2) · w` (weight used as is, not
//!   `1 + w`), result cast back to the activation dtype. `w = None` is the parameter-free norm.
//! * Softmax over the last dim in f32.
//! * GELU, tanh approximation, evaluated in f32 and rounded once to the activation dtype.
//! * Linear: `x · wᵀ` in the activation dtype (no bias).
//! * RoPE application with the rotate_half layout.

use candle_core::{D, DType, Tensor};

use crate::error::{CandleContext, Result};

/// `x @ wᵀ` for `x [.., in]`, `w [out, in]`.
pub(crate) fn linear(x: &Tensor, w: &Tensor, op: &str) -> Result<Tensor> {
    let wt = w.t().ctx(|| format!("{op}: transpose"))?;
    match x.rank() {
        2 => x.matmul(&wt).ctx(|| op.to_string()),
        _ => x.broadcast_matmul(&wt).ctx(|| op.to_string()),
    }
}

/// RMSNorm over the last dim, computed in f32; `w` (f32) is applied if given.
pub(crate) fn rms_norm(x: &Tensor, w: Option<&Tensor>, eps: f64, op: &str) -> Result<Tensor> {
    let ctx = || format!("{op}: rms_norm");
    let dt = x.dtype();
    let xf = x.to_dtype(DType::F32).ctx(ctx)?;
    let ms = xf.sqr().ctx(ctx)?.mean_keepdim(D::Minus1).ctx(ctx)?;
    let r = ms.affine(1.0, eps).ctx(ctx)?.powf(-0.5).ctx(ctx)?;
    let mut y = xf.broadcast_mul(&r).ctx(ctx)?;
    if let Some(w) = w {
        y = y.broadcast_mul(w).ctx(ctx)?;
    }
    y.to_dtype(dt).ctx(ctx)
}

/// Softmax over the last dim of an f32 tensor.
pub(crate) fn softmax_f32(x: &Tensor, op: &str) -> Result<Tensor> {
    let ctx = || format!("{op}: softmax");
    let m = x.max_keepdim(D::Minus1).ctx(ctx)?;
    let e = x.broadcast_sub(&m).ctx(ctx)?.exp().ctx(ctx)?;
    let s = e.sum_keepdim(D::Minus1).ctx(ctx)?;
    e.broadcast_div(&s).ctx(ctx)
}

/// GELU (tanh approximation) computed in f32, returned in the input dtype.
pub(crate) fn gelu_tanh(x: &Tensor, op: &str) -> Result<Tensor> {
    let ctx = || format!("{op}: gelu");
    let dt = x.dtype();
    x.to_dtype(DType::F32)
        .ctx(ctx)?
        .gelu()
        .ctx(ctx)?
        .to_dtype(dt)
        .ctx(ctx)
}

/// Apply RoPE to `x [S, heads, D]` with `cos`, `sin` of shape `[S, 1, D]` (activation dtype).
pub(crate) fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, op: &str) -> Result<Tensor> {
    let ctx = || format!("{op}: rope");
    let d = x.dim(D::Minus1).ctx(ctx)?;
    let half = d / 2;
    let x1 = x.narrow(D::Minus1, 0, half).ctx(ctx)?;
    let x2 = x.narrow(D::Minus1, half, half).ctx(ctx)?;
    let rot = Tensor::cat(&[&x2.neg().ctx(ctx)?, &x1], D::Minus1).ctx(ctx)?;
    let a = x.broadcast_mul(cos).ctx(ctx)?;
    let b = rot.broadcast_mul(sin).ctx(ctx)?;
    a.add(&b).ctx(ctx)
}

/// Multiply by a scalar that is first rounded to the tensor's dtype (HF casts its scale
/// buffers to the weight dtype before multiplying). The product is formed in f32 and rounded
/// once, as torch does for half-precision tensors.
pub(crate) fn scale_by_buffer(x: &Tensor, s: f32, op: &str) -> Result<Tensor> {
    scale_by_float(x, round_to_dtype(s, x.dtype()), op)
}

/// Multiply by a Python-float scalar (not rounded to the dtype): f32 product, rounded once.
pub(crate) fn scale_by_float(x: &Tensor, s: f64, op: &str) -> Result<Tensor> {
    let ctx = || format!("{op}: scale");
    let dt = x.dtype();
    if dt == DType::F32 {
        return x.affine(s, 0.0).ctx(ctx);
    }
    x.to_dtype(DType::F32)
        .ctx(ctx)?
        .affine(s, 0.0)
        .ctx(ctx)?
        .to_dtype(dt)
        .ctx(ctx)
}

/// Round an f32 scalar to `dt` and return it as f64.
pub(crate) fn round_to_dtype(s: f32, dt: DType) -> f64 {
    match dt {
        DType::F16 => f64::from(half::f16::from_f32(s).to_f32()),
        DType::BF16 => f64::from(half::bf16::from_f32(s).to_f32()),
        _ => f64::from(s),
    }
}
