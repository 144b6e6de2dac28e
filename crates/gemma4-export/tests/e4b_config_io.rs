//! The real E4B config (`fixtures/configs/gemma-4-e4b.json`, 42 layers, H 2560, 2 KV heads, 18
//! KV-shared layers, producers L22 / L23) planned like E2B: the swa4 and merged chunk boundaries of
//! the reference pipeline (`compute_chunk_boundaries`: (0,12),(12,24),(24,33),(33,42); 3-chunk
//! L0–11 / L12–32 / L33–41), every decode chunk's I/O name by name and shape by shape at ctx 2048
//! (KV buffers `[slots, nkv = 2, len, 512]` with 10 sliding / 2 full slots in chunks 1 and 2, as the
//! Swift runtime allocates them), the KV slot maps, the prefill I/O, and the side-file facts that
//! do not need weights (`model_config.json` fields, RoPE table widths).

mod common;

use common::{name_shapes as table, named as v};
use gemma4_export::bundle::side::{SetFacts, model_config, rope_rows};
use gemma4_export::{ChunkPlan, IoDType, ModelLayout, PlanOptions, Variant};

fn config() -> gemma4::config::Gemma4Config {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/configs/gemma-4-e4b.json");
    gemma4::config::Gemma4Config::from_file(&p).unwrap()
}

fn plan(variant: Variant, ctx: usize) -> ChunkPlan {
    let layout = ModelLayout::from_config(&config());
    ChunkPlan::new(
        &layout,
        &PlanOptions {
            variant,
            ctx,
            fp32: false,
        },
    )
    .unwrap()
}

const C: usize = 2048;

fn kv(s: usize, f: usize, sfx: &str) -> Vec<(String, Vec<usize>)> {
    vec![
        (format!("K_sliding_{sfx}"), vec![s, 2, 512, 512]),
        (format!("V_sliding_{sfx}"), vec![s, 2, 512, 512]),
        (format!("K_full_{sfx}"), vec![f, 2, C, 512]),
        (format!("V_full_{sfx}"), vec![f, 2, C, 512]),
    ]
}

fn shared() -> Vec<(String, Vec<usize>)> {
    v(&[
        ("kv13_k", &[1, 2, 512, 256]),
        ("kv13_v", &[1, 2, 512, 256]),
        ("kv14_k", &[1, 2, C, 512]),
        ("kv14_v", &[1, 2, C, 512]),
    ])
}

fn inputs(ple: &str, tail: Vec<(String, Vec<usize>)>) -> Vec<(String, Vec<usize>)> {
    let mut x = v(&[
        ("hidden_states", &[1, 1, 2560]),
        ("causal_mask_full", &[1, 1, 1, C]),
        ("causal_mask_sliding", &[1, 1, 1, 512]),
        ("update_mask", &[1, 1, C, 1]),
    ]);
    x.push((ple.into(), vec![1, 1, 10752]));
    x.extend(v(&[
        ("cos_s", &[1, 1, 1, 256]),
        ("sin_s", &[1, 1, 1, 256]),
        ("cos_f", &[1, 1, 1, 512]),
        ("sin_f", &[1, 1, 1, 512]),
    ]));
    x.extend(tail);
    x
}

fn hidden_out() -> Vec<(String, Vec<usize>)> {
    v(&[("hidden_states_out", &[1, 1, 2560])])
}

fn head_out() -> Vec<(String, Vec<usize>)> {
    [
        v(&[("token_id", &[1]), ("token_logit", &[1])]),
        hidden_out(),
    ]
    .concat()
}

#[test]
fn e4b_swa4_chunk_io_matches_the_runtime_contract() {
    let plan = plan(Variant::Swa4, C);
    let expect = [
        (
            "chunk1",
            0..12,
            inputs("per_layer_raw", kv(10, 2, "in")),
            [
                hidden_out(),
                kv(10, 2, "out"),
                v(&[("per_layer_combined_out", &[1, 1, 10752])]),
            ]
            .concat(),
        ),
        (
            "chunk2",
            12..24,
            inputs("per_layer_combined", kv(10, 2, "in")),
            [hidden_out(), kv(10, 2, "out"), shared()].concat(),
        ),
        (
            "chunk3",
            24..33,
            inputs("per_layer_combined", shared()),
            hidden_out(),
        ),
        (
            "chunk4",
            33..42,
            inputs("per_layer_combined", shared()),
            head_out(),
        ),
    ];
    assert_eq!(plan.chunks.len(), 4);
    for (chunk, (name, layers, want_in, want_out)) in plan.chunks.iter().zip(expect) {
        assert_eq!(chunk.name, name);
        assert_eq!(chunk.layers, layers);
        let (i, o) = plan.decode_io(chunk);
        assert_eq!(table(&i), want_in, "{name} inputs");
        assert_eq!(table(&o), want_out, "{name} outputs");
        assert!(o.iter().all(|t| t.dtype
            == if t.name == "token_id" {
                IoDType::Int32
            } else {
                IoDType::Float16
            }));
    }
    let slots = |c: usize| {
        plan.chunks[c]
            .kv_slots
            .iter()
            .map(|s| (s.layer, s.slot))
            .collect::<Vec<_>>()
    };
    // sliding slots count up over sliding layers, full slots over full layers (`_layer_kv_map`)
    assert_eq!(
        slots(0),
        vec![
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 3),
            (4, 4),
            (5, 0),
            (6, 5),
            (7, 6),
            (8, 7),
            (9, 8),
            (10, 9),
            (11, 1)
        ]
    );
    assert_eq!(
        slots(1),
        vec![
            (12, 0),
            (13, 1),
            (14, 2),
            (15, 3),
            (16, 4),
            (17, 0),
            (18, 5),
            (19, 6),
            (20, 7),
            (21, 8),
            (22, 9),
            (23, 1)
        ]
    );
    assert!(slots(2).is_empty() && slots(3).is_empty());
    assert_eq!(
        (plan.sliding_producer, plan.full_producer),
        (Some(22), Some(23))
    );
    // no double-wide MLP on E4B
    let layout = &plan.layout;
    assert!(layout.layers.iter().all(|l| l.intermediate == 10240));
}

