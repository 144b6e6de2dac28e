//! MIL text in the dialects Core ML's compiler writes to a compiled bundle's `model.mil`, and a
//! parser that reads it back into the IR.
//!
//! Two dialects, chosen by the model's specification version (coremltools' own tests compile the
//! same program for iOS 16/17 and iOS 18 and assert each form; see `docs/MLMODELC.md`):
//!
//! * [`Dialect::Ios18`] (specification 9, `program(1.3)`): scalars are bare dtypes
//!   (`int32 x = const()[name = string("x"), val = int32(1)];`), blob references
//!   `BLOBFILE(path = string("…"), offset = uint64(64))`.
//! * [`Dialect::Legacy`] (specification ≤ 8, `program(1.0)`): scalars are rank-0 tensors
//!   (`tensor<int32, []>`, `name = tensor<string, []>("x")`), blob references
//!   `BLOBFILE(path = tensor<string, []>("…"), offset = tensor<uint64, []>(64))`.
//!
//! The layout of the whole file (indentation, attribute order, which attributes the compiler adds)
//! belongs to the writer (`mlpackage::compiled`); this module formats and parses the pieces:
//! types and literals ([`fmt_type`], [`fmt_literal`], [`fmt_blobfile`]), C99 hex floats
//! ([`hexfloat`]), and whole programs ([`parse_program`]).

pub mod hexfloat;
mod parse;
mod print;

pub use parse::{BlobResolver, ParsedProgram, opset_name, parse_literal, parse_program};
pub use print::{
    fmt_blobfile, fmt_literal, fmt_literal_as, fmt_tensor_type, fmt_type, fmt_untyped, quote,
};

/// Which text form: see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `program(1.0)`, scalars as `tensor<T, []>` (specification versions up to 8).
    Legacy,
    /// `program(1.3)`, scalars as bare dtypes (specification version 9, iOS 18).
    Ios18,
}

impl Dialect {
    /// The dialect of a specification version, `None` for versions no compiled sample pins
    /// (only 7 and 9 are).
    pub fn for_spec_version(spec: i32) -> Option<Dialect> {
        match spec {
            7 => Some(Dialect::Legacy),
            9 => Some(Dialect::Ios18),
            _ => None,
        }
    }

    /// The version in the `program(…)` header.
    pub fn program_version(self) -> &'static str {
        match self {
            Dialect::Legacy => "1.0",
            Dialect::Ios18 => "1.3",
        }
    }

    /// The `ios16`-style spelling of an opset (`CoreML8` → `ios18`); other strings verbatim.
    pub fn opset_text(opset: &str) -> &str {
        crate::printer::opset_alias(opset)
    }
}

/// Errors formatting or parsing MIL text.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TextError {
    /// Malformed text.
    #[error("line {line}, column {col}: {message}")]
    Parse {
        line: usize,
        col: usize,
        message: String,
    },
    /// A `BLOBFILE` reference the resolver could not satisfy.
    #[error("BLOBFILE {path} at offset {offset}: {message}")]
    Blob {
        path: String,
        offset: u64,
        message: String,
    },
    /// Something the text form does not cover (fp8 literals, nested blocks, …).
    #[error("not supported in MIL text: {0}")]
    Unsupported(String),
    /// A literal that does not fit its type.
    #[error(transparent)]
    Value(#[from] crate::ValueError),
}
