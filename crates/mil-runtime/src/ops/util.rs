//! Shared helpers: axis normalisation, strides, NumPy broadcasting, generic gathers of elements.
//!
//! Broadcasting follows NumPy: shapes are right-aligned, a dimension of size 1 stretches, any other
//! mismatch is an error. The broadcast loops walk the output in row-major order with an odometer on
//! the outer dimensions and a tight inner loop over the last dimension.

use crate::error::KernelError;
use crate::tensor::Shared;
use crate::tensor::{Tensor, TensorData};

/// Normalise a possibly negative axis against `rank` (valid: `-rank..rank`).
pub fn norm_axis(axis: i64, rank: usize, param: &str) -> Result<usize, KernelError> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(KernelError::bad(
            param,
            format!("axis {axis} out of range for rank {rank}"),
        ));
    }
    Ok(a as usize)
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The NumPy broadcast of several shapes.
pub fn broadcast_shapes(shapes: &[&[usize]]) -> Result<Vec<usize>, KernelError> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(KernelError::shape(format!(
                    "cannot broadcast shapes {shapes:?}"
                )));
            }
        }
    }
    Ok(out)
}

/// Strides of `shape` viewed in the broadcast `out` shape (0 along stretched dimensions).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let st = strides(shape);
    let off = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < off || shape[i - off] == 1 {
                0
            } else {
                st[i - off]
            }
        })
        .collect()
}

