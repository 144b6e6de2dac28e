//! Rebuilds the MIL programs of the coremltools-written sample packages (dumped by
//! `fixtures/gen_coremltools_samples.py`) as `mil::Program`s and checks that the validator accepts
//! them — real coremltools output, including omitted optional params, constexpr ops with inline
//! values, states, multi-output ops and multifunction programs. A corrupted copy must be rejected.

use mil::{
    Binding, DType, Dim, Function, NamedValueType, Operation, Program, TensorType, TensorValue,
    Value, ValueType, validate,
};
use serde_json::Value as J;

fn tensor_type(j: &J) -> TensorType {
    let a = j.as_array().unwrap();
    TensorType {
        dtype: DType::from_mil_name(a[0].as_str().unwrap()).unwrap(),
        shape: a[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| match d.as_u64() {
                Some(n) => Dim::Fixed(n),
                None => Dim::Unknown { variadic: false },
            })
            .collect(),
    }
}

fn value_type(j: &J) -> ValueType {
    if let Some(t) = j.get("tensor") {
        ValueType::Tensor(tensor_type(t))
    } else {
        ValueType::State(tensor_type(&j["state"]))
    }
}

fn value(j: &J) -> Value {
    let ty = match value_type(&j["type"]) {
        ValueType::Tensor(t) => t,
        other => panic!("non-tensor literal {other}"),
    };
    let n = ty.num_elements().unwrap();
    let nums = |k: &str| j.get(k).and_then(J::as_array);
    let t = if j.get("blob").is_some() {
        TensorValue::from_bytes(ty.clone(), vec![0u8; ty.dtype.storage_bytes(n).unwrap()]).unwrap()
    } else if let Some(h) = j.get("hex").and_then(J::as_str) {
        let bytes: Vec<u8> = (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect();
        TensorValue::from_bytes(ty, bytes).unwrap()
    } else if let Some(v) = nums("floats") {
        let v: Vec<f32> = v.iter().map(|x| x.as_f64().unwrap() as f32).collect();
        TensorValue::from_bytes(
            ty,
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        )
        .unwrap()
    } else if let Some(v) = nums("ints") {
        let v: Vec<i64> = v.iter().map(|x| x.as_i64().unwrap()).collect();
        let width = ty.dtype.bits().unwrap() / 8;
        let bytes: Vec<u8> = v
            .iter()
            .flat_map(|x| x.to_le_bytes()[..width].to_vec())
            .collect();
        TensorValue::from_bytes(ty, bytes).unwrap()
    } else if let Some(v) = nums("bools") {
        let bytes: Vec<u8> = v.iter().map(|b| u8::from(b.as_bool().unwrap())).collect();
        TensorValue::from_bytes(ty, bytes).unwrap()
    } else if let Some(v) = nums("strings") {
        let s: Vec<String> = v.iter().map(|s| s.as_str().unwrap().to_string()).collect();
        TensorValue::from_strings(&ty.static_shape().unwrap(), s).unwrap()
    } else {
        panic!("unsupported literal {j}")
    };
    Value::Tensor(t)
}

fn function(j: &J) -> Function {
    let mut f = Function::new(j["opset"].as_str().unwrap());
    for i in j["inputs"].as_array().unwrap() {
        f.inputs.push(NamedValueType {
            name: i[0].as_str().unwrap().into(),
            ty: value_type(&i[1]),
        });
    }
    for o in j["ops"].as_array().unwrap() {
        let mut op = Operation::new(o["type"].as_str().unwrap(), o["name"].as_str().unwrap());
        for (k, bs) in o["inputs"].as_object().unwrap() {
            let bindings = bs
                .as_array()
                .unwrap()
                .iter()
                .map(|b| match b.get("name") {
                    Some(n) => Binding::Name(n.as_str().unwrap().into()),
                    None => Binding::Value(value(&b["value"])),
                })
                .collect();
            op.inputs.insert(k.clone(), bindings);
        }
        for out in o["outputs"].as_array().unwrap() {
            op.outputs.push(NamedValueType {
                name: out[0].as_str().unwrap().into(),
                ty: value_type(&out[1]),
            });
        }
        if let Some(v) = o.get("val") {
            op.attributes.insert("val".into(), value(v));
        }
        f.block.operations.push(op);
    }
    f.block.outputs = j["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().into())
        .collect();
    f
}

fn programs() -> Vec<(String, Program)> {
    let root: J = serde_json::from_str(include_str!("fixtures/coremltools_samples.json")).unwrap();
    root.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let mut prog = Program {
                version: p["version"].as_i64().unwrap(),
                ..Program::default()
            };
            for (name, f) in p["functions"].as_object().unwrap() {
                prog.functions.insert(name.clone(), function(f));
            }
            (p["package"].as_str().unwrap().to_string(), prog)
        })
        .collect()
}

#[test]
fn coremltools_samples_validate() {
    let progs = programs();
    let names: Vec<&str> = progs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "multifunction.mlpackage",
            "stateful.mlpackage",
            "tiny_fp16.mlpackage",
            "tiny_int4blk.mlpackage",
            "tiny_pal4.mlpackage"
        ]
    );
    let mut n_ops = 0;
    for (name, p) in &progs {
        if let Err(e) = validate(p) {
            panic!("{name}: {e}");
        }
        n_ops += p
            .functions
            .values()
            .map(|f| f.block.operations.len())
            .sum::<usize>();
    }
    assert!(n_ops > 700, "{n_ops} ops");
    // the multifunction sample has two functions; stateful uses read/write_state and slice_update
    assert_eq!(progs[0].1.functions.len(), 2);
    let stateful = &progs[1].1.functions["main"];
    for op in ["read_state", "write_state", "slice_update", "identity"] {
        assert!(
            stateful.block.operations.iter().any(|o| o.op_type == op),
            "{op}"
        );
    }
}

#[test]
fn corrupted_sample_is_rejected() {
    let (_, mut p) = programs().swap_remove(4); // tiny_pal4
    let f = p.functions.get_mut("main").unwrap();
    // shrink the LUT of the first palettized weight: 8 palette entries for uint4 indices
    let op = f
        .block
        .operations
        .iter_mut()
        .find(|o| o.op_type == "constexpr_lut_to_dense")
        .unwrap();
    let lut =
        TensorValue::from_bytes(TensorType::new(DType::F16, &[6, 1, 8, 1]), vec![0u8; 96]).unwrap();
    op.inputs
        .insert("lut".into(), vec![Binding::Value(Value::Tensor(lut))]);
    let e = validate(&p).unwrap_err().to_string();
    assert!(
        e.starts_with("function `main`, op constexpr_lut_to_dense \"qkv_weight_to_fp16_palettized\": lut has 8 palette entries"),
        "{e}"
    );
}
