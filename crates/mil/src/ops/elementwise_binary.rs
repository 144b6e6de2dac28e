//! Elementwise binary ops (iOS15), NumPy broadcasting.
//!
//! | op | x, y | output |
//! |---|---|---|
//! | `add`, `sub`, `mul`, `real_div`, `pow`, `maximum`, `minimum`, `floor_div`, `mod` | T ∈ {fp16, fp32, int32} | T |
//! | `greater`, `greater_equal`, `less`, `less_equal`, `equal`, `not_equal` | T ∈ {fp16, fp32, int32} | bool |
//! | `logical_and`, `logical_or`, `logical_xor` | bool | bool |
//!
//! Both parameters are required, runtime-capable and must share one dtype; scalars are rank-0
//! tensors (the builder makes scalar literals in the other operand's dtype). The output shape is the
//! broadcast of the two shapes. MIL has no `neg`: use `mul` by −1.
//! Not covered: nothing.

use super::domains::{BOOL, FLOAT_I32};
use super::util::{broadcast_shapes, same_dtype, tensor};
use super::{OpDef, Opset, ParamSpec};
use crate::infer::Args;
use crate::{DType, InferError, ValueType};

/// Output dtype rule of a binary op.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    /// Output has the operands' dtype.
    Arithmetic,
    /// Output is bool.
    Comparison,
    /// bool operands, bool output.
    Logical,
}

/// The kind of a binary op, if `op_type` is one.
pub fn binary_kind(op_type: &str) -> Option<BinaryKind> {
    Some(match op_type {
        "add" | "sub" | "mul" | "real_div" | "pow" | "maximum" | "minimum" | "floor_div"
        | "mod" => BinaryKind::Arithmetic,
        "greater" | "greater_equal" | "less" | "less_equal" | "equal" | "not_equal" => {
            BinaryKind::Comparison
        }
        "logical_and" | "logical_or" | "logical_xor" => BinaryKind::Logical,
        _ => return None,
    })
}

fn infer_binary(args: &Args, out_bool: bool) -> Result<Vec<ValueType>, InferError> {
    let x = args.tensor("x")?;
    let y = args.tensor("y")?;
    same_dtype(("x", x), ("y", y))?;
    let shape = broadcast_shapes(&x.shape, &y.shape).map_err(InferError::Shape)?;
    Ok(vec![tensor(
        if out_bool { DType::Bool } else { x.dtype },
        shape,
    )])
}

fn infer_arith(args: &Args) -> Result<Vec<ValueType>, InferError> {
    infer_binary(args, false)
}

fn infer_bool(args: &Args) -> Result<Vec<ValueType>, InferError> {
    infer_binary(args, true)
}

macro_rules! binary_op {
    ($stat:ident, $name:literal, $dom:expr, $infer:ident) => {
        #[doc = concat!("The `", $name, "` op.")]
        pub static $stat: OpDef = OpDef {
            name: $name,
            opset: Opset::Ios15,
            params: &[ParamSpec::tensor("x", $dom), ParamSpec::tensor("y", $dom)],
            infer: $infer,
            constexpr: false,
        };
    };
}

binary_op!(ADD, "add", FLOAT_I32, infer_arith);
binary_op!(SUB, "sub", FLOAT_I32, infer_arith);
binary_op!(MUL, "mul", FLOAT_I32, infer_arith);
binary_op!(REAL_DIV, "real_div", FLOAT_I32, infer_arith);
binary_op!(POW, "pow", FLOAT_I32, infer_arith);
binary_op!(MAXIMUM, "maximum", FLOAT_I32, infer_arith);
binary_op!(MINIMUM, "minimum", FLOAT_I32, infer_arith);
binary_op!(FLOOR_DIV, "floor_div", FLOAT_I32, infer_arith);
binary_op!(MOD, "mod", FLOAT_I32, infer_arith);
binary_op!(GREATER, "greater", FLOAT_I32, infer_bool);
binary_op!(GREATER_EQUAL, "greater_equal", FLOAT_I32, infer_bool);
binary_op!(LESS, "less", FLOAT_I32, infer_bool);
binary_op!(LESS_EQUAL, "less_equal", FLOAT_I32, infer_bool);
binary_op!(EQUAL, "equal", FLOAT_I32, infer_bool);
binary_op!(NOT_EQUAL, "not_equal", FLOAT_I32, infer_bool);
binary_op!(LOGICAL_AND, "logical_and", BOOL, infer_bool);
binary_op!(LOGICAL_OR, "logical_or", BOOL, infer_bool);
binary_op!(LOGICAL_XOR, "logical_xor", BOOL, infer_bool);
