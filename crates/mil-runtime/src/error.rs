//! Typed errors of the runtime.
//!
//! * [`KernelError`]: what a kernel reports about its own parameters and operands (no op context);
//! * [`RuntimeError`]: what the interpreter and backends return; op failures wrap a
//!   [`KernelError`] with the function, op type and op name.

use mil::DType;

/// An error raised inside one kernel (the interpreter adds the op's identity).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum KernelError {
    /// A required parameter is absent.
    #[error("missing required parameter `{0}`")]
    MissingParam(String),
    /// A parameter has the wrong kind, dtype, rank or value.
    #[error("parameter `{param}`: {reason}")]
    BadParam { param: String, reason: String },
    /// Operand shapes are inconsistent.
    #[error("shape error: {0}")]
    Shape(String),
    /// An operand dtype the kernel does not handle.
    #[error("dtype {dtype} is not supported here: {context}")]
    Dtype { dtype: DType, context: String },
    /// A legal MIL feature this runtime does not implement.
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// An index operand is out of range.
    #[error("index {index} out of range for a dimension of size {size} ({context})")]
    IndexOutOfRange {
        index: i64,
        size: usize,
        context: String,
    },
}

impl KernelError {
    /// Shorthand for [`KernelError::BadParam`].
    pub fn bad(param: &str, reason: impl Into<String>) -> KernelError {
        KernelError::BadParam {
            param: param.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`KernelError::Shape`].
    pub fn shape(msg: impl Into<String>) -> KernelError {
        KernelError::Shape(msg.into())
    }

    /// Shorthand for [`KernelError::Dtype`].
    pub fn dtype(dtype: DType, context: impl Into<String>) -> KernelError {
        KernelError::Dtype {
            dtype,
            context: context.into(),
        }
    }
}

/// An error of the interpreter or of a backend.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An op type this runtime has no kernel for.
    #[error("function `{function}`: op `{op_name}` has unsupported type `{op_type}`")]
    UnsupportedOp {
        function: String,
        op_type: String,
        op_name: String,
    },
    /// A kernel failed (at load for const/constexpr ops, or while running).
    #[error("function `{function}`: op `{op_name}` ({op_type}): {source}")]
    Op {
        function: String,
        op_type: String,
        op_name: String,
        #[source]
        source: Box<KernelError>,
    },
    /// An op refers to a name that is not defined before it.
    #[error("function `{function}`: op `{op_name}` refers to undefined value `{name}`")]
    UndefinedValue {
        function: String,
        op_name: String,
        name: String,
    },
    /// A value name is defined twice in one function.
    #[error("function `{function}`: value `{name}` is defined more than once")]
    DuplicateValue { function: String, name: String },
    /// A block output names no value.
    #[error("function `{function}`: output `{name}` is not defined")]
    UndefinedOutput { function: String, name: String },
    /// A function input or state of a type the runtime cannot hold.
    #[error("function `{function}`: input `{name}` has unsupported type {ty}")]
    UnsupportedInputType {
        function: String,
        name: String,
        ty: String,
    },
    /// The requested function does not exist.
    #[error("no function `{name}` (available: {available:?})")]
    UnknownFunction {
        name: String,
        available: Vec<String>,
    },
    /// A required input was not supplied.
    #[error("function `{function}`: missing input `{name}`")]
    MissingInput { function: String, name: String },
    /// An input was supplied that the function does not declare.
    #[error("function `{function}`: unexpected input `{name}`")]
    UnexpectedInput { function: String, name: String },
    /// An input has the wrong shape.
    #[error("function `{function}`: input `{name}` has shape {found:?}, expected {expected}")]
    InputShape {
        function: String,
        name: String,
        expected: String,
        found: Vec<usize>,
    },
    /// An input has the wrong dtype.
    #[error("function `{function}`: input `{name}` has dtype {found}, expected {expected}")]
    InputDtype {
        function: String,
        name: String,
        expected: DType,
        found: DType,
    },
    /// An op produced a value whose shape or dtype differs from the declared output type.
    #[error("function `{function}`: op `{op_name}` output `{output}`: {detail}")]
    OutputMismatch {
        function: String,
        op_name: String,
        output: String,
        /// "computed <type>, declared <type> (<op type>)".
        detail: String,
    },
    /// A requested tap names no value of the function.
    #[error("function `{function}`: no value named `{name}` to tap")]
    UnknownTap { function: String, name: String },
    /// A literal could not be read.
    #[error("tensor `{name}`: {source}")]
    Value {
        name: String,
        #[source]
        source: mil::ValueError,
    },
    /// A tensor built by the caller is inconsistent (data length vs shape, ...).
    #[error("invalid tensor: {0}")]
    InvalidTensor(String),
    /// Loading a model from disk failed.
    #[error("loading `{path}`: {source}")]
    Load {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A model state does not fit a function's declared states (names, dtypes, shapes), or a
    /// state value was not returned.
    #[error("function `{function}`: state mismatch: {detail}")]
    StateSchema { function: String, detail: String },
    /// A backend-specific failure (e.g. Core ML reported an error).
    #[error("backend {backend}: {message}")]
    Backend { backend: String, message: String },
}
