//! `metadata.json`: what Xcode and tools show about a compiled model (input/output schema, operation
//! histogram, precisions, availability, user metadata). Every field, and how it was established,
//! is listed in `docs/MLMODELC.md`; in short:
//!
//! * one JSON array holding one object, `NSJSONSerialization` layout, key order of the
//!   `NSMutableDictionary` it was made from ([`super::nsjson`]) with the insertion orders below;
//! * schemas come from the model description (default function at the top level, every function
//!   under `functions` for multi-function models);
//! * `mlProgramOperationTypeHistogram`: every op of the function except `const`, keyed
//!   `Ios<NN>.<opTypeInCamelCase>`, inserted in first-use order;
//! * `computePrecision`: the dtypes of every op output of the function (bool and string left
//!   out), `storagePrecision`: the dtypes of the program's blob-file values (absent when there are
//!   none); one dtype is its name, several are `Mixed (A, B)` in name order.

use super::nsjson::{Json, ns_object};
use crate::convert::lift;
use crate::{Description, Feature, FeatureKind, ShapeFlexibility};
use coreml_proto::mil_spec as pb;
use mil::{DType, ValueType};
use std::collections::BTreeSet;

/// Insertion order of the top-level keys (one order reproducing every sample's key order; the
/// places of `author`, `license` and `version`, which no sample has, are inferred).
const TOP: [&str; 22] = [
    "defaultFunctionName",
    "isUpdatable",
    "shortDescription",
    "author",
    "license",
    "version",
    "specificationVersion",
    "functions",
    "generatedClassName",
    "inputSchema",
    "availability",
    "neuralNetworkLayerTypeHistogram",
    "method",
    "metadataOutputVersion",
    "stateSchema",
    "modelType",
    "mlProgramOperationTypeHistogram",
    "userDefinedMetadata",
    "storagePrecision",
    "computePrecision",
    "outputSchema",
    "modelParameters",
];
/// Insertion order of a fixed-shape feature entry.
const FEATURE: [&str; 8] = [
    "name",
    "isOptional",
    "hasShapeFlexibility",
    "shape",
    "dataType",
    "shortDescription",
    "formattedType",
    "type",
];
/// Insertion order of a feature entry with shape ranges.
const RANGED_FEATURE: [&str; 10] = [
    "shape",
    "shapeFlexibility",
    "name",
    "type",
    "hasShapeFlexibility",
    "dataType",
    "isOptional",
    "shapeRange",
    "shortDescription",
    "formattedType",
];
/// Insertion order of a `functions` entry.
const FUNCTION: [&str; 6] = [
    "inputSchema",
    "name",
    "mlProgramOperationTypeHistogram",
    "computePrecision",
    "outputSchema",
    "stateSchema",
];
/// Insertion order of `availability`.
const AVAILABILITY: [&str; 6] = ["macCatalyst", "iOS", "macOS", "tvOS", "visionOS", "watchOS"];

/// Why metadata cannot be written.
#[derive(Debug)]
pub(crate) struct MetadataError(pub(crate) String);

type R<T> = Result<T, MetadataError>;

fn err<T>(what: impl Into<String>) -> R<T> {
    Err(MetadataError(what.into()))
}

/// Build an object from `(key, value)` pairs, inserting them in the order `order` lists the keys.
fn object(order: &[&str], mut entries: Vec<(&str, Json)>) -> R<Json> {
    entries.sort_by_key(|(k, _)| order.iter().position(|o| o == k).unwrap_or(usize::MAX));
    if let Some((k, _)) = entries.iter().find(|(k, _)| !order.contains(k)) {
        return err(format!("metadata key `{k}` has no insertion order"));
    }
    ns_object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
    .ok_or_else(|| MetadataError("too many keys".into()))
}

/// Availability of a specification version (the samples: 7 and 9).
pub(crate) fn availability(spec: i32) -> Option<[(&'static str, &'static str); 6]> {
    match spec {
        7 => Some([
            ("macOS", "13.0"),
            ("tvOS", "16.0"),
            ("visionOS", "1.0"),
            ("watchOS", "9.0"),
            ("iOS", "16.0"),
            ("macCatalyst", "16.0"),
        ]),
        9 => Some([
            ("macOS", "15.0"),
            ("tvOS", "18.0"),
            ("visionOS", "2.0"),
            ("watchOS", "11.0"),
            ("iOS", "18.0"),
            ("macCatalyst", "18.0"),
        ]),
        _ => None,
    }
}

