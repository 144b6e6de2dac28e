//! The runtime tensor: a dtype-tagged, shared, row-major element buffer plus a shape.
//!
//! Element types held natively: `fp16` (as [`half::f16`]), `fp32`, `int32`, `int16`, `uint16`,
//! `int8`, `uint8`, `bool`, and `string` (only for op parameters such as `pad_type`). Sub-byte and
//! other MIL dtypes are unpacked by the constexpr kernels before they reach a [`Tensor`].
//!
//! **fp16 emulation model — one rounding per op output.** fp16 tensors are stored as f16. A kernel
//! reads its fp16 operands exactly widened to f32, computes in f32 (matmul / conv / reductions /
//! norms accumulate in f32 too) and rounds its output once to f16 (round-to-nearest-even). This is
//! what an fp16 graph computes when every op is evaluated exactly and then stored; Core ML on the
//! ANE may round intermediate steps inside an op, so differences of a few fp16 ulps are expected.
//!
//! Data is reference counted: cloning a tensor (e.g. a weight bound into every run) is O(1), and a
//! weight keeps its storage dtype (a 262144×1536 fp16 LM head stays 768 MiB of f16). fp16 and fp32
//! literals are not copied at all: they stay in the memory-mapped `weight.bin` ([`Shared`]).

use crate::error::{KernelError, RuntimeError};
pub use crate::storage::{Element, Shared};
use half::f16;
use half::slice::HalfFloatSliceExt;
use mil::{DType, TensorType, TensorValue};
use std::borrow::Cow;

/// The element storage of a [`Tensor`].
#[derive(Clone, Debug)]
pub enum TensorData {
    /// `fp16`.
    F16(Shared<f16>),
    /// `fp32`.
    F32(Shared<f32>),
    /// `int32`.
    I32(Shared<i32>),
    /// `int16`.
    I16(Shared<i16>),
    /// `uint16`.
    U16(Shared<u16>),
    /// `int8`.
    I8(Shared<i8>),
    /// `uint8`.
    U8(Shared<u8>),
    /// `bool`.
    Bool(Shared<bool>),
    /// `string` (op parameters only).
    Str(Shared<String>),
}

impl TensorData {
    /// The MIL dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F16(_) => DType::F16,
            TensorData::F32(_) => DType::F32,
            TensorData::I32(_) => DType::I32,
            TensorData::I16(_) => DType::I16,
            TensorData::U16(_) => DType::U16,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::Bool(_) => DType::Bool,
            TensorData::Str(_) => DType::Str,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F16(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I16(v) => v.len(),
            TensorData::U16(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::Str(v) => v.len(),
        }
    }

