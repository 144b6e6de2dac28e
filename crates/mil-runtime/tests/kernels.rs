//! Per-kernel tests through the interpreter, with hand-computed or independently computed
//! expectations.

mod common;

use common::*;
use half::f16;
use mil::DType::{self, Bool, F16, F32, I32};
use mil::TensorValue;
use mil_runtime::Tensor;

fn t32(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_f32(shape, v).unwrap()
}

#[test]
fn add_broadcasts_numpy_style() {
    let mut p = Prog::new();
    p.input("x", F32, &[2, 1, 3]).input("y", F32, &[4, 1]);
    p.op(
        "add",
        "a",
        vec![("x", P::N("x")), ("y", P::N("y"))],
        &[("z", F32, &[2, 4, 3])],
    )
    .output("z");
    let x = arange(6);
    let y = vec![10.0, 20.0, 30.0, 40.0];
    let z = p.run1(
        vec![
            ("x", t32(&[2, 1, 3], x.clone())),
            ("y", t32(&[4, 1], y.clone())),
        ],
        "z",
    );
    let mut want = Vec::new();
    for i in 0..2 {
        for yj in &y {
            for k in 0..3 {
                want.push(f64::from(x[i * 3 + k] + yj));
            }
        }
    }
    assert_eq!(z.shape(), &[2, 4, 3]);
    assert_close(&f32s(&z), &want, 0.0);
}

#[test]
fn binary_family_and_comparisons() {
    let mut p = Prog::new();
    p.input("x", F32, &[4]).input("y", F32, &[4]);
    for (ty, out) in [
        ("sub", "s"),
        ("mul", "m"),
        ("real_div", "d"),
        ("pow", "p"),
        ("maximum", "mx"),
        ("minimum", "mn"),
    ] {
        p.op(
            ty,
            ty,
            vec![("x", P::N("x")), ("y", P::N("y"))],
            &[(out, F32, &[4])],
        )
        .output(out);
    }
    for (ty, out) in [("greater", "gt"), ("less_equal", "le"), ("equal", "eq")] {
        p.op(
            ty,
            ty,
            vec![("x", P::N("x")), ("y", P::N("y"))],
            &[(out, Bool, &[4])],
        )
        .output(out);
    }
    p.op(
        "logical_and",
        "la",
        vec![("x", P::N("gt")), ("y", P::N("eq"))],
        &[("and", Bool, &[4])],
    )
    .output("and");
    let x = vec![1.0, -2.0, 3.0, 4.0];
    let y = vec![2.0, 2.0, 3.0, 0.5];
    let mut inputs = std::collections::BTreeMap::new();
    inputs.insert("x".to_string(), t32(&[4], x));
    inputs.insert("y".to_string(), t32(&[4], y));
    let r = p.interp().run("main", &inputs).unwrap();
    assert_eq!(f32s(&r["s"]), vec![-1.0, -4.0, 0.0, 3.5]);
    assert_eq!(f32s(&r["m"]), vec![2.0, -4.0, 9.0, 2.0]);
    assert_eq!(f32s(&r["d"]), vec![0.5, -1.0, 1.0, 8.0]);
    assert_eq!(f32s(&r["p"]), vec![1.0, 4.0, 27.0, 2.0]);
    assert_eq!(f32s(&r["mx"]), vec![2.0, 2.0, 3.0, 4.0]);
    assert_eq!(f32s(&r["mn"]), vec![1.0, -2.0, 3.0, 0.5]);
    assert_eq!(r["gt"].as_bool().unwrap(), &[false, false, false, true]);
    assert_eq!(r["le"].as_bool().unwrap(), &[true, true, true, false]);
    assert_eq!(r["eq"].as_bool().unwrap(), &[false, false, true, false]);
    assert_eq!(r["and"].as_bool().unwrap(), &[false, false, false, false]);
}

#[test]
fn int32_arithmetic_stays_integer() {
    let mut p = Prog::new();
    p.input("x", I32, &[3]);
    p.op(
        "add",
        "a",
        vec![("x", P::N("x")), ("y", P::I1(100))],
        &[("y", I32, &[3])],
    )
    .output("y");
    p.op(
        "greater_equal",
        "g",
        vec![("x", P::N("x")), ("y", P::I1(0))],
        &[("ge", Bool, &[3])],
    )
    .output("ge");
    p.op(
        "select",
        "s",
        vec![("cond", P::N("ge")), ("a", P::N("x")), ("b", P::N("y"))],
        &[("sel", I32, &[3])],
    )
    .output("sel");
    let m = [(
        "x".to_string(),
        Tensor::from_i32(&[3], vec![5, -1, -100]).unwrap(),
    )]
    .into_iter()
    .collect();
    let r = p.interp().run("main", &m).unwrap();
    assert_eq!(r["y"].as_i32().unwrap(), &[105, 99, 0]);
    assert_eq!(r["sel"].as_i32().unwrap(), &[5, 99, 0]);
}

