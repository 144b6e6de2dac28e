//! `gemma-convert inspect <PKG.mlpackage | PKG.mlmodelc | SET_DIR> [--mil]`: each function's inputs and outputs
//! with shapes and dtypes, op counts by type, weight bytes by storage (dense fp16/fp32, LUT indices,
//! LUT tables, other), the op patterns the reference pipeline's placement audit saw leave the
//! Neural Engine ([`crate::placement`]), and with `--mil` the MIL text. A set directory is inspected
//! package by package, its manifest summarised (forms, taps, decode/prefill pairs sharing a weight
//! file), with a "loaded by" line: which runtime loads a set of its variant
//! (`chunkset::Variant::runtime`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use mil::{Binding, DType, Operation, Value};
use serde_json::json;

use crate::build_cmd::human_bytes;
use crate::exit::UsageError;

/// Arguments of `gemma-convert inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A `.mlpackage`, a `.mlmodelc` or a chunk set directory.
    pub path: PathBuf,
    /// Print the MIL text of every function.
    #[arg(long)]
    pub mil: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn literal_bytes(v: &Value) -> (DType, u64) {
    match v {
        Value::Tensor(t) => (t.dtype(), t.bytes().map(|b| b.len() as u64).unwrap_or(0)),
        _ => (DType::Str, 0),
    }
}

/// Weight bytes by storage class for one function.
pub(crate) fn storage(ops: &[Operation]) -> BTreeMap<String, u64> {
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for op in ops {
        match op.op_type.as_str() {
            "const" => {
                if let Some(v) = op.const_value() {
                    let (d, n) = literal_bytes(v);
                    if n >= 64 {
                        *m.entry(format!("dense {d}")).or_default() += n;
                    }
                }
            }
            "constexpr_lut_to_dense" => {
                for (param, class) in [("indices", "lut indices"), ("lut", "lut tables")] {
                    if let Some(Binding::Value(v)) = op.input(param) {
                        *m.entry(class.into()).or_default() += literal_bytes(v).1;
                    }
                }
            }
            t if t.starts_with("constexpr_") => {
                for b in op.inputs.values().flatten() {
                    if let Binding::Value(v) = b {
                        *m.entry(t.to_string()).or_default() += literal_bytes(v).1;
                    }
                }
            }
            _ => {}
        }
    }
    m
}

fn io_json(f: &mil::Function) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let fmt = |name: &str, ty: Option<&mil::ValueType>| json!({"name": name, "type": ty.map(ToString::to_string).unwrap_or_else(|| "?".into())});
    let ins = f.inputs.iter().map(|v| fmt(&v.name, Some(&v.ty))).collect();
    let outs = f
        .block
        .outputs
        .iter()
        .map(|n| fmt(n, f.find_value(n).map(|v| &v.ty)))
        .collect();
    (ins, outs)
}

fn inspect_package(path: &Path, mil_text: bool) -> Result<serde_json::Value> {
    let pkg = mlpackage::read_model(path).with_context(|| format!("reading {}", path.display()))?;
    let weight_bin = if mlpackage::compiled::is_bundle(path) {
        path.join("weights/weight.bin")
    } else {
        path.join("Data/com.apple.CoreML/weights/weight.bin")
    };
    let mut functions = Vec::new();
    for (name, f) in &pkg.program.functions {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for op in &f.block.operations {
            *counts.entry(op.op_type.clone()).or_default() += 1;
        }
        let (ins, outs) = io_json(f);
        let off_ane: Vec<serde_json::Value> = crate::placement::off_ane_patterns(f)
            .into_iter()
            .map(|p| json!({"pattern": p.name, "ops": p.count(), "by_type": p.ops, "audit": p.audit}))
            .collect();
        let mut v = json!({
            "name": name,
            "opset": f.opset,
            "inputs": ins,
            "outputs": outs,
            "op_counts": counts,
            "ops": f.block.operations.len(),
            "weight_bytes_by_storage": storage(&f.block.operations),
            "off_ane_in_reference_audit": off_ane,
        });
        if mil_text {
            v["mil"] = json!(mil::printer::print_function(name, f));
        }
        functions.push(v);
    }
    Ok(json!({
        "package": path,
        "spec_version": pkg.spec_version,
        "default_function": pkg.description.default_function_name(),
        "weight_bin_bytes": std::fs::metadata(&weight_bin).map(|m| m.len()).unwrap_or(0),
        "functions": functions,
    }))
}

