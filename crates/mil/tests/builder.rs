//! Builder tests: naming (scopes, sanitising, uniquifying, consts after their op and param),
//! explicit parameters, scalar dtypes, outputs (rename / identity), multi-function programs and
//! error messages naming the op.

use half::f16;
use mil::builder::{ConvOptions, GeluMode, Pad, Slice, Split, sanitize};
use mil::{
    Binding, DType, FunctionBuilder, MilError, Operand, ProgramBuilder, TensorType, TensorValue,
    Value, validate,
};

fn f16_tensor(shape: &[usize], v: f32) -> TensorValue {
    let n: usize = shape.iter().product();
    TensorValue::from_f16(shape, &vec![f16::from_f32(v); n]).unwrap()
}

fn op_names(b: &FunctionBuilder) -> Vec<String> {
    b.operations().iter().map(|o| o.name.clone()).collect()
}

#[test]
fn sanitizing() {
    assert_eq!(sanitize("layer3.attn"), "layer3_attn");
    assert_eq!(sanitize("3d-conv"), "_3d_conv");
    assert_eq!(sanitize(""), "_");
    assert_eq!(sanitize("ok_Name9"), "ok_Name9");
}

#[test]
fn scoped_names_and_explicit_params() {
    let mut b = FunctionBuilder::new("main");
    let x = b
        .input("x", TensorType::new(DType::F16, &[1, 64, 1, 8]))
        .unwrap();
    let w = f16_tensor(&[32, 64, 1, 1], 0.5);
    let q = b
        .with_scope("layer3.attn", |b| b.conv_1x1("q_proj", &x, w.clone(), None))
        .unwrap();
    assert_eq!(q.name(), "layer3_attn_q_proj");
    assert_eq!(q.ty(), &TensorType::new(DType::F16, &[1, 32, 1, 8]));
    assert_eq!(
        op_names(&b),
        [
            "layer3_attn_q_proj_weight_0",
            "layer3_attn_q_proj_strides_0",
            "layer3_attn_q_proj_pad_type_0",
            "layer3_attn_q_proj_pad_0",
            "layer3_attn_q_proj_dilations_0",
            "layer3_attn_q_proj_groups_0",
            "layer3_attn_q_proj",
        ]
    );
    let conv = b.operations().last().unwrap();
    let params: Vec<&str> = conv.inputs.keys().map(String::as_str).collect();
    assert_eq!(
        params,
        [
            "dilations",
            "groups",
            "pad",
            "pad_type",
            "strides",
            "weight",
            "x"
        ]
    );
    // every param is a name binding to a preceding const (no inline values on ordinary ops)
    assert!(
        conv.inputs
            .values()
            .flatten()
            .all(|b| matches!(b, Binding::Name(_)))
    );
    let pad_type = &b.operations()[2];
    assert_eq!(pad_type.op_type, "const");
    assert_eq!(
        pad_type.const_value(),
        Some(&Value::Tensor(TensorValue::scalar_str("valid")))
    );
    // nested scopes and push/pop
    b.push_scope("layer3");
    b.push_scope("mlp");
    let g = b.gelu("act", &q, GeluMode::TanhApproximation).unwrap();
    b.pop_scope();
    let h = b.tanh("t", &g).unwrap();
    b.pop_scope();
    b.pop_scope(); // popping at top level is a no-op
    let s = b.sigmoid("s", &h).unwrap();
    assert_eq!(g.name(), "layer3_mlp_act");
    assert_eq!(h.name(), "layer3_t");
    assert_eq!(s.name(), "s");
    b.output("out", &s).unwrap();
    let f = b.finish().unwrap();
    assert!(mil::validate::validate_function("main", &f).is_ok());
}

