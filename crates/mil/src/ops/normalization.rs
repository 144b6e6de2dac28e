//! `layer_norm` (iOS17).
//!
//! | param | type | const | default |
//! |---|---|---|---|
//! | `x` | T | no | required |
//! | `axes` | `int32[K]` | yes | all axes |
//! | `gamma` | U, shape = x.shape at `axes` (increasing axis order) | yes | ones |
//! | `beta` | U, same shape as gamma | yes | zeros |
//! | `epsilon` | U scalar | yes | 1e-5 |
//!
//! `gamma · (x − mean) / sqrt(var + eps) + beta` over `axes`, population variance. T, U ∈
//! {fp16, fp32}; output has the type of x. Not covered: `batch_norm`, `instance_norm`,
//! `l2_norm`, `local_response_norm`.

use super::domains::{FLOAT, I32};
use super::util::{dims_differ, fmt_shape, norm_axes};
use super::{DefaultValue, OpDef, Opset, ParamSpec};
use crate::infer::Args;
use crate::{InferError, ValueType};

/// The `layer_norm` op.
pub static LAYER_NORM: OpDef = OpDef {
    name: "layer_norm",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", FLOAT),
        ParamSpec::tensor("axes", I32)
            .konst()
            .opt(DefaultValue::Absent("all axes")),
        ParamSpec::tensor("gamma", FLOAT)
            .konst()
            .opt(DefaultValue::Absent("ones")),
        ParamSpec::tensor("beta", FLOAT)
            .konst()
            .opt(DefaultValue::Absent("zeros")),
        ParamSpec::tensor("epsilon", FLOAT)
            .konst()
            .opt(DefaultValue::FloatLikeX(1e-5)),
    ],
    infer: infer_layer_norm,
    constexpr: false,
};

fn infer_layer_norm(args: &Args) -> Result<Vec<ValueType>, InferError> {
    let x = args.tensor("x")?;
    let mut axes = match args.int_list("axes")? {
        Some(a) => norm_axes("axes", &a, x.rank())?,
        None => (0..x.rank()).collect(),
    };
    axes.sort_unstable();
    let normalized: Vec<_> = axes.iter().map(|&a| x.shape[a]).collect();
    for p in ["gamma", "beta"] {
        if let Some(t) = args.opt_tensor(p) {
            let bad = t.rank() != normalized.len()
                || t.shape
                    .iter()
                    .zip(&normalized)
                    .any(|(&a, &b)| dims_differ(a, b));
            if bad {
                return Err(InferError::shape(format!(
                    "{p} shape {} != normalized shape {} (x {} over axes {:?})",
                    fmt_shape(&t.shape),
                    fmt_shape(&normalized),
                    fmt_shape(&x.shape),
                    axes
                )));
            }
        }
    }
    if let Some(eps) = args.opt_tensor("epsilon")
        && eps.rank() != 0
    {
        return Err(InferError::rank("epsilon", eps.rank(), "0 (a scalar)"));
    }
    Ok(vec![ValueType::Tensor(x.clone())])
}
