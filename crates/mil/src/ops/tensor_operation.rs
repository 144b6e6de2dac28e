//! Tensor operations (iOS15): `concat`, `split`, `tile`, `fill`, `pad`, `select`, `identity`.
//!
//! | op | params | output |
//! |---|---|---|
//! | `concat` | `values` tuple of T (one argument, ≥ 1 bindings, same rank ≥ 1); `axis` int32 const (required); `interleave` bool const opt (false) | dims equal except `axis`, which sums; interleave needs identical shapes and alternates slices |
//! | `split` | x T ∈ {fp16, fp32, int32, bool}; `num_splits` int32 const opt; `split_sizes` `int32[S]` const opt; `axis` int32 const (required) | several outputs; exactly one of `num_splits` (must divide the dim) / `split_sizes` (positive, must sum to the dim) is needed |
//! | `tile` | x T ∈ {fp16, fp32, int32, bool}; `reps` `int32[rank]` (runtime allowed, ≥ 1) | dim·rep per axis |
//! | `fill` | `shape` `int32[K]` (runtime allowed); `value` T const opt (0.0 fp32) | tensor of `shape` filled with `value`, dtype of value |
//! | `pad` | x T ∈ {fp16, fp32}; `pad` `int32[2N]` const (N ≤ rank, ≥ 0: before/after pairs of the last N axes); `mode` string const opt (`constant`; `reflect`, `replicate` need pads < dim); `constant_val` T const scalar opt (0) | each of the last N dims grows by its pair |
//! | `select` | `cond` bool; `a`, `b` T ∈ {fp16, fp32, int32, bool} | broadcast `cond ? a : b` |
//! | `identity` | x any | a copy of x (keeps unused inputs alive, renames outputs) |
//!
//! Not covered: `stack`, `range_1d`, `one_hot`, `band_part`, `topk`, `argsort`.

use super::domains::{BOOL, FLOAT, FLOAT_I32_BOOL, I32, STR};
use super::util::{
    UNKNOWN, broadcast_shapes, dims_differ, fmt_shape, mul_dim, norm_axis, same_dtype, sum_dims,
    tensor,
};
use super::{DefaultValue, OpDef, Opset, ParamSpec};
use crate::infer::Args;
use crate::{DType, Dim, InferError, TensorType, ValueType};

/// The `concat` op.
pub static CONCAT: OpDef = OpDef {
    name: "concat",
    opset: Opset::Ios15,
    params: &[
        ParamSpec::variadic("values", &[]),
        ParamSpec::tensor("axis", I32).konst(),
        ParamSpec::tensor("interleave", BOOL)
            .konst()
            .opt(DefaultValue::Bool(false)),
    ],
    infer: infer_concat,
    constexpr: false,
};

fn infer_concat(args: &Args) -> Result<Vec<ValueType>, InferError> {
    let vals: Vec<&TensorType> = args
        .variadic("values")
        .iter()
        .filter_map(|a| a.tensor())
        .collect();
    let first = *vals
        .first()
        .ok_or_else(|| InferError::MissingParam("values".into()))?;
    if first.rank() == 0 {
        return Err(InferError::rank("values", 0, "at least 1"));
    }
    let axis = norm_axis(
        "axis",
        args.int("axis")?
            .ok_or_else(|| InferError::MissingParam("axis".into()))?,
        first.rank(),
    )?;
    let interleave = args.bool("interleave")?.unwrap_or(false);
    for (i, v) in vals.iter().enumerate().skip(1) {
        same_dtype(("values[0]", first), (&format!("values[{i}]"), v))?;
        if v.rank() != first.rank() {
            return Err(InferError::rank(
                "values",
                v.rank(),
                format!("{} (rank of values[0]); values[{i}] differs", first.rank()),
            ));
        }
        for d in 0..first.rank() {
            if (d != axis || interleave) && dims_differ(v.shape[d], first.shape[d]) {
                return Err(InferError::shape(format!(
                    "values[{i}] {} does not match values[0] {} at dim {d} (concat axis {axis}{})",
                    fmt_shape(&v.shape),
                    fmt_shape(&first.shape),
                    if interleave { ", interleave" } else { "" }
                )));
            }
        }
    }
    let mut shape = first.shape.clone();
    shape[axis] = sum_dims(vals.iter().map(|v| v.shape[axis]));
    Ok(vec![tensor(first.dtype, shape)])
}