#[test]
fn fp16_rounds_once_per_op_output() {
    // 1 + 2^-11 is a tie between 1 and 1 + 2^-10 in fp16 → rounds to 1 (even). Two chained adds in
    // fp16 therefore stay at 1.0, while fp32 accumulates 1 + 2^-10.
    let eps = 2f32.powi(-11);
    for (dt, want) in [(F16, 1.0f32), (F32, 1.0 + 2.0 * eps)] {
        let mut p = Prog::new();
        p.input("x", dt, &[1]);
        let c = if dt == F16 { P::H(eps) } else { P::F(eps) };
        let c2 = if dt == F16 { P::H(eps) } else { P::F(eps) };
        p.op(
            "add",
            "a1",
            vec![("x", P::N("x")), ("y", c)],
            &[("t", dt, &[1])],
        );
        p.op(
            "add",
            "a2",
            vec![("x", P::N("t")), ("y", c2)],
            &[("z", dt, &[1])],
        )
        .output("z");
        let x = if dt == F16 {
            Tensor::f16_from_f32(&[1], &[1.0]).unwrap()
        } else {
            t32(&[1], vec![1.0])
        };
        let z = p.run1(vec![("x", x)], "z");
        assert_eq!(z.dtype(), dt);
        assert_eq!(f32s(&z), vec![want], "{dt}");
    }
    // a single op computes exactly, then rounds: 0.1 + 0.2 in fp16 = round16(f16(0.1) + f16(0.2))
    let mut p = Prog::new();
    p.input("x", F16, &[1]);
    p.op(
        "add",
        "a",
        vec![("x", P::N("x")), ("y", P::H(0.2))],
        &[("z", F16, &[1])],
    )
    .output("z");
    let z = p.run1(
        vec![("x", Tensor::f16_from_f32(&[1], &[0.1]).unwrap())],
        "z",
    );
    let want = f16::from_f32(f16::from_f32(0.1).to_f32() + f16::from_f32(0.2).to_f32());
    assert_eq!(z.as_f16().unwrap()[0].to_bits(), want.to_bits());
}

#[test]
fn reshape_zero_copies_from_the_right_and_infers_minus_one() {
    let mut p = Prog::new();
    p.input("x", F32, &[2, 3, 4]);
    // len(shape) = 2, rank 3: shape[0] = 0 pairs with x dim 1 (size 3) → [3, 8]
    p.op(
        "reshape",
        "r1",
        vec![("x", P::N("x")), ("shape", P::I(vec![0, -1]))],
        &[("a", F32, &[3, 8])],
    )
    .output("a");
    // [1, 0, -1]: shape[1] pairs with x dim 1 → [1, 3, 8]
    p.op(
        "reshape",
        "r2",
        vec![("x", P::N("x")), ("shape", P::I(vec![1, 0, -1]))],
        &[("b", F32, &[1, 3, 8])],
    )
    .output("b");
    // [0, 0, 0, 0] on rank 3: the first 0 has no partner → 1
    p.op(
        "reshape",
        "r3",
        vec![("x", P::N("x")), ("shape", P::I(vec![0, 0, 0, 0]))],
        &[("c", F32, &[1, 2, 3, 4])],
    )
    .output("c");
    // the coremltools docstring example: [2, 50] with [1, 0, -1, 0] → [1, 1, 2, 50]
    p.input("w", F32, &[2, 50]);
    p.op(
        "reshape",
        "r4",
        vec![("x", P::N("w")), ("shape", P::I(vec![1, 0, -1, 0]))],
        &[("d", F32, &[1, 1, 2, 50])],
    )
    .output("d");
    let inputs = [
        ("x".to_string(), t32(&[2, 3, 4], arange(24))),
        ("w".to_string(), t32(&[2, 50], arange(100))),
    ]
    .into_iter()
    .collect();
    let r = p.interp().run("main", &inputs).unwrap();
    assert_eq!(r["d"].shape(), &[1, 1, 2, 50]);
    assert_eq!(r["a"].shape(), &[3, 8]);
    assert_eq!(r["b"].shape(), &[1, 3, 8]);
    assert_eq!(r["c"].shape(), &[1, 2, 3, 4]);
    assert_eq!(f32s(&r["a"]), arange(24));
}

#[test]
fn reshape_rejects_bad_targets() {
    let mut p = Prog::new();
    p.input("x", F32, &[2, 3]);
    p.op(
        "reshape",
        "bad",
        vec![("x", P::N("x")), ("shape", P::I(vec![4, -1]))],
        &[("a", F32, &[4, 1])],
    )
    .output("a");
    let inputs = [("x".to_string(), t32(&[2, 3], arange(6)))]
        .into_iter()
        .collect();
    let e = p.interp().run("main", &inputs).unwrap_err();
    assert!(
        matches!(e, mil_runtime::RuntimeError::Op { ref op_name, .. } if op_name == "bad"),
        "{e}"
    );
}

