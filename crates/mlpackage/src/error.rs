//! Typed errors. [`PackageError`] is what the public API returns; it always names the file involved
//! and, for program errors, the location (function / op / parameter) as a path string.

use mil::{DType, TensorType};
use std::path::PathBuf;

/// Errors of the `weight.bin` layer (wrapped with the file name by [`PackageError`]).
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file cannot hold the 64-byte storage header.
    #[error("file is {len} bytes, shorter than the 64-byte storage header")]
    TooShort { len: u64 },
    /// The storage header version is not 2.
    #[error("storage format version {found}, expected 2")]
    Version { found: u32 },
    /// A blob metadata record does not fit in the file (truncated file or bad count).
    #[error("blob record #{index} at offset {offset} lies outside the file ({len} bytes)")]
    RecordOutOfBounds { index: u32, offset: u64, len: u64 },
    /// The record sentinel is not 0xDEADBEEF.
    #[error("bad sentinel {found:#010x} in blob record at offset {offset}")]
    Sentinel { offset: u64, found: u32 },
    /// The record's dtype code is not a known blob dtype.
    #[error("unknown blob dtype code {code} in record at offset {offset}")]
    UnknownDtypeCode { offset: u64, code: u32 },
    /// The payload does not start at a 64-aligned position after its record.
    #[error(
        "record at offset {offset}: data offset {data_offset} is not a 64-aligned position after the record"
    )]
    DataOffset { offset: u64, data_offset: u64 },
    /// The payload runs past the end of the file.
    #[error(
        "record at offset {offset}: payload of {size} bytes at {data_offset} exceeds the file ({len} bytes)"
    )]
    PayloadOutOfBounds {
        offset: u64,
        data_offset: u64,
        size: u64,
        len: u64,
    },
    /// `padding_size_in_bits` is inconsistent with the dtype / payload size.
    #[error(
        "record at offset {offset}: {padding_bits} padding bits are invalid for a {dtype} payload of {size} bytes"
    )]
    Padding {
        offset: u64,
        dtype: DType,
        size: u64,
        padding_bits: u64,
    },
    /// A `BlobFileValue.offset` does not point at a record of the file.
    #[error("offset {offset} is not the start of a blob record")]
    NotARecord { offset: u64 },
    /// The record's dtype differs from the dtype the program declares.
    #[error("blob at offset {offset} holds {found} data, the program declares {expected}")]
    DtypeMismatch {
        offset: u64,
        expected: DType,
        found: DType,
    },
    /// The record's size differs from what the declared tensor type needs.
    #[error(
        "blob at offset {offset} holds {found} bytes ({padding_bits} padding bits), {ty} needs {expected} bytes"
    )]
    SizeMismatch {
        offset: u64,
        ty: TensorType,
        expected: u64,
        found: u64,
        padding_bits: u64,
    },
    /// The dtype has no blob encoding (bool, string, fp64, int64, uint64).
    #[error("{dtype} tensors cannot be stored in weight.bin")]
    NoBlobEncoding { dtype: DType },
    /// The tensor type has no static element count.
    #[error("tensor type {ty} has no static element count")]
    DynamicShape { ty: TensorType },
    /// A size or offset computation overflowed.
    #[error("blob size or offset overflows")]
    Overflow,
    /// No weight file is available but the program references a blob.
    #[error(
        "the program references blob offset {offset} but the package has no weights/weight.bin"
    )]
    NoWeightFile { offset: u64 },
    /// I/O while writing.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Errors converting between the MIL IR and the MIL protobuf (either direction).
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// A MIL `DataType` number that is unknown (or `UNUSED_TYPE`).
    #[error("unknown MIL data type {code}")]
    UnknownDataType { code: i32 },
    /// A required message or field is absent.
    #[error("missing {what}")]
    Missing { what: &'static str },
    /// `TensorType.rank` disagrees with the number of dimensions.
    #[error("tensor rank {rank} does not match its {dims} dimensions")]
    Rank { rank: i64, dims: usize },
    /// An immediate tensor uses the wrong `TensorValue` field for its dtype.
    #[error("immediate {dtype} tensor stored as `{found}`, coremltools uses `{expected}`")]
    WrongField {
        dtype: DType,
        found: &'static str,
        expected: &'static str,
    },
    /// An immediate tensor holds the wrong number of elements (or bytes).
    #[error("immediate value of type {ty} holds {found} {unit}, expected {expected}")]
    Count {
        ty: TensorType,
        unit: &'static str,
        expected: usize,
        found: usize,
    },
    /// An int16/uint16 value stored in `ints` is out of range.
    #[error("value {value} out of range for {dtype}")]
    OutOfRange { dtype: DType, value: i64 },
    /// A value's payload disagrees with its declared type.
    #[error("value payload does not match its declared type {declared}")]
    TypeMismatch { declared: String },
    /// A literal needs a static shape.
    #[error("literal of type {ty} has a non-static shape")]
    DynamicLiteral { ty: TensorType },
    /// A string is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    Utf8,
    /// A construct the IR does not represent (so it cannot be round-tripped faithfully).
    #[error("unsupported: {what}")]
    Unsupported { what: String },
    /// The blob file name is not `@model_path/weights/weight.bin`.
    #[error("blob file {name:?} is not supported (only {expected:?})")]
    BlobFile {
        name: String,
        expected: &'static str,
    },
    /// Reading or writing a blob failed.
    #[error("weights/weight.bin: {0}")]
    Blob(#[from] WeightsError),
    /// Building an IR literal failed.
    #[error(transparent)]
    Value(#[from] mil::ValueError),
}

/// Errors in `Manifest.json`.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON.
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A required key is absent or has the wrong JSON type.
    #[error("`{key}` must be {expected}")]
    Field { key: String, expected: &'static str },
    /// `fileFormatVersion` is not `major.minor.patch`.
    #[error("fileFormatVersion {0:?} is not major.minor.patch")]
    VersionSyntax(String),
    /// `fileFormatVersion` is newer than 1.0.0.
    #[error("fileFormatVersion {0} is newer than the supported 1.0.0")]
    VersionTooNew(String),
    /// An item path is absolute, empty or escapes `Data/`.
    #[error("item {id}: path {path:?} must be a relative path inside Data/")]
    BadPath { id: String, path: String },
    /// `rootModelIdentifier` is not one of the items.
    #[error("rootModelIdentifier {0:?} is not an item identifier")]
    RootNotFound(String),
    /// An item's path does not exist in the package.
    #[error("item {id}: Data/{path} does not exist")]
    ItemMissing { id: String, path: String },
}

/// Errors deriving, decoding or checking a model description.
#[derive(Debug, thiserror::Error)]
pub enum DescriptionError {
    /// The program has no function of that name.
    #[error("function `{0}` does not exist in the program")]
    NoFunction(String),
    /// A multi-function program needs a default function.
    #[error("multi-function program needs a default function (no `main`; pass one)")]
    NoDefault,
    /// A value named as input/output is not declared.
    #[error("function `{function}`: output `{name}` is not defined")]
    UndefinedOutput { function: String, name: String },
    /// An input needs a static shape for the description.
    #[error("function `{function}`: input `{name}` has a non-static shape {ty}")]
    DynamicInput {
        function: String,
        name: String,
        ty: TensorType,
    },
    /// An I/O dtype Core ML cannot pass (ML programs use fp32, fp16, int32, int8).
    #[error("function `{function}`: `{name}` has dtype {dtype}, not a Core ML I/O dtype")]
    IoDtype {
        function: String,
        name: String,
        dtype: DType,
    },
    /// A state whose dtype Core ML cannot hold (Core ML states are fp16 only; fp32 states are
    /// allowed only by [`crate::StateDtypes::AllowFp32`]).
    #[error(
        "function `{function}`: state `{name}` has dtype {dtype}; Core ML states are fp16 only"
    )]
    StateDtype {
        function: String,
        name: String,
        dtype: DType,
    },
    /// An I/O value that is not a tensor (or a state of a tensor).
    #[error("function `{function}`: `{name}` is not a tensor")]
    NotATensor { function: String, name: String },
    /// An `ArrayDataType` number that is unknown.
    #[error("feature `{name}`: unknown array data type {code}")]
    ArrayDataType { name: String, code: i32 },
    /// A feature has no type.
    #[error("feature `{name}` has no type")]
    NoType { name: String },
    /// The description disagrees with the program.
    #[error("function `{function}`: {what}")]
    Mismatch { function: String, what: String },
}

