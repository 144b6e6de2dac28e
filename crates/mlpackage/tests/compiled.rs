//! Compiled bundles (`.mlmodelc`): byte-for-byte against bundles Apple's compiler wrote (the
//! coremltools sample and mlmodelc-export's coremlc fixtures, copied into `fixtures/compiled/`),
//! read back (our bundles and Apple's), and round trips of hand-built programs.

mod common;
#[path = "common/oracle.rs"]
mod oracle;

use common::*;
use mil::{
    DType, Function, NamedValueType, Operation, Program, TensorType, TensorValue, Value, ValueType,
};
use mlpackage::compiled::{
    self, BundleOptions, Compiler, Source, analytics, compile, read_bundle, write_bundle,
};
use mlpackage::{ArrayFeature, Description, Feature, Metadata, Package, read_model};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn compiled_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/compiled")
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The `modelHash` value of an analytics file.
fn model_hash(b: &[u8]) -> String {
    let g = analytics::decode(b).expect("analytics parses");
    g.iter()
        .flat_map(|(_, e)| e)
        .find(|(k, _)| k == "modelHash")
        .map(|(_, v)| v.clone())
        .expect("modelHash present")
}

/// add_model: `var_3 = x * y`, fp16 [1, 10], as coremltools 8.1 converted it from TorchScript.
fn add_model() -> Package {
    let f16 = |n: &str| NamedValueType::tensor(n, TensorType::new(DType::F16, &[1, 10]));
    let mut f = Function::new("CoreML6");
    f.inputs = vec![f16("x"), f16("y")];
    let mut mul = Operation::new("mul", "op_3_cast_fp16");
    mul.inputs
        .insert("x".into(), vec![mil::Binding::Name("x".into())]);
    mul.inputs
        .insert("y".into(), vec![mil::Binding::Name("y".into())]);
    mul.outputs.push(f16("var_3"));
    f.block.operations.push(mul);
    f.block.outputs.push("var_3".into());
    let mut p = Program::single("main", f);
    p.attributes.insert(
        "buildInfo".into(),
        mlpackage::convert::build_info(&[
            ("coremltools-version", "8.1"),
            ("coremltools-component-torch", "2.5.1"),
            ("coremltools-source-dialect", "TorchScript"),
        ]),
    );
    let array = || ArrayFeature::new(DType::F16, &[1, 10]);
    let description = Description {
        inputs: vec![Feature::array("x", array()), Feature::array("y", array())],
        outputs: vec![Feature::array("var_3", array())],
        metadata: Metadata {
            user_defined: BTreeMap::from([
                (
                    "com.github.apple.coremltools.source".to_string(),
                    "torch==2.5.1".to_string(),
                ),
                (
                    "com.github.apple.coremltools.source_dialect".to_string(),
                    "TorchScript".to_string(),
                ),
                (
                    "com.github.apple.coremltools.version".to_string(),
                    "8.1".to_string(),
                ),
            ]),
            ..Metadata::default()
        },
        ..Description::default()
    };
    Package {
        program: p,
        description,
        spec_version: 7,
    }
}

