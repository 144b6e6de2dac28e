//! Program-level tests: constexpr weights, an attention block against an f64 reference, typed
//! errors, multi-function programs, states, taps and thread-count determinism.

mod common;

use common::*;
use half::f16;
use mil::DType::{self, F16, F32, I32};
use mil::value::pack_bits;
use mil::{Program, TensorType, TensorValue};
use mil_runtime::{Backend, CpuBackend, Interpreter, RuntimeError, Tensor};
use std::collections::BTreeMap;

fn inputs(v: Vec<(&str, Tensor)>) -> BTreeMap<String, Tensor> {
    v.into_iter().map(|(k, t)| (k.to_string(), t)).collect()
}

/// Indices and LUT of a 4-bit per-grouped-channel palettization (group 32 on axis 0).
fn pal4(o: usize, i: usize, seed: u64) -> (Vec<u8>, Vec<f16>) {
    let idx: Vec<u8> = rand_vec(o * i, seed)
        .iter()
        .map(|v| ((v + 1.0) * 8.0) as u8 % 16)
        .collect();
    let lut: Vec<f16> = rand_vec(o / 32 * 16, seed + 1)
        .iter()
        .map(|&v| f16::from_f32(v * 0.1))
        .collect();
    (idx, lut)
}

#[test]
fn constexpr_lut_to_dense_uint4_group32() {
    let (o, i) = (64, 8);
    let (idx, lut) = pal4(o, i, 20);
    let ind =
        TensorValue::from_bytes(TensorType::new(DType::U4, &[o, i]), pack_bits(&idx, 4)).unwrap();
    let lutv = TensorValue::from_f16(&[o / 32, 1, 16, 1], &lut).unwrap();
    let x = rand_vec(i, 21);
    let mut p = Prog::new();
    p.input("x", F32, &[1, i]);
    p.op(
        "constexpr_lut_to_dense",
        "w_pal",
        vec![("indices", P::Inline(ind)), ("lut", P::Inline(lutv))],
        &[("w", F16, &[o, i])],
    );
    p.op(
        "linear",
        "lin",
        vec![("x", P::N("x")), ("weight", P::N("w"))],
        &[("y", F32, &[1, o])],
    )
    .output("y");
    let it = p.interp();
    let w = it.constant("main", "w").unwrap().unwrap();
    assert_eq!(w.dtype(), F16, "expanded weight keeps the LUT dtype");
    let want_w: Vec<f16> = (0..o * i)
        .map(|k| lut[(k / i) / 32 * 16 + usize::from(idx[k])])
        .collect();
    assert_eq!(w.as_f16().unwrap(), want_w.as_slice());
    let y = it
        .run(
            "main",
            &inputs(vec![("x", Tensor::from_f32(&[1, i], x.clone()).unwrap())]),
        )
        .unwrap();
    let want: Vec<f64> = (0..o)
        .map(|r| {
            (0..i)
                .map(|c| f64::from(want_w[r * i + c].to_f32()) * f64::from(x[c]))
                .sum()
        })
        .collect();
    assert_close(&f32s(&y["y"]), &want, 1e-6);
}

#[test]
fn constexpr_lut_conv_layout_and_named_consts() {
    // conv weight [O, I, 1, 1] with lut [O/32, 1, 1, 1, 16, 1], indices bound by name to a const op
    let (o, i) = (64, 4);
    let (idx, lut) = pal4(o, i, 30);
    let mut p = Prog::new();
    p.konst(
        "ind",
        TensorValue::from_bytes(
            TensorType::new(DType::U4, &[o, i, 1, 1]),
            pack_bits(&idx, 4),
        )
        .unwrap(),
    );
    p.konst(
        "lut",
        TensorValue::from_f16(&[2, 1, 1, 1, 16, 1], &lut).unwrap(),
    );
    p.op(
        "constexpr_lut_to_dense",
        "w_pal",
        vec![("indices", P::N("ind")), ("lut", P::N("lut"))],
        &[("w", F16, &[o, i, 1, 1])],
    );
    p.output("w");
    let w = p
        .interp()
        .run("main", &BTreeMap::new())
        .unwrap()
        .remove("w")
        .unwrap();
    let want: Vec<f32> = (0..o * i)
        .map(|k| lut[(k / i) / 32 * 16 + usize::from(idx[k])].to_f32())
        .collect();
    assert_eq!(f32s(&w), want);
}

