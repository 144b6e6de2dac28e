//! MIL text printer, close to the `program(1.3)` text that Core ML's compiler writes (`model.mil`):
//!
//! ```text
//! program(1.3)
//! {
//!     func main<ios18>(tensor<fp16, [1, 1, 128]> a, tensor<fp16, [1, 1, 128]> b) {
//!             tensor<int32, []> axis = const()[name = string("axis"), val = int32(-1)];
//!             tensor<fp16, [1, 1, 128]> x = add(x = a, y = b)[name = string("x")];
//!     } -> (x);
//! }
//! ```
//!
//! One line per op: output types and names, op type, parameters sorted by name (variadic ones as
//! `(a, b)`, inline constexpr values as literals), then the attributes (`name` first). Scalars print
//! as `int32(-1)`, `fp16(0.125)`, `bool(false)`, `string("x")`; small tensors in full
//! (`tensor<int32, [3]>([0, 1, 0])`); literals that would go to `weight.bin` (≥ 10 elements of a
//! blob dtype) print as a `BLOBFILE(bytes = …, fnv1a64 = …)` placeholder so snapshots stay small
//! but still change when the weights do. Floats print in Rust's shortest round-trip form.
//! Output is deterministic (functions, params and attributes are in `BTreeMap` order).

use crate::digest::value_digest;
use crate::{
    Binding, DType, Function, Operation, Program, TensorData, TensorValue, Value, ValueType,
};
use std::fmt::Write;

/// Literals with at least this many elements of a blob dtype print as placeholders.
pub const BLOB_MIN_ELEMENTS: usize = 10;

/// True if `dtype` is stored in `weight.bin` when large (fp16/fp32/bf16, 8/16/32-bit ints and
/// sub-byte types).
pub fn is_blob_dtype(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F16
            | DType::F32
            | DType::Bf16
            | DType::I8
            | DType::U8
            | DType::I16
            | DType::U16
            | DType::I32
            | DType::U32
            | DType::I4
            | DType::U1
            | DType::U2
            | DType::U3
            | DType::U4
            | DType::U6
    )
}

/// The `ios18`-style name of an opset string (`CoreML8` → `ios18`); other strings verbatim.
pub fn opset_alias(opset: &str) -> &str {
    match opset {
        "CoreML5" => "ios15",
        "CoreML6" => "ios16",
        "CoreML7" => "ios17",
        "CoreML8" => "ios18",
        other => other,
    }
}

/// Print a whole program.
pub fn print_program(p: &Program) -> String {
    let mut s = String::from("program(1.3)\n");
    if !p.attributes.is_empty() {
        let attrs: Vec<String> = p
            .attributes
            .iter()
            .map(|(k, v)| format!("{k} = {}", fmt_value(v)))
            .collect();
        let _ = writeln!(s, "[{}]", attrs.join(", "));
    }
    s.push_str("{\n");
    for (name, f) in &p.functions {
        s.push_str(&print_function(name, f));
    }
    s.push_str("}\n");
    s
}

/// Print one function (`    func name<opset>(inputs) { ... } -> (outputs);`).
pub fn print_function(name: &str, f: &Function) -> String {
    let mut s = String::new();
    let inputs: Vec<String> = f
        .inputs
        .iter()
        .map(|i| format!("{} {}", i.ty, i.name))
        .collect();
    let _ = writeln!(
        s,
        "    func {name}<{}>({}) {{",
        opset_alias(&f.opset),
        inputs.join(", ")
    );
    for op in &f.block.operations {
        let _ = writeln!(s, "            {}", print_op(op));
    }
    let _ = writeln!(s, "    }} -> ({});", f.block.outputs.join(", "));
    s
}

