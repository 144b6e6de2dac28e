//! Stateful chunk sets (`--variant stateful` / `stateful3`, docs/STATEFUL.md), built on disk, read
//! back and driven by the stateful host (`mil_runtime::stateful`, what `Gemma4StatefulEngine` does):
//!
//! * fp32 sets match the HF goldens at every prompt and decode position of every fixture, with
//!   `infer` only and with every `prefill_b<T>` (batches that start past the sliding window
//!   included, so every row of a batch is checked where the reference's own prefill is wrong);
//! * the reference's `prefill_b<T>` rows (every row over the whole updated ring) fail there;
//! * two-turn conversations reuse the KV up to the longest common prefix (strict prefix, rewind by
//!   one in place, rewind past a wrapped ring from a snapshot) and match HF from scratch;
//! * deliberate host errors (ring position off by one, a rewind keeping one stale slot) fail parity;
//! * the I/O and state schema of an E2B config are the reference's, name for name and shape for
//!   shape, E4B's boundaries and states come from its config; a snapshot pins the packages of every
//!   fixture; coremltools 9.0 accepts them;
//! * builds are reproducible; fp16 / INT4 sets report their figures.

mod common;

use chunkset::compare_sets;
use common::{Exact, Model, root};
use gemma4::golden::{Golden, Turns};
use gemma4_export::build::{BuildOptions, Functions, NoProgress, build};
use gemma4_export::{
    ChunkPlan, Compression, FunctionKind, IoDType, ModelLayout, NBits, PlanOptions, Precision,
    PrefillRows, Variant,
};
use mil_runtime::BackendKind;
use mil_runtime::parity::{Comparator, Metrics, Tolerance, argmax};
use mil_runtime::stateful::{HostFault, RowOutput, SessionOptions, StatefulSet};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

const MODELS: [&str; 4] = ["tiny-e2b", "tiny-e2b-release", "tiny-gqa", "tiny-pal"];
const CTX: usize = 64;

fn window(model: &str) -> usize {
    Model::open(model).layout.sliding_window
}

/// Every batch size the engine probes that fits the model's window.
fn batches(model: &str) -> String {
    let w = window(model);
    let ts: Vec<String> = [16, 8, 4]
        .iter()
        .filter(|&&t| t <= w)
        .map(|t| t.to_string())
        .collect();
    format!("decode,prefill_b:{}", ts.join(","))
}

fn options(
    model: &str,
    out: &Path,
    variant: Variant,
    fp32: bool,
    nbits: u8,
    functions: &str,
) -> BuildOptions {
    let compression = match nbits {
        0 => Compression::Dense,
        n => Compression::int(NBits::try_from(n).unwrap()),
    };
    common::opts(model, out)
        .variant(variant)
        .ctx(CTX)
        .precision(Precision::from_fp32(fp32))
        .compression(compression)
        .functions(functions.parse().unwrap())
}

fn build_set(
    dir: &Path,
    model: &str,
    variant: Variant,
    fp32: bool,
    nbits: u8,
    functions: &str,
) -> PathBuf {
    let out = dir.join(format!("{model}-{}-{fp32}-{nbits}", variant.name()));
    build(
        &options(model, &out, variant, fp32, nbits, functions),
        &NoProgress,
    )
    .unwrap();
    out
}

fn golden(model: &str) -> Golden {
    Golden::load(
        root()
            .join("fixtures/goldens")
            .join(format!("{model}.safetensors")),
    )
    .unwrap()
}

fn turns(model: &str) -> Turns {
    Turns::load(
        root()
            .join("fixtures/goldens")
            .join(format!("{model}.turns.safetensors")),
    )
    .unwrap()
}

/// The golden's logits row of every position (prompt, then decode).
fn reference_rows(g: &Golden) -> Vec<&[f32]> {
    g.logits
        .chunks(g.vocab)
        .chain(g.decode_logits.chunks(g.vocab))
        .collect()
}

fn compare(rows: &[RowOutput], want: &[&[f32]]) -> Metrics {
    let mut cmp = Comparator::new();
    for r in rows {
        let got = r.logits.as_ref().expect("logits of every row");
        let id = r.token_id.map_or(argmax(got), |t| t as usize);
        cmp.add_at(r.position, got, want[r.position], id);
    }
    cmp.metrics()
}

