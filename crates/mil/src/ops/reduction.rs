//! Reductions: `reduce_mean`, `reduce_sum`, `reduce_max`, `reduce_min` (iOS15) and
//! `reduce_argmax` (iOS17).
//!
//! | op | params | output |
//! |---|---|---|
//! | `reduce_{mean,sum,max,min}` | x T; `axes` `int32[K]` const opt (absent = all axes); `keep_dims` bool const opt (false) | T; reduced dims dropped (or kept as 1) |
//! | `reduce_argmax` | x T; `axis` int32 const opt (−1); `keep_dims` bool const opt (false); `output_dtype` string const opt (`int32`; or `uint16`) | index of the max along one axis |
//!
//! T ∈ {fp16, fp32, int32}; negative axes count from the end; axes must be distinct. Reducing
//! every axis without `keep_dims` gives a rank-0 tensor. Tie order of `reduce_argmax` is unspecified
//! (NumPy picks the first). Not covered: `reduce_prod`, `reduce_l1/l2_norm`, `reduce_log_sum*`,
//! `reduce_argmin`.

use super::domains::{BOOL, FLOAT_I32, I32, STR};
use super::util::{norm_axes, norm_axis, tensor};
use super::{DefaultValue, OpDef, Opset, ParamSpec};
use crate::infer::Args;
use crate::{DType, Dim, InferError, ValueType};

fn infer_reduce(args: &Args) -> Result<Vec<ValueType>, InferError> {
    let x = args.tensor("x")?;
    let axes = match args.int_list("axes")? {
        Some(a) => norm_axes("axes", &a, x.rank())?,
        None => (0..x.rank()).collect(),
    };
    let keep = args.bool("keep_dims")?.unwrap_or(false);
    let shape = reduced_shape(&x.shape, &axes, keep);
    Ok(vec![tensor(x.dtype, shape)])
}

/// The shape after reducing `axes` (normalised) of `shape`.
pub fn reduced_shape(shape: &[Dim], axes: &[usize], keep_dims: bool) -> Vec<Dim> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keep_dims) {
            (false, _) => Some(d),
            (true, true) => Some(Dim::Fixed(1)),
            (true, false) => None,
        })
        .collect()
}

macro_rules! reduce_op {
    ($stat:ident, $name:literal) => {
        #[doc = concat!("The `", $name, "` op.")]
        pub static $stat: OpDef = OpDef {
            name: $name,
            opset: Opset::Ios15,
            params: &[
                ParamSpec::tensor("x", FLOAT_I32),
                ParamSpec::tensor("axes", I32)
                    .konst()
                    .opt(DefaultValue::Absent("reduce over all axes")),
                ParamSpec::tensor("keep_dims", BOOL)
                    .konst()
                    .opt(DefaultValue::Bool(false)),
            ],
            infer: infer_reduce,
            constexpr: false,
        };
    };
}

reduce_op!(REDUCE_MEAN, "reduce_mean");
reduce_op!(REDUCE_SUM, "reduce_sum");
reduce_op!(REDUCE_MAX, "reduce_max");
reduce_op!(REDUCE_MIN, "reduce_min");

/// The `reduce_argmax` op.
pub static REDUCE_ARGMAX: OpDef = OpDef {
    name: "reduce_argmax",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", FLOAT_I32),
        ParamSpec::tensor("axis", I32)
            .konst()
            .opt(DefaultValue::I32(-1)),
        ParamSpec::tensor("keep_dims", BOOL)
            .konst()
            .opt(DefaultValue::Bool(false)),
        ParamSpec::tensor("output_dtype", STR)
            .konst()
            .opt(DefaultValue::Str("int32")),
    ],
    infer: infer_argmax,
    constexpr: false,
};

fn infer_argmax(args: &Args) -> Result<Vec<ValueType>, InferError> {
    let x = args.tensor("x")?;
    let axis = norm_axis("axis", args.int("axis")?.unwrap_or(-1), x.rank())?;
    let keep = args.bool("keep_dims")?.unwrap_or(false);
    let dtype = match args.string("output_dtype")?.as_deref() {
        None | Some("int32") => DType::I32,
        Some("uint16") => DType::U16,
        Some(other) => {
            return Err(InferError::bad_value(
                "output_dtype",
                format!("`{other}` is not one of int32, uint16"),
            ));
        }
    };
    Ok(vec![tensor(dtype, reduced_shape(&x.shape, &[axis], keep))])
}
