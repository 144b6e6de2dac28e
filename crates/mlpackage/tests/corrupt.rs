//! Corrupt packages give typed errors naming the file (and op / offset), never panics.

mod common;

use common::*;
use coreml_proto::mil_spec as pb;
use coreml_proto::specification::{Model, model};
use mil::Buffer;
use mlpackage::{
    ManifestError, PackageError, ProgramError, WeightsError, read_package, read_package_from_parts,
};
use prost::Message;
use std::path::{Path, PathBuf};

const MODEL: &str = "Data/com.apple.CoreML/model.mlmodel";
const WEIGHTS: &str = "Data/com.apple.CoreML/weights/weight.bin";

/// A fresh copy of the palettized fixture.
fn copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("p.mlpackage");
    copy_dir(&fixtures().join("tiny_pal4.mlpackage"), &dst);
    (tmp, dst)
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

fn edit_model(pkg: &Path, f: impl FnOnce(&mut Model)) {
    let p = pkg.join(MODEL);
    let mut m = Model::decode(std::fs::read(&p).unwrap().as_slice()).unwrap();
    f(&mut m);
    std::fs::write(&p, m.encode_to_vec()).unwrap();
}

/// The operations of `main`.
fn main_ops(m: &mut Model) -> &mut Vec<pb::Operation> {
    let Some(model::Type::MlProgram(p)) = &mut m.r#type else {
        panic!("not an ML program")
    };
    let f = p.functions.get_mut("main").unwrap();
    &mut f
        .block_specializations
        .get_mut("CoreML8")
        .unwrap()
        .operations
}

