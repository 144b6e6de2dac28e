//! `linear` and `matmul` (iOS17).
//!
//! **linear**: `x·Wᵀ + b`.
//!
//! | param | type | const | default |
//! |---|---|---|---|
//! | `x` | T[*D, D_in], rank 1–3 | no | required |
//! | `weight` | U[D_out, D_in] | yes | required |
//! | `bias` | `U[D_out]` | yes | zeros |
//!
//! T, U ∈ {fp16, fp32, int32}; output T[*D, D_out].
//!
//! **matmul**: batched matrix product with NumPy semantics.
//!
//! | param | type | const | default |
//! |---|---|---|---|
//! | `x` | T[*, K1] (rank ≥ 1) | no | required |
//! | `y` | U[*, K2] (rank ≥ 1) | no | required |
//! | `transpose_x` | bool | yes | false |
//! | `transpose_y` | bool | yes | false |
//!
//! The transpose flags swap the last two dims first; 1-D operands are promoted (`[K]` → `[1, K]` for
//! x, `[K, 1]` for y) and the promoted dim is dropped from the result; batch dims broadcast.
//! dtypes: when exactly one operand is a `const` op output, the output takes the other one's dtype;
//! otherwise x and y must share a dtype (iOS17 rule; constexpr outputs count as non-const).
//! Not covered: int8 activations.

use super::domains::{BOOL, FLOAT_I32};
use super::util::{broadcast_shapes, dims_differ, fmt_shape, rank_in, same_dtype, tensor};
use super::{DefaultValue, OpDef, Opset, ParamSpec};
use crate::infer::{Args, Constant};
use crate::{Dim, InferError, ValueType};

/// The `linear` op.
pub static LINEAR: OpDef = OpDef {
    name: "linear",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", FLOAT_I32),
        ParamSpec::tensor("weight", FLOAT_I32).konst(),
        ParamSpec::tensor("bias", FLOAT_I32)
            .konst()
            .opt(DefaultValue::Absent("zeros of shape [D_out]")),
    ],
    infer: infer_linear,
    constexpr: false,
};

/// The `matmul` op.
pub static MATMUL: OpDef = OpDef {
    name: "matmul",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", FLOAT_I32),
        ParamSpec::tensor("y", FLOAT_I32),
        ParamSpec::tensor("transpose_x", BOOL)
            .konst()
            .opt(DefaultValue::Bool(false)),
        ParamSpec::tensor("transpose_y", BOOL)
            .konst()
            .opt(DefaultValue::Bool(false)),
    ],
    infer: infer_matmul,
    constexpr: false,
};

fn infer_linear(args: &Args) -> Result<Vec<ValueType>, InferError> {
    let x = args.tensor("x")?;
    let w = args.tensor("weight")?;
    rank_in("x", x, 1, 3)?;
    rank_in("weight", w, 2, 2)?;
    let d_in = x.shape[x.rank() - 1];
    if dims_differ(d_in, w.shape[1]) {
        return Err(InferError::shape(format!(
            "weight in-features {} != last dim of x {} (x {}, weight {})",
            w.shape[1],
            d_in,
            fmt_shape(&x.shape),
            fmt_shape(&w.shape)
        )));
    }
    if let Some(b) = args.opt_tensor("bias") {
        same_dtype(("weight", w), ("bias", b))?;
        if b.rank() != 1 || dims_differ(b.shape[0], w.shape[0]) {
            return Err(InferError::shape(format!(
                "bias shape {} != [D_out] = [{}]",
                fmt_shape(&b.shape),
                w.shape[0]
            )));
        }
    }
    let mut shape = x.shape.clone();
    let last = shape.len() - 1;
    shape[last] = w.shape[0];
    Ok(vec![tensor(x.dtype, shape)])
}

fn infer_matmul(args: &Args) -> Result<Vec<ValueType>, InferError> {
    let x = args.tensor("x")?;
    let y = args.tensor("y")?;
    rank_in("x", x, 1, usize::MAX)?;
    rank_in("y", y, 1, usize::MAX)?;
    let tx = args.bool("transpose_x")?.unwrap_or(false);
    let ty = args.bool("transpose_y")?.unwrap_or(false);
    let is_const = |p: &str| {
        args.arg(p)
            .is_some_and(|a| matches!(a.constant, Constant::Value(_)))
    };
    let (xc, yc) = (is_const("x"), is_const("y"));
    let dtype = if xc == yc {
        same_dtype(("x", x), ("y", y))?;
        x.dtype
    } else if yc {
        x.dtype
    } else {
        y.dtype
    };
    let mut xs = x.shape.clone();
    let mut ys = y.shape.clone();
    if x.rank() == 1 && tx {
        return Err(InferError::bad_value(
            "transpose_x",
            "x is 1-D, transpose_x must be false",
        ));
    }
    if tx {
        let n = xs.len();
        xs.swap(n - 1, n - 2);
    }
    if ty && ys.len() >= 2 {
        let n = ys.len();
        ys.swap(n - 1, n - 2);
    }
    let x_vec = xs.len() == 1;
    let y_vec = ys.len() == 1;
    if x_vec {
        xs.insert(0, Dim::Fixed(1));
    }
    if y_vec {
        ys.push(Dim::Fixed(1));
    }
    let (k1, k2) = (xs[xs.len() - 1], ys[ys.len() - 2]);
    if dims_differ(k1, k2) {
        return Err(InferError::shape(format!(
            "inner dims differ: x {} (transpose_x={tx}) vs y {} (transpose_y={ty}): {k1} != {k2}",
            fmt_shape(&x.shape),
            fmt_shape(&y.shape)
        )));
    }
    let mut shape = broadcast_shapes(&xs[..xs.len() - 2], &ys[..ys.len() - 2])
        .map_err(|e| InferError::shape(format!("batch dims: {e}")))?;
    if !x_vec {
        shape.push(xs[xs.len() - 2]);
    }
    if !y_vec {
        shape.push(ys[ys.len() - 1]);
    }
    Ok(vec![tensor(dtype, shape)])
}
