//! Error types shared by type inference, the builder and the validator.
//!
//! * [`InferError`]: what is wrong with one op's parameters (no op name: the caller adds it).
//! * [`MilError`]: a builder error; names the op type and op name, e.g.
//!   `conv "layer0_q_proj": weight in-channels 64 != input channels 128`.
//!
//! The validator has its own [`crate::validate::ValidationError`] that also names the function.

use crate::{DType, ValueError, ValueType};

/// A type problem found while checking or inferring one operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferError {
    /// The op type is not in the catalog.
    #[error("unknown op type `{0}` (not in the MIL op catalog)")]
    UnknownOp(String),
    /// A required parameter is not bound.
    #[error("missing required parameter `{0}`")]
    MissingParam(String),
    /// A parameter that the op does not define.
    #[error("unknown parameter `{0}`")]
    UnknownParam(String),
    /// A non-variadic parameter bound to zero or several values.
    #[error("parameter `{param}` takes exactly one value, got {count}")]
    Arity { param: String, count: usize },
    /// A name binding that refers to nothing defined before the op.
    #[error("parameter `{param}` refers to undefined value `{name}`")]
    Undefined { param: String, name: String },
    /// A parameter that must be a compile-time constant is bound to a runtime value.
    #[error(
        "parameter `{param}` must be a compile-time constant (const op, constexpr output or inline \
         value), but `{name}` is computed at runtime"
    )]
    NotConst { param: String, name: String },
    /// A constant parameter whose value is needed for type inference but is not known (e.g. bound
    /// to a constexpr output).
    #[error("the value of parameter `{0}` must be known at build time")]
    ValueUnknown(String),
    /// An inline literal binding on an op that takes only name bindings.
    #[error("parameter `{0}` is bound to an inline value; only constexpr ops take inline values")]
    InlineValue(String),
    /// The parameter has the wrong kind of type (tensor vs state vs list).
    #[error("parameter `{param}` must be a {expected}, got {found}")]
    Kind {
        param: String,
        expected: &'static str,
        found: ValueType,
    },
    /// The parameter's dtype is outside the op's type domain.
    #[error("parameter `{param}` has dtype {found}, allowed: {allowed}")]
    DType {
        param: String,
        found: DType,
        allowed: String,
    },
    /// Two parameters must share a dtype but do not.
    #[error("parameters `{a}` ({a_dtype}) and `{b}` ({b_dtype}) must have the same dtype")]
    DTypeMismatch {
        a: String,
        a_dtype: DType,
        b: String,
        b_dtype: DType,
    },
    /// The parameter's rank is not allowed.
    #[error("parameter `{param}` has rank {found}, expected {expected}")]
    Rank {
        param: String,
        found: usize,
        expected: String,
    },
    /// A shape relation between parameters does not hold.
    #[error("{0}")]
    Shape(String),
    /// A constant parameter has a value the op does not accept.
    #[error("parameter `{param}`: {msg}")]
    BadValue { param: String, msg: String },
    /// Structural problem with the operation itself (attributes, blocks, outputs).
    #[error("{0}")]
    Structure(String),
}

impl InferError {
    /// Shorthand for [`InferError::Shape`].
    pub fn shape(msg: impl Into<String>) -> InferError {
        InferError::Shape(msg.into())
    }

    /// Shorthand for [`InferError::BadValue`].
    pub fn bad_value(param: &str, msg: impl Into<String>) -> InferError {
        InferError::BadValue {
            param: param.to_string(),
            msg: msg.into(),
        }
    }

    /// Shorthand for [`InferError::Rank`].
    pub fn rank(param: &str, found: usize, expected: impl Into<String>) -> InferError {
        InferError::Rank {
            param: param.to_string(),
            found,
            expected: expected.into(),
        }
    }
}

/// An error raised by the [`crate::builder`].
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum MilError {
    /// An op whose parameters do not type-check.
    #[error("{op} \"{name}\": {source}")]
    Op {
        op: String,
        name: String,
        source: Box<InferError>,
    },
    /// An op argument the builder cannot turn into a parameter (e.g. `0.5` for an int32 operand).
    #[error("{op} \"{name}\": {msg}")]
    Argument {
        op: String,
        name: String,
        msg: String,
    },
    /// A literal that could not be built.
    #[error("{op} \"{name}\": {source}")]
    Value {
        op: String,
        name: String,
        source: ValueError,
    },
    /// A var that is not (or no longer) defined in this function.
    #[error(
        "function `{function}`: value `{name}` is not defined here (built by another function?)"
    )]
    UnknownVar { function: String, name: String },
    /// A name that must be new is already taken in the function.
    #[error("function `{function}`: name `{name}` is already used")]
    DuplicateName { function: String, name: String },
    /// A name outside `[A-Za-z_][A-Za-z0-9_]*` where an exact name is required.
    #[error("function `{function}`: `{name}` is not a valid MIL name ([A-Za-z_][A-Za-z0-9_]*)")]
    InvalidName { function: String, name: String },
    /// A function without outputs.
    #[error("function `{0}` has no outputs")]
    NoOutputs(String),
    /// Two functions with the same name in one program.
    #[error("program already has a function named `{0}`")]
    DuplicateFunction(String),
    /// The built program failed validation.
    #[error(transparent)]
    Validation(#[from] Box<crate::validate::ValidationError>),
}
