//! KV-state behaviour of the reference, independent of the goldens: a prompt run in one call,
//! in chunks, or token by token gives the same logits (sliding window and KV sharing across
//! steps), and the sliding caches stay at W − 1 entries.

mod common;

use common::{golden, model_dir};
use gemma4::{Checkpoint, DType, Reference, compare_rows};

fn logits_of(m: &Reference, chunks: &[&[u32]]) -> Vec<f32> {
    let mut st = m.new_state();
    let mut out = Vec::new();
    for c in chunks {
        let l = m.forward(c, &mut st, None).unwrap();
        out.extend(l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    out
}

#[test]
fn one_call_chunks_and_single_tokens_agree() {
    for name in ["tiny-e2b", "tiny-gqa"] {
        let ck = Checkpoint::open(model_dir(name)).unwrap();
        let m = Reference::load(&ck, DType::F32).unwrap();
        let g = golden(name);
        let ids: Vec<u32> = g
            .input_ids
            .iter()
            .chain(&g.decode_input_ids)
            .copied()
            .collect();
        let v = ck.config().vocab_size();
        let whole = logits_of(&m, &[&ids]);
        let (a, b) = ids.split_at(5);
        let (b, c) = b.split_at(9);
        let chunked = logits_of(&m, &[a, b, c]);
        let singles: Vec<&[u32]> = ids.chunks(1).collect();
        let stepwise = logits_of(&m, &singles);
        for (what, other) in [("chunked", &chunked), ("token by token", &stepwise)] {
            let cmp = compare_rows(other, &whole, v).unwrap();
            assert_eq!(cmp.rows, ids.len());
            // S = 1 and S > 1 matmuls sum in different orders; these tiny random models amplify
            // one-ulp differences ×1.5–3 per layer (spec §5), so the bound is the fp32 tolerance
            // of the HF goldens (measured: ≤ 1.1e-3 on tiny-e2b token by token)
            assert!(cmp.max_abs < 2e-3, "{name} {what}: max {}", cmp.max_abs);
            assert_eq!(cmp.top1_agreement, 1.0, "{name} {what}");
        }
    }
}

#[test]
fn sliding_caches_hold_w_minus_one_and_full_caches_everything() {
    let ck = Checkpoint::open(model_dir("tiny-e2b")).unwrap();
    let cfg = ck.config().clone();
    let m = Reference::load(&ck, DType::F32).unwrap();
    let mut st = m.new_state();
    m.forward(
        &[2, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
        &mut st,
        None,
    )
    .unwrap();
    m.forward(&[21], &mut st, None).unwrap();
    assert_eq!(st.pos(), 13);
    for (i, l) in cfg.layers().iter().enumerate() {
        let want = match (l.kv_source, l.layer_type) {
            (gemma4::KvSource::Shared { .. }, _) => 0,
            (_, gemma4::LayerType::Sliding) => cfg.sliding_window() - 1,
            (_, gemma4::LayerType::Full) => 13,
        };
        assert_eq!(st.cached_len(i), want, "layer {i}");
    }
    st.reset();
    assert_eq!((st.pos(), st.cached_len(0)), (0, 0));
}
