//! Hand-built programs: write → read faithfulness, coremltools validation, blob policy and dedup,
//! determinism and atomic-write behaviour.

mod common;

use common::*;
use mil::{DType, Program, Value};
use mlpackage::coremltools_check::{CheckOptions, check_package};
use mlpackage::{
    Description, FeatureKind, Metadata, Package, PackageError, WriteOptions, read_package,
    read_package_spec, write_package,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn metadata() -> Metadata {
    Metadata {
        short_description: "hand-built".into(),
        version: "0.1".into(),
        author: "mlpackage tests".into(),
        license: "MIT".into(),
        user_defined: BTreeMap::from([("com.gemma-convert.test".into(), "1".into())]),
    }
}

fn package(p: Program) -> Package {
    let d = Description::derive(&p, None, metadata()).unwrap();
    Package::new(p, d)
}

/// Write, read back (must be equal), validate with coremltools; returns the package dir.
fn write_read_validate(name: &str, pkg: &Package, dir: &Path) -> std::path::PathBuf {
    let dest = dir.join(format!("{name}.mlpackage"));
    let report = write_package(pkg, &dest, &WriteOptions::default()).unwrap();
    assert!(report.model_bytes > 0);
    let back = read_package(&dest).unwrap();
    assert_eq!(
        back.program, pkg.program,
        "{name}: program differs after read"
    );
    assert_eq!(
        back.description, pkg.description,
        "{name}: description differs"
    );
    assert_eq!(back.spec_version, 9);
    let check = check_package(
        &dest,
        &CheckOptions {
            materialize: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(check.stdout.contains("OK"), "{}", check.stdout);
    dest
}

/// Every blob reference (function, op, where, offset) in a written package.
fn blob_refs(dest: &Path) -> Vec<(String, String, u64)> {
    use coreml_proto::mil_spec::value::Value as V;
    let model = read_package_spec(dest).unwrap();
    let Some(coreml_proto::specification::model::Type::MlProgram(p)) = model.r#type else {
        panic!("not an ML program")
    };
    let mut out = Vec::new();
    for (fname, f) in &p.functions {
        for op in &f.block_specializations[&f.opset].operations {
            let mut push = |v: &coreml_proto::mil_spec::Value, wh: &str| {
                if let Some(V::BlobFileValue(b)) = &v.value {
                    out.push((fname.clone(), wh.to_string(), b.offset));
                }
            };
            for (k, v) in &op.attributes {
                push(v, &format!("{}.{k}", op.outputs[0].name));
            }
            for (k, a) in &op.inputs {
                for b in &a.arguments {
                    if let Some(coreml_proto::mil_spec::argument::binding::Binding::Value(v)) =
                        &b.binding
                    {
                        push(v, &format!("{}.{k}", op.outputs[0].name));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn fp16_program_round_trips_and_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = write_read_validate("fp16", &package(single(fp16_function(4, 1))), tmp.path());
    let refs = blob_refs(&dest);
    let names: BTreeSet<&str> = refs.iter().map(|r| r.1.as_str()).collect();
    // fp16 weights and the 12-element int32 vector go to weight.bin; scalars and short vectors don't
    assert_eq!(
        names,
        BTreeSet::from(["w.val", "b.val", "gamma.val", "beta.val", "idx.val"])
    );
}

#[test]
fn stateful_program_round_trips_and_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = package(single(stateful_function()));
    assert_eq!(pkg.description.states.len(), 1);
    assert!(matches!(
        pkg.description.states[0].kind,
        FeatureKind::State(_)
    ));
    write_read_validate("state", &pkg, tmp.path());
}

#[test]
fn palettized_program_round_trips_and_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = write_read_validate("pal", &package(single(palettized_function(3))), tmp.path());
    let refs = blob_refs(&dest);
    let names: BTreeSet<&str> = refs.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["w_palettized.indices", "w_palettized.lut", "bias.val"])
    );
    // the uint4 indices blob: code 11, 64·32/2 bytes, no padding bits
    let wb = std::fs::read(dest.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap();
    let off = refs
        .iter()
        .find(|r| r.1 == "w_palettized.indices")
        .unwrap()
        .2 as usize;
    assert_eq!(
        u32::from_le_bytes(wb[off + 4..off + 8].try_into().unwrap()),
        11
    );
    assert_eq!(
        u64::from_le_bytes(wb[off + 8..off + 16].try_into().unwrap()),
        1024
    );
}

#[test]
fn int4_blockwise_program_round_trips_and_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = package(single(int4_blockwise_function(5)));
    let dest = write_read_validate("int4", &pkg, tmp.path());
    let back = read_package(&dest).unwrap();
    let op = &back.program.functions["main"].block.operations[0];
    let Some(mil::Binding::Value(Value::Tensor(data))) = op.input("data") else {
        panic!("data is not an inline value")
    };
    assert_eq!(data.dtype(), DType::I4);
}

#[test]
fn multifunction_shares_identical_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let p = multifunction_program();
    let d = Description::derive(&p, Some("main"), Metadata::default()).unwrap();
    assert!(d.is_multifunction());
    assert_eq!(d.default_function, "main");
    assert!(d.inputs.is_empty() && d.outputs.is_empty());
    let pkg = Package::new(p, d);
    let dest = tmp.path().join("multi.mlpackage");
    let report = write_package(&pkg, &dest, &WriteOptions::default()).unwrap();
    // 5 blob consts per function, 10 references, 5 distinct blobs
    assert_eq!((report.blob_references, report.blob_count), (10, 5));
    let refs = blob_refs(&dest);
    let by_fn = |f: &str| -> BTreeMap<String, u64> {
        refs.iter()
            .filter(|r| r.0 == f)
            .map(|r| (r.1.clone(), r.2))
            .collect()
    };
    assert_eq!(
        by_fn("main"),
        by_fn("decode"),
        "both functions point at the same blobs"
    );
    assert_eq!(by_fn("main").len(), 5);
    let back = read_package(&dest).unwrap();
    assert_eq!(back, pkg);
    // zero copy: both functions' `w` are slices of the same mapped bytes
    let w = |f: &str| {
        back.program.functions[f].block.operations[0]
            .const_value()
            .and_then(Value::as_tensor)
            .and_then(|t| t.bytes())
            .map(|b| b.as_bytes().as_ptr())
            .unwrap()
    };
    assert_eq!(w("main"), w("decode"));
    check_package(&dest, &CheckOptions::default()).unwrap();
}

#[test]
fn writing_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, p) in [
        ("fp16", single(fp16_function(4, 9))),
        ("pal", single(palettized_function(9))),
        ("multi", multifunction_program()),
    ] {
        let d = Description::derive(&p, Some("main"), metadata()).unwrap();
        let pkg = Package::new(p, d);
        let a = tmp.path().join(format!("{name}-a.mlpackage"));
        let b = tmp.path().join(format!("{name}-b.mlpackage"));
        write_package(&pkg, &a, &WriteOptions::default()).unwrap();
        // a clone with separately allocated buffers must give the same bytes
        let copy = read_package(&a).unwrap();
        write_package(&copy, &b, &WriteOptions::default()).unwrap();
        let (fa, fb) = (files(&a), files(&b));
        assert_eq!(
            fa.len(),
            3,
            "{name}: Manifest.json, model.mlmodel, weight.bin"
        );
        assert_eq!(fa, fb, "{name}: packages differ");
    }
}