#[test]
fn add_model_sample_is_reproduced_byte_for_byte_and_read_back() {
    let apple = compiled_fixtures().join("apple/add_model.mlmodelc");
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("add_model.mlmodelc");
    let pkg = add_model();
    let opts = BundleOptions {
        compiler: Compiler::new("3402.3.2", "3402.4.1"),
        overwrite: false,
    };
    write_bundle(&pkg, &ours, &opts).unwrap();
    for f in ["model.mil", "coremldata.bin", "metadata.json"] {
        assert!(
            read(&ours.join(f)) == read(&apple.join(f)),
            "{f} differs:\n--- ours\n{}\n--- Apple's\n{}",
            String::from_utf8_lossy(&read(&ours.join(f))),
            String::from_utf8_lossy(&read(&apple.join(f)))
        );
    }
    // analytics: byte for byte except the modelHash value (the hash of a source file we do not
    // have); ours is the hash of the model.mlmodel we compiled
    let (a, b) = (
        read(&ours.join("analytics/coremldata.bin")),
        read(&apple.join("analytics/coremldata.bin")),
    );
    let (ha, hb) = (model_hash(&a), model_hash(&b));
    assert_eq!(ha.len(), hb.len());
    assert_eq!(
        a.windows(ha.len()).position(|w| w == ha.as_bytes()),
        b.windows(hb.len()).position(|w| w == hb.as_bytes())
    );
    let mask = |x: &[u8], h: &str| {
        let at = x.windows(h.len()).position(|w| w == h.as_bytes()).unwrap();
        let mut x = x.to_vec();
        x[at..at + h.len()].fill(b'#');
        x
    };
    assert_eq!(mask(&a, &ha), mask(&b, &hb));
    let (model, _) = mlpackage::encode_in_memory(&pkg).unwrap();
    assert_eq!(ha, analytics::model_hash(&model));
    assert!(!ours.join("weights").exists(), "no blobs, no weight file");

    // read back: our bundle and Apple's give the program and description we started from
    // (the compiled text sorts buildInfo by key, so the program read back has it sorted)
    let mut sorted = pkg.program.clone();
    if let Some(Value::Dict { entries, .. }) = sorted.attributes.get_mut("buildInfo") {
        let key =
            |e: &(Value, Value)| e.0.as_tensor().and_then(|t| t.strings()).unwrap()[0].clone();
        entries.sort_by_key(key);
    }
    for dir in [&ours, &apple] {
        let back = read_bundle(dir).unwrap();
        assert_eq!(back.program, sorted, "{}", dir.display());
        assert_eq!(back.description, pkg.description);
        assert_eq!(back.spec_version, 7);
        assert_eq!(read_model(dir).unwrap().program, sorted);
    }
}

/// The coremlc fixtures of mlmodelc-export (input.mlmodel → expected-macos.mlmodelc).
fn coremlc_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(compiled_fixtures().join("mlmodelc-export"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.mlmodel").is_file())
        .collect();
    v.sort();
    v
}

/// The compiler versions in a `model.mil`'s buildInfo.
fn compiler_of(mil: &str) -> Compiler {
    let get = |key: &str| {
        let k = format!("{{\"{key}\", \"");
        let at = mil.find(&k).unwrap() + k.len();
        mil[at..at + mil[at..].find('"').unwrap()].to_string()
    };
    Compiler::new(get("coremlc-component-MIL"), get("coremlc-version"))
}

fn fixture_source(dir: &Path) -> Source {
    let mut files = BTreeMap::new();
    let w = dir.join("weights/weights.bin");
    if w.is_file() {
        files.insert("weights/weights.bin".to_string(), read(&w).into());
    }
    Source {
        model: read(&dir.join("input.mlmodel")).into(),
        files,
        model_name: "input".into(),
        class_name: "input".into(),
    }
}

#[test]
fn every_coremlc_fixture_is_reproduced_byte_for_byte() {
    let fixtures = coremlc_fixtures();
    assert_eq!(fixtures.len(), 7);
    for dir in fixtures {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let expected = dir.join("expected-macos.mlmodelc");
        let mil = String::from_utf8(read(&expected.join("model.mil"))).unwrap();
        let c = compile(&fixture_source(&dir), &compiler_of(&mil))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.model_mil, mil, "{name}: model.mil");
        assert!(
            c.coremldata == read(&expected.join("coremldata.bin")),
            "{name}: coremldata.bin"
        );
        assert_eq!(
            String::from_utf8_lossy(&c.metadata),
            String::from_utf8_lossy(&read(&expected.join("metadata.json"))),
            "{name}: metadata.json"
        );
        assert!(
            c.analytics == read(&expected.join("analytics/coremldata.bin")),
            "{name}: analytics/coremldata.bin (modelHash = sha256 of input.mlmodel)"
        );
        for (rel, bytes) in &c.files {
            assert_eq!(bytes.as_bytes(), read(&expected.join(rel)), "{name}: {rel}");
        }
    }
}