/// The `split` op.
pub static SPLIT: OpDef = OpDef {
    name: "split",
    opset: Opset::Ios15,
    params: &[
        ParamSpec::tensor("x", FLOAT_I32_BOOL),
        ParamSpec::tensor("num_splits", I32)
            .konst()
            .opt(DefaultValue::Absent("given by split_sizes")),
        ParamSpec::tensor("split_sizes", I32)
            .konst()
            .opt(DefaultValue::Absent("equal parts (num_splits)")),
        ParamSpec::tensor("axis", I32).konst(),
    ],
    infer: infer_split,
    constexpr: false,
};

fn infer_split(args: &Args) -> Result<Vec<ValueType>, InferError> {
    let x = args.tensor("x")?;
    let axis = norm_axis(
        "axis",
        args.int("axis")?
            .ok_or_else(|| InferError::MissingParam("axis".into()))?,
        x.rank(),
    )?;
    let dim = x.shape[axis];
    let num = args.int("num_splits")?;
    let sizes = args.int_list("split_sizes")?;
    let out_dims: Vec<Dim> = match (num, sizes) {
        (None, None) => {
            return Err(InferError::MissingParam("num_splits or split_sizes".into()));
        }
        (_, Some(sizes)) => {
            if let Some(n) = num
                && n != sizes.len() as i64
            {
                return Err(InferError::bad_value(
                    "num_splits",
                    format!("{n} != number of split_sizes {}", sizes.len()),
                ));
            }
            if sizes.is_empty() || sizes.iter().any(|&s| s <= 0) {
                return Err(InferError::bad_value(
                    "split_sizes",
                    format!("must be a non-empty list of positive sizes, got {sizes:?}"),
                ));
            }
            let total: i64 = sizes.iter().sum();
            if let Dim::Fixed(d) = dim
                && total != d as i64
            {
                return Err(InferError::shape(format!(
                    "split_sizes {sizes:?} sum to {total}, but x {} has {d} along axis {axis}",
                    fmt_shape(&x.shape)
                )));
            }
            sizes.iter().map(|&s| Dim::Fixed(s as u64)).collect()
        }
        (Some(n), None) => {
            if n < 1 {
                return Err(InferError::bad_value(
                    "num_splits",
                    format!("must be ≥ 1, got {n}"),
                ));
            }
            let part = match dim {
                Dim::Fixed(d) if d % n as u64 != 0 => {
                    return Err(InferError::shape(format!(
                        "num_splits {n} does not divide dim {d} of x {} along axis {axis}",
                        fmt_shape(&x.shape)
                    )));
                }
                Dim::Fixed(d) => Dim::Fixed(d / n as u64),
                u => u,
            };
            vec![part; n as usize]
        }
    };
    Ok(out_dims
        .into_iter()
        .map(|d| {
            let mut s = x.shape.clone();
            s[axis] = d;
            tensor(x.dtype, s)
        })
        .collect())
}

/// The `tile` op.
pub static TILE: OpDef = OpDef {
    name: "tile",
    opset: Opset::Ios15,
    params: &[
        ParamSpec::tensor("x", FLOAT_I32_BOOL),
        ParamSpec::tensor("reps", I32),
    ],
    infer: |args| {
        let x = args.tensor("x")?;
        let reps_t = args.tensor("reps")?;
        if reps_t.rank() != 1 || dims_differ(reps_t.shape[0], Dim::Fixed(x.rank() as u64)) {
            return Err(InferError::shape(format!(
                "reps shape {} != [rank(x)] = [{}]",
                fmt_shape(&reps_t.shape),
                x.rank()
            )));
        }
        let shape = match args.known_int_list("reps")? {
            Some(reps) => {
                if let Some(r) = reps.iter().find(|&&r| r < 1) {
                    return Err(InferError::bad_value(
                        "reps",
                        format!("must be ≥ 1, got {r}"),
                    ));
                }
                x.shape
                    .iter()
                    .zip(&reps)
                    .map(|(&d, &r)| mul_dim(d, r as u64))
                    .collect()
            }
            None => vec![UNKNOWN; x.rank()],
        };
        Ok(vec![tensor(x.dtype, shape)])
    },
    constexpr: false,
};