#[test]
fn constexpr_blockwise_int4_and_uint4_offset() {
    let (o, i, blk) = (4, 64, 32);
    let q: Vec<i8> = rand_vec(o * i, 40)
        .iter()
        .map(|v| (v * 7.5).round() as i8)
        .collect();
    let sc: Vec<f16> = rand_vec(o * i / blk, 41)
        .iter()
        .map(|v| f16::from_f32(v.abs() * 0.01 + 0.001))
        .collect();
    let nib: Vec<u8> = q.iter().map(|&v| (v as u8) & 0xf).collect();
    let data =
        TensorValue::from_bytes(TensorType::new(DType::I4, &[o, i]), pack_bits(&nib, 4)).unwrap();
    let scale = TensorValue::from_f16(&[o, i / blk], &sc).unwrap();
    let mut p = Prog::new();
    p.op(
        "constexpr_blockwise_shift_scale",
        "dq",
        vec![
            ("data", P::Inline(data)),
            ("scale", P::Inline(scale.clone())),
        ],
        &[("w", F16, &[o, i])],
    );
    // uint4 with a uint4 offset per block
    let u: Vec<u8> = rand_vec(o * i, 42)
        .iter()
        .map(|v| ((v + 1.0) * 7.9) as u8)
        .collect();
    let off: Vec<u8> = (0..o * i / blk).map(|k| (k % 16) as u8).collect();
    let udata =
        TensorValue::from_bytes(TensorType::new(DType::U4, &[o, i]), pack_bits(&u, 4)).unwrap();
    let uoff = TensorValue::from_bytes(
        TensorType::new(DType::U4, &[o, i / blk]),
        pack_bits(&off, 4),
    )
    .unwrap();
    p.op(
        "constexpr_blockwise_shift_scale",
        "dq2",
        vec![
            ("data", P::Inline(udata)),
            ("scale", P::Inline(scale)),
            ("offset", P::Inline(uoff)),
        ],
        &[("w2", F16, &[o, i])],
    );
    p.output("w").output("w2");
    let r = p.interp().run("main", &BTreeMap::new()).unwrap();
    let want: Vec<f32> = (0..o * i)
        .map(|k| f16::from_f32(sc[(k / i) * 2 + (k % i) / blk].to_f32() * f32::from(q[k])).to_f32())
        .collect();
    assert_eq!(f32s(&r["w"]), want);
    let want2: Vec<f32> = (0..o * i)
        .map(|k| {
            let g = (k / i) * 2 + (k % i) / blk;
            f16::from_f32(sc[g].to_f32() * (f32::from(u[k]) - f32::from(off[g]))).to_f32()
        })
        .collect();
    assert_eq!(f32s(&r["w2"]), want2);
}