/// Replay a golden conversation through a fresh session; returns the metrics, the prompt's call
/// sizes and start positions, and the host-vs-graph LM head check.
fn replay(
    set: &mut StatefulSet,
    m: &Model,
    g: &Golden,
    opts: SessionOptions,
) -> (Metrics, Vec<(usize, usize)>, Option<f32>) {
    let emb = Exact(m);
    let mut s = set.session(opts).unwrap();
    let (turn, rows) = s.replay(&g.input_ids, &g.decode_input_ids, &emb).unwrap();
    assert_eq!(rows.len(), g.input_ids.len() + g.decode_input_ids.len());
    let calls = turn.feed.calls.iter().map(|c| (c.t, c.position)).collect();
    (
        compare(&rows, &reference_rows(g)),
        calls,
        turn.feed.head_check,
    )
}

#[test]
fn fp32_stateful_sets_match_hf_at_every_position_with_and_without_batches() {
    let tmp = tempfile::tempdir().unwrap();
    for model in MODELS {
        let m = Model::open(model);
        let g = golden(model);
        let w = m.layout.sliding_window;
        for variant in [Variant::Stateful, Variant::Stateful3] {
            let dir = build_set(tmp.path(), model, variant.clone(), true, 0, &batches(model));
            let mut set = StatefulSet::open(&dir, BackendKind::Cpu).unwrap();
            assert_eq!(set.is_three_chunk(), variant == Variant::Stateful3);
            let mut past_window = false;
            let mut modes = vec![None];
            modes.extend(set.batches().iter().map(|&t| Some(t)));
            assert!(modes.len() >= 3, "{model}: batches {:?}", set.batches());
            for batch in modes {
                let (mm, calls, head) =
                    replay(&mut set, &m, &g, SessionOptions { batch, fault: None });
                eprintln!(
                    "{model} {} batch {batch:?}: calls {calls:?}, max {:.2e}, top-1 {:.3}, head check {head:?}",
                    variant.name(),
                    mm.max_abs_logit_diff,
                    mm.top1_agreement
                );
                Tolerance::Fp32
                    .check(&mm)
                    .unwrap_or_else(|e| panic!("{model} {} batch {batch:?}: {e}", variant.name()));
                if let Some(t) = batch {
                    assert!(head.unwrap() < 1e-4, "host LM head vs graph: {head:?}");
                    // the engine's rule: batches from position 0 while T tokens remain and the
                    // batch does not wrap the ring, then T = 1 to the end of the prompt
                    let s = g.input_ids.len();
                    let batched: Vec<usize> =
                        calls.iter().filter(|c| c.0 == t).map(|c| c.1).collect();
                    let n = batched.len();
                    assert_eq!(
                        batched,
                        (0..n).map(|k| k * t).collect::<Vec<_>>(),
                        "{calls:?}"
                    );
                    assert!(batched.iter().all(|p| p % w + t <= w));
                    assert!(
                        n * t + t > s || (n * t) % w + t > w,
                        "stopped early: {calls:?}"
                    );
                    assert!(calls[n..].iter().all(|c| c.0 == 1));
                    assert_eq!(calls.iter().map(|c| c.0).sum::<usize>(), s);
                    past_window |= batched.iter().any(|&p| p >= w);
                }
            }
            assert!(
                past_window,
                "{model}: no batch started past the sliding window"
            );
        }
    }
}

/// The chunks of `set` re-emitted with the reference's `prefill_b<T>` rows (every row attends over
/// the whole updated ring; `kv13_*` `[1, …]`), written next to a copy of the set's side files.
fn reference_rows_set(model: &str, set: &Path, t: usize, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    for e in std::fs::read_dir(set).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
        }
    }
    let m = Model::open(model);
    let plan = ChunkPlan::new(
        &m.layout,
        &PlanOptions {
            variant: Variant::Stateful,
            ctx: CTX,
            fp32: true,
        },
    )
    .unwrap();
    for c in &plan.chunks {
        let mut w = common::weights(&m.ckpt, true, Compression::Dense);
        let infer = gemma4_export::emit_function(&plan, c, FunctionKind::Stateful { t: 1 }, &mut w)
            .unwrap();
        let mut p = mil::Program::single("infer", infer);
        let f = gemma4_export::emit_stateful_with(&plan, c, t, &mut w, PrefillRows::SharedRing)
            .unwrap();
        p.functions.insert(FunctionKind::Stateful { t }.name(), f);
        let d = mlpackage::Description::derive_with(
            &p,
            Some("infer"),
            mlpackage::Metadata::default(),
            mlpackage::StateDtypes::AllowFp32,
        )
        .unwrap();
        mlpackage::write_package(
            &mlpackage::Package::new(p, d),
            &out.join(format!("{}.mlpackage", c.name)),
            &mlpackage::WriteOptions::default(),
        )
        .unwrap();
    }
}

