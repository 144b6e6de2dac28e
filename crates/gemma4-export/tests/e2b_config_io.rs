//! The chunk I/O of the real E2B config (parsed from its config.json) matches §2.3 of the pipeline spec
//! name by name and shape by shape (ctx 2048).

mod common;

use common::{name_shapes as table, named as v, plan_of};
use gemma4_export::{ModelLayout, Variant};

#[test]
fn e2b_swa4_chunk_io_matches_the_runtime_contract() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/configs/gemma-4-e2b.json");
    let cfg = gemma4::config::Gemma4Config::from_file(&p).unwrap();
    let layout = ModelLayout::from_config(&cfg);
    let c = 2048;
    let plan = plan_of(&layout, Variant::Swa4, c);
    let common_head: &[(&str, &[usize])] = &[
        ("hidden_states", &[1, 1, 1536]),
        ("causal_mask_full", &[1, 1, 1, c]),
        ("causal_mask_sliding", &[1, 1, 1, 512]),
        ("update_mask", &[1, 1, c, 1]),
    ];
    let rope: &[(&str, &[usize])] = &[
        ("cos_s", &[1, 1, 1, 256]),
        ("sin_s", &[1, 1, 1, 256]),
        ("cos_f", &[1, 1, 1, 512]),
        ("sin_f", &[1, 1, 1, 512]),
    ];
    let shared: &[(&str, &[usize])] = &[
        ("kv13_k", &[1, 1, 512, 256]),
        ("kv13_v", &[1, 1, 512, 256]),
        ("kv14_k", &[1, 1, c, 512]),
        ("kv14_v", &[1, 1, c, 512]),
    ];
    let kv = |s: usize, f: usize, sfx: &str| {
        vec![
            (format!("K_sliding_{sfx}"), vec![s, 1, 512, 512]),
            (format!("V_sliding_{sfx}"), vec![s, 1, 512, 512]),
            (format!("K_full_{sfx}"), vec![f, 1, c, 512]),
            (format!("V_full_{sfx}"), vec![f, 1, c, 512]),
        ]
    };
    let ins = |ple: &str, tail: Vec<(String, Vec<usize>)>| {
        let mut x = v(common_head);
        x.push((ple.into(), vec![1, 1, 8960]));
        x.extend(v(rope));
        x.extend(tail);
        x
    };
    let hidden_out = v(&[("hidden_states_out", &[1, 1, 1536])]);

    let expect = [
        (
            "chunk1",
            0..8,
            ins("per_layer_raw", kv(7, 1, "in")),
            [
                hidden_out.clone(),
                kv(7, 1, "out"),
                v(&[("per_layer_combined_out", &[1, 1, 8960])]),
            ]
            .concat(),
        ),
        (
            "chunk2",
            8..15,
            ins("per_layer_combined", kv(5, 2, "in")),
            [hidden_out.clone(), kv(5, 2, "out"), v(shared)].concat(),
        ),
        (
            "chunk3",
            15..25,
            ins("per_layer_combined", v(shared)),
            hidden_out.clone(),
        ),
        (
            "chunk4",
            25..35,
            ins("per_layer_combined", v(shared)),
            [
                v(&[("token_id", &[1]), ("token_logit", &[1])]),
                hidden_out.clone(),
            ]
            .concat(),
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
                gemma4_export::IoDType::Int32
            } else {
                gemma4_export::IoDType::Float16
            }));
    }
    // KV slot maps of §2.1
    let slots = |c: usize| {
        plan.chunks[c]
            .kv_slots
            .iter()
            .map(|s| (s.layer, s.slot))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        slots(0),
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
    assert_eq!(
        slots(1),
        vec![(8, 0), (9, 0), (10, 1), (11, 2), (12, 3), (13, 4), (14, 1)]
    );
    assert_eq!(
        (plan.sliding_producer, plan.full_producer),
        (Some(13), Some(14))
    );
    // the double-wide MLP on the shared layers
    assert_eq!(layout.layers[14].intermediate, 6144);
    assert_eq!(layout.layers[15].intermediate, 12288);
}
