//! Literal values: tensors (raw little-endian bytes), tuples, lists and dictionaries.
//!
//! Storage convention for [`TensorValue`] (identical to the `weight.bin` payload and to the proto's
//! `bytes` encoding, so readers and writers copy bytes verbatim):
//! * numeric dtypes: row-major, little-endian element bytes;
//! * sub-byte dtypes (`int4`, `uint1/2/3/4/6`): a packed LSB-first bit stream — element `i` occupies
//!   bits `[i·b, (i+1)·b)` counting from bit 0 of byte 0 (elements may straddle bytes); the unused
//!   high bits of the last byte are zero;
//! * `bool`: one byte per element (0 or 1);
//! * `string`: a list of UTF-8 strings.
//!
//! Large tensors share their bytes through [`Buffer`] (cheap clones, possibly backed by an mmap).

use crate::{DType, Dim, TensorType, ValueType};
use half::f16;
use std::fmt;
use std::sync::Arc;

/// Shared, immutable bytes (a `Vec`, or any owner such as a memory map).
#[derive(Clone)]
pub struct Buffer(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl Buffer {
    /// Wrap owned bytes.
    pub fn from_vec(v: Vec<u8>) -> Buffer {
        Buffer(Arc::new(v))
    }

    /// Wrap any shared owner of bytes (e.g. a memory map).
    pub fn from_owner(owner: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Buffer {
        Buffer(owner)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        (*self.0).as_ref()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// True if both buffers are the same allocation (a cheap identity test, not content equality).
    pub fn ptr_eq(&self, other: &Buffer) -> bool {
        std::ptr::eq(self.as_bytes().as_ptr(), other.as_bytes().as_ptr())
            && self.len() == other.len()
    }
}

impl PartialEq for Buffer {
    fn eq(&self, other: &Self) -> bool {
        self.ptr_eq(other) || self.as_bytes() == other.as_bytes()
    }
}
impl Eq for Buffer {}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer({} bytes)", self.len())
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(v: Vec<u8>) -> Self {
        Buffer::from_vec(v)
    }
}

/// Errors building or reading literal values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("tensor of type {ty} needs a static shape")]
    DynamicShape { ty: TensorType },
    #[error("tensor of type {ty} needs {expected} bytes of data, got {found}")]
    ByteLength {
        ty: TensorType,
        expected: usize,
        found: usize,
    },
    #[error("tensor of type {ty} needs {expected} strings, got {found}")]
    StringCount {
        ty: TensorType,
        expected: usize,
        found: usize,
    },
    #[error("dtype {dtype} cannot be read as {wanted}")]
    Unsupported { dtype: DType, wanted: &'static str },
    #[error("shape {shape:?} has {expected} elements but {found} values were given")]
    ElementCount {
        shape: Vec<usize>,
        expected: usize,
        found: usize,
    },
}

/// The payload of a tensor literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorData {
    /// Raw bytes in the storage convention of this module.
    Bytes(Buffer),
    /// UTF-8 strings (dtype `string`).
    Strings(Vec<String>),
}

/// A tensor literal: a static tensor type and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorValue {
    ty: TensorType,
    data: TensorData,
}