#[test]
fn the_reference_prefill_rows_are_wrong_past_the_window_and_ours_are_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let model = "tiny-e2b";
    let (m, g) = (Model::open(model), golden(model));
    let w = m.layout.sliding_window;
    let ours = build_set(
        tmp.path(),
        model,
        Variant::Stateful,
        true,
        0,
        "decode,prefill_b:4",
    );
    let theirs = tmp.path().join("reference-rows");
    reference_rows_set(model, &ours, 4, &theirs);
    let opts = SessionOptions {
        batch: Some(4),
        fault: None,
    };
    let (mine, calls, _) = replay(
        &mut StatefulSet::open(&ours, BackendKind::Cpu).unwrap(),
        &m,
        &g,
        opts,
    );
    let (theirs_m, calls2, _) = replay(
        &mut StatefulSet::open(&theirs, BackendKind::Cpu).unwrap(),
        &m,
        &g,
        opts,
    );
    assert_eq!(calls, calls2);
    assert_eq!(
        calls,
        [(4, 0), (4, 4), (4, 8)],
        "the last batch starts at the window"
    );
    Tolerance::Fp32.check(&mine).unwrap();
    let worst = |mm: &Metrics, range: std::ops::Range<usize>| {
        mm.per_position
            .iter()
            .filter(|p| range.contains(&p.position))
            .map(|p| p.max_abs)
            .fold(0f64, f64::max)
    };
    let s = g.input_ids.len();
    let (before, batch, after) = (
        worst(&theirs_m, 0..w),
        worst(&theirs_m, w..s),
        worst(&theirs_m, s..usize::MAX),
    );
    eprintln!(
        "reference rows: max |Δlogit| {before:.2e} before the window, {batch:.2e} in the batch past it, \
         {after:.2e} while decoding after it (ours: {:.2e} everywhere)",
        mine.max_abs_logit_diff
    );
    assert!(before <= 2e-3, "identical before the window: {before}");
    assert!(
        batch > 0.1,
        "the reference's rows see later tokens of their batch: {batch}"
    );
    assert!(
        after > 2e-3,
        "and the damage carries into decoding: {after}"
    );
    assert!(Tolerance::Fp32.check(&theirs_m).is_err());
}

#[test]
fn two_turn_conversations_reuse_the_kv_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for (model, variant) in [
        ("tiny-e2b", Variant::Stateful),
        ("tiny-e2b-release", Variant::Stateful3),
        ("tiny-gqa", Variant::Stateful),
        ("tiny-pal", Variant::Stateful3),
    ] {
        let m = Model::open(model);
        let t = turns(model);
        let w = m.layout.sliding_window;
        let dir = build_set(tmp.path(), model, variant.clone(), true, 0, &batches(model));
        let mut set = StatefulSet::open(&dir, BackendKind::Cpu).unwrap();
        for batch in [None, set.batches().last().copied()] {
            let emb = Exact(&m);
            let mut s = set.session(SessionOptions { batch, fault: None }).unwrap();
            let (_, rows) = s
                .replay(&t.turn1.input_ids, &t.turn1.decode_input_ids, &emb)
                .unwrap();
            Tolerance::Fp32
                .check(&compare(&rows, &reference_rows(&t.turn1)))
                .unwrap();
            let p = s.position();
            let prompt1 = t.turn1.input_ids.len();
            let after = s.conversation().clone();
            for (case, g) in &t.turn2 {
                s.set_conversation(after.clone()).unwrap();
                let (turn, rows) = s.replay(&g.input_ids, &g.decode_input_ids, &emb).unwrap();
                let (resume, snapshot) = match case.as_str() {
                    "extend" => (p, None),
                    "edit_last" => (p - 1, None),
                    "diverge" => {
                        let q = (prompt1 + 2) / w * w;
                        (q, Some(q))
                    }
                    other => panic!("{other}"),
                };
                assert_eq!(
                    (turn.resumed_at, turn.snapshot),
                    (resume, snapshot),
                    "{model} {case}"
                );
                assert_eq!(rows.first().map(|r| r.position), Some(resume));
                let mm = compare(&rows, &reference_rows(g));
                eprintln!(
                    "{model} {} batch {batch:?} {case}: common {} resumed at {} ({} positions), max {:.2e}",
                    variant.name(),
                    turn.common_prefix,
                    turn.resumed_at,
                    rows.len(),
                    mm.max_abs_logit_diff
                );
                Tolerance::Fp32
                    .check(&mm)
                    .unwrap_or_else(|e| panic!("{model} batch {batch:?} {case}: {e}"));
            }
        }
    }
}