fn print_text(v: &serde_json::Value) {
    println!(
        "{} (spec {}, default function {}, weight.bin {})",
        v["package"].as_str().unwrap_or_default(),
        v["spec_version"],
        v["default_function"].as_str().unwrap_or_default(),
        human_bytes(v["weight_bin_bytes"].as_u64().unwrap_or(0))
    );
    for f in v["functions"].as_array().into_iter().flatten() {
        println!(
            "  function {} [{}], {} ops",
            f["name"].as_str().unwrap_or_default(),
            f["opset"].as_str().unwrap_or_default(),
            f["ops"]
        );
        for (label, key) in [("in ", "inputs"), ("out", "outputs")] {
            for io in f[key].as_array().into_iter().flatten() {
                println!(
                    "    {label} {:<26} {}",
                    io["name"].as_str().unwrap_or_default(),
                    io["type"].as_str().unwrap_or_default()
                );
            }
        }
        let counts: Vec<String> = f["op_counts"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("    ops: {}", counts.join(", "));
        let storage: Vec<String> = f["weight_bytes_by_storage"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| format!("{k} {}", human_bytes(n.as_u64().unwrap_or(0))))
            .collect();
        println!("    weights: {}", storage.join(", "));
        for p in f["off_ane_in_reference_audit"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let by: Vec<String> = p["by_type"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            println!(
                "    off-ANE pattern: {} ({} ops: {}) — {}",
                p["pattern"].as_str().unwrap_or_default(),
                p["ops"],
                by.join(", "),
                p["audit"].as_str().unwrap_or_default()
            );
        }
        if let Some(m) = f["mil"].as_str() {
            println!("{m}");
        }
    }
}

/// Run `inspect`.
pub fn run(args: &InspectArgs) -> Result<()> {
    let p = &args.path;
    let is_model = |q: &Path| {
        q.extension()
            .is_some_and(|e| e == "mlpackage" || e == "mlmodelc")
    };
    // a set (or the set around a package) is read under its shared lock
    let set = if is_model(p) {
        p.parent()
            .filter(|d| d.join("manifest.json").is_file())
            .map(PathBuf::from)
    } else {
        Some(p.clone())
    };
    let _lock = match set {
        Some(s) if s.is_dir() => mlpackage::publish::read_lock(&s)?,
        _ => None,
    };
    let packages: Vec<PathBuf> = if is_model(p) {
        vec![p.clone()]
    } else if p.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading {}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|q| is_model(q))
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(UsageError {
                flag: "PATH",
                reason: format!("{}: no .mlpackage or .mlmodelc inside", p.display()),
            }
            .into());
        }
        v
    } else {
        return Err(UsageError {
            flag: "PATH",
            reason: format!("{}: not a .mlpackage, .mlmodelc or directory", p.display()),
        }
        .into());
    };
    let mut all = Vec::new();
    for pkg in &packages {
        all.push(inspect_package(pkg, args.mil)?);
    }
    let manifest = chunkset::ChunkSetManifest::read(p).ok();
    let variant = set_variant(p, manifest.as_ref());
    let loaded_by = variant.as_ref().map(|v| {
        let r = v.runtime();
        json!({
            "variant": v.name(),
            "coreml_llm": r.swift,
            "note": r.note,
            "host_loop": chunkset::HOST_LOOP,
        })
    });
    if args.json {
        let v = json!({
            "packages": all,
            "loaded_by": loaded_by,
            "off_ane_audit_source": crate::placement::AUDIT_SOURCE,
            "manifest": manifest.map(|m| json!({
                "tool_version": m.tool_version,
                "command": m.command,
                "files": m.files.len(),
                "bytes": m.files.iter().map(|f| f.size).sum::<u64>(),
                "uncompressed_weights": m.uncompressed_weights.len(),
                "forms": m.build.spec.forms.to_string(),
                "taps": m.build.spec.taps.to_string(),
                "shared_weights": m.build.shared_weights,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for v in &all {
            print_text(v);
        }
        let any_off_ane = all.iter().any(|v| {
            v["functions"].as_array().into_iter().flatten().any(|f| {
                f["off_ane_in_reference_audit"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            })
        });
        if any_off_ane {
            println!("off-ANE patterns: {}", crate::placement::AUDIT_SOURCE);
        }
        if let Some(m) = &manifest {
            println!(
                "manifest: {} files, {}, built by gemma-convert {}: {}",
                m.files.len(),
                human_bytes(m.files.iter().map(|f| f.size).sum()),
                m.tool_version,
                m.command.join(" ")
            );
            println!("forms: {}; taps: {}", m.build.spec.forms, m.build.spec.taps);
            if let Some(pairs) = &m.build.shared_weights {
                let list: Vec<String> = pairs
                    .iter()
                    .map(|s| format!("{} = {}", s.prefill, s.decode))
                    .collect();
                println!(
                    "weight.bin shared (byte-identical): {}",
                    if list.is_empty() {
                        "none (no prefill chunk holds a decode chunk's layers)".to_string()
                    } else {
                        list.join(", ")
                    }
                );
            }
        }
        if let Some(v) = &variant {
            let r = v.runtime();
            match r.swift {
                Some(engine) => println!(
                    "loaded by: CoreML-LLM {engine} ({}); {}",
                    r.note,
                    chunkset::HOST_LOOP
                ),
                None => println!(
                    "loaded by: {} only; CoreML-LLM has no loader for {}: {}",
                    chunkset::HOST_LOOP,
                    v.name(),
                    r.note
                ),
            }
        }
    }
    Ok(())
}

/// The variant of the set at `dir`: the manifest's, else `model_config.json`'s (a single package
/// has none).
fn set_variant(
    dir: &Path,
    manifest: Option<&chunkset::ChunkSetManifest>,
) -> Option<chunkset::Variant> {
    if let Some(m) = manifest {
        return Some(m.build.spec.variant.clone());
    }
    let cfg = chunkset::ModelConfig::read(dir).ok()?;
    chunkset::Variant::parse(&cfg.variant, None, None).ok()
}