fn count(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl TensorValue {
    /// Build from a type and raw bytes, checking the byte length against the type.
    pub fn from_bytes(ty: TensorType, bytes: impl Into<Buffer>) -> Result<TensorValue, ValueError> {
        let bytes = bytes.into();
        let n = ty
            .num_elements()
            .ok_or_else(|| ValueError::DynamicShape { ty: ty.clone() })?;
        let expected = ty.dtype.storage_bytes(n).ok_or(ValueError::Unsupported {
            dtype: ty.dtype,
            wanted: "bytes",
        })?;
        if bytes.len() != expected {
            return Err(ValueError::ByteLength {
                ty,
                expected,
                found: bytes.len(),
            });
        }
        Ok(TensorValue {
            ty,
            data: TensorData::Bytes(bytes),
        })
    }

    /// Build a string tensor.
    pub fn from_strings(shape: &[usize], s: Vec<String>) -> Result<TensorValue, ValueError> {
        let ty = TensorType::new(DType::Str, shape);
        if s.len() != count(shape) {
            return Err(ValueError::StringCount {
                ty,
                expected: count(shape),
                found: s.len(),
            });
        }
        Ok(TensorValue {
            ty,
            data: TensorData::Strings(s),
        })
    }

    fn from_le<T: Copy, const N: usize>(
        dtype: DType,
        shape: &[usize],
        v: &[T],
        to_le: impl Fn(T) -> [u8; N],
    ) -> Result<TensorValue, ValueError> {
        if v.len() != count(shape) {
            return Err(ValueError::ElementCount {
                shape: shape.to_vec(),
                expected: count(shape),
                found: v.len(),
            });
        }
        let mut bytes = Vec::with_capacity(v.len() * N);
        for &x in v {
            bytes.extend_from_slice(&to_le(x));
        }
        TensorValue::from_bytes(TensorType::new(dtype, shape), bytes)
    }

    /// An fp16 tensor.
    pub fn from_f16(shape: &[usize], v: &[f16]) -> Result<TensorValue, ValueError> {
        Self::from_le(DType::F16, shape, v, |x| x.to_le_bytes())
    }
    /// An fp32 tensor.
    pub fn from_f32(shape: &[usize], v: &[f32]) -> Result<TensorValue, ValueError> {
        Self::from_le(DType::F32, shape, v, |x| x.to_le_bytes())
    }
    /// An int32 tensor.
    pub fn from_i32(shape: &[usize], v: &[i32]) -> Result<TensorValue, ValueError> {
        Self::from_le(DType::I32, shape, v, |x| x.to_le_bytes())
    }
    /// An int8 tensor.
    pub fn from_i8(shape: &[usize], v: &[i8]) -> Result<TensorValue, ValueError> {
        Self::from_le(DType::I8, shape, v, |x| x.to_le_bytes())
    }
    /// A uint8 tensor.
    pub fn from_u8(shape: &[usize], v: &[u8]) -> Result<TensorValue, ValueError> {
        Self::from_le(DType::U8, shape, v, |x| [x])
    }
    /// A bool tensor (one byte per element).
    pub fn from_bool(shape: &[usize], v: &[bool]) -> Result<TensorValue, ValueError> {
        Self::from_le(DType::Bool, shape, v, |x| [u8::from(x)])
    }

    /// Rank-0 fp32 / fp16 / int32 / bool / string scalars.
    pub fn scalar_f32(x: f32) -> TensorValue {
        Self::known(TensorType::scalar(DType::F32), x.to_le_bytes().to_vec())
    }
    /// Rank-0 fp16 scalar.
    pub fn scalar_f16(x: f16) -> TensorValue {
        Self::known(TensorType::scalar(DType::F16), x.to_le_bytes().to_vec())
    }
    /// Rank-0 int32 scalar.
    pub fn scalar_i32(x: i32) -> TensorValue {
        Self::known(TensorType::scalar(DType::I32), x.to_le_bytes().to_vec())
    }
    /// Rank-0 bool scalar.
    pub fn scalar_bool(x: bool) -> TensorValue {
        Self::known(TensorType::scalar(DType::Bool), vec![u8::from(x)])
    }
    /// Rank-0 string scalar.
    pub fn scalar_str(s: impl Into<String>) -> TensorValue {
        TensorValue {
            ty: TensorType::scalar(DType::Str),
            data: TensorData::Strings(vec![s.into()]),
        }
    }

    fn known(ty: TensorType, bytes: Vec<u8>) -> TensorValue {
        TensorValue {
            ty,
            data: TensorData::Bytes(Buffer::from_vec(bytes)),
        }
    }

    /// The tensor type (always static).
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }
    /// The element dtype.
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }
    /// The static shape.
    pub fn shape(&self) -> Vec<usize> {
        self.ty.static_shape().unwrap_or_default()
    }
    /// Number of elements.
    pub fn num_elements(&self) -> usize {
        self.ty.num_elements().unwrap_or(0)
    }
    /// The payload.
    pub fn data(&self) -> &TensorData {
        &self.data
    }
    /// Raw bytes (`None` for string tensors).
    pub fn bytes(&self) -> Option<&Buffer> {
        match &self.data {
            TensorData::Bytes(b) => Some(b),
            TensorData::Strings(_) => None,
        }
    }
    /// Strings (`None` for non-string tensors).
    pub fn strings(&self) -> Option<&[String]> {
        match &self.data {
            TensorData::Strings(s) => Some(s),
            TensorData::Bytes(_) => None,
        }
    }

    /// Unpacked unsigned sub-byte or 8-bit values (uint1/2/3/4/6/8), one per element.
    pub fn unpack_unsigned(&self) -> Result<Vec<u8>, ValueError> {
        let bits = match self.dtype() {
            DType::U1 => 1,
            DType::U2 => 2,
            DType::U3 => 3,
            DType::U4 => 4,
            DType::U6 => 6,
            DType::U8 | DType::Bool => 8,
            d => {
                return Err(ValueError::Unsupported {
                    dtype: d,
                    wanted: "unsigned sub-byte",
                });
            }
        };
        let bytes = self.bytes().map(Buffer::as_bytes).unwrap_or(&[]);
        Ok(unpack_bits(bytes, bits, self.num_elements()))
    }

    /// Every element converted to f32 (floats exactly widened, integers and bools converted).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, ValueError> {
        let b = match &self.data {
            TensorData::Bytes(b) => b.as_bytes(),
            TensorData::Strings(_) => {
                return Err(ValueError::Unsupported {
                    dtype: DType::Str,
                    wanted: "f32",
                });
            }
        };
        let n = self.num_elements();
        Ok(match self.dtype() {
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::Bf16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            DType::I4 => unpack_bits(b, 4, n)
                .into_iter()
                .map(|u| ((u << 4) as i8 >> 4) as f32)
                .collect(),
            DType::I8 => b.iter().map(|&x| x as i8 as f32).collect(),
            DType::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            DType::U16 => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            DType::U32 => b
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            DType::U64 => b
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            DType::U1 | DType::U2 | DType::U3 | DType::U4 | DType::U6 | DType::U8 | DType::Bool => {
                self.unpack_unsigned()?.into_iter().map(f32::from).collect()
            }
            d @ (DType::Str | DType::F8E4M3Fn | DType::F8E5M2) => {
                return Err(ValueError::Unsupported {
                    dtype: d,
                    wanted: "f32",
                });
            }
        })
    }

    /// Every element as i64 (integer and bool dtypes only).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, ValueError> {
        let d = self.dtype();
        if !(d.is_int() || d == DType::Bool) {
            return Err(ValueError::Unsupported {
                dtype: d,
                wanted: "i64",
            });
        }
        let b = self.bytes().map(Buffer::as_bytes).unwrap_or(&[]);
        Ok(match d {
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            DType::U64 => b
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i64)
                .collect(),
            // every other integer type is exactly representable in f32 except (u)int32 extremes
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            DType::U32 => b
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            _ => self.to_f32_vec()?.into_iter().map(|x| x as i64).collect(),
        })
    }

    /// The single element of a one-element tensor as f32.
    pub fn scalar_as_f32(&self) -> Option<f32> {
        match self.to_f32_vec() {
            Ok(v) if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    }
}