#[test]
fn apple_compiled_fixtures_read_back_like_ours() {
    for dir in coremlc_fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let expected = dir.join("expected-macos.mlmodelc");
        let mil = String::from_utf8(read(&expected.join("model.mil"))).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let ours = tmp.path().join("input.mlmodelc");
        let c = compile(&fixture_source(&dir), &compiler_of(&mil)).unwrap();
        compiled::write_compiled(&c, &ours, false).unwrap();
        let a = read_bundle(&expected).unwrap_or_else(|e| panic!("{name} (Apple's): {e}"));
        let b = read_bundle(&ours).unwrap_or_else(|e| panic!("{name} (ours): {e}"));
        assert_eq!(a, b, "{name}");
        assert_eq!(a.spec_version, 9);
        // no compiler entries or derived attributes survive the read
        for f in a.program.functions.values() {
            assert!(f.attributes.is_empty(), "{name}");
        }
    }
}

fn bundle_round_trip(name: &str, pkg: &Package) -> Package {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join(format!("{name}.mlmodelc"));
    let report = write_bundle(pkg, &dest, &BundleOptions::default()).unwrap();
    assert!(report.mil_bytes > 0);
    // the weight file is the package's, byte for byte
    let (_, weights) = mlpackage::encode_in_memory(pkg).unwrap();
    match weights {
        Some(w) => assert_eq!(read(&dest.join("weights/weight.bin")), w.as_bytes()),
        None => assert!(!dest.join("weights").exists()),
    }
    let back = read_bundle(&dest).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(back.program, pkg.program, "{name}: program");
    assert_eq!(back.description, pkg.description, "{name}: description");
    assert_eq!(back.spec_version, pkg.spec_version);
    // writing again gives the same bytes
    let again = tmp.path().join(format!("{name}2.mlmodelc"));
    write_bundle(pkg, &again, &BundleOptions::default()).unwrap();
    for f in ["model.mil", "coremldata.bin", "analytics/coremldata.bin"] {
        assert_eq!(read(&dest.join(f)), read(&again.join(f)), "{name}: {f}");
    }
    back
}

fn package(p: Program, default: Option<&str>) -> Package {
    let d = Description::derive(&p, default, Metadata::default()).unwrap();
    Package::new(p, d)
}

#[test]
fn hand_built_programs_round_trip_through_bundles() {
    bundle_round_trip("fp16", &package(single(fp16_function(4, 1)), None));
    bundle_round_trip("state", &package(single(stateful_function()), None));
    bundle_round_trip("pal", &package(single(palettized_function(3)), None));
    bundle_round_trip("int4", &package(single(int4_blockwise_function(5)), None));
    bundle_round_trip("multi", &package(multifunction_program(), Some("main")));
}

#[test]
fn palettized_text_has_uint4_blobs_and_inline_constexpr_inputs() {
    let pkg = package(single(palettized_function(3)), None);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("pal.mlmodelc");
    write_bundle(&pkg, &dest, &BundleOptions::default()).unwrap();
    let text = String::from_utf8(read(&dest.join("model.mil"))).unwrap();
    assert!(text.starts_with("program(1.3)\n[buildInfo = dict<string, string>({{\"coremlc-component-MIL\", \"gemma-convert\"}"), "{text}");
    assert!(
        text.contains("constexpr_lut_to_dense(indices = tensor<uint4, [64, 32]>(BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), offset = uint64(64)))"),
        "{text}"
    );
    assert!(text.contains("    func main<ios18>("), "{text}");
}

#[test]
fn unsupported_inputs_are_typed_errors() {
    // specification version 8 has no compiled sample
    let mut pkg = package(single(fp16_function(2, 1)), None);
    pkg.spec_version = 8;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("v8.mlmodelc");
    let err = write_bundle(&pkg, &dest, &BundleOptions::default()).unwrap_err();
    assert!(err.to_string().contains("specification version 8"), "{err}");
    assert!(!dest.exists());
    // an existing destination is refused
    let pkg = package(single(fp16_function(2, 1)), None);
    std::fs::create_dir(&dest).unwrap();
    let err = write_bundle(&pkg, &dest, &BundleOptions::default()).unwrap_err();
    assert!(
        matches!(err, mlpackage::BundleError::DestinationExists { .. }),
        "{err}"
    );
    // a malformed model.mil names the line
    let ok = tmp.path().join("ok.mlmodelc");
    write_bundle(&pkg, &ok, &BundleOptions::default()).unwrap();
    let mil = ok.join("model.mil");
    let text = std::fs::read_to_string(&mil)
        .unwrap()
        .replacen(" = ", " == ", 3);
    std::fs::write(&mil, text).unwrap();
    let err = read_bundle(&ok).unwrap_err().to_string();
    assert!(err.contains("model.mil") && err.contains("line"), "{err}");
}

