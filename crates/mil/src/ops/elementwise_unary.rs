//! Elementwise unary ops and `cast`.
//!
//! | op (opset) | x | extra params | output |
//! |---|---|---|---|
//! | `sqrt exp tanh sin cos floor ceil round erf` (15) | T ∈ {fp16, fp32} | — | T |
//! | `abs sign square` (15) | T ∈ {fp16, fp32, int32} | — | T |
//! | `logical_not` (15) | bool | — | bool |
//! | `rsqrt` (17) | T ∈ {fp16, fp32} | `epsilon` U const opt (1e-12): `1/sqrt(x+eps)` | T |
//! | `inverse` (17) | T ∈ {fp16, fp32} | `epsilon` U const opt (1e-4): `1/(x+eps)` | T |
//! | `log` (17) | T ∈ {fp16, fp32} | `epsilon` U const opt (1e-45): `log(x+eps)` | T |
//! | `cast` (17) | T ∈ {fp16, fp32, int8, uint8, int16, uint16, int32, bool} | `dtype` string const (required) | the named dtype, same shape |
//!
//! U ∈ {fp16, fp32} (a scalar, independent of T). `round` rounds half to even (IEEE). `cast` to an
//! integer truncates toward zero. Not covered: trigonometric inverses, `clamped_relu` and other
//! rarely used activations.

use super::domains::{BOOL, FLOAT, FLOAT_I32, STR, TRANSFORM};
use super::util::tensor;
use super::{DefaultValue, OpDef, Opset, ParamSpec};
use crate::infer::Args;
use crate::{DType, InferError, ValueType};

fn infer_same(args: &Args) -> Result<Vec<ValueType>, InferError> {
    let x = args.tensor("x")?;
    if let Some(eps) = args.opt_tensor("epsilon")
        && eps.rank() != 0
    {
        return Err(InferError::rank("epsilon", eps.rank(), "0 (a scalar)"));
    }
    Ok(vec![ValueType::Tensor(x.clone())])
}

macro_rules! unary_op {
    ($stat:ident, $name:literal, $dom:expr) => {
        #[doc = concat!("The `", $name, "` op.")]
        pub static $stat: OpDef = OpDef {
            name: $name,
            opset: Opset::Ios15,
            params: &[ParamSpec::tensor("x", $dom)],
            infer: infer_same,
            constexpr: false,
        };
    };
    ($stat:ident, $name:literal, $dom:expr, eps = $eps:expr) => {
        #[doc = concat!("The `", $name, "` op (iOS17, with `epsilon`).")]
        pub static $stat: OpDef = OpDef {
            name: $name,
            opset: Opset::Ios17,
            params: &[
                ParamSpec::tensor("x", $dom),
                ParamSpec::tensor("epsilon", FLOAT)
                    .konst()
                    .opt(DefaultValue::FloatLikeX($eps)),
            ],
            infer: infer_same,
            constexpr: false,
        };
    };
}

unary_op!(ABS, "abs", FLOAT_I32);
unary_op!(CEIL, "ceil", FLOAT);
unary_op!(COS, "cos", FLOAT);
unary_op!(ERF, "erf", FLOAT);
unary_op!(EXP, "exp", FLOAT);
unary_op!(FLOOR, "floor", FLOAT);
unary_op!(LOGICAL_NOT, "logical_not", BOOL);
unary_op!(ROUND, "round", FLOAT);
unary_op!(SIGN, "sign", FLOAT_I32);
unary_op!(SIN, "sin", FLOAT);
unary_op!(SQRT, "sqrt", FLOAT);
unary_op!(SQUARE, "square", FLOAT_I32);
unary_op!(TANH, "tanh", FLOAT);
unary_op!(RSQRT, "rsqrt", FLOAT, eps = 1e-12);
unary_op!(INVERSE, "inverse", FLOAT, eps = 1e-4);
unary_op!(LOG, "log", FLOAT, eps = 1e-45);

/// dtype names accepted by `cast`.
pub const CAST_DTYPES: [DType; 8] = [
    DType::I8,
    DType::U8,
    DType::I16,
    DType::U16,
    DType::I32,
    DType::F16,
    DType::F32,
    DType::Bool,
];

/// The `cast` op.
pub static CAST: OpDef = OpDef {
    name: "cast",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", TRANSFORM),
        ParamSpec::tensor("dtype", STR).konst(),
    ],
    infer: infer_cast,
    constexpr: false,
};

fn infer_cast(args: &Args) -> Result<Vec<ValueType>, InferError> {
    let x = args.tensor("x")?;
    let name = args
        .string("dtype")?
        .ok_or_else(|| InferError::MissingParam("dtype".into()))?;
    let dtype = DType::from_mil_name(&name)
        .filter(|d| CAST_DTYPES.contains(d))
        .ok_or_else(|| {
            InferError::bad_value(
                "dtype",
                format!(
                    "`{name}` is not one of {}",
                    crate::infer::dtype_list(&CAST_DTYPES)
                ),
            )
        })?;
    Ok(vec![tensor(dtype, x.shape.clone())])
}
