//! `model.mil`: the ML Program of a `Model` proto printed as the MIL text Core ML's compiler
//! writes (the compiler reads the same proto, so the text follows it one to one):
//!
//! ```text
//! program(1.3)
//! [buildInfo = dict<string, string>({{"coremlc-component-MIL", "…"}, {"coremlc-version", "…"}})]
//! {
//!     func main<ios18>(tensor<fp16, [1, 10]> x, tensor<fp16, [1, 10]> y) {
//!             tensor<fp16, [1, 10]> z = mul(x = x, y = y)[name = string("z")];
//!         } -> (z);
//! }
//! ```
//!
//! * functions in proto map order (sorted by name), each `    func NAME<iosNN>(inputs)`, then the
//!   function's attributes, plus — from the description — `FlexibleShapeInformation` for inputs with
//!   shape ranges;
//! * one line per op at 12 spaces: outputs (`type name`, comma-separated), `=`, op type, parameters
//!   sorted by name (`p = name`, `p = literal`, several bindings as `p = (a, b)`), then the
//!   attributes sorted by name in brackets (none: no brackets);
//! * `        } -> (outputs);` closes a function, `}` the program (legacy dialect: `}` and a newline);
//! * the program's `buildInfo` gets the compiler's two entries, all entries sorted by key.

use super::Compiler;
use crate::convert::lift;
use crate::error::ProgramError;
use crate::{Description, ShapeFlexibility};
use coreml_proto::mil_spec as pb;
use mil::text::{self, Dialect, TextError};
use mil::{DType, Dim, TensorType, TensorValue, Value, ValueType};
use std::fmt::Write;

/// Why a program cannot be printed, with where.
#[derive(Debug)]
pub(crate) struct PrintError {
    pub(crate) location: String,
    pub(crate) kind: PrintErrorKind,
}

#[derive(Debug)]
pub(crate) enum PrintErrorKind {
    Unsupported(String),
    Program(ProgramError),
    Text(TextError),
}

impl std::fmt::Display for PrintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            PrintErrorKind::Unsupported(w) => write!(f, "{}: {w}", self.location),
            PrintErrorKind::Program(e) => write!(f, "{}: {e}", self.location),
            PrintErrorKind::Text(e) => write!(f, "{}: {e}", self.location),
        }
    }
}

type R<T> = Result<T, PrintError>;

fn at<T, E: Into<PrintErrorKind>>(loc: &str, r: Result<T, E>) -> R<T> {
    r.map_err(|e| PrintError {
        location: loc.to_string(),
        kind: e.into(),
    })
}

fn unsupported<T>(loc: &str, what: impl Into<String>) -> R<T> {
    Err(PrintError {
        location: loc.to_string(),
        kind: PrintErrorKind::Unsupported(what.into()),
    })
}

impl From<ProgramError> for PrintErrorKind {
    fn from(e: ProgramError) -> Self {
        PrintErrorKind::Program(e)
    }
}
impl From<TextError> for PrintErrorKind {
    fn from(e: TextError) -> Self {
        PrintErrorKind::Text(e)
    }
}

