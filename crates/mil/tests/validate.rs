//! Validator tests: a valid program passes; each kind of corruption is rejected with an error that
//! names the function and the op.

use half::f16;
use mil::validate::{ValidationErrorKind, type_matches, validate_function};
use mil::{
    Binding, DType, Dim, Function, InferError, NamedValueType, Operation, Program, ProgramBuilder,
    TensorType, TensorValue, ValueType, validate,
};

/// A small valid program: x → conv 1×1 → add → softmax.
fn program() -> Program {
    let mut pb = ProgramBuilder::new();
    pb.function("main", |b| {
        let x = b.input("x", TensorType::new(DType::F16, &[1, 8, 1, 4]))?;
        let w = TensorValue::from_f16(&[8, 8, 1, 1], &[f16::ONE; 64]).unwrap();
        let y = b.conv_1x1("proj", &x, w, None)?;
        let z = b.add("res", &y, &x)?;
        let s = b.softmax("sm", &z, 1)?;
        b.output("out", &s)
    })
    .unwrap();
    pb.build().unwrap()
}

fn main_mut(p: &mut Program) -> &mut Function {
    p.functions.get_mut("main").unwrap()
}

fn op_mut<'a>(p: &'a mut Program, name: &str) -> &'a mut Operation {
    main_mut(p)
        .block
        .operations
        .iter_mut()
        .find(|o| o.name == name)
        .unwrap()
}

/// Validate and return (error text, kind); panics if valid.
fn reject(p: &Program) -> (String, ValidationErrorKind) {
    let e = validate(p).expect_err("expected the program to be rejected");
    (e.to_string(), *e.kind)
}

#[test]
fn valid_program_passes() {
    assert_eq!(validate(&program()), Ok(()));
}

#[test]
fn wrong_dtype() {
    let mut p = program();
    main_mut(&mut p).inputs[0].ty = TensorType::new(DType::I32, &[1, 8, 1, 4]).into();
    let (msg, kind) = reject(&p);
    assert_eq!(
        msg,
        "function `main`, op conv \"proj\": parameter `x` has dtype int32, allowed: fp16, fp32"
    );
    assert!(matches!(
        kind,
        ValidationErrorKind::Infer(InferError::DType { .. })
    ));
}

#[test]
fn wrong_rank() {
    let mut p = program();
    main_mut(&mut p).inputs[0].ty = TensorType::new(DType::F16, &[8, 4]).into();
    let (msg, kind) = reject(&p);
    assert_eq!(
        msg,
        "function `main`, op conv \"proj\": parameter `x` has rank 2, expected 3 to 5"
    );
    assert!(matches!(
        kind,
        ValidationErrorKind::Infer(InferError::Rank { .. })
    ));
}

#[test]
fn undefined_name() {
    let mut p = program();
    op_mut(&mut p, "res")
        .inputs
        .insert("y".into(), vec![Binding::Name("ghost".into())]);
    let (msg, _) = reject(&p);
    assert_eq!(
        msg,
        "function `main`, op add \"res\": parameter `y` refers to undefined value `ghost`"
    );
}

#[test]
fn use_before_definition() {
    let mut p = program();
    // move `res` after its consumer `sm`
    let ops = &mut main_mut(&mut p).block.operations;
    let res = ops.iter().position(|o| o.name == "res").unwrap();
    let op = ops.remove(res);
    let sm = ops.iter().position(|o| o.name == "sm").unwrap();
    ops.insert(sm + 1, op);
    let (msg, _) = reject(&p);
    assert!(
        msg.contains("op softmax \"sm\": parameter `x` refers to undefined value `res`"),
        "{msg}"
    );
}

#[test]
fn duplicate_names() {
    let mut p = program();
    op_mut(&mut p, "res").outputs[0].name = "x".into();
    let (msg, kind) = reject(&p);
    assert_eq!(
        msg,
        "function `main`, op add \"res\": value `x` is defined more than once"
    );
    assert_eq!(kind, ValidationErrorKind::DuplicateValue("x".into()));
    let mut p = program();
    op_mut(&mut p, "sm").name = "res".into();
    let (_, kind) = reject(&p);
    assert_eq!(kind, ValidationErrorKind::DuplicateOpName("res".into()));
    let mut p = program();
    let dup = main_mut(&mut p).inputs[0].clone();
    main_mut(&mut p).inputs.push(dup);
    assert_eq!(
        reject(&p).1,
        ValidationErrorKind::DuplicateInput("x".into())
    );
}

#[test]
fn unknown_op() {
    let mut p = program();
    op_mut(&mut p, "res").op_type = "neg".into();
    let (msg, kind) = reject(&p);
    assert_eq!(
        msg,
        "function `main`, op neg \"res\": unknown op type `neg` (not in the MIL op catalog)"
    );
    assert_eq!(
        kind,
        ValidationErrorKind::Infer(InferError::UnknownOp("neg".into()))
    );
}

#[test]
fn missing_and_unknown_params() {
    let mut p = program();
    op_mut(&mut p, "res").inputs.remove("y");
    let (msg, _) = reject(&p);
    assert_eq!(
        msg,
        "function `main`, op add \"res\": missing required parameter `y`"
    );
    let mut p = program();
    let x = op_mut(&mut p, "res").inputs["x"].clone();
    op_mut(&mut p, "res").inputs.insert("alpha".into(), x);
    let (msg, _) = reject(&p);
    assert_eq!(
        msg,
        "function `main`, op add \"res\": unknown parameter `alpha`"
    );
}

