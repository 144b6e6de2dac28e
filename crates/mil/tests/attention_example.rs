//! End-to-end example: a tiny Gemma-style decoder layer (one decode step, NCHW activations) built
//! with the builder the way the exporter will — RMSNorm, palettized 1×1-conv projections, RoPE,
//! a KV shift register, GQA attention with an additive mask, a gelu-tanh MLP, a tanh logit
//! softcap, argmax + gather_along_axis, and a one-hot blend — then validated, optimised with the
//! default pipeline and snapshotted as MIL text.

use half::f16;
use mil::builder::{GeluMode, Split};
use mil::passes::Pipeline;
use mil::{
    DType, FunctionBuilder, MilError, ProgramBuilder, TensorType, TensorValue, Var, print_program,
};

const D: usize = 16; // hidden size
const H: usize = 2; // query heads
const KVH: usize = 1; // kv heads (GQA)
const DH: usize = 8; // head dim
const S: usize = 4; // kv window
const F: usize = 32; // mlp size
const V: usize = 24; // vocab

/// Deterministic small fp16 weights.
fn weight(shape: &[usize], seed: usize) -> TensorValue {
    let n: usize = shape.iter().product();
    let v: Vec<f16> = (0..n)
        .map(|i| f16::from_f32((((i * 7 + seed * 13) % 17) as f32 - 8.0) / 64.0))
        .collect();
    TensorValue::from_f16(shape, &v).unwrap()
}

/// A 4-bit palettized conv weight [o, i, 1, 1] with one LUT per 8 output channels.
fn palettized(o: usize, i: usize, seed: usize) -> (TensorValue, TensorValue) {
    let idx: Vec<u8> = (0..o * i).map(|k| ((k * 5 + seed) % 16) as u8).collect();
    let indices = TensorValue::from_bytes(
        TensorType::new(DType::U4, &[o, i, 1, 1]),
        mil::value::pack_bits(&idx, 4),
    )
    .unwrap();
    let lut: Vec<f16> = (0..(o / 8) * 16)
        .map(|k| f16::from_f32((k % 16) as f32 / 32.0 - 0.25))
        .collect();
    let lut = TensorValue::from_f16(&[o / 8, 1, 1, 1, 16, 1], &lut).unwrap();
    (indices, lut)
}

fn rms_norm(b: &mut FunctionBuilder, name: &str, x: &Var, seed: usize) -> Result<Var, MilError> {
    b.with_scope(name, |b| {
        let sq = b.mul("sq", x, x)?;
        let ms = b.reduce_mean("mean", &sq, &[1], true)?;
        let r = b.rsqrt("rsqrt", &ms, 1e-6)?;
        let n = b.mul("normed", x, &r)?;
        b.mul(
            "scaled",
            &n,
            weight(&[1, x.dim(1).unwrap_or(1), 1, 1], seed),
        )
    })
}

/// RoPE on [1, heads, 1, DH]: x·cos + rotate_half(x)·sin.
fn rope(
    b: &mut FunctionBuilder,
    name: &str,
    x: &Var,
    cos: &Var,
    sin: &Var,
) -> Result<Var, MilError> {
    b.with_scope(name, |b| {
        let halves = b.split("halves", x, Split::Num(2), -1)?;
        let neg = b.neg("neg", &halves[1])?;
        let rot = b.concat("rot", [&neg, &halves[0]], -1, false)?;
        let a = b.mul("xcos", x, cos)?;
        let c = b.mul("rsin", &rot, sin)?;
        b.add("out", &a, &c)
    })
}

