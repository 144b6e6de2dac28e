//! Per-op inference tests: output types, error cases and messages, and the generic parameter
//! checks (unknown / missing / non-const / inline / undefined). Complements the coremltools
//! replay in `coremltools_infer.rs`.

mod common;

use common::*;
use mil::ops::{self, DefaultValue};
use mil::{DType, Dim, InferError, TensorType, TensorValue, ValueType};

const U: Dim = Dim::Unknown { variadic: false };

fn err_text(r: Result<Vec<ValueType>, InferError>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn catalog_is_closed_and_complete() {
    let names: Vec<&str> = ops::catalog().iter().map(|d| d.name).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        names.len(),
        "duplicate op names in the catalog"
    );
    for op in [
        "const",
        "conv",
        "linear",
        "matmul",
        "add",
        "sub",
        "mul",
        "real_div",
        "pow",
        "maximum",
        "minimum",
        "greater",
        "greater_equal",
        "less",
        "less_equal",
        "equal",
        "not_equal",
        "logical_and",
        "logical_or",
        "sqrt",
        "rsqrt",
        "exp",
        "log",
        "tanh",
        "abs",
        "sigmoid",
        "silu",
        "relu",
        "square",
        "inverse",
        "sin",
        "cos",
        "floor",
        "ceil",
        "round",
        "sign",
        "erf",
        "gelu",
        "softmax",
        "reduce_mean",
        "reduce_sum",
        "reduce_max",
        "reduce_min",
        "reduce_argmax",
        "layer_norm",
        "concat",
        "split",
        "slice_by_index",
        "slice_by_size",
        "reshape",
        "transpose",
        "expand_dims",
        "squeeze",
        "tile",
        "gather",
        "gather_along_axis",
        "cast",
        "select",
        "clip",
        "fill",
        "pad",
        "identity",
        "read_state",
        "write_state",
        "slice_update",
        "constexpr_lut_to_dense",
        "constexpr_blockwise_shift_scale",
    ] {
        assert!(ops::lookup(op).is_some(), "{op} missing from the catalog");
    }
    assert!(ops::lookup("neg").is_none());
    assert!(ops::lookup("CONV").is_none());
    let constexpr: Vec<&str> = ops::catalog()
        .iter()
        .filter(|d| d.constexpr)
        .map(|d| d.name)
        .collect();
    assert_eq!(
        constexpr,
        ["constexpr_blockwise_shift_scale", "constexpr_lut_to_dense"]
    );
    assert_eq!(ops::lookup("conv").unwrap().opset, ops::Opset::Ios17);
    assert_eq!(ops::lookup("add").unwrap().opset, ops::Opset::Ios15);
    assert_eq!(
        ops::lookup("slice_update").unwrap().opset,
        ops::Opset::Ios18
    );
}

#[test]
fn param_specs_and_defaults() {
    let conv = ops::lookup("conv").unwrap();
    let strides = conv.param("strides").unwrap();
    assert!(!strides.is_required());
    assert_eq!(strides.constness, ops::Constness::Const);
    assert!(conv.param("x").unwrap().is_required());
    let x = TensorType::new(DType::F16, &[1, 8, 1, 16]);
    assert_eq!(
        strides.default.materialize(Some(&x)),
        Some(TensorValue::from_i32(&[2], &[1, 1]).unwrap())
    );
    assert_eq!(
        conv.param("pad").unwrap().default.materialize(Some(&x)),
        Some(TensorValue::from_i32(&[4], &[0, 0, 0, 0]).unwrap())
    );
    assert_eq!(
        conv.param("pad_type").unwrap().default.materialize(None),
        Some(TensorValue::scalar_str("valid"))
    );
    let rsqrt_eps = ops::lookup("rsqrt")
        .unwrap()
        .param("epsilon")
        .unwrap()
        .default;
    assert_eq!(rsqrt_eps, DefaultValue::FloatLikeX(1e-12));
    assert_eq!(rsqrt_eps.materialize(Some(&x)).unwrap().dtype(), DType::F16);
    let sbi = ops::lookup("slice_by_index").unwrap();
    assert_eq!(
        sbi.param("end_mask").unwrap().default.materialize(Some(&x)),
        Some(TensorValue::from_bool(&[4], &[false; 4]).unwrap())
    );
    assert_eq!(
        ops::lookup("reduce_sum")
            .unwrap()
            .param("axes")
            .unwrap()
            .default
            .materialize(Some(&x)),
        None
    );
}