/// An immediate proto value as an IR value (no blob references inside).
fn immediate(v: &pb::Value, loc: &str) -> R<Value> {
    use pb::value::Value as V;
    use pb::value::immediate_value::Value as Imm;
    let ty = at(
        loc,
        v.r#type
            .as_ref()
            .ok_or(ProgramError::Missing { what: "value type" })
            .and_then(lift::value_type),
    )?;
    let Some(V::ImmediateValue(i)) = &v.value else {
        return unsupported(loc, "a blob reference inside a tuple, list or dictionary");
    };
    let Some(imm) = &i.value else {
        return at(
            loc,
            Err(ProgramError::Missing {
                what: "immediate value",
            }),
        );
    };
    Ok(match (ty, imm) {
        (ValueType::Tensor(t), Imm::Tensor(x)) => {
            Value::Tensor(at(loc, lift::immediate_tensor(t, x))?)
        }
        (ValueType::Tuple(_), Imm::Tuple(x)) => Value::Tuple(
            x.values
                .iter()
                .map(|e| immediate(e, loc))
                .collect::<R<_>>()?,
        ),
        (ValueType::List { elem, .. }, Imm::List(x)) => Value::List {
            elem: *elem,
            values: x
                .values
                .iter()
                .map(|e| immediate(e, loc))
                .collect::<R<_>>()?,
        },
        (ValueType::Dict { key, value }, Imm::Dictionary(d)) => {
            let mut entries = Vec::with_capacity(d.values.len());
            for kv in &d.values {
                let (Some(k), Some(x)) = (&kv.key, &kv.value) else {
                    return at(
                        loc,
                        Err(ProgramError::Missing {
                            what: "dictionary entry",
                        }),
                    );
                };
                entries.push((immediate(k, loc)?, immediate(x, loc)?));
            }
            Value::Dict {
                key: *key,
                value: *value,
                entries,
            }
        }
        (ty, _) => {
            return at(
                loc,
                Err(ProgramError::TypeMismatch {
                    declared: ty.to_string(),
                }),
            );
        }
    })
}

/// A proto value as a typed literal.
fn literal(v: &pb::Value, d: Dialect, loc: &str) -> R<String> {
    use pb::value::Value as V;
    if !v.doc_string.is_empty() {
        return unsupported(loc, "Value.docString");
    }
    let ty = at(
        loc,
        v.r#type
            .as_ref()
            .ok_or(ProgramError::Missing { what: "value type" })
            .and_then(lift::value_type),
    )?;
    match &v.value {
        Some(V::BlobFileValue(f)) => {
            let ValueType::Tensor(t) = &ty else {
                return unsupported(loc, format!("a blob reference of type {ty}"));
            };
            Ok(text::fmt_blobfile(t, &f.file_name, f.offset, d))
        }
        _ => {
            let value = immediate(v, loc)?;
            match &value {
                Value::Tensor(_) => at(loc, text::fmt_literal(&value, d)),
                _ => at(loc, text::fmt_literal_as(&value, &ty, d)),
            }
        }
    }
}

fn named(v: &pb::NamedValueType, d: Dialect, loc: &str) -> R<String> {
    let ty = at(
        loc,
        v.r#type
            .as_ref()
            .ok_or(ProgramError::Missing { what: "value type" })
            .and_then(lift::value_type),
    )?;
    Ok(format!("{} {}", text::fmt_type(&ty, d), v.name))
}

fn string_value(s: &str) -> Value {
    Value::Tensor(TensorValue::scalar_str(s))
}