#[test]
fn uniquifying_and_auto_names() {
    let mut b = FunctionBuilder::new("main");
    let x = b.input("x", TensorType::new(DType::F32, &[4])).unwrap();
    let a = b.relu("r", &x).unwrap();
    let c = b.relu("r", &a).unwrap();
    let d = b.relu("r", &c).unwrap();
    assert_eq!([a.name(), c.name(), d.name()], ["r", "r_1", "r_2"]);
    let e = b.add("", &d, &d).unwrap();
    let f = b.add("", &e, &e).unwrap();
    assert_eq!([e.name(), f.name()], ["add_0", "add_1"]);
    // a user name that collides with an auto name is uniquified, not reused
    let g = b.exp("add_2", &f).unwrap();
    let h = b.add("", &g, &g).unwrap();
    assert_eq!([g.name(), h.name()], ["add_2", "add_3"]);
    // names of consts: <op>_<param>_0, uniquified when an op name repeats
    let m1 = b.mul("scale", &h, 2.0).unwrap();
    let m2 = b.mul("scale", &m1, 2.0).unwrap();
    assert_eq!(m2.name(), "scale_1");
    let names = op_names(&b);
    assert!(names.contains(&"scale_y_0".to_string()));
    assert!(names.contains(&"scale_1_y_0".to_string()));
    // an input name cannot be reused
    assert!(matches!(
        b.input("x", TensorType::new(DType::F32, &[4])),
        Err(MilError::DuplicateName { .. })
    ));
    assert!(matches!(
        b.input("bad name", TensorType::new(DType::F32, &[4])),
        Err(MilError::InvalidName { .. })
    ));
}

#[test]
fn scalar_operands_take_the_other_dtype() {
    let mut b = FunctionBuilder::new("main");
    let h = b.input("h", TensorType::new(DType::F16, &[2])).unwrap();
    let f = b.input("f", TensorType::new(DType::F32, &[2])).unwrap();
    let i = b.input("i", TensorType::new(DType::I32, &[2])).unwrap();
    b.mul("mh", &h, 0.125).unwrap();
    b.mul("mf", 0.125, &f).unwrap();
    b.add("ai", &i, 3).unwrap();
    let dtype_of = |b: &FunctionBuilder, n: &str| {
        b.operations()
            .iter()
            .find(|o| o.name == n)
            .and_then(|o| o.const_value())
            .and_then(Value::as_tensor)
            .map(|t| (t.dtype(), t.scalar_as_f32()))
    };
    assert_eq!(dtype_of(&b, "mh_y_0"), Some((DType::F16, Some(0.125))));
    assert_eq!(dtype_of(&b, "mf_x_0"), Some((DType::F32, Some(0.125))));
    assert_eq!(dtype_of(&b, "ai_y_0"), Some((DType::I32, Some(3.0))));
    // rsqrt epsilon and clip bounds follow x
    b.rsqrt("r", &h, 1e-6).unwrap();
    assert_eq!(dtype_of(&b, "r_epsilon_0").map(|d| d.0), Some(DType::F16));
    b.clip("c", &f, -30.0, 30.0).unwrap();
    assert_eq!(dtype_of(&b, "c_alpha_0"), Some((DType::F32, Some(-30.0))));
    // a fractional scalar for an int operand, and two scalars, are argument errors
    let e = b.add("bad", &i, 0.5).unwrap_err();
    assert_eq!(
        e.to_string(),
        "add \"bad\": scalar 0.5 cannot be written as int32"
    );
    let e = b.add("bad2", 1.0, 2.0).unwrap_err();
    assert!(e.to_string().contains("needs a typed operand"), "{e}");
    // neg is mul by -1
    let n = b.neg("n", &h).unwrap();
    let op = b.operations().last().unwrap();
    assert_eq!((op.op_type.as_str(), n.dtype()), ("mul", DType::F16));
    assert_eq!(dtype_of(&b, "n_y_0"), Some((DType::F16, Some(-1.0))));
}

#[test]
fn errors_name_the_op_and_roll_back() {
    let mut b = FunctionBuilder::new("main");
    let x = b
        .input("x", TensorType::new(DType::F16, &[1, 128, 1, 8]))
        .unwrap();
    let w = f16_tensor(&[64, 64, 1, 1], 0.0);
    let before = b.operations().len();
    let e = b
        .with_scope("layer0", |b| b.conv_1x1("q_proj", &x, w, None))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "conv \"layer0_q_proj\": weight in-channels 64 != input channels 128"
    );
    // the weight const emitted for the failed op was rolled back, and the name is free again
    assert_eq!(b.operations().len(), before);
    let ok = b
        .with_scope("layer0", |b| {
            b.conv_1x1("q_proj", &x, f16_tensor(&[64, 128, 1, 1], 0.0), None)
        })
        .unwrap();
    assert_eq!(ok.name(), "layer0_q_proj");
    let e = b.softmax("sm", &ok, 4).unwrap_err();
    assert_eq!(
        e.to_string(),
        "softmax \"sm\": parameter `axis`: axis 4 is out of range for rank 4"
    );
    // a var from another function
    let mut other = FunctionBuilder::new("other");
    let e = other.relu("r", &x).unwrap_err();
    assert!(matches!(e, MilError::UnknownVar { .. }), "{e}");
}