#[test]
fn host_errors_fail_parity() {
    let tmp = tempfile::tempdir().unwrap();
    let model = "tiny-e2b";
    let (m, g, t) = (Model::open(model), golden(model), turns(model));
    let dir = build_set(
        tmp.path(),
        model,
        Variant::Stateful,
        true,
        0,
        "decode,prefill_b:4",
    );
    let mut set = StatefulSet::open(&dir, BackendKind::Cpu).unwrap();
    // ring position off by one: every infer step writes and reads the wrong slot
    let (mm, _, _) = replay(
        &mut set,
        &m,
        &g,
        SessionOptions {
            batch: None,
            fault: Some(HostFault::RingOffByOne),
        },
    );
    eprintln!(
        "ring off by one: max {:.2e}, top-1 {:.3}",
        mm.max_abs_logit_diff, mm.top1_agreement
    );
    assert!(Tolerance::Fp32.check(&mm).is_err());
    // in a batch the shifted write would run past the ring: the device would write out of bounds
    // (no checks in the graph), the interpreter refuses it, naming the op
    let emb = Exact(&m);
    let mut s = set
        .session(SessionOptions {
            batch: Some(4),
            fault: Some(HostFault::RingOffByOne),
        })
        .unwrap();
    let e = s
        .replay(&g.input_ids, &g.decode_input_ids, &emb)
        .unwrap_err()
        .to_string();
    assert!(e.contains("slice_update"), "{e}");
    drop(s);
    // a rewind that keeps one stale slot: turn 2 changes turn 1's last token
    let (case, g2) = t.turn2.iter().find(|(c, _)| c == "edit_last").unwrap();
    let mut s = set
        .session(SessionOptions {
            batch: Some(4),
            fault: Some(HostFault::StaleSlotOnRewind),
        })
        .unwrap();
    s.replay(&t.turn1.input_ids, &t.turn1.decode_input_ids, &emb)
        .unwrap();
    let p = s.position();
    let (turn, rows) = s.replay(&g2.input_ids, &g2.decode_input_ids, &emb).unwrap();
    assert_eq!(
        (turn.common_prefix, turn.resumed_at),
        (p - 1, p),
        "kept the stale slot of position {}",
        p - 1
    );
    let mm = compare(&rows, &reference_rows(g2));
    eprintln!(
        "{case} keeping a stale slot: max {:.2e}, top-1 {:.3}",
        mm.max_abs_logit_diff, mm.top1_agreement
    );
    assert!(Tolerance::Fp32.check(&mm).is_err());
}

fn table(ts: &[gemma4_export::IoTensor]) -> Vec<(String, Vec<usize>, IoDType)> {
    ts.iter()
        .map(|t| (t.name.clone(), t.shape.clone(), t.dtype))
        .collect()
}

