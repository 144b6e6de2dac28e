//! The CPU interpreter: compiles each function of a [`mil::Program`] once, then runs it.
//!
//! Load ([`Interpreter::new`]):
//! 1. every op type is checked against the kernel table (unknown → [`RuntimeError::UnsupportedOp`]
//!    naming the op type and op name);
//! 2. names are resolved to environment slots (undefined / duplicate names are typed errors);
//! 3. `const` ops become slot values and `constexpr_*` ops are evaluated **once** (outputs keep the
//!    LUT / scale dtype). Weights shared between functions (same underlying buffer, as in a
//!    multi-function package whose functions reference the same blob) are converted once;
//! 4. the last use of every runtime value is computed so that intermediates are dropped right
//!    after their last consumer.
//!
//! Run ([`Interpreter::run`]): inputs are checked against the function signature (names, dtypes,
//! fixed dims), ops execute in program order, every op output is checked against its declared
//! type (dtype and fixed dims), and the block outputs are returned by name. States
//! (`state<tensor<…>>` inputs) are passed in like inputs; `write_state` replaces the state's
//! value and the final value of every state is returned in the outputs under the state's name.

use crate::backend::TensorMap;
use crate::error::{KernelError, RuntimeError};
use crate::ops::{self, ArgRef, KernelFn, OpArgs, Param};
use crate::tensor::{Tensor, is_runtime_dtype};
use mil::{
    Binding, DType, Dim, Function, NamedValueType, Program, TensorType, TensorValue, Value,
    ValueType,
};
use std::collections::{BTreeMap, BTreeSet};

/// What a compiled op does at run time.
#[derive(Clone, Debug)]
enum Exec {
    Kernel(KernelFn),
    ReadState(usize),
    WriteState(usize),
}

#[derive(Clone, Debug)]
struct CompiledOp {
    op_type: String,
    op_name: String,
    exec: Exec,
    params: Vec<Param>,
    outputs: Vec<usize>,
    declared: Vec<NamedValueType>,
    free_after: Vec<usize>,
}

/// One declared function input (tensor or state).
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    /// Input name.
    pub name: String,
    /// Element dtype and (possibly flexible) shape.
    pub ty: TensorType,
    /// True for `state<…>` inputs (read/written with `read_state` / `write_state`).
    pub is_state: bool,
}

/// Wall time per op type of one run ([`Interpreter::run_profiled`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// op type → (number of ops executed, total time).
    pub by_op_type: BTreeMap<String, (usize, std::time::Duration)>,
}

/// A compiled function.
#[derive(Clone, Debug)]
struct CompiledFunction {
    inputs: Vec<(InputSpec, usize)>,
    outputs: Vec<(String, usize)>,
    output_types: Vec<Option<TensorType>>,
    slot_of: BTreeMap<String, usize>,
    template: Vec<Option<Tensor>>,
    ops: Vec<CompiledOp>,
}

/// A loaded program, ready to run any of its functions.
#[derive(Clone, Debug)]
pub struct Interpreter {
    functions: BTreeMap<String, CompiledFunction>,
    /// Per function: output name → the value its `reduce_argmax` reads ([`crate::logits`]).
    argmax_inputs: BTreeMap<String, BTreeMap<String, String>>,
}

/// A deferred constexpr evaluation (run only if the result is not already shared).
type ConstexprEval = Box<dyn Fn() -> Result<Tensor, KernelError>>;

/// Identity of a weight for cross-function sharing: op type + (dtype, shape, buffer address, length).
type ShareKey = String;

fn value_key(v: &TensorValue) -> Option<String> {
    let b = v.bytes()?;
    if b.len() < 4096 {
        return None;
    }
    Some(format!(
        "{}{:?}@{:p}+{}",
        v.dtype(),
        v.shape(),
        b.as_bytes().as_ptr(),
        b.len()
    ))
}

struct Loader<'p> {
    fname: &'p str,
    shared: &'p mut BTreeMap<ShareKey, Tensor>,
}

