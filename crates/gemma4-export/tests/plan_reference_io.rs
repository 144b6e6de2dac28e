//! The decode I/O of our swa4 plan equals, name by name and shape by shape, what the reference pipeline
//! wrote for a 20-layer E2B-layout model (`fixtures/reference-io/`), and E2B's own contract.

mod common;

use common::{e2b_like, io_table, plan_of, reference, table_of};
use gemma4_export::{LayerInfo, LayerKind, ModelLayout, Variant};

#[test]
fn swa4_matches_reference_pipeline_io() {
    let layout = e2b_like(20, 10, 128, 3, (32, 64), 16, 32, 256);
    let plan = plan_of(&layout, Variant::Swa4, 64);
    let names: Vec<_> = plan
        .chunks
        .iter()
        .map(|c| (c.name.clone(), c.layers.clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("chunk1".into(), 0..5),
            ("chunk2".into(), 5..10),
            ("chunk3".into(), 10..15),
            ("chunk4".into(), 15..20)
        ]
    );
    for chunk in &plan.chunks {
        let r = reference(&chunk.name);
        let f = &r["functions"]["decode_q1"];
        let (ins, outs) = plan.decode_io(chunk);
        assert_eq!(
            table_of(&ins),
            io_table(&f["inputs"]),
            "{} inputs",
            chunk.name
        );
        assert_eq!(
            table_of(&outs),
            io_table(&f["outputs"]),
            "{} outputs",
            chunk.name
        );
    }
}

#[test]
fn e2b_swa4_io_matches_pipeline_spec() {
    // §2.3 of the pipeline spec, E2B at ctx 2048.
    let layout = e2b_like(35, 20, 1536, 8, (256, 512), 512, 256, 6144);
    let plan = plan_of(&layout, Variant::Swa4, 2048);
    let bounds: Vec<_> = plan.chunks.iter().map(|c| c.layers.clone()).collect();
    assert_eq!(bounds, vec![0..8, 8..15, 15..25, 25..35]);
    assert_eq!(plan.sliding_producer, Some(13));
    assert_eq!(plan.full_producer, Some(14));
    let c1 = &plan.chunks[0];
    let slots: Vec<_> = c1.kv_slots.iter().map(|s| (s.layer, s.slot)).collect();
    assert_eq!(
        slots,
        vec![
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 3),
            (4, 0),
            (5, 4),
            (6, 5),
            (7, 6)
        ]
    );
    let (ins, outs) = plan.decode_io(c1);
    let find = |v: &[gemma4_export::IoTensor], n: &str| {
        v.iter().find(|t| t.name == n).unwrap().shape.clone()
    };
    assert_eq!(find(&ins, "K_sliding_in"), vec![7, 1, 512, 512]);
    assert_eq!(find(&ins, "K_full_in"), vec![1, 1, 2048, 512]);
    assert_eq!(find(&ins, "per_layer_raw"), vec![1, 1, 8960]);
    assert_eq!(find(&outs, "per_layer_combined_out"), vec![1, 1, 8960]);
    let (ins2, outs2) = plan.decode_io(&plan.chunks[1]);
    assert_eq!(find(&ins2, "K_sliding_in"), vec![5, 1, 512, 512]);
    assert_eq!(find(&ins2, "K_full_in"), vec![2, 1, 2048, 512]);
    assert_eq!(find(&outs2, "kv13_k"), vec![1, 1, 512, 256]);
    assert_eq!(find(&outs2, "kv14_v"), vec![1, 1, 2048, 512]);
    let (ins4, outs4) = plan.decode_io(&plan.chunks[3]);
    assert_eq!(find(&ins4, "kv14_k"), vec![1, 1, 2048, 512]);
    assert_eq!(
        outs4.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["token_id", "token_logit", "hidden_states_out"]
    );
}

#[test]
fn merged_variants_cut_where_the_runtime_expects() {
    let layout = e2b_like(35, 20, 1536, 8, (256, 512), 512, 256, 6144);
    let cut = |v: Variant| {
        plan_of(&layout, v, 2048)
            .chunks
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.layers.clone(),
                    c.emits_shared_kv,
                    c.reads_shared_kv,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cut(Variant::Merged),
        vec![
            ("chunk1".into(), 0..8, false, false),
            ("chunk2_3way".into(), 8..25, true, false),
            ("chunk3_3way".into(), 25..35, false, true)
        ]
    );
    assert_eq!(
        cut(Variant::Merged2),
        vec![
            ("merged_chunk1".into(), 0..15, true, false),
            ("merged_chunk2".into(), 15..35, false, true)
        ]
    );
    assert_eq!(
        cut(Variant::Merged1),
        vec![("merged_full".into(), 0..35, false, false)]
    );
}

#[test]
fn e4b_shaped_boundaries() {
    // E4B: 42 layers, 5:1 pattern, 18 shared → producers L22 (sliding) / L23 (full).
    let l = 42;
    let f = 24;
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
    let plan = plan_of(&layout, Variant::Swa4, 2048);
    assert_eq!(plan.sliding_producer, Some(22));
    assert_eq!(plan.full_producer, Some(23));
    let bounds: Vec<_> = plan.chunks.iter().map(|c| c.layers.clone()).collect();
    assert_eq!(bounds, vec![0..12, 12..24, 24..33, 33..42]);
    let (ins, _) = plan.decode_io(&plan.chunks[2]);
    assert_eq!(
        ins.iter().find(|t| t.name == "kv13_k").unwrap().shape,
        vec![1, 2, 512, 256]
    );
}

#[test]
fn unknown_variant_is_a_typed_error() {
    assert!(
        matches!(Variant::parse("swa5", None, None), Err(chunkset::UnknownVariant(v)) if v == "swa5")
    );
}