#[test]
fn e2b_stateful_io_and_states_are_the_reference_pipelines() {
    let cfg =
        gemma4::config::Gemma4Config::from_file(&root().join("fixtures/configs/gemma-4-e2b.json"))
            .unwrap();
    let layout = ModelLayout::from_config(&cfg);
    let c = 2048;
    let f = IoDType::Float16;
    let i = IoDType::Int32;
    let e = |n: &str, s: &[usize], d: IoDType| (n.to_string(), s.to_vec(), d);
    // the reference's inputs (build_gemma4_e2b_stateful_chunks.py: convert_chunk1 / convert_chunk2 /
    // convert_chunk_shared and their _prefill forms), T positions
    let head = |t: usize, ple: &str| {
        vec![
            e("hidden_states", &[1, t, 1536], f),
            e("causal_mask_full", &[1, 1, t, c], f),
            e("causal_mask_sliding", &[1, 1, t, 512], f),
            e(ple, &[1, t, 8960], f),
            e("cos_s", &[1, 1, t, 256], f),
            e("sin_s", &[1, 1, t, 256], f),
            e("cos_f", &[1, 1, t, 512], f),
            e("sin_f", &[1, 1, t, 512], f),
        ]
    };
    let positions = [e("current_pos", &[1], i), e("ring_pos", &[1], i)];
    // kv13 rows: 1 in the reference everywhere; ours are T under prefill_b<T> (docs/STATEFUL.md)
    let shared = |r: usize| {
        vec![
            e("kv13_k", &[r, 1, 512, 256], f),
            e("kv13_v", &[r, 1, 512, 256], f),
            e("kv14_k", &[1, 1, c, 512], f),
            e("kv14_v", &[1, 1, c, 512], f),
        ]
    };
    let states = |ns: usize, nf: usize| {
        vec![
            e("kv_cache_sliding", &[2 * ns, 1, 512, 512], f),
            e("kv_cache_full", &[2 * nf, 1, c, 512], f),
        ]
    };
    let out_h = |t: usize| vec![e("hidden_states_out", &[1, t, 1536], f)];
    let out_head = vec![
        e("token_id", &[1], i),
        e("token_logit", &[1], f),
        e("hidden_normed", &[1, 1, 1536], f),
    ];
    for (variant, t) in [
        (Variant::Stateful, 1),
        (Variant::Stateful, 16),
        (Variant::Stateful3, 1),
        (Variant::Stateful3, 8),
    ] {
        let plan = ChunkPlan::new(
            &layout,
            &PlanOptions {
                variant: variant.clone(),
                ctx: c,
                fp32: false,
            },
        )
        .unwrap();
        let c1 = (
            "chunk_1",
            0..8,
            [head(t, "per_layer_raw"), positions.to_vec()].concat(),
            [
                out_h(t),
                vec![e("per_layer_combined_out", &[1, t, 8960], f)],
            ]
            .concat(),
            states(7, 1),
        );
        let c2_out = [out_h(t), shared(t)].concat();
        let mut want = vec![c1];
        if variant == Variant::Stateful {
            want.push((
                "chunk_2",
                8..15,
                [head(t, "per_layer_combined"), positions.to_vec()].concat(),
                c2_out,
                states(5, 2),
            ));
            want.push((
                "chunk_3",
                15..25,
                [head(t, "per_layer_combined"), shared(t)].concat(),
                out_h(t),
                vec![],
            ));
            want.push((
                "chunk_4",
                25..35,
                [head(t, "per_layer_combined"), shared(t)].concat(),
                out_head.clone(),
                vec![],
            ));
        } else {
            want.push((
                "chunk_2",
                8..25,
                [head(t, "per_layer_combined"), positions.to_vec()].concat(),
                c2_out,
                states(5, 2),
            ));
            want.push((
                "chunk_3",
                25..35,
                [head(t, "per_layer_combined"), shared(t)].concat(),
                out_head.clone(),
                vec![],
            ));
        }
        assert_eq!(plan.chunks.len(), want.len());
        for (chunk, (name, layers, ins, outs, st)) in plan.chunks.iter().zip(want) {
            let what = format!("{} {name} T={t}", variant.name());
            assert_eq!(
                (chunk.name.as_str(), chunk.layers.clone()),
                (name, layers),
                "{what}"
            );
            let (i, o) = plan.stateful_io(chunk, t);
            assert_eq!(table(&i), ins, "{what} inputs");
            assert_eq!(table(&o), outs, "{what} outputs");
            assert_eq!(table(&plan.states(chunk)), st, "{what} states");
        }
        if t > 1 {
            plan.check_prefill_batch(t).unwrap();
        }
    }
    // the reference refuses T > W; T = 1 is `infer`
    let plan = ChunkPlan::new(
        &layout,
        &PlanOptions {
            variant: Variant::Stateful,
            ctx: c,
            fp32: false,
        },
    )
    .unwrap();
    assert!(plan.check_prefill_batch(513).is_err() && plan.check_prefill_batch(1).is_err());
    assert!(plan.check_prefill_batch(512).is_ok());
}