/// `FlexibleShapeInformation` of the inputs with shape ranges (sorted by name), as the compiler
/// adds it to a function; `None` when no input is flexible.
fn flexible_shape_information(
    inputs: &[crate::Feature],
    d: Dialect,
    loc: &str,
) -> R<Option<String>> {
    type Ranged<'a> = (&'a str, &'a [i64], &'a [(u64, i64)]);
    let mut ranged: Vec<Ranged<'_>> = Vec::new();
    for f in inputs {
        let Some(a) = f.array_type() else { continue };
        match &a.flexibility {
            None => {}
            Some(ShapeFlexibility::Range(r)) => ranged.push((&f.name, &a.shape, r)),
            Some(ShapeFlexibility::Enumerated(_)) => {
                return unsupported(
                    loc,
                    format!(
                        "enumerated shapes of input `{}` (no compiled sample pins them)",
                        f.name
                    ),
                );
            }
        }
    }
    if ranged.is_empty() {
        return Ok(None);
    }
    if d == Dialect::Legacy {
        return unsupported(
            loc,
            "shape ranges in the legacy dialect (no compiled sample)",
        );
    }
    ranged.sort_by(|a, b| a.0.cmp(b.0));
    let s = ValueType::Tensor(TensorType::scalar(DType::Str));
    let i32_vec = |v: &[i64]| -> R<Value> {
        let v: Vec<i32> = v.iter().map(|&x| x as i32).collect();
        Ok(Value::Tensor(at(
            loc,
            TensorValue::from_i32(&[v.len()], &v).map_err(TextError::from),
        )?))
    };
    let defaults_ty = ValueType::Dict {
        key: Box::new(s.clone()),
        value: Box::new(ValueType::Tensor(TensorType {
            dtype: DType::I32,
            shape: vec![Dim::Unknown { variadic: false }],
        })),
    };
    let pair = ValueType::Tensor(TensorType::new(DType::I32, &[2]));
    let ranges_ty = ValueType::Dict {
        key: Box::new(s.clone()),
        value: Box::new(ValueType::List {
            elem: Box::new(pair.clone()),
            length: None,
        }),
    };
    let mut defaults = Vec::new();
    let mut ranges = Vec::new();
    for (name, shape, r) in &ranged {
        defaults.push((string_value(name), i32_vec(shape)?));
        let mut pairs = Vec::new();
        for &(lo, hi) in *r {
            pairs.push(i32_vec(&[lo as i64, hi])?);
        }
        ranges.push((
            string_value(name),
            Value::List {
                elem: pair.clone(),
                values: pairs,
            },
        ));
    }
    let value = Value::Tuple(vec![
        Value::Tuple(vec![
            string_value("DefaultShapes"),
            Value::Dict {
                key: s.clone(),
                value: ValueType::Tensor(TensorType {
                    dtype: DType::I32,
                    shape: vec![Dim::Unknown { variadic: false }],
                }),
                entries: defaults,
            },
        ]),
        Value::Tuple(vec![
            string_value("RangeDims"),
            Value::Dict {
                key: s.clone(),
                value: ValueType::List {
                    elem: Box::new(pair),
                    length: None,
                },
                entries: ranges,
            },
        ]),
    ]);
    let ty = ValueType::Tuple(vec![
        ValueType::Tuple(vec![s.clone(), defaults_ty]),
        ValueType::Tuple(vec![s, ranges_ty]),
    ]);
    Ok(Some(at(loc, text::fmt_literal_as(&value, &ty, d))?))
}