#[test]
fn program_without_blobs_has_no_weight_file() {
    let tmp = tempfile::tempdir().unwrap();
    let f = stateful_function();
    let dest = write_read_validate("noblobs", &package(single(f)), tmp.path());
    assert!(dest.join("Data/com.apple.CoreML/weights").is_dir());
    assert!(
        !dest
            .join("Data/com.apple.CoreML/weights/weight.bin")
            .exists()
    );
}

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn existing_destination_is_refused_or_replaced_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("m.mlpackage");
    let first = package(single(fp16_function(4, 1)));
    let second = package(single(palettized_function(2)));
    write_package(&first, &dest, &WriteOptions::default()).unwrap();
    let e = write_package(&second, &dest, &WriteOptions::default()).unwrap_err();
    assert!(matches!(e, PackageError::DestinationExists { .. }), "{e}");
    assert_eq!(
        read_package(&dest).unwrap(),
        first,
        "refused write left the package alone"
    );
    write_package(&second, &dest, &WriteOptions { overwrite: true }).unwrap();
    assert_eq!(read_package(&dest).unwrap(), second);
    assert_eq!(
        entries(tmp.path()),
        BTreeSet::from(["m.mlpackage".to_string()])
    );
}

#[test]
fn failed_write_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("bad.mlpackage");
    let mut pkg = package(single(fp16_function(4, 1)));
    pkg.description.outputs.pop();
    let e = write_package(&pkg, &dest, &WriteOptions::default()).unwrap_err();
    assert!(matches!(e, PackageError::Description { .. }), "{e}");
    assert!(entries(tmp.path()).is_empty(), "temp dir removed");

    // an unsupported specification version is detected while building, too
    let mut pkg = package(single(fp16_function(4, 1)));
    pkg.spec_version = 3;
    let e = write_package(&pkg, &dest, &WriteOptions::default()).unwrap_err();
    assert!(
        matches!(e, PackageError::SpecVersion { found: 3, .. }),
        "{e}"
    );
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn description_mismatches_are_typed() {
    let p = single(fp16_function(4, 1));
    let mut d = Description::derive(&p, None, Metadata::default()).unwrap();
    d.inputs[0].name = "other".into();
    let e = d.check(&p).unwrap_err();
    assert!(e.to_string().contains("`other`"), "{e}");
    let mut d = Description::derive(&p, None, Metadata::default()).unwrap();
    if let FeatureKind::Array(a) = &mut d.outputs[0].kind {
        a.dtype = DType::F16;
    }
    assert!(d.check(&p).is_err());
    assert!(Description::derive(&p, Some("nope"), Metadata::default()).is_err());
}

