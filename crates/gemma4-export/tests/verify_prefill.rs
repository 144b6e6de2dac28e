//! `verify_qK` and prefill, run through the CPU interpreter:
//!
//! * verify vs serial decode: from the same KV state, K draft tokens through `verify_qK` give the
//!   per-position hidden states, logits and argmax of K serial `decode_q1` steps, and the returned
//!   `new_K_*` / `new_V_*` rows equal what decode wrote into its caches (in memory, on every variant
//!   and GQA fixture; and from packages on disk);
//! * prefill on prompts longer than the sliding window, driven by the product's host
//!   (`mil_runtime::chunkset::Session::prefill`): the last position's logits equal the HF golden,
//!   and the KV written back lets `decode_q1` continue on the golden decode logits.

mod common;

use common::{Exact, Host, Kv, Model, argmax, max_diff, root, values, weights};
use gemma4_export::build::{NoProgress, build};
use gemma4_export::emit::emit_function;
use gemma4_export::plan::ChunkPlan;
use gemma4_export::{Compression, FunctionKind, LayerKind, Precision, Variant};
use mil_runtime::chunkset::ChunkSet;
use mil_runtime::{Backend, CpuBackend};
use std::path::Path;

const K: usize = 3;
/// fp32 verify vs serial decode: equal up to summation order (GEMM over K columns vs GEMV).
const TOL_LOGITS: f32 = 5e-4;
const TOL_HIDDEN: f32 = 5e-4;
const TOL_ROWS: f32 = 5e-5;

fn build_set(model: &str, variant: Variant, fp32: bool, functions: &str, out: &Path) {
    let opts = common::opts(model, out)
        .variant(variant)
        .precision(Precision::from_fp32(fp32))
        .compression(Compression::Dense)
        .functions(functions.parse().unwrap());
    build(&opts, &NoProgress).unwrap();
}

/// Every chunk with `decode_q1` + `verify_qK` emitted in memory (no passes) from shared weights.
fn in_memory<'m>(model: &'m Model, plan: ChunkPlan) -> Host<'m> {
    let chunks = plan
        .chunks
        .iter()
        .map(|c| {
            let mut w = weights(&model.ckpt, plan.fp32, Compression::Dense);
            let mut emit = |kind| emit_function(&plan, c, kind, &mut w).unwrap();
            let decode = FunctionKind::Decode;
            let mut p = mil::Program::single(decode.name(), emit(decode));
            let verify = FunctionKind::Verify { k: K };
            p.functions.insert(verify.name(), emit(verify));
            let b: Box<dyn Backend> = Box::new(CpuBackend::from_program(&p).unwrap());
            (c.name.clone(), b)
        })
        .collect();
    Host::new(model, plan, chunks)
}

/// Figures of one verify-vs-serial comparison.
#[derive(Debug)]
struct Cmp {
    logits: f32,
    hidden: f32,
    rows: f32,
    top1: usize,
}