/// E4B (42 layers, 5:1 sliding/full, 18 KV-shared, 2 KV heads): the chunk boundaries come from
/// the config as for E2B, and the states are the reference's `(2·ns, HKV, W | ctx, max_hd)`.
#[test]
fn e4b_stateful_boundaries_and_states_come_from_the_config() {
    use gemma4_export::{LayerInfo, LayerKind};
    let (l, f) = (42, 24);
    let kind = |i: usize| {
        if (i + 1).is_multiple_of(6) {
            LayerKind::Full
        } else {
            LayerKind::Sliding
        }
    };
    let producer = |k: LayerKind| (0..f).rev().find(|&i| kind(i) == k).unwrap();
    let layout = ModelLayout {
        hidden: 2560,
        num_heads: 8,
        vocab: 262144,
        ple_dim: 256,
        sliding_window: 512,
        rms_norm_eps: 1e-6,
        final_logit_softcapping: Some(30.0),
        tie_word_embeddings: true,
        layers: (0..l)
            .map(|i| LayerInfo {
                kind: kind(i),
                head_dim: if kind(i) == LayerKind::Full { 512 } else { 256 },
                kv_heads: 2,
                intermediate: 10240,
                kv_source: (i >= f).then(|| producer(kind(i))),
            })
            .collect(),
    };
    let h = IoDType::Float16;
    let states = |ns: usize, nf: usize| {
        vec![
            ("kv_cache_sliding".to_string(), vec![2 * ns, 2, 512, 512], h),
            ("kv_cache_full".to_string(), vec![2 * nf, 2, 2048, 512], h),
        ]
    };
    for (variant, want) in [
        (
            Variant::Stateful,
            vec![
                ("chunk_1", 0..12, states(10, 2)),
                ("chunk_2", 12..24, states(10, 2)),
                ("chunk_3", 24..33, vec![]),
                ("chunk_4", 33..42, vec![]),
            ],
        ),
        (
            Variant::Stateful3,
            vec![
                ("chunk_1", 0..12, states(10, 2)),
                ("chunk_2", 12..33, states(10, 2)),
                ("chunk_3", 33..42, vec![]),
            ],
        ),
    ] {
        let plan = ChunkPlan::new(
            &layout,
            &PlanOptions {
                variant: variant.clone(),
                ctx: 2048,
                fp32: false,
            },
        )
        .unwrap();
        let got: Vec<_> = plan
            .chunks
            .iter()
            .map(|c| (c.name.as_str(), c.layers.clone(), table(&plan.states(c))))
            .collect();
        assert_eq!(got, want, "{}", variant.name());
        // the KV-shared chunks read layer 22's sliding and layer 23's full KV (kv13 / kv14)
        let last = plan.chunks.last().unwrap();
        let (ins, outs) = plan.stateful_io(last, 8);
        let shape = |n: &str| ins.iter().find(|t| t.name == n).map(|t| t.shape.clone());
        assert_eq!(shape("kv13_k"), Some(vec![8, 2, 512, 256]));
        assert_eq!(shape("kv14_v"), Some(vec![1, 2, 2048, 512]));
        assert!(outs.iter().any(|t| t.name == "token_id"));
    }
}