impl Loader<'_> {
    fn op_err(&self, op: &mil::Operation, source: KernelError) -> RuntimeError {
        RuntimeError::Op {
            function: self.fname.to_string(),
            op_type: op.op_type.clone(),
            op_name: op.name.clone(),
            source: Box::new(source),
        }
    }

    fn convert(&mut self, v: &TensorValue, name: &str) -> Result<Tensor, RuntimeError> {
        let key = value_key(v).map(|k| format!("const|{k}"));
        if let Some(k) = &key
            && let Some(t) = self.shared.get(k)
        {
            return Ok(t.clone());
        }
        let t = Tensor::from_value(v).map_err(|e| match e {
            RuntimeError::InvalidTensor(m) => RuntimeError::InvalidTensor(format!("`{name}`: {m}")),
            e => e,
        })?;
        if let Some(k) = key {
            self.shared.insert(k, t.clone());
        }
        Ok(t)
    }
}

fn tensor_input_type(f: &str, v: &NamedValueType) -> Result<(TensorType, bool), RuntimeError> {
    let (t, st) = match &v.ty {
        ValueType::Tensor(t) => (t, false),
        ValueType::State(t) => (t, true),
        other => {
            return Err(RuntimeError::UnsupportedInputType {
                function: f.to_string(),
                name: v.name.clone(),
                ty: other.to_string(),
            });
        }
    };
    if !is_runtime_dtype(t.dtype) || t.dtype == DType::Str {
        return Err(RuntimeError::UnsupportedInputType {
            function: f.to_string(),
            name: v.name.clone(),
            ty: v.ty.to_string(),
        });
    }
    Ok((t.clone(), st))
}

