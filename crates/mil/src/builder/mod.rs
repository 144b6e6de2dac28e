//! Typed MIL builder.
//!
//! [`FunctionBuilder`] emits one function op by op: every method type-checks its op through the
//! catalog ([`crate::infer::infer_op`]) and returns a typed [`Var`] (or a [`MilError`] naming the op,
//! e.g. `conv "layer0_q_proj": weight in-channels 64 != input channels 128`).
//!
//! Conventions (those of coremltools, so packages look familiar):
//! * **Every parameter is written explicitly**, including optional ones at their default (protobuf
//!   has no MIL defaults). Literal parameters become separate `const` ops named
//!   `<op>_<param>_<i>` and placed right before the op; `constexpr_*` ops take their literals inline
//!   (`Binding::Value`).
//! * **Names** are scoped and deterministic: inside `with_scope("layer3.attn", ..)` the op `q_proj`
//!   is named `layer3_attn_q_proj`; names are sanitised to `[A-Za-z_][A-Za-z0-9_]*` and made unique
//!   with `_1`, `_2`, … suffixes. An empty name asks for an automatic `<op_type>_<n>` name.
//!   A single-output op's output has the op's name; multi-output ops name them `<op>_<i>`.
//! * **Scalars** given as Rust numbers (`b.mul("scale", &x, 0.125)`) take the dtype of the other
//!   operand: fp16 consts in fp16 graphs, fp32 in fp32 graphs.
//! * **Outputs**: [`FunctionBuilder::output`] renames the producing op's output to the requested
//!   name, or inserts an `identity` when the value is a function input or already an output.
//! * **Multi-function programs**: build each function with its own builder and add it to a
//!   [`ProgramBuilder`]; to share weights, reuse the same [`TensorValue`] (the package writer
//!   deduplicates blobs by content).
//!
//! The op methods are grouped like the catalog (elementwise, linear algebra, tensor ops).
//!
//! ```
//! use mil::{DType, ProgramBuilder, TensorType};
//!
//! let mut pb = ProgramBuilder::new();
//! pb.function("main", |b| {
//!     let x = b.input("x", TensorType::new(DType::F16, &[1, 64, 1, 8]))?;
//!     let w = b.const_f16("q_proj_weight", &[32, 64, 1, 1], &vec![0.0; 32 * 64])?;
//!     let q = b.with_scope("layer0.attn", |b| b.conv_1x1("q_proj", &x, &w, None))?;
//!     let s = b.mul("scale", &q, 0.125)?; // fp16 scalar const, like x
//!     b.output("q_out", &s)
//! })?;
//! let program = pb.build()?; // validated
//! let text = mil::print_program(&program);
//! assert!(text.contains("tensor<fp16, [1, 32, 1, 8]> layer0_attn_q_proj = conv("));
//! # Ok::<(), mil::MilError>(())
//! ```

mod elementwise;
mod linalg;
mod params;
mod tensor;

pub use params::{ConvOptions, GeluMode, Pad, Slice, Split};

use crate::infer::{ValueEnv, ValueInfo, infer_op};
use crate::validate::is_valid_name;
use crate::{
    Binding, Constant, DType, Dim, Function, MilError, NamedValueType, OPSET_IOS18, Operation,
    Program, TensorType, TensorValue, Value, ValueType,
};
use half::f16;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_BUILDER_ID: AtomicU64 = AtomicU64::new(1);

/// A typed tensor value of one function under construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Var {
    fid: u64,
    name: String,
    ty: TensorType,
}

impl Var {
    /// The value's name when it was created (see [`FunctionBuilder::current_name`] after renames).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its tensor type.
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }
    /// Its dtype.
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }
    /// Its rank.
    pub fn rank(&self) -> usize {
        self.ty.rank()
    }
    /// Its dims.
    pub fn shape(&self) -> &[Dim] {
        &self.ty.shape
    }
    /// Its shape if fully static.
    pub fn static_shape(&self) -> Option<Vec<usize>> {
        self.ty.static_shape()
    }
    /// The fixed size of dim `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Option<usize> {
        let r = self.rank() as isize;
        let a = if axis < 0 { axis + r } else { axis };
        if !(0..r).contains(&a) {
            return None;
        }
        self.ty.shape[a as usize]
            .fixed()
            .and_then(|n| usize::try_from(n).ok())
    }
}