/// One attention block: x → q/k/v linear → heads → softmax(q·kᵀ·scale + mask) · v → o linear →
/// residual → layer_norm, against a straightforward f64 reference.
#[test]
fn attention_block_matches_f64_reference() {
    let (s, d, h) = (5usize, 16usize, 2usize);
    let hd = d / h;
    let wq = rand_vec(d * d, 50);
    let wk = rand_vec(d * d, 51);
    let wv = rand_vec(d * d, 52);
    let wo = rand_vec(d * d, 53);
    let x = rand_vec(s * d, 54);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut mask = vec![0f32; s * s];
    for i in 0..s {
        for j in i + 1..s {
            mask[i * s + j] = -1e4;
        }
    }
    let mut p = Prog::new();
    p.input("x", F32, &[1, s, d])
        .input("mask", F32, &[1, 1, s, s]);
    for (n, w) in [("wq", &wq), ("wk", &wk), ("wv", &wv), ("wo", &wo)] {
        p.konst(n, TensorValue::from_f32(&[d, d], w).unwrap());
    }
    for (w, out) in [("wq", "q"), ("wk", "k"), ("wv", "v")] {
        let lin = format!("{out}_lin");
        let l: &'static str = Box::leak(lin.into_boxed_str());
        p.op(
            "linear",
            l,
            vec![("x", P::N("x")), ("weight", P::N(w))],
            &[(l, F32, &[1, s, d])],
        );
        let r: &'static str = Box::leak(format!("{out}_r").into_boxed_str());
        p.op(
            "reshape",
            r,
            vec![
                ("x", P::N(l)),
                ("shape", P::I(vec![1, s as i32, h as i32, -1])),
            ],
            &[(r, F32, &[1, s, h, hd])],
        );
        p.op(
            "transpose",
            out,
            vec![("x", P::N(r)), ("perm", P::I(vec![0, 2, 1, 3]))],
            &[(out, F32, &[1, h, s, hd])],
        );
    }
    p.op(
        "matmul",
        "qk",
        vec![
            ("x", P::N("q")),
            ("y", P::N("k")),
            ("transpose_x", P::B(false)),
            ("transpose_y", P::B(true)),
        ],
        &[("qk", F32, &[1, h, s, s])],
    );
    p.op(
        "mul",
        "scaled",
        vec![("x", P::N("qk")), ("y", P::F(scale))],
        &[("scaled", F32, &[1, h, s, s])],
    );
    p.op(
        "add",
        "masked",
        vec![("x", P::N("scaled")), ("y", P::N("mask"))],
        &[("masked", F32, &[1, h, s, s])],
    );
    p.op(
        "softmax",
        "att",
        vec![("x", P::N("masked")), ("axis", P::I1(-1))],
        &[("att", F32, &[1, h, s, s])],
    );
    p.op(
        "matmul",
        "av",
        vec![("x", P::N("att")), ("y", P::N("v"))],
        &[("av", F32, &[1, h, s, hd])],
    );
    p.op(
        "transpose",
        "avt",
        vec![("x", P::N("av")), ("perm", P::I(vec![0, 2, -3, -1]))],
        &[("avt", F32, &[1, s, h, hd])],
    );
    p.op(
        "reshape",
        "ctx",
        vec![
            ("x", P::N("avt")),
            ("shape", P::I(vec![1, s as i32, d as i32])),
        ],
        &[("ctx", F32, &[1, s, d])],
    );
    p.op(
        "linear",
        "o",
        vec![("x", P::N("ctx")), ("weight", P::N("wo"))],
        &[("o", F32, &[1, s, d])],
    );
    p.op(
        "add",
        "res",
        vec![("x", P::N("x")), ("y", P::N("o"))],
        &[("res", F32, &[1, s, d])],
    );
    p.op(
        "layer_norm",
        "ln",
        vec![
            ("x", P::N("res")),
            ("axes", P::I(vec![-1])),
            ("epsilon", P::F(1e-5)),
        ],
        &[("y", F32, &[1, s, d])],
    )
    .output("y");

    // f64 reference
    let f = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
    let (xd, wqd, wkd, wvd, wod) = (f(&x), f(&wq), f(&wk), f(&wv), f(&wo));
    let lin = |a: &[f64], w: &[f64]| {
        let mut o = vec![0f64; s * d];
        for r in 0..s {
            for c in 0..d {
                o[r * d + c] = (0..d).map(|k| a[r * d + k] * w[c * d + k]).sum();
            }
        }
        o
    };
    let (q, k, v) = (lin(&xd, &wqd), lin(&xd, &wkd), lin(&xd, &wvd));
    let mut ctx = vec![0f64; s * d];
    for hh in 0..h {
        for i in 0..s {
            let mut sc: Vec<f64> = (0..s)
                .map(|j| {
                    (0..hd)
                        .map(|e| q[i * d + hh * hd + e] * k[j * d + hh * hd + e])
                        .sum::<f64>()
                        * f64::from(scale)
                        + f64::from(mask[i * s + j])
                })
                .collect();
            let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = sc
                .iter_mut()
                .map(|a| {
                    *a = (*a - m).exp();
                    *a
                })
                .sum();
            for e in 0..hd {
                ctx[i * d + hh * hd + e] = (0..s).map(|j| sc[j] / z * v[j * d + hh * hd + e]).sum();
            }
        }
    }
    let o = lin(&ctx, &wod);
    let mut want = vec![0f64; s * d];
    for i in 0..s {
        let row: Vec<f64> = (0..d).map(|c| xd[i * d + c] + o[i * d + c]).collect();
        let m = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|a| (a - m).powi(2)).sum::<f64>() / d as f64;
        for c in 0..d {
            want[i * d + c] = (row[c] - m) / (var + 1e-5).sqrt();
        }
    }
    let y = p.run1(
        vec![
            ("x", Tensor::from_f32(&[1, s, d], x).unwrap()),
            ("mask", Tensor::from_f32(&[1, 1, s, s], mask).unwrap()),
        ],
        "y",
    );
    assert_close(&f32s(&y), &want, 2e-5);
}

