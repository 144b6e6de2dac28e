//! Miscellaneous tensor ops: `cast` (iOS17), `select`, `clip` (iOS17), `identity`, `fill` (iOS15).
//!
//! * `cast(x, dtype ∈ {int8, uint8, int16, uint16, int32, fp16, fp32, bool})`: float → int
//!   truncates toward zero then wraps (NumPy `astype`), int → int wraps, → bool is `!= 0`,
//!   float → fp16 rounds to nearest even.
//! * `select(cond, a, b)`: three-way NumPy broadcast, `cond ? a : b`; `a` and `b` share a dtype.
//! * `clip(x, alpha, beta)`: min(max(x, alpha), beta), computed in f32 for floats.
//! * `identity(x)`: x.
//! * `fill(shape, value = 0.0)`: a tensor of `shape` filled with `value`, dtype of the declared
//!   output (else of `value`).

use super::OpArgs;
use super::util::{broadcast_offsets, broadcast_shapes};
use crate::error::KernelError;
use crate::tensor::Shared;
use crate::tensor::{Tensor, TensorData};
use mil::DType;

/// Convert `x` to `dtype` with MIL `cast` semantics.
pub fn cast_to(x: &Tensor, dtype: DType) -> Result<Tensor, KernelError> {
    if x.dtype() == dtype {
        return Ok(x.clone());
    }
    let shape = x.shape().to_vec();
    match dtype {
        DType::F16 | DType::F32 => Tensor::float_from_f32(dtype, shape, x.to_f32()?.into_owned()),
        DType::Bool => Ok(Tensor::from_parts(
            shape,
            TensorData::Bool(Shared::new(x.to_bool()?.into_owned())),
        )),
        DType::I32 | DType::I16 | DType::U16 | DType::I8 | DType::U8 => {
            let v = if x.dtype().is_float() {
                x.to_f32()?
                    .iter()
                    .map(|&f| if f.is_nan() { 0 } else { f.trunc() as i64 })
                    .collect()
            } else {
                x.to_i64()?
            };
            Tensor::int_from_i64(dtype, shape, &v)
        }
        d => Err(KernelError::bad("dtype", format!("cannot cast to {d}"))),
    }
}

/// `cast`.
pub fn cast(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let name = a
        .string("dtype")?
        .ok_or_else(|| KernelError::MissingParam("dtype".into()))?;
    let dtype = match name {
        "int8" | "uint8" | "int16" | "uint16" | "int32" | "fp16" | "fp32" | "bool" => {
            DType::from_mil_name(name)
        }
        "float16" => Some(DType::F16),
        "float32" => Some(DType::F32),
        _ => None,
    }
    .ok_or_else(|| KernelError::bad("dtype", format!("unsupported cast target `{name}`")))?;
    Ok(vec![cast_to(x, dtype)?])
}

/// `select`.
pub fn select(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let c = a.req("cond")?;
    let x = a.req("a")?;
    let y = a.req("b")?;
    if x.dtype() != y.dtype() {
        return Err(KernelError::dtype(
            y.dtype(),
            format!("`b` must have the dtype of `a` ({})", x.dtype()),
        ));
    }
    let shape = broadcast_shapes(&[c.shape(), x.shape(), y.shape()])?;
    let cond = c.to_bool()?;
    let (oc, ox, oy) = (
        broadcast_offsets(c.shape(), &shape),
        broadcast_offsets(x.shape(), &shape),
        broadcast_offsets(y.shape(), &shape),
    );
    fn pick<T: crate::tensor::Element>(
        cond: &[bool],
        a: &[T],
        b: &[T],
        oc: &[usize],
        oa: &[usize],
        ob: &[usize],
    ) -> Shared<T> {
        Shared::new(
            (0..oc.len())
                .map(|i| {
                    if cond[oc[i]] {
                        a[oa[i]].clone()
                    } else {
                        b[ob[i]].clone()
                    }
                })
                .collect(),
        )
    }
    let data = match (x.data(), y.data()) {
        (TensorData::F16(p), TensorData::F16(q)) => {
            TensorData::F16(pick(&cond, p, q, &oc, &ox, &oy))
        }
        (TensorData::F32(p), TensorData::F32(q)) => {
            TensorData::F32(pick(&cond, p, q, &oc, &ox, &oy))
        }
        (TensorData::I32(p), TensorData::I32(q)) => {
            TensorData::I32(pick(&cond, p, q, &oc, &ox, &oy))
        }
        (TensorData::I16(p), TensorData::I16(q)) => {
            TensorData::I16(pick(&cond, p, q, &oc, &ox, &oy))
        }
        (TensorData::U16(p), TensorData::U16(q)) => {
            TensorData::U16(pick(&cond, p, q, &oc, &ox, &oy))
        }
        (TensorData::I8(p), TensorData::I8(q)) => TensorData::I8(pick(&cond, p, q, &oc, &ox, &oy)),
        (TensorData::U8(p), TensorData::U8(q)) => TensorData::U8(pick(&cond, p, q, &oc, &ox, &oy)),
        (TensorData::Bool(p), TensorData::Bool(q)) => {
            TensorData::Bool(pick(&cond, p, q, &oc, &ox, &oy))
        }
        _ => return Err(KernelError::dtype(x.dtype(), "select operand")),
    };
    Ok(vec![Tensor::from_parts(shape, data)])
}

/// `clip`.
pub fn clip(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let lo = a
        .float("alpha")?
        .ok_or_else(|| KernelError::MissingParam("alpha".into()))?;
    let hi = a
        .float("beta")?
        .ok_or_else(|| KernelError::MissingParam("beta".into()))?;
    if x.dtype().is_float() {
        let v: Vec<f32> = x.to_f32()?.iter().map(|&v| v.max(lo).min(hi)).collect();
        Ok(vec![Tensor::float_from_f32(
            a.float_out(0, x.dtype()),
            x.shape().to_vec(),
            v,
        )?])
    } else {
        let (lo, hi) = (lo.ceil() as i64, hi.floor() as i64);
        let v: Vec<i64> = x.to_i64()?.iter().map(|&v| v.max(lo).min(hi)).collect();
        Ok(vec![Tensor::int_from_i64(
            x.dtype(),
            x.shape().to_vec(),
            &v,
        )?])
    }
}

/// `identity`.
pub fn identity(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    Ok(vec![a.req("x")?.clone()])
}

/// `fill`.
pub fn fill(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let shape = a
        .ints("shape")?
        .ok_or_else(|| KernelError::MissingParam("shape".into()))?;
    let shape: Vec<usize> = shape
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| KernelError::bad("shape", format!("negative dimension {d}")))
        })
        .collect::<Result<_, _>>()?;
    let value = a.get("value")?;
    let vd = value.map_or(DType::F32, Tensor::dtype);
    let od = a.out_dtype(0).unwrap_or(vd);
    let v = a.float("value")?.unwrap_or(0.0);
    let scalar = Tensor::scalar_f32(v);
    let one = cast_to(&scalar, od)?;
    let n: usize = shape.iter().product();
    Ok(vec![super::util::take(&one, &vec![0; n], shape)])
}
