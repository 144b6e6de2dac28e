//! The program structure: Program → Function → Block → Operation (mirrors `MILSpec`).
//!
//! Values are referred to by name (SSA: every name is defined once per function, by a function input,
//! a block input or an op output). Op parameters are bound either to a name or to an inline literal
//! (the latter only for iOS18 `constexpr_*` ops, as coremltools does); literal parameters of ordinary
//! ops are separate `const` ops whose literal lives in the `val` attribute.
//!
//! Architecture invariant: maps are `BTreeMap` so iteration order (and therefore serialised bytes) is
//! deterministic.

use crate::{NamedValueType, Value};
use std::collections::BTreeMap;

/// Opset string of iOS18 / macOS15 (`specificationVersion` 9).
pub const OPSET_IOS18: &str = "CoreML8";

/// One binding of an op parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Reference to a named value (function input, op output, block input).
    Name(String),
    /// An inline literal.
    Value(Value),
}

impl Binding {
    /// The referenced name, if this is a name binding.
    pub fn name(&self) -> Option<&str> {
        match self {
            Binding::Name(n) => Some(n),
            Binding::Value(_) => None,
        }
    }
}

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The MIL op type, e.g. `conv`, `constexpr_lut_to_dense`.
    pub op_type: String,
    /// The op's `name` attribute (may differ from its output names).
    pub name: String,
    /// Parameters: each maps to one or more bindings (several for variadic params such as
    /// `concat.values`).
    pub inputs: BTreeMap<String, Vec<Binding>>,
    /// Output values, in order.
    pub outputs: Vec<NamedValueType>,
    /// Attributes other than `name` (for `const`: `val`).
    pub attributes: BTreeMap<String, Value>,
    /// Nested blocks (control flow; unused by our graphs).
    pub blocks: Vec<Block>,
}

impl Operation {
    /// A new op with no inputs, outputs or attributes.
    pub fn new(op_type: impl Into<String>, name: impl Into<String>) -> Operation {
        Operation {
            op_type: op_type.into(),
            name: name.into(),
            inputs: BTreeMap::new(),
            outputs: Vec::new(),
            attributes: BTreeMap::new(),
            blocks: Vec::new(),
        }
    }

    /// The single binding of a parameter (`None` if absent or variadic).
    pub fn input(&self, param: &str) -> Option<&Binding> {
        match self.inputs.get(param).map(Vec::as_slice) {
            Some([b]) => Some(b),
            _ => None,
        }
    }

    /// The single name binding of a parameter.
    pub fn input_name(&self, param: &str) -> Option<&str> {
        self.input(param).and_then(Binding::name)
    }

    /// For `const` ops: the literal.
    pub fn const_value(&self) -> Option<&Value> {
        if self.op_type == "const" {
            self.attributes.get("val")
        } else {
            None
        }
    }
}

/// A block: a list of ops and the names it returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Block {
    /// Block inputs (only for nested blocks; a function's block has none).
    pub inputs: Vec<NamedValueType>,
    /// Names of the returned values, in order.
    pub outputs: Vec<String>,
    pub operations: Vec<Operation>,
    pub attributes: BTreeMap<String, Value>,
}

/// A function: typed inputs, an opset and its block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub inputs: Vec<NamedValueType>,
    /// Opset name, e.g. [`OPSET_IOS18`]; also the key of the block specialisation.
    pub opset: String,
    pub block: Block,
    pub attributes: BTreeMap<String, Value>,
}

impl Function {
    /// An empty function for an opset.
    pub fn new(opset: impl Into<String>) -> Function {
        Function {
            inputs: Vec::new(),
            opset: opset.into(),
            block: Block::default(),
            attributes: BTreeMap::new(),
        }
    }

    /// The type of every output, in order (looked up among inputs and op outputs).
    pub fn output_types(&self) -> Vec<Option<&NamedValueType>> {
        self.block
            .outputs
            .iter()
            .map(|n| self.find_value(n))
            .collect()
    }

    /// Find the declaration of a named value (function input or op output) in the top-level block.
    pub fn find_value(&self, name: &str) -> Option<&NamedValueType> {
        self.inputs.iter().find(|v| v.name == name).or_else(|| {
            self.block
                .operations
                .iter()
                .flat_map(|op| op.outputs.iter())
                .find(|v| v.name == name)
        })
    }
}

/// A MIL program: named functions sharing one weight file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// Program version (1).
    pub version: i64,
    pub functions: BTreeMap<String, Function>,
    /// Program attributes (coremltools writes `buildInfo`).
    pub attributes: BTreeMap<String, Value>,
}

impl Default for Program {
    fn default() -> Self {
        Program {
            version: 1,
            functions: BTreeMap::new(),
            attributes: BTreeMap::new(),
        }
    }
}

impl Program {
    /// A program with a single function.
    pub fn single(name: impl Into<String>, f: Function) -> Program {
        let mut p = Program::default();
        p.functions.insert(name.into(), f);
        p
    }
}
