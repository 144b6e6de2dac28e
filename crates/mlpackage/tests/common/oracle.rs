//! mlmodelc-export 0.1.0 (crates.io) as a differential oracle: the pure-Rust compiler whose
//! `model.mil` matches coremlc's except the buildInfo line and whose `coremldata.bin` matches byte
//! for byte. Where its API covers a model (no sub-byte types, no states), our bundle must agree
//! with it: `model.mil` except line 2, `coremldata.bin`, the weight files, and every schema and
//! interface field of `metadata.json` (its histogram, precisions and class name are its own).

use mlpackage::compiled::Compiled;
use std::collections::BTreeMap;

/// mlmodelc-export writes only the `val` attribute of a `const` op; coremlc keeps its `name`
/// (coremltools' own tests assert `const()[name = string("const_1"), val = …]` in compiled
/// text), as we do. The comparison drops that one attribute from our `const` lines.
fn without_const_name(line: &str) -> String {
    const K: &str = " = const()[name = string(\"";
    match line.find(K) {
        Some(at) => {
            let rest = &line[at + K.len()..];
            match rest.find("\"), ") {
                Some(end) => format!("{} = const()[{}", &line[..at], &rest[end + 4..]),
                None => line.to_string(),
            }
        }
        None => line.to_string(),
    }
}

/// The `metadata.json` fields both writers must agree on.
fn interface_fields(v: &serde_json::Value) -> serde_json::Value {
    let top = &v[0];
    let mut out = serde_json::Map::new();
    for k in [
        "metadataOutputVersion",
        "specificationVersion",
        "inputSchema",
        "outputSchema",
        "stateSchema",
        "availability",
        "modelType",
        "isUpdatable",
        "userDefinedMetadata",
        "defaultFunctionName",
        "method",
        "modelParameters",
    ] {
        out.insert(k.into(), top[k].clone());
    }
    // keyed by name: the order of `functions` is not pinned (ours follows the description, theirs
    // the program; a coremlc sample with the two orders differing does not exist)
    let functions: BTreeMap<String, serde_json::Value> = top["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_string(),
                serde_json::json!({
                    "inputSchema": f["inputSchema"], "outputSchema": f["outputSchema"],
                    "stateSchema": f["stateSchema"],
                }),
            )
        })
        .collect();
    out.insert("functions".into(), serde_json::json!(functions));
    serde_json::Value::Object(out)
}

/// Compile `model` (with `files`) with mlmodelc-export and compare with our bundle `ours`.
pub fn agrees_with_mlmodelc_export(
    what: &str,
    model: &[u8],
    files: &BTreeMap<String, Vec<u8>>,
    ours: &Compiled,
) {
    let theirs = mlmodelc_export::compile_to_bundle_with_weight_files(model, files)
        .unwrap_or_else(|e| panic!("{what}: mlmodelc-export: {e}"));
    let their_mil = String::from_utf8(theirs.model_mil.clone()).unwrap();
    let (a, b): (Vec<&str>, Vec<&str>) = (
        ours.model_mil.lines().collect(),
        their_mil.lines().collect(),
    );
    assert_eq!(a.len(), b.len(), "{what}: model.mil line count");
    assert!(a[1].starts_with("[buildInfo = ") && b[1].starts_with("[buildInfo = "));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if i != 1 {
            assert_eq!(
                without_const_name(x),
                *y,
                "{what}: model.mil line {}",
                i + 1
            );
        }
    }
    assert!(
        ours.coremldata == theirs.coremldata_bin,
        "{what}: coremldata.bin differs"
    );
    let mut their_files: BTreeMap<String, Vec<u8>> = theirs.weight_files.clone();
    if let Some(w) = &theirs.weights_bin {
        their_files.insert("weights/weights.bin".into(), w.clone());
    }
    let our_files: BTreeMap<String, Vec<u8>> = ours
        .files
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    assert!(our_files == their_files, "{what}: weight files differ");
    let (ja, jb): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&ours.metadata).unwrap(),
        serde_json::from_slice(&theirs.metadata_json).unwrap(),
    );
    assert_eq!(
        interface_fields(&ja),
        interface_fields(&jb),
        "{what}: metadata.json interface fields"
    );
}