#[test]
fn conv_1x1_and_messages() {
    let w = P::Const(filled(DType::F16, &[32, 64, 1, 1], 0.0));
    let r = infer(
        "conv",
        &[
            ("x", vec![inp(DType::F16, &[1, 64, 1, 8])]),
            ("weight", vec![w.clone()]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::F16, &[1, 32, 1, 8]));
    let e = err_text(infer(
        "conv",
        &[
            ("x", vec![inp(DType::F16, &[1, 128, 1, 8])]),
            ("weight", vec![w.clone()]),
        ],
    ));
    assert_eq!(e, "weight in-channels 64 != input channels 128");
    let e = err_text(infer(
        "conv",
        &[
            ("x", vec![inp(DType::F16, &[1, 64, 1, 8])]),
            ("weight", vec![w.clone()]),
            ("pad_type", vec![string("reflect")]),
        ],
    ));
    assert!(e.contains("pad_type") && e.contains("reflect"), "{e}");
    let e = err_text(infer(
        "conv",
        &[
            ("x", vec![inp(DType::I32, &[1, 64, 1, 8])]),
            ("weight", vec![w.clone()]),
        ],
    ));
    assert_eq!(e, "parameter `x` has dtype int32, allowed: fp16, fp32");
    // kernel larger than the input
    let big = P::Const(filled(DType::F32, &[4, 4, 5, 5], 0.0));
    let e = err_text(infer(
        "conv",
        &[
            ("x", vec![inp(DType::F32, &[1, 4, 3, 3])]),
            ("weight", vec![big]),
        ],
    ));
    assert!(e.contains("larger than padded"), "{e}");
    // unknown spatial dim stays unknown
    let x = P::In(TensorType {
        dtype: DType::F16,
        shape: vec![Dim::Fixed(1), Dim::Fixed(64), Dim::Fixed(1), U],
    });
    let r = infer("conv", &[("x", vec![x]), ("weight", vec![w])]).unwrap();
    assert_eq!(r[0].as_tensor().unwrap().shape[3], U);
}

#[test]
fn generic_checks() {
    let x = || vec![inp(DType::F16, &[2, 3])];
    // unknown op
    assert_eq!(
        infer("neg", &[("x", x())]),
        Err(InferError::UnknownOp("neg".into()))
    );
    // unknown param
    assert_eq!(
        infer("relu", &[("x", x()), ("alpha", vec![f16s(0.1)])]),
        Err(InferError::UnknownParam("alpha".into()))
    );
    // missing required param
    assert_eq!(
        infer("add", &[("x", x())]),
        Err(InferError::MissingParam("y".into()))
    );
    // arity
    assert!(matches!(
        infer(
            "add",
            &[
                ("x", vec![inp(DType::F16, &[2]), inp(DType::F16, &[2])]),
                ("y", x())
            ]
        ),
        Err(InferError::Arity { count: 2, .. })
    ));
    // const required but runtime
    let e = infer(
        "softmax",
        &[("x", x()), ("axis", vec![inp(DType::I32, &[])])],
    );
    assert!(
        matches!(e, Err(InferError::NotConst { ref param, .. }) if param == "axis"),
        "{e:?}"
    );
    // const-required param bound to a constexpr output is fine (weights), but its value is unknown
    let w = P::Constexpr(TensorType::new(DType::F16, &[8, 4]));
    assert_eq!(
        infer(
            "linear",
            &[("x", vec![inp(DType::F16, &[1, 4])]), ("weight", vec![w])]
        )
        .unwrap(),
        t(DType::F16, &[1, 8])
    );
    let e = infer(
        "transpose",
        &[
            ("x", x()),
            (
                "perm",
                vec![P::Constexpr(TensorType::new(DType::I32, &[2]))],
            ),
        ],
    );
    assert_eq!(e, Err(InferError::ValueUnknown("perm".into())));
    // kind
    let st = P::State(TensorType::new(DType::F16, &[2, 3]));
    assert!(matches!(
        infer("relu", &[("x", vec![st.clone()])]),
        Err(InferError::Kind { .. })
    ));
    assert!(matches!(
        infer("read_state", &[("input", x())]),
        Err(InferError::Kind {
            expected: "state",
            ..
        })
    ));
    assert_eq!(
        infer("read_state", &[("input", vec![st])]).unwrap(),
        t(DType::F16, &[2, 3])
    );
    // scalar where a vector is needed
    let e = err_text(infer("transpose", &[("x", x()), ("perm", vec![int(1)])]));
    assert!(
        e.contains("`perm` has rank 0, expected a 1-D tensor"),
        "{e}"
    );
}

#[test]
fn inline_values_only_on_constexpr() {
    use mil::{Binding, Operation, Value, ValueEnv};
    let mut op = Operation::new("add", "a");
    op.inputs.insert(
        "x".into(),
        vec![Binding::Value(Value::Tensor(TensorValue::scalar_f32(1.0)))],
    );
    op.inputs.insert(
        "y".into(),
        vec![Binding::Value(Value::Tensor(TensorValue::scalar_f32(1.0)))],
    );
    assert_eq!(
        mil::infer_op(&op, &ValueEnv::new()),
        Err(InferError::InlineValue("x".into()))
    );
    let mut op = Operation::new("add", "a");
    op.inputs
        .insert("x".into(), vec![Binding::Name("nope".into())]);
    op.inputs
        .insert("y".into(), vec![Binding::Name("nope".into())]);
    assert!(matches!(
        mil::infer_op(&op, &ValueEnv::new()),
        Err(InferError::Undefined { .. })
    ));
}

#[test]
fn binary_broadcast_and_dtypes() {
    let r = infer(
        "mul",
        &[
            ("x", vec![inp(DType::F16, &[1, 8, 1])]),
            ("y", vec![f16s(0.5)]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::F16, &[1, 8, 1]));
    let e = err_text(infer(
        "add",
        &[("x", vec![inp(DType::F16, &[2])]), ("y", vec![f32s(1.0)])],
    ));
    assert_eq!(
        e,
        "parameters `x` (fp16) and `y` (fp32) must have the same dtype"
    );
    let e = err_text(infer(
        "add",
        &[
            ("x", vec![inp(DType::F16, &[2, 3])]),
            ("y", vec![inp(DType::F16, &[4, 3])]),
        ],
    ));
    assert!(e.contains("do not broadcast"), "{e}");
    let r = infer(
        "equal",
        &[
            ("x", vec![inp(DType::I32, &[3, 1])]),
            ("y", vec![inp(DType::I32, &[4])]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::Bool, &[3, 4]));
    // unknown dims broadcast against fixed ones
    let x = P::In(TensorType {
        dtype: DType::F32,
        shape: vec![U, Dim::Fixed(1)],
    });
    let r = infer(
        "add",
        &[("x", vec![x]), ("y", vec![inp(DType::F32, &[5, 7])])],
    )
    .unwrap();
    assert_eq!(r, t(DType::F32, &[5, 7]));
}

#[test]
fn unary_epsilon_and_cast() {
    let r = infer(
        "rsqrt",
        &[
            ("x", vec![inp(DType::F16, &[4])]),
            ("epsilon", vec![f32s(1e-12)]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::F16, &[4]));
    let e = err_text(infer(
        "rsqrt",
        &[
            ("x", vec![inp(DType::F16, &[4])]),
            ("epsilon", vec![ints(&[1])]),
        ],
    ));
    assert!(e.contains("epsilon") && e.contains("int32"), "{e}");
    let e = err_text(infer(
        "cast",
        &[
            ("x", vec![inp(DType::F16, &[4])]),
            ("dtype", vec![string("int64")]),
        ],
    ));
    assert!(e.contains("`int64` is not one of"), "{e}");
    assert_eq!(
        infer(
            "cast",
            &[
                ("x", vec![inp(DType::F16, &[4])]),
                ("dtype", vec![string("int8")])
            ]
        )
        .unwrap(),
        t(DType::I8, &[4])
    );
    assert!(infer("sqrt", &[("x", vec![inp(DType::I32, &[4])])]).is_err());
    assert!(infer("logical_not", &[("x", vec![inp(DType::F16, &[4])])]).is_err());
    let e = err_text(infer(
        "clip",
        &[
            ("x", vec![inp(DType::F16, &[4])]),
            ("alpha", vec![f16s(1.0)]),
            ("beta", vec![f16s(-1.0)]),
        ],
    ));
    assert!(e.contains("must be < beta"), "{e}");
}

#[test]
fn reductions() {
    let x = || vec![inp(DType::F16, &[2, 3, 4])];
    let r = infer(
        "reduce_mean",
        &[
            ("x", x()),
            ("axes", vec![ints(&[-1])]),
            ("keep_dims", vec![boolean(true)]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::F16, &[2, 3, 1]));
    let r = infer(
        "reduce_sum",
        &[
            ("x", x()),
            ("axes", vec![ints(&[0, 1, 2])]),
            ("keep_dims", vec![boolean(false)]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::F16, &[]));
    let e = err_text(infer(
        "reduce_max",
        &[("x", x()), ("axes", vec![ints(&[1, -2])])],
    ));
    assert!(e.contains("listed twice"), "{e}");
    let r = infer(
        "reduce_argmax",
        &[
            ("x", x()),
            ("axis", vec![int(1)]),
            ("output_dtype", vec![string("uint16")]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::U16, &[2, 4]));
    let e = err_text(infer(
        "reduce_argmax",
        &[("x", x()), ("output_dtype", vec![string("int8")])],
    ));
    assert!(e.contains("int8"), "{e}");
}

#[test]
fn concat_split_tile_fill_select() {
    let e = err_text(infer(
        "concat",
        &[
            (
                "values",
                vec![inp(DType::F16, &[1, 2]), inp(DType::F16, &[1, 2, 3])],
            ),
            ("axis", vec![int(0)]),
        ],
    ));
    assert!(e.contains("rank"), "{e}");
    // interleave needs identical shapes
    let e = err_text(infer(
        "concat",
        &[
            (
                "values",
                vec![inp(DType::F16, &[2, 3]), inp(DType::F16, &[2, 4])],
            ),
            ("axis", vec![int(1)]),
            ("interleave", vec![boolean(true)]),
        ],
    ));
    assert!(e.contains("interleave"), "{e}");
    let e = err_text(infer("concat", &[("values", vec![inp(DType::F16, &[2])])]));
    assert_eq!(e, "missing required parameter `axis`");
    let r = infer(
        "split",
        &[
            ("x", vec![inp(DType::F16, &[4, 6])]),
            ("num_splits", vec![int(3)]),
            ("axis", vec![int(1)]),
        ],
    )
    .unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[2], t(DType::F16, &[4, 2])[0]);
    let e = err_text(infer(
        "split",
        &[
            ("x", vec![inp(DType::F16, &[4, 6])]),
            ("axis", vec![int(1)]),
        ],
    ));
    assert!(e.contains("num_splits or split_sizes"), "{e}");
    // runtime reps → unknown dims
    let r = infer(
        "tile",
        &[
            ("x", vec![inp(DType::F16, &[2, 3])]),
            ("reps", vec![inp(DType::I32, &[2])]),
        ],
    )
    .unwrap();
    assert_eq!(r[0].as_tensor().unwrap().shape, vec![U, U]);
    let e = err_text(infer(
        "tile",
        &[
            ("x", vec![inp(DType::F16, &[2, 3])]),
            ("reps", vec![ints(&[2])]),
        ],
    ));
    assert!(e.contains("reps shape [1] != [rank(x)] = [2]"), "{e}");
    let r = infer(
        "fill",
        &[
            ("shape", vec![inp(DType::I32, &[3])]),
            ("value", vec![f16s(0.0)]),
        ],
    )
    .unwrap();
    assert_eq!(r[0].as_tensor().unwrap().shape, vec![U, U, U]);
    assert_eq!(
        infer("fill", &[("shape", vec![ints(&[2])])]).unwrap(),
        t(DType::F32, &[2])
    );
    let r = infer(
        "select",
        &[
            ("cond", vec![inp(DType::Bool, &[4, 1])]),
            ("a", vec![inp(DType::I32, &[3])]),
            ("b", vec![int(0)]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::I32, &[4, 3]));
    assert!(
        infer(
            "select",
            &[
                ("cond", vec![inp(DType::F16, &[3])]),
                ("a", vec![inp(DType::I32, &[3])]),
                ("b", vec![int(0)])
            ]
        )
        .is_err()
    );
}

#[test]
fn shape_ops() {
    // reshape: 0 copies the dim of x counted from the right (iOS17), -1 inferred:
    // [0, 0, 2, -1] on [1, 8, 64]: the first 0 has no partner (→ 1), the second pairs with x[0]
    let x = || vec![inp(DType::F16, &[1, 8, 64])];
    assert_eq!(
        infer(
            "reshape",
            &[("x", x()), ("shape", vec![ints(&[0, 0, 2, -1])])]
        )
        .unwrap(),
        t(DType::F16, &[1, 1, 2, 256])
    );
    assert_eq!(
        infer("reshape", &[("x", x()), ("shape", vec![ints(&[1, 0, 0])])]).unwrap(),
        t(DType::F16, &[1, 8, 64])
    );
    assert_eq!(
        infer("reshape", &[("x", x()), ("shape", vec![ints(&[-1])])]).unwrap(),
        t(DType::F16, &[512])
    );
    let e = err_text(infer(
        "reshape",
        &[("x", x()), ("shape", vec![ints(&[-1, -1])])],
    ));
    assert!(e.contains("more than one -1"), "{e}");
    let e = err_text(infer(
        "reshape",
        &[("x", x()), ("shape", vec![ints(&[3, -1])])],
    ));
    assert!(e.contains("does not divide"), "{e}");
    // unknown input dim with -1 → unknown
    let xu = P::In(TensorType {
        dtype: DType::F16,
        shape: vec![U, Dim::Fixed(4)],
    });
    let r = infer(
        "reshape",
        &[("x", vec![xu]), ("shape", vec![ints(&[2, -1])])],
    )
    .unwrap();
    assert_eq!(r[0].as_tensor().unwrap().shape, vec![Dim::Fixed(2), U]);
    let e = err_text(infer(
        "transpose",
        &[("x", x()), ("perm", vec![ints(&[0, 1, 1])])],
    ));
    assert!(e.contains("listed twice"), "{e}");
    assert_eq!(
        infer("expand_dims", &[("x", x()), ("axes", vec![ints(&[-1, 0])])]).unwrap(),
        t(DType::F16, &[1, 1, 8, 64, 1])
    );
    let e = err_text(infer(
        "expand_dims",
        &[("x", x()), ("axes", vec![ints(&[])])],
    ));
    assert!(e.contains("empty"), "{e}");
    assert_eq!(
        infer("squeeze", &[("x", x()), ("axes", vec![ints(&[0])])]).unwrap(),
        t(DType::F16, &[8, 64])
    );
    let e = err_text(infer("squeeze", &[("x", x()), ("axes", vec![ints(&[1])])]));
    assert_eq!(e, "cannot squeeze axis 1 of x [1, 8, 64]: size 8 != 1");
}

#[test]
fn slicing() {
    let x = || vec![inp(DType::F16, &[1, 4, 8])];
    // KV shift: drop the first slot along axis 1
    let r = infer(
        "slice_by_index",
        &[
            ("x", x()),
            ("begin", vec![ints(&[0, 1, 0])]),
            ("end", vec![ints(&[0, 0, 0])]),
            ("begin_mask", vec![bools(&[true, false, true])]),
            ("end_mask", vec![bools(&[true, true, true])]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::F16, &[1, 3, 8]));
    // runtime begin/end: only masked axes stay known
    let r = infer(
        "slice_by_index",
        &[
            ("x", x()),
            ("begin", vec![inp(DType::I32, &[3])]),
            ("end", vec![inp(DType::I32, &[3])]),
            ("begin_mask", vec![bools(&[false, false, true])]),
            ("end_mask", vec![bools(&[false, false, true])]),
        ],
    )
    .unwrap();
    assert_eq!(
        r[0].as_tensor().unwrap().shape,
        vec![Dim::Fixed(1), U, Dim::Fixed(8)]
    );
    let e = err_text(infer(
        "slice_by_index",
        &[
            ("x", x()),
            ("begin", vec![ints(&[0, 0, 0])]),
            ("end", vec![ints(&[1, 4, 8])]),
            ("stride", vec![ints(&[1, 0, 1])]),
        ],
    ));
    assert!(e.contains("stride of axis 1 is 0"), "{e}");
    let e = err_text(infer(
        "slice_by_index",
        &[
            ("x", x()),
            ("begin", vec![ints(&[0, 0])]),
            ("end", vec![ints(&[1, 4, 8])]),
        ],
    ));
    assert!(e.contains("begin shape [2] != [rank(x)] = [3]"), "{e}");
    assert!(
        infer(
            "slice_by_index",
            &[
                ("x", x()),
                ("begin", vec![P::Const(filled(DType::F32, &[3], 0.0))]),
                ("end", vec![ints(&[1, 4, 8])])
            ]
        )
        .is_err()
    );
    // slice_by_size with a runtime begin and a static size keeps the size
    let r = infer(
        "slice_by_size",
        &[
            ("x", x()),
            ("begin", vec![inp(DType::I32, &[3])]),
            ("size", vec![ints(&[1, 2, 8])]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::F16, &[1, 2, 8]));
    let e = err_text(infer(
        "slice_by_size",
        &[
            ("x", x()),
            ("begin", vec![ints(&[0, 3, 0])]),
            ("size", vec![ints(&[1, 2, 8])]),
        ],
    ));
    assert!(e.contains("exceeds dim 4"), "{e}");
    // slice_update: update must match the slice
    let base = |u: &[usize]| {
        infer(
            "slice_update",
            &[
                ("x", x()),
                ("update", vec![inp(DType::F16, u)]),
                ("begin", vec![ints(&[0, 3, 0])]),
                ("end", vec![ints(&[1, 4, 8])]),
            ],
        )
    };
    assert_eq!(base(&[1, 1, 8]).unwrap(), t(DType::F16, &[1, 4, 8]));
    assert!(err_text(base(&[1, 1, 7])).contains("update shape [1, 1, 7] != slice shape [1, 1, 8]"));
}

#[test]
fn gathers() {
    let table = P::Const(filled(DType::F16, &[100, 64], 0.0));
    let r = infer(
        "gather",
        &[
            ("x", vec![table.clone()]),
            ("indices", vec![inp(DType::I32, &[1, 8])]),
            ("axis", vec![int(0)]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::F16, &[1, 8, 64]));
    let e = err_text(infer(
        "gather",
        &[
            ("x", vec![table]),
            ("indices", vec![inp(DType::I32, &[1, 8])]),
            ("batch_dims", vec![int(1)]),
        ],
    ));
    assert!(e.contains("batch_dims"), "{e}");
    // argmax → gather_along_axis (greedy token pick)
    let r = infer(
        "gather_along_axis",
        &[
            ("x", vec![inp(DType::F16, &[1, 262144])]),
            ("indices", vec![inp(DType::I32, &[1, 1])]),
            ("axis", vec![int(-1)]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::F16, &[1, 1]));
    assert!(
        infer(
            "gather_along_axis",
            &[
                ("x", vec![inp(DType::F16, &[2, 3])]),
                ("indices", vec![inp(DType::F16, &[2, 1])]),
                ("axis", vec![int(1)])
            ]
        )
        .is_err()
    );
}

#[test]
fn states() {
    let st = || vec![P::State(TensorType::new(DType::F16, &[1, 4, 8]))];
    assert_eq!(
        infer(
            "write_state",
            &[("input", st()), ("data", vec![inp(DType::F16, &[1, 4, 8])])]
        )
        .unwrap(),
        vec![]
    );
    let e = err_text(infer(
        "write_state",
        &[("input", st()), ("data", vec![inp(DType::F16, &[1, 4, 7])])],
    ));
    assert!(e.contains("!= state's tensor<fp16, [1, 4, 8]>"), "{e}");
    let e = err_text(infer("identity", &[("x", st())]));
    assert!(e.contains("state"), "{e}");
}

#[test]
fn compression_ops() {
    let lut = |shape: &[usize]| P::Const(filled(DType::F16, shape, 0.0));
    let idx = |d: DType, shape: &[usize]| P::Const(filled(d, shape, 3.0));
    // conv weight [O, I, 1, 1] palettized per grouped channel (group 32)
    let r = infer(
        "constexpr_lut_to_dense",
        &[
            ("indices", vec![idx(DType::U4, &[64, 32, 1, 1])]),
            ("lut", vec![lut(&[2, 1, 1, 1, 16, 1])]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::F16, &[64, 32, 1, 1]));
    let e = err_text(infer(
        "constexpr_lut_to_dense",
        &[
            ("indices", vec![idx(DType::U4, &[64, 32])]),
            ("lut", vec![lut(&[2, 1, 4, 1])]),
        ],
    ));
    assert!(
        e.contains("4 palette entries") && e.contains("2^4 = 16"),
        "{e}"
    );
    let e = err_text(infer(
        "constexpr_lut_to_dense",
        &[
            ("indices", vec![idx(DType::U2, &[8, 4])]),
            ("lut", vec![lut(&[1, 1, 4, 2])]),
        ],
    ));
    assert!(e.contains("vector_axis"), "{e}");
    let e = err_text(infer(
        "constexpr_lut_to_dense",
        &[
            ("indices", vec![idx(DType::I8, &[8, 4])]),
            ("lut", vec![lut(&[1, 1, 256, 1])]),
        ],
    ));
    assert!(e.contains("`indices` has dtype int8"), "{e}");
    // runtime indices are rejected (must be const)
    let e = infer(
        "constexpr_lut_to_dense",
        &[
            ("indices", vec![inp(DType::U4, &[8, 4])]),
            ("lut", vec![lut(&[1, 1, 16, 1])]),
        ],
    );
    assert!(matches!(e, Err(InferError::NotConst { .. })), "{e:?}");
    let r = infer(
        "constexpr_blockwise_shift_scale",
        &[
            ("data", vec![idx(DType::I8, &[8, 64])]),
            ("scale", vec![lut(&[8, 2])]),
            ("offset", vec![P::Const(filled(DType::F16, &[8, 2], 0.0))]),
        ],
    );
    assert_eq!(r.unwrap(), t(DType::F16, &[8, 64]));
    let e = err_text(infer(
        "constexpr_blockwise_shift_scale",
        &[
            ("data", vec![idx(DType::I8, &[8, 64])]),
            ("scale", vec![lut(&[8, 2])]),
            ("offset", vec![idx(DType::U8, &[8, 2])]),
        ],
    ));
    assert!(e.contains("`offset` (uint8) and `data` (int8)"), "{e}");
}

#[test]
fn const_op_typing() {
    use mil::{Operation, Value, ValueEnv};
    let mut op = Operation::new("const", "c");
    assert!(mil::infer_op(&op, &ValueEnv::new()).is_err());
    op.attributes
        .insert("val".into(), Value::Tensor(TensorValue::scalar_i32(3)));
    assert_eq!(
        mil::infer_op(&op, &ValueEnv::new()).unwrap(),
        t(DType::I32, &[])
    );
    op.attributes
        .insert("extra".into(), Value::Tensor(TensorValue::scalar_i32(3)));
    assert!(mil::infer_op(&op, &ValueEnv::new()).is_err());
    let mut add = Operation::new("relu", "r");
    add.attributes
        .insert("val".into(), Value::Tensor(TensorValue::scalar_i32(3)));
    let e = mil::infer_op(&add, &ValueEnv::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("unexpected attribute `val`"), "{e}");
}
