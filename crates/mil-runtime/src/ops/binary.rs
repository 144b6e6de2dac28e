//! Elementwise binary ops with NumPy broadcasting (iOS15 definitions).
//!
//! * arithmetic: `add`, `sub`, `mul`, `real_div`, `pow`, `maximum`, `minimum`, `floor_div`, `mod`
//!   — inputs `x`, `y` (fp16/fp32/int32). Float operands are computed in f32 and rounded once to
//!   the output dtype (the declared one, else fp32 if either operand is fp32, else fp16). Integer
//!   operands are computed in i64 and wrapped to the output dtype; `real_div` on integers
//!   truncates toward zero, `floor_div` floors, `mod` has the sign of `y` (Python semantics);
//!   integer division by zero is an error.
//! * comparisons: `equal`, `not_equal`, `greater`, `greater_equal`, `less`, `less_equal` → bool.
//! * logical: `logical_and`, `logical_or`, `logical_xor` on bool inputs → bool.
//!
//! Not covered: mixed float/int operands other than by promotion to f32 (MIL forbids them anyway).

use super::util::map2;
use super::{KernelFn, OpArgs};
use crate::error::KernelError;
use crate::tensor::Shared;
use crate::tensor::{Tensor, TensorData};
use mil::DType;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    FloorDiv,
    Mod,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    And,
    Or,
    Xor,
}

impl Op {
    fn is_compare(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le)
    }
    fn is_logical(self) -> bool {
        matches!(self, Op::And | Op::Or | Op::Xor)
    }
}