fn compile(
    fname: &str,
    f: &Function,
    shared: &mut BTreeMap<ShareKey, Tensor>,
) -> Result<CompiledFunction, RuntimeError> {
    let mut ld = Loader { fname, shared };
    let mut slot_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut template: Vec<Option<Tensor>> = Vec::new();
    // raw literals of const ops (for constexpr inputs, which may be sub-byte)
    let mut literals: BTreeMap<String, TensorValue> = BTreeMap::new();
    let mut state_slots = BTreeSet::new();
    let define =
        |name: &str, slot_of: &mut BTreeMap<String, usize>, template: &mut Vec<Option<Tensor>>| {
            if slot_of.contains_key(name) {
                return Err(RuntimeError::DuplicateValue {
                    function: fname.to_string(),
                    name: name.to_string(),
                });
            }
            slot_of.insert(name.to_string(), template.len());
            template.push(None);
            Ok(template.len() - 1)
        };
    let mut inputs = Vec::new();
    for v in &f.inputs {
        let (ty, is_state) = tensor_input_type(fname, v)?;
        let s = define(&v.name, &mut slot_of, &mut template)?;
        if is_state {
            state_slots.insert(s);
        }
        inputs.push((
            InputSpec {
                name: v.name.clone(),
                ty,
                is_state,
            },
            s,
        ));
    }
    let mut ops_out: Vec<CompiledOp> = Vec::new();
    let mut last_use: BTreeMap<usize, usize> = BTreeMap::new();
    let mut is_const_slot = BTreeSet::new();
    for op in &f.block.operations {
        if !ops::is_supported(&op.op_type) || !op.blocks.is_empty() {
            return Err(RuntimeError::UnsupportedOp {
                function: fname.to_string(),
                op_type: op.op_type.clone(),
                op_name: op.name.clone(),
            });
        }
        if op.op_type == "const" {
            let out = op
                .outputs
                .first()
                .ok_or_else(|| ld.op_err(op, KernelError::shape("const op without output")))?;
            let val = match op.const_value() {
                Some(Value::Tensor(t)) => t,
                _ => return Err(ld.op_err(op, KernelError::bad("val", "missing or not a tensor"))),
            };
            let s = define(&out.name, &mut slot_of, &mut template)?;
            is_const_slot.insert(s);
            literals.insert(out.name.clone(), val.clone());
            // sub-byte literals only feed constexpr ops; they have no runtime tensor form
            if is_runtime_dtype(val.dtype()) {
                template[s] = Some(ld.convert(val, &out.name)?);
            }
            continue;
        }
        if ops::is_constexpr(&op.op_type) {
            let lit = |p: &str| -> Result<Option<TensorValue>, RuntimeError> {
                match op.inputs.get(p).map(Vec::as_slice) {
                    None => Ok(None),
                    Some([Binding::Value(Value::Tensor(t))]) => Ok(Some(t.clone())),
                    Some([Binding::Name(n)]) => {
                        literals.get(n).cloned().map(Some).ok_or_else(|| {
                            RuntimeError::UndefinedValue {
                                function: fname.to_string(),
                                op_name: op.name.clone(),
                                name: n.clone(),
                            }
                        })
                    }
                    Some(_) => Err(RuntimeError::Op {
                        function: fname.to_string(),
                        op_type: op.op_type.clone(),
                        op_name: op.name.clone(),
                        source: Box::new(KernelError::bad(p, "expected one constant tensor")),
                    }),
                }
            };
            let req = |p: &str| -> Result<TensorValue, RuntimeError> {
                lit(p)?.ok_or_else(|| RuntimeError::Op {
                    function: fname.to_string(),
                    op_type: op.op_type.clone(),
                    op_name: op.name.clone(),
                    source: Box::new(KernelError::MissingParam(p.to_string())),
                })
            };
            let (key_inputs, result): (Vec<TensorValue>, ConstexprEval) = match op.op_type.as_str()
            {
                "constexpr_lut_to_dense" => {
                    let (i, l) = (req("indices")?, req("lut")?);
                    let va = match lit("vector_axis")? {
                        Some(v) => Some(
                            v.to_i64_vec()
                                .ok()
                                .and_then(|v| v.first().copied())
                                .ok_or_else(|| {
                                    ld.op_err(
                                        op,
                                        KernelError::bad("vector_axis", "not an integer scalar"),
                                    )
                                })?,
                        ),
                        None => None,
                    };
                    (
                        vec![i.clone(), l.clone()],
                        Box::new(move || ops::constexpr::lut_to_dense(&i, &l, va)),
                    )
                }
                _ => {
                    let (d, s, o) = (req("data")?, req("scale")?, lit("offset")?);
                    let mut keys = vec![d.clone(), s.clone()];
                    keys.extend(o.clone());
                    (
                        keys,
                        Box::new(move || ops::constexpr::blockwise_shift_scale(&d, &s, o.as_ref())),
                    )
                }
            };
            let key = key_inputs
                .iter()
                .map(value_key)
                .collect::<Option<Vec<_>>>()
                .map(|k| format!("{}|{}", op.op_type, k.join("|")));
            let t = match key.as_ref().and_then(|k| ld.shared.get(k)) {
                Some(t) => t.clone(),
                None => {
                    let t = result().map_err(|e| ld.op_err(op, e))?;
                    if let Some(k) = key {
                        ld.shared.insert(k, t.clone());
                    }
                    t
                }
            };
            let out = op
                .outputs
                .first()
                .ok_or_else(|| ld.op_err(op, KernelError::shape("constexpr op without output")))?;
            check_declared(fname, op, out, &t)?;
            let s = define(&out.name, &mut slot_of, &mut template)?;
            is_const_slot.insert(s);
            template[s] = Some(t);
            continue;
        }
        let idx = ops_out.len();
        let mut params = Vec::with_capacity(op.inputs.len());
        for (pname, bindings) in &op.inputs {
            let mut args = Vec::with_capacity(bindings.len());
            for b in bindings {
                args.push(match b {
                    Binding::Name(n) => {
                        let s = *slot_of.get(n).ok_or_else(|| RuntimeError::UndefinedValue {
                            function: fname.to_string(),
                            op_name: op.name.clone(),
                            name: n.clone(),
                        })?;
                        if template[s].is_none() && is_const_slot.contains(&s) {
                            return Err(ld.op_err(
                                op,
                                KernelError::bad(pname, format!("`{n}` has a storage-only dtype")),
                            ));
                        }
                        last_use.insert(s, idx);
                        ArgRef::Slot(s)
                    }
                    Binding::Value(Value::Tensor(t)) => {
                        ArgRef::Inline(ld.convert(t, &format!("{}.{pname}", op.name))?)
                    }
                    Binding::Value(_) => {
                        return Err(
                            ld.op_err(op, KernelError::bad(pname, "inline value is not a tensor"))
                        );
                    }
                });
            }
            params.push(Param {
                name: pname.clone(),
                args,
            });
        }
        let exec = match op.op_type.as_str() {
            "read_state" | "write_state" => {
                let s = match params
                    .iter()
                    .find(|p| p.name == "input")
                    .map(|p| p.args.as_slice())
                {
                    Some([ArgRef::Slot(s)]) if state_slots.contains(s) => *s,
                    _ => {
                        return Err(
                            ld.op_err(op, KernelError::bad("input", "must name a state input"))
                        );
                    }
                };
                if op.op_type == "read_state" {
                    Exec::ReadState(s)
                } else {
                    Exec::WriteState(s)
                }
            }
            t => Exec::Kernel(
                ops::kernel_for(t).ok_or_else(|| RuntimeError::UnsupportedOp {
                    function: fname.to_string(),
                    op_type: op.op_type.clone(),
                    op_name: op.name.clone(),
                })?,
            ),
        };
        let mut outs = Vec::with_capacity(op.outputs.len());
        for o in &op.outputs {
            let s = define(&o.name, &mut slot_of, &mut template)?;
            last_use.insert(s, idx);
            outs.push(s);
        }
        ops_out.push(CompiledOp {
            op_type: op.op_type.clone(),
            op_name: op.name.clone(),
            exec,
            params,
            outputs: outs,
            declared: op.outputs.clone(),
            free_after: Vec::new(),
        });
    }
    let mut outputs = Vec::new();
    let mut output_types = Vec::new();
    let mut pinned: BTreeSet<usize> = state_slots.clone();
    for name in &f.block.outputs {
        let s = *slot_of
            .get(name)
            .ok_or_else(|| RuntimeError::UndefinedOutput {
                function: fname.to_string(),
                name: name.clone(),
            })?;
        pinned.insert(s);
        outputs.push((name.clone(), s));
        output_types.push(f.find_value(name).and_then(|v| v.ty.as_tensor().cloned()));
    }
    for (slot, idx) in last_use {
        if !pinned.contains(&slot) && !is_const_slot.contains(&slot) {
            ops_out[idx].free_after.push(slot);
        }
    }
    Ok(CompiledFunction {
        inputs,
        outputs,
        output_types,
        slot_of,
        template,
        ops: ops_out,
    })
}

