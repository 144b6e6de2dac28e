//! Output type inference of one operation, given the types (and known constant values) of the
//! values it refers to.
//!
//! [`infer_op`] is the single entry point used by the builder (to type every op it emits), by the
//! validator (to compare inferred and declared output types) and by the runtime. It first runs the
//! generic parameter checks against the op's [`crate::ops::OpDef`]:
//!
//! 1. the op type is in the catalog;
//! 2. every bound parameter exists, non-variadic parameters have exactly one binding;
//! 3. name bindings refer to values defined earlier ([`ValueEnv`]); inline values only on
//!    `constexpr_*` ops;
//! 4. kinds (tensor / state), dtype domains and const-ness match the spec;
//! 5. required parameters are present;
//!
//! and then calls the op's own inference function with an [`Args`] view of the parameters.

use crate::ops::{self, Constness, OpDef, ParamKind};
use crate::{InferError, Operation, TensorType, TensorValue, Value, ValueType};
use std::collections::BTreeMap;

/// Whether a value is known at compile time.
#[derive(Clone, Debug, PartialEq)]
pub enum Constant {
    /// Computed at runtime (function inputs, ordinary op outputs).
    Runtime,
    /// A known literal (const op output or inline value).
    Value(Value),
    /// Output of a `constexpr_*` op: constant, but not materialised here.
    Constexpr,
}

impl Constant {
    /// True unless [`Constant::Runtime`].
    pub fn is_const(&self) -> bool {
        !matches!(self, Constant::Runtime)
    }
}

/// What is known about a named value.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    /// Its type.
    pub ty: ValueType,
    /// Whether (and how) it is known at compile time.
    pub constant: Constant,
}

/// The named values visible at a point of a function (SSA environment).
#[derive(Clone, Debug, Default)]
pub struct ValueEnv {
    values: BTreeMap<String, ValueInfo>,
}

impl ValueEnv {
    /// An empty environment.
    pub fn new() -> ValueEnv {
        ValueEnv::default()
    }

    /// Define a value; returns the previous definition of that name, if any.
    pub fn insert(&mut self, name: impl Into<String>, info: ValueInfo) -> Option<ValueInfo> {
        self.values.insert(name.into(), info)
    }

    /// Remove a value.
    pub fn remove(&mut self, name: &str) -> Option<ValueInfo> {
        self.values.remove(name)
    }

    /// Look a value up.
    pub fn get(&self, name: &str) -> Option<&ValueInfo> {
        self.values.get(name)
    }

    /// True if the name is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Define the outputs of an op whose output types are already set (const ops get their
    /// literal, constexpr ops are marked [`Constant::Constexpr`]).
    pub fn define_outputs(&mut self, op: &Operation) {
        let constant = if let Some(v) = op.const_value() {
            Constant::Value(v.clone())
        } else if ops::lookup(&op.op_type).is_some_and(|d| d.constexpr) {
            Constant::Constexpr
        } else {
            Constant::Runtime
        };
        for out in &op.outputs {
            self.insert(
                out.name.clone(),
                ValueInfo {
                    ty: out.ty.clone(),
                    constant: constant.clone(),
                },
            );
        }
    }
}

/// One bound value of a parameter, as seen by an inference function.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgValue {
    /// Its type.
    pub ty: ValueType,
    /// Whether it is known at compile time.
    pub constant: Constant,
}

impl ArgValue {
    /// The tensor type (tensor parameters), or the wrapped type of a state.
    pub fn tensor(&self) -> Option<&TensorType> {
        match &self.ty {
            ValueType::Tensor(t) | ValueType::State(t) => Some(t),
            _ => None,
        }
    }

    /// The literal tensor, if known.
    pub fn literal(&self) -> Option<&TensorValue> {
        match &self.constant {
            Constant::Value(Value::Tensor(t)) => Some(t),
            _ => None,
        }
    }
}

/// The checked parameters of one op, handed to its inference function.
#[derive(Clone, Debug)]
pub struct Args {
    params: BTreeMap<String, Vec<ArgValue>>,
}