/// A state input (iOS18) of one function under construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateVar {
    fid: u64,
    name: String,
    ty: TensorType,
}

impl StateVar {
    /// The state input's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The wrapped tensor type.
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }
}

/// An op argument: a var, a literal tensor (becomes a `const` op) or a Rust scalar (becomes a rank-0
/// const in the dtype of the op's other operand).
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A value of the function.
    Var(Var),
    /// A literal tensor.
    Value(TensorValue),
    /// A number that takes its dtype from the context.
    Scalar(f64),
}

impl Operand {
    /// The dtype, if the operand carries one.
    pub fn dtype(&self) -> Option<DType> {
        match self {
            Operand::Var(v) => Some(v.dtype()),
            Operand::Value(t) => Some(t.dtype()),
            Operand::Scalar(_) => None,
        }
    }
}

impl From<Var> for Operand {
    fn from(v: Var) -> Self {
        Operand::Var(v)
    }
}
impl From<&Var> for Operand {
    fn from(v: &Var) -> Self {
        Operand::Var(v.clone())
    }
}
impl From<TensorValue> for Operand {
    fn from(v: TensorValue) -> Self {
        Operand::Value(v)
    }
}
impl From<&TensorValue> for Operand {
    fn from(v: &TensorValue) -> Self {
        Operand::Value(v.clone())
    }
}
impl From<f64> for Operand {
    fn from(v: f64) -> Self {
        Operand::Scalar(v)
    }
}
impl From<f32> for Operand {
    fn from(v: f32) -> Self {
        Operand::Scalar(f64::from(v))
    }
}
impl From<i32> for Operand {
    fn from(v: i32) -> Self {
        Operand::Scalar(f64::from(v))
    }
}

/// One parameter of a generic op (see [`FunctionBuilder::op`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// A value of the function (name binding).
    Var(Var),
    /// A literal, emitted as a `const` op named `<op>_<param>_<i>`.
    Lit(TensorValue),
    /// A literal written inline (constexpr ops only).
    Inline(TensorValue),
    /// A state input.
    State(StateVar),
    /// Several bindings (variadic parameters such as `concat.values`).
    Many(Vec<Param>),
}

/// A scalar literal of `dtype` (fp16, fp32, int32, bool), or an explanation why not.
pub fn scalar_of(v: f64, dtype: DType) -> Result<TensorValue, String> {
    match dtype {
        DType::F16 => Ok(TensorValue::scalar_f16(f16::from_f64(v))),
        DType::F32 => Ok(TensorValue::scalar_f32(v as f32)),
        DType::I32 if v.fract() == 0.0 && v >= f64::from(i32::MIN) && v <= f64::from(i32::MAX) => {
            Ok(TensorValue::scalar_i32(v as i32))
        }
        DType::Bool if v == 0.0 || v == 1.0 => Ok(TensorValue::scalar_bool(v == 1.0)),
        d => Err(format!("scalar {v} cannot be written as {d}")),
    }
}

/// Make `s` a valid MIL name: characters outside `[A-Za-z0-9_]` become `_`, and a leading digit
/// (or an empty name) gets a `_` prefix.
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Builds one MIL function.
#[derive(Debug)]
pub struct FunctionBuilder {
    id: u64,
    fname: String,
    opset: String,
    inputs: Vec<NamedValueType>,
    ops: Vec<Operation>,
    outputs: Vec<String>,
    env: ValueEnv,
    used: BTreeSet<String>,
    counters: BTreeMap<String, usize>,
    scopes: Vec<String>,
    renamed: BTreeMap<String, String>,
}