#[test]
fn outputs_rename_or_insert_identity() {
    let mut b = FunctionBuilder::new("main");
    let x = b.input("x", TensorType::new(DType::F16, &[4])).unwrap();
    let y = b.relu("act", &x).unwrap();
    let z = b.exp("z", &y).unwrap();
    b.output("hidden_states_out", &y).unwrap();
    // y's producing op output was renamed, and its later use by `z` follows
    assert_eq!(b.current_name(&y), "hidden_states_out");
    let relu = b.operations().iter().find(|o| o.op_type == "relu").unwrap();
    assert_eq!(relu.name, "act");
    assert_eq!(relu.outputs[0].name, "hidden_states_out");
    let exp = b.operations().iter().find(|o| o.op_type == "exp").unwrap();
    assert_eq!(exp.input_name("x"), Some("hidden_states_out"));
    // a var used after the rename still resolves
    let w = b.tanh("w", &y).unwrap();
    assert_eq!(
        b.operations().last().unwrap().input_name("x"),
        Some("hidden_states_out")
    );
    // an input, or an already-exported value, gets an identity
    b.output("x_copy", &x).unwrap();
    b.output("again", &y).unwrap();
    let ids: Vec<_> = b
        .operations()
        .iter()
        .filter(|o| o.op_type == "identity")
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0].input_name("x"), Some("x"));
    assert_eq!(ids[1].input_name("x"), Some("hidden_states_out"));
    // exact names: an existing name or a bad one is refused
    assert!(matches!(
        b.output("z", &w),
        Err(MilError::DuplicateName { .. })
    ));
    assert!(matches!(
        b.output("9lives", &w),
        Err(MilError::InvalidName { .. })
    ));
    // same name as the var: no rename, no identity
    b.output("z", &z).unwrap();
    let f = b.finish().unwrap();
    assert_eq!(
        f.block.outputs,
        ["hidden_states_out", "x_copy", "again", "z"]
    );
    assert!(mil::validate::validate_function("main", &f).is_ok());
}

#[test]
fn multi_function_program_shares_weights() {
    let w = f16_tensor(&[16, 16, 1, 1], 0.25);
    let mut pb = ProgramBuilder::new();
    for (fname, len) in [("prefill", 8usize), ("decode", 1)] {
        pb.function(fname, |b| {
            let x = b.input("x", TensorType::new(DType::F16, &[1, 16, 1, len]))?;
            let y = b.conv_1x1("proj", &x, w.clone(), None)?;
            b.output("y", &y)
        })
        .unwrap();
    }
    assert!(matches!(
        pb.add_function("decode", mil::Function::new("CoreML8")),
        Err(MilError::DuplicateFunction(_))
    ));
    let p = pb.build().unwrap();
    assert_eq!(
        p.functions.keys().collect::<Vec<_>>(),
        ["decode", "prefill"]
    );
    let weight = |f: &str| {
        p.functions[f]
            .block
            .operations
            .iter()
            .find(|o| o.name == "proj_weight_0")
            .and_then(|o| o.const_value())
            .and_then(Value::as_tensor)
            .cloned()
            .unwrap()
    };
    let (a, b) = (weight("prefill"), weight("decode"));
    // the same literal, sharing one buffer (the writer dedups blobs by content)
    assert_eq!(a, b);
    assert!(a.bytes().unwrap().ptr_eq(b.bytes().unwrap()));
    assert_eq!(
        p.functions["decode"].output_types()[0].unwrap().ty,
        TensorType::new(DType::F16, &[1, 16, 1, 1]).into()
    );
    // an empty function is refused
    let mut pb = ProgramBuilder::new();
    let e = pb.function("empty", |_| Ok(())).unwrap_err();
    assert_eq!(e, MilError::NoOutputs("empty".into()));
}