fn decoder_layer(b: &mut FunctionBuilder) -> Result<(), MilError> {
    let x = b.input("hidden_states", TensorType::new(DType::F16, &[1, D, 1, 1]))?;
    let cos = b.input("cos", TensorType::new(DType::F16, &[1, 1, 1, DH]))?;
    let sin = b.input("sin", TensorType::new(DType::F16, &[1, 1, 1, DH]))?;
    let mask = b.input("mask", TensorType::new(DType::F16, &[1, 1, 1, S]))?;
    let k_cache = b.input("k_cache", TensorType::new(DType::F16, &[1, KVH, S, DH]))?;
    let v_cache = b.input("v_cache", TensorType::new(DType::F16, &[1, KVH, S, DH]))?;
    let slot = b.input("slot_onehot", TensorType::new(DType::F16, &[1, 1, S, 1]))?;

    let h = b.with_scope("layers.0", |b| -> Result<Var, MilError> {
        let xn = rms_norm(b, "input_layernorm", &x, 1)?;
        let attn_out = b.with_scope("self_attn", |b| -> Result<Var, MilError> {
            let (qi, ql) = palettized(H * DH, D, 3);
            let wq = b.lut_to_dense("q_proj_weight", qi, ql)?;
            let q = b.conv_1x1("q_proj", &xn, &wq, None)?;
            let k = b.conv_1x1("k_proj", &xn, weight(&[KVH * DH, D, 1, 1], 4), None)?;
            let v = b.conv_1x1("v_proj", &xn, weight(&[KVH * DH, D, 1, 1], 5), None)?;
            // [1, H·DH, 1, 1] → [1, H, 1, DH]
            let q = b.reshape("q_heads", &q, &[1, H as i32, DH as i32, 1])?;
            let q = b.transpose("q_t", &q, &[0, 1, 3, 2])?;
            let k = b.reshape("k_heads", &k, &[1, KVH as i32, DH as i32, 1])?;
            let k = b.transpose("k_t", &k, &[0, 1, 3, 2])?;
            let v = b.reshape("v_heads", &v, &[1, KVH as i32, DH as i32, 1])?;
            let v = b.transpose("v_t", &v, &[0, 1, 3, 2])?;
            let q = rope(b, "q_rope", &q, &cos, &sin)?;
            let k = rope(b, "k_rope", &k, &cos, &sin)?;
            // KV shift register: drop the oldest slot, append the new one
            let k_old = b.slice_axis("k_shift", &k_cache, 2, 1, None)?;
            let k_all = b.concat("k_all", [&k_old, &k], 2, false)?;
            let v_old = b.slice_axis("v_shift", &v_cache, 2, 1, None)?;
            let v_all = b.concat("v_all", [&v_old, &v], 2, false)?;
            b.output("k_cache_out", &k_all)?;
            b.output("v_cache_out", &v_all)?;
            // attention (kv heads broadcast over query heads)
            let scores = b.matmul("scores", &q, &k_all, false, true)?;
            let scores = b.add("masked", &scores, &mask)?;
            let probs = b.softmax("probs", &scores, -1)?;
            let ctx = b.matmul("ctx", &probs, &v_all, false, false)?;
            let ctx = b.transpose("ctx_t", &ctx, &[0, 1, 3, 2])?;
            let ctx = b.reshape("ctx_flat", &ctx, &[1, (H * DH) as i32, 1, 1])?;
            b.conv_1x1("o_proj", &ctx, weight(&[D, H * DH, 1, 1], 6), None)
        })?;
        let h = b.add("attn_residual", &x, &attn_out)?;
        let hn = rms_norm(b, "pre_feedforward_layernorm", &h, 2)?;
        let mlp = b.with_scope("mlp", |b| -> Result<Var, MilError> {
            let g = b.conv_1x1("gate_proj", &hn, weight(&[F, D, 1, 1], 7), None)?;
            let u = b.conv_1x1("up_proj", &hn, weight(&[F, D, 1, 1], 8), None)?;
            let g = b.gelu("act", &g, GeluMode::TanhApproximation)?;
            let gu = b.mul("gated", &g, &u)?;
            b.conv_1x1("down_proj", &gu, weight(&[D, F, 1, 1], 9), None)
        })?;
        b.add("mlp_residual", &h, &mlp)
    })?;
    b.output("hidden_states_out", &h)?;

    // head: logits with a tanh softcap, greedy token and its logit
    let logits = b.conv_1x1("lm_head", &h, weight(&[V, D, 1, 1], 10), None)?;
    let logits = b.with_scope("softcap", |b| {
        let t = b.mul("div", &logits, 1.0 / 30.0)?;
        let t = b.tanh("tanh", &t)?;
        b.mul("mul", &t, 30.0)
    })?;
    let flat = b.reshape("logits_flat", &logits, &[1, V as i32])?;
    let token = b.reduce_argmax("argmax", &flat, -1, true, DType::I32)?;
    let best = b.gather_along_axis("best_logit", &flat, &token, -1, false)?;
    b.output("token", &token)?;
    b.output("token_logit", &best)?;

    // one-hot blend: write the new k into the cache slot selected by `slot_onehot`
    let keep = b.sub("keep", 1.0, &slot)?;
    let kept = b.mul("kept", &k_cache, &keep)?;
    let k_last = b.slice_axis("k_last", &k_cache, 2, -1, None)?;
    let put = b.mul("put", &k_last, &slot)?;
    let blended = b.add("blended", &kept, &put)?;
    b.output("k_blend", &blended)?;
    Ok(())
}

#[test]
fn tiny_decoder_layer_end_to_end() {
    let mut pb = ProgramBuilder::new();
    pb.function("decode", decoder_layer).unwrap();
    let mut p = pb.build().unwrap();
    let f = &p.functions["decode"];
    let out_types: Vec<String> = f
        .output_types()
        .iter()
        .map(|t| {
            t.map(|t| format!("{} {}", t.name, t.ty))
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        out_types,
        [
            "k_cache_out tensor<fp16, [1, 1, 4, 8]>",
            "v_cache_out tensor<fp16, [1, 1, 4, 8]>",
            "hidden_states_out tensor<fp16, [1, 16, 1, 1]>",
            "token tensor<int32, [1, 1]>",
            "token_logit tensor<fp16, [1, 1]>",
            "k_blend tensor<fp16, [1, 1, 4, 8]>",
        ]
    );
    let before = p.functions["decode"].block.operations.len();
    let report = Pipeline::named("default").unwrap().run(&mut p).unwrap();
    let after = p.functions["decode"].block.operations.len();
    // nothing is dead; the duplicated scalar / list literals are merged
    assert_eq!(report.runs[0].changed, 0);
    assert!(report.runs[1].changed > 20, "{report:?}");
    assert_eq!(before - after, report.runs[1].changed);
    let text = print_program(&p);
    for needle in [
        "constexpr_lut_to_dense(indices = tensor<uint4, [16, 16, 1, 1]>",
        "gelu(mode = ",
        "string(\"TANH_APPROXIMATION\")",
        "tensor<fp16, [1, 2, 1, 4]> layers_0_self_attn_scores = matmul(",
        "} -> (k_cache_out, v_cache_out, hidden_states_out, token, token_logit, k_blend);",
    ] {
        assert!(text.contains(needle), "missing {needle:?}");
    }
    insta::assert_snapshot!("tiny_decoder_layer", text);
}
