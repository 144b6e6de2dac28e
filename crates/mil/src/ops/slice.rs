//! Slicing: `slice_by_index`, `slice_by_size` (iOS17) and `slice_update` (iOS18).
//!
//! | op | params | output |
//! |---|---|---|
//! | `slice_by_index` | x T; `begin`, `end` `U[rank]` (runtime allowed); `stride` `U[rank]` const opt (ones); `begin_mask`, `end_mask`, `squeeze_mask` `bool[rank]` const opt (all false) | Python slicing `x[b0:e0:s0, …]` (negative indices wrap, then clamp); `begin_mask[i]` ⇒ from the start (end for negative stride), `end_mask[i]` ⇒ to the end; `squeeze_mask[i]` ⇒ take element `begin[i]` and drop the dim |
//! | `slice_by_size` | x T; `begin` `U[rank]`; `size` `U[rank]` (both runtime allowed; −1 = to the end) | `x[b : b+size]` per axis |
//! | `slice_update` | x T; `update` T (shape of the slice); `begin`, `end`, `stride`, masks as `slice_by_index` | x with the slice replaced by `update` |
//!
//! T ∈ {fp16, fp32, int8, int16, int32, uint8, uint16, bool}; U ∈ {int8, int16, int32}. With
//! runtime `begin`/`end` the sliced dims are unknown, except full-range (both masks) axes; with
//! runtime `begin` and known `size`, `slice_by_size` dims are known. Not covered: nothing.

use super::domains::{BOOL, INDEX, TRANSFORM};
use super::util::{UNKNOWN, dims_differ, fmt_shape, same_dtype, tensor};
use super::{DefaultValue, OpDef, Opset, ParamSpec};
use crate::infer::Args;
use crate::{Dim, InferError, TensorType, ValueType};

const SLICE_PARAMS_TAIL: [ParamSpec; 6] = [
    ParamSpec::tensor("begin", INDEX),
    ParamSpec::tensor("end", INDEX),
    ParamSpec::tensor("stride", INDEX)
        .konst()
        .opt(DefaultValue::PerRankI32(1)),
    ParamSpec::tensor("begin_mask", BOOL)
        .konst()
        .opt(DefaultValue::PerRankBool(false)),
    ParamSpec::tensor("end_mask", BOOL)
        .konst()
        .opt(DefaultValue::PerRankBool(false)),
    ParamSpec::tensor("squeeze_mask", BOOL)
        .konst()
        .opt(DefaultValue::PerRankBool(false)),
];

/// The `slice_by_index` op.
pub static SLICE_BY_INDEX: OpDef = OpDef {
    name: "slice_by_index",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", TRANSFORM),
        SLICE_PARAMS_TAIL[0],
        SLICE_PARAMS_TAIL[1],
        SLICE_PARAMS_TAIL[2],
        SLICE_PARAMS_TAIL[3],
        SLICE_PARAMS_TAIL[4],
        SLICE_PARAMS_TAIL[5],
    ],
    infer: |args| {
        let x = args.tensor("x")?;
        Ok(vec![tensor(x.dtype, slice_shape(args, x)?)])
    },
    constexpr: false,
};

/// The `slice_update` op.
pub static SLICE_UPDATE: OpDef = OpDef {
    name: "slice_update",
    opset: Opset::Ios18,
    params: &[
        ParamSpec::tensor("x", TRANSFORM),
        ParamSpec::tensor("update", TRANSFORM),
        SLICE_PARAMS_TAIL[0],
        SLICE_PARAMS_TAIL[1],
        SLICE_PARAMS_TAIL[2],
        SLICE_PARAMS_TAIL[3],
        SLICE_PARAMS_TAIL[4],
        SLICE_PARAMS_TAIL[5],
    ],
    infer: |args| {
        let x = args.tensor("x")?;
        let u = args.tensor("update")?;
        same_dtype(("x", x), ("update", u))?;
        let s = slice_shape(args, x)?;
        if s.len() != u.rank() || s.iter().zip(&u.shape).any(|(&a, &b)| dims_differ(a, b)) {
            return Err(InferError::shape(format!(
                "update shape {} != slice shape {} of x {}",
                fmt_shape(&u.shape),
                fmt_shape(&s),
                fmt_shape(&x.shape)
            )));
        }
        Ok(vec![ValueType::Tensor(x.clone())])
    },
    constexpr: false,
};

