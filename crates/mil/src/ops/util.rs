//! Shape helpers shared by the op inference functions (and usable by kernels): NumPy broadcasting,
//! axis normalisation, shape formatting.

use crate::{DType, Dim, InferError, TensorType, ValueType};

/// An unknown (symbolic, non-variadic) dimension.
pub const UNKNOWN: Dim = Dim::Unknown { variadic: false };

/// A fixed dimension from a `usize`/`u64`/`i64` size.
pub fn fixed(n: u64) -> Dim {
    Dim::Fixed(n)
}

/// `[1, 8, ?]`-style formatting of a shape.
pub fn fmt_shape(s: &[Dim]) -> String {
    let parts: Vec<String> = s.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// NumPy broadcasting of two shapes (right-aligned; a 1 stretches; unknown dims broadcast to the
/// other side when it is fixed and not 1).
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, String> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.len())
            .checked_sub(rank)
            .map_or(Dim::Fixed(1), |j| a[j]);
        let db = (i + b.len())
            .checked_sub(rank)
            .map_or(Dim::Fixed(1), |j| b[j]);
        let d = match (da, db) {
            (Dim::Fixed(x), Dim::Fixed(y)) if x == y => Dim::Fixed(x),
            (Dim::Fixed(1), d) | (d, Dim::Fixed(1)) => d,
            (Dim::Fixed(x), Dim::Fixed(y)) => {
                return Err(format!(
                    "shapes {} and {} do not broadcast (dim {x} vs {y})",
                    fmt_shape(a),
                    fmt_shape(b)
                ));
            }
            (Dim::Fixed(x), Dim::Unknown { .. }) | (Dim::Unknown { .. }, Dim::Fixed(x)) => {
                Dim::Fixed(x)
            }
            (Dim::Unknown { .. }, Dim::Unknown { .. }) => UNKNOWN,
        };
        out.push(d);
    }
    Ok(out)
}

/// Normalise an axis in `[-rank, rank)` to `[0, rank)`.
pub fn norm_axis(param: &str, axis: i64, rank: usize) -> Result<usize, InferError> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(InferError::bad_value(
            param,
            format!("axis {axis} is out of range for rank {rank}"),
        ));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// Normalise a list of distinct axes (error on duplicates).
pub fn norm_axes(param: &str, axes: &[i64], rank: usize) -> Result<Vec<usize>, InferError> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = norm_axis(param, a, rank)?;
        if out.contains(&n) {
            return Err(InferError::bad_value(
                param,
                format!("axis {a} is listed twice"),
            ));
        }
        out.push(n);
    }
    Ok(out)
}

/// A tensor value type.
pub fn tensor(dtype: DType, shape: Vec<Dim>) -> ValueType {
    ValueType::Tensor(TensorType { dtype, shape })
}

/// Error unless `a` and `b` share a dtype.
pub fn same_dtype(a: (&str, &TensorType), b: (&str, &TensorType)) -> Result<(), InferError> {
    if a.1.dtype != b.1.dtype {
        return Err(InferError::DTypeMismatch {
            a: a.0.to_string(),
            a_dtype: a.1.dtype,
            b: b.0.to_string(),
            b_dtype: b.1.dtype,
        });
    }
    Ok(())
}

/// Error unless `t` has a rank in `lo..=hi`.
pub fn rank_in(param: &str, t: &TensorType, lo: usize, hi: usize) -> Result<(), InferError> {
    let r = t.rank();
    if r < lo || r > hi {
        let expected = if lo == hi {
            format!("{lo}")
        } else if hi == usize::MAX {
            format!("at least {lo}")
        } else {
            format!("{lo} to {hi}")
        };
        return Err(InferError::rank(param, r, expected));
    }
    Ok(())
}

/// True if two dims are certainly different (both fixed and unequal).
pub fn dims_differ(a: Dim, b: Dim) -> bool {
    matches!((a, b), (Dim::Fixed(x), Dim::Fixed(y)) if x != y)
}

/// Sum of dims (unknown if any is unknown).
pub fn sum_dims(ds: impl IntoIterator<Item = Dim>) -> Dim {
    let mut total = 0u64;
    for d in ds {
        match d {
            Dim::Fixed(n) => total += n,
            Dim::Unknown { .. } => return UNKNOWN,
        }
    }
    Dim::Fixed(total)
}

/// Product of a dim with a positive factor.
pub fn mul_dim(d: Dim, f: u64) -> Dim {
    match d {
        Dim::Fixed(n) => Dim::Fixed(n * f),
        u => u,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: &[u64]) -> Vec<Dim> {
        v.iter().map(|&n| Dim::Fixed(n)).collect()
    }

    #[test]
    fn broadcasting() {
        assert_eq!(
            broadcast_shapes(&f(&[1, 8, 1]), &f(&[4, 1, 1, 5])),
            Ok(f(&[4, 1, 8, 5]))
        );
        assert_eq!(broadcast_shapes(&f(&[]), &f(&[3])), Ok(f(&[3])));
        assert!(broadcast_shapes(&f(&[2, 3]), &f(&[4, 3])).is_err());
        assert_eq!(
            broadcast_shapes(&[UNKNOWN, Dim::Fixed(1)], &f(&[5, 7])),
            Ok(f(&[5, 7]))
        );
        assert_eq!(broadcast_shapes(&[UNKNOWN], &[UNKNOWN]), Ok(vec![UNKNOWN]));
    }

    #[test]
    fn axes() {
        assert_eq!(norm_axis("axis", -1, 3), Ok(2));
        assert_eq!(norm_axis("axis", 0, 3), Ok(0));
        assert!(norm_axis("axis", 3, 3).is_err());
        assert!(norm_axis("axis", -4, 3).is_err());
        assert!(norm_axes("axes", &[0, -3], 3).is_err());
    }
}
