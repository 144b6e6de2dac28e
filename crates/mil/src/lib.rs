//! `mil`: the Core ML MIL intermediate representation.
//!
//! * [`dtype`], [`types`], [`value`]: element types, value types, literal values (raw bytes).
//! * [`ir`]: Program → Function → Block → Operation, multi-function from the start.
//!
//! This crate has no knowledge of protobuf or files; `mlpackage` lowers it to and from the Core ML
//! protobuf and `weight.bin`.

pub mod dtype;
pub mod ir;
pub mod types;
pub mod value;

pub use dtype::DType;
pub use ir::{Binding, Block, Function, OPSET_IOS18, Operation, Program};
pub use types::{Dim, NamedValueType, TensorType, ValueType};
pub use value::{Buffer, TensorData, TensorValue, Value, ValueError};
