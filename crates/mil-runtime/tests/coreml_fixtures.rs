//! Packages written by coremltools 9.0 from a tiny torch module (`fixtures/coreml/`, made by
//! `scripts/make_coreml_fixtures.py`) are read from disk with `mlpackage`, run by the interpreter
//! and compared with the torch fp32 reference outputs stored beside them.
//!
//! Bounds (max |got − ref| relative to max |ref| of each output):
//! * fp16 weights, fp16 compute: 1e-2 (fp16 storage of activations and weights);
//! * int4 per-block(32) and 4-bit palettized weights: the reference is the *unquantized* torch
//!   model, so the bound also covers quantisation error: 0.15 (measured 0.07–0.14).

use mil_runtime::{Backend, CpuBackend, LoadOptions, RuntimeError, Tensor};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/coreml")
}

fn st_tensor(st: &SafeTensors<'_>, name: &str) -> Tensor {
    let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let shape = v.shape().to_vec();
    let d = v.data();
    match v.dtype() {
        Dtype::F32 => Tensor::from_f32(
            &shape,
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
        .unwrap(),
        Dtype::I32 => Tensor::from_i32(
            &shape,
            d.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
        .unwrap(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    }
}

/// Run one function of a package on the stored inputs; return (output name, max abs diff, max |ref|).
fn check(
    be: &mut CpuBackend,
    function: &str,
    io: &SafeTensors<'_>,
    prefix: &str,
) -> Vec<(String, f64, f64)> {
    let sig = be.signature(function).unwrap();
    let mut inputs = BTreeMap::new();
    for i in &sig.inputs {
        let t = st_tensor(io, &format!("{prefix}input.{}", i.name));
        // the reference stores fp32; the package may declare fp16 inputs
        let want = i.ty.as_ref().map(|t| t.dtype).unwrap_or(t.dtype());
        let t = if want == mil::DType::F16 && t.dtype() == mil::DType::F32 {
            Tensor::f16_from_f32(t.shape(), &t.to_f32().unwrap()).unwrap()
        } else {
            t
        };
        inputs.insert(i.name.clone(), t);
    }
    let out = be.predict(function, &inputs).unwrap();
    let mut res = Vec::new();
    for o in &sig.outputs {
        let want = st_tensor(io, &format!("{prefix}output.{}", o.name));
        let got = &out[&o.name];
        assert_eq!(got.shape(), want.shape(), "{function}/{}", o.name);
        let (g, w) = (got.to_f32().unwrap(), want.to_f32().unwrap());
        let diff = g
            .iter()
            .zip(w.iter())
            .map(|(a, b)| f64::from((a - b).abs()))
            .fold(0.0, f64::max);
        let mag = w.iter().map(|b| f64::from(b.abs())).fold(0.0, f64::max);
        res.push((o.name.clone(), diff, mag));
    }
    res
}

fn run_fixture(name: &str, bound: f64) {
    let dir = fixtures();
    let pkg = dir.join(format!("{name}.mlpackage"));
    let bytes = std::fs::read(dir.join(format!("{name}.io.safetensors"))).unwrap();
    let io = SafeTensors::deserialize(&bytes).unwrap();
    let mut be = CpuBackend::load(&pkg, &LoadOptions::default()).unwrap();
    let functions = be.functions();
    for f in &functions {
        let prefix = if functions.len() > 1 {
            format!("{f}.")
        } else {
            String::new()
        };
        for (out, diff, mag) in check(&mut be, f, &io, &prefix) {
            println!(
                "{name}/{f}/{out}: max abs diff {diff:.3e}, max |ref| {mag:.3e}, relative {:.3e}",
                diff / mag
            );
            assert!(mag > 0.0);
            assert!(
                diff <= bound * mag,
                "{name}/{f}/{out}: max abs diff {diff} > {bound} × {mag}"
            );
        }
    }
}

#[test]
fn tiny_fp16_matches_torch() {
    run_fixture("tiny_fp16", 1e-2);
}

#[test]
fn tiny_pal4_matches_torch_within_quantization_error() {
    run_fixture("tiny_pal4", 0.15);
}

#[test]
fn tiny_int4blk_matches_torch_within_quantization_error() {
    run_fixture("tiny_int4blk", 0.15);
}

#[test]
fn tiny_multi_runs_both_functions() {
    let be = CpuBackend::load(
        &fixtures().join("tiny_multi.mlpackage"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        be.functions(),
        vec!["decode".to_string(), "main".to_string()]
    );
    run_fixture("tiny_multi", 1e-2);
}

#[test]
fn missing_package_is_a_load_error_naming_the_path() {
    let p = fixtures().join("does_not_exist.mlpackage");
    match CpuBackend::load(&p, &LoadOptions::default()) {
        Err(RuntimeError::Load { path, .. }) => assert!(path.ends_with("does_not_exist.mlpackage")),
        other => panic!("expected a load error, got {other:?}"),
    }
}

/// The weights the interpreter expands from coremltools' constexpr ops, compared with the fp16
/// weights they were made from (`X_palettized` / `X_quantized` ← const `X` of `tiny_fp16`).
/// Returns (name, relative MSE, max |error| / block bound) per weight.
fn expanded_vs_fp16(quantized: &str) -> Vec<(String, f64, f64)> {
    let dir = fixtures();
    let q = mlpackage::read_package(&dir.join(format!("{quantized}.mlpackage"))).unwrap();
    let f = mlpackage::read_package(&dir.join("tiny_fp16.mlpackage")).unwrap();
    let (qi, fi) = (
        mil_runtime::Interpreter::new(&q.program).unwrap(),
        mil_runtime::Interpreter::new(&f.program).unwrap(),
    );
    let mut res = Vec::new();
    for op in &q.program.functions["main"].block.operations {
        if !op.op_type.starts_with("constexpr_") {
            continue;
        }
        let out = &op.outputs[0].name;
        let base = out
            .trim_end_matches("_palettized")
            .trim_end_matches("_quantized");
        let deq = qi.constant("main", out).unwrap().unwrap();
        let orig = fi
            .constant("main", base)
            .unwrap()
            .unwrap_or_else(|| panic!("no const `{base}` in tiny_fp16"));
        assert_eq!(deq.shape(), orig.shape(), "{out}");
        assert_eq!(deq.dtype(), mil::DType::F16, "{out} keeps fp16");
        let (d, w) = (deq.to_f32().unwrap(), orig.to_f32().unwrap());
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = w
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let mse = d
            .iter()
            .zip(w.iter())
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / n;
        // per-element bound for symmetric int4 blocks of 32 along the last axis of [O, I(, 1, 1)]
        let cols = orig.shape()[1] * orig.shape()[2..].iter().product::<usize>();
        let mut worst = 0f64;
        for (drow, wrow) in d.chunks(cols).zip(w.chunks(cols)) {
            for (db, wb) in drow.chunks(32).zip(wrow.chunks(32)) {
                let s = f64::from(wb.iter().fold(0f32, |m, v| m.max(v.abs()))) / 7.0;
                for (a, b) in db.iter().zip(wb) {
                    let bound = 0.5 * s + f64::from(b.abs()) * 2f64.powi(-10) + 1e-7;
                    worst = worst.max(f64::from((a - b).abs()) / bound);
                }
            }
        }
        res.push((out.clone(), mse / var, worst));
    }
    res
}

#[test]
fn palettized_weights_expand_to_16_levels_close_to_the_originals() {
    let res = expanded_vs_fp16("tiny_pal4");
    assert!(res.len() >= 5, "{res:?}");
    for (name, rel_mse, _) in &res {
        println!("tiny_pal4 {name}: relative MSE {rel_mse:.4}");
        assert!(*rel_mse < 0.03, "{name}: relative MSE {rel_mse}");
    }
    // structure: every group of 32 output channels uses at most 16 distinct values
    let q = mlpackage::read_package(&fixtures().join("tiny_pal4.mlpackage")).unwrap();
    let qi = mil_runtime::Interpreter::new(&q.program).unwrap();
    for (name, _, _) in &res {
        let t = qi.constant("main", name).unwrap().unwrap();
        let per_row = t.len() / t.shape()[0];
        for g in t.as_f16().unwrap().chunks(32 * per_row) {
            let mut v: Vec<u16> = g.iter().map(|x| x.to_bits()).collect();
            v.sort_unstable();
            v.dedup();
            assert!(
                v.len() <= 16,
                "{name}: {} distinct values in a group",
                v.len()
            );
        }
    }
}

#[test]
fn int4_block_weights_are_within_half_a_step_of_the_originals() {
    let res = expanded_vs_fp16("tiny_int4blk");
    assert!(res.len() >= 5, "{res:?}");
    for (name, rel_mse, worst) in &res {
        println!("tiny_int4blk {name}: relative MSE {rel_mse:.4}, max error / (step/2) {worst:.3}");
        assert!(
            *worst <= 1.05,
            "{name}: error {worst} × half a quantisation step"
        );
    }
}

#[test]
fn multi_function_package_weights_are_loaded_once() {
    let pkg = mlpackage::read_package(&fixtures().join("tiny_multi.mlpackage")).unwrap();
    let it = mil_runtime::Interpreter::new(&pkg.program).unwrap();
    let mut shared = 0;
    for op in &pkg.program.functions["main"].block.operations {
        let name = &op
            .outputs
            .first()
            .map(|o| o.name.clone())
            .unwrap_or_default();
        let (Some(a), Ok(Some(b))) = (
            it.constant("main", name).unwrap(),
            it.constant("decode", name),
        ) else {
            continue;
        };
        if let (Some(x), Some(y)) = (a.as_f16(), b.as_f16())
            && x.len() * 2 >= 4096
        {
            assert!(
                std::ptr::eq(x.as_ptr(), y.as_ptr()),
                "`{name}` is held twice"
            );
            shared += 1;
        }
    }
    assert!(
        shared >= 5,
        "only {shared} large weights found in both functions"
    );
}

/// `tiny_state_multi` (coremltools' lowering of the reference's `kv_cache[.., pos:pos+T, ..] = k`
/// into `read_state → slice_update → write_state → read_state`, functions `infer` and
/// `prefill_b2`): one state made from `infer` is carried through a sequence of calls of both
/// functions and every output and the final states equal torch's (all values are exact in fp16).
#[test]
fn stateful_multi_function_package_carries_one_state_across_functions() {
    let dir = fixtures();
    let bytes = std::fs::read(dir.join("tiny_state_multi.io.safetensors")).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let calls: Vec<String> = meta.metadata().as_ref().unwrap()["calls"]
        .split(',')
        .map(String::from)
        .collect();
    let io = SafeTensors::deserialize(&bytes).unwrap();
    let mut be = CpuBackend::load(
        &dir.join("tiny_state_multi.mlpackage"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(be.functions(), ["infer", "prefill_b2"]);
    let mut state = be.make_state("infer").unwrap();
    assert_eq!(state.names(), ["kv_cache_full", "kv_cache_sliding"]);
    assert!(
        state
            .tensors()
            .values()
            .all(|t| t.to_f32().unwrap().iter().all(|&v| v == 0.0)),
        "a fresh state is zero"
    );
    assert_eq!(
        be.make_state("prefill_b2").unwrap().names(),
        state.names(),
        "both functions declare the same states"
    );
    assert!(calls.len() >= 6 && calls.iter().any(|c| c == "prefill_b2"));
    for (i, f) in calls.iter().enumerate() {
        let mut inputs = BTreeMap::new();
        for n in ["x", "current_pos", "ring_pos"] {
            let t = st_tensor(&io, &format!("call{i}.input.{n}"));
            let t = if n == "x" {
                Tensor::f16_from_f32(t.shape(), &t.to_f32().unwrap()).unwrap()
            } else {
                t
            };
            inputs.insert(n.to_string(), t);
        }
        let (outs, _) = be.predict_with_state(f, &inputs, &mut state, &[]).unwrap();
        assert_eq!(
            outs.keys().collect::<Vec<_>>(),
            ["out", "ring"],
            "states are not outputs"
        );
        for o in ["out", "ring"] {
            let want = st_tensor(&io, &format!("call{i}.output.{o}"));
            assert_eq!(outs[o].shape(), want.shape(), "call {i} {f} {o}");
            assert_eq!(
                outs[o].to_f32().unwrap(),
                want.to_f32().unwrap(),
                "call {i} ({f}) output {o}"
            );
        }
    }
    for s in ["kv_cache_sliding", "kv_cache_full"] {
        assert_eq!(
            state.get(s).unwrap().to_f32().unwrap(),
            st_tensor(&io, &format!("final.{s}")).to_f32().unwrap(),
            "final {s}"
        );
    }
    // a state of another schema is refused, naming the mismatch
    let other =
        CpuBackend::load(&dir.join("tiny_state.mlpackage"), &LoadOptions::default()).unwrap();
    let mut foreign = other.make_state("main").unwrap();
    let inputs: BTreeMap<String, Tensor> = BTreeMap::new();
    match be.predict_with_state("infer", &inputs, &mut foreign, &[]) {
        Err(RuntimeError::StateSchema { function, detail }) => {
            assert_eq!(function, "infer");
            assert!(detail.contains("cache"), "{detail}");
        }
        other => panic!("expected a state mismatch, got {other:?}"),
    }
    // a value of the wrong shape cannot be put into a state
    let bad = Tensor::f16_from_f32(&[1], &[0.0]).unwrap();
    assert!(matches!(
        state.set("kv_cache_full", bad),
        Err(RuntimeError::StateSchema { .. })
    ));
}

/// fp16 weights read from a package are views into its memory-mapped `weight.bin`: the
/// interpreter holds no copy of them (what lets it run full-size fp32 chunk sets).
#[test]
fn package_weights_stay_in_the_mapped_weight_file() {
    let pkg = mlpackage::read_package(&fixtures().join("tiny_fp16.mlpackage")).unwrap();
    let be = CpuBackend::from_program(&pkg.program).unwrap();
    let (fname, f) = pkg.program.functions.iter().next().unwrap();
    let mut mapped = 0;
    for op in f.block.operations.iter().filter(|o| o.op_type == "const") {
        let Some(out) = op.outputs.first() else {
            continue;
        };
        let Some(t) = be.interpreter().constant(fname, &out.name).unwrap() else {
            continue;
        };
        if let mil_runtime::tensor::TensorData::F16(s) = t.data()
            && t.len() >= 64
        {
            assert!(s.is_mapped(), "`{}` was copied", out.name);
            mapped += 1;
        }
    }
    assert!(mapped > 0, "no fp16 weight found");
}
