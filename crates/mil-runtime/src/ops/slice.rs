//! Slicing (iOS17): `slice_by_index`, `slice_by_size`, `slice_update`.
//!
//! * `slice_by_index(x, begin, end, stride = 1s, begin_mask = F, end_mask = F, squeeze_mask = F)`:
//!   Python slicing per axis — negative indices wrap once, then clamp; `begin_mask[i]` ⇒ begin is
//!   the start (0, or dim−1 for a negative stride), `end_mask[i]` ⇒ end is past the end;
//!   `squeeze_mask[i]` ⇒ take the single element `begin[i]` and drop the axis.
//! * `slice_by_size(x, begin, size)`: `x[begin[i] : begin[i] + size[i]]`, size −1 = to the end.
//! * `slice_update(x, update, begin, end, stride, masks…)`: x with the slice region replaced by
//!   `update` (whose shape is the slice shape, squeezed axes removed).

use super::OpArgs;
use super::util::{strides, take};
use crate::error::KernelError;
use crate::tensor::Shared;
use crate::tensor::{Tensor, TensorData};

fn vec_param(a: &OpArgs<'_>, name: &str, rank: usize) -> Result<Option<Vec<i64>>, KernelError> {
    match a.ints(name)? {
        Some(v) if v.len() != rank => Err(KernelError::bad(
            name,
            format!("has {} entries for rank {rank}", v.len()),
        )),
        v => Ok(v),
    }
}

fn mask_param(a: &OpArgs<'_>, name: &str, rank: usize) -> Result<Vec<bool>, KernelError> {
    match a.bools(name)? {
        None => Ok(vec![false; rank]),
        Some(v) if v.len() == rank => Ok(v),
        Some(v) => Err(KernelError::bad(
            name,
            format!("has {} entries for rank {rank}", v.len()),
        )),
    }
}

/// Per-axis selected indices and the output shape (after squeezing).
struct Region {
    per_dim: Vec<Vec<usize>>,
    out_shape: Vec<usize>,
}

fn index_region(a: &OpArgs<'_>, x: &Tensor) -> Result<Region, KernelError> {
    let rank = x.rank();
    let begin =
        vec_param(a, "begin", rank)?.ok_or_else(|| KernelError::MissingParam("begin".into()))?;
    let end = vec_param(a, "end", rank)?.ok_or_else(|| KernelError::MissingParam("end".into()))?;
    let stride = vec_param(a, "stride", rank)?.unwrap_or_else(|| vec![1; rank]);
    let bm = mask_param(a, "begin_mask", rank)?;
    let em = mask_param(a, "end_mask", rank)?;
    let sm = mask_param(a, "squeeze_mask", rank)?;
    let mut per_dim = Vec::with_capacity(rank);
    let mut out_shape = Vec::with_capacity(rank);
    for d in 0..rank {
        let n = x.shape()[d] as i64;
        let s = stride[d];
        if s == 0 {
            return Err(KernelError::bad("stride", "zero stride"));
        }
        if sm[d] {
            let mut b = if bm[d] {
                if s > 0 { 0 } else { n - 1 }
            } else {
                begin[d]
            };
            if b < 0 {
                b += n;
            }
            if !(0..n).contains(&b) {
                return Err(KernelError::IndexOutOfRange {
                    index: begin[d],
                    size: n as usize,
                    context: format!("squeeze_mask on axis {d}"),
                });
            }
            per_dim.push(vec![b as usize]);
            continue;
        }
        let wrap = |v: i64| if v < 0 { v + n } else { v };
        let idx: Vec<usize> = if s > 0 {
            let b = if bm[d] { 0 } else { wrap(begin[d]).clamp(0, n) };
            let e = if em[d] { n } else { wrap(end[d]).clamp(0, n) };
            (b..e).step_by(s as usize).map(|i| i as usize).collect()
        } else {
            let b = if bm[d] {
                n - 1
            } else {
                wrap(begin[d]).clamp(-1, n - 1)
            };
            let e = if em[d] {
                -1
            } else {
                wrap(end[d]).clamp(-1, n - 1)
            };
            let mut v = Vec::new();
            let mut i = b;
            while i > e {
                v.push(i as usize);
                i += s;
            }
            v
        };
        out_shape.push(idx.len());
        per_dim.push(idx);
    }
    Ok(Region { per_dim, out_shape })
}