#[test]
fn convenience_ops_write_every_param() {
    let mut b = FunctionBuilder::new("main");
    let x = b
        .input("x", TensorType::new(DType::F16, &[1, 8, 64]))
        .unwrap();
    let count = |b: &FunctionBuilder, op: &str| {
        b.operations()
            .iter()
            .rev()
            .find(|o| o.op_type == op)
            .map(|o| o.inputs.keys().cloned().collect::<Vec<_>>())
            .unwrap()
    };
    // linear without bias gets a zero bias in the weight's dtype
    let l = b
        .linear("lin", &x, f16_tensor(&[32, 64], 1.0), None)
        .unwrap();
    assert_eq!(l.ty(), &TensorType::new(DType::F16, &[1, 8, 32]));
    assert_eq!(count(&b, "linear"), ["bias", "weight", "x"]);
    let bias = b
        .operations()
        .iter()
        .find(|o| o.name == "lin_bias_0")
        .unwrap();
    assert_eq!(
        bias.const_value().unwrap().as_tensor().unwrap(),
        &f16_tensor(&[32], 0.0)
    );
    b.matmul("mm", &x, &x, false, true).unwrap();
    assert_eq!(
        count(&b, "matmul"),
        ["transpose_x", "transpose_y", "x", "y"]
    );
    b.reduce_mean("rm", &x, &[-1], true).unwrap();
    assert_eq!(count(&b, "reduce_mean"), ["axes", "keep_dims", "x"]);
    let am = b.reduce_argmax("am", &x, -1, false, DType::I32).unwrap();
    assert_eq!(
        count(&b, "reduce_argmax"),
        ["axis", "keep_dims", "output_dtype", "x"]
    );
    assert_eq!(am.ty(), &TensorType::new(DType::I32, &[1, 8]));
    // layer_norm without gamma/beta writes ones/zeros
    b.layer_norm("ln", &x, &[-1], None, None, 1e-6).unwrap();
    assert_eq!(
        count(&b, "layer_norm"),
        ["axes", "beta", "epsilon", "gamma", "x"]
    );
    let gamma = b
        .operations()
        .iter()
        .find(|o| o.name == "ln_gamma_0")
        .unwrap();
    assert_eq!(
        gamma.const_value().unwrap().as_tensor().unwrap(),
        &f16_tensor(&[64], 1.0)
    );
    let c = b.concat("cat", [&x, &x], -1, false).unwrap();
    assert_eq!(c.dim(-1), Some(128));
    assert_eq!(count(&b, "concat"), ["axis", "interleave", "values"]);
    assert_eq!(b.operations().last().unwrap().inputs["values"].len(), 2);
    let parts = b.split("sp", &c, Split::Sizes(vec![32, 96]), -1).unwrap();
    assert_eq!(
        parts.iter().map(|p| p.name()).collect::<Vec<_>>(),
        ["sp_0", "sp_1"]
    );
    assert_eq!(parts[1].dim(-1), Some(96));
    let s = b
        .slice_by_index("sl", &x, Slice::new(&[0, 0, 0], &[1, 8, 32]))
        .unwrap();
    assert_eq!(
        count(&b, "slice_by_index"),
        [
            "begin",
            "begin_mask",
            "end",
            "end_mask",
            "squeeze_mask",
            "stride",
            "x"
        ]
    );
    assert_eq!(s.dim(-1), Some(32));
    let shifted = b.slice_axis("shift", &x, 1, 1, None).unwrap();
    assert_eq!(shifted.static_shape(), Some(vec![1, 7, 64]));
    let last = b.slice_axis("last", &x, -2, -1, None).unwrap();
    assert_eq!(last.static_shape(), Some(vec![1, 1, 64]));
    let g = b
        .gather(
            "emb",
            f16_tensor(&[10, 64], 0.0),
            TensorValue::from_i32(&[1, 3], &[1, 2, 3]).unwrap(),
            0,
            0,
            false,
        )
        .unwrap();
    assert_eq!(g.static_shape(), Some(vec![1, 3, 64]));
    assert_eq!(
        count(&b, "gather"),
        ["axis", "batch_dims", "indices", "validate_indices", "x"]
    );
    let img = b
        .input("img", TensorType::new(DType::F32, &[1, 3, 8, 8]))
        .unwrap();
    let p = b
        .conv(
            "cv",
            &img,
            TensorValue::from_f32(&[4, 3, 3, 3], &[0.0; 108]).unwrap(),
            Some(Operand::Value(
                TensorValue::from_f32(&[4], &[0.0; 4]).unwrap(),
            )),
            &ConvOptions {
                strides: Some(vec![2, 2]),
                pad: Pad::Custom(vec![1, 1, 1, 1]),
                dilations: None,
                groups: 1,
            },
        )
        .unwrap();
    assert_eq!(p.static_shape(), Some(vec![1, 4, 4, 4]));
    let cast = b.cast("ci", &am, DType::I16).unwrap();
    assert_eq!(cast.dtype(), DType::I16);
    let f = b.fill("zeros", &[2, 3], 0.0, DType::F16).unwrap();
    assert_eq!(f.ty(), &TensorType::new(DType::F16, &[2, 3]));
}