#[test]
fn e4b_merged_is_the_three_chunk_topology_of_the_runtime() {
    let plan = plan(Variant::Merged, C);
    let cuts: Vec<(&str, std::ops::Range<usize>)> = plan
        .chunks
        .iter()
        .map(|c| (c.name.as_str(), c.layers.clone()))
        .collect();
    assert_eq!(
        cuts,
        vec![
            ("chunk1", 0..12),
            ("chunk2_3way", 12..33),
            ("chunk3_3way", 33..42)
        ]
    );
    // the merged middle keeps the producers internal: it reads no shared KV and publishes it only
    // to the tail chunk
    let (i, o) = plan.decode_io(&plan.chunks[1]);
    assert_eq!(
        table(&i),
        inputs("per_layer_combined", kv(10, 2, "in")),
        "chunk2_3way inputs"
    );
    assert_eq!(
        table(&o),
        [hidden_out(), kv(10, 2, "out"), shared()].concat()
    );
    let (i, o) = plan.decode_io(&plan.chunks[2]);
    assert_eq!(table(&i), inputs("per_layer_combined", shared()));
    assert_eq!(table(&o), head_out());
}

#[test]
fn e4b_prefill_returns_the_kv_of_every_owning_layer() {
    let plan = plan(Variant::Swa4, C);
    let n = 64;
    let pre = plan.prefill_chunks(n).unwrap();
    assert_eq!(pre.len(), 4);
    let (_, o) = plan.prefill_io(&pre[1], n);
    let names: Vec<String> = o.iter().map(|t| t.name.clone()).collect();
    // chunk2 owns L12–23: ten non-producer layers K0..K9/V0..V9, then the producers L22 (sliding)
    // and L23 (full) as kv13_* / kv14_*
    for j in 0..10 {
        assert!(names.contains(&format!("K{j}")), "{names:?}");
    }
    assert!(!names.contains(&"K10".to_string()), "{names:?}");
    let shape = |name: &str| o.iter().find(|t| t.name == name).unwrap().shape.clone();
    assert_eq!(shape("K0"), vec![1, 2, n, 256]);
    assert_eq!(shape("K5"), vec![1, 2, n, 512], "L17 is a full layer");
    assert_eq!(shape("kv13_k"), vec![1, 2, n, 256]);
    assert_eq!(shape("kv14_v"), vec![1, 2, n, 512]);
    let (i, o) = plan.prefill_io(&pre[3], n);
    assert!(i.iter().any(|t| t.name == "kv13_k"));
    assert!(o.iter().any(|t| t.name == "token_id"));
}

#[test]
fn e4b_side_file_facts() {
    let cfg = config();
    let plan = plan(Variant::Swa4, C);
    let mc = model_config(
        &plan,
        &cfg,
        &SetFacts {
            model_name: "gemma-4-e4b",
            quantization: "int4",
            functions: &chunkset::Functions::default(),
            prefill_chunks: &[],
        },
    );
    let mc = serde_json::to_value(&mc).unwrap();
    let eq = |k: &str, want: serde_json::Value| assert_eq!(mc[k], want, "model_config.{k}");
    eq("hidden_size", 2560.into());
    eq("num_hidden_layers", 42.into());
    eq("num_key_value_heads", 2.into());
    eq("head_dim", 256.into());
    eq("global_head_dim", 512.into());
    eq("per_layer_dim", 256.into());
    eq("num_kv_shared_layers", 18.into());
    eq("context_length", C.into());
    eq("sliding_window", 512.into());
    let full: Vec<usize> = mc["layer_types"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, t)| *t == "full_attention")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(full, vec![5, 11, 17, 23, 29, 35, 41]);
    let bounds: Vec<serde_json::Value> = mc["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["layers"].clone())
        .collect();
    assert_eq!(
        bounds,
        vec![
            serde_json::json!([0, 12]),
            serde_json::json!([12, 24]),
            serde_json::json!([24, 33]),
            serde_json::json!([33, 42])
        ]
    );
    assert!((mc["embed_scale"].as_f64().unwrap() - 2560f64.sqrt()).abs() < 1e-12);
    // RoPE side tables: rows for ctx 2048, one width per layer type
    assert_eq!(rope_rows(C), 4096);
    let tables = gemma4::rope::tables(&cfg).unwrap();
    let sl = &tables[&gemma4::LayerType::Sliding];
    let fl = &tables[&gemma4::LayerType::Full];
    assert_eq!((sl.head_dim, fl.head_dim), (256, 512));
    // proportional RoPE on full layers: 64 of 256 frequency pairs rotate
    assert_eq!(fl.inv_freq.iter().filter(|&&f| f > 0.0).count(), 64);
    assert!(sl.inv_freq.iter().all(|&f| f > 0.0));
}
