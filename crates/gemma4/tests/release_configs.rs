//! The release configs in `fixtures/configs/` resolve to the published architectures: layer schedule,
//! KV producers, per-layer widths, the tensor shapes the config implies and the parameter counts
//! they add up to (cross-checked against published model sizes, see `fixtures/configs/README.md`).

mod common;

use common::fixtures;
use gemma4::layout::expected_tensors;
use gemma4::{Gemma4Config, KvSource, LayerType};
use std::collections::BTreeMap;

fn config(name: &str) -> Gemma4Config {
    Gemma4Config::from_file(&fixtures().join("configs").join(name)).expect("config parses")
}

fn shapes(c: &Gemma4Config) -> BTreeMap<String, Vec<usize>> {
    expected_tensors(c)
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.shape))
        .collect()
}

/// `(all text-decoder parameters, without the PLE table, without both embedding tables)`.
fn param_counts(c: &Gemma4Config) -> (u64, u64, u64) {
    let s = shapes(c);
    let n = |k: &str| s[k].iter().product::<usize>() as u64;
    let total: u64 = s.values().map(|v| v.iter().product::<usize>() as u64).sum();
    let no_ple = total - n("embed_tokens_per_layer.weight");
    (total, no_ple, no_ple - n("embed_tokens.weight"))
}

fn full_layers(c: &Gemma4Config) -> Vec<usize> {
    (0..c.num_hidden_layers())
        .filter(|&i| c.layer_type(i) == Some(LayerType::Full))
        .collect()
}

#[test]
fn e4b_resolves_to_the_published_architecture() {
    let c = config("gemma-4-e4b.json");
    assert!(c.is_nested());
    assert_eq!(
        (
            c.hidden_size(),
            c.num_hidden_layers(),
            c.num_attention_heads()
        ),
        (2560, 42, 8)
    );
    assert_eq!(full_layers(&c), vec![5, 11, 17, 23, 29, 35, 41]);
    assert_eq!(c.first_shared_layer(), 24);
    assert_eq!(
        (c.producer(LayerType::Sliding), c.producer(LayerType::Full)),
        (Some(22), Some(23))
    );
    for (i, l) in c.layers().iter().enumerate() {
        assert_eq!(l.num_kv_heads, 2, "layer {i}");
        assert_eq!(l.intermediate_size, 10240, "layer {i}: no double-wide MLP");
        let want_d = if l.layer_type == LayerType::Full {
            512
        } else {
            256
        };
        assert_eq!(l.head_dim, want_d, "layer {i}");
        let want_src = if i < 24 {
            KvSource::Own {
                stores: i == 22 || i == 23,
            }
        } else if l.layer_type == LayerType::Full {
            KvSource::Shared { producer: 23 }
        } else {
            KvSource::Shared { producer: 22 }
        };
        assert_eq!(l.kv_source, want_src, "layer {i}");
    }
    assert_eq!(c.sliding_window(), 512);
    assert_eq!(c.final_logit_softcapping(), Some(30.0));
    assert_eq!(c.eos_token_ids(), &[1]);
}

#[test]
fn e4b_tensor_shapes_match_the_release_files() {
    let c = config("gemma-4-e4b.json");
    let s = shapes(&c);
    let want: &[(&str, &[usize])] = &[
        ("embed_tokens.weight", &[262144, 2560]),
        ("embed_tokens_per_layer.weight", &[262144, 10752]),
        ("per_layer_model_projection.weight", &[10752, 2560]),
        ("per_layer_projection_norm.weight", &[256]),
        ("layers.0.self_attn.q_proj.weight", &[2048, 2560]),
        ("layers.0.self_attn.k_proj.weight", &[512, 2560]),
        ("layers.0.self_attn.v_proj.weight", &[512, 2560]),
        ("layers.0.self_attn.o_proj.weight", &[2560, 2048]),
        ("layers.5.self_attn.q_proj.weight", &[4096, 2560]),
        ("layers.5.self_attn.k_proj.weight", &[1024, 2560]),
        ("layers.5.self_attn.o_proj.weight", &[2560, 4096]),
        ("layers.5.self_attn.q_norm.weight", &[512]),
        ("layers.0.mlp.gate_proj.weight", &[10240, 2560]),
        ("layers.0.mlp.down_proj.weight", &[2560, 10240]),
        ("layers.41.mlp.gate_proj.weight", &[10240, 2560]),
        ("layers.41.self_attn.q_proj.weight", &[4096, 2560]),
        ("layers.0.per_layer_input_gate.weight", &[256, 2560]),
        ("layers.0.per_layer_projection.weight", &[2560, 256]),
    ];
    for (name, shape) in want {
        assert_eq!(s.get(*name).map(Vec::as_slice), Some(*shape), "{name}");
    }
    // shared layers (24..41) read K/V from 22 / 23 and need no K/V tensors
    assert!(!s.contains_key("layers.24.self_attn.k_proj.weight"));
    assert!(s.contains_key("layers.23.self_attn.k_proj.weight"));
    // 24 KV-owning layers × 17 tensors + 18 consumers × 14 + 5 top-level tensors
    assert_eq!(s.len(), 24 * 17 + 18 * 14 + 5);

    // PLE projections: `per_layer_model_projection` plus every layer's gate and projection, the
    // "~165 MB at fp16" quoted for E4B
    let ple_proj: u64 = s
        .iter()
        .filter(|(k, _)| {
            k.starts_with("per_layer_model_projection")
                || k.ends_with("per_layer_input_gate.weight")
                || k.ends_with("per_layer_projection.weight")
        })
        .map(|(_, v)| v.iter().product::<usize>() as u64)
        .sum();
    assert_eq!(ple_proj, 10752 * 2560 + 42 * 2 * 256 * 2560);
    assert!(
        (164e6..166e6).contains(&(2.0 * ple_proj as f64)),
        "{ple_proj}"
    );
}

#[test]
fn parameter_counts_match_the_published_model_sizes() {
    // E2B: 4.6286 B text parameters used, 2.35 B without either table (spec §6)
    let (total, no_ple, effective) = param_counts(&config("gemma-4-e2b.json"));
    assert_eq!(total, 4_628_569_379, "E2B text total (spec: 4.6286 B)");
    assert!((2.27e9..2.29e9).contains(&(no_ple as f64)), "{no_ple}");
    assert!(
        (1.87e9..1.88e9).contains(&(effective as f64)),
        "{effective}"
    );

    // E4B: 7.46 B text parameters; + ~0.47 B of vision and audio towers = the published "8 B with
    // embeddings"; without the two embedding tables ~3.97 B (+ towers = "4.5 B effective")
    let (total, no_ple, effective) = param_counts(&config("gemma-4-e4b.json"));
    assert!((7.45e9..7.47e9).contains(&(total as f64)), "{total}");
    assert!((4.63e9..4.65e9).contains(&(no_ple as f64)), "{no_ple}");
    assert!(
        (3.96e9..3.98e9).contains(&(effective as f64)),
        "{effective}"
    );
}
