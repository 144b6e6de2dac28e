//! Shared test helpers: run one op through `mil::infer_op` from a compact parameter description.
#![allow(dead_code)]

use half::f16;
use mil::infer::{Constant, ValueEnv, ValueInfo};
use mil::value::pack_bits;
use mil::{Binding, DType, InferError, Operation, TensorType, TensorValue, Value, ValueType};

/// One bound value of a parameter.
#[derive(Clone, Debug)]
pub enum P {
    /// A runtime function input of this type.
    In(TensorType),
    /// A constant (a `const` op, or an inline value for constexpr ops).
    Const(TensorValue),
    /// A state input wrapping this type.
    State(TensorType),
    /// A constexpr-op output of this type (constant but value unknown).
    Constexpr(TensorType),
}

/// Runtime input of `dtype[shape]`.
pub fn inp(dtype: DType, shape: &[usize]) -> P {
    P::In(TensorType::new(dtype, shape))
}

/// int32 vector constant.
pub fn ints(v: &[i32]) -> P {
    P::Const(TensorValue::from_i32(&[v.len()], v).unwrap())
}

/// int32 scalar constant.
pub fn int(v: i32) -> P {
    P::Const(TensorValue::scalar_i32(v))
}

/// bool scalar constant.
pub fn boolean(v: bool) -> P {
    P::Const(TensorValue::scalar_bool(v))
}

/// bool vector constant.
pub fn bools(v: &[bool]) -> P {
    P::Const(TensorValue::from_bool(&[v.len()], v).unwrap())
}

/// string scalar constant.
pub fn string(s: &str) -> P {
    P::Const(TensorValue::scalar_str(s))
}

/// fp16 scalar constant.
pub fn f16s(v: f32) -> P {
    P::Const(TensorValue::scalar_f16(f16::from_f32(v)))
}

/// fp32 scalar constant.
pub fn f32s(v: f32) -> P {
    P::Const(TensorValue::scalar_f32(v))
}

/// A constant of `dtype[shape]` filled with `fill` (any numeric dtype incl. sub-byte).
pub fn filled(dtype: DType, shape: &[usize], fill: f64) -> TensorValue {
    let n: usize = shape.iter().product();
    let ty = TensorType::new(dtype, shape);
    match dtype {
        DType::F16 => TensorValue::from_f16(shape, &vec![f16::from_f64(fill); n]).unwrap(),
        DType::F32 => TensorValue::from_f32(shape, &vec![fill as f32; n]).unwrap(),
        DType::I32 => TensorValue::from_i32(shape, &vec![fill as i32; n]).unwrap(),
        DType::Bool => TensorValue::from_bool(shape, &vec![fill != 0.0; n]).unwrap(),
        DType::I8 | DType::U8 => TensorValue::from_bytes(ty, vec![fill as i64 as u8; n]).unwrap(),
        DType::I16 | DType::U16 => {
            let b = (fill as i64 as u16).to_le_bytes();
            TensorValue::from_bytes(ty, b.repeat(n)).unwrap()
        }
        d if d.is_sub_byte() => {
            let bits = d.bits().unwrap();
            let mask = ((1u16 << bits) - 1) as u8;
            let v = vec![(fill as i64 as u8) & mask; n];
            TensorValue::from_bytes(ty, pack_bits(&v, bits)).unwrap()
        }
        d => panic!("filled: unsupported dtype {d}"),
    }
}

/// Infer `op_type` with the given parameters (constexpr ops get inline values, others const ops).
pub fn infer(op_type: &str, params: &[(&str, Vec<P>)]) -> Result<Vec<ValueType>, InferError> {
    let constexpr = mil::ops::lookup(op_type).is_some_and(|d| d.constexpr);
    let mut env = ValueEnv::new();
    let mut op = Operation::new(op_type, "op_under_test");
    for (pname, vals) in params {
        let mut bs = Vec::new();
        for (i, v) in vals.iter().enumerate() {
            let name = format!("{pname}_{i}");
            let (ty, constant) = match v {
                P::In(t) => (ValueType::Tensor(t.clone()), Constant::Runtime),
                P::State(t) => (ValueType::State(t.clone()), Constant::Runtime),
                P::Constexpr(t) => (ValueType::Tensor(t.clone()), Constant::Constexpr),
                P::Const(t) if constexpr => {
                    bs.push(Binding::Value(Value::Tensor(t.clone())));
                    continue;
                }
                P::Const(t) => (
                    ValueType::Tensor(t.ty().clone()),
                    Constant::Value(Value::Tensor(t.clone())),
                ),
            };
            env.insert(name.clone(), ValueInfo { ty, constant });
            bs.push(Binding::Name(name));
        }
        op.inputs.insert(pname.to_string(), bs);
    }
    mil::infer_op(&op, &env)
}

/// One tensor output type `dtype[shape]`.
pub fn t(dtype: DType, shape: &[usize]) -> Vec<ValueType> {
    vec![ValueType::Tensor(TensorType::new(dtype, shape))]
}