fn vector_param_len(args: &Args, p: &str, rank: usize) -> Result<(), InferError> {
    if let Some(t) = args.opt_tensor(p)
        && (t.rank() != 1 || dims_differ(t.shape[0], Dim::Fixed(rank as u64)))
    {
        return Err(InferError::shape(format!(
            "{p} shape {} != [rank(x)] = [{rank}]",
            fmt_shape(&t.shape)
        )));
    }
    Ok(())
}

fn mask(args: &Args, p: &str, rank: usize) -> Result<Vec<bool>, InferError> {
    Ok(args.bool_list(p)?.unwrap_or_else(|| vec![false; rank]))
}

/// Length of a Python slice `[b:e:s]` over a dim of size `n` (`None` begin/end = masked).
pub fn slice_len(n: i64, b: Option<i64>, e: Option<i64>, s: i64) -> i64 {
    if s > 0 {
        let start = b.map_or(0, |b| if b < 0 { (b + n).max(0) } else { b.min(n) });
        let stop = e.map_or(n, |e| if e < 0 { (e + n).max(0) } else { e.min(n) });
        if stop > start {
            (stop - start + s - 1) / s
        } else {
            0
        }
    } else {
        let start = b.map_or(
            n - 1,
            |b| if b < 0 { (b + n).max(-1) } else { b.min(n - 1) },
        );
        let stop = e.map_or(-1, |e| if e < 0 { (e + n).max(-1) } else { e.min(n - 1) });
        if start > stop {
            (start - stop + (-s) - 1) / (-s)
        } else {
            0
        }
    }
}

/// Output shape of `slice_by_index` (also the required `update` shape of `slice_update`).
pub fn slice_shape(args: &Args, x: &TensorType) -> Result<Vec<Dim>, InferError> {
    let rank = x.rank();
    for p in [
        "begin",
        "end",
        "stride",
        "begin_mask",
        "end_mask",
        "squeeze_mask",
    ] {
        vector_param_len(args, p, rank)?;
    }
    let begin = args.known_int_list("begin")?;
    let end = args.known_int_list("end")?;
    let stride = args.int_list("stride")?.unwrap_or_else(|| vec![1; rank]);
    let bm = mask(args, "begin_mask", rank)?;
    let em = mask(args, "end_mask", rank)?;
    let sm = mask(args, "squeeze_mask", rank)?;
    for (p, len) in [
        ("begin", begin.as_ref().map(Vec::len)),
        ("end", end.as_ref().map(Vec::len)),
        ("stride", Some(stride.len())),
        ("begin_mask", Some(bm.len())),
        ("end_mask", Some(em.len())),
        ("squeeze_mask", Some(sm.len())),
    ] {
        if let Some(l) = len.filter(|&l| l != rank) {
            return Err(InferError::shape(format!(
                "{p} has {l} entries, x {} has rank {rank}",
                fmt_shape(&x.shape)
            )));
        }
    }
    if let Some(i) = stride.iter().position(|&s| s == 0) {
        return Err(InferError::bad_value(
            "stride",
            format!("stride of axis {i} is 0"),
        ));
    }
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        if sm[i] {
            continue;
        }
        let s = stride[i];
        let b = if bm[i] {
            Some(None)
        } else {
            begin.as_ref().map(|v| Some(v[i]))
        };
        let e = if em[i] {
            Some(None)
        } else {
            end.as_ref().map(|v| Some(v[i]))
        };
        let d = match (x.shape[i], b, e) {
            (Dim::Fixed(n), Some(b), Some(e)) => {
                Dim::Fixed(slice_len(n as i64, b, e, s).max(0) as u64)
            }
            (Dim::Fixed(1), _, _) => Dim::Fixed(1),
            (Dim::Unknown { .. }, Some(Some(b)), Some(Some(e))) => {
                // coremltools keeps only the size-0/1 results that do not depend on the dim
                let len = if b >= 0 && e >= 0 && s > 0 && e >= b {
                    Some((e - b + s - 1) / s)
                } else if b < 0 && e < 0 && s < 0 && b >= e {
                    Some((b - e + (-s) - 1) / (-s))
                } else {
                    None
                };
                match len {
                    Some(l @ (0 | 1)) => Dim::Fixed(l as u64),
                    _ => UNKNOWN,
                }
            }
            (Dim::Unknown { .. }, Some(None), Some(None)) if s.abs() == 1 => x.shape[i],
            _ => UNKNOWN,
        };
        out.push(d);
    }
    Ok(out)
}

