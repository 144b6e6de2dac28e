//! 1×1 conv benchmarks (the shape of a Gemma 4 E2B MLP projection in decode): x [1, 1536, 1, 1],
//! weight [6144, 1536, 1, 1] stored fp16, or 4-bit palettized (group 32) and expanded at load;
//! on 1 and 2 rayon threads. Also the load-time expansion of the palettized weight, and a
//! prefill-shaped [1, 1536, 1, 64] GEMM.
//!
//! Run: `cargo bench -p mil-runtime --bench conv1x1`.

use criterion::{Criterion, criterion_group, criterion_main};
use half::f16;
use mil::value::pack_bits;
use mil::{
    Binding, DType, Function, NamedValueType, Operation, Program, TensorType, TensorValue, Value,
};
use mil_runtime::{Interpreter, Tensor};
use std::collections::BTreeMap;
use std::hint::black_box;

const C: usize = 1536;
const O: usize = 6144;

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn konst(name: &str, v: TensorValue) -> Operation {
    let mut op = Operation::new("const", name);
    op.outputs
        .push(NamedValueType::tensor(name, v.ty().clone()));
    op.attributes.insert("val".into(), Value::Tensor(v));
    op
}

fn conv_program(palettized: bool, s: usize) -> Program {
    let mut f = Function::new(mil::OPSET_IOS18);
    f.inputs.push(NamedValueType::tensor(
        "x",
        TensorType::new(DType::F16, &[1, C, 1, s]),
    ));
    if palettized {
        let idx: Vec<u8> = rand(O * C, 1)
            .iter()
            .map(|v| ((v + 1.0) * 8.0) as u8 % 16)
            .collect();
        let lut: Vec<f16> = rand(O / 32 * 16, 2)
            .iter()
            .map(|&v| f16::from_f32(v * 0.05))
            .collect();
        let mut op = Operation::new("constexpr_lut_to_dense", "w_pal");
        op.inputs.insert(
            "indices".into(),
            vec![Binding::Value(Value::Tensor(
                TensorValue::from_bytes(
                    TensorType::new(DType::U4, &[O, C, 1, 1]),
                    pack_bits(&idx, 4),
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ))],
        );
        op.inputs.insert(
            "lut".into(),
            vec![Binding::Value(Value::Tensor(
                TensorValue::from_f16(&[O / 32, 1, 1, 1, 16, 1], &lut)
                    .unwrap_or_else(|e| panic!("{e}")),
            ))],
        );
        op.outputs.push(NamedValueType::tensor(
            "w",
            TensorType::new(DType::F16, &[O, C, 1, 1]),
        ));
        f.block.operations.push(op);
    } else {
        let w: Vec<f16> = rand(O * C, 3)
            .iter()
            .map(|&v| f16::from_f32(v * 0.05))
            .collect();
        f.block.operations.push(konst(
            "w",
            TensorValue::from_f16(&[O, C, 1, 1], &w).unwrap_or_else(|e| panic!("{e}")),
        ));
    }
    let mut conv = Operation::new("conv", "proj");
    conv.inputs
        .insert("x".into(), vec![Binding::Name("x".into())]);
    conv.inputs
        .insert("weight".into(), vec![Binding::Name("w".into())]);
    conv.outputs.push(NamedValueType::tensor(
        "y",
        TensorType::new(DType::F16, &[1, O, 1, s]),
    ));
    f.block.operations.push(conv);
    f.block.outputs.push("y".into());
    Program::single("main", f)
}

/// Process CPU time (user + system) in seconds, from `/proc/self/stat` (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// Wall-clock figures are unreliable on a shared machine; also print CPU time per iteration on one
/// thread (what the kernel costs when it has a core to itself).
fn cpu_time_report() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    for (label, pal, s, iters) in [
        ("fp16_gemv", false, 1, 300),
        ("pal4_expanded_gemv", true, 1, 300),
        ("fp16_gemm_s64", false, 64, 20),
    ] {
        let it = Interpreter::new(&conv_program(pal, s)).unwrap_or_else(|e| panic!("{e}"));
        let x =
            Tensor::f16_from_f32(&[1, C, 1, s], &rand(C * s, 4)).unwrap_or_else(|e| panic!("{e}"));
        let inputs: BTreeMap<String, Tensor> = [("x".to_string(), x)].into_iter().collect();
        let (c0, w0) = (cpu_seconds(), std::time::Instant::now());
        for _ in 0..iters {
            pool.install(|| black_box(it.run("main", &inputs).unwrap_or_else(|e| panic!("{e}"))));
        }
        let (cpu, wall) = (cpu_seconds() - c0, w0.elapsed().as_secs_f64());
        println!(
            "cpu-time {label}/threads1: {:.3} ms cpu/iter, {:.3} ms wall/iter",
            cpu * 1e3 / iters as f64,
            wall * 1e3 / iters as f64
        );
    }
    let prog = conv_program(true, 1);
    let (c0, w0) = (cpu_seconds(), std::time::Instant::now());
    for _ in 0..5 {
        pool.install(|| black_box(Interpreter::new(&prog).unwrap_or_else(|e| panic!("{e}"))));
    }
    println!(
        "cpu-time pal4_load_expand/threads1: {:.1} ms cpu/iter, {:.1} ms wall/iter",
        (cpu_seconds() - c0) * 1e3 / 5.0,
        w0.elapsed().as_secs_f64() * 1e3 / 5.0
    );
}

fn bench(c: &mut Criterion) {
    cpu_time_report();
    let mut g = c.benchmark_group("conv1x1_6144x1536");
    g.sample_size(20);
    for (label, pal, s) in [
        ("fp16_gemv", false, 1),
        ("pal4_expanded_gemv", true, 1),
        ("fp16_gemm_s64", false, 64),
    ] {
        let it = Interpreter::new(&conv_program(pal, s)).unwrap_or_else(|e| panic!("{e}"));
        let x =
            Tensor::f16_from_f32(&[1, C, 1, s], &rand(C * s, 4)).unwrap_or_else(|e| panic!("{e}"));
        let inputs: BTreeMap<String, Tensor> = [("x".to_string(), x)].into_iter().collect();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            g.bench_function(format!("{label}/threads{threads}"), |b| {
                b.iter(|| {
                    pool.install(|| {
                        black_box(it.run("main", &inputs).unwrap_or_else(|e| panic!("{e}")))
                    })
                })
            });
        }
    }
    let prog = conv_program(true, 1);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        g.bench_function(format!("pal4_load_expand/threads{threads}"), |b| {
            b.iter(|| {
                pool.install(|| {
                    black_box(Interpreter::new(&prog).unwrap_or_else(|e| panic!("{e}")))
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