#[test]
fn states_and_constexpr() {
    let mut b = FunctionBuilder::new("main");
    let x = b
        .input("x", TensorType::new(DType::F16, &[1, 1, 8]))
        .unwrap();
    let cache = b
        .state_input("cache", TensorType::new(DType::F16, &[1, 4, 8]))
        .unwrap();
    let old = b.read_state("rd", &cache).unwrap();
    let tail = b.slice_axis("tail", &old, 1, 1, None).unwrap();
    let new = b.concat("kv", [&tail, &x], 1, false).unwrap();
    b.write_state("wr", &cache, &new).unwrap();
    let e = b.write_state("wr_bad", &cache, &x).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("write_state \"wr_bad\": data tensor<fp16, [1, 1, 8]>"),
        "{e}"
    );
    // palettized weight: inline values, no const ops
    let n_ops = b.operations().len();
    let idx =
        TensorValue::from_bytes(TensorType::new(DType::U4, &[64, 8]), vec![0x21u8; 256]).unwrap();
    let lut = f16_tensor(&[2, 1, 16, 1], 1.0);
    let w = b.lut_to_dense("w_pal", idx, lut).unwrap();
    assert_eq!(b.operations().len(), n_ops + 1);
    let op = b.operations().last().unwrap();
    assert!(
        op.inputs
            .values()
            .flatten()
            .all(|b| matches!(b, Binding::Value(_)))
    );
    assert_eq!(w.ty(), &TensorType::new(DType::F16, &[64, 8]));
    let y = b.linear("proj", &x, &w, None).unwrap();
    assert_eq!(y.static_shape(), Some(vec![1, 1, 64]));
    let q = b
        .blockwise_shift_scale(
            "w_q",
            TensorValue::from_bytes(TensorType::new(DType::I4, &[8, 64]), vec![0u8; 256]).unwrap(),
            f16_tensor(&[8, 2], 0.5),
            None,
        )
        .unwrap();
    assert_eq!(q.ty(), &TensorType::new(DType::F16, &[8, 64]));
    let bad = b.lut_to_dense(
        "w_bad",
        TensorValue::from_bytes(TensorType::new(DType::U4, &[64, 8]), vec![0u8; 256]).unwrap(),
        f16_tensor(&[2, 1, 4, 1], 1.0),
    );
    assert!(
        bad.unwrap_err()
            .to_string()
            .starts_with("constexpr_lut_to_dense \"w_bad\": lut has 4 palette entries")
    );
    b.output("y", &y).unwrap();
    let f = b.finish().unwrap();
    assert!(mil::validate::validate_function("main", &f).is_ok());
    let mut p = mil::Program::default();
    p.functions.insert("main".into(), f);
    assert!(validate(&p).is_ok());
}

#[test]
fn building_is_deterministic() {
    let build = || {
        let mut pb = ProgramBuilder::new();
        pb.function("main", |b| {
            let x = b.input("x", TensorType::new(DType::F16, &[1, 8, 16]))?;
            b.with_scope("blk", |b| {
                let y = b.mul("", &x, 0.5)?;
                let z = b.add("", &y, &x)?;
                let s = b.softmax("", &z, -1)?;
                b.output("out", &s)
            })
        })
        .unwrap();
        mil::print_program(&pb.build().unwrap())
    };
    let a = build();
    assert_eq!(a, build());
    assert!(
        a.contains("blk_mul_0") && a.contains("blk_softmax_0"),
        "{a}"
    );
}