/// The first op whose `val` attribute is a blob, and that value.
fn first_blob_const(m: &mut Model) -> &mut pb::Value {
    main_ops(m)
        .iter_mut()
        .filter(|o| o.r#type == "const")
        .find_map(|o| {
            let v = o.attributes.get_mut("val")?;
            matches!(v.value, Some(pb::value::Value::BlobFileValue(_))).then_some(v)
        })
        .unwrap()
}

fn read_err(pkg: &Path) -> PackageError {
    let e = read_package(pkg).expect_err("corrupt package must not read");
    assert!(!e.to_string().is_empty());
    e
}

#[test]
fn truncated_weight_file() {
    let (_t, p) = copy();
    edit(&p.join(WEIGHTS), |b| b.truncate(b.len() - 10));
    let e = read_err(&p);
    assert!(
        matches!(&e, PackageError::Weights { path, source: WeightsError::PayloadOutOfBounds { .. } } if path.ends_with("weight.bin")),
        "{e}"
    );
    edit(&p.join(WEIGHTS), |b| b.truncate(30));
    assert!(matches!(
        read_err(&p),
        PackageError::Weights {
            source: WeightsError::TooShort { len: 30 },
            ..
        }
    ));
}

#[test]
fn bad_sentinel() {
    let (_t, p) = copy();
    edit(&p.join(WEIGHTS), |b| b[65] = 0);
    let e = read_err(&p);
    assert!(
        matches!(
            e,
            PackageError::Weights {
                source: WeightsError::Sentinel { offset: 64, .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn unknown_blob_dtype_code() {
    let (_t, p) = copy();
    edit(&p.join(WEIGHTS), |b| b[68] = 99);
    let e = read_err(&p);
    assert!(
        matches!(
            e,
            PackageError::Weights {
                source: WeightsError::UnknownDtypeCode { code: 99, .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn bad_storage_version() {
    let (_t, p) = copy();
    edit(&p.join(WEIGHTS), |b| b[4] = 1);
    assert!(matches!(
        read_err(&p),
        PackageError::Weights {
            source: WeightsError::Version { found: 1 },
            ..
        }
    ));
}

#[test]
fn blob_dtype_mismatch_names_the_op() {
    let (_t, p) = copy();
    // the first blob is the fp16 bias-free embedding LUT or weight; make its record say uint8
    let offset = {
        let mut m = Model::decode(std::fs::read(p.join(MODEL)).unwrap().as_slice()).unwrap();
        match &first_blob_const(&mut m).value {
            Some(pb::value::Value::BlobFileValue(b)) => b.offset as usize,
            _ => unreachable!(),
        }
    };
    edit(&p.join(WEIGHTS), |b| b[offset + 4] = 3);
    let e = read_err(&p);
    let PackageError::Program {
        path,
        location,
        source,
    } = &e
    else {
        panic!("{e}")
    };
    assert!(path.ends_with("model.mlmodel"));
    assert!(
        location.contains("op #") && location.contains("(const)"),
        "{location}"
    );
    assert!(
        matches!(
            source,
            ProgramError::Blob(WeightsError::DtypeMismatch {
                found: mil::DType::U8,
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn blob_offset_out_of_range() {
    let (_t, p) = copy();
    edit_model(&p, |m| {
        if let Some(pb::value::Value::BlobFileValue(b)) = &mut first_blob_const(m).value {
            b.offset = 1 << 40;
        }
    });
    let e = read_err(&p);
    assert!(
        matches!(&e, PackageError::Program { source: ProgramError::Blob(WeightsError::NotARecord { offset }), .. } if *offset == 1 << 40),
        "{e}"
    );
    assert!(e.to_string().contains("1099511627776"), "{e}");
}

#[test]
fn other_blob_file_is_rejected() {
    let (_t, p) = copy();
    edit_model(&p, |m| {
        if let Some(pb::value::Value::BlobFileValue(b)) = &mut first_blob_const(m).value {
            b.file_name = "@model_path/weights/other.bin".into();
        }
    });
    assert!(matches!(
        read_err(&p),
        PackageError::Program {
            source: ProgramError::BlobFile { .. },
            ..
        }
    ));
}

#[test]
fn missing_weight_file() {
    let (_t, p) = copy();
    std::fs::remove_file(p.join(WEIGHTS)).unwrap();
    let e = read_err(&p);
    assert!(
        matches!(
            e,
            PackageError::Program {
                source: ProgramError::Blob(WeightsError::NoWeightFile { .. }),
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn manifest_problems() {
    let (_t, p) = copy();
    let man = p.join("Manifest.json");
    let good = std::fs::read_to_string(&man).unwrap();

    std::fs::write(&man, "{ not json").unwrap();
    assert!(matches!(
        read_err(&p),
        PackageError::Manifest {
            source: ManifestError::Json(_),
            ..
        }
    ));

    let root = {
        let v: serde_json::Value = serde_json::from_str(&good).unwrap();
        v["rootModelIdentifier"].as_str().unwrap().to_string()
    };
    std::fs::write(
        &man,
        good.replace(
            &format!("\"rootModelIdentifier\": \"{root}\""),
            "\"rootModelIdentifier\": \"nope\"",
        ),
    )
    .unwrap();
    assert!(matches!(
        read_err(&p),
        PackageError::Manifest {
            source: ManifestError::RootNotFound(_),
            ..
        }
    ));

    std::fs::write(&man, good.replace("\"1.0.0\"", "\"1.1.0\"")).unwrap();
    assert!(matches!(
        read_err(&p),
        PackageError::Manifest {
            source: ManifestError::VersionTooNew(_),
            ..
        }
    ));

    std::fs::write(
        &man,
        good.replace("com.apple.CoreML/weights", "com.apple.CoreML/gone"),
    )
    .unwrap();
    assert!(matches!(
        read_err(&p),
        PackageError::Manifest {
            source: ManifestError::ItemMissing { .. },
            ..
        }
    ));

    std::fs::remove_file(&man).unwrap();
    let e = read_err(&p);
    assert!(
        matches!(&e, PackageError::Io { path, .. } if path.ends_with("Manifest.json")),
        "{e}"
    );
}

#[test]
fn truncated_or_garbage_model() {
    let (_t, p) = copy();
    let good = std::fs::read(p.join(MODEL)).unwrap();
    std::fs::write(p.join(MODEL), &good[..good.len() / 2]).unwrap();
    let e = read_err(&p);
    assert!(
        matches!(&e, PackageError::Decode { path, .. } if path.ends_with("model.mlmodel")),
        "{e}"
    );

    std::fs::write(p.join(MODEL), [0xffu8; 64]).unwrap();
    assert!(matches!(read_err(&p), PackageError::Decode { .. }));

    // an empty file decodes as an empty Model: specificationVersion 0
    std::fs::write(p.join(MODEL), []).unwrap();
    assert!(matches!(
        read_err(&p),
        PackageError::SpecVersion { found: 0, .. }
    ));

    let not_program = Model {
        specification_version: 9,
        ..Model::default()
    };
    std::fs::write(p.join(MODEL), not_program.encode_to_vec()).unwrap();
    assert!(matches!(read_err(&p), PackageError::NotMlProgram { .. }));
}

#[test]
fn malformed_program_protos() {
    type Edit = fn(&mut Model);
    type Expect = fn(&ProgramError) -> bool;
    let cases: Vec<(&str, Edit, Expect)> = vec![
        (
            "op without name",
            |m| {
                main_ops(m)[3].attributes.remove("name");
            },
            |e| matches!(e, ProgramError::Missing { .. }),
        ),
        (
            "fp16 immediate stored as floats",
            |m| {
                use pb::tensor_value::{RepeatedFloats, Value as T};
                let op = main_ops(m)
                    .iter_mut()
                    .find(|o| {
                        o.r#type == "const"
                            && o.attributes["val"].r#type.as_ref().is_some_and(|t| {
                                matches!(&t.r#type, Some(pb::value_type::Type::TensorType(tt)) if tt.data_type == pb::DataType::Float16 as i32)
                            })
                            && matches!(o.attributes["val"].value, Some(pb::value::Value::ImmediateValue(_)))
                    })
                    .unwrap();
                if let Some(pb::value::Value::ImmediateValue(i)) =
                    &mut op.attributes.get_mut("val").unwrap().value
                {
                    i.value = Some(pb::value::immediate_value::Value::Tensor(pb::TensorValue {
                        value: Some(T::Floats(RepeatedFloats { values: vec![1.0] })),
                    }));
                }
            },
            |e| {
                matches!(
                    e,
                    ProgramError::WrongField {
                        found: "floats",
                        expected: "bytes",
                        ..
                    }
                )
            },
        ),
        (
            "rank disagrees with dimensions",
            |m| {
                let out = &mut main_ops(m)[5].outputs[0];
                if let Some(pb::value_type::Type::TensorType(t)) =
                    &mut out.r#type.as_mut().unwrap().r#type
                {
                    t.rank += 1;
                }
            },
            |e| matches!(e, ProgramError::Rank { .. }),
        ),
        (
            "unknown data type",
            |m| {
                let out = &mut main_ops(m)[5].outputs[0];
                if let Some(pb::value_type::Type::TensorType(t)) =
                    &mut out.r#type.as_mut().unwrap().r#type
                {
                    t.data_type = 77;
                }
            },
            |e| matches!(e, ProgramError::UnknownDataType { code: 77 }),
        ),
        (
            "program docString",
            |m| {
                if let Some(model::Type::MlProgram(p)) = &mut m.r#type {
                    p.doc_string = "doc".into();
                }
            },
            |e| matches!(e, ProgramError::Unsupported { .. }),
        ),
        (
            "two block specializations",
            |m| {
                if let Some(model::Type::MlProgram(p)) = &mut m.r#type {
                    let f = p.functions.get_mut("main").unwrap();
                    let b = f.block_specializations["CoreML8"].clone();
                    f.block_specializations.insert("CoreML7".into(), b);
                }
            },
            |e| matches!(e, ProgramError::Unsupported { .. }),
        ),
        (
            "empty binding",
            |m| {
                let op = main_ops(m)
                    .iter_mut()
                    .find(|o| o.r#type == "linear")
                    .unwrap();
                op.inputs.get_mut("x").unwrap().arguments[0].binding = None;
            },
            |e| matches!(e, ProgramError::Missing { what: "binding" }),
        ),
    ];
    for (what, f, ok) in cases {
        let (_t, p) = copy();
        edit_model(&p, f);
        let e = read_err(&p);
        match &e {
            PackageError::Program {
                source, location, ..
            } => {
                assert!(ok(source), "{what}: unexpected error {e}");
                let expected = if what == "program docString" {
                    "program"
                } else {
                    "function `main`"
                };
                assert!(location.contains(expected), "{what}: {location}");
            }
            _ => panic!("{what}: unexpected error {e}"),
        }
    }
}

#[test]
fn random_corruption_never_panics() {
    let src = fixtures().join("tiny_pal4.mlpackage");
    let manifest = std::fs::read(src.join("Manifest.json")).unwrap();
    let model = std::fs::read(src.join(MODEL)).unwrap();
    let weights = std::fs::read(src.join(WEIGHTS)).unwrap();
    assert!(
        read_package_from_parts(&manifest, &model, Some(Buffer::from_vec(weights.clone()))).is_ok()
    );
    let mut rng = Rng::new(42);
    let mut failures = 0;
    for i in 0..600 {
        let (mut a, mut b, mut c) = (manifest.clone(), model.clone(), weights.clone());
        let target: &mut Vec<u8> = match i % 3 {
            0 => &mut b,
            1 => &mut c,
            _ => &mut a,
        };
        match rng.below(3) {
            0 => {
                let n = target.len() as u64;
                target.truncate(rng.below(n.max(1)) as usize);
            }
            _ => {
                for _ in 0..1 + rng.below(4) {
                    if target.is_empty() {
                        break;
                    }
                    let at = rng.below(target.len() as u64) as usize;
                    target[at] ^= 1 << rng.below(8);
                }
            }
        }
        if read_package_from_parts(&a, &b, Some(Buffer::from_vec(c))).is_err() {
            failures += 1;
        }
    }
    // most corruptions are detected (flips inside float payloads are legitimately undetectable)
    assert!(
        failures > 200,
        "only {failures} of 600 corruptions were detected"
    );
}
