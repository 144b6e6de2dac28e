//! Packages written by coremltools 9.0 (`fixtures/coreml`, made by scripts/make_coreml_fixtures.py):
//! read → write → read gives the same program, description and tensor bytes, and the re-written
//! `model.mlmodel` equals coremltools' proto field for field once blob offsets are replaced by
//! blob contents.

mod common;

use common::*;
use coreml_proto::mil_spec as pb;
use coreml_proto::specification::{Model, model};
use mil::{DType, Value};
use mlpackage::coremltools_check::{CheckOptions, check_package};
use mlpackage::{BlobReader, DefaultValue, FeatureKind, WriteOptions, read_package, write_package};
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;

fn model_proto(pkg: &Path) -> Model {
    let bytes = std::fs::read(pkg.join("Data/com.apple.CoreML/model.mlmodel")).unwrap();
    Model::decode(bytes.as_slice()).unwrap()
}

/// Replace every blob offset by the index of its payload in a content table (first-seen order).
fn normalise_blobs(m: &mut Model, weights: &BlobReader, table: &mut BTreeMap<Vec<u8>, u64>) {
    fn value(v: &mut pb::Value, w: &BlobReader, t: &mut BTreeMap<Vec<u8>, u64>) {
        use pb::value::Value as V;
        use pb::value::immediate_value::Value as Imm;
        match &mut v.value {
            Some(V::BlobFileValue(b)) => {
                let rec = w.record(b.offset).expect("offset is a record");
                let mut key = rec.dtype.mil_name().as_bytes().to_vec();
                key.extend_from_slice(w.payload(b.offset).unwrap().as_bytes());
                let n = t.len() as u64;
                b.offset = *t.entry(key).or_insert(n);
            }
            Some(V::ImmediateValue(i)) => match &mut i.value {
                Some(Imm::Tuple(x)) => x.values.iter_mut().for_each(|v| value(v, w, t)),
                Some(Imm::List(x)) => x.values.iter_mut().for_each(|v| value(v, w, t)),
                _ => {}
            },
            None => {}
        }
    }
    fn block(b: &mut pb::Block, w: &BlobReader, t: &mut BTreeMap<Vec<u8>, u64>) {
        for op in &mut b.operations {
            op.attributes.values_mut().for_each(|v| value(v, w, t));
            for a in op.inputs.values_mut() {
                for bind in &mut a.arguments {
                    if let Some(pb::argument::binding::Binding::Value(v)) = &mut bind.binding {
                        value(v, w, t);
                    }
                }
            }
            op.blocks.iter_mut().for_each(|b| block(b, w, t));
        }
    }
    let Some(model::Type::MlProgram(p)) = &mut m.r#type else {
        panic!("not an ML program")
    };
    for f in p.functions.values_mut() {
        f.block_specializations
            .values_mut()
            .for_each(|b| block(b, weights, table));
    }
}

fn weights(pkg: &Path) -> BlobReader {
    BlobReader::open(&pkg.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap()
}

#[test]
fn fixtures_round_trip_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let src = fixtures().join(format!("{name}.mlpackage"));
        let first = read_package(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
        let dest = tmp.path().join(format!("{name}.mlpackage"));
        let report = write_package(&first, &dest, &WriteOptions::default()).unwrap();
        let second = read_package(&dest).unwrap();
        assert_eq!(second.program, first.program, "{name}: program");
        assert_eq!(second.description, first.description, "{name}: description");
        assert_eq!(second.spec_version, first.spec_version);

        // every blob of coremltools' weight.bin is referenced and reproduced byte for byte
        let (wa, wb) = (weights(&src), weights(&dest));
        assert_eq!(report.blob_count as usize, wb.len());
        assert!(
            wb.len() <= wa.len(),
            "{name}: no more blobs than coremltools wrote"
        );

        // the proto is field-for-field what coremltools wrote (blob offsets aside)
        let (mut pa, mut pb) = (model_proto(&src), model_proto(&dest));
        let mut table = BTreeMap::new();
        normalise_blobs(&mut pa, &wa, &mut table);
        let mut table_b = BTreeMap::new();
        normalise_blobs(&mut pb, &wb, &mut table_b);
        assert_eq!(table, table_b, "{name}: blob contents");
        assert_eq!(
            pa, pb,
            "{name}: re-written model proto differs from coremltools'"
        );
    }
}