/// The `fill` op.
pub static FILL: OpDef = OpDef {
    name: "fill",
    opset: Opset::Ios15,
    params: &[
        ParamSpec::tensor("shape", I32),
        ParamSpec::tensor("value", FLOAT_I32_BOOL)
            .konst()
            .opt(DefaultValue::Absent("0.0 (fp32)")),
    ],
    infer: |args| {
        let shape_t = args.tensor("shape")?;
        let len = match (shape_t.rank(), shape_t.shape.first()) {
            (1, Some(Dim::Fixed(n))) => *n as usize,
            _ => {
                return Err(InferError::shape(format!(
                    "shape must be a 1-D tensor of static length, got {}",
                    fmt_shape(&shape_t.shape)
                )));
            }
        };
        let dtype = match args.opt_tensor("value") {
            Some(v) if v.rank() != 0 => {
                return Err(InferError::rank("value", v.rank(), "0 (a scalar)"));
            }
            Some(v) => v.dtype,
            None => DType::F32,
        };
        let shape = match args.known_int_list("shape")? {
            Some(s) => {
                if let Some(d) = s.iter().find(|&&d| d < 0) {
                    return Err(InferError::bad_value("shape", format!("negative size {d}")));
                }
                s.iter().map(|&d| Dim::Fixed(d as u64)).collect()
            }
            None => vec![UNKNOWN; len],
        };
        Ok(vec![tensor(dtype, shape)])
    },
    constexpr: false,
};

/// `pad` modes.
pub const PAD_MODES: [&str; 3] = ["constant", "reflect", "replicate"];

/// The `pad` op.
pub static PAD: OpDef = OpDef {
    name: "pad",
    opset: Opset::Ios15,
    params: &[
        ParamSpec::tensor("x", FLOAT),
        ParamSpec::tensor("pad", I32).konst(),
        ParamSpec::tensor("mode", STR)
            .konst()
            .opt(DefaultValue::Str("constant")),
        ParamSpec::tensor("constant_val", FLOAT)
            .konst()
            .opt(DefaultValue::FloatLikeX(0.0)),
    ],
    infer: |args| {
        let x = args.tensor("x")?;
        let pad = args.req_int_list("pad")?;
        let mode = args.string("mode")?.unwrap_or_else(|| "constant".into());
        if !PAD_MODES.contains(&mode.as_str()) {
            return Err(InferError::bad_value(
                "mode",
                format!("`{mode}` is not one of {PAD_MODES:?}"),
            ));
        }
        if let Some(c) = args.opt_tensor("constant_val") {
            if c.rank() != 0 {
                return Err(InferError::rank("constant_val", c.rank(), "0 (a scalar)"));
            }
            same_dtype(("x", x), ("constant_val", c))?;
        }
        let r = x.rank();
        if pad.len() % 2 != 0 || pad.len() / 2 > r {
            return Err(InferError::bad_value(
                "pad",
                format!(
                    "needs an even number of entries, at most 2·rank(x) = {}, got {}",
                    2 * r,
                    pad.len()
                ),
            ));
        }
        if let Some(v) = pad.iter().find(|&&v| v < 0) {
            return Err(InferError::bad_value("pad", format!("negative pad {v}")));
        }
        let k = pad.len() / 2;
        let mut shape = x.shape.clone();
        for i in 0..k {
            let d = r - k + i;
            let (before, after) = (pad[2 * i] as u64, pad[2 * i + 1] as u64);
            if mode != "constant"
                && let Dim::Fixed(n) = shape[d]
                && (before >= n || after >= n)
            {
                return Err(InferError::bad_value(
                    "pad",
                    format!("{mode} padding of axis {d} must be smaller than its size {n}"),
                ));
            }
            shape[d] = match shape[d] {
                Dim::Fixed(n) => Dim::Fixed(n + before + after),
                u => u,
            };
        }
        Ok(vec![tensor(x.dtype, shape)])
    },
    constexpr: false,
};

/// The `select` op.
pub static SELECT: OpDef = OpDef {
    name: "select",
    opset: Opset::Ios15,
    params: &[
        ParamSpec::tensor("cond", BOOL),
        ParamSpec::tensor("a", FLOAT_I32_BOOL),
        ParamSpec::tensor("b", FLOAT_I32_BOOL),
    ],
    infer: |args| {
        let c = args.tensor("cond")?;
        let a = args.tensor("a")?;
        let b = args.tensor("b")?;
        same_dtype(("a", a), ("b", b))?;
        let ab = broadcast_shapes(&a.shape, &b.shape).map_err(InferError::Shape)?;
        let shape = broadcast_shapes(&c.shape, &ab).map_err(InferError::Shape)?;
        Ok(vec![tensor(a.dtype, shape)])
    },
    constexpr: false,
};

/// The `identity` op.
pub static IDENTITY: OpDef = OpDef {
    name: "identity",
    opset: Opset::Ios15,
    params: &[ParamSpec::any("x")],
    infer: |args| {
        let x = args
            .arg("x")
            .ok_or_else(|| InferError::MissingParam("x".into()))?;
        match &x.ty {
            ValueType::State(_) => Err(InferError::Kind {
                param: "x".into(),
                expected: "tensor, list, tuple or dict",
                found: x.ty.clone(),
            }),
            t => Ok(vec![t.clone()]),
        }
    },
    constexpr: false,
};