/// Flat offsets of the cartesian product of per-axis indices.
fn offsets(per_dim: &[Vec<usize>], shape: &[usize]) -> Vec<usize> {
    let st = strides(shape);
    let mut offs = vec![0usize];
    for (d, idx) in per_dim.iter().enumerate() {
        let mut next = Vec::with_capacity(offs.len() * idx.len());
        for &o in &offs {
            for &i in idx {
                next.push(o + i * st[d]);
            }
        }
        offs = next;
    }
    offs
}

/// `slice_by_index`.
pub fn slice_by_index(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let r = index_region(a, x)?;
    let offs = offsets(&r.per_dim, x.shape());
    Ok(vec![take(x, &offs, r.out_shape)])
}

/// `slice_by_size`.
pub fn slice_by_size(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let rank = x.rank();
    let begin =
        vec_param(a, "begin", rank)?.ok_or_else(|| KernelError::MissingParam("begin".into()))?;
    let size =
        vec_param(a, "size", rank)?.ok_or_else(|| KernelError::MissingParam("size".into()))?;
    let mut per_dim = Vec::with_capacity(rank);
    for d in 0..rank {
        let n = x.shape()[d] as i64;
        let b = if begin[d] < 0 { begin[d] + n } else { begin[d] };
        let e = if size[d] == -1 { n } else { b + size[d] };
        if b < 0 || e > n || size[d] < -1 || b > e {
            return Err(KernelError::shape(format!(
                "slice [{}, +{}) out of range for dimension {n} (axis {d})",
                begin[d], size[d]
            )));
        }
        per_dim.push((b as usize..e as usize).collect::<Vec<_>>());
    }
    let shape = per_dim.iter().map(Vec::len).collect();
    let offs = offsets(&per_dim, x.shape());
    Ok(vec![take(x, &offs, shape)])
}

/// `slice_update`.
pub fn slice_update(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let u = a.req("update")?;
    let r = index_region(a, x)?;
    if u.shape() != r.out_shape.as_slice() {
        return Err(KernelError::shape(format!(
            "update shape {:?} != slice shape {:?}",
            u.shape(),
            r.out_shape
        )));
    }
    if u.dtype() != x.dtype() {
        return Err(KernelError::dtype(
            u.dtype(),
            format!("update must be {}", x.dtype()),
        ));
    }
    let offs = offsets(&r.per_dim, x.shape());
    fn put<T: crate::tensor::Element>(x: &[T], u: &[T], offs: &[usize]) -> Shared<T> {
        let mut v = x.to_vec();
        for (k, &o) in offs.iter().enumerate() {
            v[o] = u[k].clone();
        }
        Shared::new(v)
    }
    let data = match (x.data(), u.data()) {
        (TensorData::F16(x), TensorData::F16(u)) => TensorData::F16(put(x, u, &offs)),
        (TensorData::F32(x), TensorData::F32(u)) => TensorData::F32(put(x, u, &offs)),
        (TensorData::I32(x), TensorData::I32(u)) => TensorData::I32(put(x, u, &offs)),
        (TensorData::I16(x), TensorData::I16(u)) => TensorData::I16(put(x, u, &offs)),
        (TensorData::U16(x), TensorData::U16(u)) => TensorData::U16(put(x, u, &offs)),
        (TensorData::I8(x), TensorData::I8(u)) => TensorData::I8(put(x, u, &offs)),
        (TensorData::U8(x), TensorData::U8(u)) => TensorData::U8(put(x, u, &offs)),
        (TensorData::Bool(x), TensorData::Bool(u)) => TensorData::Bool(put(x, u, &offs)),
        (TensorData::Str(x), TensorData::Str(u)) => TensorData::Str(put(x, u, &offs)),
        _ => return Err(KernelError::dtype(u.dtype(), "update dtype differs from x")),
    };
    Ok(vec![Tensor::from_parts(x.shape().to_vec(), data)])
}
