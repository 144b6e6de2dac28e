//! MIL text printer snapshots (insta): literal formats, multi-output ops, states, inline constexpr
//! values, program attributes and multi-function programs.

use half::f16;
use mil::builder::Split;
use mil::{DType, ProgramBuilder, TensorType, TensorValue, Value, ValueType, print_program};

fn program() -> Result<mil::Program, mil::MilError> {
    let mut pb = ProgramBuilder::new();
    pb.set_attribute(
        "buildInfo",
        Value::Dict {
            key: TensorType::scalar(DType::Str).into(),
            value: TensorType::scalar(DType::Str).into(),
            entries: vec![(
                TensorValue::scalar_str("gemma-convert-version").into(),
                TensorValue::scalar_str("0.1.0").into(),
            )],
        },
    );
    pb.function("main", |b| {
        let x = b.input("x", TensorType::new(DType::F16, &[1, 1, 8]))?;
        let pos = b.input("pos", TensorType::new(DType::I32, &[1]))?;
        let cache = b.state_input("cache", TensorType::new(DType::F16, &[1, 4, 8]))?;
        let idx = TensorValue::from_bytes(
            TensorType::new(DType::U4, &[8, 8]),
            (0u8..32).collect::<Vec<_>>(),
        )
        .map_err(|e| mil::MilError::Value {
            op: "test".into(),
            name: "idx".into(),
            source: e,
        })?;
        let lut: Vec<f16> = (0..16)
            .map(|i| f16::from_f32(i as f32 / 8.0 - 1.0))
            .collect();
        let lut = TensorValue::from_f16(&[1, 1, 16, 1], &lut).unwrap();
        let w = b.lut_to_dense("w_pal", idx, lut)?;
        let y = b.linear("lin", &x, &w, None)?;
        let old = b.read_state("old", &cache)?;
        let shifted = b.slice_axis("shift", &old, 1, 1, None)?;
        let kv = b.concat("kv", [&shifted, &y], 1, false)?;
        b.write_state("store", &cache, &kv)?;
        let parts = b.split("halves", &kv, Split::Num(2), -1)?;
        let m = b.mul("scaled", &parts[0], 0.125)?;
        let g = b.greater("pos_pos", &pos, 0)?;
        let c = b.cast("pos_f", &pos, DType::F16)?;
        let small = b.const_f32("small", &[3], &[0.5, -1.0, 1e-5])?;
        let flags = b.const_bool("flags", &[2], &[true, false])?;
        let name = b.const_str("mode", "TANH_APPROXIMATION")?;
        let _ = (g, c, small, flags, name);
        b.output("out", &m)?;
        b.output("second", &parts[1])
    })?;
    pb.function("aux", |b| {
        let x = b.input("x", TensorType::new(DType::F32, &[2, 2]))?;
        let y = b.matmul("mm", &x, &x, false, true)?;
        b.output("y", &y)
    })?;
    pb.build()
}

#[test]
fn printer_snapshot() {
    let p = program().unwrap();
    let text = print_program(&p);
    insta::assert_snapshot!("printer_program", text);
    // deterministic and stable across clones
    assert_eq!(text, print_program(&p.clone()));
}

#[test]
fn literal_formats() {
    use mil::printer::fmt_value;
    let v = |t: TensorValue| fmt_value(&Value::Tensor(t));
    assert_eq!(v(TensorValue::scalar_i32(-1)), "int32(-1)");
    assert_eq!(
        v(TensorValue::scalar_f16(f16::from_f32(0.125))),
        "fp16(0.125)"
    );
    assert_eq!(v(TensorValue::scalar_bool(false)), "bool(false)");
    assert_eq!(v(TensorValue::scalar_str("a\"b")), "string(\"a\\\"b\")");
    assert_eq!(
        v(TensorValue::from_i32(&[3], &[0, 1, 0]).unwrap()),
        "tensor<int32, [3]>([0, 1, 0])"
    );
    // 10 elements of a blob dtype → placeholder with byte size and content digest
    let big = v(TensorValue::from_f32(&[10], &[1.0; 10]).unwrap());
    assert!(
        big.starts_with("tensor<fp32, [10]>(BLOBFILE(bytes = uint64(40), fnv1a64 = string(\""),
        "{big}"
    );
    let other = v(TensorValue::from_f32(&[10], &[2.0; 10]).unwrap());
    assert_ne!(big, other);
    // bools are never blobs
    let bools = v(TensorValue::from_bool(&[10], &[true; 10]).unwrap());
    assert!(
        bools.starts_with("tensor<bool, [10]>([true, true"),
        "{bools}"
    );
    // sub-byte small tensors print their values
    let u4 = TensorValue::from_bytes(TensorType::new(DType::U4, &[3]), vec![0x21, 0x03]).unwrap();
    assert_eq!(v(u4), "tensor<uint4, [3]>([1, 2, 3])");
    let ty: ValueType = TensorType::new(DType::F16, &[1, 8]).into();
    assert_eq!(ty.to_string(), "tensor<fp16, [1, 8]>");
}
