//! The graph idioms of the Core ML Gemma decode chunks (spec/coreml-llm-pipeline.md §2–3), in fp16:
//! RMSNorm written as LayerNorm over [x, −x], the sliding-window KV shift, the one-hot full-KV
//! blend, attention with an fp16 −inf mask, and the in-model argmax tail.

mod common;

use common::*;
use half::f16;
use mil::DType::{F16, I32};
use mil::TensorValue;
use mil_runtime::Tensor;
use std::collections::BTreeMap;

fn h(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

fn f16_inputs(v: Vec<(&str, &[usize], Vec<f32>)>) -> BTreeMap<String, Tensor> {
    v.into_iter()
        .map(|(n, s, d)| (n.to_string(), Tensor::f16_from_f32(s, &d).unwrap()))
        .collect()
}

#[test]
fn rms_norm_as_layer_norm_over_x_and_minus_x() {
    let d = 64;
    let x: Vec<f32> = rand_vec(d, 80).iter().map(|v| v * 4.0).collect();
    let gain = rand_vec(d, 81);
    let eps = 1e-6f32;
    let mut p = Prog::new();
    p.input("x", F16, &[1, 1, d]);
    p.konst("gain", TensorValue::from_f16(&[d], &h(&gain)).unwrap());
    p.op(
        "mul",
        "neg",
        vec![("x", P::N("x")), ("y", P::H(-1.0))],
        &[("nx", F16, &[1, 1, d])],
    );
    p.op(
        "concat",
        "cat",
        vec![("values", P::Ns(vec!["x", "nx"])), ("axis", P::I1(-1))],
        &[("xx", F16, &[1, 1, 2 * d])],
    );
    p.op(
        "layer_norm",
        "ln",
        vec![
            ("x", P::N("xx")),
            ("axes", P::I(vec![-1])),
            ("epsilon", P::H(eps)),
        ],
        &[("n2", F16, &[1, 1, 2 * d])],
    );
    p.op(
        "slice_by_index",
        "half",
        vec![
            ("x", P::N("n2")),
            ("begin", P::I(vec![0, 0, 0])),
            ("end", P::I(vec![1, 1, d as i32])),
            ("end_mask", P::Bs(vec![true, true, false])),
        ],
        &[("n", F16, &[1, 1, d])],
    );
    p.op(
        "mul",
        "scale",
        vec![("x", P::N("n")), ("y", P::N("gain"))],
        &[("y", F16, &[1, 1, d])],
    )
    .output("y");
    let xi = f16_inputs(vec![("x", &[1, 1, d], x)]);
    let xs = f32s(&xi["x"]);
    let y = p.interp().run("main", &xi).unwrap().remove("y").unwrap();
    let ms = xs.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / d as f64;
    let eps16 = f64::from(f16::from_f32(eps).to_f32());
    let want: Vec<f64> = (0..d)
        .map(|i| {
            f64::from(xs[i]) / (ms + eps16).sqrt() * f64::from(f16::from_f32(gain[i]).to_f32())
        })
        .collect();
    // three fp16 roundings (ln output, slice is exact, mul): a few fp16 ulps of values ≤ ~4
    assert_close(&f32s(&y), &want, 4e-3);
}

#[test]
fn sliding_kv_shift_and_full_kv_one_hot_blend() {
    let (w, c, hd, pos) = (4usize, 6usize, 3usize, 2usize);
    let k_sliding: Vec<f32> = (0..w * hd).map(|i| i as f32).collect();
    let k_full: Vec<f32> = (0..c * hd).map(|i| 100.0 + i as f32).collect();
    let k_new = vec![-1.0, -2.0, -3.0];
    let mut update = vec![0f32; c];
    update[pos] = 1.0;
    let mut p = Prog::new();
    p.input("ks", F16, &[1, 1, w, hd])
        .input("kf", F16, &[1, 1, c, hd])
        .input("k", F16, &[1, 1, 1, hd])
        .input("um", F16, &[1, 1, c, 1]);
    // sliding: drop the oldest row, append the new one
    p.op(
        "slice_by_index",
        "tail",
        vec![
            ("x", P::N("ks")),
            ("begin", P::I(vec![0, 0, 1, 0])),
            ("end", P::I(vec![1, 1, w as i32, hd as i32])),
            ("end_mask", P::Bs(vec![true, true, true, true])),
        ],
        &[("old", F16, &[1, 1, w - 1, hd])],
    );
    p.op(
        "concat",
        "shift",
        vec![("values", P::Ns(vec!["old", "k"])), ("axis", P::I1(2))],
        &[("ks_out", F16, &[1, 1, w, hd])],
    )
    .output("ks_out");
    // full: new = old·(1 − m) + k·m
    p.op(
        "sub",
        "inv",
        vec![("x", P::H(1.0)), ("y", P::N("um"))],
        &[("inv", F16, &[1, 1, c, 1])],
    );
    p.op(
        "mul",
        "keep",
        vec![("x", P::N("kf")), ("y", P::N("inv"))],
        &[("keep", F16, &[1, 1, c, hd])],
    );
    p.op(
        "mul",
        "put",
        vec![("x", P::N("k")), ("y", P::N("um"))],
        &[("put", F16, &[1, 1, c, hd])],
    );
    p.op(
        "add",
        "blend",
        vec![("x", P::N("keep")), ("y", P::N("put"))],
        &[("kf_out", F16, &[1, 1, c, hd])],
    )
    .output("kf_out");
    let r = p
        .interp()
        .run(
            "main",
            &f16_inputs(vec![
                ("ks", &[1, 1, w, hd], k_sliding.clone()),
                ("kf", &[1, 1, c, hd], k_full.clone()),
                ("k", &[1, 1, 1, hd], k_new.clone()),
                ("um", &[1, 1, c, 1], update),
            ]),
        )
        .unwrap();
    let mut want_s = k_sliding[hd..].to_vec();
    want_s.extend(&k_new);
    assert_eq!(f32s(&r["ks_out"]), want_s);
    let mut want_f = k_full.clone();
    want_f[pos * hd..(pos + 1) * hd].copy_from_slice(&k_new);
    assert_eq!(f32s(&r["kf_out"]), want_f);
}

#[test]
fn attention_with_fp16_negative_infinity_mask() {
    let (s, hd) = (1usize, 4usize);
    let ctx = 5usize;
    let q = rand_vec(s * hd, 90);
    let k = rand_vec(ctx * hd, 91);
    let v = rand_vec(ctx * hd, 92);
    // slots 0..=2 visible, 3..4 masked with fp16 −inf (bit pattern 0xFC00)
    let mask = vec![0.0, 0.0, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY];
    let mut p = Prog::new();
    p.input("q", F16, &[1, 1, s, hd])
        .input("k", F16, &[1, 1, ctx, hd])
        .input("v", F16, &[1, 1, ctx, hd])
        .input("m", F16, &[1, 1, s, ctx]);
    p.op(
        "matmul",
        "qk",
        vec![
            ("x", P::N("q")),
            ("y", P::N("k")),
            ("transpose_y", P::B(true)),
        ],
        &[("qk", F16, &[1, 1, s, ctx])],
    );
    p.op(
        "add",
        "masked",
        vec![("x", P::N("qk")), ("y", P::N("m"))],
        &[("sc", F16, &[1, 1, s, ctx])],
    );
    p.op(
        "softmax",
        "sm",
        vec![("x", P::N("sc")), ("axis", P::I1(-1))],
        &[("p", F16, &[1, 1, s, ctx])],
    )
    .output("p");
    p.op(
        "matmul",
        "pv",
        vec![("x", P::N("p")), ("y", P::N("v"))],
        &[("o", F16, &[1, 1, s, hd])],
    )
    .output("o");
    let xi = f16_inputs(vec![
        ("q", &[1, 1, s, hd], q),
        ("k", &[1, 1, ctx, hd], k),
        ("v", &[1, 1, ctx, hd], v),
        ("m", &[1, 1, s, ctx], mask),
    ]);
    assert_eq!(xi["m"].as_f16().unwrap()[3].to_bits(), 0xFC00);
    let (qs, ks, vs) = (f32s(&xi["q"]), f32s(&xi["k"]), f32s(&xi["v"]));
    let r = p.interp().run("main", &xi).unwrap();
    let pr = f32s(&r["p"]);
    assert_eq!(&pr[3..], &[0.0, 0.0]);
    // reference on the fp16-rounded scores
    let sc: Vec<f64> = (0..3)
        .map(|j| {
            f64::from(f16::from_f32((0..hd).map(|e| qs[e] * ks[j * hd + e]).sum::<f32>()).to_f32())
        })
        .collect();
    let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = sc.iter().map(|a| (a - m).exp()).sum();
    let want_p: Vec<f64> = sc
        .iter()
        .map(|a| (a - m).exp() / z)
        .chain([0.0, 0.0])
        .collect();
    assert_close(&pr, &want_p, 1e-3);
    let want_o: Vec<f64> = (0..hd)
        .map(|e| {
            (0..ctx)
                .map(|j| f64::from(pr[j]) * f64::from(vs[j * hd + e]))
                .sum()
        })
        .collect();
    assert_close(&f32s(&r["o"]), &want_o, 2e-3);
}

#[test]
fn in_model_argmax_tail_with_softcap() {
    let vocab = 300;
    let logits: Vec<f32> = rand_vec(vocab, 95).iter().map(|v| v * 60.0).collect();
    let cap = 30.0f32;
    let mut p = Prog::new();
    p.input("logits", F16, &[1, 1, vocab]);
    p.op(
        "mul",
        "div_cap",
        vec![("x", P::N("logits")), ("y", P::H(1.0 / cap))],
        &[("a", F16, &[1, 1, vocab])],
    );
    p.op(
        "tanh",
        "t",
        vec![("x", P::N("a"))],
        &[("b", F16, &[1, 1, vocab])],
    );
    p.op(
        "mul",
        "capped",
        vec![("x", P::N("b")), ("y", P::H(cap))],
        &[("capped", F16, &[1, 1, vocab])],
    );
    p.op(
        "squeeze",
        "sq",
        vec![("x", P::N("capped")), ("axes", P::I(vec![0]))],
        &[("c2", F16, &[1, vocab])],
    );
    p.op(
        "reduce_argmax",
        "am",
        vec![
            ("x", P::N("c2")),
            ("axis", P::I1(-1)),
            ("keep_dims", P::B(false)),
        ],
        &[("token_id", I32, &[1])],
    )
    .output("token_id");
    p.op(
        "expand_dims",
        "ed",
        vec![("x", P::N("token_id")), ("axes", P::I(vec![-1]))],
        &[("idx", I32, &[1, 1])],
    );
    p.op(
        "gather_along_axis",
        "pick",
        vec![
            ("x", P::N("c2")),
            ("indices", P::N("idx")),
            ("axis", P::I1(-1)),
        ],
        &[("tl", F16, &[1, 1])],
    );
    p.op(
        "squeeze",
        "sq2",
        vec![("x", P::N("tl")), ("axes", P::I(vec![-1]))],
        &[("token_logit", F16, &[1])],
    )
    .output("token_logit");
    let xi = f16_inputs(vec![("logits", &[1, 1, vocab], logits)]);
    let (out, taps) = p.interp().run_with_taps("main", &xi, &["capped"]).unwrap();
    let capped = f32s(&taps["capped"]);
    let best = capped
        .iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| {
            if v > b.1 { (i, v) } else { b }
        });
    assert_eq!(ints(&out["token_id"]), vec![best.0 as i64]);
    assert_eq!(f32s(&out["token_logit"]), vec![best.1]);
    assert!(capped.iter().all(|v| v.abs() <= cap));
}
