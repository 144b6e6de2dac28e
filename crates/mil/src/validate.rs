//! Program validator: the checks a Core ML compiler would make on the MIL we write (and a reader
//! should make on MIL it loads).
//!
//! Per program: version 1 and at least one function. Per function:
//! * an opset is set; the function block has no block inputs;
//! * names: function inputs unique; every value name defined once (SSA) and defined before use;
//!   op names unique; names in `[A-Za-z_][A-Za-z0-9_]*`;
//! * every op is in the catalog, required params are present, no unknown params, const-required
//!   params are bound to const/constexpr outputs (inline values only on constexpr ops), kinds and
//!   dtype domains match (all through [`crate::infer::infer_op`]);
//! * inferred output types equal declared output types (count, dtype, rank, fixed dims; an unknown
//!   dim on either side matches any size);
//! * the block has outputs, each defined, distinct, and a tensor (not a state).
//!
//! Errors name the function and the op (type and name).

use crate::infer::{ValueEnv, ValueInfo, infer_op};
use crate::{Constant, Dim, Function, InferError, Operation, Program, ValueType};
use std::collections::BTreeSet;
use std::fmt;

/// Which op an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRef {
    /// The op type (`conv`).
    pub op_type: String,
    /// The op's `name` attribute.
    pub name: String,
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} \"{}\"", self.op_type, self.name)
    }
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationErrorKind {
    /// `Program.version` is not 1.
    #[error("program version is {0}, expected 1")]
    ProgramVersion(i64),
    /// The program has no function.
    #[error("program has no functions")]
    NoFunctions,
    /// The function's opset is empty.
    #[error("function has no opset")]
    NoOpset,
    /// The function's top-level block declares block inputs.
    #[error("the function block must not declare block inputs (found {0})")]
    BlockInputs(usize),
    /// A name outside the MIL identifier alphabet.
    #[error("invalid name `{0}` (must match [A-Za-z_][A-Za-z0-9_]*)")]
    InvalidName(String),
    /// Two function inputs with the same name.
    #[error("function input `{0}` is declared twice")]
    DuplicateInput(String),
    /// A value defined twice (SSA violation).
    #[error("value `{0}` is defined more than once")]
    DuplicateValue(String),
    /// Two ops with the same name.
    #[error("op name `{0}` is used more than once")]
    DuplicateOpName(String),
    /// Parameter or type error found by inference (unknown op, missing/unknown/undefined/
    /// non-const params, wrong dtype or rank, shape relations).
    #[error(transparent)]
    Infer(#[from] InferError),
    /// The op declares a different number of outputs than inferred.
    #[error("declares {declared} outputs, inferred {inferred}")]
    OutputCount { declared: usize, inferred: usize },
    /// A declared output type differs from the inferred one.
    #[error("output `{output}` is declared {declared} but inferred {inferred}")]
    OutputType {
        output: String,
        declared: ValueType,
        inferred: ValueType,
    },
    /// The function has no outputs.
    #[error("function has no outputs")]
    NoOutputs,
    /// A function output refers to an undefined value.
    #[error("function output `{0}` is not defined")]
    UndefinedOutput(String),
    /// A value listed twice among the function outputs.
    #[error("function output `{0}` is listed twice")]
    DuplicateOutput(String),
    /// A function output that is not a tensor.
    #[error("function output `{name}` must be a tensor, found {ty}")]
    OutputNotTensor { name: String, ty: ValueType },
}

/// A validation failure, naming the function and (when relevant) the op.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ValidationError {
    /// Function name (empty for program-level errors).
    pub function: String,
    /// The op involved, if any.
    pub op: Option<OpRef>,
    /// What is wrong (boxed to keep `Result`s small).
    pub kind: Box<ValidationErrorKind>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.op, self.function.is_empty()) {
            (Some(op), _) => write!(f, "function `{}`, op {op}: {}", self.function, self.kind),
            (None, false) => write!(f, "function `{}`: {}", self.function, self.kind),
            (None, true) => write!(f, "program: {}", self.kind),
        }
    }
}

