//! Unit tests of the IR ⇄ proto conversion: immediate encodings, blob policy, value kinds.

use super::lift::{Lifter, immediate_tensor as lift_tensor};
use super::lower::{Lowerer, immediate_tensor as lower_tensor};
use super::{blob_eligible, build_info};
use crate::error::{ProgramError, WeightsError};
use coreml_proto::mil_spec as pb;
use half::f16;
use mil::value::pack_bits;
use mil::{DType, Dim, TensorType, TensorValue, Value, ValueType};
use pb::tensor_value::Value as Tv;

fn field(t: &TensorValue) -> Tv {
    lower_tensor(t).unwrap().value.unwrap()
}

fn round_trip(t: &TensorValue) {
    let pbv = lower_tensor(t).unwrap();
    assert_eq!(&lift_tensor(t.ty().clone(), &pbv).unwrap(), t, "{}", t.ty());
}

#[test]
fn immediate_fields_follow_coremltools() {
    let f32s = TensorValue::from_f32(&[2], &[1.5, -2.0]).unwrap();
    assert_eq!(
        field(&f32s),
        Tv::Floats(pb::tensor_value::RepeatedFloats {
            values: vec![1.5, -2.0]
        })
    );
    let i32s = TensorValue::from_i32(&[2], &[-1, 7]).unwrap();
    assert!(matches!(field(&i32s), Tv::Ints(r) if r.values == [-1, 7]));
    let i16s =
        TensorValue::from_bytes(TensorType::new(DType::I16, &[2]), vec![0xff, 0xff, 2, 0]).unwrap();
    assert!(matches!(field(&i16s), Tv::Ints(r) if r.values == [-1, 2]));
    let u16s =
        TensorValue::from_bytes(TensorType::new(DType::U16, &[1]), vec![0xff, 0xff]).unwrap();
    assert!(matches!(field(&u16s), Tv::Ints(r) if r.values == [65535]));
    let i64s = TensorValue::from_bytes(
        TensorType::new(DType::I64, &[1]),
        (-3i64).to_le_bytes().to_vec(),
    )
    .unwrap();
    assert!(matches!(field(&i64s), Tv::LongInts(r) if r.values == [-3]));
    let bools = TensorValue::from_bool(&[3], &[true, false, true]).unwrap();
    assert!(matches!(field(&bools), Tv::Bools(r) if r.values == [true, false, true]));
    let s = TensorValue::scalar_str("TANH_APPROXIMATION");
    assert!(matches!(field(&s), Tv::Strings(r) if r.values == ["TANH_APPROXIMATION"]));
    // fp16 scalar 0.125 → bytes 00 30 (spec example)
    let h = TensorValue::scalar_f16(f16::from_f32(0.125));
    assert!(matches!(field(&h), Tv::Bytes(r) if r.values == [0x00, 0x30]));
    let u32s = TensorValue::from_bytes(
        TensorType::new(DType::U32, &[1]),
        5u32.to_le_bytes().to_vec(),
    )
    .unwrap();
    assert!(matches!(field(&u32s), Tv::Bytes(r) if r.values == [5, 0, 0, 0]));
    let u4 = TensorValue::from_bytes(
        TensorType::new(DType::U4, &[5]),
        pack_bits(&[1, 2, 3, 4, 5], 4),
    )
    .unwrap();
    assert!(matches!(field(&u4), Tv::Bytes(r) if r.values == [0x21, 0x43, 0x05]));
    let i8s = TensorValue::from_i8(&[2], &[-1, 3]).unwrap();
    assert!(matches!(field(&i8s), Tv::Bytes(r) if r.values == [0xff, 3]));
    for t in [f32s, i32s, i16s, u16s, i64s, bools, s, h, u32s, u4, i8s] {
        round_trip(&t);
    }
    let f64s = TensorValue::from_bytes(
        TensorType::new(DType::F64, &[1]),
        0.5f64.to_le_bytes().to_vec(),
    )
    .unwrap();
    assert!(matches!(field(&f64s), Tv::Doubles(r) if r.values == [0.5]));
    round_trip(&f64s);
    let empty = TensorValue::from_f32(&[0, 3], &[]).unwrap();
    round_trip(&empty);
    assert_eq!(
        lift_tensor(empty.ty().clone(), &pb::TensorValue { value: None }).unwrap(),
        empty
    );
}