#[test]
fn in_memory_encoding_matches_the_written_files() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = package(single(palettized_function(4)));
    let dest = tmp.path().join("m.mlpackage");
    write_package(&pkg, &dest, &WriteOptions::default()).unwrap();
    let (model, weights) = mlpackage::encode_in_memory(&pkg).unwrap();
    assert_eq!(
        std::fs::read(dest.join("Data/com.apple.CoreML/model.mlmodel")).unwrap(),
        model
    );
    assert_eq!(
        std::fs::read(dest.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap(),
        weights.unwrap().as_bytes()
    );
    let manifest = std::fs::read(dest.join("Manifest.json")).unwrap();
    let (m2, w2) = mlpackage::encode_in_memory(&pkg).unwrap();
    let back = mlpackage::read_package_from_parts(&manifest, &m2, w2).unwrap();
    assert_eq!(back, pkg);
}

#[test]
fn coremltools_check_reports_a_corrupt_package() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("bad.mlpackage");
    write_package(
        &package(single(palettized_function(6))),
        &dest,
        &WriteOptions::default(),
    )
    .unwrap();
    let wb = dest.join("Data/com.apple.CoreML/weights/weight.bin");
    let mut bytes = std::fs::read(&wb).unwrap();
    bytes[68] = 2; // first record (uint4 indices) now claims fp32
    std::fs::write(&wb, bytes).unwrap();
    let e = check_package(&dest, &CheckOptions::default()).unwrap_err();
    let mlpackage::coremltools_check::CheckError::Failed { stdout, .. } = &e else {
        panic!("{e}")
    };
    assert!(
        stdout.contains("FAIL: ") && stdout.contains("dtype code 2"),
        "{stdout}"
    );
}

