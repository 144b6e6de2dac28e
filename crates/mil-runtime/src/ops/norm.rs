//! Normalisations: `softmax` (iOS15) and `layer_norm` (iOS17).
//!
//! * `softmax(x, axis = -1)`: exp(x − max) / Σ exp(x − max) along `axis`, in f32, rounded once.
//! * `layer_norm(x, axes = all, gamma = 1, beta = 0, epsilon = 1e-5)`:
//!   gamma·(x − mean)/√(var + ε) + beta over `axes`, population variance, f32 accumulation.
//!   `gamma`/`beta` have shape `x.shape[axes]` (axes taken in ascending order). Non-trailing axes
//!   are handled by permuting them to the end and back.
//!
//! The stored `epsilon` is used as is (an fp16 graph stores 1e-5 as 1.0013580322265625e-05).

use super::OpArgs;
use super::shape::permute;
use super::util::norm_axis;
use crate::error::KernelError;
use crate::tensor::Tensor;

/// Split `shape` around `axis` into (outer, n, inner).
pub(crate) fn split3(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

fn float_in(x: &Tensor, what: &str) -> Result<(), KernelError> {
    if x.dtype().is_float() {
        Ok(())
    } else {
        Err(KernelError::dtype(
            x.dtype(),
            format!("{what} needs a float operand"),
        ))
    }
}

/// `softmax`.
pub fn softmax(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    float_in(x, "softmax")?;
    let axis = norm_axis(a.int_or("axis", -1)?, x.rank(), "axis")?;
    let (outer, n, inner) = split3(x.shape(), axis);
    let xs = x.to_f32()?;
    let mut out = vec![0f32; xs.len()];
    let mut buf = vec![0f32; n];
    for o in 0..outer {
        for i in 0..inner {
            let base = o * n * inner + i;
            let mut m = f32::NEG_INFINITY;
            for k in 0..n {
                m = m.max(xs[base + k * inner]);
            }
            let mut s = 0f32;
            for (k, b) in buf.iter_mut().enumerate() {
                let e = (xs[base + k * inner] - m).exp();
                *b = e;
                s += e;
            }
            for (k, b) in buf.iter().enumerate() {
                out[base + k * inner] = b / s;
            }
        }
    }
    Ok(vec![Tensor::float_from_f32(
        a.float_out(0, x.dtype()),
        x.shape().to_vec(),
        out,
    )?])
}

/// `layer_norm`.
pub fn layer_norm(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    float_in(x, "layer_norm")?;
    let rank = x.rank();
    let mut axes: Vec<usize> = match a.ints("axes")? {
        Some(v) => v
            .iter()
            .map(|&ax| norm_axis(ax, rank, "axes"))
            .collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    let eps = a.float("epsilon")?.unwrap_or(1e-5);
    // permute the normalised axes to the end if they are not already trailing
    let trailing = axes
        .iter()
        .enumerate()
        .all(|(i, &ax)| ax == rank - axes.len() + i);
    let (work, perm) = if trailing {
        (x.clone(), None)
    } else {
        let mut perm: Vec<usize> = (0..rank).filter(|d| !axes.contains(d)).collect();
        perm.extend(&axes);
        (permute(x, &perm)?, Some(perm))
    };
    let n: usize = axes.iter().map(|&ax| x.shape()[ax]).product();
    let gamma = a.get("gamma")?.map(|g| g.to_f32()).transpose()?;
    let beta = a.get("beta")?.map(|b| b.to_f32()).transpose()?;
    for (p, v) in [("gamma", &gamma), ("beta", &beta)] {
        if let Some(v) = v
            && v.len() != n
        {
            return Err(KernelError::bad(
                p,
                format!("has {} elements, normalised size is {n}", v.len()),
            ));
        }
    }
    let xs = work.to_f32()?;
    let mut out = vec![0f32; xs.len()];
    if n > 0 {
        for (row, o) in xs.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let mean = row.iter().sum::<f32>() / n as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for (k, (dst, &v)) in o.iter_mut().zip(row).enumerate() {
                let mut y = (v - mean) * inv;
                if let Some(g) = &gamma {
                    y *= g[k];
                }
                if let Some(b) = &beta {
                    y += b[k];
                }
                *dst = y;
            }
        }
    }
    let od = a.float_out(0, x.dtype());
    let res = Tensor::float_from_f32(od, work.shape().to_vec(), out)?;
    let res = match perm {
        None => res,
        Some(perm) => {
            let mut inv = vec![0usize; rank];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            permute(&res, &inv)?
        }
    };
    Ok(vec![res])
}