/// Decode `prefix` serially, then compare `verify_qK` on `drafts` with serial decode of `drafts`.
/// With `emulate_11c`, serial step `j` hides the `K − 1 − j` oldest shift-register slots, i.e. what
/// the verify block's shift by K drops before its queries run.
fn verify_vs_serial(host: &mut Host<'_>, prefix: &[u32], drafts: &[u32], emulate_11c: bool) -> Cmp {
    let lay = host.model.layout.clone();
    let mut kv = Kv::new();
    for (p, &t) in prefix.iter().enumerate() {
        host.decode(&mut kv, p, t);
    }
    let p0 = prefix.len();
    let ver = host.verify(&kv, p0, drafts);
    let mut serial_kv = kv.clone();
    let (h, v) = (lay.hidden, lay.vocab);
    let nchunks = host.chunks.len();
    let final_gain = host.model.ckpt.load_f32("norm.weight").unwrap().1;
    let mut cmp = Cmp {
        logits: 0.0,
        hidden: 0.0,
        rows: 0.0,
        top1: 0,
    };
    for (j, &t) in drafts.iter().enumerate() {
        host.hide_oldest = if emulate_11c { drafts.len() - 1 - j } else { 0 };
        let step = host.decode(&mut serial_kv, p0 + j, t);
        host.hide_oldest = 0;
        let vl = &ver.logits[j * v..(j + 1) * v];
        cmp.logits = cmp.logits.max(max_diff(vl, &step.logits));
        assert_eq!(
            ver.tokens[j] as usize,
            argmax(vl),
            "token_ids[{j}] vs its logits"
        );
        cmp.top1 += usize::from(ver.tokens[j] == step.token);
        for ci in 0..nchunks {
            let vh = &ver.hidden[ci][j * h..(j + 1) * h];
            let want: Vec<f32> = if ci + 1 == nchunks {
                // verify's head hidden is pre-final-norm; decode's is post-norm
                let ms = vh.iter().map(|x| x * x).sum::<f32>() / h as f32;
                let r = 1.0 / (ms + lay.rms_norm_eps as f32).sqrt();
                vh.iter().zip(&final_gain).map(|(x, g)| x * r * g).collect()
            } else {
                vh.to_vec()
            };
            cmp.hidden = cmp.hidden.max(max_diff(&want, &step.hidden[ci]));
        }
        // new rows vs the rows decode wrote
        for (ci, chunk) in host.plan.chunks.iter().enumerate() {
            for s in &chunk.kv_slots {
                let info = &lay.layers[s.layer];
                let (label, policy, kvh) = match s.kind {
                    LayerKind::Sliding => ("sliding", host.plan.sliding_cache, info.kv_heads),
                    LayerKind::Full => ("full", host.plan.full_cache, info.kv_heads),
                };
                let tlen = policy.len();
                let row = match policy {
                    gemma4_export::CachePolicy::ShiftRegister { .. } => tlen - 1,
                    gemma4_export::CachePolicy::Positional { .. } => p0 + j,
                    gemma4_export::CachePolicy::Ring { len } => (p0 + j) % len,
                };
                let maxhd = lay.max_head_dim();
                let d = info.head_dim;
                for which in ["K", "V"] {
                    let cache = values(&step.caches[ci][&format!("{which}_{label}_out")]);
                    let new = &ver.outputs[ci][&format!("new_{which}_{label}")];
                    let nv = values(new);
                    for hh in 0..kvh {
                        let got: Vec<f32> = (0..d)
                            .map(|c| nv[((s.slot * kvh + hh) * K + j) * d + c])
                            .collect();
                        let want: Vec<f32> = (0..d)
                            .map(|c| cache[((s.slot * kvh + hh) * tlen + row) * maxhd + c])
                            .collect();
                        cmp.rows = cmp.rows.max(max_diff(&got, &want));
                    }
                }
            }
        }
    }
    cmp
}

/// The golden prompt followed by its greedy continuation (a plausible token stream).
fn prompt(model: &str) -> Vec<u32> {
    let g =
        gemma4::golden::Golden::load(root().join(format!("fixtures/goldens/{model}.safetensors")))
            .unwrap();
    g.input_ids
        .iter()
        .chain(&g.decode_input_ids)
        .copied()
        .collect()
}

#[test]
fn verify_matches_serial_decode_in_memory_on_every_variant() {
    // Positions p with p ≤ W − K: the in-graph shift by K drops no position a query needs, so verify
    // must reproduce serial decode (fp32: up to summation order).
    for (model, variant) in [
        ("tiny-e2b", Variant::Swa4),
        ("tiny-e2b", Variant::Merged),
        ("tiny-e2b", Variant::Merged2),
        ("tiny-e2b", Variant::Merged1),
        ("tiny-e2b", Variant::Lite),
        ("tiny-e2b", Variant::Wfa { fw: 32 }),
        ("tiny-e2b", Variant::Flash { block: 16 }),
        ("tiny-gqa", Variant::Swa4),
        ("tiny-pal", Variant::Swa4),
    ] {
        let m = Model::open(model);
        let w = m.layout.sliding_window;
        let plan = m.plan(variant.clone(), 64, true);
        let mut host = in_memory(&m, plan);
        let ids = prompt(model);
        let p = w - K;
        let c = verify_vs_serial(&mut host, &ids[..p], &ids[p..p + K], false);
        eprintln!("{model} {variant:?} verify@{p} vs serial: {c:?}");
        assert!(c.logits <= TOL_LOGITS, "{model} {variant:?}: logits {c:?}");
        assert!(c.hidden <= TOL_HIDDEN, "{model} {variant:?}: hidden {c:?}");
        assert!(c.rows <= TOL_ROWS, "{model} {variant:?}: rows {c:?}");
        assert_eq!(c.top1, K);
    }
}

