//! Data movement: `concat`, `split`, `stack` (iOS15), `reshape`, `transpose`, `expand_dims`,
//! `squeeze` (iOS17), `tile`, `pad` (iOS15). All dtypes; values are copied unchanged.
//!
//! * `concat(values…, axis, interleave = False)`: interleave=True takes slice j of every input in
//!   turn (all inputs the same shape).
//! * `split(x, num_splits | split_sizes, axis)`: outputs in order.
//! * `stack(values…, axis)`: new axis at `axis` of the output (rank+1).
//! * `reshape(x, shape)`: `-1` inferred; `0` copies the dimension of `x` aligned from the right
//!   (`len(shape) − i == rank(x) − j`), and becomes 1 when it has no partner.
//! * `transpose(x, perm)`: negative entries allowed.
//! * `expand_dims(x, axes)`: axes are positions in the output, normalised with the output rank.
//! * `squeeze(x, axes = all size-1 dims)`.
//! * `tile(x, reps)`.
//! * `pad(x, pad, mode = "constant", constant_val = 0)`: `pad` holds (before, after) pairs for the
//!   last `len(pad)/2` dimensions; modes constant, reflect, replicate.

use super::OpArgs;
use super::util::{gather_runs, norm_axis, strides};
use crate::error::KernelError;
use crate::tensor::Shared;
use crate::tensor::{Tensor, TensorData};
use half::f16;

/// Copy elements into a transposed layout: output dim `i` is input dim `perm[i]`.
fn permute_vec<T: Clone>(v: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let r = shape.len();
    let n = v.len();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    if r == 0 {
        return v.to_vec();
    }
    let st = strides(shape);
    let oshape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let ost: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    let inner = oshape[r - 1];
    let is = ost[r - 1];
    let mut idx = vec![0usize; r];
    let mut off = 0usize;
    loop {
        for k in 0..inner {
            out.push(v[off + k * is].clone());
        }
        let mut d = r - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            off += ost[d];
            if idx[d] < oshape[d] {
                break;
            }
            off -= ost[d] * oshape[d];
            idx[d] = 0;
        }
    }
}

/// Transpose `t` so that output dim `i` is input dim `perm[i]` (`perm` already normalised).
pub fn permute(t: &Tensor, perm: &[usize]) -> Result<Tensor, KernelError> {
    let r = t.rank();
    let mut seen = vec![false; r];
    if perm.len() != r
        || perm
            .iter()
            .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
    {
        return Err(KernelError::bad(
            "perm",
            format!("{perm:?} is not a permutation of rank {r}"),
        ));
    }
    let shape: Vec<usize> = perm.iter().map(|&p| t.shape()[p]).collect();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return t.reshaped(shape);
    }
    let s = t.shape();
    let data = match t.data() {
        TensorData::F16(v) => TensorData::F16(Shared::new(permute_vec(v, s, perm))),
        TensorData::F32(v) => TensorData::F32(Shared::new(permute_vec(v, s, perm))),
        TensorData::I32(v) => TensorData::I32(Shared::new(permute_vec(v, s, perm))),
        TensorData::I16(v) => TensorData::I16(Shared::new(permute_vec(v, s, perm))),
        TensorData::U16(v) => TensorData::U16(Shared::new(permute_vec(v, s, perm))),
        TensorData::I8(v) => TensorData::I8(Shared::new(permute_vec(v, s, perm))),
        TensorData::U8(v) => TensorData::U8(Shared::new(permute_vec(v, s, perm))),
        TensorData::Bool(v) => TensorData::Bool(Shared::new(permute_vec(v, s, perm))),
        TensorData::Str(v) => TensorData::Str(Shared::new(permute_vec(v, s, perm))),
    };
    Ok(Tensor::from_parts(shape, data))
}

/// `transpose`.
pub fn transpose(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let perm = a
        .ints("perm")?
        .ok_or_else(|| KernelError::MissingParam("perm".into()))?;
    let perm: Vec<usize> = perm
        .iter()
        .map(|&p| norm_axis(p, x.rank(), "perm"))
        .collect::<Result<_, _>>()?;
    Ok(vec![permute(x, &perm)?])
}

