//! Reductions (iOS15 `reduce_*`, iOS17 `reduce_argmax` / `reduce_argmin`).
//!
//! * `reduce_mean / reduce_sum / reduce_max / reduce_min / reduce_prod(x, axes = all,
//!   keep_dims = False)`: float inputs accumulate in f32 (sequentially, in index order) and round
//!   once; int32 inputs accumulate in i64 (mean truncates toward zero).
//! * `reduce_argmax / reduce_argmin(x, axis = -1, keep_dims = False, output_dtype = "int32")`:
//!   index of the first maximum / minimum (ties → lowest index, NaNs ignored); `output_dtype` may
//!   be "int32", "uint16", "int16", "uint8" or "int8".
//!
//! Not covered: reduce_l1/l2_norm, reduce_log_sum(_exp), reduce_sum_square.

use super::norm::split3;
use super::shape::permute;
use super::util::norm_axis;
use super::{KernelFn, OpArgs};
use crate::error::KernelError;
use crate::tensor::Tensor;
use mil::DType;

#[derive(Copy, Clone, PartialEq, Eq)]
enum R {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
}

fn reduce_mean(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    run(a, R::Mean)
}
fn reduce_sum(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    run(a, R::Sum)
}
fn reduce_max(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    run(a, R::Max)
}
fn reduce_min(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    run(a, R::Min)
}
fn reduce_prod(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    run(a, R::Prod)
}

/// The kernel of a `reduce_*` op type (not argmax/argmin).
pub fn kernel(op_type: &str) -> Option<KernelFn> {
    Some(match op_type {
        "reduce_mean" => reduce_mean,
        "reduce_sum" => reduce_sum,
        "reduce_max" => reduce_max,
        "reduce_min" => reduce_min,
        "reduce_prod" => reduce_prod,
        _ => return None,
    })
}

fn run(a: &OpArgs<'_>, r: R) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
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
    let keep = a.bool_or("keep_dims", false)?;
    let mut perm: Vec<usize> = (0..rank).filter(|d| !axes.contains(d)).collect();
    let kept: Vec<usize> = perm.iter().map(|&d| x.shape()[d]).collect();
    perm.extend(&axes);
    let work = if perm.iter().enumerate().all(|(i, &p)| i == p) {
        x.clone()
    } else {
        permute(x, &perm)?
    };
    let n: usize = axes.iter().map(|&d| x.shape()[d]).product();
    let rows: usize = kept.iter().product();
    let out_shape: Vec<usize> = if keep {
        (0..rank)
            .map(|d| if axes.contains(&d) { 1 } else { x.shape()[d] })
            .collect()
    } else {
        kept
    };
    if x.dtype().is_float() {
        let xs = work.to_f32()?;
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            let row = &xs[i * n..(i + 1) * n];
            out.push(match r {
                R::Sum => row.iter().sum(),
                R::Mean => row.iter().sum::<f32>() / n as f32,
                R::Max => row.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                R::Min => row.iter().copied().fold(f32::INFINITY, f32::min),
                R::Prod => row.iter().product(),
            });
        }
        Ok(vec![Tensor::float_from_f32(
            a.float_out(0, x.dtype()),
            out_shape,
            out,
        )?])
    } else {
        if matches!(x.dtype(), DType::Bool | DType::Str) {
            return Err(KernelError::dtype(x.dtype(), "reduction operand"));
        }
        let xs = work.to_i64()?;
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            let row = &xs[i * n..(i + 1) * n];
            out.push(match r {
                R::Sum => row.iter().fold(0i64, |s, v| s.wrapping_add(*v)),
                R::Mean => row.iter().sum::<i64>().checked_div(n as i64).unwrap_or(0),
                R::Max => row.iter().copied().max().unwrap_or(i64::MIN),
                R::Min => row.iter().copied().min().unwrap_or(i64::MAX),
                R::Prod => row.iter().fold(1i64, |s, v| s.wrapping_mul(*v)),
            });
        }
        Ok(vec![Tensor::int_from_i64(x.dtype(), out_shape, &out)?])
    }
}

fn arg(a: &OpArgs<'_>, max: bool) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let rank = x.rank();
    let axis = norm_axis(a.int_or("axis", -1)?, rank, "axis")?;
    let keep = a.bool_or("keep_dims", false)?;
    let od = match a.string("output_dtype")?.unwrap_or("int32") {
        "int32" => DType::I32,
        "uint16" => DType::U16,
        "int16" => DType::I16,
        "uint8" => DType::U8,
        "int8" => DType::I8,
        s => {
            return Err(KernelError::bad(
                "output_dtype",
                format!("unsupported `{s}`"),
            ));
        }
    };
    let (outer, n, inner) = split3(x.shape(), axis);
    let better = |v: f32, b: f32| if max { v > b } else { v < b };
    let xs = x.to_f32()?;
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let base = o * n * inner + i;
            let mut bi = 0usize;
            let mut bv = f32::NAN;
            for k in 0..n {
                let v = xs[base + k * inner];
                if v.is_nan() {
                    continue;
                }
                if bv.is_nan() || better(v, bv) {
                    bv = v;
                    bi = k;
                }
            }
            out.push(bi as i64);
        }
    }
    let mut shape = x.shape().to_vec();
    if keep {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    Ok(vec![Tensor::int_from_i64(od, shape, &out)?])
}

/// `reduce_argmax`.
pub fn reduce_argmax(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    arg(a, true)
}

/// `reduce_argmin`.
pub fn reduce_argmin(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    arg(a, false)
}