#[test]
fn verify_packages_on_disk_match_serial_decode() {
    // tiny-pal (the reference I/O's shape), swa4, fp32, decode + verify in one package per chunk.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    build_set(
        "tiny-pal",
        Variant::Swa4,
        true,
        &format!("decode,verify:{K}"),
        &out,
    );
    let m = Model::open("tiny-pal");
    let plan = m.plan(Variant::Swa4, 64, true);
    let mut host = Host::open(&m, plan, &out);
    let ids = prompt("tiny-pal");
    let w = m.layout.sliding_window;
    for p in [0, 5, w - K] {
        let c = verify_vs_serial(&mut host, &ids[..p], &ids[p..p + K], false);
        eprintln!("tiny-pal disk verify@{p}: {c:?}");
        assert!(
            c.logits <= TOL_LOGITS && c.hidden <= TOL_HIDDEN && c.rows <= TOL_ROWS,
            "{c:?}"
        );
        assert_eq!(c.top1, K);
    }
    // Past the window the 11c shift drops the oldest K−1−q positions of query q's window before the
    // block runs. Verify then equals serial decode with exactly those slots hidden, and differs from
    // plain serial decode (report by how much).
    for p in [w - K + 1, w + 2] {
        let exact = verify_vs_serial(&mut host, &ids[..p], &ids[p..p + K], true);
        let plain = verify_vs_serial(&mut host, &ids[..p], &ids[p..p + K], false);
        eprintln!(
            "tiny-pal disk verify@{p} (beyond W − K): vs serial with the 11c truncation {exact:?}; vs plain serial {plain:?}"
        );
        assert!(
            exact.logits <= TOL_LOGITS && exact.hidden <= TOL_HIDDEN && exact.rows <= TOL_ROWS,
            "{exact:?}"
        );
        assert_eq!(exact.top1, K);
    }
}

/// Prefill the golden prompt (longer than W), compare the last logits, write KV back, decode on.
fn prefill_then_decode(model: &str, variant: Variant, n: usize) -> (f32, f32, usize, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    build_set(
        model,
        variant.clone(),
        true,
        &format!("decode,prefill:{n}"),
        &out,
    );
    let m = Model::open(model);
    let golden =
        gemma4::golden::Golden::load(root().join(format!("fixtures/goldens/{model}.safetensors")))
            .unwrap();
    let mut set = ChunkSet::open(&out, mil_runtime::BackendKind::Cpu).unwrap();
    assert_eq!(set.config().prefill_chunks().len(), 4, "prefill chunks");
    assert_eq!(set.load_prefill().unwrap(), n);
    let ids = &golden.input_ids;
    assert!(
        ids.len() > m.layout.sliding_window,
        "prompt must exceed the window"
    );
    let v = golden.vocab;
    let exact = Exact(&m);
    let mut session = set.session();
    let pre = session.prefill(ids, &exact, true).unwrap();
    let logits = pre.logits.unwrap();
    let want = &golden.logits[(ids.len() - 1) * v..ids.len() * v];
    let prefill_diff = max_diff(&logits, want);
    assert_eq!(pre.token_id as usize, argmax(want), "prefill token");
    assert_eq!(pre.token_logit, logits[pre.token_id as usize]);
    assert_eq!(session.position(), ids.len());
    let (mut decode_diff, mut agree) = (0f32, 0);
    for (j, &t) in golden.decode_input_ids.iter().enumerate() {
        let step = session.step(t, &exact, true).unwrap();
        let got = step.logits.unwrap();
        let want = &golden.decode_logits[j * v..(j + 1) * v];
        decode_diff = decode_diff.max(max_diff(&got, want));
        agree += usize::from(argmax(&got) == argmax(want));
    }
    (
        prefill_diff,
        decode_diff,
        agree,
        golden.decode_input_ids.len(),
    )
}

#[test]
fn prefill_beyond_the_window_matches_golden_and_decode_continues() {
    for (model, variant, n) in [
        ("tiny-e2b", Variant::Swa4, 16),
        ("tiny-e2b", Variant::Merged, 12),
        ("tiny-gqa", Variant::Swa4, 16),
        ("tiny-pal", Variant::Swa4, 32),
    ] {
        let (pd, dd, agree, total) = prefill_then_decode(model, variant.clone(), n);
        eprintln!(
            "{model} {variant:?} prefill:{n}: last logits max {pd:.2e}, decode after write-back max {dd:.2e}, top1 {agree}/{total}"
        );
        assert!(pd <= 2e-3, "{model}: prefill logits {pd}");
        assert!(dd <= 2e-3, "{model}: decode after prefill {dd}");
        assert_eq!(agree, total);
    }
}
