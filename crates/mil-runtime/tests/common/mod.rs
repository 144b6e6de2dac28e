//! A tiny program builder for the runtime tests (independent of `mil::builder`, so the tests
//! exercise exactly the IR that packages deserialize into: params bound by name to `const` ops).

#![allow(dead_code)]

use half::f16;
use mil::{
    Binding, DType, Dim, Function, NamedValueType, Operation, Program, TensorType, TensorValue,
    Value, ValueType,
};
use mil_runtime::{Interpreter, Tensor};
use std::collections::BTreeMap;

/// A parameter of [`Prog::op`].
pub enum P {
    /// A named value.
    N(&'static str),
    /// Several named values (variadic).
    Ns(Vec<&'static str>),
    /// int32 vector const.
    I(Vec<i32>),
    /// int32 scalar const.
    I1(i32),
    /// fp32 scalar const.
    F(f32),
    /// fp16 scalar const.
    H(f32),
    /// bool scalar const.
    B(bool),
    /// bool vector const.
    Bs(Vec<bool>),
    /// string scalar const.
    S(&'static str),
    /// any literal const.
    V(TensorValue),
    /// inline literal (constexpr style).
    Inline(TensorValue),
}

pub struct Prog {
    pub f: Function,
    n: usize,
}

pub fn tt(dtype: DType, shape: &[usize]) -> TensorType {
    TensorType::new(dtype, shape)
}

impl Prog {
    pub fn new() -> Prog {
        Prog {
            f: Function::new(mil::OPSET_IOS18),
            n: 0,
        }
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: &[usize]) -> &mut Self {
        self.f
            .inputs
            .push(NamedValueType::tensor(name, tt(dtype, shape)));
        self
    }

    pub fn input_flexible(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[Option<usize>],
    ) -> &mut Self {
        let shape = shape
            .iter()
            .map(|d| d.map_or(Dim::Unknown { variadic: false }, |n| Dim::Fixed(n as u64)))
            .collect();
        self.f
            .inputs
            .push(NamedValueType::tensor(name, TensorType { dtype, shape }));
        self
    }

    pub fn state(&mut self, name: &str, dtype: DType, shape: &[usize]) -> &mut Self {
        self.f.inputs.push(NamedValueType {
            name: name.into(),
            ty: ValueType::State(tt(dtype, shape)),
        });
        self
    }

    /// A const op named `name`.
    pub fn konst(&mut self, name: &str, v: TensorValue) -> &mut Self {
        let mut op = Operation::new("const", name);
        op.outputs
            .push(NamedValueType::tensor(name, v.ty().clone()));
        op.attributes.insert("val".into(), Value::Tensor(v));
        self.f.block.operations.push(op);
        self
    }

    fn lit(&mut self, v: TensorValue) -> Binding {
        self.n += 1;
        let name = format!("__const_{}", self.n);
        self.konst(&name, v);
        Binding::Name(name)
    }

    /// An op with declared outputs `(name, dtype, shape)`.
    pub fn op(
        &mut self,
        ty: &str,
        name: &str,
        params: Vec<(&str, P)>,
        outs: &[(&str, DType, &[usize])],
    ) -> &mut Self {
        let mut op = Operation::new(ty, name);
        for (pname, p) in params {
            let b = match p {
                P::N(n) => vec![Binding::Name(n.into())],
                P::Ns(ns) => ns.into_iter().map(|n| Binding::Name(n.into())).collect(),
                P::I(v) => vec![self.lit(TensorValue::from_i32(&[v.len()], &v).unwrap())],
                P::I1(v) => vec![self.lit(TensorValue::scalar_i32(v))],
                P::F(v) => vec![self.lit(TensorValue::scalar_f32(v))],
                P::H(v) => vec![self.lit(TensorValue::scalar_f16(f16::from_f32(v)))],
                P::B(v) => vec![self.lit(TensorValue::scalar_bool(v))],
                P::Bs(v) => vec![self.lit(TensorValue::from_bool(&[v.len()], &v).unwrap())],
                P::S(s) => vec![self.lit(TensorValue::scalar_str(s))],
                P::V(v) => vec![self.lit(v)],
                P::Inline(v) => vec![Binding::Value(Value::Tensor(v))],
            };
            op.inputs.insert(pname.to_string(), b);
        }
        for (n, d, s) in outs {
            op.outputs.push(NamedValueType::tensor(*n, tt(*d, s)));
        }
        self.f.block.operations.push(op);
        self
    }

    pub fn output(&mut self, name: &str) -> &mut Self {
        self.f.block.outputs.push(name.into());
        self
    }

    pub fn program(&self) -> Program {
        Program::single("main", self.f.clone())
    }

    pub fn interp(&self) -> Interpreter {
        Interpreter::new(&self.program()).unwrap()
    }

    /// Run `main` and return output `out`.
    pub fn run1(&self, inputs: Vec<(&str, Tensor)>, out: &str) -> Tensor {
        let m: BTreeMap<String, Tensor> = inputs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut r = self.interp().run("main", &m).unwrap();
        r.remove(out).unwrap()
    }
}

pub fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_f32().unwrap().into_owned()
}

pub fn ints(t: &Tensor) -> Vec<i64> {
    t.to_i64().unwrap()
}

pub fn arange(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32).collect()
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() <= tol,
            "element {i}: got {g}, want {w} (tol {tol})"
        );
    }
}