#[test]
fn slice_by_index_masks_negative_indices_and_strides() {
    let x = arange(10); // [2, 5]
    let mut p = Prog::new();
    p.input("x", F32, &[2, 5]);
    // x[:, -4:-1:2] → columns 1, 3
    p.op(
        "slice_by_index",
        "s1",
        vec![
            ("x", P::N("x")),
            ("begin", P::I(vec![0, -4])),
            ("end", P::I(vec![0, -1])),
            ("stride", P::I(vec![1, 2])),
            ("end_mask", P::Bs(vec![true, false])),
        ],
        &[("a", F32, &[2, 2])],
    )
    .output("a");
    // x[-1, ::-1] with squeeze of axis 0 → last row reversed
    p.op(
        "slice_by_index",
        "s2",
        vec![
            ("x", P::N("x")),
            ("begin", P::I(vec![-1, 0])),
            ("end", P::I(vec![0, 0])),
            ("stride", P::I(vec![1, -1])),
            ("begin_mask", P::Bs(vec![false, true])),
            ("end_mask", P::Bs(vec![false, true])),
            ("squeeze_mask", P::Bs(vec![true, false])),
        ],
        &[("b", F32, &[5])],
    )
    .output("b");
    // out-of-range ends clamp: x[0:7, 2:100]
    p.op(
        "slice_by_index",
        "s3",
        vec![
            ("x", P::N("x")),
            ("begin", P::I(vec![0, 2])),
            ("end", P::I(vec![7, 100])),
        ],
        &[("c", F32, &[2, 3])],
    )
    .output("c");
    p.op(
        "slice_by_size",
        "s4",
        vec![
            ("x", P::N("x")),
            ("begin", P::I(vec![1, 1])),
            ("size", P::I(vec![-1, 2])),
        ],
        &[("d", F32, &[1, 2])],
    )
    .output("d");
    let inputs = [("x".to_string(), t32(&[2, 5], x))].into_iter().collect();
    let r = p.interp().run("main", &inputs).unwrap();
    assert_eq!(f32s(&r["a"]), vec![1.0, 3.0, 6.0, 8.0]);
    assert_eq!(f32s(&r["b"]), vec![9.0, 8.0, 7.0, 6.0, 5.0]);
    assert_eq!(f32s(&r["c"]), vec![2.0, 3.0, 4.0, 7.0, 8.0, 9.0]);
    assert_eq!(f32s(&r["d"]), vec![6.0, 7.0]);
}

#[test]
fn slice_update_writes_region() {
    let mut p = Prog::new();
    p.input("x", F32, &[2, 3]).input("u", F32, &[2, 1]);
    p.op(
        "slice_update",
        "su",
        vec![
            ("x", P::N("x")),
            ("update", P::N("u")),
            ("begin", P::I(vec![0, 1])),
            ("end", P::I(vec![2, 2])),
        ],
        &[("y", F32, &[2, 3])],
    )
    .output("y");
    let y = p.run1(
        vec![
            ("x", t32(&[2, 3], arange(6))),
            ("u", t32(&[2, 1], vec![-1.0, -2.0])),
        ],
        "y",
    );
    assert_eq!(f32s(&y), vec![0.0, -1.0, 2.0, 3.0, -2.0, 5.0]);
}

#[test]
fn negative_axes_across_ops() {
    let x = arange(6); // [2, 3]
    let mut p = Prog::new();
    p.input("x", F32, &[2, 3]);
    p.op(
        "softmax",
        "sm",
        vec![("x", P::N("x")), ("axis", P::I1(-2))],
        &[("sm", F32, &[2, 3])],
    )
    .output("sm");
    p.op(
        "reduce_sum",
        "rs",
        vec![
            ("x", P::N("x")),
            ("axes", P::I(vec![-1])),
            ("keep_dims", P::B(true)),
        ],
        &[("rs", F32, &[2, 1])],
    )
    .output("rs");
    p.op(
        "reduce_max",
        "rm",
        vec![("x", P::N("x")), ("axes", P::I(vec![-2]))],
        &[("rm", F32, &[3])],
    )
    .output("rm");
    p.op(
        "reduce_mean",
        "ra",
        vec![("x", P::N("x"))],
        &[("ra", F32, &[])],
    )
    .output("ra");
    p.op(
        "expand_dims",
        "ed",
        vec![("x", P::N("x")), ("axes", P::I(vec![-1, 0]))],
        &[("ed", F32, &[1, 2, 3, 1])],
    )
    .output("ed");
    p.op(
        "squeeze",
        "sq",
        vec![("x", P::N("ed")), ("axes", P::I(vec![-1]))],
        &[("sq", F32, &[1, 2, 3])],
    )
    .output("sq");
    p.op(
        "squeeze",
        "sq2",
        vec![("x", P::N("ed"))],
        &[("sq2", F32, &[2, 3])],
    )
    .output("sq2");
    p.op(
        "transpose",
        "tr",
        vec![("x", P::N("x")), ("perm", P::I(vec![-1, 0]))],
        &[("tr", F32, &[3, 2])],
    )
    .output("tr");
    p.op(
        "concat",
        "cc",
        vec![("values", P::Ns(vec!["x", "x"])), ("axis", P::I1(-1))],
        &[("cc", F32, &[2, 6])],
    )
    .output("cc");
    let inputs = [("x".to_string(), t32(&[2, 3], x))].into_iter().collect();
    let r = p.interp().run("main", &inputs).unwrap();
    // softmax over rows of each column: values differ by 3 → [1/(1+e^3), e^3/(1+e^3)]
    let lo = 1.0 / (1.0 + 3f64.exp());
    assert_close(
        &f32s(&r["sm"]),
        &[lo, lo, lo, 1.0 - lo, 1.0 - lo, 1.0 - lo],
        1e-6,
    );
    assert_eq!(f32s(&r["rs"]), vec![3.0, 12.0]);
    assert_eq!(f32s(&r["rm"]), vec![3.0, 4.0, 5.0]);
    assert_eq!(f32s(&r["ra"]), vec![2.5]);
    assert_eq!(r["sq"].shape(), &[1, 2, 3]);
    assert_eq!(r["sq2"].shape(), &[2, 3]);
    assert_eq!(f32s(&r["tr"]), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert_eq!(
        f32s(&r["cc"]),
        vec![0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 3.0, 4.0, 5.0]
    );
}

fn gelu_ref(x: f64, mode: &str) -> f64 {
    match mode {
        "TANH_APPROXIMATION" => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        }
        "SIGMOID_APPROXIMATION" => x / (1.0 + (-1.702 * x).exp()),
        _ => 0.0,
    }
}

