//! `matmul` and `linear` (iOS17).
//!
//! * `matmul(x, y, transpose_x = False, transpose_y = False)`: the transpose flags swap the last
//!   two dims of their operand; rank-1 operands are promoted (x: prepend 1, y: append 1) and the
//!   promoted dim is removed from the result; batch dims broadcast (NumPy). fp16/fp32 operands,
//!   f32 accumulation, output dtype = declared (else x's), one rounding.
//! * `linear(x, weight, bias = 0)`: x [*, D_in] (rank 1–3), weight [D_out, D_in], bias [D_out];
//!   out = x·Wᵀ + b with the bias added in f32 before the single rounding. The weight is read in
//!   its storage dtype (fp16 stays fp16; see [`super::gemm`]).
//!
//! Not covered: int32 matmul/linear (returns a dtype error).

use super::OpArgs;
use super::gemm::{Rows, gemm_nt};
use super::util::broadcast_shapes;
use crate::error::KernelError;
use crate::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use std::borrow::Cow;

fn float_operand(t: &Tensor, what: &str) -> Result<(), KernelError> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(KernelError::dtype(
            t.dtype(),
            format!("{what} must be fp16 or fp32"),
        ))
    }
}

/// A weight in its storage dtype: widened f32 values (empty for fp16) and the fp16 elements.
pub(crate) type WeightData<'a> = (Cow<'a, [f32]>, Option<&'a [half::f16]>);

/// Weight rows of a tensor in its storage dtype (other dtypes are widened to f32).
pub(crate) fn rows_of(t: &Tensor) -> Result<WeightData<'_>, KernelError> {
    match t.data() {
        TensorData::F16(v) => Ok((Cow::Borrowed(&[][..]), Some(v.as_slice()))),
        _ => Ok((t.to_f32()?, None)),
    }
}

/// Transpose the last two dims of a row-major f32 buffer holding `batch` matrices r×c.
fn transpose_last2(v: &[f32], batch: usize, r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for b in 0..batch {
        let (src, dst) = (
            &v[b * r * c..(b + 1) * r * c],
            &mut out[b * r * c..(b + 1) * r * c],
        );
        for i in 0..r {
            for j in 0..c {
                dst[j * r + i] = src[i * c + j];
            }
        }
    }
    out
}

/// Offset (in matrices) of each broadcast batch index into an operand's own batch dims.
fn batch_offsets(own: &[usize], out: &[usize]) -> Vec<usize> {
    super::util::broadcast_offsets(own, out)
}

/// `matmul`.
pub fn matmul(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let y = a.req("y")?;
    float_operand(x, "x")?;
    float_operand(y, "y")?;
    let tx = a.bool_or("transpose_x", false)?;
    let ty = a.bool_or("transpose_y", false)?;
    if x.rank() == 0 || y.rank() == 0 {
        return Err(KernelError::shape("matmul operands must have rank >= 1"));
    }
    let (x1, y1) = (x.rank() == 1, y.rank() == 1);
    let mut xs = x.shape().to_vec();
    let mut ys = y.shape().to_vec();
    if x1 {
        xs.insert(0, 1);
    }
    if y1 {
        ys.push(1);
    }
    let (xr, xc) = (xs[xs.len() - 2], xs[xs.len() - 1]);
    let (yr, yc) = (ys[ys.len() - 2], ys[ys.len() - 1]);
    // logical x: M×K, y: K×N
    let (m, kx) = if tx && !x1 { (xc, xr) } else { (xr, xc) };
    let (ky, n) = if ty && !y1 { (yc, yr) } else { (yr, yc) };
    if kx != ky {
        return Err(KernelError::shape(format!(
            "inner dims differ: x {:?} (transpose {tx}) · y {:?} (transpose {ty})",
            x.shape(),
            y.shape()
        )));
    }
    let k = kx;
    let xb = &xs[..xs.len() - 2];
    let yb = &ys[..ys.len() - 2];
    let bshape = broadcast_shapes(&[xb, yb])?;
    let nbatch: usize = bshape.iter().product();
    let (xbn, ybn): (usize, usize) = (xb.iter().product(), yb.iter().product());
    let xf = x.to_f32()?;
    let yf = y.to_f32()?;
    // x rows as M×K per batch; y as N×K per batch
    let xm: Cow<'_, [f32]> = if tx && !x1 {
        Cow::Owned(transpose_last2(&xf, xbn, xr, xc))
    } else {
        xf
    };
    let yt: Cow<'_, [f32]> = if ty && !y1 {
        yf
    } else {
        Cow::Owned(transpose_last2(&yf, ybn, yr, yc))
    };
    let xo = batch_offsets(xb, &bshape);
    let yo = batch_offsets(yb, &bshape);
    let mut out = vec![0f32; nbatch * m * n];
    let ok = out
        .par_chunks_mut((m * n).max(1))
        .enumerate()
        .map(|(bi, o)| {
            if m * n == 0 {
                return true;
            }
            let xs_b = &xm[xo[bi] * m * k..(xo[bi] + 1) * m * k];
            let ys_b = &yt[yo[bi] * n * k..(yo[bi] + 1) * n * k];
            // out[mi][ni] = Σ x[mi][k] y[k][ni]: rows of b = x rows, a = yᵀ rows
            gemm_nt(ys_b, n, k, Rows::F32(xs_b), o)
        })
        .all(|b| b);
    if !ok {
        return Err(KernelError::shape("internal matmul size mismatch"));
    }
    let mut shape = bshape;
    if !x1 {
        shape.push(m);
    }
    if !y1 {
        shape.push(n);
    }
    Ok(vec![Tensor::float_from_f32(
        a.float_out(0, x.dtype()),
        shape,
        out,
    )?])
}

/// `linear`.
pub fn linear(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let w = a.req("weight")?;
    float_operand(x, "x")?;
    if w.rank() != 2 || x.rank() == 0 || x.shape()[x.rank() - 1] != w.shape()[1] {
        return Err(KernelError::shape(format!(
            "linear x {:?} with weight {:?}",
            x.shape(),
            w.shape()
        )));
    }
    let (dout, din) = (w.shape()[0], w.shape()[1]);
    let m = x.len() / din.max(1);
    let bias = a.get("bias")?.map(Tensor::to_f32).transpose()?;
    if let Some(b) = &bias
        && b.len() != dout
    {
        return Err(KernelError::bad(
            "bias",
            format!("has {} elements, expected {dout}", b.len()),
        ));
    }
    let xf = x.to_f32()?;
    let mut t = vec![0f32; dout * m];
    let (wf, wh) = rows_of(w)?;
    let rows = match wh {
        Some(h) => Rows::F16(h),
        None => Rows::F32(&wf),
    };
    if !gemm_nt(&xf, m, din, rows, &mut t) {
        return Err(KernelError::shape("internal linear size mismatch"));
    }
    // t is D_out × M; the output is M × D_out
    let mut out = vec![0f32; m * dout];
    for o in 0..dout {
        let bo = bias.as_ref().map_or(0.0, |b| b[o]);
        for mi in 0..m {
            out[mi * dout + o] = t[o * m + mi] + bo;
        }
    }
    let mut shape = x.shape().to_vec();
    let last = shape.len() - 1;
    shape[last] = dout;
    Ok(vec![Tensor::float_from_f32(
        a.float_out(0, x.dtype()),
        shape,
        out,
    )?])
}