#[test]
fn immediate_decoding_is_strict() {
    let ty = TensorType::new(DType::F32, &[2]);
    let floats = |v: Vec<f32>| pb::TensorValue {
        value: Some(Tv::Floats(pb::tensor_value::RepeatedFloats { values: v })),
    };
    assert!(matches!(
        lift_tensor(ty.clone(), &floats(vec![1.0])),
        Err(ProgramError::Count {
            expected: 2,
            found: 1,
            ..
        })
    ));
    assert!(matches!(
        lift_tensor(TensorType::new(DType::F16, &[1]), &floats(vec![1.0])),
        Err(ProgramError::WrongField {
            found: "floats",
            expected: "bytes",
            ..
        })
    ));
    let ints = pb::TensorValue {
        value: Some(Tv::Ints(pb::tensor_value::RepeatedInts {
            values: vec![70000],
        })),
    };
    assert!(matches!(
        lift_tensor(TensorType::new(DType::I16, &[1]), &ints),
        Err(ProgramError::OutOfRange { value: 70000, .. })
    ));
    assert!(matches!(
        lift_tensor(
            TensorType {
                dtype: DType::F32,
                shape: vec![Dim::Unknown { variadic: false }]
            },
            &floats(vec![])
        ),
        Err(ProgramError::DynamicLiteral { .. })
    ));
    assert!(matches!(
        lift_tensor(ty, &pb::TensorValue { value: None }),
        Err(ProgramError::Missing { .. })
    ));
}

#[test]
fn blob_policy() {
    let f16s = |n: usize| TensorValue::from_f16(&[n], &vec![f16::ONE; n]).unwrap();
    assert!(!blob_eligible(&f16s(9), 9));
    assert!(blob_eligible(&f16s(10), 9));
    assert!(blob_eligible(&f16s(10), 6));
    let i32s = TensorValue::from_i32(&[10], &[1; 10]).unwrap();
    assert!(
        blob_eligible(&i32s, 9),
        "int32 goes to weight.bin from iOS 18 on"
    );
    assert!(!blob_eligible(&i32s, 8));
    let u4 = TensorValue::from_bytes(TensorType::new(DType::U4, &[10]), vec![0; 5]).unwrap();
    assert!(blob_eligible(&u4, 9));
    let bools = TensorValue::from_bool(&[16], &[true; 16]).unwrap();
    assert!(!blob_eligible(&bools, 9));
    let i64s = TensorValue::from_bytes(TensorType::new(DType::I64, &[10]), vec![0; 80]).unwrap();
    assert!(!blob_eligible(&i64s, 9));
}

/// Lower and lift one op holding `v` as const `val` and as an inline constexpr input.
#[test]
fn blob_placement_depends_on_position() {
    let big = TensorValue::from_f32(&[12], &[0.25; 12]).unwrap();
    let mut p = mil::Program::default();
    let mut f = mil::Function::new("CoreML8");
    let mut c = mil::Operation::new("const", "c");
    c.outputs
        .push(mil::NamedValueType::tensor("c", big.ty().clone()));
    c.attributes.insert("val".into(), big.clone().into());
    let mut other = mil::Operation::new("custom", "o");
    other
        .inputs
        .insert("x".into(), vec![mil::Binding::Value(big.clone().into())]);
    other.attributes.insert("extra".into(), big.clone().into());
    let mut cx = mil::Operation::new("constexpr_x", "k");
    cx.inputs
        .insert("data".into(), vec![mil::Binding::Value(big.clone().into())]);
    f.block.operations = vec![c, other, cx];
    p.functions.insert("main".into(), f);
    p.attributes
        .insert("buildInfo".into(), build_info(&[("a", "b")]));

    let mut stored = Vec::new();
    let mut sink = |t: &TensorValue| -> Result<u64, WeightsError> {
        stored.push(t.clone());
        Ok(64 * stored.len() as u64)
    };
    let proto = Lowerer {
        spec_version: 9,
        sink: &mut sink,
    }
    .program(&p)
    .unwrap();
    // const val and constexpr input go to the sink; a plain op's inline input / attribute does not
    assert_eq!(stored.len(), 2);
    let ops = &proto.functions["main"].block_specializations["CoreML8"].operations;
    let is_blob = |v: &pb::Value| matches!(v.value, Some(pb::value::Value::BlobFileValue(_)));
    assert!(is_blob(&ops[0].attributes["val"]));
    assert!(!is_blob(&ops[1].attributes["extra"]));
    let inline = |op: &pb::Operation, k: &str| match &op.inputs[k].arguments[0].binding {
        Some(pb::argument::binding::Binding::Value(v)) => v.clone(),
        _ => panic!("not inline"),
    };
    assert!(!is_blob(&inline(&ops[1], "x")));
    assert!(is_blob(&inline(&ops[2], "data")));
    for op in ops {
        assert!(
            op.attributes.contains_key("name"),
            "every op carries its name"
        );
    }
    // no weight reader: the blob references cannot be resolved, with a typed error
    let e = Lifter { blobs: None }.program(&proto).unwrap_err();
    assert!(matches!(
        e.error,
        ProgramError::Blob(WeightsError::NoWeightFile { offset: 64 })
    ));
    assert!(e.location.contains("op #0 `c` (const)"), "{}", e.location);
}