/// Unpack `n` values of `bits` bits from an LSB-first bit stream.
pub fn unpack_bits(bytes: &[u8], bits: usize, n: usize) -> Vec<u8> {
    if bits == 8 {
        return bytes.iter().take(n).copied().collect();
    }
    let mask = (1u16 << bits) - 1;
    (0..n)
        .map(|i| {
            let bit = i * bits;
            let (byte, shift) = (bit / 8, bit % 8);
            let lo = u16::from(bytes.get(byte).copied().unwrap_or(0));
            let hi = u16::from(bytes.get(byte + 1).copied().unwrap_or(0));
            (((lo | (hi << 8)) >> shift) & mask) as u8
        })
        .collect()
}

/// Pack values of `bits` bits (each `< 2^bits`, higher bits ignored) into an LSB-first bit stream.
pub fn pack_bits(values: &[u8], bits: usize) -> Vec<u8> {
    if bits == 8 {
        return values.to_vec();
    }
    let mut out = vec![0u8; (values.len() * bits).div_ceil(8)];
    let mask = ((1u16 << bits) - 1) as u8;
    for (i, &v) in values.iter().enumerate() {
        let bit = i * bits;
        let (byte, shift) = (bit / 8, bit % 8);
        let w = u16::from(v & mask) << shift;
        out[byte] |= (w & 0xff) as u8;
        if w >> 8 != 0 {
            out[byte + 1] |= (w >> 8) as u8;
        }
    }
    out
}