#[test]
fn gelu_modes() {
    let xs: Vec<f32> = vec![-3.0, -1.0, -0.5, 0.0, 0.25, 1.0, 2.5];
    for mode in ["TANH_APPROXIMATION", "SIGMOID_APPROXIMATION", "EXACT"] {
        let mut p = Prog::new();
        p.input("x", F32, &[7]);
        p.op(
            "gelu",
            "g",
            vec![("x", P::N("x")), ("mode", P::S(mode))],
            &[("y", F32, &[7])],
        )
        .output("y");
        let y = f32s(&p.run1(vec![("x", t32(&[7], xs.clone()))], "y"));
        if mode == "EXACT" {
            // 0.5·x·(1 + erf(x/√2)) from tabulated Φ(x): Φ(1) = 0.8413447460685429, Φ(−0.5) = 0.3085375387259869
            assert!((f64::from(y[5]) - 0.841_344_746_068_542_9).abs() < 1e-6);
            assert!((f64::from(y[2]) - (-0.5 * 0.308_537_538_725_986_9)).abs() < 1e-6);
            assert!((f64::from(y[0]) - (-3.0 * 0.001_349_898_031_630_094_6)).abs() < 1e-6);
        } else {
            let want: Vec<f64> = xs.iter().map(|&x| gelu_ref(f64::from(x), mode)).collect();
            assert_close(&y, &want, 2e-6);
        }
    }
    // default mode is EXACT
    let mut p = Prog::new();
    p.input("x", F32, &[1]);
    p.op("gelu", "g", vec![("x", P::N("x"))], &[("y", F32, &[1])])
        .output("y");
    let y = f32s(&p.run1(vec![("x", t32(&[1], vec![1.0]))], "y"));
    assert!((f64::from(y[0]) - 0.841_344_746_068_542_9).abs() < 1e-6);
}

#[test]
fn unary_family() {
    let xs = vec![0.25f32, 1.0, 4.0, 2.5];
    let mut p = Prog::new();
    p.input("x", F32, &[4]);
    let names = [
        "sqrt", "rsqrt", "exp", "log", "tanh", "abs", "sigmoid", "silu", "relu", "sin", "cos",
        "square", "inverse", "floor", "ceil", "round", "sign", "erf",
    ];
    for n in names {
        p.op(n, n, vec![("x", P::N("x"))], &[(n, F32, &[4])])
            .output(n);
    }
    let r = p
        .interp()
        .run(
            "main",
            &[("x".to_string(), t32(&[4], xs.clone()))]
                .into_iter()
                .collect(),
        )
        .unwrap();
    for n in names {
        let want: Vec<f64> = xs
            .iter()
            .map(|&x| {
                let x = f64::from(x);
                match n {
                    "sqrt" => x.sqrt(),
                    "rsqrt" => 1.0 / (x + 1e-12).sqrt(),
                    "exp" => x.exp(),
                    "log" => x.ln(),
                    "tanh" => x.tanh(),
                    "abs" => x.abs(),
                    "sigmoid" => 1.0 / (1.0 + (-x).exp()),
                    "silu" => x / (1.0 + (-x).exp()),
                    "relu" => x.max(0.0),
                    "sin" => x.sin(),
                    "cos" => x.cos(),
                    "square" => x * x,
                    "inverse" => 1.0 / (x + 1e-4),
                    "floor" => x.floor(),
                    "ceil" => x.ceil(),
                    "round" => [0.0, 1.0, 4.0, 2.0]
                        [xs.iter().position(|&v| f64::from(v) == x).unwrap_or(0)],
                    "sign" => 1.0,
                    _ => [
                        0.276_326_390_168_236_9,
                        0.842_700_792_949_714_9,
                        0.999_999_984_582_742_1,
                        0.999_593_047_982_555,
                    ][xs.iter().position(|&v| f64::from(v) == x).unwrap_or(0)],
                }
            })
            .collect();
        let tol = want.iter().fold(0f64, |m, w| m.max(w.abs())) * 2e-7;
        assert_close(&f32s(&r[n]), &want, tol);
    }
}

#[test]
fn argmax_ties_pick_first_index() {
    let mut p = Prog::new();
    p.input("x", F16, &[2, 4]);
    p.op(
        "reduce_argmax",
        "am",
        vec![
            ("x", P::N("x")),
            ("axis", P::I1(-1)),
            ("keep_dims", P::B(false)),
            ("output_dtype", P::S("int32")),
        ],
        &[("i", I32, &[2])],
    )
    .output("i");
    p.op(
        "reduce_argmax",
        "am0",
        vec![
            ("x", P::N("x")),
            ("axis", P::I1(0)),
            ("keep_dims", P::B(true)),
        ],
        &[("j", I32, &[1, 4])],
    )
    .output("j");
    p.op(
        "reduce_argmin",
        "an",
        vec![("x", P::N("x"))],
        &[("k", I32, &[2])],
    )
    .output("k");
    let x = Tensor::f16_from_f32(&[2, 4], &[1.0, 5.0, 5.0, 2.0, -1.0, -1.0, -3.0, -3.0]).unwrap();
    let r = p
        .interp()
        .run("main", &[("x".to_string(), x)].into_iter().collect())
        .unwrap();
    assert_eq!(ints(&r["i"]), vec![1, 0]);
    assert_eq!(ints(&r["j"]), vec![0, 0, 0, 0]);
    assert_eq!(ints(&r["k"]), vec![0, 2]);
}