#[test]
fn non_const_where_const_needed() {
    let mut p = program();
    // bind softmax.axis to a runtime int32 input
    main_mut(&mut p)
        .inputs
        .push(NamedValueType::tensor("k", TensorType::scalar(DType::I32)));
    op_mut(&mut p, "sm")
        .inputs
        .insert("axis".into(), vec![Binding::Name("k".into())]);
    let (msg, kind) = reject(&p);
    assert!(
        msg.starts_with(
            "function `main`, op softmax \"sm\": parameter `axis` must be a compile-time constant"
        ),
        "{msg}"
    );
    assert!(matches!(
        kind,
        ValidationErrorKind::Infer(InferError::NotConst { .. })
    ));
}

#[test]
fn inline_value_on_ordinary_op() {
    let mut p = program();
    op_mut(&mut p, "sm").inputs.insert(
        "axis".into(),
        vec![Binding::Value(TensorValue::scalar_i32(1).into())],
    );
    let (msg, _) = reject(&p);
    assert!(
        msg.contains("only constexpr ops take inline values"),
        "{msg}"
    );
}

#[test]
fn declared_vs_inferred_mismatch() {
    let mut p = program();
    op_mut(&mut p, "proj").outputs[0].ty = TensorType::new(DType::F16, &[1, 8, 1, 5]).into();
    let (msg, kind) = reject(&p);
    assert_eq!(
        msg,
        "function `main`, op conv \"proj\": output `proj` is declared tensor<fp16, [1, 8, 1, 5]> \
         but inferred tensor<fp16, [1, 8, 1, 4]>"
    );
    assert!(matches!(kind, ValidationErrorKind::OutputType { .. }));
    let mut p = program();
    op_mut(&mut p, "sm").outputs[0].ty = TensorType::new(DType::F32, &[1, 8, 1, 4]).into();
    assert!(matches!(
        reject(&p).1,
        ValidationErrorKind::OutputType { .. }
    ));
    let mut p = program();
    let extra = NamedValueType::tensor("extra", TensorType::new(DType::F16, &[1]));
    op_mut(&mut p, "sm").outputs.push(extra);
    assert_eq!(
        reject(&p).1,
        ValidationErrorKind::OutputCount {
            declared: 2,
            inferred: 1
        }
    );
    // a const whose declared type differs from its literal
    let mut p = program();
    op_mut(&mut p, "sm_axis_0").outputs[0].ty = TensorType::new(DType::I32, &[1]).into();
    let (msg, _) = reject(&p);
    assert!(
        msg.contains("op const \"sm_axis_0\": output `sm_axis_0` is declared"),
        "{msg}"
    );
}

#[test]
fn function_level_checks() {
    let mut p = program();
    main_mut(&mut p).block.outputs = vec!["nothing".into()];
    assert_eq!(
        reject(&p).0,
        "function `main`: function output `nothing` is not defined"
    );
    let mut p = program();
    main_mut(&mut p).block.outputs.push("out".into());
    assert_eq!(
        reject(&p).1,
        ValidationErrorKind::DuplicateOutput("out".into())
    );
    let mut p = program();
    main_mut(&mut p).block.outputs.clear();
    assert_eq!(reject(&p).1, ValidationErrorKind::NoOutputs);
    let mut p = program();
    main_mut(&mut p).opset.clear();
    assert_eq!(reject(&p).1, ValidationErrorKind::NoOpset);
    let mut p = program();
    op_mut(&mut p, "res").name = "bad-name".into();
    assert_eq!(
        reject(&p).1,
        ValidationErrorKind::InvalidName("bad-name".into())
    );
    let mut p = program();
    p.version = 2;
    assert_eq!(reject(&p).0, "program: program version is 2, expected 1");
    assert_eq!(
        reject(&Program::default()).1,
        ValidationErrorKind::NoFunctions
    );
    // a state cannot be a function output
    let mut f = Function::new("CoreML8");
    f.inputs.push(NamedValueType {
        name: "s".into(),
        ty: ValueType::State(TensorType::new(DType::F16, &[2])),
    });
    f.block.outputs.push("s".into());
    let e = validate_function("f", &f).unwrap_err();
    assert!(matches!(
        *e.kind,
        ValidationErrorKind::OutputNotTensor { .. }
    ));
}

#[test]
fn unknown_dims_match_anything() {
    let fixed: ValueType = TensorType::new(DType::F16, &[1, 8]).into();
    let unknown: ValueType = TensorType {
        dtype: DType::F16,
        shape: vec![Dim::Fixed(1), Dim::Unknown { variadic: false }],
    }
    .into();
    assert!(type_matches(&fixed, &unknown));
    assert!(type_matches(&unknown, &fixed));
    assert!(!type_matches(
        &fixed,
        &TensorType::new(DType::F16, &[1, 9]).into()
    ));
    assert!(!type_matches(
        &fixed,
        &TensorType::new(DType::F16, &[1, 8, 1]).into()
    ));
    assert!(!type_matches(
        &fixed,
        &ValueType::State(TensorType::new(DType::F16, &[1, 8]))
    ));
}
