//! The three numberings of element types in a package, and their mapping to [`mil::DType`].
//!
//! | dtype | MIL `DataType` (proto) | blob code (`weight.bin`) | `ArrayDataType` (description) |
//! |---|---|---|---|
//! | bool | 1 | – | – |
//! | string | 2 | – | – |
//! | fp16 / fp32 / fp64 / bf16 | 10 / 11 / 12 / 13 | 1 / 2 / – / 5 | 65552 / 65568 / 65600 / – |
//! | fp8e4m3fn / fp8e5m2 | 40 / 41 | 16 / 17 | – |
//! | int4 / int8 / int16 / int32 / int64 | 25 / 21 / 22 / 23 / 24 | 8 / 4 / 6 / 14 / – | – / 131080 / – / 131104 / – |
//! | uint1 / uint2 / uint3 / uint4 / uint6 | 37 / 36 / 39 / 35 / 38 | 9 / 10 / 12 / 11 / 13 | – |
//! | uint8 / uint16 / uint32 / uint64 | 31 / 32 / 33 / 34 | 3 / 7 / 15 / – | – |
//!
//! Source: coremltools 9.0 (`MIL.proto`, `MILBlob/Blob/BlobDataType.hpp`, `FeatureTypes.proto`).

use coreml_proto::array_data_type as adt;
use mil::DType;

/// (dtype, MIL `DataType` number, blob code or 0 if the dtype has no blob encoding).
const TABLE: [(DType, i32, u32); 22] = [
    (DType::Bool, 1, 0),
    (DType::Str, 2, 0),
    (DType::F16, 10, 1),
    (DType::F32, 11, 2),
    (DType::F64, 12, 0),
    (DType::Bf16, 13, 5),
    (DType::F8E4M3Fn, 40, 16),
    (DType::F8E5M2, 41, 17),
    (DType::I4, 25, 8),
    (DType::I8, 21, 4),
    (DType::I16, 22, 6),
    (DType::I32, 23, 14),
    (DType::I64, 24, 0),
    (DType::U1, 37, 9),
    (DType::U2, 36, 10),
    (DType::U3, 39, 12),
    (DType::U4, 35, 11),
    (DType::U6, 38, 13),
    (DType::U8, 31, 3),
    (DType::U16, 32, 7),
    (DType::U32, 33, 15),
    (DType::U64, 34, 0),
];

/// The MIL proto `DataType` number of a dtype.
pub fn mil_data_type(d: DType) -> i32 {
    TABLE.iter().find(|e| e.0 == d).map_or(0, |e| e.1)
}

/// The dtype of a MIL proto `DataType` number (`None` for `UNUSED_TYPE` and unknown numbers).
pub fn dtype_from_mil(code: i32) -> Option<DType> {
    TABLE.iter().find(|e| e.1 == code).map(|e| e.0)
}

/// The `weight.bin` blob dtype code of a dtype (`None` if it cannot be stored as a blob).
pub fn blob_code(d: DType) -> Option<u32> {
    TABLE.iter().find(|e| e.0 == d && e.2 != 0).map(|e| e.2)
}

/// The dtype of a `weight.bin` blob dtype code.
pub fn dtype_from_blob_code(code: u32) -> Option<DType> {
    if code == 0 {
        return None;
    }
    TABLE.iter().find(|e| e.2 == code).map(|e| e.0)
}

/// The `ArrayFeatureType.ArrayDataType` number of an I/O dtype (fp32, fp16, fp64, int32, int8).
pub fn array_data_type(d: DType) -> Option<i32> {
    Some(match d {
        DType::F32 => adt::FLOAT32,
        DType::F16 => adt::FLOAT16,
        DType::F64 => adt::DOUBLE,
        DType::I32 => adt::INT32,
        DType::I8 => adt::INT8,
        _ => return None,
    })
}

/// The dtype of an `ArrayFeatureType.ArrayDataType` number.
pub fn dtype_from_array(code: i32) -> Option<DType> {
    Some(match code {
        adt::FLOAT32 => DType::F32,
        adt::FLOAT16 => DType::F16,
        adt::DOUBLE => DType::F64,
        adt::INT32 => DType::I32,
        adt::INT8 => DType::I8,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use coreml_proto::mil_spec::DataType;

    #[test]
    fn mil_codes_match_generated_enum() {
        for d in DType::ALL {
            let code = mil_data_type(d);
            assert!(DataType::try_from(code).is_ok(), "{d} -> {code}");
            assert_eq!(dtype_from_mil(code), Some(d));
        }
        assert_eq!(mil_data_type(DType::F16), DataType::Float16 as i32);
        assert_eq!(mil_data_type(DType::U4), DataType::Uint4 as i32);
        assert_eq!(dtype_from_mil(0), None);
        assert_eq!(dtype_from_mil(99), None);
    }

    #[test]
    fn blob_codes_round_trip_and_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for d in DType::ALL {
            if let Some(c) = blob_code(d) {
                assert!(seen.insert(c));
                assert_eq!(dtype_from_blob_code(c), Some(d));
            }
        }
        assert_eq!(seen.len(), 17);
        assert_eq!(blob_code(DType::F16), Some(1));
        assert_eq!(blob_code(DType::U4), Some(11));
        assert_eq!(blob_code(DType::I32), Some(14));
        assert_eq!(blob_code(DType::Bool), None);
        assert_eq!(dtype_from_blob_code(0), None);
        assert_eq!(dtype_from_blob_code(18), None);
    }

    #[test]
    fn array_codes() {
        for d in [DType::F32, DType::F16, DType::F64, DType::I32, DType::I8] {
            assert_eq!(dtype_from_array(array_data_type(d).unwrap()), Some(d));
        }
        assert_eq!(array_data_type(DType::U8), None);
        assert_eq!(dtype_from_array(0), None);
    }
}