impl FunctionBuilder {
    /// A builder for function `name` with the iOS18 opset (`CoreML8`).
    pub fn new(name: impl Into<String>) -> FunctionBuilder {
        FunctionBuilder::with_opset(name, OPSET_IOS18)
    }

    /// A builder for function `name` with an explicit opset string.
    pub fn with_opset(name: impl Into<String>, opset: impl Into<String>) -> FunctionBuilder {
        FunctionBuilder {
            id: NEXT_BUILDER_ID.fetch_add(1, Ordering::Relaxed),
            fname: name.into(),
            opset: opset.into(),
            inputs: Vec::new(),
            ops: Vec::new(),
            outputs: Vec::new(),
            env: ValueEnv::new(),
            used: BTreeSet::new(),
            counters: BTreeMap::new(),
            scopes: Vec::new(),
            renamed: BTreeMap::new(),
        }
    }

    /// The function's name.
    pub fn function_name(&self) -> &str {
        &self.fname
    }

    /// The ops emitted so far.
    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    // ----------------------------------------------------------------------------------------
    // names and scopes

    /// Run `f` inside a name scope: names created inside are prefixed with the sanitised scope
    /// (`"layer3.attn"` + `q_proj` → `layer3_attn_q_proj`). Scopes nest.
    pub fn with_scope<R>(&mut self, scope: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.push_scope(scope);
        let r = f(self);
        self.pop_scope();
        r
    }

    /// Enter a name scope (see [`FunctionBuilder::with_scope`]).
    pub fn push_scope(&mut self, scope: &str) {
        self.scopes.push(sanitize(scope));
    }

    /// Leave the innermost name scope (no-op at top level).
    pub fn pop_scope(&mut self) {
        self.scopes.pop();
    }

    /// The scoped, sanitised (not yet uniquified) form of `name`.
    pub fn scoped_name(&self, name: &str) -> String {
        if self.scopes.is_empty() {
            sanitize(name)
        } else {
            sanitize(&format!("{}_{}", self.scopes.join("_"), name))
        }
    }

    /// Reserve a unique name derived from `base` (`base`, then `base_1`, `base_2`, ...).
    fn fresh(&mut self, base: &str) -> String {
        if self.used.insert(base.to_string()) {
            return base.to_string();
        }
        let k = self.counters.entry(base.to_string()).or_insert(1);
        loop {
            let cand = format!("{base}_{k}");
            *k += 1;
            if self.used.insert(cand.clone()) {
                return cand;
            }
        }
    }

    /// The op name for a user-supplied `name` (empty = automatic `<op_type>_<n>`).
    fn op_name(&mut self, op_type: &str, name: &str) -> String {
        if name.is_empty() {
            let base = self.scoped_name(op_type);
            let k = self.counters.entry(format!("{base}#auto")).or_insert(0);
            loop {
                let cand = format!("{base}_{k}");
                *k += 1;
                if self.used.insert(cand.clone()) {
                    return cand;
                }
            }
        } else {
            let base = self.scoped_name(name);
            self.fresh(&base)
        }
    }

    /// The current name of a var (after any [`FunctionBuilder::output`] renames).
    pub fn current_name(&self, v: &Var) -> String {
        self.follow(&v.name)
    }

    fn follow(&self, name: &str) -> String {
        let mut n = name.to_string();
        while let Some(next) = self.renamed.get(&n) {
            n = next.clone();
        }
        n
    }

    fn resolve(&self, v: &Var) -> Result<String, MilError> {
        let unknown = || MilError::UnknownVar {
            function: self.fname.clone(),
            name: v.name.clone(),
        };
        if v.fid != self.id {
            return Err(unknown());
        }
        let n = self.follow(&v.name);
        if self.env.contains(&n) {
            Ok(n)
        } else {
            Err(unknown())
        }
    }