    /// True if there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A runtime tensor: shape (row-major) and shared data.
#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// True if `d` is a dtype a [`Tensor`] can hold.
pub fn is_runtime_dtype(d: DType) -> bool {
    matches!(
        d,
        DType::F16
            | DType::F32
            | DType::I32
            | DType::I16
            | DType::U16
            | DType::I8
            | DType::U8
            | DType::Bool
            | DType::Str
    )
}

impl Tensor {
    /// Build from a shape and data, checking that the element count matches.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, RuntimeError> {
        if numel(&shape) != data.len() {
            return Err(RuntimeError::InvalidTensor(format!(
                "shape {shape:?} needs {} elements, data has {}",
                numel(&shape),
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    /// Internal constructor for kernels that computed `data` for `shape` (checked in debug).
    pub(crate) fn from_parts(shape: Vec<usize>, data: TensorData) -> Tensor {
        debug_assert_eq!(numel(&shape), data.len());
        Tensor { shape, data }
    }

    /// An fp16 tensor.
    pub fn from_f16(shape: &[usize], v: Vec<f16>) -> Result<Tensor, RuntimeError> {
        Tensor::new(shape.to_vec(), TensorData::F16(Shared::new(v)))
    }
    /// An fp32 tensor.
    pub fn from_f32(shape: &[usize], v: Vec<f32>) -> Result<Tensor, RuntimeError> {
        Tensor::new(shape.to_vec(), TensorData::F32(Shared::new(v)))
    }
    /// An int32 tensor.
    pub fn from_i32(shape: &[usize], v: Vec<i32>) -> Result<Tensor, RuntimeError> {
        Tensor::new(shape.to_vec(), TensorData::I32(Shared::new(v)))
    }
    /// A bool tensor.
    pub fn from_bool(shape: &[usize], v: Vec<bool>) -> Result<Tensor, RuntimeError> {
        Tensor::new(shape.to_vec(), TensorData::Bool(Shared::new(v)))
    }
    /// An fp16 tensor rounded from f32 values.
    pub fn f16_from_f32(shape: &[usize], v: &[f32]) -> Result<Tensor, RuntimeError> {
        Tensor::from_f16(shape, v.iter().map(|&x| f16::from_f32(x)).collect())
    }
    /// A rank-0 fp32 tensor.
    pub fn scalar_f32(x: f32) -> Tensor {
        Tensor::from_parts(Vec::new(), TensorData::F32(Shared::new(vec![x])))
    }
    /// A rank-0 int32 tensor.
    pub fn scalar_i32(x: i32) -> Tensor {
        Tensor::from_parts(Vec::new(), TensorData::I32(Shared::new(vec![x])))
    }

    /// A float tensor of dtype `dtype` (fp16 or fp32) from f32 values (rounded once for fp16).
    pub(crate) fn float_from_f32(
        dtype: DType,
        shape: Vec<usize>,
        v: Vec<f32>,
    ) -> Result<Tensor, KernelError> {
        match dtype {
            DType::F32 => Ok(Tensor::from_parts(shape, TensorData::F32(Shared::new(v)))),
            DType::F16 => {
                let mut out = vec![f16::ZERO; v.len()];
                out.convert_from_f32_slice(&v);
                Ok(Tensor::from_parts(shape, TensorData::F16(Shared::new(out))))
            }
            d => Err(KernelError::dtype(d, "expected a float output dtype")),
        }
    }

    /// A tensor of an integer or bool dtype from i64 values (wrapping like a C cast).
    pub(crate) fn int_from_i64(
        dtype: DType,
        shape: Vec<usize>,
        v: &[i64],
    ) -> Result<Tensor, KernelError> {
        let data = match dtype {
            DType::I32 => TensorData::I32(Shared::new(v.iter().map(|&x| x as i32).collect())),
            DType::I16 => TensorData::I16(Shared::new(v.iter().map(|&x| x as i16).collect())),
            DType::U16 => TensorData::U16(Shared::new(v.iter().map(|&x| x as u16).collect())),
            DType::I8 => TensorData::I8(Shared::new(v.iter().map(|&x| x as i8).collect())),
            DType::U8 => TensorData::U8(Shared::new(v.iter().map(|&x| x as u8).collect())),
            DType::Bool => TensorData::Bool(Shared::new(v.iter().map(|&x| x != 0).collect())),
            d => return Err(KernelError::dtype(d, "expected an integer output dtype")),
        };
        Ok(Tensor::from_parts(shape, data))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// True if the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// The element dtype.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }
    /// The data.
    pub fn data(&self) -> &TensorData {
        &self.data
    }
    /// The static tensor type.
    pub fn tensor_type(&self) -> TensorType {
        TensorType::new(self.dtype(), &self.shape)
    }
    /// The same data with another shape of equal element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor, KernelError> {
        if numel(&shape) != self.len() {
            return Err(KernelError::shape(format!(
                "cannot view {:?} ({} elements) as {shape:?}",
                self.shape,
                self.len()
            )));
        }
        Ok(Tensor {
            shape,
            data: self.data.clone(),
        })
    }

    /// fp16 elements, if this is an fp16 tensor.
    pub fn as_f16(&self) -> Option<&[f16]> {
        match &self.data {
            TensorData::F16(v) => Some(v),
            _ => None,
        }
    }
    /// fp32 elements, if this is an fp32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }
    /// int32 elements, if this is an int32 tensor.
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            _ => None,
        }
    }
    /// bool elements, if this is a bool tensor.
    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }
    /// Strings, if this is a string tensor.
    pub fn as_strings(&self) -> Option<&[String]> {
        match &self.data {
            TensorData::Str(v) => Some(v),
            _ => None,
        }
    }

    /// Every element as f32 (borrowed for fp32, exactly widened for fp16, converted otherwise).
    pub fn to_f32(&self) -> Result<Cow<'_, [f32]>, KernelError> {
        Ok(match &self.data {
            TensorData::F32(v) => Cow::Borrowed(v.as_slice()),
            TensorData::F16(v) => {
                let mut out = vec![0f32; v.len()];
                v.convert_to_f32_slice(&mut out);
                Cow::Owned(out)
            }
            TensorData::I32(v) => Cow::Owned(v.iter().map(|&x| x as f32).collect()),
            TensorData::I16(v) => Cow::Owned(v.iter().map(|&x| f32::from(x)).collect()),
            TensorData::U16(v) => Cow::Owned(v.iter().map(|&x| f32::from(x)).collect()),
            TensorData::I8(v) => Cow::Owned(v.iter().map(|&x| f32::from(x)).collect()),
            TensorData::U8(v) => Cow::Owned(v.iter().map(|&x| f32::from(x)).collect()),
            TensorData::Bool(v) => Cow::Owned(v.iter().map(|&x| f32::from(u8::from(x))).collect()),
            TensorData::Str(_) => return Err(KernelError::dtype(DType::Str, "numeric value")),
        })
    }