/// Print one op (without indentation or newline).
pub fn print_op(op: &Operation) -> String {
    let mut s = String::new();
    let outs: Vec<String> = op
        .outputs
        .iter()
        .map(|o| format!("{} {}", o.ty, o.name))
        .collect();
    if !outs.is_empty() {
        let _ = write!(s, "{} = ", outs.join(", "));
    }
    let params: Vec<String> = op
        .inputs
        .iter()
        .map(|(k, bs)| {
            let vals: Vec<String> = bs.iter().map(fmt_binding).collect();
            if vals.len() == 1 {
                format!("{k} = {}", vals[0])
            } else {
                format!("{k} = ({})", vals.join(", "))
            }
        })
        .collect();
    let mut attrs = vec![format!("name = string({})", quote(&op.name))];
    attrs.extend(
        op.attributes
            .iter()
            .map(|(k, v)| format!("{k} = {}", fmt_value(v))),
    );
    let _ = write!(
        s,
        "{}({})[{}];",
        op.op_type,
        params.join(", "),
        attrs.join(", ")
    );
    for b in &op.blocks {
        let _ = write!(
            s,
            " {{ {} ops -> ({}) }}",
            b.operations.len(),
            b.outputs.join(", ")
        );
    }
    s
}

fn fmt_binding(b: &Binding) -> String {
    match b {
        Binding::Name(n) => n.clone(),
        Binding::Value(v) => fmt_value(v),
    }
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Format a literal value.
pub fn fmt_value(v: &Value) -> String {
    match v {
        Value::Tensor(t) => fmt_tensor(t),
        Value::Tuple(vs) => {
            let parts: Vec<String> = vs.iter().map(fmt_value).collect();
            format!("tuple({})", parts.join(", "))
        }
        Value::List { elem, values } => {
            let parts: Vec<String> = values.iter().map(fmt_value).collect();
            format!("list<{elem}>([{}])", parts.join(", "))
        }
        Value::Dict {
            key,
            value,
            entries,
        } => {
            let parts: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{{{}, {}}}", fmt_plain(k), fmt_plain(v)))
                .collect();
            format!(
                "dict<{}, {}>({{{}}})",
                bare(key),
                bare(value),
                parts.join(", ")
            )
        }
    }
}

/// Scalars without their type wrapper (dictionary entries).
fn fmt_plain(v: &Value) -> String {
    match v {
        Value::Tensor(t) if t.ty().rank() == 0 => {
            elements(t).into_iter().next().unwrap_or_default()
        }
        other => fmt_value(other),
    }
}

/// `string` rather than `tensor<string, []>` for scalar types.
fn bare(t: &ValueType) -> String {
    match t {
        ValueType::Tensor(tt) if tt.rank() == 0 => tt.dtype.mil_name().to_string(),
        other => other.to_string(),
    }
}

fn fmt_tensor(t: &TensorValue) -> String {
    let ty = t.ty();
    let n = t.num_elements();
    if ty.rank() > 0 && n >= BLOB_MIN_ELEMENTS && is_blob_dtype(ty.dtype) {
        let bytes = t.bytes().map_or(0, |b| b.len());
        return format!(
            "{ty}(BLOBFILE(bytes = uint64({bytes}), fnv1a64 = string(\"{:016x}\")))",
            value_digest(&Value::Tensor(t.clone()))
        );
    }
    let els = elements(t);
    if ty.rank() == 0 {
        let e = els.into_iter().next().unwrap_or_default();
        format!("{}({e})", ty.dtype.mil_name())
    } else {
        format!("{ty}([{}])", els.join(", "))
    }
}

/// Every element of a tensor as text.
fn elements(t: &TensorValue) -> Vec<String> {
    if let TensorData::Strings(s) = t.data() {
        return s.iter().map(|s| quote(s)).collect();
    }
    let d = t.dtype();
    if d == DType::Bool
        && let Ok(v) = t.to_i64_vec()
    {
        return v.iter().map(|&b| (b != 0).to_string()).collect();
    }
    if d.is_int()
        && let Ok(v) = t.to_i64_vec()
    {
        return v.iter().map(i64::to_string).collect();
    }
    match t.to_f32_vec() {
        Ok(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Err(_) => vec![format!(
            "BLOBFILE(bytes = uint64({}), fnv1a64 = string(\"{:016x}\"))",
            t.bytes().map_or(0, |b| b.len()),
            value_digest(&Value::Tensor(t.clone()))
        )],
    }
}