    fn check_new_name(&self, name: &str) -> Result<(), MilError> {
        if !is_valid_name(name) {
            return Err(MilError::InvalidName {
                function: self.fname.clone(),
                name: name.to_string(),
            });
        }
        if self.used.contains(name) {
            return Err(MilError::DuplicateName {
                function: self.fname.clone(),
                name: name.to_string(),
            });
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // inputs, outputs, finishing

    /// Declare a tensor input (exact name, not scoped).
    pub fn input(&mut self, name: &str, ty: TensorType) -> Result<Var, MilError> {
        self.check_new_name(name)?;
        self.used.insert(name.to_string());
        self.inputs.push(NamedValueType::tensor(name, ty.clone()));
        self.env.insert(
            name,
            ValueInfo {
                ty: ValueType::Tensor(ty.clone()),
                constant: Constant::Runtime,
            },
        );
        Ok(Var {
            fid: self.id,
            name: name.to_string(),
            ty,
        })
    }

    /// Declare a state input wrapping `ty` (iOS18; exact name).
    pub fn state_input(&mut self, name: &str, ty: TensorType) -> Result<StateVar, MilError> {
        self.check_new_name(name)?;
        self.used.insert(name.to_string());
        self.inputs.push(NamedValueType {
            name: name.to_string(),
            ty: ValueType::State(ty.clone()),
        });
        self.env.insert(
            name,
            ValueInfo {
                ty: ValueType::State(ty.clone()),
                constant: Constant::Runtime,
            },
        );
        Ok(StateVar {
            fid: self.id,
            name: name.to_string(),
            ty,
        })
    }

    /// Make `v` a function output called `name` (exact, not scoped). The producing op's output is
    /// renamed (later uses of `v` follow the rename); an `identity` op is inserted instead when `v`
    /// is a function input or already an output.
    pub fn output(&mut self, name: &str, v: &Var) -> Result<(), MilError> {
        let cur = self.resolve(v)?;
        if cur == name && !self.outputs.iter().any(|o| o == name) && !self.is_input(&cur) {
            self.outputs.push(cur);
            return Ok(());
        }
        self.check_new_name(name)?;
        if self.is_input(&cur) || self.outputs.contains(&cur) {
            self.used.insert(name.to_string());
            let ty = v.ty.clone();
            let mut op = Operation::new("identity", name);
            op.inputs.insert("x".into(), vec![Binding::Name(cur)]);
            op.outputs.push(NamedValueType::tensor(name, ty));
            self.env.define_outputs(&op);
            self.ops.push(op);
            self.outputs.push(name.to_string());
            return Ok(());
        }
        self.used.insert(name.to_string());
        for op in &mut self.ops {
            for out in &mut op.outputs {
                if out.name == cur {
                    out.name = name.to_string();
                }
            }
            for b in op.inputs.values_mut().flatten() {
                if matches!(b, Binding::Name(n) if *n == cur) {
                    *b = Binding::Name(name.to_string());
                }
            }
        }
        if let Some(info) = self.env.remove(&cur) {
            self.env.insert(name, info);
        }
        self.renamed.insert(cur, name.to_string());
        self.outputs.push(name.to_string());
        Ok(())
    }

    fn is_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|i| i.name == name)
    }

    /// Finish the function (it must have at least one output).
    pub fn finish(self) -> Result<Function, MilError> {
        if self.outputs.is_empty() {
            return Err(MilError::NoOutputs(self.fname));
        }
        let mut f = Function::new(self.opset);
        f.inputs = self.inputs;
        f.block.operations = self.ops;
        f.block.outputs = self.outputs;
        Ok(f)
    }

    // ----------------------------------------------------------------------------------------
    // generic op emission

    /// Emit any catalog op: literal parameters become `const` ops, the op is type-checked and its
    /// typed outputs returned (empty for `write_state`). An empty `name` asks for an automatic one.
    pub fn op(
        &mut self,
        op_type: &str,
        name: &str,
        params: Vec<(&str, Param)>,
    ) -> Result<Vec<Var>, MilError> {
        let opname = self.op_name(op_type, name);
        let mut reserved = vec![opname.clone()];
        let r = self.emit(op_type, &opname, params, &mut reserved);
        if r.is_err() {
            for n in &reserved {
                self.used.remove(n);
                self.env.remove(n);
            }
        }
        r
    }