/// Resolve a MIL reshape target against the input shape.
pub fn reshape_target(xshape: &[usize], target: &[i64]) -> Result<Vec<usize>, KernelError> {
    let n: usize = xshape.iter().product();
    let (k, r) = (target.len(), xshape.len());
    let mut out = Vec::with_capacity(k);
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err(KernelError::bad("shape", "more than one -1"));
                }
                out.push(1);
            }
            0 => {
                // partner j with len(shape) − i == rank(x) − j
                let j = (r + i).checked_sub(k);
                out.push(j.and_then(|j| xshape.get(j).copied()).unwrap_or(1));
            }
            t if t > 0 => out.push(t as usize),
            t => return Err(KernelError::bad("shape", format!("invalid dimension {t}"))),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !n.is_multiple_of(known) {
            return Err(KernelError::shape(format!(
                "cannot infer -1 reshaping {xshape:?} to {target:?}"
            )));
        }
        out[i] = n / known;
    }
    if out.iter().product::<usize>() != n {
        return Err(KernelError::shape(format!(
            "cannot reshape {xshape:?} to {target:?}"
        )));
    }
    Ok(out)
}

/// `reshape`.
pub fn reshape(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let target = a
        .ints("shape")?
        .ok_or_else(|| KernelError::MissingParam("shape".into()))?;
    Ok(vec![x.reshaped(reshape_target(x.shape(), &target)?)?])
}

/// `expand_dims`.
pub fn expand_dims(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let axes = a
        .ints("axes")?
        .ok_or_else(|| KernelError::MissingParam("axes".into()))?;
    let out_rank = x.rank() + axes.len();
    let mut ax: Vec<usize> = axes
        .iter()
        .map(|&v| norm_axis(v, out_rank, "axes"))
        .collect::<Result<_, _>>()?;
    ax.sort_unstable();
    let mut shape = x.shape().to_vec();
    for w in ax.windows(2) {
        if w[0] == w[1] {
            return Err(KernelError::bad("axes", "repeated axis"));
        }
    }
    for &p in &ax {
        shape.insert(p, 1);
    }
    Ok(vec![x.reshaped(shape)?])
}