fn dims_match(declared: &[Dim], shape: &[usize]) -> bool {
    declared.len() == shape.len()
        && declared.iter().zip(shape).all(|(d, &s)| match d {
            Dim::Fixed(n) => *n == s as u64,
            Dim::Unknown { .. } => true,
        })
}

fn check_declared(
    fname: &str,
    op: &mil::Operation,
    decl: &NamedValueType,
    t: &Tensor,
) -> Result<(), RuntimeError> {
    if let Some(tt) = decl.ty.as_tensor()
        && (tt.dtype != t.dtype() || !dims_match(&tt.shape, t.shape()))
    {
        return Err(RuntimeError::OutputMismatch {
            function: fname.to_string(),
            op_name: op.name.clone(),
            output: decl.name.clone(),
            detail: format!(
                "computed {}, declared {tt} ({})",
                t.tensor_type(),
                op.op_type
            ),
        });
    }
    Ok(())
}

fn fmt_dims(d: &[Dim]) -> String {
    let v: Vec<String> = d.iter().map(ToString::to_string).collect();
    format!("[{}]", v.join(", "))
}

impl Interpreter {
    /// Compile every function of `program` (see the module doc).
    pub fn new(program: &Program) -> Result<Interpreter, RuntimeError> {
        let mut shared = BTreeMap::new();
        let mut functions = BTreeMap::new();
        let mut argmax_inputs = BTreeMap::new();
        for (name, f) in &program.functions {
            functions.insert(name.clone(), compile(name, f, &mut shared)?);
            let found: BTreeMap<String, String> = f
                .block
                .outputs
                .iter()
                .filter_map(|o| Some((o.clone(), crate::logits::argmax_input(f, o)?)))
                .collect();
            argmax_inputs.insert(name.clone(), found);
        }
        Ok(Interpreter {
            functions,
            argmax_inputs,
        })
    }

    /// The value whose `reduce_argmax` produces output `output` of `function` (through casts and
    /// reshapes), if it is one: where the full-vocabulary logits of a head chunk are.
    pub fn argmax_input(&self, function: &str, output: &str) -> Option<&str> {
        self.argmax_inputs
            .get(function)?
            .get(output)
            .map(String::as_str)
    }

    /// Function names, sorted.
    pub fn functions(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }

