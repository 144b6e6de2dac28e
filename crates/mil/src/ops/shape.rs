//! Shape changes (iOS17): `reshape`, `transpose`, `expand_dims`, `squeeze`.
//!
//! | op | params | output |
//! |---|---|---|
//! | `reshape` | x T; `shape` `U[K]` (runtime allowed; U ∈ {int8, int16, int32}) | −1 is inferred (at most one); **0 copies the matching dim of x counting from the right** (`K−i == rank(x)−j`), a 0 without partner becomes 1; element counts must agree |
//! | `transpose` | x T; `perm` `int32[rank]` const (negative entries allowed) | permuted dims |
//! | `expand_dims` | x T; `axes` `int32[K]` const | axes are positions in the output (rank+K); normalise with the output rank, sort, insert 1s |
//! | `squeeze` | x T; `axes` `int32[K]` const opt (absent = all size-1 dims) | listed dims (which must be 1) dropped |
//!
//! T ∈ {fp16, fp32, int8, int16, int32, uint8, uint16, bool}. Not covered: `reshape_like`,
//! `pixel_shuffle`, `space_to_depth` and friends.

use super::domains::{I32, INDEX, TRANSFORM};
use super::util::{UNKNOWN, fmt_shape, norm_axes, tensor};
use super::{DefaultValue, OpDef, Opset, ParamSpec};
use crate::infer::Args;
use crate::{Dim, InferError, ValueType};

/// The `reshape` op.
pub static RESHAPE: OpDef = OpDef {
    name: "reshape",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", TRANSFORM),
        ParamSpec::tensor("shape", INDEX),
    ],
    infer: infer_reshape,
    constexpr: false,
};

/// Resolve a reshape target (iOS17 rules for 0 and −1) against the input shape.
pub fn reshape_target(x: &[Dim], target: &[i64]) -> Result<Vec<Dim>, InferError> {
    let k = target.len();
    let mut out: Vec<Option<Dim>> = Vec::with_capacity(k);
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            0 => {
                // right-aligned partner in x
                let from_right = k - i;
                out.push(Some(
                    x.len()
                        .checked_sub(from_right)
                        .map_or(Dim::Fixed(1), |j| x[j]),
                ));
            }
            -1 => {
                if infer_at.is_some() {
                    return Err(InferError::bad_value("shape", "more than one -1"));
                }
                infer_at = Some(i);
                out.push(None);
            }
            t if t < -1 => {
                return Err(InferError::bad_value("shape", format!("invalid size {t}")));
            }
            t => out.push(Some(Dim::Fixed(t as u64))),
        }
    }
    let total_in: Option<u64> = x.iter().map(|d| d.fixed()).product();
    let prod_others: Option<u64> = out.iter().flatten().map(|d| d.fixed()).product();
    if let Some(i) = infer_at {
        let d = match (total_in, prod_others) {
            (Some(t), Some(p)) if p != 0 && t % p == 0 => Dim::Fixed(t / p),
            (Some(t), Some(p)) => {
                return Err(InferError::shape(format!(
                    "cannot reshape x {} ({t} elements) to {target:?}: {p} does not divide it",
                    fmt_shape(x)
                )));
            }
            _ => UNKNOWN,
        };
        out[i] = Some(d);
    } else if let (Some(t), Some(p)) = (total_in, prod_others)
        && t != p
    {
        return Err(InferError::shape(format!(
            "cannot reshape x {} ({t} elements) to {target:?} ({p} elements)",
            fmt_shape(x)
        )));
    }
    Ok(out.into_iter().map(|d| d.unwrap_or(UNKNOWN)).collect())
}

fn infer_reshape(args: &Args) -> Result<Vec<ValueType>, InferError> {
    let x = args.tensor("x")?;
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
    let shape = match args.known_int_list("shape")? {
        Some(target) => reshape_target(&x.shape, &target)?,
        None => vec![UNKNOWN; len],
    };
    Ok(vec![tensor(x.dtype, shape)])
}

/// The `transpose` op.
pub static TRANSPOSE: OpDef = OpDef {
    name: "transpose",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", TRANSFORM),
        ParamSpec::tensor("perm", I32).konst(),
    ],
    infer: |args| {
        let x = args.tensor("x")?;
        let perm = args.req_int_list("perm")?;
        if perm.len() != x.rank() {
            return Err(InferError::bad_value(
                "perm",
                format!(
                    "has {} entries, x {} has rank {}",
                    perm.len(),
                    fmt_shape(&x.shape),
                    x.rank()
                ),
            ));
        }
        let p = norm_axes("perm", &perm, x.rank())?;
        Ok(vec![tensor(
            x.dtype,
            p.iter().map(|&i| x.shape[i]).collect(),
        )])
    },
    constexpr: false,
};

/// The `expand_dims` op.
pub static EXPAND_DIMS: OpDef = OpDef {
    name: "expand_dims",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", TRANSFORM),
        ParamSpec::tensor("axes", I32).konst(),
    ],
    infer: |args| {
        let x = args.tensor("x")?;
        let axes = args.req_int_list("axes")?;
        if axes.is_empty() {
            return Err(InferError::bad_value("axes", "must not be empty"));
        }
        let out_rank = x.rank() + axes.len();
        let mut pos = norm_axes("axes", &axes, out_rank)?;
        pos.sort_unstable();
        let mut shape = x.shape.clone();
        for p in pos {
            shape.insert(p, Dim::Fixed(1));
        }
        Ok(vec![tensor(x.dtype, shape)])
    },
    constexpr: false,
};

/// The `squeeze` op.
pub static SQUEEZE: OpDef = OpDef {
    name: "squeeze",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", TRANSFORM),
        ParamSpec::tensor("axes", I32)
            .konst()
            .opt(DefaultValue::Absent("all size-1 dims")),
    ],
    infer: |args| {
        let x = args.tensor("x")?;
        let drop: Vec<usize> = match args.int_list("axes")? {
            Some(axes) => {
                let a = norm_axes("axes", &axes, x.rank())?;
                for &i in &a {
                    if let Dim::Fixed(d) = x.shape[i]
                        && d != 1
                    {
                        return Err(InferError::shape(format!(
                            "cannot squeeze axis {i} of x {}: size {d} != 1",
                            fmt_shape(&x.shape)
                        )));
                    }
                }
                a
            }
            None => (0..x.rank())
                .filter(|&i| x.shape[i] == Dim::Fixed(1))
                .collect(),
        };
        let shape = (0..x.rank())
            .filter(|i| !drop.contains(i))
            .map(|i| x.shape[i])
            .collect();
        Ok(vec![tensor(x.dtype, shape)])
    },
    constexpr: false,
};