/// The `slice_by_size` op.
pub static SLICE_BY_SIZE: OpDef = OpDef {
    name: "slice_by_size",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", TRANSFORM),
        ParamSpec::tensor("begin", INDEX),
        ParamSpec::tensor("size", INDEX),
    ],
    infer: |args| {
        let x = args.tensor("x")?;
        let rank = x.rank();
        vector_param_len(args, "begin", rank)?;
        vector_param_len(args, "size", rank)?;
        let begin = args.known_int_list("begin")?;
        let size = args.known_int_list("size")?;
        let mut out = Vec::with_capacity(rank);
        for i in 0..rank {
            let b = begin.as_ref().map(|v| v[i]);
            let sz = size.as_ref().map(|v| v[i]);
            let d = match (sz, b, x.shape[i]) {
                (Some(s), _, _) if s < -1 => {
                    return Err(InferError::bad_value("size", format!("invalid size {s}")));
                }
                (Some(-1), Some(b), Dim::Fixed(n)) => {
                    if b < 0 || b as u64 > n {
                        return Err(InferError::bad_value(
                            "begin",
                            format!("begin {b} out of range for dim {n} (axis {i})"),
                        ));
                    }
                    Dim::Fixed(n - b as u64)
                }
                (Some(-1), _, _) | (None, _, _) => UNKNOWN,
                (Some(s), b, dim) => {
                    if let (Some(b), Dim::Fixed(n)) = (b, dim)
                        && (b < 0 || (b + s) as u64 > n)
                    {
                        return Err(InferError::shape(format!(
                            "slice [{b}, {b}+{s}) exceeds dim {n} of x {} (axis {i})",
                            fmt_shape(&x.shape)
                        )));
                    }
                    Dim::Fixed(s as u64)
                }
            };
            out.push(d);
        }
        Ok(vec![tensor(x.dtype, out)])
    },
    constexpr: false,
};

#[cfg(test)]
mod tests {
    use super::slice_len;

    /// (n, begin, end, stride, expected length)
    type Case = (i64, Option<i64>, Option<i64>, i64, i64);

    #[test]
    fn slice_len_matches_python() {
        // expected = len(range(n)[begin:end:stride]) computed by CPython
        let cases: [Case; 40] = [
            (6, Some(-1), Some(7), -2, 0),
            (1, Some(4), Some(-10), -3, 1),
            (6, Some(-12), Some(3), 2, 2),
            (4, Some(-11), Some(0), -3, 0),
            (7, Some(-6), Some(-11), -3, 1),
            (9, Some(-12), Some(5), 1, 5),
            (2, Some(7), Some(7), -2, 0),
            (1, Some(5), Some(-1), 2, 0),
            (1, Some(-12), Some(4), -2, 0),
            (3, Some(0), Some(-9), -1, 1),
            (9, Some(5), Some(-4), -3, 0),
            (9, Some(-8), Some(-10), 3, 0),
            (4, Some(-10), Some(4), -1, 0),
            (2, Some(-12), Some(6), 2, 1),
            (4, Some(8), Some(4), 1, 0),
            (7, Some(1), Some(5), -1, 0),
            (8, Some(-4), Some(-6), -1, 2),
            (3, Some(11), Some(-6), 3, 0),
            (2, Some(-4), Some(3), 2, 1),
            (8, Some(10), Some(1), -1, 6),
            (5, Some(-11), Some(-10), 2, 0),
            (9, Some(-8), Some(11), 1, 8),
            (6, Some(2), Some(0), -2, 1),
            (1, Some(-11), Some(11), 3, 1),
            (9, Some(-3), Some(-3), 2, 0),
            (6, Some(2), Some(5), 2, 2),
            (8, Some(-11), Some(-5), -3, 0),
            (8, Some(8), Some(-11), 3, 0),
            (1, Some(9), Some(-4), 3, 0),
            (8, Some(9), Some(-1), -1, 0),
            (6, Some(1), Some(-2), -3, 0),
            (3, Some(-10), Some(2), 2, 1),
            (1, Some(11), Some(-4), -2, 1),
            (3, Some(-6), Some(-1), 3, 1),
            (7, Some(-11), Some(-8), 1, 0),
            (8, Some(4), Some(-5), 1, 0),
            (3, Some(4), Some(-5), 1, 0),
            (7, Some(8), Some(-1), -1, 0),
            (4, Some(-11), Some(-8), -2, 0),
            (3, Some(8), Some(-6), -2, 2),
        ];
        for (n, b, e, s, want) in cases {
            assert_eq!(slice_len(n, b, e, s), want, "n={n} b={b:?} e={e:?} s={s}");
        }
    }
}