#[test]
fn literals_of_every_dtype_round_trip_through_text() {
    use mil::text::{Dialect, fmt_literal, parse_literal};
    let mut rng = Rng::new(7);
    let mut values: Vec<TensorValue> = vec![
        TensorValue::scalar_f32(-0.0),
        TensorValue::scalar_i32(-7),
        TensorValue::scalar_bool(true),
        TensorValue::scalar_str("a \"quoted\" \\ string\n"),
        TensorValue::from_i8(&[3], &[-128, 0, 127]).unwrap(),
        TensorValue::from_u8(&[2, 2], &[0, 1, 254, 255]).unwrap(),
        TensorValue::from_bool(&[3], &[true, false, true]).unwrap(),
        TensorValue::from_f32(&[0], &[]).unwrap(),
        f16_tensor(&[2, 3, 2], &mut rng, 100.0),
    ];
    for dtype in [
        DType::U1,
        DType::U2,
        DType::U3,
        DType::U4,
        DType::U6,
        DType::I4,
    ] {
        let bits = dtype.bits().unwrap();
        let raw: Vec<u8> = (0..11).map(|i| (i * 5 % (1 << bits)) as u8).collect();
        let bytes = mil::value::pack_bits(&raw, bits);
        values.push(TensorValue::from_bytes(TensorType::new(dtype, &[11]), bytes).unwrap());
    }
    let f32s: Vec<f32> = (0..24).map(|_| rng.f32(1e3)).collect();
    values.push(TensorValue::from_f32(&[2, 3, 4], &f32s).unwrap());
    for d in [Dialect::Ios18, Dialect::Legacy] {
        for v in &values {
            let v = Value::Tensor(v.clone());
            let text = fmt_literal(&v, d).unwrap();
            let mut no_blobs = |_: &TensorType, _: &str, _: u64| Err("no blobs".to_string());
            let back =
                parse_literal(&text, &mut no_blobs).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back, v, "{text}");
        }
    }
    // spellings pinned by compiled samples
    let t = |v: TensorValue, d| fmt_literal(&Value::Tensor(v), d).unwrap();
    assert_eq!(
        t(TensorValue::scalar_str("x"), Dialect::Ios18),
        "string(\"x\")"
    );
    assert_eq!(
        t(TensorValue::scalar_str("x"), Dialect::Legacy),
        "tensor<string, []>(\"x\")"
    );
    assert_eq!(
        t(TensorValue::scalar_f32(0.5), Dialect::Ios18),
        "fp32(0x1p-1)"
    );
    assert_eq!(
        t(
            TensorValue::from_f32(&[1], &[-1.0]).unwrap(),
            Dialect::Ios18
        ),
        "tensor<fp32, [1]>([-0x1p+0])"
    );
    assert_eq!(
        mil::text::fmt_type(
            &ValueType::Tensor(TensorType::scalar(DType::I32)),
            Dialect::Ios18
        ),
        "int32"
    );
}

#[test]
fn dense_models_agree_with_mlmodelc_export() {
    use mlpackage::compiled::package_source;
    // coremltools-written packages (fp16 and multi-function) and hand-built dense programs
    let tmp = tempfile::tempdir().unwrap();
    let mut cases: Vec<(String, PathBuf)> = Vec::new();
    for name in ["tiny_fp16", "tiny_multi"] {
        cases.push((name.into(), fixtures().join(format!("{name}.mlpackage"))));
    }
    for (name, pkg) in [
        ("fp16", package(single(fp16_function(4, 1)), None)),
        ("multi", package(multifunction_program(), Some("main"))),
    ] {
        let dest = tmp.path().join(format!("{name}.mlpackage"));
        mlpackage::write_package(&pkg, &dest, &Default::default()).unwrap();
        cases.push((name.into(), dest));
    }
    for (name, pkg) in cases {
        let src = package_source(&pkg).unwrap();
        let ours = compile(&src, &Compiler::gemma_convert()).unwrap();
        let files = src
            .files
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .collect();
        oracle::agrees_with_mlmodelc_export(&name, src.model.as_bytes(), &files, &ours);
    }
}
