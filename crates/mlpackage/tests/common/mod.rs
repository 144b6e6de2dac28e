//! Shared helpers for the integration tests: fixture paths and hand-built programs.
#![allow(dead_code)]

use half::f16;
use mil::value::pack_bits;
use mil::{Binding, DType, Function, NamedValueType, Operation, Program, TensorType, TensorValue};
use mil::{OPSET_IOS18, Value, ValueType};
use std::path::{Path, PathBuf};

/// `fixtures/coreml` of the workspace.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/coreml")
}

/// The coremltools-written fixture packages.
pub const FIXTURES: [&str; 6] = [
    "tiny_fp16",
    "tiny_pal4",
    "tiny_int4blk",
    "tiny_multi",
    "tiny_state",
    "tiny_state_multi",
];

/// Deterministic pseudo-random numbers (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-scale, scale).
    pub fn f32(&mut self, scale: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

pub fn f16_tensor(shape: &[usize], rng: &mut Rng, scale: f32) -> TensorValue {
    let n: usize = shape.iter().product();
    let v: Vec<f16> = (0..n).map(|_| f16::from_f32(rng.f32(scale))).collect();
    TensorValue::from_f16(shape, &v).unwrap()
}

pub fn tensor(dtype: DType, shape: &[usize]) -> ValueType {
    ValueType::Tensor(TensorType::new(dtype, shape))
}

/// A `const` op whose output has the op's name.
pub fn konst(name: &str, v: impl Into<Value>) -> Operation {
    let v: Value = v.into();
    let mut op = Operation::new("const", name);
    op.outputs.push(NamedValueType {
        name: name.into(),
        ty: v.value_type(),
    });
    op.attributes.insert("val".into(), v);
    op
}

/// An op with name bindings and one tensor output named like the op.
pub fn op(ty: &str, name: &str, inputs: &[(&str, &str)], out: ValueType) -> Operation {
    let mut op = Operation::new(ty, name);
    for (p, n) in inputs {
        op.inputs
            .insert((*p).into(), vec![Binding::Name((*n).into())]);
    }
    op.outputs.push(NamedValueType {
        name: name.into(),
        ty: out,
    });
    op
}

fn function(inputs: Vec<NamedValueType>, ops: Vec<Operation>, outputs: &[&str]) -> Function {
    let mut f = Function::new(OPSET_IOS18);
    f.inputs = inputs;
    f.block.operations = ops;
    f.block.outputs = outputs.iter().map(|s| s.to_string()).collect();
    f
}

/// fp16 program: linear → softmax → reshape → layer_norm → cast(fp32), plus a stateful accumulate.
/// Exercises blob fp16/int32 consts and immediate fp16 / int32 / bool / string scalars and vectors.
pub fn fp16_function(t: usize, seed: u64) -> Function {
    let mut rng = Rng::new(seed);
    let ops = vec![
        konst("w", f16_tensor(&[16, 32], &mut rng, 0.2)),
        konst("b", f16_tensor(&[16], &mut rng, 0.1)),
        op(
            "linear",
            "y",
            &[("x", "x"), ("weight", "w"), ("bias", "b")],
            tensor(DType::F16, &[1, t, 16]),
        ),
        konst("axis", TensorValue::scalar_i32(-1)),
        op(
            "softmax",
            "p",
            &[("x", "y"), ("axis", "axis")],
            tensor(DType::F16, &[1, t, 16]),
        ),
        konst(
            "shape",
            TensorValue::from_i32(&[2], &[t as i32, 16]).unwrap(),
        ),
        op(
            "reshape",
            "r",
            &[("x", "p"), ("shape", "shape")],
            tensor(DType::F16, &[t, 16]),
        ),
        konst("axes", TensorValue::from_i32(&[1], &[-1]).unwrap()),
        konst("gamma", f16_tensor(&[16], &mut rng, 1.0)),
        konst("beta", f16_tensor(&[16], &mut rng, 0.1)),
        konst("eps", TensorValue::scalar_f16(f16::from_f32(1e-5))),
        op(
            "layer_norm",
            "ln",
            &[
                ("x", "r"),
                ("axes", "axes"),
                ("gamma", "gamma"),
                ("beta", "beta"),
                ("epsilon", "eps"),
            ],
            tensor(DType::F16, &[t, 16]),
        ),
        konst("dtype", TensorValue::scalar_str("fp32")),
        op(
            "cast",
            "out",
            &[("x", "ln"), ("dtype", "dtype")],
            tensor(DType::F32, &[t, 16]),
        ),
        // int32 const with >= 10 elements goes to weight.bin at spec 9
        konst(
            "idx",
            TensorValue::from_i32(&[12], &(0..12).map(|i| i % 16).collect::<Vec<_>>()).unwrap(),
        ),
        konst("gaxis", TensorValue::scalar_i32(1)),
        konst("bdims", TensorValue::scalar_i32(0)),
        konst("validate", TensorValue::scalar_bool(false)),
        op(
            "gather",
            "picked",
            &[
                ("x", "ln"),
                ("indices", "idx"),
                ("axis", "gaxis"),
                ("batch_dims", "bdims"),
                ("validate_indices", "validate"),
            ],
            tensor(DType::F16, &[t, 12]),
        ),
    ];
    function(
        vec![NamedValueType::tensor(
            "x",
            TensorType::new(DType::F16, &[1, t, 32]),
        )],
        ops,
        &["out", "picked"],
    )
}

/// A function with an fp16 state: out = read_state(cache) after cache += x.
pub fn stateful_function() -> Function {
    let shape = [1, 4, 8];
    let state = NamedValueType {
        name: "cache".into(),
        ty: ValueType::State(TensorType::new(DType::F16, &shape)),
    };
    let mut write = Operation::new("write_state", "update_write_state");
    write
        .inputs
        .insert("input".into(), vec![Binding::Name("cache".into())]);
    write
        .inputs
        .insert("data".into(), vec![Binding::Name("sum".into())]);
    let ops = vec![
        op(
            "read_state",
            "old",
            &[("input", "cache")],
            tensor(DType::F16, &shape),
        ),
        op(
            "add",
            "sum",
            &[("x", "x"), ("y", "old")],
            tensor(DType::F16, &shape),
        ),
        write,
        op(
            "read_state",
            "out",
            &[("input", "cache")],
            tensor(DType::F16, &shape),
        ),
    ];
    function(
        vec![
            NamedValueType::tensor("x", TensorType::new(DType::F16, &shape)),
            state,
        ],
        ops,
        &["out"],
    )
}

/// uint4 indices [rows, cols] (packed) and an fp16 LUT [rows/32, 1, 16, 1].
pub fn palettized_weight(rows: usize, cols: usize, rng: &mut Rng) -> (TensorValue, TensorValue) {
    let idx: Vec<u8> = (0..rows * cols).map(|_| rng.below(16) as u8).collect();
    let indices = TensorValue::from_bytes(
        TensorType::new(DType::U4, &[rows, cols]),
        pack_bits(&idx, 4),
    )
    .unwrap();
    let groups = rows / 32;
    let mut lut = Vec::new();
    for _ in 0..groups {
        let mut v: Vec<f32> = (0..16).map(|_| rng.f32(0.1)).collect();
        v.sort_by(f32::total_cmp);
        lut.extend(v.into_iter().map(f16::from_f32));
    }
    (
        indices,
        TensorValue::from_f16(&[groups, 1, 16, 1], &lut).unwrap(),
    )
}

pub fn constexpr(
    ty: &str,
    name: &str,
    params: Vec<(&str, TensorValue)>,
    out: ValueType,
) -> Operation {
    let mut op = Operation::new(ty, name);
    for (p, v) in params {
        op.inputs.insert(p.into(), vec![Binding::Value(v.into())]);
    }
    op.outputs.push(NamedValueType {
        name: name.into(),
        ty: out,
    });
    op
}

/// linear(x, constexpr_lut_to_dense(uint4 indices, fp16 LUT), bias).
pub fn palettized_function(seed: u64) -> Function {
    let mut rng = Rng::new(seed);
    let (indices, lut) = palettized_weight(64, 32, &mut rng);
    let ops = vec![
        constexpr(
            "constexpr_lut_to_dense",
            "w_palettized",
            vec![("indices", indices), ("lut", lut)],
            tensor(DType::F16, &[64, 32]),
        ),
        konst("bias", f16_tensor(&[64], &mut rng, 0.1)),
        op(
            "linear",
            "y",
            &[("x", "x"), ("weight", "w_palettized"), ("bias", "bias")],
            tensor(DType::F16, &[1, 4, 64]),
        ),
    ];
    function(
        vec![NamedValueType::tensor(
            "x",
            TensorType::new(DType::F16, &[1, 4, 32]),
        )],
        ops,
        &["y"],
    )
}

/// linear(x, constexpr_blockwise_shift_scale(int4 data, fp16 scale per block of 32)).
pub fn int4_blockwise_function(seed: u64) -> Function {
    let mut rng = Rng::new(seed);
    let (rows, cols) = (64, 64);
    let q: Vec<u8> = (0..rows * cols)
        .map(|_| ((rng.below(15) as i8 - 7) as u8) & 0xf)
        .collect();
    let data = TensorValue::from_bytes(TensorType::new(DType::I4, &[rows, cols]), pack_bits(&q, 4))
        .unwrap();
    let scale: Vec<f16> = (0..rows * 2)
        .map(|_| f16::from_f32(0.01 + rng.f32(0.005)))
        .collect();
    let scale = TensorValue::from_f16(&[rows, 2], &scale).unwrap();
    let ops = vec![
        constexpr(
            "constexpr_blockwise_shift_scale",
            "w_dequant",
            vec![("data", data), ("scale", scale)],
            tensor(DType::F16, &[rows, cols]),
        ),
        konst("bias", f16_tensor(&[rows], &mut rng, 0.1)),
        op(
            "linear",
            "y",
            &[("x", "x"), ("weight", "w_dequant"), ("bias", "bias")],
            tensor(DType::F16, &[1, 4, rows]),
        ),
    ];
    function(
        vec![NamedValueType::tensor(
            "x",
            TensorType::new(DType::F16, &[1, 4, 64]),
        )],
        ops,
        &["y"],
    )
}

/// `main` (T=4) and `decode` (T=1): same weights (built separately, equal contents), so the
/// writer must store each blob once.
pub fn multifunction_program() -> Program {
    let mut p = Program::default();
    p.functions.insert("main".into(), fp16_function(4, 7));
    p.functions.insert("decode".into(), fp16_function(1, 7));
    p
}

pub fn single(f: Function) -> Program {
    Program::single("main", f)
}

/// Every file of a package directory with its bytes, sorted by relative path.
pub fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Copy a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}