/// The metadata name of a dtype (`Float16`, `Int32`, …).
pub(crate) fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "Float16",
        DType::F32 => "Float32",
        DType::F64 => "Double",
        DType::Bf16 => "BFloat16",
        DType::I32 => "Int32",
        DType::I8 => "Int8",
        DType::I16 => "Int16",
        DType::I64 => "Int64",
        DType::U8 => "UInt8",
        DType::U16 => "UInt16",
        DType::U32 => "UInt32",
        DType::U64 => "UInt64",
        DType::I4 => "Int4",
        DType::U1 => "UInt1",
        DType::U2 => "UInt2",
        DType::U3 => "UInt3",
        DType::U4 => "UInt4",
        DType::U6 => "UInt6",
        DType::F8E4M3Fn => "Float8E4M3FN",
        DType::F8E5M2 => "Float8E5M2",
        DType::Bool => "Bool",
        DType::Str => "String",
    }
}

/// One name, or `Mixed (A, B, …)` in name order.
fn precision(dtypes: &BTreeSet<DType>) -> Option<String> {
    let names: BTreeSet<&str> = dtypes.iter().map(|&d| dtype_name(d)).collect();
    match names.len() {
        0 => None,
        1 => names.first().map(|s| s.to_string()),
        _ => Some(format!(
            "Mixed ({})",
            names.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// `camel_case` → `camelCase`.
fn camel(op: &str) -> String {
    let mut out = String::with_capacity(op.len());
    let mut up = false;
    for c in op.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The histogram key of an op in a function of `opset`: `Ios<NN>.<camelCase>` where NN is the
/// version of the op in Apple's registry that the function's opset resolves to. Pinned by the
/// samples: every op of an iOS 16 function → 16; of an iOS 17 function: `add`, `cast`, `gather`,
/// `greater`, `less`, `maximum`, `minimum`, `mul`, `reduce_argmax` → 17, `relu` and
/// `constexpr_affine_dequantize` → 16, `select` → `Select` (no prefix); of an iOS 18 function:
/// `relu` → 18. Inferred: every op of an iOS 18 function → 18, other ops of an iOS 17 function →
/// 17, other `constexpr_*` ops below iOS 18 → 16.
pub(crate) fn histogram_key(op: &str, opset: &str) -> String {
    let version = match opset {
        "CoreML5" => 15,
        "CoreML6" => 16,
        "CoreML7" => 17,
        "CoreML8" => 18,
        _ => return format!("{opset}.{}", camel(op)),
    };
    let version = match op {
        "select" if version == 17 => return "Select".into(),
        _ if version >= 18 => 18,
        "relu" => 16,
        op if op.starts_with("constexpr_") => 16,
        _ => version,
    };
    format!("Ios{version}.{}", camel(op))
}

/// Histogram (first-use insertion order) and compute precision of one function.
fn function_facts(f: &pb::Function) -> R<(Json, Option<String>)> {
    let Some(block) = f.block_specializations.get(&f.opset) else {
        return err("function without a block for its opset");
    };
    let mut counts: Vec<(String, i64)> = Vec::new();
    let mut dtypes = BTreeSet::new();
    for op in &block.operations {
        for o in &op.outputs {
            if let Some(ValueType::Tensor(t)) =
                o.r#type.as_ref().and_then(|t| lift::value_type(t).ok())
                && !matches!(t.dtype, DType::Bool | DType::Str)
            {
                dtypes.insert(t.dtype);
            }
        }
        if op.r#type == "const" {
            continue;
        }
        let key = histogram_key(&op.r#type, &f.opset);
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counts.push((key, 1)),
        }
    }
    let hist = ns_object(counts.into_iter().map(|(k, n)| (k, Json::Int(n))).collect())
        .ok_or_else(|| MetadataError("too many op types".into()))?;
    Ok((hist, precision(&dtypes)))
}

/// The dtypes of every blob-file value of the program.
fn blob_dtypes(p: &pb::Program) -> BTreeSet<DType> {
    fn value(v: &pb::Value, out: &mut BTreeSet<DType>) {
        use pb::value::Value as V;
        if let Some(V::BlobFileValue(_)) = &v.value
            && let Some(ValueType::Tensor(t)) =
                v.r#type.as_ref().and_then(|t| lift::value_type(t).ok())
        {
            out.insert(t.dtype);
        }
    }
    let mut out = BTreeSet::new();
    for f in p.functions.values() {
        for b in f.block_specializations.values() {
            for op in &b.operations {
                for a in op.inputs.values() {
                    for b in &a.arguments {
                        if let Some(pb::argument::binding::Binding::Value(v)) = &b.binding {
                            value(v, &mut out);
                        }
                    }
                }
                for v in op.attributes.values() {
                    value(v, &mut out);
                }
            }
        }
    }
    out
}

fn dims_text(shape: &[i64], sep: &str) -> String {
    shape
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// One schema entry.
fn feature(f: &Feature) -> R<Json> {
    let (a, kind) = match &f.kind {
        FeatureKind::Array(a) => (a, "MultiArray"),
        FeatureKind::State(a) => (a, "State"),
        FeatureKind::Other(_) => {
            return err(format!(
                "feature `{}` is not a multi-array or state (not supported)",
                f.name
            ));
        }
    };
    let dt = match a.dtype {
        DType::F32 | DType::F16 | DType::F64 | DType::I32 | DType::I8 => dtype_name(a.dtype),
        d => return err(format!("feature `{}` has dtype {d}", f.name)),
    };
    let formatted = if a.shape.is_empty() {
        format!("{kind} ({dt})")
    } else {
        format!("{kind} ({dt} {})", dims_text(&a.shape, " \u{d7} "))
    };
    let mut entries = vec![
        ("isOptional", Json::str(if f.optional { "1" } else { "0" })),
        ("dataType", Json::str(dt)),
        ("formattedType", Json::str(formatted)),
        ("shortDescription", Json::str(&f.short_description)),
        (
            "shape",
            Json::str(format!("[{}]", dims_text(&a.shape, ", "))),
        ),
        ("name", Json::str(&f.name)),
        ("type", Json::str(kind)),
    ];
    match &a.flexibility {
        None => {
            entries.push(("hasShapeFlexibility", Json::str("0")));
            object(&FEATURE, entries)
        }
        Some(ShapeFlexibility::Range(r)) => {
            let flex: Vec<String> = r
                .iter()
                .map(|&(lo, hi)| {
                    if hi < 0 {
                        format!("{lo}...")
                    } else if lo as i64 == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}...{hi}")
                    }
                })
                .collect();
            let ranges: Vec<String> = r.iter().map(|(lo, hi)| format!("[{lo}, {hi}]")).collect();
            entries.push(("hasShapeFlexibility", Json::str("1")));
            entries.push(("shapeFlexibility", Json::str(flex.join(" \u{d7} "))));
            entries.push(("shapeRange", Json::str(format!("[{}]", ranges.join(", ")))));
            object(&RANGED_FEATURE, entries)
        }
        Some(ShapeFlexibility::Enumerated(_)) => err(format!(
            "enumerated shapes of `{}` (no compiled sample pins their metadata)",
            f.name
        )),
    }
}

fn schema(features: &[Feature]) -> R<Json> {
    Ok(Json::Arr(features.iter().map(feature).collect::<R<_>>()?))
}

/// The whole `metadata.json` value.
pub(crate) fn metadata(
    spec_version: i32,
    description: &Description,
    program: &pb::Program,
    class_name: &str,
) -> R<Json> {
    let Some(avail) = availability(spec_version) else {
        return err(format!(
            "availability of specification version {spec_version} (no compiled sample)"
        ));
    };
    let multi = description.is_multifunction();
    let default = if multi {
        description.default_function.clone()
    } else {
        "main".to_string()
    };
    let Some(iface) = description.interface(&default) else {
        return err(format!("the description has no function `{default}`"));
    };
    let Some(default_fn) = program.functions.get(&default) else {
        return err(format!("the program has no function `{default}`"));
    };
    let (hist, compute) = function_facts(default_fn)?;
    let m = &description.metadata;
    let mut top = vec![
        ("metadataOutputVersion", Json::str("3.0")),
        ("outputSchema", schema(iface.outputs)?),
        ("modelParameters", Json::Arr(Vec::new())),
        ("specificationVersion", Json::Int(i64::from(spec_version))),
        ("mlProgramOperationTypeHistogram", hist),
        ("isUpdatable", Json::str("0")),
        ("stateSchema", schema(iface.states)?),
        (
            "availability",
            object(
                &AVAILABILITY,
                avail.iter().map(|&(k, v)| (k, Json::str(v))).collect(),
            )?,
        ),
        (
            "modelType",
            object(
                &["name"],
                vec![("name", Json::str("MLModelType_mlProgram"))],
            )?,
        ),
        (
            "userDefinedMetadata",
            ns_object(
                m.user_defined
                    .iter()
                    .map(|(k, v)| (k.clone(), Json::str(v)))
                    .collect(),
            )
            .ok_or_else(|| MetadataError("too many user-defined metadata keys".into()))?,
        ),
        ("inputSchema", schema(iface.inputs)?),
        ("generatedClassName", Json::str(class_name)),
        ("method", Json::str("predict")),
    ];
    if let Some(c) = compute {
        top.push(("computePrecision", Json::Str(c)));
    }
    if let Some(s) = precision(&blob_dtypes(program)) {
        top.push(("storagePrecision", Json::Str(s)));
    }
    for (key, value) in [
        ("shortDescription", &m.short_description),
        ("author", &m.author),
        ("license", &m.license),
        ("version", &m.version),
    ] {
        if !value.is_empty() {
            top.push((key, Json::str(value)));
        }
    }
    if multi {
        let mut functions = Vec::new();
        for fd in &description.functions {
            let Some(f) = program.functions.get(&fd.name) else {
                return err(format!("the program has no function `{}`", fd.name));
            };
            let (hist, compute) = function_facts(f)?;
            let mut e = vec![
                ("outputSchema", schema(&fd.outputs)?),
                ("stateSchema", schema(&fd.states)?),
                ("name", Json::str(&fd.name)),
                ("mlProgramOperationTypeHistogram", hist),
                ("inputSchema", schema(&fd.inputs)?),
            ];
            if let Some(c) = compute {
                e.push(("computePrecision", Json::Str(c)));
            }
            functions.push(object(&FUNCTION, e)?);
        }
        top.push(("functions", Json::Arr(functions)));
        top.push(("defaultFunctionName", Json::str(&default)));
    }
    Ok(Json::Arr(vec![object(&TOP, top)?]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiled::nsjson::enumeration_order;

    /// Keys of the object starting at line `start` (its members sit at `indent` spaces), in order.
    fn keys_at(text: &str, start: usize, indent: usize) -> Vec<String> {
        let pad = " ".repeat(indent);
        let mut keys = Vec::new();
        for line in text.lines().skip(start + 1) {
            if line.is_empty() {
                continue;
            }
            if !line.starts_with(&pad) {
                break;
            }
            let rest = &line[indent..];
            if let Some(k) = rest.strip_prefix('"') {
                keys.push(k[..k.find('"').unwrap()].to_string());
            }
        }
        keys
    }

    /// Insert `observed` in `order`'s order and check the dictionary gives back `observed`.
    fn reproduces(order: &[&str], observed: &[String]) -> bool {
        let mut ins: Vec<&str> = observed.iter().map(String::as_str).collect();
        ins.sort_by_key(|k| order.iter().position(|o| o == k).unwrap_or(usize::MAX));
        let out: Vec<&str> = enumeration_order(&ins)
            .unwrap()
            .into_iter()
            .map(|i| ins[i])
            .collect();
        out == observed.iter().map(String::as_str).collect::<Vec<_>>()
    }

    #[test]
    fn insertion_orders_reproduce_the_neural_network_sample_too() {
        // a second compiler and a different kind of model: the top-level keys (with storage
        // precision and a layer histogram), a ranged input and a shapeless output
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/compiled/apple/nn_classifier.mlmodelc/metadata.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let top = keys_at(&text, 1, 4);
        assert_eq!(top.len(), 14);
        assert!(reproduces(&TOP, &top), "{top:?}");
        let line = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap();
        let input = keys_at(&text, line("\"inputSchema\"") + 1, 8);
        assert_eq!(input.len(), 10);
        assert!(reproduces(&RANGED_FEATURE, &input), "{input:?}");
        let output = keys_at(&text, line("\"outputSchema\"") + 1, 8);
        assert!(reproduces(&FEATURE, &output), "{output:?}");
        let avail = keys_at(&text, line("\"availability\""), 6);
        assert!(reproduces(&AVAILABILITY, &avail), "{avail:?}");
        let user = keys_at(&text, line("\"userDefinedMetadata\""), 6);
        let mut sorted = user.clone();
        sorted.sort();
        assert!(reproduces(
            &sorted.iter().map(String::as_str).collect::<Vec<_>>(),
            &user
        ));
    }

    #[test]
    fn histogram_keys() {
        assert_eq!(histogram_key("mul", "CoreML6"), "Ios16.mul");
        assert_eq!(
            histogram_key("reduce_argmax", "CoreML7"),
            "Ios17.reduceArgmax"
        );
        assert_eq!(
            histogram_key("constexpr_affine_dequantize", "CoreML7"),
            "Ios16.constexprAffineDequantize"
        );
        assert_eq!(histogram_key("relu", "CoreML7"), "Ios16.relu");
        assert_eq!(histogram_key("relu", "CoreML8"), "Ios18.relu");
        assert_eq!(histogram_key("select", "CoreML7"), "Select");
        assert_eq!(
            histogram_key("constexpr_lut_to_dense", "CoreML8"),
            "Ios18.constexprLutToDense"
        );
    }
}
