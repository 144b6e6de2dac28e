//! Element types of MIL tensors.
//!
//! MIL spells its dtypes `fp16`, `fp32`, `int32`, `uint4`, ... in text form; the protobuf `DataType`
//! enum and the `weight.bin` blob codes are separate numberings that live in `mlpackage`.
//! Sub-byte types (`int4`, `uint1/2/3/4/6`) are stored packed LSB-first (see [`crate::value`]).

use std::fmt;

/// A MIL element type.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    Bool,
    Str,
    F16,
    F32,
    F64,
    Bf16,
    F8E4M3Fn,
    F8E5M2,
    I4,
    I8,
    I16,
    I32,
    I64,
    U1,
    U2,
    U3,
    U4,
    U6,
    U8,
    U16,
    U32,
    U64,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 22] = [
        DType::Bool,
        DType::Str,
        DType::F16,
        DType::F32,
        DType::F64,
        DType::Bf16,
        DType::F8E4M3Fn,
        DType::F8E5M2,
        DType::I4,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U1,
        DType::U2,
        DType::U3,
        DType::U4,
        DType::U6,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
    ];

    /// Bits per element as stored (bool is one byte per element); `None` for strings.
    pub fn bits(self) -> Option<usize> {
        Some(match self {
            DType::Str => return None,
            DType::Bool | DType::I8 | DType::U8 | DType::F8E4M3Fn | DType::F8E5M2 => 8,
            DType::F16 | DType::Bf16 | DType::I16 | DType::U16 => 16,
            DType::F32 | DType::I32 | DType::U32 => 32,
            DType::F64 | DType::I64 | DType::U64 => 64,
            DType::I4 | DType::U4 => 4,
            DType::U1 => 1,
            DType::U2 => 2,
            DType::U3 => 3,
            DType::U6 => 6,
        })
    }

    /// True for types narrower than a byte (packed LSB-first).
    pub fn is_sub_byte(self) -> bool {
        matches!(self.bits(), Some(b) if b < 8)
    }

    /// True for floating-point types.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F16 | DType::F32 | DType::F64 | DType::Bf16 | DType::F8E4M3Fn | DType::F8E5M2
        )
    }

    /// True for signed or unsigned integer types (not bool).
    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::I4
                | DType::I8
                | DType::I16
                | DType::I32
                | DType::I64
                | DType::U1
                | DType::U2
                | DType::U3
                | DType::U4
                | DType::U6
                | DType::U8
                | DType::U16
                | DType::U32
                | DType::U64
        )
    }

    /// True for signed integer types.
    pub fn is_signed_int(self) -> bool {
        matches!(
            self,
            DType::I4 | DType::I8 | DType::I16 | DType::I32 | DType::I64
        )
    }

    /// Bytes needed to store `n` elements (packed for sub-byte types); `None` for strings.
    pub fn storage_bytes(self, n: usize) -> Option<usize> {
        let bits = self.bits()?;
        n.checked_mul(bits).map(|b| b.div_ceil(8))
    }

    /// The MIL text name (`fp16`, `int32`, `uint4`, `bool`, `string`, ...).
    pub fn mil_name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::Str => "string",
            DType::F16 => "fp16",
            DType::F32 => "fp32",
            DType::F64 => "fp64",
            DType::Bf16 => "bf16",
            DType::F8E4M3Fn => "fp8e4m3fn",
            DType::F8E5M2 => "fp8e5m2",
            DType::I4 => "int4",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U1 => "uint1",
            DType::U2 => "uint2",
            DType::U3 => "uint3",
            DType::U4 => "uint4",
            DType::U6 => "uint6",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
        }
    }

    /// Parse a MIL text name (inverse of [`DType::mil_name`]).
    pub fn from_mil_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.mil_name() == s)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mil_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_mil_name(d.mil_name()), Some(d));
        }
        assert_eq!(DType::from_mil_name("float"), None);
    }

    #[test]
    fn storage_sizes() {
        assert_eq!(DType::U4.storage_bytes(5), Some(3));
        assert_eq!(DType::U3.storage_bytes(7), Some(3));
        assert_eq!(DType::U6.storage_bytes(3), Some(3));
        assert_eq!(DType::F16.storage_bytes(3), Some(6));
        assert_eq!(DType::Str.storage_bytes(3), None);
    }
}