/// Every package of a stateful fp16 INT4 set (both variants): functions, I/O, states and op
/// counts, checked against the plan and pinned by a snapshot.
fn package_table(model: &str, dir: &Path, variant: &Variant) -> String {
    let m = Model::open(model);
    let plan = ChunkPlan::new(
        &m.layout,
        &PlanOptions {
            variant: variant.clone(),
            ctx: CTX,
            fp32: false,
        },
    )
    .unwrap();
    let mut s = String::new();
    for chunk in &plan.chunks {
        let pkg = mlpackage::read_package(&dir.join(format!("{}.mlpackage", chunk.name))).unwrap();
        assert_eq!(pkg.description.default_function_name(), "infer");
        let mut state_schema = None;
        for (fname, f) in &pkg.program.functions {
            let t = if fname == "infer" {
                1
            } else {
                fname.trim_start_matches("prefill_b").parse().unwrap()
            };
            let (ins, outs) = plan.stateful_io(chunk, t);
            let declared: Vec<(String, Vec<usize>)> = f
                .inputs
                .iter()
                .filter(|v| matches!(v.ty, mil::ValueType::Tensor(_)))
                .map(|v| {
                    (
                        v.name.clone(),
                        v.ty.as_tensor().unwrap().static_shape().unwrap(),
                    )
                })
                .collect();
            let planned: Vec<(String, Vec<usize>)> = ins
                .iter()
                .map(|x| (x.name.clone(), x.shape.clone()))
                .collect();
            assert_eq!(declared, planned, "{model} {} {fname}", chunk.name);
            assert_eq!(
                f.block.outputs,
                outs.iter().map(|x| x.name.clone()).collect::<Vec<_>>()
            );
            let states: Vec<String> = f
                .inputs
                .iter()
                .filter(|v| matches!(v.ty, mil::ValueType::State(_)))
                .map(|v| format!("{} {}", v.name, v.ty))
                .collect();
            // one state schema for every function of the package (one MLState serves them all)
            assert_eq!(
                *state_schema.get_or_insert_with(|| states.clone()),
                states,
                "{model} {} {fname}",
                chunk.name
            );
            writeln!(
                s,
                "{} [{}..{}] {fname}",
                chunk.name, chunk.layers.start, chunk.layers.end
            )
            .unwrap();
            for i in &f.inputs {
                writeln!(s, "  in  {:<24} {}", i.name, i.ty).unwrap();
            }
            for o in &f.block.outputs {
                let ty = f
                    .find_value(o)
                    .map(|v| v.ty.to_string())
                    .unwrap_or_default();
                writeln!(s, "  out {o:<24} {ty}").unwrap();
            }
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for op in &f.block.operations {
                *counts.entry(op.op_type.as_str()).or_default() += 1;
            }
            let c: Vec<String> = counts.iter().map(|(k, n)| format!("{k}:{n}")).collect();
            writeln!(s, "  ops {} = {}", f.block.operations.len(), c.join(" ")).unwrap();
        }
    }
    s
}

#[test]
fn stateful_packages_follow_the_plan_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    for model in MODELS {
        for variant in [Variant::Stateful, Variant::Stateful3] {
            let dir = build_set(
                tmp.path(),
                model,
                variant.clone(),
                false,
                4,
                "decode,prefill_b:8,4",
            );
            insta::assert_snapshot!(
                format!("{}_int4_{model}", variant.name()),
                package_table(model, &dir, &variant)
            );
        }
    }
}

#[test]
fn coremltools_accepts_stateful_sets_with_prefill_functions() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |dir: &Path, materialize: bool, allow_fp32_states: bool| {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "mlpackage") {
                mlpackage::coremltools_check::check_package(
                    &p,
                    &mlpackage::coremltools_check::CheckOptions {
                        materialize,
                        allow_fp32_states,
                        shared_with: None,
                    },
                )
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
        }
    };
    for (model, variant) in [
        ("tiny-e2b", Variant::Stateful),
        ("tiny-pal", Variant::Stateful3),
    ] {
        let fns = batches(model);
        check(
            &build_set(tmp.path(), model, variant.clone(), false, 4, &fns),
            true,
            false,
        );
    }
    // fp32 verification sets hold fp32 states: refused as Core ML packages, accepted with the opt-in
    let dir = build_set(
        tmp.path(),
        "tiny-e2b",
        Variant::Stateful,
        true,
        0,
        "decode,prefill_b:4",
    );
    let e = mlpackage::coremltools_check::check_package(
        &dir.join("chunk_1.mlpackage"),
        &mlpackage::coremltools_check::CheckOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("FLOAT16 only"), "{e}");
    check(&dir, false, true);
}

#[test]
fn stateful_builds_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (out, threads) in [(&a, 1), (&b, 2)] {
        let o = options(
            "tiny-pal",
            out,
            Variant::Stateful3,
            false,
            4,
            "decode,prefill_b:16,4",
        )
        .threads(threads);
        build(&o, &NoProgress).unwrap();
    }
    let diff = compare_sets(&a, &b).unwrap();
    assert!(diff.is_identical(), "1 vs 2 threads differ: {diff:?}");
}

