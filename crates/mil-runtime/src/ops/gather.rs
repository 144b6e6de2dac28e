//! Gathers (iOS17): `gather`, `gather_along_axis`.
//!
//! * `gather(x, indices, axis = 0, batch_dims = 0, validate_indices = False)`: with
//!   x = B + P + [A] + Q (B = the first `batch_dims` dims) and indices = B + I, the output is
//!   B + P + I + Q and `out[b, p, i, q] = x[b, p, indices[b, i], q]`.
//! * `gather_along_axis(x, indices, axis = 0, validate_indices = False)`: rank(indices) = rank(x),
//!   output shape = indices shape, `out[p] = x[p with p[axis] ← indices[p]]` (torch.gather).
//!
//! Indices may be any integer dtype. Negative indices wrap once (`i + A`, the iOS16 / NumPy
//! behaviour; iOS17 leaves them undefined and converters guard them with `select`). An index
//! still outside `[0, A)` is an error (Core ML would be undefined), whatever `validate_indices`.

use super::OpArgs;
use super::util::{gather_runs, norm_axis, strides, take};
use crate::error::KernelError;
use crate::tensor::Tensor;

fn wrap(i: i64, n: usize, ctx: &str) -> Result<usize, KernelError> {
    let j = if i < 0 { i + n as i64 } else { i };
    if j < 0 || j >= n as i64 {
        return Err(KernelError::IndexOutOfRange {
            index: i,
            size: n,
            context: ctx.to_string(),
        });
    }
    Ok(j as usize)
}

fn int_indices(t: &Tensor) -> Result<Vec<i64>, KernelError> {
    if !t.dtype().is_int() {
        return Err(KernelError::dtype(t.dtype(), "indices must be integers"));
    }
    t.to_i64()
}

/// `gather`.
pub fn gather(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let ind = a.req("indices")?;
    let axis = norm_axis(a.int_or("axis", 0)?, x.rank(), "axis")?;
    let bd = a.int_or("batch_dims", 0)?;
    let bd = usize::try_from(bd).map_err(|_| KernelError::bad("batch_dims", "negative"))?;
    if bd > axis || bd > ind.rank() || x.shape()[..bd] != ind.shape()[..bd] {
        return Err(KernelError::bad(
            "batch_dims",
            format!(
                "{bd} incompatible with x {:?} / indices {:?} / axis {axis}",
                x.shape(),
                ind.shape()
            ),
        ));
    }
    let idx = int_indices(ind)?;
    let xs = x.shape();
    let nb: usize = xs[..bd].iter().product();
    let np: usize = xs[bd..axis].iter().product();
    let na = xs[axis];
    let nq: usize = xs[axis + 1..].iter().product();
    let ni: usize = ind.shape()[bd..].iter().product();
    let mut runs = Vec::with_capacity(nb * np * ni);
    for b in 0..nb {
        for p in 0..np {
            for i in 0..ni {
                let j = wrap(idx[b * ni + i], na, "gather")?;
                runs.push((0, ((b * np + p) * na + j) * nq, nq));
            }
        }
    }
    let mut shape = xs[..axis].to_vec();
    shape.extend_from_slice(&ind.shape()[bd..]);
    shape.extend_from_slice(&xs[axis + 1..]);
    Ok(vec![gather_runs(&[x], &runs, shape)?])
}

/// `gather_along_axis`.
pub fn gather_along_axis(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let ind = a.req("indices")?;
    let r = x.rank();
    let axis = norm_axis(a.int_or("axis", 0)?, r, "axis")?;
    if ind.rank() != r || (0..r).any(|d| d != axis && ind.shape()[d] > x.shape()[d]) {
        return Err(KernelError::shape(format!(
            "indices {:?} incompatible with x {:?} on axis {axis}",
            ind.shape(),
            x.shape()
        )));
    }
    let idx = int_indices(ind)?;
    let st = strides(x.shape());
    let ishape = ind.shape();
    let mut offs = Vec::with_capacity(idx.len());
    let mut p = vec![0usize; r];
    for &iv in &idx {
        let j = wrap(iv, x.shape()[axis], "gather_along_axis")?;
        let mut off = 0;
        for d in 0..r {
            off += if d == axis { j } else { p[d] } * st[d];
        }
        offs.push(off);
        for d in (0..r).rev() {
            p[d] += 1;
            if p[d] < ishape[d] {
                break;
            }
            p[d] = 0;
        }
    }
    Ok(vec![take(x, &offs, ishape.to_vec())])
}
