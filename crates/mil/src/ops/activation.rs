//! Activations: `relu`, `sigmoid`, `silu`, `gelu`, `softmax` (iOS15) and `clip` (iOS17).
//!
//! | op | params | semantics |
//! |---|---|---|
//! | `relu`, `sigmoid`, `silu` | x T | max(x,0); 1/(1+e^−x); x·sigmoid(x) |
//! | `gelu` | x T; `mode` string const opt (`EXACT`) | `EXACT` 0.5x(1+erf(x/√2)); `TANH_APPROXIMATION` 0.5x(1+tanh(√(2/π)(x+0.044715x³))); `SIGMOID_APPROXIMATION` x·sigmoid(1.702x) |
//! | `softmax` | x T; `axis` int32 const opt (−1) | exp(x)/Σexp(x) along axis |
//! | `clip` | x T; `alpha` T const scalar; `beta` T const scalar (both required) | min(max(x, alpha), beta) |
//!
//! T ∈ {fp16, fp32}; output type = type of x. Not covered: `leaky_relu`, `prelu`, `elu`, other
//! parametric activations.

use super::domains::{FLOAT, I32, STR};
use super::util::{norm_axis, same_dtype};
use super::{DefaultValue, OpDef, Opset, ParamSpec};
use crate::infer::Args;
use crate::{InferError, ValueType};

fn infer_same(args: &Args) -> Result<Vec<ValueType>, InferError> {
    Ok(vec![ValueType::Tensor(args.tensor("x")?.clone())])
}

macro_rules! simple_act {
    ($stat:ident, $name:literal) => {
        #[doc = concat!("The `", $name, "` op.")]
        pub static $stat: OpDef = OpDef {
            name: $name,
            opset: Opset::Ios15,
            params: &[ParamSpec::tensor("x", FLOAT)],
            infer: infer_same,
            constexpr: false,
        };
    };
}

simple_act!(RELU, "relu");
simple_act!(SIGMOID, "sigmoid");
simple_act!(SILU, "silu");

/// `gelu` modes.
pub const GELU_MODES: [&str; 3] = ["EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION"];

/// The `gelu` op.
pub static GELU: OpDef = OpDef {
    name: "gelu",
    opset: Opset::Ios15,
    params: &[
        ParamSpec::tensor("x", FLOAT),
        ParamSpec::tensor("mode", STR)
            .konst()
            .opt(DefaultValue::Str("EXACT")),
    ],
    infer: |args| {
        if let Some(mode) = args.string("mode")?
            && !GELU_MODES.contains(&mode.as_str())
        {
            return Err(InferError::bad_value(
                "mode",
                format!("`{mode}` is not one of {GELU_MODES:?}"),
            ));
        }
        infer_same(args)
    },
    constexpr: false,
};

/// The `softmax` op.
pub static SOFTMAX: OpDef = OpDef {
    name: "softmax",
    opset: Opset::Ios15,
    params: &[
        ParamSpec::tensor("x", FLOAT),
        ParamSpec::tensor("axis", I32)
            .konst()
            .opt(DefaultValue::I32(-1)),
    ],
    infer: |args| {
        let x = args.tensor("x")?;
        norm_axis("axis", args.int("axis")?.unwrap_or(-1), x.rank())?;
        infer_same(args)
    },
    constexpr: false,
};

/// The `clip` op.
pub static CLIP: OpDef = OpDef {
    name: "clip",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", FLOAT),
        ParamSpec::tensor("alpha", FLOAT).konst(),
        ParamSpec::tensor("beta", FLOAT).konst(),
    ],
    infer: |args| {
        let x = args.tensor("x")?;
        for p in ["alpha", "beta"] {
            let t = args.tensor(p)?;
            same_dtype(("x", x), (p, t))?;
            if t.rank() != 0 {
                return Err(InferError::rank(p, t.rank(), "0 (a scalar)"));
            }
        }
        let lo = args.known_literal("alpha").and_then(|t| t.scalar_as_f32());
        let hi = args.known_literal("beta").and_then(|t| t.scalar_as_f32());
        if let (Some(lo), Some(hi)) = (lo, hi)
            && lo >= hi
        {
            return Err(InferError::bad_value(
                "alpha",
                format!("alpha ({lo}) must be < beta ({hi})"),
            ));
        }
        infer_same(args)
    },
    constexpr: false,
};