#[test]
fn fp16_and_int4_stateful_sets_report_their_figures() {
    let tmp = tempfile::tempdir().unwrap();
    for (model, nbits) in [("tiny-e2b", 0u8), ("tiny-pal", 0), ("tiny-pal", 4)] {
        let (m, g) = (Model::open(model), golden(model));
        let dir = build_set(
            tmp.path(),
            model,
            Variant::Stateful,
            false,
            nbits,
            &batches(model),
        );
        let mut set = StatefulSet::open(&dir, BackendKind::Cpu).unwrap();
        let engine = set.engine_batch();
        for batch in [None, engine] {
            let (mm, _, _) = replay(&mut set, &m, &g, SessionOptions { batch, fault: None });
            eprintln!(
                "{model} stateful fp16 nbits {nbits} batch {batch:?}: max {:.3} mean {:.3} KL {:.4} top-1 {:.3}",
                mm.max_abs_logit_diff, mm.mean_abs_logit_diff, mm.mean_kl, mm.top1_agreement
            );
            assert!(mm.max_abs_logit_diff.is_finite() && mm.token_id_is_argmax);
        }
    }
}

#[test]
fn bad_stateful_options_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    for (variant, functions, needle) in [
        (
            Variant::Swa4,
            "decode,prefill_b:4",
            "needs --variant stateful",
        ),
        (Variant::Stateful, "decode,prefill_b:16", "sliding window 8"),
        (Variant::Stateful, "decode,verify:2", "not available"),
        (Variant::Stateful, "decode,prefill:8", "not available"),
    ] {
        let e = build(
            &options("tiny-e2b", &out, variant, false, 0, functions),
            &NoProgress,
        )
        .unwrap_err();
        assert!(e.to_string().contains(needle), "{functions}: {e}");
        assert!(!out.exists(), "nothing written");
    }
    assert_eq!(
        "decode,prefill_b:4,16,8"
            .parse::<Functions>()
            .unwrap()
            .to_string(),
        "decode,prefill_b:16,8,4"
    );
    assert!("decode,prefill_b:0".parse::<Functions>().is_err());
    assert!("decode,8".parse::<Functions>().is_err());
}

/// The engine's `generate`: the prompt (batched), then greedy `infer` steps; a second call with the
/// conversation extended reuses the states (only the new tokens are fed) and continues greedily.
#[test]
fn generate_is_greedy_and_reuses_the_states_on_the_next_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let model = "tiny-e2b";
    let (m, g, t) = (Model::open(model), golden(model), turns(model));
    let dir = build_set(
        tmp.path(),
        model,
        Variant::Stateful,
        true,
        0,
        "decode,prefill_b:4",
    );
    let mut set = StatefulSet::open(&dir, BackendKind::Cpu).unwrap();
    let emb = Exact(&m);
    let mut s = set
        .session(SessionOptions {
            batch: Some(4),
            fault: None,
        })
        .unwrap();
    let n = g.decode_input_ids.len();
    let (turn, out) = s.generate(&g.input_ids, &emb, n, &[]).unwrap();
    assert_eq!(turn.resumed_at, 0);
    assert_eq!(out, g.decode_input_ids, "greedy tokens = HF's");
    // the states hold the prompt and every generated token but the last (the engine's rule)
    assert_eq!(s.position(), g.input_ids.len() + n - 1);
    let (_, case) = t.turn2.iter().find(|(c, _)| c == "extend").unwrap();
    let (turn, out) = s.generate(&case.input_ids, &emb, 4, &[]).unwrap();
    assert_eq!(turn.resumed_at, g.input_ids.len() + n - 1);
    assert_eq!(turn.feed.rows.len(), case.input_ids.len() - turn.resumed_at);
    assert_eq!(
        out,
        case.decode_input_ids[..4],
        "second turn's greedy tokens = HF's"
    );
    // an EOS stops generation after it is emitted
    let eos = out[1];
    s.reset().unwrap();
    let (_, out2) = s.generate(&case.input_ids, &emb, 8, &[eos]).unwrap();
    assert_eq!(out2, out[..2]);
}
