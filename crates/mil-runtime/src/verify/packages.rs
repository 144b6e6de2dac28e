//! Every package and bundle of a set: readable, description = program, valid, the variant's
//! functions, each function's I/O and states the contract's, the head's argmax over the vocabulary.

use super::config::Derived;
use super::{Buffer, Findings, VerifyReport};
use chunkset::names::{TOKEN_ID, TOKEN_IDS};
use chunkset::{ChunkSetManifest, ChunkSpec, FunctionKind, IoDType, IoTensor, ModelConfig};
use chunkset::{PREFILL_FN, PackageFormat};
use mil::DType;
use mlpackage::{Feature, FeatureKind, Package};
use std::collections::BTreeSet;
use std::path::Path;

/// At most this many I/O findings per function list (the rest are counted).
const MAX_PER_LIST: usize = 6;

fn dtype_name(d: DType) -> String {
    match d {
        DType::F16 => "float16".into(),
        DType::F32 => "float32".into(),
        DType::I32 => "int32".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn io_dtype(d: IoDType) -> DType {
    match d {
        IoDType::Float16 => DType::F16,
        IoDType::Float32 => DType::F32,
        IoDType::Int32 => DType::I32,
    }
}

/// The forms of chunk `name` present in `dir`.
fn present_forms(dir: &Path, name: &str) -> Vec<PackageFormat> {
    [PackageFormat::Mlpackage, PackageFormat::Mlmodelc]
        .into_iter()
        .filter(|f| dir.join(f.file_name(name)).is_dir())
        .collect()
}

/// Read one package or bundle; a finding (unusable) when it cannot be read.
fn read(dir: &Path, rel: &str, f: &mut Findings) -> Option<Package> {
    match mlpackage::read_model(&dir.join(rel)) {
        Ok(p) => Some(p),
        Err(e) => {
            f.unusable(rel, None, format!("cannot be read: {e}"));
            None
        }
    }
}

/// The description matches the program and the program validates.
fn check_program(rel: &str, pkg: &Package, f: &mut Findings) {
    if let Err(e) = pkg.description.check(&pkg.program) {
        f.mismatch(
            rel,
            Some("description"),
            format!("does not match the program: {e}"),
        );
    }
    if let Err(e) = mil::validate(&pkg.program) {
        f.mismatch(rel, Some("program"), format!("does not validate: {e}"));
    }
}

/// Without a readable `model_config.json`: every package the manifest's build names at least reads.
pub(super) fn check_readable(
    dir: &Path,
    manifest: &ChunkSetManifest,
    f: &mut Findings,
    report: &mut VerifyReport,
) {
    let names = manifest
        .build
        .chunks
        .iter()
        .chain(manifest.build.prefill_chunks.iter().flatten())
        .map(|c| c.name.clone());
    for name in names {
        for form in present_forms(dir, &name) {
            let rel = form.file_name(&name);
            if let Some(pkg) = read(dir, &rel, f) {
                check_program(&rel, &pkg, f);
                report.packages.push(rel);
            }
        }
    }
}

/// Compare one declared list (inputs, outputs or states) with the contract's.
fn compare_list(
    rel: &str,
    field: &str,
    got: &[Feature],
    want: &[IoTensor],
    states: bool,
    f: &mut Findings,
) {
    let mut problems = Vec::new();
    let got_names: Vec<&str> = got.iter().map(|x| x.name.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|x| x.name.as_str()).collect();
    for w in &want_names {
        if !got_names.contains(w) {
            problems.push(format!("`{w}` is missing (the contract declares it)"));
        }
    }
    for g in &got_names {
        if !want_names.contains(g) {
            problems.push(format!("`{g}` is not in the contract"));
        }
    }
    if problems.is_empty() && got_names != want_names {
        problems.push(format!(
            "declared in the order {got_names:?}, the contract's is {want_names:?}"
        ));
    }
    for w in want {
        let Some(g) = got.iter().find(|x| x.name == w.name) else {
            continue;
        };
        let kind_ok = matches!(
            (&g.kind, states),
            (FeatureKind::Array(_), false) | (FeatureKind::State(_), true)
        );
        let Some(a) = g.array_type().filter(|_| kind_ok) else {
            problems.push(format!(
                "`{}` is not {}",
                w.name,
                if states { "a state" } else { "a multi-array" }
            ));
            continue;
        };
        let want_shape: Vec<i64> = w.shape.iter().map(|&d| d as i64).collect();
        if a.dtype != io_dtype(w.dtype) || a.shape != want_shape {
            problems.push(format!(
                "`{}` is {} {:?}, the contract says {} {:?}",
                w.name,
                dtype_name(a.dtype),
                a.shape,
                w.dtype.as_str(),
                want_shape
            ));
        }
    }
    let n = problems.len();
    for p in problems.into_iter().take(MAX_PER_LIST) {
        f.mismatch(rel, Some(field), p);
    }
    if n > MAX_PER_LIST {
        f.mismatch(
            rel,
            Some(field),
            format!("… and {} more differences", n - MAX_PER_LIST),
        );
    }
}

fn elements(shape: &[i64]) -> u128 {
    shape
        .iter()
        .map(|&d| u128::try_from(d).unwrap_or(0))
        .product()
}

/// One package (or bundle) of `chunk` against the contract.
#[allow(clippy::too_many_arguments)]
fn check_package(
    dir: &Path,
    rel: &str,
    chunk: &ChunkSpec,
    kinds: &[FunctionKind],
    cfg: &ModelConfig,
    d: &Derived,
    f: &mut Findings,
    report: &mut VerifyReport,
) {
    let Some(pkg) = read(dir, rel, f) else {
        return;
    };
    report.packages.push(rel.to_string());
    check_program(rel, &pkg, f);
    let desc = &pkg.description;
    let declared: BTreeSet<String> = if desc.is_multifunction() {
        desc.functions.iter().map(|x| x.name.clone()).collect()
    } else {
        BTreeSet::from([PREFILL_FN.to_string()])
    };
    let want: BTreeSet<String> = kinds.iter().map(FunctionKind::name).collect();
    if declared != want {
        f.mismatch(
            rel,
            Some("functions"),
            format!("are {declared:?}, the set's build options give {want:?}"),
        );
    }
    if let Some(first) = kinds.first()
        && desc.default_function_name() != first.name()
    {
        f.mismatch(
            rel,
            Some("default function"),
            format!(
                "is `{}`, the contract's is `{}`",
                desc.default_function_name(),
                first.name()
            ),
        );
    }
    let states = d.io.states(chunk);
    for kind in kinds {
        let name = kind.name();
        let Some(iface) = desc.interface(&name) else {
            continue;
        };
        report.functions += 1;
        let (ins, outs) = d.io.io(chunk, *kind);
        compare_list(rel, &format!("{name}.inputs"), iface.inputs, &ins, false, f);
        compare_list(
            rel,
            &format!("{name}.outputs"),
            iface.outputs,
            &outs,
            false,
            f,
        );
        compare_list(
            rel,
            &format!("{name}.states"),
            iface.states,
            &states,
            true,
            f,
        );
        for x in iface.inputs.iter().chain(iface.outputs).chain(iface.states) {
            if let Some(a) = x.array_type() {
                report.buffers.push(Buffer {
                    package: rel.to_string(),
                    function: name.clone(),
                    name: x.name.clone(),
                    shape: a.shape.iter().map(|&v| v.max(0) as u64).collect(),
                    elements: elements(&a.shape),
                });
            }
        }
        // the head's argmax reads a value as wide as the vocabulary
        let Some(func) = pkg.program.functions.get(&name) else {
            continue;
        };
        for out in [TOKEN_ID, TOKEN_IDS] {
            if !func.block.outputs.iter().any(|o| o == out) {
                continue;
            }
            let Some(src) = crate::logits::argmax_input(func, out) else {
                f.mismatch(
                    rel,
                    Some(&name),
                    format!("`{out}` is not the argmax of a value: its logits cannot be read"),
                );
                continue;
            };
            let width = func
                .find_value(&src)
                .and_then(|v| v.ty.as_tensor())
                .and_then(|t| t.shape.last())
                .and_then(|d| match d {
                    mil::Dim::Fixed(n) => Some(*n),
                    _ => None,
                });
            if width != Some(cfg.vocab_size as u64) {
                f.mismatch(
                    rel,
                    Some(&name),
                    format!(
                        "`{out}` is the argmax over {} values (`{src}`), model_config.json's \
                         vocab_size is {}",
                        width.map_or("an unknown number of".into(), |w| w.to_string()),
                        cfg.vocab_size
                    ),
                );
            }
        }
    }
}

/// Every decode and prefill chunk in every form present (the forms `--format` wrote must be there),
/// and no package that is not a chunk of the set.
pub(super) fn check(
    dir: &Path,
    cfg: &ModelConfig,
    manifest: &ChunkSetManifest,
    d: Option<&Derived>,
    f: &mut Findings,
    report: &mut VerifyReport,
) {
    let expected = manifest.build.spec.format.formats();
    let mut chunk_names = BTreeSet::new();
    let mut check_chunk = |name: &str, spec: Option<&ChunkSpec>, kinds: &[FunctionKind]| {
        chunk_names.insert(name.to_string());
        let present = present_forms(dir, name);
        for form in &expected {
            if !present.contains(form) {
                f.unusable(
                    &form.file_name(name),
                    None,
                    format!(
                        "missing (the set was built with --format {})",
                        manifest.build.spec.format.name()
                    ),
                );
            }
        }
        for form in present {
            let rel = form.file_name(name);
            match (spec, d) {
                (Some(spec), Some(d)) => check_package(dir, &rel, spec, kinds, cfg, d, f, report),
                _ => {
                    if let Some(pkg) = read(dir, &rel, f) {
                        check_program(&rel, &pkg, f);
                        report.packages.push(rel);
                    }
                }
            }
        }
    };
    for (i, c) in cfg.chunks.iter().enumerate() {
        let spec = d.and_then(|d| d.chunks.get(i));
        let kinds = d.map(|d| d.functions.clone()).unwrap_or_default();
        check_chunk(&c.name, spec, &kinds);
    }
    for (i, c) in cfg.prefill_chunks().iter().enumerate() {
        let spec = d.and_then(|d| d.prefill.get(i));
        let kinds: Vec<FunctionKind> = d
            .and_then(|d| d.prefill_n)
            .map(|n| vec![FunctionKind::Prefill { n }])
            .unwrap_or_default();
        check_chunk(&c.name, spec, &kinds);
    }
    // a package or bundle that is no chunk of the set
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut stray: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                [PackageFormat::Mlpackage, PackageFormat::Mlmodelc]
                    .iter()
                    .any(|form| {
                        n.strip_suffix(&format!(".{}", form.extension()))
                            .is_some_and(|stem| !chunk_names.contains(stem))
                    })
            })
            .collect();
        stray.sort();
        for n in stray {
            f.mismatch(
                &n,
                None,
                format!("not a chunk of {}", chunkset::MODEL_CONFIG_NAME),
            );
        }
    }
}