/// `squeeze`.
pub fn squeeze(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let shape: Vec<usize> = match a.ints("axes")? {
        None => x.shape().iter().copied().filter(|&d| d != 1).collect(),
        Some(axes) => {
            let ax: Vec<usize> = axes
                .iter()
                .map(|&v| norm_axis(v, x.rank(), "axes"))
                .collect::<Result<_, _>>()?;
            for &p in &ax {
                if x.shape()[p] != 1 {
                    return Err(KernelError::bad(
                        "axes",
                        format!("dimension {p} has size {}", x.shape()[p]),
                    ));
                }
            }
            x.shape()
                .iter()
                .enumerate()
                .filter(|(i, _)| !ax.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
    };
    Ok(vec![x.reshaped(shape)?])
}

/// `concat`.
pub fn concat(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let vals = a.variadic("values")?;
    let first = vals
        .first()
        .ok_or_else(|| KernelError::bad("values", "empty"))?;
    let rank = first.rank();
    let axis = norm_axis(
        a.int("axis")?
            .ok_or_else(|| KernelError::MissingParam("axis".into()))?,
        rank,
        "axis",
    )?;
    let interleave = a.bool_or("interleave", false)?;
    for v in &vals {
        let ok = v.rank() == rank
            && (0..rank).all(|d| d == axis && !interleave || v.shape()[d] == first.shape()[d]);
        if !ok {
            return Err(KernelError::shape(format!(
                "concat operands {:?} and {:?} differ outside axis {axis}",
                first.shape(),
                v.shape()
            )));
        }
    }
    let outer: usize = first.shape()[..axis].iter().product();
    let inner: usize = first.shape()[axis + 1..].iter().product();
    let total: usize = vals.iter().map(|v| v.shape()[axis]).sum();
    let mut shape = first.shape().to_vec();
    shape[axis] = total;
    let mut runs = Vec::new();
    for o in 0..outer {
        if interleave {
            let d = first.shape()[axis];
            for j in 0..d {
                for t in 0..vals.len() {
                    runs.push((t, (o * d + j) * inner, inner));
                }
            }
        } else {
            for (t, v) in vals.iter().enumerate() {
                let len = v.shape()[axis] * inner;
                runs.push((t, o * len, len));
            }
        }
    }
    Ok(vec![gather_runs(&vals, &runs, shape)?])
}

/// `stack`.
pub fn stack(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let vals = a.variadic("values")?;
    let first = vals
        .first()
        .ok_or_else(|| KernelError::bad("values", "empty"))?;
    let axis = norm_axis(
        a.int("axis")?
            .ok_or_else(|| KernelError::MissingParam("axis".into()))?,
        first.rank() + 1,
        "axis",
    )?;
    if vals.iter().any(|v| v.shape() != first.shape()) {
        return Err(KernelError::shape("stack operands must have equal shapes"));
    }
    let outer: usize = first.shape()[..axis].iter().product();
    let inner: usize = first.shape()[axis..].iter().product();
    let mut shape = first.shape().to_vec();
    shape.insert(axis, vals.len());
    let mut runs = Vec::new();
    for o in 0..outer {
        for t in 0..vals.len() {
            runs.push((t, o * inner, inner));
        }
    }
    Ok(vec![gather_runs(&vals, &runs, shape)?])
}

/// `split`.
pub fn split(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let axis = norm_axis(
        a.int("axis")?
            .ok_or_else(|| KernelError::MissingParam("axis".into()))?,
        x.rank(),
        "axis",
    )?;
    let d = x.shape()[axis];
    let sizes: Vec<usize> = if let Some(s) = a.ints("split_sizes")? {
        s.iter()
            .map(|&v| {
                usize::try_from(v).map_err(|_| KernelError::bad("split_sizes", "negative size"))
            })
            .collect::<Result<_, _>>()?
    } else if let Some(n) = a.int("num_splits")? {
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| KernelError::bad("num_splits", "must be positive"))?;
        if d % n != 0 {
            return Err(KernelError::bad(
                "num_splits",
                format!("{n} does not divide dimension {d}"),
            ));
        }
        vec![d / n; n]
    } else {
        return Err(KernelError::MissingParam(
            "num_splits or split_sizes".into(),
        ));
    };
    if sizes.iter().sum::<usize>() != d {
        return Err(KernelError::bad(
            "split_sizes",
            format!("{sizes:?} do not sum to {d}"),
        ));
    }
    let outer: usize = x.shape()[..axis].iter().product();
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let mut outs = Vec::with_capacity(sizes.len());
    let mut start = 0usize;
    for &s in &sizes {
        let runs: Vec<(usize, usize, usize)> = (0..outer)
            .map(|o| (0, (o * d + start) * inner, s * inner))
            .collect();
        let mut shape = x.shape().to_vec();
        shape[axis] = s;
        outs.push(gather_runs(&[x], &runs, shape)?);
        start += s;
    }
    Ok(outs)
}

/// `tile`.
pub fn tile(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let reps = a
        .ints("reps")?
        .ok_or_else(|| KernelError::MissingParam("reps".into()))?;
    if reps.len() != x.rank() || reps.iter().any(|&r| r < 1) {
        return Err(KernelError::bad(
            "reps",
            format!("{reps:?} for rank {}", x.rank()),
        ));
    }
    let shape: Vec<usize> = x
        .shape()
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d * r as usize)
        .collect();
    let xs = x.shape();
    let st = strides(xs);
    let src = index_map(&shape, |d, i| Some(i % xs[d]), &st);
    Ok(vec![super::util::take(
        x,
        &src.into_iter().flatten().collect::<Vec<_>>(),
        shape,
    )])
}