#[test]
fn layer_norm_matches_f64_reference() {
    let x = rand_vec(2 * 3 * 8, 1);
    let g = rand_vec(8, 2);
    let b = rand_vec(8, 3);
    let mut p = Prog::new();
    p.input("x", F32, &[2, 3, 8]);
    p.op(
        "layer_norm",
        "ln",
        vec![
            ("x", P::N("x")),
            ("axes", P::I(vec![-1])),
            ("gamma", P::V(TensorValue::from_f32(&[8], &g).unwrap())),
            ("beta", P::V(TensorValue::from_f32(&[8], &b).unwrap())),
            ("epsilon", P::F(1e-5)),
        ],
        &[("y", F32, &[2, 3, 8])],
    )
    .output("y");
    // over axes [0, 2] (non-trailing), no affine
    p.op(
        "layer_norm",
        "ln2",
        vec![("x", P::N("x")), ("axes", P::I(vec![0, 2]))],
        &[("z", F32, &[2, 3, 8])],
    )
    .output("z");
    let r = p
        .interp()
        .run(
            "main",
            &[("x".to_string(), t32(&[2, 3, 8], x.clone()))]
                .into_iter()
                .collect(),
        )
        .unwrap();
    let mut want = vec![0f64; x.len()];
    for row in 0..6 {
        let v: Vec<f64> = x[row * 8..row * 8 + 8]
            .iter()
            .map(|&a| f64::from(a))
            .collect();
        let m = v.iter().sum::<f64>() / 8.0;
        let var = v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / 8.0;
        for k in 0..8 {
            want[row * 8 + k] =
                (v[k] - m) / (var + 1e-5).sqrt() * f64::from(g[k]) + f64::from(b[k]);
        }
    }
    assert_close(&f32s(&r["y"]), &want, 1e-5);
    let mut want2 = vec![0f64; x.len()];
    for j in 0..3 {
        let idx: Vec<usize> = (0..2)
            .flat_map(|i| (0..8).map(move |k| i * 24 + j * 8 + k))
            .collect();
        let m = idx.iter().map(|&i| f64::from(x[i])).sum::<f64>() / 16.0;
        let var = idx
            .iter()
            .map(|&i| (f64::from(x[i]) - m).powi(2))
            .sum::<f64>()
            / 16.0;
        for &i in &idx {
            want2[i] = (f64::from(x[i]) - m) / (var + 1e-5).sqrt();
        }
    }
    assert_close(&f32s(&r["z"]), &want2, 1e-5);
}

