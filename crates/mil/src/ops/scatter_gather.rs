//! `gather` and `gather_along_axis` (iOS17).
//!
//! | op | params | output |
//! |---|---|---|
//! | `gather` | x T; `indices` I; `axis` int32 const opt (0); `batch_dims` int32 const opt (0); `validate_indices` bool const opt (false) | `x.shape[:axis] + indices.shape[batch_dims:] + x.shape[axis+1:]` |
//! | `gather_along_axis` | x T; `indices` I with rank(indices) = rank(x) and equal sizes off `axis`; `axis` int32 const opt (0); `validate_indices` bool const opt (false) | shape of indices; `out[p] = x[p with p[axis] = indices[p]]` |
//!
//! T ∈ {fp16, fp32, int32, int16, uint16, int8, uint8}; I ∈ {int32, int16, uint16, int8, uint8}.
//! `batch_dims` < rank(x), ≤ rank(indices), and the leading `batch_dims` dims of x and indices
//! agree. Since iOS17 negative indices are out of range (undefined but memory-safe), so emitters
//! must make indices non-negative. Not covered: `gather_nd`, `scatter*`.

use super::domains::{BOOL, GATHER_DATA, GATHER_INDEX, I32};
use super::util::{dims_differ, fmt_shape, norm_axis, tensor};
use super::{DefaultValue, OpDef, Opset, ParamSpec};
use crate::InferError;

/// The `gather` op.
pub static GATHER: OpDef = OpDef {
    name: "gather",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", GATHER_DATA),
        ParamSpec::tensor("indices", GATHER_INDEX),
        ParamSpec::tensor("axis", I32)
            .konst()
            .opt(DefaultValue::I32(0)),
        ParamSpec::tensor("batch_dims", I32)
            .konst()
            .opt(DefaultValue::I32(0)),
        ParamSpec::tensor("validate_indices", BOOL)
            .konst()
            .opt(DefaultValue::Bool(false)),
    ],
    infer: |args| {
        let x = args.tensor("x")?;
        let idx = args.tensor("indices")?;
        if x.rank() == 0 {
            return Err(InferError::rank("x", 0, "at least 1"));
        }
        let axis = norm_axis("axis", args.int("axis")?.unwrap_or(0), x.rank())?;
        let mut bd = args.int("batch_dims")?.unwrap_or(0);
        if bd < 0 {
            bd += idx.rank() as i64;
        }
        if bd < 0 || bd as usize >= x.rank() || bd as usize > idx.rank() || bd as usize > axis {
            return Err(InferError::bad_value(
                "batch_dims",
                format!(
                    "{bd} must be in [0, min(rank(x)-1, rank(indices), axis)] (rank(x) {}, \
                     rank(indices) {}, axis {axis})",
                    x.rank(),
                    idx.rank()
                ),
            ));
        }
        let bd = bd as usize;
        for i in 0..bd {
            if dims_differ(x.shape[i], idx.shape[i]) {
                return Err(InferError::shape(format!(
                    "batch dim {i} differs: x {} vs indices {}",
                    fmt_shape(&x.shape),
                    fmt_shape(&idx.shape)
                )));
            }
        }
        let mut shape = x.shape[..axis].to_vec();
        shape.extend_from_slice(&idx.shape[bd..]);
        shape.extend_from_slice(&x.shape[axis + 1..]);
        Ok(vec![tensor(x.dtype, shape)])
    },
    constexpr: false,
};

/// The `gather_along_axis` op.
pub static GATHER_ALONG_AXIS: OpDef = OpDef {
    name: "gather_along_axis",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", GATHER_DATA),
        ParamSpec::tensor("indices", GATHER_INDEX),
        ParamSpec::tensor("axis", I32)
            .konst()
            .opt(DefaultValue::I32(0)),
        ParamSpec::tensor("validate_indices", BOOL)
            .konst()
            .opt(DefaultValue::Bool(false)),
    ],
    infer: |args| {
        let x = args.tensor("x")?;
        let idx = args.tensor("indices")?;
        if idx.rank() != x.rank() {
            return Err(InferError::rank(
                "indices",
                idx.rank(),
                format!("{} (rank of x)", x.rank()),
            ));
        }
        let axis = norm_axis("axis", args.int("axis")?.unwrap_or(0), x.rank())?;
        for i in (0..x.rank()).filter(|&i| i != axis) {
            if dims_differ(x.shape[i], idx.shape[i]) {
                return Err(InferError::shape(format!(
                    "indices {} and x {} differ at dim {i} (only axis {axis} may differ)",
                    fmt_shape(&idx.shape),
                    fmt_shape(&x.shape)
                )));
            }
        }
        Ok(vec![tensor(x.dtype, idx.shape.clone())])
    },
    constexpr: false,
};