#[test]
fn composite_values_round_trip() {
    let s = ValueType::Tensor(TensorType::scalar(DType::Str));
    let i = ValueType::Tensor(TensorType::scalar(DType::I32));
    let values = [
        build_info(&[("coremltools-version", "9.0"), ("x", "y")]),
        Value::Tuple(vec![
            TensorValue::scalar_i32(3).into(),
            TensorValue::scalar_str("a").into(),
        ]),
        Value::List {
            elem: i.clone(),
            values: vec![
                TensorValue::scalar_i32(1).into(),
                TensorValue::scalar_i32(2).into(),
            ],
        },
        Value::Dict {
            key: s,
            value: i,
            entries: vec![],
        },
    ];
    let mut p = mil::Program::default();
    for (k, v) in values.iter().enumerate() {
        p.attributes.insert(format!("a{k}"), v.clone());
    }
    let mut sink = |_: &TensorValue| -> Result<u64, WeightsError> { unreachable!() };
    let proto = Lowerer {
        spec_version: 9,
        sink: &mut sink,
    }
    .program(&p)
    .unwrap();
    let back = Lifter { blobs: None }.program(&proto).unwrap();
    assert_eq!(back, p);
    // a list value whose element disagrees with the declared element type is rejected
    let mut bad = proto.clone();
    let v = bad.attributes.get_mut("a2").unwrap();
    if let Some(pb::value_type::Type::ListType(l)) = &mut v.r#type.as_mut().unwrap().r#type {
        l.r#type = Some(Box::new(super::lower::value_type(&ValueType::Tensor(
            TensorType::scalar(DType::F32),
        ))));
    }
    let e = Lifter { blobs: None }.program(&bad).unwrap_err();
    assert!(
        matches!(e.error, ProgramError::TypeMismatch { .. }),
        "{:?}",
        e.error
    );
}

#[test]
fn value_types_round_trip() {
    let t = TensorType {
        dtype: DType::F16,
        shape: vec![Dim::Fixed(2), Dim::Unknown { variadic: false }],
    };
    for vt in [
        ValueType::Tensor(t.clone()),
        ValueType::State(TensorType::new(DType::F16, &[1, 4])),
        ValueType::List {
            elem: Box::new(ValueType::Tensor(t.clone())),
            length: None,
        },
        ValueType::List {
            elem: Box::new(ValueType::Tensor(t.clone())),
            length: Some(Dim::Fixed(3)),
        },
        ValueType::Tuple(vec![
            ValueType::Tensor(t.clone()),
            ValueType::Tensor(TensorType::scalar(DType::Bool)),
        ]),
        ValueType::Dict {
            key: Box::new(ValueType::Tensor(TensorType::scalar(DType::Str))),
            value: Box::new(ValueType::Tensor(t)),
        },
    ] {
        let p = super::lower::value_type(&vt);
        assert_eq!(super::lift::value_type(&p).unwrap(), vt);
    }
}
