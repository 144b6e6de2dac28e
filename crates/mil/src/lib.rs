//! `mil`: the Core ML MIL intermediate representation.
//!
//! * [`dtype`], [`types`], [`value`]: element types, value types, literal values (raw bytes).
//! * [`ir`]: Program → Function → Block → Operation, multi-function from the start.
//! * [`ops`]: the closed op catalog (iOS18 resolution): parameter specs and output type inference,
//!   one module per op family.
//! * [`infer`]: the single entry point for typing one op ([`infer_op`]).
//! * [`builder`]: the typed builder used by the exporter ([`ProgramBuilder`], [`FunctionBuilder`]).
//! * [`validate()`]: SSA, catalog, params, const-ness and declared-vs-inferred type checks.
//! * [`passes`]: small named program passes in ordered pipelines ([`Pipeline`]).
//! * [`printer`]: deterministic MIL text in coremltools' `program(1.3)` style (debugging, snapshots).
//! * [`text`]: the compiled `model.mil` dialects: type / literal formatting and the parser.
//!
//! This crate has no knowledge of protobuf or files; `mlpackage` lowers it to and from the Core ML
//! protobuf and `weight.bin`.

pub mod builder;
mod digest;
pub mod dtype;
pub mod error;
pub mod infer;
pub mod ir;
pub mod ops;
pub mod passes;
pub mod printer;
pub mod text;
pub mod types;
pub mod validate;
pub mod value;

pub use builder::{FunctionBuilder, Operand, ProgramBuilder, StateVar, Var};
pub use dtype::DType;
pub use error::{InferError, MilError};
pub use infer::{Constant, ValueEnv, infer_op};
pub use ir::{Binding, Block, Function, OPSET_IOS18, Operation, Program};
pub use passes::{Pass, PassError, Pipeline};
pub use printer::{print_function, print_program};
pub use types::{Dim, NamedValueType, TensorType, ValueType};
pub use validate::{ValidationError, ValidationErrorKind, validate};
pub use value::{Buffer, TensorData, TensorValue, Value, ValueError};
