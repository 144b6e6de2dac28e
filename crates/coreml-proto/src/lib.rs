//! `coreml-proto`: prost types for the Core ML model specification.
//!
//! * Source: `proto/*.proto`, regenerated from coremltools 9.0's compiled descriptors by
//!   `scripts/gen_proto.py` (Apple, BSD-3-Clause, see `proto/LICENSE`). `build.rs` compiles them
//!   with `protox` + `prost-build` (no system `protoc`).
//! * Root message: [`specification::Model`]; an ML Program lives in `Model.Type.mlProgram`
//!   (field 502) as [`mil_spec::Program`].
//! * Proto maps are `BTreeMap`s (`btree_map(["."])`), so encoding is deterministic: the same message
//!   always serialises to the same bytes.
//! * Constants for the iOS 18 target: [`SPEC_VERSION_IOS18`], [`OPSET_IOS18`], and the
//!   `ArrayFeatureType.ArrayDataType` numbers used by model descriptions.

#![allow(clippy::all, missing_docs, rustdoc::all)]

mod generated {
    include!(concat!(env!("OUT_DIR"), "/coreml_includes.rs"));
}

/// Package `CoreML.Specification` (Model, ModelDescription, FeatureTypes, ...).
pub use generated::core_ml::specification;
/// Package `CoreML.Specification.MILSpec` (Program, Function, Block, Operation, Value, ...).
pub use generated::core_ml::specification::mil_spec;

/// `Model.specificationVersion` for iOS 18 / macOS 15 / tvOS 18 / watchOS 11.
pub const SPEC_VERSION_IOS18: i32 = 9;
/// MIL opset name for [`SPEC_VERSION_IOS18`] (the `Function.opset` / block specialisation key).
pub const OPSET_IOS18: &str = "CoreML8";

/// The MIL opset string for a specification version (6 → `CoreML5` ... 10 → `CoreML9`).
pub fn opset_for_spec_version(spec_version: i32) -> Option<&'static str> {
    Some(match spec_version {
        6 => "CoreML5",
        7 => "CoreML6",
        8 => "CoreML7",
        9 => "CoreML8",
        10 => "CoreML9",
        _ => return None,
    })
}

/// `ArrayFeatureType.ArrayDataType` numbers (the I/O dtypes of model descriptions).
pub mod array_data_type {
    /// INVALID_ARRAY_DATA_TYPE.
    pub const INVALID: i32 = 0;
    /// FLOAT32 = 0x10000 | 32.
    pub const FLOAT32: i32 = 65568;
    /// DOUBLE = 0x10000 | 64.
    pub const DOUBLE: i32 = 65600;
    /// FLOAT16 = 0x10000 | 16.
    pub const FLOAT16: i32 = 65552;
    /// INT32 = 0x20000 | 32.
    pub const INT32: i32 = 131104;
    /// INT8 = 0x20000 | 8.
    pub const INT8: i32 = 131080;
}

#[cfg(test)]
mod tests {
    use super::*;
    use specification::array_feature_type::ArrayDataType;

    #[test]
    fn array_data_type_constants_match_generated_enum() {
        assert_eq!(ArrayDataType::Float32 as i32, array_data_type::FLOAT32);
        assert_eq!(ArrayDataType::Double as i32, array_data_type::DOUBLE);
        assert_eq!(ArrayDataType::Float16 as i32, array_data_type::FLOAT16);
        assert_eq!(ArrayDataType::Int32 as i32, array_data_type::INT32);
        assert_eq!(ArrayDataType::Int8 as i32, array_data_type::INT8);
        assert_eq!(
            ArrayDataType::InvalidArrayDataType as i32,
            array_data_type::INVALID
        );
    }

    #[test]
    fn opsets() {
        assert_eq!(
            opset_for_spec_version(SPEC_VERSION_IOS18),
            Some(OPSET_IOS18)
        );
        assert_eq!(opset_for_spec_version(5), None);
    }
}