    fn function(&self, name: &str) -> Result<&CompiledFunction, RuntimeError> {
        self.functions
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownFunction {
                name: name.to_string(),
                available: self.functions(),
            })
    }

    /// The declared inputs (tensors and states) of a function, in order.
    pub fn inputs(&self, function: &str) -> Result<Vec<InputSpec>, RuntimeError> {
        Ok(self
            .function(function)?
            .inputs
            .iter()
            .map(|(s, _)| s.clone())
            .collect())
    }

    /// The outputs of a function, in order, with their declared tensor types when known.
    pub fn outputs(
        &self,
        function: &str,
    ) -> Result<Vec<(String, Option<TensorType>)>, RuntimeError> {
        let f = self.function(function)?;
        Ok(f.outputs
            .iter()
            .map(|(n, _)| n.clone())
            .zip(f.output_types.iter().cloned())
            .collect())
    }

    /// The constant (const or expanded constexpr) value of a name, if it is one.
    pub fn constant(&self, function: &str, name: &str) -> Result<Option<Tensor>, RuntimeError> {
        let f = self.function(function)?;
        Ok(f.slot_of.get(name).and_then(|&s| f.template[s].clone()))
    }

    /// Run `function` on `inputs` and return its outputs (and final states) by name.
    pub fn run(
        &self,
        function: &str,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        Ok(self.run_with_taps(function, inputs, &[])?.0)
    }

    /// Like [`Interpreter::run`], and also return the named internal values listed in `taps`.
    pub fn run_with_taps(
        &self,
        function: &str,
        inputs: &BTreeMap<String, Tensor>,
        taps: &[&str],
    ) -> Result<(TensorMap, TensorMap), RuntimeError> {
        self.run_inner(function, inputs, taps, None)
    }

    /// Like [`Interpreter::run`], and also return the wall time spent per op type.
    pub fn run_profiled(
        &self,
        function: &str,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<(TensorMap, Profile), RuntimeError> {
        let mut prof = Profile::default();
        let (out, _) = self.run_inner(function, inputs, &[], Some(&mut prof))?;
        Ok((out, prof))
    }

    fn run_inner(
        &self,
        function: &str,
        inputs: &BTreeMap<String, Tensor>,
        taps: &[&str],
        mut profile: Option<&mut Profile>,
    ) -> Result<(TensorMap, TensorMap), RuntimeError> {
        let f = self.function(function)?;
        let fname = function.to_string();
        let mut tap_slots = Vec::with_capacity(taps.len());
        for t in taps {
            let s = *f.slot_of.get(*t).ok_or_else(|| RuntimeError::UnknownTap {
                function: fname.clone(),
                name: t.to_string(),
            })?;
            tap_slots.push((t.to_string(), s));
        }
        let keep: BTreeSet<usize> = tap_slots.iter().map(|&(_, s)| s).collect();
        for name in inputs.keys() {
            if !f.inputs.iter().any(|(s, _)| &s.name == name) {
                return Err(RuntimeError::UnexpectedInput {
                    function: fname.clone(),
                    name: name.clone(),
                });
            }
        }
        let mut env = f.template.clone();
        for (spec, slot) in &f.inputs {
            let t = inputs
                .get(&spec.name)
                .ok_or_else(|| RuntimeError::MissingInput {
                    function: fname.clone(),
                    name: spec.name.clone(),
                })?;
            if t.dtype() != spec.ty.dtype {
                return Err(RuntimeError::InputDtype {
                    function: fname.clone(),
                    name: spec.name.clone(),
                    expected: spec.ty.dtype,
                    found: t.dtype(),
                });
            }
            if !dims_match(&spec.ty.shape, t.shape()) {
                return Err(RuntimeError::InputShape {
                    function: fname.clone(),
                    name: spec.name.clone(),
                    expected: fmt_dims(&spec.ty.shape),
                    found: t.shape().to_vec(),
                });
            }
            env[*slot] = Some(t.clone());
        }
        for op in &f.ops {
            let started = profile.as_ref().map(|_| std::time::Instant::now());
            let err = |source: KernelError| RuntimeError::Op {
                function: fname.clone(),
                op_type: op.op_type.clone(),
                op_name: op.op_name.clone(),
                source: Box::new(source),
            };
            let results: Vec<Tensor> = match op.exec {
                Exec::ReadState(s) => vec![
                    env[s]
                        .clone()
                        .ok_or_else(|| err(KernelError::bad("input", "state has no value")))?,
                ],
                Exec::WriteState(s) => {
                    let args = OpArgs {
                        params: &op.params,
                        env: &env,
                        outputs: &op.declared,
                    };
                    let data = args.req("data").map_err(err)?.clone();
                    if let Some(cur) = &env[s]
                        && (cur.dtype() != data.dtype() || cur.shape() != data.shape())
                    {
                        return Err(err(KernelError::shape(format!(
                            "data {} does not match the state's type {}",
                            data.tensor_type(),
                            cur.tensor_type()
                        ))));
                    }
                    env[s] = Some(data);
                    Vec::new()
                }
                Exec::Kernel(k) => k(&OpArgs {
                    params: &op.params,
                    env: &env,
                    outputs: &op.declared,
                })
                .map_err(err)?,
            };
            if results.len() != op.outputs.len() {
                return Err(err(KernelError::shape(format!(
                    "kernel produced {} outputs, op declares {}",
                    results.len(),
                    op.outputs.len()
                ))));
            }
            for ((t, &slot), decl) in results.into_iter().zip(&op.outputs).zip(&op.declared) {
                if let Some(tt) = decl.ty.as_tensor()
                    && (tt.dtype != t.dtype() || !dims_match(&tt.shape, t.shape()))
                {
                    return Err(RuntimeError::OutputMismatch {
                        function: fname.clone(),
                        op_name: op.op_name.clone(),
                        output: decl.name.clone(),
                        detail: format!(
                            "computed {}, declared {tt} ({})",
                            t.tensor_type(),
                            op.op_type
                        ),
                    });
                }
                env[slot] = Some(t);
            }
            for s in &op.free_after {
                if !keep.contains(s) {
                    env[*s] = None;
                }
            }
            if let (Some(p), Some(t0)) = (profile.as_deref_mut(), started) {
                let e = p.by_op_type.entry(op.op_type.clone()).or_default();
                e.0 += 1;
                e.1 += t0.elapsed();
            }
        }
        let mut out = BTreeMap::new();
        for (name, s) in &f.outputs {
            let t = env[*s]
                .clone()
                .ok_or_else(|| RuntimeError::UndefinedOutput {
                    function: fname.clone(),
                    name: name.clone(),
                })?;
            out.insert(name.clone(), t);
        }
        for (spec, s) in &f.inputs {
            if spec.is_state
                && let Some(t) = env[*s].clone()
            {
                out.insert(spec.name.clone(), t);
            }
        }
        let mut tapped = BTreeMap::new();
        for (name, s) in tap_slots {
            if let Some(t) = env[s].clone() {
                tapped.insert(name, t);
            }
        }
        Ok((out, tapped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mil::Operation;

    fn unary(ty: &str, x: &str, y: &str) -> Operation {
        let mut op = Operation::new(ty, y);
        op.inputs.insert("x".into(), vec![Binding::Name(x.into())]);
        op.outputs
            .push(NamedValueType::tensor(y, TensorType::new(DType::F32, &[2])));
        op
    }

    #[test]
    fn intermediates_are_freed_after_their_last_use() {
        // x → a → b → c, and a is used again by d; outputs c and d
        let mut f = Function::new(mil::OPSET_IOS18);
        f.inputs.push(NamedValueType::tensor(
            "x",
            TensorType::new(DType::F32, &[2]),
        ));
        for (x, y) in [("x", "a"), ("a", "b"), ("b", "c"), ("a", "d")] {
            f.block.operations.push(unary("abs", x, y));
        }
        f.block.outputs = vec!["c".into(), "d".into()];
        let it = Interpreter::new(&Program::single("main", f)).unwrap();
        let cf = &it.functions["main"];
        let slot = |n: &str| cf.slot_of[n];
        let frees: Vec<Vec<usize>> = cf.ops.iter().map(|o| o.free_after.clone()).collect();
        // x (an input) is dropped after op 0, b after op 2, a after op 3; c and d are outputs
        assert_eq!(
            frees,
            vec![vec![slot("x")], vec![], vec![slot("b")], vec![slot("a")]]
        );
    }
}