macro_rules! kernels {
    ($($f:ident => $op:ident),* $(,)?) => {
        $(fn $f(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> { run(a, Op::$op) })*
    };
}
kernels!(add => Add, sub => Sub, mul => Mul, real_div => Div, pow => Pow, maximum => Max,
    minimum => Min, floor_div => FloorDiv, modulo => Mod, equal => Eq, not_equal => Ne,
    greater => Gt, greater_equal => Ge, less => Lt, less_equal => Le, logical_and => And,
    logical_or => Or, logical_xor => Xor);

/// The kernel of a binary op type.
pub fn kernel(op_type: &str) -> Option<KernelFn> {
    Some(match op_type {
        "add" => add,
        "sub" => sub,
        "mul" => mul,
        "real_div" => real_div,
        "pow" => pow,
        "maximum" => maximum,
        "minimum" => minimum,
        "floor_div" => floor_div,
        "mod" => modulo,
        "equal" => equal,
        "not_equal" => not_equal,
        "greater" => greater,
        "greater_equal" => greater_equal,
        "less" => less,
        "less_equal" => less_equal,
        "logical_and" => logical_and,
        "logical_or" => logical_or,
        "logical_xor" => logical_xor,
        _ => return None,
    })
}

fn float_op(op: Op, x: f32, y: f32) -> f32 {
    match op {
        Op::Add => x + y,
        Op::Sub => x - y,
        Op::Mul => x * y,
        Op::Div => x / y,
        Op::Pow => x.powf(y),
        Op::Max => x.max(y),
        Op::Min => x.min(y),
        Op::FloorDiv => (x / y).floor(),
        Op::Mod => x - (x / y).floor() * y,
        _ => f32::NAN,
    }
}

fn cmp_f(op: Op, x: f32, y: f32) -> bool {
    match op {
        Op::Eq => x == y,
        Op::Ne => x != y,
        Op::Gt => x > y,
        Op::Ge => x >= y,
        Op::Lt => x < y,
        _ => x <= y,
    }
}

fn cmp_i(op: Op, x: i64, y: i64) -> bool {
    match op {
        Op::Eq => x == y,
        Op::Ne => x != y,
        Op::Gt => x > y,
        Op::Ge => x >= y,
        Op::Lt => x < y,
        _ => x <= y,
    }
}

fn int_op(op: Op, x: i64, y: i64) -> Option<i64> {
    Some(match op {
        Op::Add => x.wrapping_add(y),
        Op::Sub => x.wrapping_sub(y),
        Op::Mul => x.wrapping_mul(y),
        Op::Div => x.checked_div(y)?,
        Op::Pow => {
            if y < 0 {
                // integer x^-n: 1 for |x| = 1 (sign by parity), else 0 (NumPy raises; we truncate)
                match x {
                    1 => 1,
                    -1 => {
                        if y % 2 == 0 {
                            1
                        } else {
                            -1
                        }
                    }
                    _ => 0,
                }
            } else {
                x.wrapping_pow(u32::try_from(y).unwrap_or(u32::MAX))
            }
        }
        Op::Max => x.max(y),
        Op::Min => x.min(y),
        Op::FloorDiv => {
            let (q, r) = (x.checked_div(y)?, x.checked_rem(y)?);
            if r != 0 && ((r < 0) != (y < 0)) {
                q - 1
            } else {
                q
            }
        }
        Op::Mod => {
            let r = x.checked_rem(y)?;
            if r != 0 && ((r < 0) != (y < 0)) {
                r + y
            } else {
                r
            }
        }
        _ => return None,
    })
}

fn run(a: &OpArgs<'_>, op: Op) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let y = a.req("y")?;
    let (dx, dy) = (x.dtype(), y.dtype());
    if op.is_logical() {
        let (xb, yb) = (x.to_bool()?, y.to_bool()?);
        let (v, shape) = map2(&xb, x.shape(), &yb, y.shape(), |p, q| match op {
            Op::And => p && q,
            Op::Or => p || q,
            _ => p ^ q,
        })?;
        return Ok(vec![Tensor::from_parts(
            shape,
            TensorData::Bool(Shared::new(v)),
        )]);
    }
    let float = dx.is_float() || dy.is_float();
    if op.is_compare() {
        let (v, shape) = if float {
            let (xf, yf) = (x.to_f32()?, y.to_f32()?);
            map2(&xf, x.shape(), &yf, y.shape(), |p, q| cmp_f(op, p, q))?
        } else {
            let (xi, yi) = (x.to_i64()?, y.to_i64()?);
            map2(&xi, x.shape(), &yi, y.shape(), |p, q| cmp_i(op, p, q))?
        };
        return Ok(vec![Tensor::from_parts(
            shape,
            TensorData::Bool(Shared::new(v)),
        )]);
    }
    if float {
        let fallback = if dx == DType::F32 || dy == DType::F32 {
            DType::F32
        } else {
            DType::F16
        };
        let od = a.float_out(0, fallback);
        let (v, shape) = match (x.data(), y.data()) {
            // fast paths without materialising a converted copy of a scalar operand
            (TensorData::F32(xv), TensorData::F32(yv)) => {
                map2(xv, x.shape(), yv, y.shape(), |p, q| float_op(op, p, q))?
            }
            _ => {
                let (xf, yf) = (x.to_f32()?, y.to_f32()?);
                map2(&xf, x.shape(), &yf, y.shape(), |p, q| float_op(op, p, q))?
            }
        };
        return Ok(vec![Tensor::float_from_f32(od, shape, v)?]);
    }
    if dx == DType::Str || dy == DType::Str {
        return Err(KernelError::dtype(DType::Str, "arithmetic operand"));
    }
    let (xi, yi) = (x.to_i64()?, y.to_i64()?);
    let (v, shape) = map2(&xi, x.shape(), &yi, y.shape(), |p, q| int_op(op, p, q))?;
    let v: Option<Vec<i64>> = v.into_iter().collect();
    let v = v.ok_or_else(|| KernelError::shape("integer division by zero"))?;
    let od = match a.out_dtype(0) {
        Some(d) if d.is_int() || d == DType::Bool => d,
        _ => dx,
    };
    Ok(vec![Tensor::int_from_i64(od, shape, &v)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_semantics() {
        assert_eq!(int_op(Op::Div, -7, 2), Some(-3));
        assert_eq!(int_op(Op::FloorDiv, -7, 2), Some(-4));
        assert_eq!(int_op(Op::FloorDiv, 7, -2), Some(-4));
        assert_eq!(int_op(Op::FloorDiv, 7, 2), Some(3));
        assert_eq!(int_op(Op::Mod, -7, 3), Some(2));
        assert_eq!(int_op(Op::Mod, 7, -3), Some(-2));
        assert_eq!(int_op(Op::Div, 1, 0), None);
        assert_eq!(int_op(Op::Pow, 3, 3), Some(27));
    }

    #[test]
    fn float_semantics() {
        assert_eq!(float_op(Op::Mod, -7.0, 3.0), 2.0);
        assert_eq!(float_op(Op::FloorDiv, -7.0, 2.0), -4.0);
        assert_eq!(float_op(Op::Pow, 2.0, 0.5), 2f32.sqrt());
    }
}