/// The error type of package reading and writing.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// File system error.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The destination exists and overwriting was not requested.
    #[error("{}: already exists (set WriteOptions::overwrite to replace it)", path.display())]
    DestinationExists { path: PathBuf },
    /// `Manifest.json` is missing or invalid.
    #[error("{}: invalid manifest: {source}", path.display())]
    Manifest {
        path: PathBuf,
        source: ManifestError,
    },
    /// `model.mlmodel` is not a `CoreML.Specification.Model` protobuf.
    #[error("{}: not a Core ML model protobuf: {source}", path.display())]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    /// The model is not an ML Program (or uses a model feature this crate does not support).
    #[error("{}: {what}", path.display())]
    NotMlProgram { path: PathBuf, what: String },
    /// The specification version has no MIL opset (ML programs need 6..=10).
    #[error("{}: specificationVersion {found} is not an ML Program version (6..=10)", path.display())]
    SpecVersion { path: PathBuf, found: i32 },
    /// Converting the MIL program failed; `location` names function / op / parameter.
    #[error("{}: {location}: {source}", path.display())]
    Program {
        path: PathBuf,
        location: String,
        source: ProgramError,
    },
    /// `weight.bin` is invalid.
    #[error("{}: {source}", path.display())]
    Weights { path: PathBuf, source: WeightsError },
    /// The model description is invalid or disagrees with the program.
    #[error("{}: model description: {source}", path.display())]
    Description {
        path: PathBuf,
        source: DescriptionError,
    },
}

impl PackageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> PackageError {
        PackageError::Io {
            path: path.into(),
            source,
        }
    }
}
