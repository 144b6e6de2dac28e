//! Formatting of types and literals in the compiled `model.mil` dialects.
//!
//! * Types: `tensor<fp16, [1, 8]>`; a rank-0 tensor is the bare dtype (`int32`) in the iOS 18
//!   dialect and `tensor<int32, []>` in the legacy one; `state<tensor<…>>`, `list<T, N|?>`,
//!   `tuple<A, B>`, `dict<K, V>`.
//! * Typed literals: `int32(3)`, `fp32(0x1p-1)`, `string("x")` (legacy: `tensor<string, []>("x")`),
//!   `tensor<int32, [2]>([1, 1])`, nested brackets for higher ranks, `dict<K, V>({{k, v}, …})`,
//!   `tuple<…>((a, b))`; blob references
//!   `tensor<fp16, [4]>(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64(64)))`.
//! * Elements: floats in C99 hex ([`super::hexfloat`]), integers in decimal (sub-byte types
//!   unpacked), `true` / `false`, strings in double quotes with `\"` and `\\` escaped.

use super::{Dialect, TextError, hexfloat};
use crate::{DType, TensorData, TensorType, TensorValue, Value, ValueType};
use std::fmt::Write;

/// The text of a tensor type.
pub fn fmt_tensor_type(t: &TensorType, d: Dialect) -> String {
    if t.rank() == 0 && d == Dialect::Ios18 {
        return t.dtype.mil_name().to_string();
    }
    let dims: Vec<String> = t.shape.iter().map(ToString::to_string).collect();
    format!("tensor<{}, [{}]>", t.dtype.mil_name(), dims.join(", "))
}

/// The text of a value type.
pub fn fmt_type(t: &ValueType, d: Dialect) -> String {
    match t {
        ValueType::Tensor(t) => fmt_tensor_type(t, d),
        ValueType::State(t) => format!("state<{}>", fmt_tensor_type(t, d)),
        ValueType::List { elem, length } => match length {
            Some(l) => format!("list<{}, {l}>", fmt_type(elem, d)),
            None => format!("list<{}, ?>", fmt_type(elem, d)),
        },
        ValueType::Tuple(ts) => {
            let parts: Vec<String> = ts.iter().map(|t| fmt_type(t, d)).collect();
            format!("tuple<{}>", parts.join(", "))
        }
        ValueType::Dict { key, value } => {
            format!("dict<{}, {}>", fmt_type(key, d), fmt_type(value, d))
        }
    }
}

/// A string literal body: `"…"` with `"` and `\` escaped (and control characters as `\n`, `\t`,
/// `\r`, `\u{…}`).
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{{{:x}}}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A scalar literal with its type wrapper (`uint64(64)`, legacy `tensor<uint64, []>(64)`).
fn typed_scalar(dtype: DType, body: &str, d: Dialect) -> String {
    format!("{}({body})", fmt_tensor_type(&TensorType::scalar(dtype), d))
}

/// `BLOBFILE(path = …, offset = …)` with the tensor type in front.
pub fn fmt_blobfile(t: &TensorType, path: &str, offset: u64, d: Dialect) -> String {
    format!(
        "{}(BLOBFILE(path = {}, offset = {}))",
        fmt_tensor_type(t, d),
        typed_scalar(DType::Str, &quote(path), d),
        typed_scalar(DType::U64, &offset.to_string(), d),
    )
}

/// Every element of a tensor as text.
fn elements(t: &TensorValue) -> Result<Vec<String>, TextError> {
    if let TensorData::Strings(s) = t.data() {
        return Ok(s.iter().map(|s| quote(s)).collect());
    }
    let d = t.dtype();
    let bytes = t.bytes().map(|b| b.as_bytes()).unwrap_or(&[]);
    Ok(match d {
        DType::Bool => bytes
            .iter()
            .map(|&b| if b != 0 { "true" } else { "false" }.to_string())
            .collect(),
        DType::U64 => bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])).to_string())
            .collect(),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| hexfloat::format(f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
            .collect(),
        DType::F16 | DType::F32 | DType::Bf16 => t
            .to_f32_vec()?
            .into_iter()
            .map(|x| hexfloat::format(f64::from(x)))
            .collect(),
        d if d.is_int() => t.to_i64_vec()?.iter().map(i64::to_string).collect(),
        d => {
            return Err(TextError::Unsupported(format!(
                "a {d} literal has no text form here"
            )));
        }
    })
}

/// Nested-bracket text of `els` in `shape` (row-major).
fn nest(els: &[String], shape: &[usize]) -> String {
    fn rec(out: &mut String, els: &[String], shape: &[usize], pos: &mut usize) {
        out.push('[');
        let n = shape[0];
        for i in 0..n {
            if i > 0 {
                out.push_str(", ");
            }
            if shape.len() == 1 {
                out.push_str(els.get(*pos).map_or("", String::as_str));
                *pos += 1;
            } else {
                rec(out, els, &shape[1..], pos);
            }
        }
        out.push(']');
    }
    let mut out = String::new();
    if shape.is_empty() {
        out.push_str(els.first().map_or("", String::as_str));
    } else {
        let mut pos = 0;
        rec(&mut out, els, shape, &mut pos);
    }
    out
}

/// A literal without its type wrapper (inside dictionaries, tuples and lists, and the content of a
/// typed tensor literal); the same in both dialects.
pub fn fmt_untyped(v: &Value) -> Result<String, TextError> {
    Ok(match v {
        Value::Tensor(t) => nest(&elements(t)?, &t.shape()),
        Value::Tuple(vs) => {
            let parts: Result<Vec<String>, TextError> = vs.iter().map(fmt_untyped).collect();
            format!("({})", parts?.join(", "))
        }
        Value::List { values, .. } => {
            let parts: Result<Vec<String>, TextError> = values.iter().map(fmt_untyped).collect();
            format!("[{}]", parts?.join(", "))
        }
        Value::Dict { entries, .. } => {
            let mut parts = Vec::with_capacity(entries.len());
            for (k, x) in entries {
                parts.push(format!("{{{}, {}}}", fmt_untyped(k)?, fmt_untyped(x)?));
            }
            format!("{{{}}}", parts.join(", "))
        }
    })
}

/// A literal with its type wrapper: `type(content)`.
pub fn fmt_literal(v: &Value, d: Dialect) -> Result<String, TextError> {
    let ty = match v {
        // a tensor literal spells its own static type, whatever was declared
        Value::Tensor(t) => fmt_tensor_type(t.ty(), d),
        other => fmt_type(&other.value_type(), d),
    };
    Ok(format!("{ty}({})", fmt_untyped(v)?))
}

/// A literal whose declared type is written instead of the value's own (lists with an unknown
/// length, dictionaries of tensors with unknown dimensions: `FlexibleShapeInformation`).
pub fn fmt_literal_as(v: &Value, declared: &ValueType, d: Dialect) -> Result<String, TextError> {
    Ok(format!("{}({})", fmt_type(declared, d), fmt_untyped(v)?))
}