    /// Every element as i64 (integer and bool dtypes; floats truncated toward zero).
    pub fn to_i64(&self) -> Result<Vec<i64>, KernelError> {
        Ok(match &self.data {
            TensorData::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            TensorData::I16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            TensorData::U16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            TensorData::I8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            TensorData::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| i64::from(x)).collect(),
            TensorData::F16(_) | TensorData::F32(_) => {
                self.to_f32()?.iter().map(|&x| x as i64).collect()
            }
            TensorData::Str(_) => return Err(KernelError::dtype(DType::Str, "integer value")),
        })
    }

    /// Elements truthiness (bool as is, numbers `!= 0`).
    pub fn to_bool(&self) -> Result<Cow<'_, [bool]>, KernelError> {
        Ok(match &self.data {
            TensorData::Bool(v) => Cow::Borrowed(v.as_slice()),
            TensorData::F16(_) | TensorData::F32(_) => {
                Cow::Owned(self.to_f32()?.iter().map(|&x| x != 0.0).collect())
            }
            _ => Cow::Owned(self.to_i64()?.iter().map(|&x| x != 0).collect()),
        })
    }

    /// Convert from a MIL literal. Sub-byte and other storage-only dtypes are rejected.
    pub fn from_value(v: &TensorValue) -> Result<Tensor, RuntimeError> {
        let shape = v.shape();
        let n = v.num_elements();
        if v.dtype() == DType::Str {
            let s = v.strings().unwrap_or(&[]).to_vec();
            return Tensor::new(shape, TensorData::Str(Shared::new(s)));
        }
        let b = v.bytes().map(|b| b.as_bytes()).unwrap_or(&[]);
        let bad = || {
            RuntimeError::InvalidTensor(format!("literal of type {} has {} bytes", v.ty(), b.len()))
        };
        let need = v.dtype().storage_bytes(n).ok_or_else(bad)?;
        if b.len() != need {
            return Err(bad());
        }
        // fp16 / fp32 weights stay in the (memory-mapped) buffer the package reader gave us
        if let Some(buf) = v.bytes() {
            let mapped = match v.dtype() {
                DType::F16 => Shared::mapped(buf).map(TensorData::F16),
                DType::F32 => Shared::mapped(buf).map(TensorData::F32),
                _ => None,
            };
            if let Some(data) = mapped {
                return Tensor::new(shape, data);
            }
        }
        let data = match v.dtype() {
            DType::F16 => TensorData::F16(Shared::new(
                b.chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )),
            DType::F32 => TensorData::F32(Shared::new(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )),
            DType::I32 => TensorData::I32(Shared::new(
                b.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )),
            DType::I16 => TensorData::I16(Shared::new(
                b.chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )),
            DType::U16 => TensorData::U16(Shared::new(
                b.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )),
            DType::I8 => TensorData::I8(Shared::new(b.iter().map(|&x| x as i8).collect())),
            DType::U8 => TensorData::U8(Shared::new(b.to_vec())),
            DType::Bool => TensorData::Bool(Shared::new(b.iter().map(|&x| x != 0).collect())),
            DType::F64 | DType::Bf16 => {
                let f = v
                    .to_f32_vec()
                    .map_err(|e| RuntimeError::InvalidTensor(e.to_string()))?;
                TensorData::F32(Shared::new(f))
            }
            DType::I64 | DType::U32 | DType::U64 => {
                let i = v
                    .to_i64_vec()
                    .map_err(|e| RuntimeError::InvalidTensor(e.to_string()))?;
                let mut out = Vec::with_capacity(i.len());
                for x in i {
                    out.push(i32::try_from(x).map_err(|_| {
                        RuntimeError::InvalidTensor(format!(
                            "{} literal value {x} does not fit in int32",
                            v.dtype()
                        ))
                    })?);
                }
                TensorData::I32(Shared::new(out))
            }
            d => {
                return Err(RuntimeError::InvalidTensor(format!(
                    "dtype {d} cannot be held by a runtime tensor (only constexpr ops read it)"
                )));
            }
        };
        Tensor::new(shape, data)
    }

    /// Convert to a MIL literal (raw little-endian bytes).
    pub fn to_value(&self) -> Result<TensorValue, RuntimeError> {
        let err = |e: mil::ValueError| RuntimeError::Value {
            name: "<runtime tensor>".into(),
            source: e,
        };
        let ty = self.tensor_type();
        let bytes: Vec<u8> = match &self.data {
            TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
            TensorData::U8(v) => v.to_vec(),
            TensorData::Bool(v) => v.iter().map(|&x| u8::from(x)).collect(),
            TensorData::Str(v) => {
                return TensorValue::from_strings(&self.shape, v.to_vec()).map_err(err);
            }
        };
        TensorValue::from_bytes(ty, bytes).map_err(err)
    }

    /// True if both tensors have the same dtype, shape and bit-identical elements.
    pub fn bit_eq(&self, other: &Tensor) -> bool {
        if self.shape != other.shape {
            return false;
        }
        match (&self.data, &other.data) {
            (TensorData::F16(a), TensorData::F16(b)) => a
                .iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            (TensorData::F32(a), TensorData::F32(b)) => a
                .iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            (TensorData::I32(a), TensorData::I32(b)) => a == b,
            (TensorData::I16(a), TensorData::I16(b)) => a == b,
            (TensorData::U16(a), TensorData::U16(b)) => a == b,
            (TensorData::I8(a), TensorData::I8(b)) => a == b,
            (TensorData::U8(a), TensorData::U8(b)) => a == b,
            (TensorData::Bool(a), TensorData::Bool(b)) => a == b,
            (TensorData::Str(a), TensorData::Str(b)) => a == b,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_round_trip() {
        let v = TensorValue::from_f16(
            &[2, 2],
            &[f16::from_f32(1.5), f16::ONE, f16::ZERO, f16::NEG_ONE],
        )
        .unwrap();
        let t = Tensor::from_value(&v).unwrap();
        assert_eq!(t.shape(), &[2, 2]);
        assert_eq!(t.dtype(), DType::F16);
        assert_eq!(t.to_f32().unwrap().as_ref(), &[1.5, 1.0, 0.0, -1.0]);
        assert_eq!(t.to_value().unwrap(), v);
    }

    #[test]
    fn sub_byte_literals_are_rejected() {
        let v = TensorValue::from_bytes(TensorType::new(DType::U4, &[2]), vec![0x21]).unwrap();
        assert!(matches!(
            Tensor::from_value(&v),
            Err(RuntimeError::InvalidTensor(_))
        ));
    }

    #[test]
    fn element_count_is_checked() {
        assert!(Tensor::from_f32(&[2, 3], vec![0.0; 5]).is_err());
    }

    #[test]
    fn fp16_rounding_is_nearest_even() {
        // 1 + 2^-11 is exactly halfway between 1 and the next fp16 (1 + 2^-10): ties to even → 1.
        let t = Tensor::float_from_f32(
            DType::F16,
            vec![2],
            vec![1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11)],
        )
        .unwrap();
        assert_eq!(
            t.to_f32().unwrap().as_ref(),
            &[1.0, 1.0 + 2.0 * 2f32.powi(-10)]
        );
    }
}