/// The in-place KV-cache write of the stateful chunks, as coremltools lowers torch's
/// `cache[0:1, :, pos:pos+T, :] = k`: `read_state → slice_update(begin = concat(.., pos, ..),
/// end = concat(.., pos + T, ..)) → write_state → read_state`, and the default pipeline keeps
/// every state op in order.
#[test]
fn in_place_cache_update_at_a_runtime_position() {
    let mut b = FunctionBuilder::new("main");
    let k = b
        .input("k", TensorType::new(DType::F16, &[1, 1, 2, 4]))
        .unwrap();
    let pos = b.input("pos", TensorType::new(DType::I32, &[1])).unwrap();
    let cache = b
        .state_input("cache", TensorType::new(DType::F16, &[2, 1, 8, 4]))
        .unwrap();
    let old = b.read_state("read", &cache).unwrap();
    let i32v = |v: &[i32]| TensorValue::from_i32(&[v.len()], v).unwrap();
    let end_pos = b.add("pos_end", &pos, 2i32).unwrap();
    let begin = b
        .concat(
            "begin",
            [
                Operand::from(i32v(&[1, 0])),
                Operand::from(&pos),
                Operand::from(i32v(&[0])),
            ],
            0,
            false,
        )
        .unwrap();
    let end = b
        .concat(
            "end",
            [
                Operand::from(i32v(&[2, 1])),
                Operand::from(&end_pos),
                Operand::from(i32v(&[4])),
            ],
            0,
            false,
        )
        .unwrap();
    let written = b
        .slice_update("write_k", &old, &k, Slice::dynamic(&begin, &end))
        .unwrap();
    assert_eq!(written.ty(), old.ty());
    let new = b.update_state("cache_update", &cache, &written).unwrap();
    assert_eq!(new.name(), "cache_update");
    assert_eq!(new.ty(), &TensorType::new(DType::F16, &[2, 1, 8, 4]));
    let s = b.reduce_sum("out", &new, &[0, 2], false).unwrap();
    b.output("out", &s).unwrap();
    // a wrongly shaped update is refused by type inference
    let e = b
        .slice_update("bad", &old, &old, Slice::new(&[0, 0, 0, 0], &[1, 1, 2, 4]))
        .unwrap_err();
    assert!(e.to_string().contains("update shape"), "{e}");

    let mut p = mil::Program::single("main", b.finish().unwrap());
    validate::validate(&p).unwrap();
    mil::passes::Pipeline::named("default")
        .unwrap()
        .run(&mut p)
        .unwrap();
    let ops: Vec<(&str, &str)> = p.functions["main"]
        .block
        .operations
        .iter()
        .filter(|o| o.op_type.contains("state") || o.op_type == "slice_update")
        .map(|o| (o.op_type.as_str(), o.name.as_str()))
        .collect();
    assert_eq!(
        ops,
        [
            ("read_state", "read"),
            ("slice_update", "write_k"),
            ("write_state", "cache_update_write_state"),
            ("read_state", "cache_update"),
        ]
    );
}

#[test]
fn pad_constant_pads_the_last_axes_and_checks_its_arguments() {
    let mut b = FunctionBuilder::new("main");
    let x = b
        .input("x", TensorType::new(DType::F16, &[1, 2, 1, 16]))
        .unwrap();
    let y = b.pad_constant("padded", &x, &[0, 1, 0, 16], 0.0).unwrap();
    assert_eq!(y.ty(), &TensorType::new(DType::F16, &[1, 2, 2, 32]));
    // every parameter explicit, the value in x's dtype
    let op = b.operations().last().unwrap().clone();
    assert_eq!(op.op_type, "pad");
    for p in ["x", "pad", "mode", "constant_val"] {
        assert!(op.input(p).is_some(), "{p} missing");
    }
    assert!(b.pad_constant("odd", &x, &[1, 2, 3], 0.0).is_err());
    assert!(b.pad_constant("neg", &x, &[0, -1], 0.0).is_err());
    let e = b
        .pad_constant("too_many", &x, &[0; 10], 0.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pad"), "{e}");
    b.output("y", &y).unwrap();
    let f = b.finish().unwrap();
    validate::validate_function("main", &f).unwrap();
}
