//! Palettization benchmarks (criterion).
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-pal cargo bench -p palettize --bench palettize
//! scripts/bench_palettize.sh        # + coremltools on the same weight, prints the ratios
//! ```
//!
//! * `pal4_g32_2048x1536/{1,2}threads`: fp16 [2048, 1536], N(0, 0.02) rounded to fp16, 4-bit,
//!   group 32 (64 LUTs). The weight is generated here with a fixed seed, or read from the raw
//!   little-endian fp16 file named by `PALETTIZE_BENCH_WEIGHT` (the bench script passes the exact
//!   numpy `default_rng(0)` weight coremltools is timed on).
//! * `e2b_layers/{1,2}threads`: one sliding and one KV-shared E2B decoder layer (every linear
//!   weight of `model.language_model.layers.{0,15}` in `spec/e2b-tensors.tsv`), all tensors and
//!   groups in one `palettize_batch`.
//! * `int8_rows_8192x1536/{1,2}threads`: per-row INT8 of an embedding slab.
//!
//! Throughput is reported in weights/s (criterion `Elements`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::f16;
use palettize::{LutConfig, WeightRef, palettize_batch, palettize_f16, quantize_rows, thread_pool};
use std::time::Duration;

/// SplitMix64 + Box–Muller: N(0, sigma) rounded to fp16, deterministic.
fn normal_f16(n: usize, sigma: f64, seed: u64) -> Vec<f16> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (next(), next());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            f16::from_f32((z * sigma) as f32)
        })
        .collect()
}

fn anchor_weight() -> Vec<f16> {
    let n = 2048 * 1536;
    if let Ok(path) = std::env::var("PALETTIZE_BENCH_WEIGHT") {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(bytes.len(), 2 * n, "{path}: expected fp16 [2048, 1536]");
        return bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]))
            .collect();
    }
    normal_f16(n, 0.02, 0)
}

fn bench_anchor(c: &mut Criterion) {
    let w = anchor_weight();
    let cfg = LutConfig::new(4, 32);
    let mut g = c.benchmark_group("pal4_g32_2048x1536");
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    g.throughput(Throughput::Elements(w.len() as u64));
    for threads in [1usize, 2] {
        let pool = thread_pool(threads).expect("thread pool");
        g.bench_with_input(BenchmarkId::new("threads", threads), &threads, |b, _| {
            b.iter(|| palettize_f16("w", &w, &[2048, 1536], &cfg, Some(&pool)).expect("palettize"))
        });
    }
    g.finish();
}

/// Linear weights of E2B layer 0 (sliding) and layer 15 (KV-shared: no k/v projections).
const E2B_LAYERS: &[(&str, [usize; 2])] = &[
    ("layers.0.self_attn.q_proj", [2048, 1536]),
    ("layers.0.self_attn.k_proj", [256, 1536]),
    ("layers.0.self_attn.v_proj", [256, 1536]),
    ("layers.0.self_attn.o_proj", [1536, 2048]),
    ("layers.0.mlp.gate_proj", [6144, 1536]),
    ("layers.0.mlp.up_proj", [6144, 1536]),
    ("layers.0.mlp.down_proj", [1536, 6144]),
    ("layers.0.per_layer_input_gate", [256, 1536]),
    ("layers.0.per_layer_projection", [1536, 256]),
    ("layers.15.self_attn.q_proj", [2048, 1536]),
    ("layers.15.self_attn.o_proj", [1536, 2048]),
    ("layers.15.mlp.gate_proj", [12288, 1536]),
    ("layers.15.mlp.up_proj", [12288, 1536]),
    ("layers.15.mlp.down_proj", [1536, 12288]),
    ("layers.15.per_layer_input_gate", [256, 1536]),
    ("layers.15.per_layer_projection", [1536, 256]),
];

fn bench_e2b(c: &mut Criterion) {
    let data: Vec<Vec<f16>> = E2B_LAYERS
        .iter()
        .enumerate()
        .map(|(i, (_, s))| normal_f16(s[0] * s[1], 0.02, 100 + i as u64))
        .collect();
    let refs: Vec<WeightRef<'_>> = E2B_LAYERS
        .iter()
        .zip(&data)
        .map(|((name, shape), d)| WeightRef {
            name,
            shape,
            data: d,
        })
        .collect();
    let total: usize = data.iter().map(Vec::len).sum();
    let cfg = LutConfig::new(4, 32);
    let mut g = c.benchmark_group("e2b_layers");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(total as u64));
    for threads in [1usize, 2] {
        let pool = thread_pool(threads).expect("thread pool");
        g.bench_with_input(BenchmarkId::new("threads", threads), &threads, |b, _| {
            b.iter(|| {
                let out = palettize_batch(&refs, &cfg, Some(&pool));
                assert!(out.iter().all(Result::is_ok));
                out
            })
        });
    }
    g.finish();
}

fn bench_int8(c: &mut Criterion) {
    let (rows, cols) = (8192usize, 1536usize);
    let w: Vec<f32> = normal_f16(rows * cols, 0.03, 7)
        .iter()
        .map(|v| v.to_f32())
        .collect();
    let mut g = c.benchmark_group("int8_rows_8192x1536");
    g.sample_size(20);
    g.throughput(Throughput::Elements((rows * cols) as u64));
    for threads in [1usize, 2] {
        let pool = thread_pool(threads).expect("thread pool");
        g.bench_with_input(BenchmarkId::new("threads", threads), &threads, |b, _| {
            b.iter(|| quantize_rows("emb", &w, rows, cols, Some(&pool)).expect("int8"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_anchor, bench_e2b, bench_int8);
criterion_main!(benches);