impl Args {
    /// Build from parameter bindings (no checks; used by [`infer_op`] and tests).
    pub fn from_map(params: BTreeMap<String, Vec<ArgValue>>) -> Args {
        Args { params }
    }

    /// True if the parameter is bound.
    pub fn has(&self, p: &str) -> bool {
        self.params.contains_key(p)
    }

    /// The single value of a parameter, if bound.
    pub fn arg(&self, p: &str) -> Option<&ArgValue> {
        self.params.get(p).and_then(|v| v.first())
    }

    /// All values of a (variadic) parameter.
    pub fn variadic(&self, p: &str) -> &[ArgValue] {
        self.params.get(p).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The tensor type of a required parameter.
    pub fn tensor(&self, p: &str) -> Result<&TensorType, InferError> {
        self.opt_tensor(p)
            .ok_or_else(|| InferError::MissingParam(p.to_string()))
    }

    /// The tensor type of an optional parameter.
    pub fn opt_tensor(&self, p: &str) -> Option<&TensorType> {
        self.arg(p).and_then(ArgValue::tensor)
    }

    /// The literal of a parameter: `Ok(None)` if absent, error if bound but not known.
    pub fn literal(&self, p: &str) -> Result<Option<&TensorValue>, InferError> {
        match self.arg(p) {
            None => Ok(None),
            Some(a) => a
                .literal()
                .map(Some)
                .ok_or_else(|| InferError::ValueUnknown(p.to_string())),
        }
    }

    /// The literal of a parameter if bound and known (runtime-capable params such as `begin`).
    pub fn known_literal(&self, p: &str) -> Option<&TensorValue> {
        self.arg(p).and_then(ArgValue::literal)
    }

    /// Integer vector value (`Ok(None)` if absent); must be a 1-D tensor.
    pub fn int_list(&self, p: &str) -> Result<Option<Vec<i64>>, InferError> {
        match self.literal(p)? {
            None => Ok(None),
            Some(t) => ints_of(p, t, 1).map(Some),
        }
    }

    /// Integer vector value if bound and known, else `None`.
    pub fn known_int_list(&self, p: &str) -> Result<Option<Vec<i64>>, InferError> {
        match self.known_literal(p) {
            None => Ok(None),
            Some(t) => ints_of(p, t, 1).map(Some),
        }
    }

    /// A required integer vector.
    pub fn req_int_list(&self, p: &str) -> Result<Vec<i64>, InferError> {
        self.int_list(p)?
            .ok_or_else(|| InferError::MissingParam(p.to_string()))
    }

    /// Integer scalar value (`Ok(None)` if absent).
    pub fn int(&self, p: &str) -> Result<Option<i64>, InferError> {
        match self.literal(p)? {
            None => Ok(None),
            Some(t) => Ok(ints_of(p, t, 0)?.first().copied()),
        }
    }

    /// Bool scalar value (`Ok(None)` if absent).
    pub fn bool(&self, p: &str) -> Result<Option<bool>, InferError> {
        match self.literal(p)? {
            None => Ok(None),
            Some(t) => Ok(ints_of(p, t, 0)?.first().map(|&v| v != 0)),
        }
    }

    /// Bool vector value (`Ok(None)` if absent).
    pub fn bool_list(&self, p: &str) -> Result<Option<Vec<bool>>, InferError> {
        match self.literal(p)? {
            None => Ok(None),
            Some(t) => Ok(Some(ints_of(p, t, 1)?.iter().map(|&v| v != 0).collect())),
        }
    }

    /// String scalar value (`Ok(None)` if absent).
    pub fn string(&self, p: &str) -> Result<Option<String>, InferError> {
        match self.literal(p)? {
            None => Ok(None),
            Some(t) => match (t.strings(), t.ty().rank()) {
                (Some([s]), 0) => Ok(Some(s.clone())),
                _ => Err(InferError::bad_value(p, "expected a string scalar")),
            },
        }
    }
}

fn ints_of(p: &str, t: &TensorValue, rank: usize) -> Result<Vec<i64>, InferError> {
    if t.ty().rank() != rank {
        let what = if rank == 0 {
            "a scalar"
        } else {
            "a 1-D tensor"
        };
        return Err(InferError::rank(p, t.ty().rank(), what));
    }
    t.to_i64_vec()
        .map_err(|e| InferError::bad_value(p, e.to_string()))
}

/// Infer the output types of `op`, checking its parameters against the catalog.
pub fn infer_op(op: &Operation, env: &ValueEnv) -> Result<Vec<ValueType>, InferError> {
    let def = ops::lookup(&op.op_type).ok_or_else(|| InferError::UnknownOp(op.op_type.clone()))?;
    if !op.blocks.is_empty() {
        return Err(InferError::Structure(format!(
            "op `{}` takes no nested blocks, found {}",
            op.op_type,
            op.blocks.len()
        )));
    }
    if def.name == "const" {
        return ops::constant::infer_const(op);
    }
    if let Some(attr) = op.attributes.keys().next() {
        return Err(InferError::Structure(format!(
            "unexpected attribute `{attr}` (only `name` is allowed)"
        )));
    }
    let args = check_params(def, op, env)?;
    (def.infer)(&args)
}

/// The generic parameter checks of [`infer_op`], returning the resolved arguments.
pub fn check_params(def: &OpDef, op: &Operation, env: &ValueEnv) -> Result<Args, InferError> {
    let mut params = BTreeMap::new();
    for (pname, bindings) in &op.inputs {
        let spec = def
            .param(pname)
            .ok_or_else(|| InferError::UnknownParam(pname.clone()))?;
        let variadic = spec.kind == ParamKind::Variadic;
        if (!variadic && bindings.len() != 1) || bindings.is_empty() {
            return Err(InferError::Arity {
                param: pname.clone(),
                count: bindings.len(),
            });
        }
        let mut vals = Vec::with_capacity(bindings.len());
        for b in bindings {
            let (arg, bound_name) = match b {
                crate::Binding::Name(n) => {
                    let info = env.get(n).ok_or_else(|| InferError::Undefined {
                        param: pname.clone(),
                        name: n.clone(),
                    })?;
                    (
                        ArgValue {
                            ty: info.ty.clone(),
                            constant: info.constant.clone(),
                        },
                        n.as_str(),
                    )
                }
                crate::Binding::Value(v) => {
                    if !def.constexpr {
                        return Err(InferError::InlineValue(pname.clone()));
                    }
                    (
                        ArgValue {
                            ty: v.value_type(),
                            constant: Constant::Value(v.clone()),
                        },
                        "<inline value>",
                    )
                }
            };
            check_kind(spec, pname, &arg)?;
            if spec.constness == Constness::Const && !arg.constant.is_const() {
                return Err(InferError::NotConst {
                    param: pname.clone(),
                    name: bound_name.to_string(),
                });
            }
            vals.push(arg);
        }
        params.insert(pname.clone(), vals);
    }
    for spec in def.params {
        if spec.is_required() && !params.contains_key(spec.name) {
            return Err(InferError::MissingParam(spec.name.to_string()));
        }
    }
    Ok(Args::from_map(params))
}

fn check_kind(spec: &ops::ParamSpec, pname: &str, arg: &ArgValue) -> Result<(), InferError> {
    let t = match (spec.kind, &arg.ty) {
        (ParamKind::Tensor | ParamKind::Variadic, ValueType::Tensor(t)) => t,
        (ParamKind::State, ValueType::State(t)) => t,
        (ParamKind::Any, _) => return Ok(()),
        (kind, found) => {
            return Err(InferError::Kind {
                param: pname.to_string(),
                expected: if kind == ParamKind::State {
                    "state"
                } else {
                    "tensor"
                },
                found: found.clone(),
            });
        }
    };
    if !spec.dtypes.is_empty() && !spec.dtypes.contains(&t.dtype) {
        return Err(InferError::DType {
            param: pname.to_string(),
            found: t.dtype,
            allowed: dtype_list(spec.dtypes),
        });
    }
    Ok(())
}

/// `fp16, fp32, int32` style list for messages.
pub fn dtype_list(d: &[crate::DType]) -> String {
    d.iter()
        .map(|d| d.mil_name())
        .collect::<Vec<_>>()
        .join(", ")
}