#[test]
fn rewritten_fixtures_pass_coremltools() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["tiny_pal4", "tiny_multi"] {
        let src = fixtures().join(format!("{name}.mlpackage"));
        let dest = tmp.path().join(format!("{name}.mlpackage"));
        write_package(
            &read_package(&src).unwrap(),
            &dest,
            &WriteOptions::default(),
        )
        .unwrap();
        check_package(
            &dest,
            &CheckOptions {
                materialize: true,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn fixture_contents_are_what_the_generator_made() {
    let fp16 = read_package(&fixtures().join("tiny_fp16.mlpackage")).unwrap();
    let main = &fp16.program.functions["main"];
    assert_eq!(main.opset, "CoreML8");
    assert_eq!(
        main.inputs
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        ["input_ids", "mask"]
    );
    assert_eq!(main.block.outputs, ["hidden", "logits"]);
    let build_info = &fp16.program.attributes["buildInfo"];
    let Value::Dict { entries, .. } = build_info else {
        panic!("buildInfo is not a dictionary")
    };
    let torch = entries[1].1.as_tensor().and_then(|t| t.strings()).unwrap()[0].clone();
    assert_eq!(
        *build_info,
        mlpackage::convert::build_info(&[
            ("coremltools-version", "9.0"),
            ("coremltools-component-torch", &torch),
            ("coremltools-source-dialect", "TorchScript"),
        ])
    );
    let md = &fp16.description.metadata;
    assert_eq!(
        md.user_defined["com.github.apple.coremltools.version"],
        "9.0"
    );
    assert_eq!(md.author, "gemma-convert scripts/make_coreml_fixtures.py");

    let count = |p: &mlpackage::Package, ty: &str| {
        p.program.functions["main"]
            .block
            .operations
            .iter()
            .filter(|o| o.op_type == ty)
            .count()
    };
    let pal = read_package(&fixtures().join("tiny_pal4.mlpackage")).unwrap();
    assert_eq!(count(&pal, "constexpr_lut_to_dense"), 7);
    let lut_op = pal.program.functions["main"]
        .block
        .operations
        .iter()
        .find(|o| o.op_type == "constexpr_lut_to_dense")
        .unwrap();
    let Some(mil::Binding::Value(Value::Tensor(idx))) = lut_op.input("indices") else {
        panic!("indices inline")
    };
    assert_eq!(idx.dtype(), DType::U4);
    let blk = read_package(&fixtures().join("tiny_int4blk.mlpackage")).unwrap();
    assert_eq!(count(&blk, "constexpr_blockwise_shift_scale"), 7);

    let multi = read_package(&fixtures().join("tiny_multi.mlpackage")).unwrap();
    assert_eq!(multi.description.default_function, "main");
    let names: Vec<&str> = multi
        .description
        .functions
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["main", "decode"]);
    let iface = multi.description.interface("decode").unwrap();
    assert_eq!(iface.inputs[1].array_type().unwrap().shape, [1, 1, 1, 1]);

    let state = read_package(&fixtures().join("tiny_state.mlpackage")).unwrap();
    let d = &state.description;
    assert_eq!(d.states.len(), 1);
    assert!(matches!(&d.states[0].kind, FeatureKind::State(a) if a.dtype == DType::F16));
    let pos = &d.inputs[1];
    assert!(pos.optional);
    let a = pos.array_type().unwrap();
    assert_eq!(
        (a.dtype, a.default),
        (DType::I32, Some(DefaultValue::Float(0.0)))
    );
    assert!(matches!(
        state.program.functions["main"].inputs[2].ty,
        mil::ValueType::State(_)
    ));
}