fn unsupported_program() -> Program {
    let mut p = Prog::new();
    p.input("x", F32, &[2]);
    p.op("abs", "fine", vec![("x", P::N("x"))], &[("a", F32, &[2])]);
    p.op(
        "non_max_suppression",
        "nms_7",
        vec![("x", P::N("a"))],
        &[("y", F32, &[2])],
    )
    .output("y");
    p.program()
}

#[test]
fn unsupported_op_is_a_typed_error_naming_type_and_name() {
    match Interpreter::new(&unsupported_program()) {
        Err(RuntimeError::UnsupportedOp {
            function,
            op_type,
            op_name,
        }) => {
            assert_eq!(
                (function.as_str(), op_type.as_str(), op_name.as_str()),
                ("main", "non_max_suppression", "nms_7")
            );
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
}

fn square_program() -> Prog {
    let mut p = Prog::new();
    p.input("x", F16, &[1, 4]).input("pos", I32, &[1]);
    p.op(
        "square",
        "sq",
        vec![("x", P::N("x"))],
        &[("y", F16, &[1, 4])],
    )
    .output("y");
    p
}

#[test]
fn input_checks_are_typed_and_name_the_input() {
    let it = square_program().interp();
    let good_pos = Tensor::from_i32(&[1], vec![0]).unwrap();
    let e = it
        .run(
            "main",
            &inputs(vec![
                ("x", Tensor::f16_from_f32(&[1, 5], &[0.0; 5]).unwrap()),
                ("pos", good_pos.clone()),
            ]),
        )
        .unwrap_err();
    assert!(
        matches!(&e, RuntimeError::InputShape { name, found, .. } if name == "x" && found == &vec![1, 5]),
        "{e}"
    );
    let e = it
        .run(
            "main",
            &inputs(vec![
                ("x", Tensor::from_f32(&[1, 4], vec![0.0; 4]).unwrap()),
                ("pos", good_pos.clone()),
            ]),
        )
        .unwrap_err();
    assert!(
        matches!(&e, RuntimeError::InputDtype { name, expected: F16, found: F32, .. } if name == "x"),
        "{e}"
    );
    let e = it
        .run(
            "main",
            &inputs(vec![(
                "x",
                Tensor::f16_from_f32(&[1, 4], &[0.0; 4]).unwrap(),
            )]),
        )
        .unwrap_err();
    assert!(
        matches!(&e, RuntimeError::MissingInput { name, .. } if name == "pos"),
        "{e}"
    );
    let e = it
        .run(
            "main",
            &inputs(vec![
                ("x", Tensor::f16_from_f32(&[1, 4], &[0.0; 4]).unwrap()),
                ("pos", good_pos.clone()),
                ("extra", good_pos.clone()),
            ]),
        )
        .unwrap_err();
    assert!(
        matches!(&e, RuntimeError::UnexpectedInput { name, .. } if name == "extra"),
        "{e}"
    );
    let e = it.run("nope", &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(&e, RuntimeError::UnknownFunction { available, .. } if available == &vec!["main".to_string()]),
        "{e}"
    );
    let y = it
        .run(
            "main",
            &inputs(vec![
                (
                    "x",
                    Tensor::f16_from_f32(&[1, 4], &[1.0, -2.0, 0.5, 3.0]).unwrap(),
                ),
                ("pos", good_pos),
            ]),
        )
        .unwrap();
    assert_eq!(f32s(&y["y"]), vec![1.0, 4.0, 0.25, 9.0]);
}

#[test]
fn flexible_input_dims_accept_any_size() {
    let mut p = Prog::new();
    p.input_flexible("x", F32, &[Some(1), None]);
    p.op("relu", "r", vec![("x", P::N("x"))], &[("r", F32, &[1, 1])])
        .output("r");
    if let Some(op) = p.f.block.operations.last_mut() {
        op.outputs[0].ty = mil::ValueType::Tensor(TensorType {
            dtype: F32,
            shape: vec![mil::Dim::Fixed(1), mil::Dim::Unknown { variadic: false }],
        });
    }
    let it = p.interp();
    for n in [1, 7] {
        let r = it
            .run(
                "main",
                &inputs(vec![(
                    "x",
                    Tensor::from_f32(&[1, n], vec![1.0; n]).unwrap(),
                )]),
            )
            .unwrap();
        assert_eq!(r["r"].shape(), &[1, n]);
    }
    assert!(
        it.run(
            "main",
            &inputs(vec![(
                "x",
                Tensor::from_f32(&[2, 1], vec![1.0; 2]).unwrap()
            )])
        )
        .is_err()
    );
}

#[test]
fn declared_output_type_mismatch_is_reported() {
    let mut p = Prog::new();
    p.input("x", F32, &[2, 3]);
    p.op(
        "transpose",
        "t",
        vec![("x", P::N("x")), ("perm", P::I(vec![1, 0]))],
        &[("y", F32, &[2, 3])],
    )
    .output("y");
    let e = p
        .interp()
        .run(
            "main",
            &inputs(vec![("x", Tensor::from_f32(&[2, 3], arange(6)).unwrap())]),
        )
        .unwrap_err();
    assert!(
        matches!(&e, RuntimeError::OutputMismatch { op_name, .. } if op_name == "t"),
        "{e}"
    );
}

#[test]
fn multi_function_programs_share_weights() {
    let w: Vec<f16> = rand_vec(64 * 64, 60)
        .iter()
        .map(|&v| f16::from_f32(v))
        .collect();
    let wv = TensorValue::from_f16(&[64, 64], &w).unwrap();
    let mut a = Prog::new();
    a.input("x", F16, &[1, 64]);
    a.konst("w", wv.clone());
    a.op(
        "linear",
        "l",
        vec![("x", P::N("x")), ("weight", P::N("w"))],
        &[("y", F16, &[1, 64])],
    )
    .output("y");
    let mut b = Prog::new();
    b.input("x", F16, &[3, 64]);
    b.konst("w", wv);
    b.op(
        "linear",
        "l",
        vec![("x", P::N("x")), ("weight", P::N("w"))],
        &[("y", F16, &[3, 64])],
    )
    .output("y");
    let mut prog = Program::default();
    prog.functions.insert("decode_q1".into(), a.f.clone());
    prog.functions.insert("verify_q3".into(), b.f.clone());
    let mut be = CpuBackend::from_program(&prog).unwrap();
    assert_eq!(
        be.functions(),
        vec!["decode_q1".to_string(), "verify_q3".to_string()]
    );
    let sig = be.signature("verify_q3").unwrap();
    assert_eq!(
        sig.inputs[0].ty.as_ref().unwrap().static_shape(),
        Some(vec![3, 64])
    );
    assert_eq!(sig.outputs[0].name, "y");
    assert_eq!(
        sig,
        mil_runtime::signature_of(&b.f),
        "interpreter and declared signatures agree"
    );
    let it = be.interpreter();
    let w1 = it.constant("decode_q1", "w").unwrap().unwrap();
    let w2 = it.constant("verify_q3", "w").unwrap().unwrap();
    assert!(
        std::ptr::eq(w1.as_f16().unwrap().as_ptr(), w2.as_f16().unwrap().as_ptr()),
        "one copy of the shared weight"
    );
    let x = rand_vec(3 * 64, 61);
    let r3 = be
        .predict(
            "verify_q3",
            &inputs(vec![("x", Tensor::f16_from_f32(&[3, 64], &x).unwrap())]),
        )
        .unwrap();
    let r1 = be
        .predict(
            "decode_q1",
            &inputs(vec![(
                "x",
                Tensor::f16_from_f32(&[1, 64], &x[64..128]).unwrap(),
            )]),
        )
        .unwrap();
    // row 1 of the batched function equals the single-row function bit for bit
    assert_eq!(
        &r3["y"].as_f16().unwrap()[64..128],
        r1["y"].as_f16().unwrap()
    );
}

#[test]
fn states_are_read_written_and_returned() {
    let mut p = Prog::new();
    p.input("x", F16, &[1, 4]).state("cache", F16, &[2, 4]);
    p.op(
        "read_state",
        "rs0",
        vec![("input", P::N("cache"))],
        &[("c0", F16, &[2, 4])],
    );
    p.op(
        "slice_update",
        "upd",
        vec![
            ("x", P::N("c0")),
            ("update", P::N("x")),
            ("begin", P::I(vec![1, 0])),
            ("end", P::I(vec![2, 4])),
        ],
        &[("c1", F16, &[2, 4])],
    );
    p.op(
        "write_state",
        "ws",
        vec![("input", P::N("cache")), ("data", P::N("c1"))],
        &[],
    );
    p.op(
        "read_state",
        "rs1",
        vec![("input", P::N("cache"))],
        &[("c2", F16, &[2, 4])],
    );
    p.op(
        "reduce_sum",
        "sum",
        vec![("x", P::N("c2")), ("axes", P::I(vec![0]))],
        &[("out", F16, &[4])],
    )
    .output("out");
    let it = p.interp();
    let specs = it.inputs("main").unwrap();
    assert!(specs[1].is_state && specs[1].name == "cache");
    let cache = Tensor::f16_from_f32(&[2, 4], &[1.0, 2.0, 3.0, 4.0, 9.0, 9.0, 9.0, 9.0]).unwrap();
    let x = Tensor::f16_from_f32(&[1, 4], &[10.0, 20.0, 30.0, 40.0]).unwrap();
    let r = it
        .run("main", &inputs(vec![("x", x), ("cache", cache)]))
        .unwrap();
    assert_eq!(f32s(&r["out"]), vec![11.0, 22.0, 33.0, 44.0]);
    assert_eq!(
        f32s(&r["cache"]),
        vec![1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]
    );
}

#[test]
fn taps_return_internal_values_that_are_otherwise_freed() {
    let mut p = Prog::new();
    p.input("x", F32, &[3]);
    p.op(
        "mul",
        "logits",
        vec![("x", P::N("x")), ("y", P::F(2.0))],
        &[("logits", F32, &[3])],
    );
    p.op(
        "reduce_argmax",
        "am",
        vec![("x", P::N("logits")), ("axis", P::I1(0))],
        &[("tok", I32, &[])],
    )
    .output("tok");
    let it = p.interp();
    let x = inputs(vec![(
        "x",
        Tensor::from_f32(&[3], vec![0.5, 3.0, -1.0]).unwrap(),
    )]);
    let (out, taps) = it.run_with_taps("main", &x, &["logits", "x"]).unwrap();
    assert_eq!(ints(&out["tok"]), vec![1]);
    assert_eq!(f32s(&taps["logits"]), vec![1.0, 6.0, -2.0]);
    assert_eq!(f32s(&taps["x"]), vec![0.5, 3.0, -1.0]);
    let (out2, prof) = it.run_profiled("main", &x).unwrap();
    assert!(out2["tok"].bit_eq(&out["tok"]));
    assert_eq!(
        prof.by_op_type.keys().collect::<Vec<_>>(),
        vec!["mul", "reduce_argmax"]
    );
    assert!(prof.by_op_type.values().all(|(n, _)| *n == 1));
    let e = it.run_with_taps("main", &x, &["nope"]).unwrap_err();
    assert!(
        matches!(&e, RuntimeError::UnknownTap { name, .. } if name == "nope"),
        "{e}"
    );
}

#[test]
fn results_are_bit_identical_across_thread_counts() {
    let (c, o, s) = (96, 200, 5);
    let w: Vec<f16> = rand_vec(o * c, 70)
        .iter()
        .map(|&v| f16::from_f32(v))
        .collect();
    let mut p = Prog::new();
    p.input("x", F16, &[1, c, 1, s]);
    p.konst("w", TensorValue::from_f16(&[o, c, 1, 1], &w).unwrap());
    p.op(
        "conv",
        "cv",
        vec![("x", P::N("x")), ("weight", P::N("w"))],
        &[("y", F16, &[1, o, 1, s])],
    );
    p.op(
        "softmax",
        "sm",
        vec![("x", P::N("y")), ("axis", P::I1(1))],
        &[("z", F16, &[1, o, 1, s])],
    )
    .output("z");
    let it = p.interp();
    let x = inputs(vec![(
        "x",
        Tensor::f16_from_f32(&[1, c, 1, s], &rand_vec(c * s, 71)).unwrap(),
    )]);
    let run = |t: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap();
        pool.install(|| it.run("main", &x).unwrap().remove("z").unwrap())
    };
    let (a, b) = (run(1), run(2));
    assert!(a.bit_eq(&b));
}

#[test]
fn backends_load_from_disk_behind_the_trait() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/coreml/tiny_fp16.mlpackage");
    let mut be = mil_runtime::load_backend(
        mil_runtime::BackendKind::Cpu,
        &dir,
        &mil_runtime::LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(be.name(), "cpu-interpreter");
    let sig = be.signature("main").unwrap();
    let names: Vec<&str> = sig.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, vec!["input_ids", "mask"]);
    let ids = Tensor::from_i32(&[1, 8], vec![1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let mask = Tensor::f16_from_f32(&[1, 1, 8, 8], &[0.0; 64]).unwrap();
    let (out, taps) = be
        .predict_with_taps(
            "main",
            &inputs(vec![("input_ids", ids), ("mask", mask)]),
            &["logits"],
        )
        .unwrap();
    assert!(out["logits"].bit_eq(&taps["logits"]));
    #[cfg(not(all(target_vendor = "apple", feature = "coreml")))]
    assert!(matches!(
        mil_runtime::load_backend(
            mil_runtime::BackendKind::CoreMl,
            &dir,
            &mil_runtime::LoadOptions::default()
        ),
        Err(RuntimeError::Backend { .. })
    ));
}

#[test]
fn every_op_of_the_mil_catalog_is_supported() {
    let missing: Vec<&str> = mil::ops::catalog()
        .iter()
        .map(|d| d.name)
        .filter(|n| !mil_runtime::ops::is_supported(n))
        .collect();
    assert!(
        missing.is_empty(),
        "ops the builder can emit but the interpreter cannot run: {missing:?}"
    );
    assert!(mil::ops::catalog().len() >= 20);
}