    fn emit(
        &mut self,
        op_type: &str,
        opname: &str,
        params: Vec<(&str, Param)>,
        reserved: &mut Vec<String>,
    ) -> Result<Vec<Var>, MilError> {
        let mut consts = Vec::new();
        let mut op = Operation::new(op_type, opname);
        for (pname, p) in params {
            let items = match p {
                Param::Many(v) => v,
                one => vec![one],
            };
            let mut bindings = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let b = match item {
                    Param::Var(v) => Binding::Name(self.resolve(&v)?),
                    Param::State(s) => {
                        if s.fid != self.id || !self.env.contains(&s.name) {
                            return Err(MilError::UnknownVar {
                                function: self.fname.clone(),
                                name: s.name,
                            });
                        }
                        Binding::Name(s.name)
                    }
                    Param::Inline(t) => Binding::Value(Value::Tensor(t)),
                    Param::Lit(t) => {
                        let cname = self.fresh(&format!("{opname}_{pname}_{i}"));
                        reserved.push(cname.clone());
                        let c = const_op(&cname, t);
                        self.env.define_outputs(&c);
                        consts.push(c);
                        Binding::Name(cname)
                    }
                    Param::Many(_) => {
                        return Err(MilError::Argument {
                            op: op_type.to_string(),
                            name: opname.to_string(),
                            msg: format!("parameter `{pname}`: nested parameter lists"),
                        });
                    }
                };
                bindings.push(b);
            }
            op.inputs.insert(pname.to_string(), bindings);
        }
        let types = infer_op(&op, &self.env).map_err(|source| MilError::Op {
            op: op_type.to_string(),
            name: opname.to_string(),
            source: Box::new(source),
        })?;
        let mut vars = Vec::with_capacity(types.len());
        let single = types.len() == 1;
        for (i, ty) in types.into_iter().enumerate() {
            let oname = if single {
                opname.to_string()
            } else {
                let n = self.fresh(&format!("{opname}_{i}"));
                reserved.push(n.clone());
                n
            };
            let tt = match &ty {
                ValueType::Tensor(t) => t.clone(),
                other => {
                    return Err(MilError::Argument {
                        op: op_type.to_string(),
                        name: opname.to_string(),
                        msg: format!("output type {other} is not a tensor"),
                    });
                }
            };
            op.outputs.push(NamedValueType {
                name: oname.clone(),
                ty,
            });
            vars.push(Var {
                fid: self.id,
                name: oname,
                ty: tt,
            });
        }
        self.env.define_outputs(&op);
        self.ops.extend(consts);
        self.ops.push(op);
        Ok(vars)
    }

    /// Emit an op with exactly one output.
    fn single(
        &mut self,
        op_type: &str,
        name: &str,
        params: Vec<(&str, Param)>,
    ) -> Result<Var, MilError> {
        let mut v = self.op(op_type, name, params)?;
        match (v.pop(), v.is_empty()) {
            (Some(out), true) => Ok(out),
            _ => Err(MilError::Argument {
                op: op_type.to_string(),
                name: self.scoped_name(name),
                msg: "expected exactly one output".into(),
            }),
        }
    }

    /// Turn an operand into a parameter; scalars take `peer`'s dtype.
    fn param(
        &self,
        op_type: &str,
        name: &str,
        operand: Operand,
        peer: Option<DType>,
    ) -> Result<Param, MilError> {
        match operand {
            Operand::Var(v) => Ok(Param::Var(v)),
            Operand::Value(t) => Ok(Param::Lit(t)),
            Operand::Scalar(s) => {
                let arg_err = |msg: String| MilError::Argument {
                    op: op_type.to_string(),
                    name: self.scoped_name(name),
                    msg,
                };
                let d = peer.ok_or_else(|| {
                    arg_err(format!(
                        "scalar {s} needs a typed operand to take its dtype from"
                    ))
                })?;
                scalar_of(s, d).map(Param::Lit).map_err(arg_err)
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // constants

    /// A `const` op holding `value` (named `name`, scoped).
    pub fn constant(&mut self, name: &str, value: TensorValue) -> Result<Var, MilError> {
        let opname = self.op_name("const", name);
        let op = const_op(&opname, value.clone());
        self.env.define_outputs(&op);
        self.ops.push(op);
        Ok(Var {
            fid: self.id,
            name: opname,
            ty: value.ty().clone(),
        })
    }

    fn lit_err(&self, name: &str, e: crate::ValueError) -> MilError {
        MilError::Value {
            op: "const".into(),
            name: self.scoped_name(name),
            source: e,
        }
    }

    /// An fp16 constant from f32 values (rounded to nearest).
    pub fn const_f16(&mut self, name: &str, shape: &[usize], v: &[f32]) -> Result<Var, MilError> {
        let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        let t = TensorValue::from_f16(shape, &h).map_err(|e| self.lit_err(name, e))?;
        self.constant(name, t)
    }

    /// An fp32 constant.
    pub fn const_f32(&mut self, name: &str, shape: &[usize], v: &[f32]) -> Result<Var, MilError> {
        let t = TensorValue::from_f32(shape, v).map_err(|e| self.lit_err(name, e))?;
        self.constant(name, t)
    }

    /// An int32 constant.
    pub fn const_i32(&mut self, name: &str, shape: &[usize], v: &[i32]) -> Result<Var, MilError> {
        let t = TensorValue::from_i32(shape, v).map_err(|e| self.lit_err(name, e))?;
        self.constant(name, t)
    }

    /// A bool constant.
    pub fn const_bool(&mut self, name: &str, shape: &[usize], v: &[bool]) -> Result<Var, MilError> {
        let t = TensorValue::from_bool(shape, v).map_err(|e| self.lit_err(name, e))?;
        self.constant(name, t)
    }

    /// A string scalar constant.
    pub fn const_str(&mut self, name: &str, s: &str) -> Result<Var, MilError> {
        self.constant(name, TensorValue::scalar_str(s))
    }
}

/// A `const` op named `name` holding `value`.
pub fn const_op(name: &str, value: TensorValue) -> Operation {
    let mut op = Operation::new("const", name);
    op.outputs
        .push(NamedValueType::tensor(name, value.ty().clone()));
    op.attributes.insert("val".into(), Value::Tensor(value));
    op
}

/// Builds a (multi-function) program.
#[derive(Debug, Default)]
pub struct ProgramBuilder {
    program: Program,
}

impl ProgramBuilder {
    /// An empty program (version 1).
    pub fn new() -> ProgramBuilder {
        ProgramBuilder::default()
    }

    /// Build function `name` with `build` and add it.
    pub fn function(
        &mut self,
        name: &str,
        build: impl FnOnce(&mut FunctionBuilder) -> Result<(), MilError>,
    ) -> Result<(), MilError> {
        let mut fb = FunctionBuilder::new(name);
        build(&mut fb)?;
        let f = fb.finish()?;
        self.add_function(name, f)
    }

    /// Add a finished function.
    pub fn add_function(&mut self, name: &str, f: Function) -> Result<(), MilError> {
        if self.program.functions.contains_key(name) {
            return Err(MilError::DuplicateFunction(name.to_string()));
        }
        self.program.functions.insert(name.to_string(), f);
        Ok(())
    }

    /// Set a program attribute (e.g. `buildInfo`).
    pub fn set_attribute(&mut self, key: &str, value: Value) {
        self.program.attributes.insert(key.to_string(), value);
    }

    /// Validate and return the program.
    pub fn build(self) -> Result<Program, MilError> {
        crate::validate::validate(&self.program).map_err(|e| MilError::Validation(Box::new(e)))?;
        Ok(self.program)
    }
}