/// Flat source offsets for every output index, where `f(dim, i)` maps an output coordinate to an
/// input coordinate (`None` = padding).
fn index_map(
    shape: &[usize],
    f: impl Fn(usize, usize) -> Option<usize>,
    src_strides: &[usize],
) -> Vec<Option<usize>> {
    let per_dim: Vec<Vec<Option<usize>>> = shape
        .iter()
        .enumerate()
        .map(|(d, &n)| {
            (0..n)
                .map(|i| f(d, i).map(|s| s * src_strides[d]))
                .collect()
        })
        .collect();
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let r = shape.len();
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        let mut off = Some(0usize);
        for d in 0..r {
            off = match (off, per_dim[d][idx[d]]) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
        out.push(off);
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// `pad`.
pub fn pad(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let p = a
        .ints("pad")?
        .ok_or_else(|| KernelError::MissingParam("pad".into()))?;
    let mode = a.string("mode")?.unwrap_or("constant");
    let cval = a.float("constant_val")?.unwrap_or(0.0);
    let r = x.rank();
    if p.len() % 2 != 0 || p.len() / 2 > r || p.iter().any(|&v| v < 0) {
        return Err(KernelError::bad("pad", format!("{p:?} for rank {r}")));
    }
    let mut before = vec![0usize; r];
    let mut after = vec![0usize; r];
    let k = p.len() / 2;
    for i in 0..k {
        before[r - k + i] = p[2 * i] as usize;
        after[r - k + i] = p[2 * i + 1] as usize;
    }
    let xs = x.shape().to_vec();
    let shape: Vec<usize> = (0..r).map(|d| xs[d] + before[d] + after[d]).collect();
    let st = strides(&xs);
    let map = |d: usize, i: usize| -> Option<usize> {
        let n = xs[d] as i64;
        let j = i as i64 - before[d] as i64;
        if (0..n).contains(&j) {
            return Some(j as usize);
        }
        match mode {
            "replicate" => Some(j.clamp(0, n - 1) as usize),
            "reflect" => {
                if n == 1 {
                    return Some(0);
                }
                let period = 2 * (n - 1);
                let m = j.rem_euclid(period);
                Some(if m < n { m } else { period - m } as usize)
            }
            _ => None,
        }
    };
    if !matches!(mode, "constant" | "reflect" | "replicate") {
        return Err(KernelError::bad(
            "mode",
            format!("unsupported pad mode `{mode}`"),
        ));
    }
    if mode == "reflect"
        && (0..r).any(|d| before[d].max(after[d]) >= xs[d] && (before[d] > 0 || after[d] > 0))
    {
        return Err(KernelError::bad(
            "pad",
            "reflect padding must be smaller than the dimension",
        ));
    }
    let src = index_map(&shape, map, &st);
    fn fill<T: crate::tensor::Element>(v: &[T], src: &[Option<usize>], c: T) -> Shared<T> {
        Shared::new(
            src.iter()
                .map(|s| s.map_or_else(|| c.clone(), |i| v[i].clone()))
                .collect(),
        )
    }
    let data = match x.data() {
        TensorData::F16(v) => TensorData::F16(fill(v, &src, f16::from_f32(cval))),
        TensorData::F32(v) => TensorData::F32(fill(v, &src, cval)),
        TensorData::I32(v) => TensorData::I32(fill(v, &src, cval as i32)),
        TensorData::I16(v) => TensorData::I16(fill(v, &src, cval as i16)),
        TensorData::U16(v) => TensorData::U16(fill(v, &src, cval as u16)),
        TensorData::I8(v) => TensorData::I8(fill(v, &src, cval as i8)),
        TensorData::U8(v) => TensorData::U8(fill(v, &src, cval as u8)),
        TensorData::Bool(v) => TensorData::Bool(fill(v, &src, cval != 0.0)),
        TensorData::Str(v) => TensorData::Str(fill(v, &src, String::new())),
    };
    Ok(vec![Tensor::from_parts(shape, data)])
}