/// `[k = v, …]` of sorted `(key, literal text)` pairs; empty string when there are none.
fn attr_list(mut attrs: Vec<(String, String)>) -> String {
    if attrs.is_empty() {
        return String::new();
    }
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    let parts: Vec<String> = attrs
        .into_iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The `buildInfo` attribute: the program's entries plus the compiler's, sorted by key.
fn build_info(p: &pb::Program, compiler: &Compiler, d: Dialect) -> R<String> {
    let loc = "program attribute `buildInfo`";
    let mut entries: Vec<(String, String)> = Vec::new();
    if let Some(v) = p.attributes.get("buildInfo") {
        let Value::Dict { entries: es, .. } = immediate(v, loc)? else {
            return unsupported(loc, "buildInfo is not a dictionary");
        };
        for (k, x) in es {
            let as_str = |v: &Value| {
                v.as_tensor()
                    .and_then(|t| t.strings())
                    .and_then(|s| s.first())
                    .cloned()
            };
            match (as_str(&k), as_str(&x)) {
                (Some(k), Some(x)) => entries.push((k, x)),
                _ => return unsupported(loc, "buildInfo entries must be strings"),
            }
        }
    }
    for (k, v) in compiler.build_info() {
        entries.retain(|(x, _)| x != k);
        entries.push((k.to_string(), v.to_string()));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let s = ValueType::Tensor(TensorType::scalar(DType::Str));
    let value = Value::Dict {
        key: s.clone(),
        value: s.clone(),
        entries: entries
            .iter()
            .map(|(k, v)| (string_value(k), string_value(v)))
            .collect(),
    };
    let ty = ValueType::Dict {
        key: Box::new(s.clone()),
        value: Box::new(s),
    };
    at(loc, text::fmt_literal_as(&value, &ty, d))
}

/// The whole `model.mil` text of a program and its description.
pub(crate) fn print(
    p: &pb::Program,
    description: &Description,
    compiler: &Compiler,
    d: Dialect,
) -> R<String> {
    let mut s = format!("program({})\n", d.program_version());
    if !p.doc_string.is_empty() {
        return unsupported("program", "Program.docString");
    }
    let mut attrs = vec![("buildInfo".to_string(), build_info(p, compiler, d)?)];
    for (k, v) in &p.attributes {
        if k != "buildInfo" {
            attrs.push((
                k.clone(),
                literal(v, d, &format!("program attribute `{k}`"))?,
            ));
        }
    }
    let _ = writeln!(s, "{}", attr_list(attrs));
    s.push_str("{\n");
    for (name, f) in &p.functions {
        let loc = format!("function `{name}`");
        let inputs: Vec<String> = f
            .inputs
            .iter()
            .map(|i| named(i, d, &loc))
            .collect::<R<_>>()?;
        let mut attrs = Vec::new();
        for (k, v) in &f.attributes {
            attrs.push((
                k.clone(),
                literal(v, d, &format!("{loc} › attribute `{k}`"))?,
            ));
        }
        if let Some(iface) = description.interface(name)
            && let Some(fsi) = flexible_shape_information(iface.inputs, d, &loc)?
        {
            attrs.push(("FlexibleShapeInformation".into(), fsi));
        }
        let attrs = attr_list(attrs);
        let _ = writeln!(
            s,
            "    func {name}<{}>({}){}{} {{",
            Dialect::opset_text(&f.opset),
            inputs.join(", "),
            if attrs.is_empty() { "" } else { " " },
            attrs
        );
        if f.block_specializations.len() != 1 {
            return unsupported(
                &loc,
                format!(
                    "{} block specialisations (one is supported)",
                    f.block_specializations.len()
                ),
            );
        }
        let Some(block) = f.block_specializations.get(&f.opset) else {
            return unsupported(&loc, "the block specialisation is not the function's opset");
        };
        if !block.attributes.is_empty() || !block.inputs.is_empty() {
            return unsupported(&loc, "block inputs or attributes");
        }
        for (index, op) in block.operations.iter().enumerate() {
            let loc = format!("{loc} › op #{index} ({})", op.r#type);
            if !op.blocks.is_empty() {
                return unsupported(&loc, "nested blocks (control flow)");
            }
            let outs: Vec<String> = op
                .outputs
                .iter()
                .map(|o| named(o, d, &loc))
                .collect::<R<_>>()?;
            let mut params = Vec::with_capacity(op.inputs.len());
            for (param, arg) in &op.inputs {
                let mut bs = Vec::with_capacity(arg.arguments.len());
                for b in &arg.arguments {
                    use pb::argument::binding::Binding as B;
                    bs.push(match &b.binding {
                        Some(B::Name(n)) => n.clone(),
                        Some(B::Value(v)) => literal(v, d, &format!("{loc} › input `{param}`"))?,
                        None => return at(&loc, Err(ProgramError::Missing { what: "binding" })),
                    });
                }
                params.push(if bs.len() == 1 {
                    format!("{param} = {}", bs[0])
                } else {
                    format!("{param} = ({})", bs.join(", "))
                });
            }
            let mut attrs = Vec::with_capacity(op.attributes.len());
            for (k, v) in &op.attributes {
                attrs.push((
                    k.clone(),
                    literal(v, d, &format!("{loc} › attribute `{k}`"))?,
                ));
            }
            // an op without outputs (write_state) is written without `… =` (no sample pins it)
            let lhs = if outs.is_empty() {
                String::new()
            } else {
                format!("{} = ", outs.join(", "))
            };
            let _ = writeln!(
                s,
                "            {lhs}{}({}){};",
                op.r#type,
                params.join(", "),
                attr_list(attrs)
            );
        }
        let _ = writeln!(s, "        }} -> ({});", block.outputs.join(", "));
    }
    s.push('}');
    if d == Dialect::Legacy {
        s.push('\n');
    }
    Ok(s)
}