/// A MIL literal value (`MILSpec.Value`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Tensor(TensorValue),
    Tuple(Vec<Value>),
    /// A list with its element type.
    List {
        elem: ValueType,
        values: Vec<Value>,
    },
    /// A dictionary with its key and value types, entries in stored order.
    Dict {
        key: ValueType,
        value: ValueType,
        entries: Vec<(Value, Value)>,
    },
}

impl Value {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Tensor(t) => ValueType::Tensor(t.ty().clone()),
            Value::Tuple(vs) => ValueType::Tuple(vs.iter().map(Value::value_type).collect()),
            Value::List { elem, values } => ValueType::List {
                elem: Box::new(elem.clone()),
                length: Some(Dim::Fixed(values.len() as u64)),
            },
            Value::Dict { key, value, .. } => ValueType::Dict {
                key: Box::new(key.clone()),
                value: Box::new(value.clone()),
            },
        }
    }

    /// The tensor, if this is a tensor value.
    pub fn as_tensor(&self) -> Option<&TensorValue> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }
}

impl From<TensorValue> for Value {
    fn from(t: TensorValue) -> Self {
        Value::Tensor(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_matches_coremltools_vectors() {
        assert_eq!(pack_bits(&[1, 2, 3, 4, 5], 4), vec![0x21, 0x43, 0x05]);
        assert_eq!(pack_bits(&[1, 2, 3, 4, 5, 6, 7], 3), vec![0xd1, 0x58, 0x1f]);
        assert_eq!(pack_bits(&[1, 63, 2], 6), vec![0xc1, 0x2f, 0x00]);
        assert_eq!(pack_bits(&[1, 0, 1, 1, 0, 0, 0, 0, 1], 1), vec![0x0d, 0x01]);
        for (v, b) in [
            (vec![1u8, 2, 3, 4, 5], 4),
            (vec![1, 2, 3, 4, 5, 6, 7], 3),
            (vec![1, 63, 2], 6),
        ] {
            assert_eq!(unpack_bits(&pack_bits(&v, b), b, v.len()), v);
        }
    }

    #[test]
    fn int4_reads_signed() {
        let ty = TensorType::new(DType::I4, &[4]);
        let t = TensorValue::from_bytes(ty, vec![0x2f, 0x78]).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![-1.0, 2.0, -8.0, 7.0]);
    }

    #[test]
    fn byte_length_is_checked() {
        let ty = TensorType::new(DType::F16, &[3]);
        assert!(matches!(
            TensorValue::from_bytes(ty, vec![0u8; 5]),
            Err(ValueError::ByteLength {
                expected: 6,
                found: 5,
                ..
            })
        ));
    }
}
