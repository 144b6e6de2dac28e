//! Numeric building blocks of the reference forward, with HF's precision rules.
//!
//! candle-nn's kernels are used wherever their semantics equal the spec (spec/gemma4-text.md §3, §5):
//!
//! * Linear: `candle_nn::Linear` without bias, `x · wᵀ` in the activation dtype.
//! * RMSNorm: `candle_nn::ops::rms_norm` on the input upcast to f32 with an f32 weight, result cast
//!   back to the activation dtype — HF's rule (`x.float()`, `x · (mean(x²) + eps)^(−1/2) · w`,
//!   weight used as is, not `1 + w`). The kernel itself is only called in f32: for f16 / bf16 inputs
//!   it rounds the RMS and every product to the input dtype, which HF does not. `w = None` (the
//!   parameter-free v-norm) multiplies by ones, which is exact.
//! * RoPE: `candle_nn::rotary_emb::rope_thd`, the non-interleaved (rotate_half, NeoX) layout over
//!   `[1, S, heads, D]` with `[S, D/2]` cos / sin tables in the activation dtype: per pair
//!   `(x₁c − x₂s, x₁s + x₂c)`, the same products and sums, rounded the same way, as HF's
//!   `x·cos + rotate_half(x)·sin`.
//! * Softmax over the last dim: `candle_nn::ops::softmax_last_dim` on f32 scores (HF runs the
//!   attention softmax in f32).
//!
//! Hand-written, because the spec differs from what candle offers:
//!
//! * GELU (tanh approximation): evaluated in f32 and rounded once to the activation dtype, as torch
//!   does for half tensors; candle's `gelu` on f16 / bf16 rounds every intermediate step.
//! * Scalar scales: HF casts its scale buffers (√H, √P) to the weight dtype before multiplying, and
//!   multiplies Python-float scales (H^−½, 2^−½) in f32 with one rounding; candle's `affine` on
//!   half tensors does neither.

use candle_core::{DType, Tensor};
use candle_nn::Module;

use crate::error::{CandleContext, Result};

/// `x @ wᵀ` for `x [.., in]`, `w [out, in]` (no bias).
pub(crate) fn linear(x: &Tensor, w: &Tensor, op: &str) -> Result<Tensor> {
    candle_nn::Linear::new(w.clone(), None)
        .forward(x)
        .ctx(|| op.to_string())
}

/// RMSNorm over the last dim, computed in f32; `w` (f32) is applied if given.
pub(crate) fn rms_norm(x: &Tensor, w: Option<&Tensor>, eps: f64, op: &str) -> Result<Tensor> {
    let ctx = || format!("{op}: rms_norm");
    let dt = x.dtype();
    let xf = x.to_dtype(DType::F32).ctx(ctx)?.contiguous().ctx(ctx)?;
    let ones;
    let alpha = match w {
        Some(w) => w,
        None => {
            let d = xf.dim(candle_core::D::Minus1).ctx(ctx)?;
            ones = Tensor::ones(d, DType::F32, xf.device()).ctx(ctx)?;
            &ones
        }
    };
    candle_nn::ops::rms_norm(&xf, alpha, eps as f32)
        .ctx(ctx)?
        .to_dtype(dt)
        .ctx(ctx)
}

/// Softmax over the last dim of an f32 tensor.
pub(crate) fn softmax_f32(x: &Tensor, op: &str) -> Result<Tensor> {
    let ctx = || format!("{op}: softmax");
    candle_nn::ops::softmax_last_dim(&x.contiguous().ctx(ctx)?).ctx(ctx)
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

/// Apply RoPE to `x [S, heads, D]` with half-width tables `cos`, `sin` of shape `[S, D/2]`
/// (activation dtype; the full-width table is `cat(f, f)`).
pub(crate) fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, op: &str) -> Result<Tensor> {
    let ctx = || format!("{op}: rope");
    let x4 = x.contiguous().ctx(ctx)?.unsqueeze(0).ctx(ctx)?;
    candle_nn::rotary_emb::rope_thd(&x4, cos, sin)
        .ctx(ctx)?
        .squeeze(0)
        .ctx(ctx)
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
