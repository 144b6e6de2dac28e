//! Replays the op invocations of `fixtures/coremltools_infer.json` (generated from coremltools 9.0
//! by `fixtures/gen_coremltools_infer.py`) through `mil::infer_op` and checks that we infer the same
//! output types, and reject what coremltools rejects. Cases with an `ours` field are deliberate,
//! documented deviations (we are stricter, or follow NumPy where coremltools does not).

mod common;

use common::{P, filled, infer};
use mil::{DType, Dim, TensorType, TensorValue, ValueType};
use serde_json::Value as J;

fn dtype(s: &str) -> DType {
    DType::from_mil_name(s).unwrap_or_else(|| panic!("unknown dtype {s}"))
}

fn shape(j: &J) -> Vec<usize> {
    j.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

fn param(j: &J) -> P {
    let a = j.as_array().unwrap();
    let d = a[1].as_str().unwrap();
    let s = shape(&a[2]);
    match a[0].as_str().unwrap() {
        "in" => P::In(TensorType::new(dtype(d), &s)),
        "const" => {
            let v = &a[3];
            let t = match (d, v) {
                ("string", J::String(s)) => TensorValue::scalar_str(s.clone()),
                ("int32", J::Array(vs)) => {
                    let v: Vec<i32> = vs.iter().map(|x| x.as_i64().unwrap() as i32).collect();
                    TensorValue::from_i32(&s, &v).unwrap()
                }
                ("bool", J::Array(vs)) => {
                    let v: Vec<bool> = vs.iter().map(|x| x.as_bool().unwrap()).collect();
                    TensorValue::from_bool(&s, &v).unwrap()
                }
                ("bool", J::Bool(b)) => TensorValue::scalar_bool(*b),
                (_, J::Number(n)) => filled(dtype(d), &s, n.as_f64().unwrap()),
                _ => panic!("unsupported const {j}"),
            };
            P::Const(t)
        }
        other => panic!("unknown param kind {other}"),
    }
}

fn expected(j: &J) -> Option<Vec<ValueType>> {
    if j.as_str() == Some("error") {
        return None;
    }
    Some(
        j.as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let o = o.as_array().unwrap();
                let dims = o[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| match d.as_u64() {
                        Some(n) => Dim::Fixed(n),
                        None => Dim::Unknown { variadic: false },
                    })
                    .collect();
                ValueType::Tensor(TensorType {
                    dtype: dtype(o[0].as_str().unwrap()),
                    shape: dims,
                })
            })
            .collect(),
    )
}

#[test]
fn inference_agrees_with_coremltools() {
    let text = include_str!("fixtures/coremltools_infer.json");
    let root: J = serde_json::from_str(text).unwrap();
    let cases = root["cases"].as_array().unwrap();
    assert!(cases.len() > 150, "fixture has {} cases", cases.len());
    let mut failures = Vec::new();
    let (mut ok, mut rejected, mut deviations) = (0, 0, 0);
    for (i, c) in cases.iter().enumerate() {
        let op = c["op"].as_str().unwrap();
        let params: Vec<(&str, Vec<P>)> = c["params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let vals = if v.as_array().unwrap()[0].is_array() {
                    v.as_array().unwrap().iter().map(param).collect()
                } else {
                    vec![param(v)]
                };
                (k.as_str(), vals)
            })
            .collect();
        let want = match c.get("ours") {
            Some(ours) => {
                deviations += 1;
                expected(ours)
            }
            None => expected(&c["expect"]),
        };
        let got = infer(op, &params);
        match (&want, &got) {
            (Some(w), Ok(g)) if w == g => ok += 1,
            (None, Err(_)) => rejected += 1,
            _ => failures.push(format!(
                "case {i} {op}: expected {want:?}, got {got:?}\n  {c}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(ok > 110 && rejected > 30, "ok {ok}, rejected {rejected}");
    assert_eq!(deviations, 5);
}