/// The multi-function stateful package coremltools writes (`fixtures/coreml/tiny_state_multi`,
/// functions `infer` + `prefill_b2`, states `kv_cache_sliding` / `kv_cache_full`): the states are
/// listed per function (`FunctionDescription.state`), the top-level lists stay empty, and the
/// description we derive from the program is the one coremltools wrote. Our copy of the package
/// reads back equal and validates.
#[test]
fn multi_function_stateful_description_matches_coremltools() {
    let src = read_package(&fixtures().join("tiny_state_multi.mlpackage")).unwrap();
    let d = &src.description;
    assert!(d.inputs.is_empty() && d.outputs.is_empty() && d.states.is_empty());
    assert_eq!(d.default_function_name(), "infer");
    let ours = Description::derive(&src.program, Some("infer"), metadata()).unwrap();
    assert_eq!(ours.functions.len(), 2);
    for (a, b) in ours.functions.iter().zip(&d.functions) {
        assert_eq!(a.name, b.name);
        let sig = |v: &[mlpackage::Feature]| -> Vec<(String, bool, Vec<i64>, DType)> {
            v.iter()
                .map(|f| {
                    let a = f.array_type().unwrap();
                    (
                        f.name.clone(),
                        matches!(f.kind, FeatureKind::State(_)),
                        a.shape.clone(),
                        a.dtype,
                    )
                })
                .collect()
        };
        assert_eq!(sig(&a.inputs), sig(&b.inputs), "{} inputs", a.name);
        assert_eq!(sig(&a.states), sig(&b.states), "{} states", a.name);
        assert_eq!(sig(&a.outputs), sig(&b.outputs), "{} outputs", a.name);
        assert_eq!(
            sig(&a.states),
            [
                (
                    "kv_cache_sliding".to_string(),
                    true,
                    vec![2, 1, 4, 4],
                    DType::F16
                ),
                (
                    "kv_cache_full".to_string(),
                    true,
                    vec![2, 1, 12, 4],
                    DType::F16
                ),
            ]
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    write_read_validate(
        "state_multi",
        &Package::new(src.program.clone(), ours),
        tmp.path(),
    );
}

/// Core ML states are fp16 only: an fp32 state is refused by `derive` (typed, naming the state) and
/// by the coremltools check; `StateDtypes::AllowFp32` writes it for verification builds, and the
/// check accepts it only with `allow_fp32_states`.
#[test]
fn fp32_states_only_with_an_explicit_opt_in() {
    let mut f = stateful_function();
    let to_f32 = |ty: &mut mil::ValueType| match ty {
        mil::ValueType::Tensor(t) | mil::ValueType::State(t) => t.dtype = DType::F32,
        _ => {}
    };
    for i in &mut f.inputs {
        to_f32(&mut i.ty);
    }
    for op in &mut f.block.operations {
        for o in &mut op.outputs {
            to_f32(&mut o.ty);
        }
    }
    let p = single(f);
    match Description::derive(&p, None, metadata()) {
        Err(mlpackage::DescriptionError::StateDtype { name, dtype, .. }) => {
            assert_eq!((name.as_str(), dtype), ("cache", DType::F32));
        }
        other => panic!("expected a state dtype error, got {other:?}"),
    }
    let d =
        Description::derive_with(&p, None, metadata(), mlpackage::StateDtypes::AllowFp32).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("fp32_state.mlpackage");
    write_package(&Package::new(p, d), &dest, &WriteOptions::default()).unwrap();
    let e = check_package(&dest, &CheckOptions::default()).unwrap_err();
    assert!(e.to_string().contains("FLOAT16 only"), "{e}");
    check_package(
        &dest,
        &CheckOptions {
            allow_fp32_states: true,
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn package_group_shares_one_byte_identical_weight_file() {
    let tmp = tempfile::tempdir().unwrap();
    // same weights (same seed), different sequence length, plus a package with blobs of its own
    let a = package(single(fp16_function(4, 7)));
    let b = package(single(fp16_function(2, 7)));
    let c = package(single(palettized_function(3)));
    let dests: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| tmp.path().join(format!("{n}.mlpackage")))
        .collect();
    let mut group = mlpackage::PackageGroup::new(tmp.path(), &WriteOptions::default()).unwrap();
    for (p, d) in [&a, &b, &c].into_iter().zip(&dests) {
        group.add(p, d).unwrap();
    }
    let reports = group.finish().unwrap();
    assert_eq!(reports.len(), 3);
    let weight =
        |d: &Path| std::fs::read(d.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap();
    assert_eq!(
        weight(&dests[0]),
        weight(&dests[1]),
        "a and b share the file"
    );
    assert_eq!(weight(&dests[0]), weight(&dests[2]), "c shares it too");
    #[cfg(unix)]
    {
        // one file on disk: the members' weight files are hard links of each other
        use std::os::unix::fs::MetadataExt;
        let meta = |d: &Path| {
            std::fs::metadata(d.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap()
        };
        let m0 = meta(&dests[0]);
        assert_eq!(m0.nlink(), 3);
        for d in &dests[1..] {
            assert_eq!((meta(d).dev(), meta(d).ino()), (m0.dev(), m0.ino()));
        }
    }
    // a and b reference the same blobs at the same offsets; the union is stored once
    let offsets = |d: &Path| -> BTreeSet<u64> { blob_refs(d).into_iter().map(|r| r.2).collect() };
    assert_eq!(offsets(&dests[0]), offsets(&dests[1]));
    let (_, alone_a) = mlpackage::encode_in_memory(&a).unwrap();
    let (_, alone_c) = mlpackage::encode_in_memory(&c).unwrap();
    let alone_a = alone_a.unwrap();
    let alone_a = alone_a.as_bytes();
    // after the 64-byte header (whose blob count differs), the first member's blobs come first,
    // exactly as it would write them alone
    assert!(
        weight(&dests[0])[64..alone_a.len()] == alone_a[64..],
        "the group's file starts with the first member's blobs"
    );
    assert!(weight(&dests[0]).len() > alone_c.unwrap().as_bytes().len());
    assert_eq!(reports[0].blob_count, reports[2].blob_count);
    assert_eq!(reports[0].blob_references, reports[1].blob_references);
    // every member reads back as written; together they reference every blob of the file (each
    // one only its own: a group is meant for packages of the same weights, as the next one is)
    let records: BTreeSet<u64> =
        mlpackage::BlobReader::open(&dests[0].join("Data/com.apple.CoreML/weights/weight.bin"))
            .unwrap()
            .records()
            .map(|r| r.offset)
            .collect();
    let mut union = BTreeSet::new();
    for (p, d) in [&a, &b, &c].into_iter().zip(&dests) {
        assert_eq!(&read_package(d).unwrap(), p, "{}", d.display());
        let refs = mlpackage::referenced_blobs(d).unwrap();
        assert!(refs.is_subset(&records));
        union.extend(refs);
    }
    assert_eq!(union, records);
    // packages of the same weights: nothing unused, and coremltools accepts both
    let sub = tmp.path().join("same");
    std::fs::create_dir(&sub).unwrap();
    let mut group = mlpackage::PackageGroup::new(&sub, &WriteOptions::default()).unwrap();
    let (da, db) = (sub.join("a.mlpackage"), sub.join("b.mlpackage"));
    group.add(&a, &da).unwrap();
    group.add(&b, &db).unwrap();
    group.finish().unwrap();
    for d in [&da, &db] {
        assert_eq!(
            mlpackage::referenced_blobs(d).unwrap(),
            records
                .iter()
                .copied()
                .take(offsets(&dests[0]).len())
                .collect()
        );
        check_package(
            d,
            &CheckOptions {
                materialize: true,
                ..Default::default()
            },
        )
        .unwrap();
    }
    // a's file carries c's blobs, unused by a: the validator refuses that, unless told the file
    // is shared with c (whose program references them); b references none of them, and a
    // package of another weight file is no twin
    let strict = check_package(&dests[0], &CheckOptions::default()).unwrap_err();
    assert!(strict.to_string().contains("not referenced"), "{strict}");
    let twin = |t: &Path| CheckOptions {
        shared_with: Some(t.to_path_buf()),
        ..Default::default()
    };
    check_package(&dests[0], &twin(&dests[2])).unwrap();
    let e = check_package(&dests[0], &twin(&dests[1])).unwrap_err();
    assert!(e.to_string().contains("nor by"), "{e}");
    let e = check_package(&dests[0], &twin(&da)).unwrap_err();
    assert!(e.to_string().contains("differs"), "{e}");
    // nothing else was left in the directory (the temporary weight file is gone)
    assert_eq!(
        entries(tmp.path()),
        BTreeSet::from(["a.mlpackage", "b.mlpackage", "c.mlpackage", "same"].map(String::from))
    );
    // a refused member leaves nothing behind
    let mut group = mlpackage::PackageGroup::new(tmp.path(), &WriteOptions::default()).unwrap();
    let e = group.add(&a, &dests[0]).unwrap_err();
    assert!(matches!(e, PackageError::DestinationExists { .. }), "{e}");
    drop(group);
    assert_eq!(entries(tmp.path()).len(), 4);
}