/// Apply `f` elementwise over two broadcast operands.
pub fn map2<A: Copy, B: Copy, O>(
    a: &[A],
    ash: &[usize],
    b: &[B],
    bsh: &[usize],
    f: impl Fn(A, B) -> O,
) -> Result<(Vec<O>, Vec<usize>), KernelError> {
    let out = broadcast_shapes(&[ash, bsh])?;
    let n: usize = out.iter().product();
    if ash == bsh {
        return Ok((a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect(), out));
    }
    if b.len() == 1 && a.len() == n {
        let y = b[0];
        return Ok((a.iter().map(|&x| f(x, y)).collect(), out));
    }
    if a.len() == 1 && b.len() == n {
        let x = a[0];
        return Ok((b.iter().map(|&y| f(x, y)).collect(), out));
    }
    let sa = broadcast_strides(ash, &out);
    let sb = broadcast_strides(bsh, &out);
    let mut res = Vec::with_capacity(n);
    if n == 0 {
        return Ok((res, out));
    }
    let r = out.len();
    let inner = out[r - 1];
    let (ia, ib) = (sa[r - 1], sb[r - 1]);
    let mut idx = vec![0usize; r];
    let (mut oa, mut ob) = (0usize, 0usize);
    loop {
        for k in 0..inner {
            res.push(f(a[oa + k * ia], b[ob + k * ib]));
        }
        // advance the odometer over dims 0..r-1
        let mut d = r - 1;
        loop {
            if d == 0 {
                return Ok((res, out));
            }
            d -= 1;
            idx[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if idx[d] < out[d] {
                break;
            }
            oa -= sa[d] * out[d];
            ob -= sb[d] * out[d];
            idx[d] = 0;
        }
    }
}

/// Flat source offsets of every output element when `shape` is broadcast to `out`.
pub fn broadcast_offsets(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let st = broadcast_strides(shape, out);
    let n: usize = out.iter().product();
    let mut res = Vec::with_capacity(n);
    if n == 0 {
        return res;
    }
    let mut idx = vec![0usize; out.len()];
    let mut off = 0usize;
    for _ in 0..n {
        res.push(off);
        for d in (0..out.len()).rev() {
            idx[d] += 1;
            off += st[d];
            if idx[d] < out[d] {
                break;
            }
            off -= st[d] * out[d];
            idx[d] = 0;
        }
    }
    res
}

/// Build a tensor of the same dtype as `t` whose element `i` is `t[src[i]]`.
pub fn take(t: &Tensor, src: &[usize], shape: Vec<usize>) -> Tensor {
    fn g<T: crate::tensor::Element>(v: &[T], src: &[usize]) -> Shared<T> {
        Shared::new(src.iter().map(|&i| v[i].clone()).collect())
    }
    let data = match t.data() {
        TensorData::F16(v) => TensorData::F16(g(v, src)),
        TensorData::F32(v) => TensorData::F32(g(v, src)),
        TensorData::I32(v) => TensorData::I32(g(v, src)),
        TensorData::I16(v) => TensorData::I16(g(v, src)),
        TensorData::U16(v) => TensorData::U16(g(v, src)),
        TensorData::I8(v) => TensorData::I8(g(v, src)),
        TensorData::U8(v) => TensorData::U8(g(v, src)),
        TensorData::Bool(v) => TensorData::Bool(g(v, src)),
        TensorData::Str(v) => TensorData::Str(g(v, src)),
    };
    Tensor::from_parts(shape, data)
}

/// Concatenate the data of same-dtype tensors as `(tensor, start, len)` runs, in order.
pub fn gather_runs(
    parts: &[&Tensor],
    runs: &[(usize, usize, usize)],
    shape: Vec<usize>,
) -> Result<Tensor, KernelError> {
    fn g<T: crate::tensor::Element>(vs: &[&[T]], runs: &[(usize, usize, usize)]) -> Shared<T> {
        let n = runs.iter().map(|r| r.2).sum();
        let mut out = Vec::with_capacity(n);
        for &(t, s, l) in runs {
            out.extend_from_slice(&vs[t][s..s + l]);
        }
        Shared::new(out)
    }
    let first = parts
        .first()
        .ok_or_else(|| KernelError::shape("no operands"))?;
    let dt = first.dtype();
    if let Some(p) = parts.iter().find(|p| p.dtype() != dt) {
        return Err(KernelError::dtype(
            p.dtype(),
            format!("operands must all be {dt}"),
        ));
    }
    macro_rules! arm {
        ($var:ident) => {{
            let vs: Vec<&[_]> = parts
                .iter()
                .map(|p| match p.data() {
                    TensorData::$var(v) => v.as_slice(),
                    _ => &[],
                })
                .collect();
            TensorData::$var(g(&vs, runs))
        }};
    }
    let data = match first.data() {
        TensorData::F16(_) => arm!(F16),
        TensorData::F32(_) => arm!(F32),
        TensorData::I32(_) => arm!(I32),
        TensorData::I16(_) => arm!(I16),
        TensorData::U16(_) => arm!(U16),
        TensorData::I8(_) => arm!(I8),
        TensorData::U8(_) => arm!(U8),
        TensorData::Bool(_) => arm!(Bool),
        TensorData::Str(_) => arm!(Str),
    };
    Ok(Tensor::from_parts(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting() {
        assert_eq!(
            broadcast_shapes(&[&[2, 1, 3], &[4, 1]]).unwrap(),
            vec![2, 4, 3]
        );
        assert!(broadcast_shapes(&[&[2, 3], &[4, 3]]).is_err());
        let (v, s) = map2(&[1, 2, 3], &[3, 1], &[10, 20], &[2], |a, b| a + b).unwrap();
        assert_eq!(s, vec![3, 2]);
        assert_eq!(v, vec![11, 21, 12, 22, 13, 23]);
        assert_eq!(broadcast_offsets(&[1, 2], &[2, 2]), vec![0, 1, 0, 1]);
        assert_eq!(broadcast_offsets(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn axes() {
        assert_eq!(norm_axis(-1, 3, "axis").unwrap(), 2);
        assert_eq!(norm_axis(0, 3, "axis").unwrap(), 0);
        assert!(norm_axis(3, 3, "axis").is_err());
        assert!(norm_axis(-4, 3, "axis").is_err());
    }
}