/// True if `s` matches `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True if a declared type agrees with an inferred one (same kind, dtype and rank; fixed dims
/// equal; unknown dims match anything).
pub fn type_matches(declared: &ValueType, inferred: &ValueType) -> bool {
    fn dims(a: &[Dim], b: &[Dim]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| match (x, y) {
                (Dim::Fixed(x), Dim::Fixed(y)) => x == y,
                _ => true,
            })
    }
    match (declared, inferred) {
        (ValueType::Tensor(a), ValueType::Tensor(b))
        | (ValueType::State(a), ValueType::State(b)) => {
            a.dtype == b.dtype && dims(&a.shape, &b.shape)
        }
        (a, b) => a == b,
    }
}

/// Validate every function of a program.
pub fn validate(program: &Program) -> Result<(), ValidationError> {
    let prog_err = |kind| ValidationError {
        function: String::new(),
        op: None,
        kind: Box::new(kind),
    };
    if program.version != 1 {
        return Err(prog_err(ValidationErrorKind::ProgramVersion(
            program.version,
        )));
    }
    if program.functions.is_empty() {
        return Err(prog_err(ValidationErrorKind::NoFunctions));
    }
    for (name, f) in &program.functions {
        validate_function(name, f)?;
    }
    Ok(())
}

/// Validate one function.
pub fn validate_function(name: &str, f: &Function) -> Result<(), ValidationError> {
    let err = |op: Option<&Operation>, kind| ValidationError {
        function: name.to_string(),
        op: op.map(|o| OpRef {
            op_type: o.op_type.clone(),
            name: o.name.clone(),
        }),
        kind: Box::new(kind),
    };
    if f.opset.is_empty() {
        return Err(err(None, ValidationErrorKind::NoOpset));
    }
    if !f.block.inputs.is_empty() {
        return Err(err(
            None,
            ValidationErrorKind::BlockInputs(f.block.inputs.len()),
        ));
    }
    let mut env = ValueEnv::new();
    for input in &f.inputs {
        if !is_valid_name(&input.name) {
            return Err(err(
                None,
                ValidationErrorKind::InvalidName(input.name.clone()),
            ));
        }
        let info = ValueInfo {
            ty: input.ty.clone(),
            constant: Constant::Runtime,
        };
        if env.insert(input.name.clone(), info).is_some() {
            return Err(err(
                None,
                ValidationErrorKind::DuplicateInput(input.name.clone()),
            ));
        }
    }
    let mut op_names = BTreeSet::new();
    for op in &f.block.operations {
        if !is_valid_name(&op.name) {
            return Err(err(
                Some(op),
                ValidationErrorKind::InvalidName(op.name.clone()),
            ));
        }
        if !op_names.insert(op.name.as_str()) {
            return Err(err(
                Some(op),
                ValidationErrorKind::DuplicateOpName(op.name.clone()),
            ));
        }
        let inferred = infer_op(op, &env).map_err(|e| err(Some(op), e.into()))?;
        if inferred.len() != op.outputs.len() {
            return Err(err(
                Some(op),
                ValidationErrorKind::OutputCount {
                    declared: op.outputs.len(),
                    inferred: inferred.len(),
                },
            ));
        }
        for (out, inf) in op.outputs.iter().zip(&inferred) {
            if !is_valid_name(&out.name) {
                return Err(err(
                    Some(op),
                    ValidationErrorKind::InvalidName(out.name.clone()),
                ));
            }
            if env.contains(&out.name) {
                return Err(err(
                    Some(op),
                    ValidationErrorKind::DuplicateValue(out.name.clone()),
                ));
            }
            if !type_matches(&out.ty, inf) {
                return Err(err(
                    Some(op),
                    ValidationErrorKind::OutputType {
                        output: out.name.clone(),
                        declared: out.ty.clone(),
                        inferred: inf.clone(),
                    },
                ));
            }
        }
        env.define_outputs(op);
    }
    if f.block.outputs.is_empty() {
        return Err(err(None, ValidationErrorKind::NoOutputs));
    }
    let mut seen = BTreeSet::new();
    for out in &f.block.outputs {
        let info = env
            .get(out)
            .ok_or_else(|| err(None, ValidationErrorKind::UndefinedOutput(out.clone())))?;
        if !seen.insert(out.as_str()) {
            return Err(err(None, ValidationErrorKind::DuplicateOutput(out.clone())));
        }
        if !matches!(info.ty, ValueType::Tensor(_)) {
            return Err(err(
                None,
                ValidationErrorKind::OutputNotTensor {
                    name: out.clone(),
                    ty: info.ty.clone(),
                },
            ));
        }
    }
    Ok(())
}