#[test]
fn matmul_transposes_batch_broadcast_and_rank1() {
    let a = rand_vec(2 * 3 * 4, 4); // [2, 3, 4]
    let b = rand_vec(5 * 4, 5); // [5, 4] used with transpose_y → [4, 5]
    let v = rand_vec(4, 6);
    let mut p = Prog::new();
    p.input("a", F32, &[2, 3, 4])
        .input("b", F32, &[5, 4])
        .input("v", F32, &[4]);
    p.op(
        "matmul",
        "mm",
        vec![
            ("x", P::N("a")),
            ("y", P::N("b")),
            ("transpose_x", P::B(false)),
            ("transpose_y", P::B(true)),
        ],
        &[("c", F32, &[2, 3, 5])],
    )
    .output("c");
    p.op(
        "matmul",
        "mv",
        vec![("x", P::N("a")), ("y", P::N("v"))],
        &[("d", F32, &[2, 3])],
    )
    .output("d");
    p.op(
        "matmul",
        "vm",
        vec![
            ("x", P::N("v")),
            ("y", P::N("b")),
            ("transpose_y", P::B(true)),
        ],
        &[("e", F32, &[5])],
    )
    .output("e");
    // transpose_x: aᵀ per batch [2, 4, 3] · a [2, 3, 4] → [2, 4, 4]
    p.op(
        "matmul",
        "tx",
        vec![
            ("x", P::N("a")),
            ("y", P::N("a")),
            ("transpose_x", P::B(true)),
        ],
        &[("f", F32, &[2, 4, 4])],
    )
    .output("f");
    let r = p
        .interp()
        .run(
            "main",
            &[
                ("a".to_string(), t32(&[2, 3, 4], a.clone())),
                ("b".to_string(), t32(&[5, 4], b.clone())),
                ("v".to_string(), t32(&[4], v.clone())),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap();
    let dot = |f: &dyn Fn(usize) -> (f32, f32)| {
        (0..4)
            .map(f)
            .map(|(x, y)| f64::from(x) * f64::from(y))
            .sum::<f64>()
    };
    let mut c = Vec::new();
    for bi in 0..2 {
        for i in 0..3 {
            for j in 0..5 {
                c.push(dot(&|k| (a[bi * 12 + i * 4 + k], b[j * 4 + k])));
            }
        }
    }
    assert_close(&f32s(&r["c"]), &c, 1e-6);
    let d: Vec<f64> = (0..6).map(|r| dot(&|k| (a[r * 4 + k], v[k]))).collect();
    assert_close(&f32s(&r["d"]), &d, 1e-6);
    let e: Vec<f64> = (0..5).map(|j| dot(&|k| (v[k], b[j * 4 + k]))).collect();
    assert_close(&f32s(&r["e"]), &e, 1e-6);
    let mut f = Vec::new();
    for bi in 0..2 {
        for i in 0..4 {
            for j in 0..4 {
                f.push(
                    (0..3)
                        .map(|k| {
                            f64::from(a[bi * 12 + k * 4 + i]) * f64::from(a[bi * 12 + k * 4 + j])
                        })
                        .sum::<f64>(),
                );
            }
        }
    }
    assert_close(&f32s(&r["f"]), &f, 1e-6);
}

/// Naive f64 N-D conv reference for 2 spatial dims.
#[allow(clippy::too_many_arguments)]
fn conv2d_ref(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    stride: [usize; 2],
    dil: [usize; 2],
    pad: [usize; 4],
    groups: usize,
    os: [usize; 2],
) -> Vec<f64> {
    let [n, c, h, wd] = xs;
    let [o, cg, kh, kw] = ws;
    let og = o / groups;
    let mut out = vec![0f64; n * o * os[0] * os[1]];
    for b in 0..n {
        for oc in 0..o {
            let g = oc / og;
            for oy in 0..os[0] {
                for ox in 0..os[1] {
                    let mut s = 0f64;
                    for ic in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride[0] + ky * dil[0]) as i64 - pad[0] as i64;
                                let ix = (ox * stride[1] + kx * dil[1]) as i64 - pad[2] as i64;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                let xv =
                                    x[((b * c + g * cg + ic) * h + iy as usize) * wd + ix as usize];
                                let wv = w[((oc * cg + ic) * kh + ky) * kw + kx];
                                s += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    out[((b * o + oc) * os[0] + oy) * os[1] + ox] = s;
                }
            }
        }
    }
    out
}

#[test]
fn conv_strides_padding_dilation_groups() {
    let x = rand_vec(2 * 4 * 7 * 6, 7);
    let w = rand_vec(6 * 2 * 3 * 2, 8); // groups 2: C_in/g = 2
    let bias = rand_vec(6, 9);
    // custom pad (1,0,2,1), stride (2,1), dilation (1,2)
    let mut p = Prog::new();
    p.input("x", F32, &[2, 4, 7, 6]);
    p.konst("w", TensorValue::from_f32(&[6, 2, 3, 2], &w).unwrap());
    p.konst("bias", TensorValue::from_f32(&[6], &bias).unwrap());
    // H_out = floor((7+1+0-2-1)/2)+1 = 3; W_out = floor((6+2+1-2-1)/1)+1 = 7
    p.op(
        "conv",
        "c",
        vec![
            ("x", P::N("x")),
            ("weight", P::N("w")),
            ("bias", P::N("bias")),
            ("strides", P::I(vec![2, 1])),
            ("pad_type", P::S("custom")),
            ("pad", P::I(vec![1, 0, 2, 1])),
            ("dilations", P::I(vec![1, 2])),
            ("groups", P::I1(2)),
        ],
        &[("y", F32, &[2, 6, 3, 7])],
    )
    .output("y");
    // "same" with stride 2 on H=7: out 4, total pad = (4-1)*2+3-7 = 2 → (1,1); W=6, k=2: out 3, pad (6-1... )
    p.op(
        "conv",
        "same",
        vec![
            ("x", P::N("x")),
            ("weight", P::N("w")),
            ("strides", P::I(vec![2, 2])),
            ("pad_type", P::S("same")),
            ("groups", P::I1(2)),
        ],
        &[("z", F32, &[2, 6, 4, 3])],
    )
    .output("z");
    let r = p
        .interp()
        .run(
            "main",
            &[("x".to_string(), t32(&[2, 4, 7, 6], x.clone()))]
                .into_iter()
                .collect(),
        )
        .unwrap();
    let mut want = conv2d_ref(
        &x,
        [2, 4, 7, 6],
        &w,
        [6, 2, 3, 2],
        [2, 1],
        [1, 2],
        [1, 0, 2, 1],
        2,
        [3, 7],
    );
    for (i, v) in want.iter_mut().enumerate() {
        *v += f64::from(bias[(i / 21) % 6]);
    }
    assert_close(&f32s(&r["y"]), &want, 1e-5);
    // same: H total pad = (4-1)*2 + 3 - 7 = 2 → before 1; W: out 3, total = (3-1)*2 + 2 - 6 = 0
    let want_same = conv2d_ref(
        &x,
        [2, 4, 7, 6],
        &w,
        [6, 2, 3, 2],
        [2, 2],
        [1, 1],
        [1, 1, 0, 0],
        2,
        [4, 3],
    );
    assert_close(&f32s(&r["z"]), &want_same, 1e-5);
}

#[test]
fn pointwise_conv_equals_linear_with_fp16_weight() {
    // [1, C, 1, S] 1×1 conv with an fp16 weight vs linear on [S, C]
    let (c, o, s) = (40, 24, 3);
    let w: Vec<f16> = rand_vec(o * c, 10)
        .iter()
        .map(|&v| f16::from_f32(v))
        .collect();
    let x = rand_vec(c * s, 11);
    let mut p = Prog::new();
    p.input("x", F32, &[1, c, 1, s]);
    p.konst("w", TensorValue::from_f16(&[o, c, 1, 1], &w).unwrap());
    p.op(
        "conv",
        "cv",
        vec![("x", P::N("x")), ("weight", P::N("w"))],
        &[("y", F32, &[1, o, 1, s])],
    )
    .output("y");
    let y = f32s(&p.run1(vec![("x", t32(&[1, c, 1, s], x.clone()))], "y"));
    let mut want = vec![0f64; o * s];
    for oc in 0..o {
        for si in 0..s {
            want[oc * s + si] = (0..c)
                .map(|ci| f64::from(w[oc * c + ci].to_f32()) * f64::from(x[ci * s + si]))
                .sum();
        }
    }
    assert_close(&y, &want, 1e-5);
}

#[test]
fn linear_with_bias_fp16() {
    let (din, dout) = (16, 5);
    let w = rand_vec(dout * din, 12);
    let b = rand_vec(dout, 13);
    let x = rand_vec(3 * din, 14);
    let mut p = Prog::new();
    p.input("x", F16, &[3, din]);
    p.konst(
        "w",
        TensorValue::from_f16(
            &[dout, din],
            &w.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
        )
        .unwrap(),
    );
    p.konst(
        "b",
        TensorValue::from_f16(
            &[dout],
            &b.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
        )
        .unwrap(),
    );
    p.op(
        "linear",
        "l",
        vec![("x", P::N("x")), ("weight", P::N("w")), ("bias", P::N("b"))],
        &[("y", F16, &[3, dout])],
    )
    .output("y");
    let xh = Tensor::f16_from_f32(&[3, din], &x).unwrap();
    let xr = f32s(&xh);
    let y = p.run1(vec![("x", xh)], "y");
    assert_eq!(y.dtype(), F16);
    let h = |v: f32| f64::from(f16::from_f32(v).to_f32());
    for m in 0..3 {
        for o in 0..dout {
            let exact = (0..din)
                .map(|k| f64::from(xr[m * din + k]) * h(w[o * din + k]))
                .sum::<f64>()
                + h(b[o]);
            let got = f64::from(y.as_f16().unwrap()[m * dout + o].to_f32());
            // one rounding: within half an fp16 ulp of the exact value (plus f32 accumulation noise)
            let ulp = 2f64.powi(exact.abs().log2().floor() as i32 - 10);
            assert!((got - exact).abs() <= 0.5 * ulp + 1e-6, "{got} vs {exact}");
        }
    }
}

#[test]
fn split_concat_interleave_stack_tile_pad() {
    let mut p = Prog::new();
    p.input("x", F32, &[2, 4]);
    p.op(
        "split",
        "sp",
        vec![
            ("x", P::N("x")),
            ("split_sizes", P::I(vec![1, 3])),
            ("axis", P::I1(-1)),
        ],
        &[("s0", F32, &[2, 1]), ("s1", F32, &[2, 3])],
    )
    .output("s0")
    .output("s1");
    p.op(
        "split",
        "sp2",
        vec![
            ("x", P::N("x")),
            ("num_splits", P::I1(2)),
            ("axis", P::I1(1)),
        ],
        &[("h0", F32, &[2, 2]), ("h1", F32, &[2, 2])],
    )
    .output("h1");
    p.op(
        "concat",
        "ci",
        vec![
            ("values", P::Ns(vec!["h0", "h1"])),
            ("axis", P::I1(1)),
            ("interleave", P::B(true)),
        ],
        &[("ci", F32, &[2, 4])],
    )
    .output("ci");
    p.op(
        "stack",
        "st",
        vec![("values", P::Ns(vec!["h0", "h1"])), ("axis", P::I1(1))],
        &[("st", F32, &[2, 2, 2])],
    )
    .output("st");
    p.op(
        "tile",
        "tl",
        vec![("x", P::N("h0")), ("reps", P::I(vec![2, 1]))],
        &[("tl", F32, &[4, 2])],
    )
    .output("tl");
    p.op(
        "pad",
        "pd",
        vec![
            ("x", P::N("h0")),
            ("pad", P::I(vec![1, 0, 0, 2])),
            ("constant_val", P::F(-1.0)),
        ],
        &[("pd", F32, &[3, 4])],
    )
    .output("pd");
    p.op(
        "pad",
        "pr",
        vec![
            ("x", P::N("h0")),
            ("pad", P::I(vec![1, 1])),
            ("mode", P::S("reflect")),
        ],
        &[("pr", F32, &[2, 4])],
    )
    .output("pr");
    let r = p
        .interp()
        .run(
            "main",
            &[("x".to_string(), t32(&[2, 4], arange(8)))]
                .into_iter()
                .collect(),
        )
        .unwrap();
    assert_eq!(f32s(&r["s0"]), vec![0.0, 4.0]);
    assert_eq!(f32s(&r["s1"]), vec![1.0, 2.0, 3.0, 5.0, 6.0, 7.0]);
    assert_eq!(f32s(&r["h1"]), vec![2.0, 3.0, 6.0, 7.0]);
    // interleave: h0 = [[0,1],[4,5]], h1 = [[2,3],[6,7]] → per row [h0[0], h1[0], h0[1], h1[1]]
    assert_eq!(f32s(&r["ci"]), vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    assert_eq!(f32s(&r["st"]), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    assert_eq!(f32s(&r["tl"]), vec![0.0, 1.0, 4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
    assert_eq!(
        f32s(&r["pd"]),
        vec![
            -1.0, -1.0, -1.0, -1.0, 0.0, 1.0, -1.0, -1.0, 4.0, 5.0, -1.0, -1.0
        ]
    );
    assert_eq!(f32s(&r["pr"]), vec![1.0, 0.0, 1.0, 0.0, 5.0, 4.0, 5.0, 4.0]);
}

#[test]
fn gather_axis_batch_dims_and_negative_indices() {
    let mut p = Prog::new();
    p.input("x", F32, &[3, 4])
        .input("i", I32, &[2])
        .input("bi", I32, &[3, 2]);
    p.op(
        "gather",
        "g0",
        vec![("x", P::N("x")), ("indices", P::N("i")), ("axis", P::I1(0))],
        &[("g0", F32, &[2, 4])],
    )
    .output("g0");
    p.op(
        "gather",
        "g1",
        vec![
            ("x", P::N("x")),
            ("indices", P::N("i")),
            ("axis", P::I1(-1)),
        ],
        &[("g1", F32, &[3, 2])],
    )
    .output("g1");
    p.op(
        "gather",
        "gb",
        vec![
            ("x", P::N("x")),
            ("indices", P::N("bi")),
            ("axis", P::I1(1)),
            ("batch_dims", P::I1(1)),
        ],
        &[("gb", F32, &[3, 2])],
    )
    .output("gb");
    p.op(
        "gather_along_axis",
        "ga",
        vec![
            ("x", P::N("x")),
            ("indices", P::N("bi")),
            ("axis", P::I1(1)),
        ],
        &[("ga", F32, &[3, 2])],
    )
    .output("ga");
    let r = p
        .interp()
        .run(
            "main",
            &[
                ("x".to_string(), t32(&[3, 4], arange(12))),
                (
                    "i".to_string(),
                    Tensor::from_i32(&[2], vec![2, -3]).unwrap(),
                ),
                (
                    "bi".to_string(),
                    Tensor::from_i32(&[3, 2], vec![0, 3, 1, 1, -1, 2]).unwrap(),
                ),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap();
    assert_eq!(
        f32s(&r["g0"]),
        vec![8.0, 9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0]
    );
    assert_eq!(f32s(&r["g1"]), vec![2.0, 1.0, 6.0, 5.0, 10.0, 9.0]);
    assert_eq!(f32s(&r["gb"]), vec![0.0, 3.0, 5.0, 5.0, 11.0, 10.0]);
    assert_eq!(f32s(&r["ga"]), vec![0.0, 3.0, 5.0, 5.0, 11.0, 10.0]);
}

#[test]
fn gather_out_of_range_is_an_error() {
    let mut p = Prog::new();
    p.input("x", F32, &[3]).input("i", I32, &[1]);
    p.op(
        "gather",
        "g",
        vec![("x", P::N("x")), ("indices", P::N("i"))],
        &[("g", F32, &[1])],
    )
    .output("g");
    let e = p
        .interp()
        .run(
            "main",
            &[
                ("x".to_string(), t32(&[3], arange(3))),
                ("i".to_string(), Tensor::from_i32(&[1], vec![3]).unwrap()),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
}

#[test]
fn cast_select_clip_identity_fill() {
    let mut p = Prog::new();
    p.input("x", F32, &[4]);
    p.op(
        "cast",
        "c16",
        vec![("x", P::N("x")), ("dtype", P::S("int16"))],
        &[("i16", DType::I16, &[4])],
    )
    .output("i16");
    p.op(
        "cast",
        "c8",
        vec![("x", P::N("x")), ("dtype", P::S("uint8"))],
        &[("u8", DType::U8, &[4])],
    )
    .output("u8");
    p.op(
        "cast",
        "cb",
        vec![("x", P::N("x")), ("dtype", P::S("bool"))],
        &[("b", Bool, &[4])],
    )
    .output("b");
    p.op(
        "cast",
        "ch",
        vec![("x", P::N("x")), ("dtype", P::S("fp16"))],
        &[("h", F16, &[4])],
    )
    .output("h");
    p.op(
        "clip",
        "cl",
        vec![("x", P::N("x")), ("alpha", P::F(-1.0)), ("beta", P::F(2.0))],
        &[("cl", F32, &[4])],
    )
    .output("cl");
    p.op(
        "select",
        "se",
        vec![("cond", P::N("b")), ("a", P::N("x")), ("b", P::F(9.0))],
        &[("se", F32, &[4])],
    )
    .output("se");
    p.op(
        "identity",
        "id",
        vec![("x", P::N("x"))],
        &[("id", F32, &[4])],
    )
    .output("id");
    p.op(
        "fill",
        "fi",
        vec![("shape", P::I(vec![2, 2])), ("value", P::F(3.5))],
        &[("fi", F32, &[2, 2])],
    )
    .output("fi");
    let x = vec![-2.7, 0.0, 1.9, 300.2];
    let r = p
        .interp()
        .run(
            "main",
            &[("x".to_string(), t32(&[4], x.clone()))]
                .into_iter()
                .collect(),
        )
        .unwrap();
    assert_eq!(ints(&r["i16"]), vec![-2, 0, 1, 300]);
    assert_eq!(ints(&r["u8"]), vec![254, 0, 1, 44]);
    assert_eq!(r["b"].as_bool().unwrap(), &[true, false, true, true]);
    assert_eq!(
        f32s(&r["h"]),
        x.iter()
            .map(|&v| f16::from_f32(v).to_f32())
            .collect::<Vec<_>>()
    );
    assert_eq!(f32s(&r["cl"]), vec![-1.0, 0.0, 1.9, 2.0]);
    assert_eq!(f32s(&r["se"]), vec![-2.7, 9.0, 1.9, 300.2]);
    assert_eq!(f32s(&r["id"]), x);
    assert_eq!(f32s(&r["fi"]), vec![3.5; 4]);
}
