//! The stateful part of the contract (docs/STATEFUL.md): the `infer` / `prefill_b<T>` function names,
//! the `prefill_b` spelling of `--functions`, the ring cache policy, and the stateful I/O and state
//! schema of a chunk (the reference's names and order; `kv13_*` one row per query).

use chunkset::{
    CacheKind, CachePolicy, ChunkSpec, FunctionKind, Functions, IoContract, IoDType, KindIo,
    KvSlot, LayerKind, Variant,
};

#[test]
fn stateful_function_names_and_the_prefill_b_list() {
    assert_eq!(FunctionKind::Stateful { t: 1 }.name(), "infer");
    assert_eq!(FunctionKind::Stateful { t: 16 }.name(), "prefill_b16");
    assert_eq!(
        FunctionKind::stateful("prefill_b8"),
        Some(FunctionKind::Stateful { t: 8 })
    );
    assert_eq!(
        FunctionKind::stateful("infer"),
        Some(FunctionKind::Stateful { t: 1 })
    );
    for bad in ["prefill_b1", "prefill_b", "prefill_bx", "decode_q1"] {
        assert_eq!(FunctionKind::stateful(bad), None, "{bad}");
    }
    let f: Functions = "decode, prefill_b:4,16 ,8".parse().unwrap();
    assert_eq!(f.prefill_batches, [16, 8, 4]);
    assert_eq!(f.to_string(), "decode,prefill_b:16,8,4");
    assert_eq!(f.to_string().parse::<Functions>().unwrap(), f);
    let json = serde_json::to_string(&f).unwrap();
    assert_eq!(serde_json::from_str::<Functions>(&json).unwrap(), f);
    assert_eq!(
        f.chunk_functions(&Variant::Stateful3),
        [1, 16, 8, 4].map(|t| FunctionKind::Stateful { t })
    );
    assert_eq!(f.chunk_functions(&Variant::Swa4), [FunctionKind::Decode]);
    // a bare number continues only a prefill_b list; zero is refused
    assert!("decode,8".parse::<Functions>().is_err());
    assert!("decode,prefill_b:0".parse::<Functions>().is_err());
    assert!("decode,prefill_b:8,0".parse::<Functions>().is_err());
    assert!(
        Variant::parse("stateful3", None, None)
            .unwrap()
            .is_stateful()
    );
    assert!(!Variant::Swa4.is_stateful());
}

#[test]
fn the_ring_policy_round_trips() {
    let r = CachePolicy::new(CacheKind::Ring, 512);
    assert_eq!(r, CachePolicy::Ring { len: 512 });
    assert_eq!(
        (r.len(), r.kind(), r.is_positional()),
        (512, CacheKind::Ring, false)
    );
    assert_eq!(serde_json::to_string(&CacheKind::Ring).unwrap(), "\"ring\"");
}

fn contract(ring: bool) -> IoContract {
    let kind = |head_dim, cache| KindIo {
        head_dim,
        kv_heads: 1,
        cache,
    };
    IoContract {
        hidden: 1536,
        ple_total: 8960,
        ctx: 2048,
        float: IoDType::Float16,
        slot_width: 512,
        sliding: kind(
            256,
            if ring {
                CachePolicy::Ring { len: 512 }
            } else {
                CachePolicy::ShiftRegister { len: 512 }
            },
        ),
        full: kind(512, CachePolicy::Positional { len: 2048 }),
        sliding_producer: Some(13),
        full_producer: Some(14),
        vocab: 262144,
        num_layers: 35,
        taps: chunkset::Taps::none(),
    }
}

fn chunk2() -> ChunkSpec {
    let slot = |layer, kind, slot| KvSlot { layer, kind, slot };
    let (s, f) = (LayerKind::Sliding, LayerKind::Full);
    ChunkSpec {
        name: "chunk_2".into(),
        layers: 8..15,
        kv_slots: vec![
            slot(8, s, 0),
            slot(9, f, 0),
            slot(10, s, 1),
            slot(11, s, 2),
            slot(12, s, 3),
            slot(13, s, 4),
            slot(14, f, 1),
        ],
        sliding_slots: 5,
        full_slots: 2,
        computes_ple: false,
        reads_shared_kv: false,
        emits_shared_kv: true,
        has_head: false,
    }
}

fn names_shapes(v: &[chunkset::IoTensor]) -> Vec<(&str, Vec<usize>)> {
    v.iter()
        .map(|t| (t.name.as_str(), t.shape.clone()))
        .collect()
}

#[test]
fn stateful_io_and_states_of_a_kv_owning_chunk() {
    let c = contract(true);
    assert!(c.is_stateful() && !c.uses_update_mask());
    let chunk = chunk2();
    for t in [1, 8] {
        let (ins, outs) = c.stateful_io(&chunk, t);
        assert_eq!(ins, c.io(&chunk, FunctionKind::Stateful { t }).0);
        assert_eq!(
            names_shapes(&ins),
            [
                ("hidden_states", vec![1, t, 1536]),
                ("causal_mask_full", vec![1, 1, t, 2048]),
                ("causal_mask_sliding", vec![1, 1, t, 512]),
                ("per_layer_combined", vec![1, t, 8960]),
                ("cos_s", vec![1, 1, t, 256]),
                ("sin_s", vec![1, 1, t, 256]),
                ("cos_f", vec![1, 1, t, 512]),
                ("sin_f", vec![1, 1, t, 512]),
                ("current_pos", vec![1]),
                ("ring_pos", vec![1]),
            ]
        );
        assert!(ins[8..].iter().all(|x| x.dtype == IoDType::Int32));
        assert_eq!(
            names_shapes(&outs),
            [
                ("hidden_states_out", vec![1, t, 1536]),
                ("kv13_k", vec![t, 1, 512, 256]),
                ("kv13_v", vec![t, 1, 512, 256]),
                ("kv14_k", vec![1, 1, 2048, 512]),
                ("kv14_v", vec![1, 1, 2048, 512]),
            ]
        );
    }
    assert_eq!(
        names_shapes(&c.states(&chunk)),
        [
            ("kv_cache_sliding", vec![10, 1, 512, 512]),
            ("kv_cache_full", vec![4, 1, 2048, 512]),
        ]
    );
    // no states outside stateful sets, nor in chunks that own no KV
    assert!(contract(false).states(&chunk).is_empty());
    let mut head = chunk2();
    head.kv_slots.clear();
    (head.sliding_slots, head.full_slots, head.has_head) = (0, 0, true);
    (head.reads_shared_kv, head.emits_shared_kv) = (true, false);
    assert!(c.states(&head).is_empty());
    let (ins, outs) = c.stateful_io(&head, 4);
    assert_eq!(ins.len(), 12);
    assert_eq!(ins[8].name, "kv13_k");
    assert_eq!(ins[8].shape, [4, 1, 512, 256]);
    assert_eq!(
        names_shapes(&outs),
        [
            ("token_id", vec![1]),
            ("token_logit", vec![1]),
            ("hidden_normed", vec![1, 1, 1536]),
        ]
    );
}
