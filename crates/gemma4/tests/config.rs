//! Config parsing: both serialisations, per-layer resolution, and rejection of bad values.

mod common;

use common::model_dir;
use gemma4::{Error, Gemma4Config, KvSource, LayerType, RopeType};
use serde_json::{Value, json};

fn fixture_config(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(model_dir(name).join("config.json")).unwrap())
        .unwrap()
}

fn parse(v: Value) -> gemma4::Result<Gemma4Config> {
    Gemma4Config::from_value(v)
}

/// A small flat config with explicit layer types; tests mutate it.
fn base() -> Value {
    json!({
        "model_type": "gemma4_text",
        "vocab_size": 64, "hidden_size": 32, "intermediate_size": 16,
        "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 8, "global_head_dim": 16, "sliding_window": 4,
        "hidden_size_per_layer_input": 4, "vocab_size_per_layer_input": 64,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention",
                        "sliding_attention", "sliding_attention", "full_attention"],
        "num_kv_shared_layers": 2, "use_double_wide_mlp": true
    })
}

fn field_of(e: &Error) -> String {
    match e {
        Error::InvalidField { field, .. } | Error::MissingField { field } => field.clone(),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn tiny_e2b_resolves_every_e2b_feature() {
    let c = parse(fixture_config("tiny-e2b")).unwrap();
    assert!(!c.is_nested());
    assert_eq!(
        (c.vocab_size(), c.hidden_size(), c.num_hidden_layers()),
        (512, 64, 10)
    );
    assert_eq!((c.num_attention_heads(), c.num_key_value_heads()), (3, 1));
    assert_eq!(c.sliding_window(), 8);
    assert_eq!(c.final_logit_softcapping(), Some(30.0));
    assert_eq!(
        (
            c.hidden_size_per_layer_input(),
            c.vocab_size_per_layer_input()
        ),
        (8, 512)
    );
    assert_eq!(c.first_shared_layer(), 5);
    assert_eq!(c.producer(LayerType::Sliding), Some(3));
    assert_eq!(c.producer(LayerType::Full), Some(4));
    assert_eq!(
        (c.bos_token_id(), c.eos_token_ids(), c.pad_token_id()),
        (Some(2), &[1u32][..], Some(0))
    );
    assert!(c.tie_word_embeddings());
    assert_eq!(c.rms_norm_eps(), 1e-6);
    for i in 0..10 {
        let l = c.layer(i).unwrap();
        let full = i == 4 || i == 9;
        assert_eq!(
            l.layer_type,
            if full {
                LayerType::Full
            } else {
                LayerType::Sliding
            },
            "layer {i}"
        );
        assert_eq!(l.head_dim, if full { 32 } else { 16 }, "layer {i}");
        assert_eq!(l.num_kv_heads, 1);
        assert_eq!(
            l.intermediate_size,
            if i >= 5 { 64 } else { 32 },
            "layer {i}"
        );
        let want = match i {
            0..=2 => KvSource::Own { stores: false },
            3 | 4 => KvSource::Own { stores: true },
            _ if full => KvSource::Shared { producer: 4 },
            _ => KvSource::Shared { producer: 3 },
        };
        assert_eq!(l.kv_source, want, "layer {i}");
    }
    let full = c.rope(LayerType::Full).unwrap();
    assert_eq!(
        (full.rope_type, full.theta, full.partial_rotary_factor),
        (RopeType::Proportional, 1e6, 0.25)
    );
    let sl = c.rope(LayerType::Sliding).unwrap();
    assert_eq!((sl.rope_type, sl.theta), (RopeType::Default, 1e4));
    assert!(c.layer(10).is_none());
}

#[test]
fn nested_release_config_resolves_like_the_flat_one() {
    let flat = parse(fixture_config("tiny-e2b")).unwrap();
    let nested = parse(fixture_config("tiny-e2b-release")).unwrap();
    assert!(nested.is_nested());
    assert_eq!(flat.layers(), nested.layers());
    assert_eq!(flat.producers(), nested.producers());
    for t in [LayerType::Sliding, LayerType::Full] {
        assert_eq!(flat.rope(t), nested.rope(t));
    }
    assert_eq!(nested.text_raw()["global_head_dim"], json!(32));
    assert_eq!(nested.raw()["model_type"], json!("gemma4"));
}

#[test]
fn zero_padded_per_layer_config_keys() {
    let c = parse(fixture_config("tiny-gqa")).unwrap();
    assert!(
        fixture_config("tiny-gqa")["per_layer_config"]
            .get("05")
            .is_some()
    );
    let dims: Vec<usize> = c.layers().iter().map(|l| l.head_dim).collect();
    assert_eq!(dims, [16, 16, 16, 16, 16, 32, 16, 16, 16, 16, 16, 32]);
    assert!(
        c.layers()
            .iter()
            .all(|l| l.num_kv_heads == 2 && l.intermediate_size == 48)
    );
    assert_eq!(
        (c.producer(LayerType::Sliding), c.producer(LayerType::Full)),
        (Some(7), Some(5))
    );
    assert_eq!(c.kv_source(11), Some(KvSource::Shared { producer: 5 }));
    let pal = parse(fixture_config("tiny-pal")).unwrap();
    assert_eq!(
        (
            pal.producer(LayerType::Sliding),
            pal.producer(LayerType::Full)
        ),
        (Some(8), Some(9))
    );
    assert_eq!(pal.max_head_dim(), 64);
}

#[test]
fn default_layer_types_and_forced_last_full() {
    let mut v = base();
    v["num_hidden_layers"] = json!(8);
    v.as_object_mut().unwrap().remove("layer_types");
    v["num_kv_shared_layers"] = json!(0);
    let c = parse(v).unwrap();
    let types: Vec<LayerType> = c.layers().iter().map(|l| l.layer_type).collect();
    use LayerType::{Full as F, Sliding as S};
    assert_eq!(types, [S, S, S, S, S, F, S, F]); // 5:1 rule, last layer forced full
    // no per_layer_config: full layers take global_head_dim
    assert_eq!(c.layer(5).unwrap().head_dim, 16);
    assert_eq!(c.layer(4).unwrap().head_dim, 8);

    let mut v = base();
    v["layer_types"] = json!(vec!["sliding_attention"; 6]);
    v["num_kv_shared_layers"] = json!(0);
    let c = parse(v).unwrap();
    assert_eq!(c.layer_type(5), Some(LayerType::Full));
}

#[test]
fn global_head_dim_defaults_to_512_and_global_kv_heads_need_k_eq_v() {
    let mut v = base();
    v.as_object_mut().unwrap().remove("global_head_dim");
    v["num_global_key_value_heads"] = json!(1);
    let c = parse(v.clone()).unwrap();
    assert_eq!(c.layer(2).unwrap().head_dim, 512);
    assert_eq!(
        c.layer(2).unwrap().num_kv_heads,
        2,
        "ignored without attention_k_eq_v"
    );
    v["attention_k_eq_v"] = json!(true);
    let c = parse(v).unwrap();
    assert_eq!(c.layer(2).unwrap().num_kv_heads, 1);
    assert_eq!(c.layer(0).unwrap().num_kv_heads, 2);
}

#[test]
fn per_layer_config_wins_over_global_head_dim() {
    let mut v = base();
    v["per_layer_config"] = json!({"2": {"head_dim": 12}, "5": {"head_dim": 12}});
    v["global_head_dim"] = json!(64);
    let c = parse(v).unwrap();
    assert_eq!(c.layer(2).unwrap().head_dim, 12);
    assert_eq!(c.layer(0).unwrap().head_dim, 8);
}

#[test]
fn rejects_absurd_values_naming_the_field() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "zero hidden",
            Box::new(|v| v["hidden_size"] = json!(0)),
            "hidden_size",
        ),
        (
            "negative heads",
            Box::new(|v| v["num_attention_heads"] = json!(-4)),
            "num_attention_heads",
        ),
        (
            "string size",
            Box::new(|v| v["intermediate_size"] = json!("big")),
            "intermediate_size",
        ),
        (
            "heads not dividing",
            Box::new(|v| v["num_key_value_heads"] = json!(3)),
            "num_key_value_heads (layer 0)",
        ),
        (
            "shared ≥ L",
            Box::new(|v| v["num_kv_shared_layers"] = json!(6)),
            "num_kv_shared_layers",
        ),
        (
            "window 0",
            Box::new(|v| v["sliding_window"] = json!(0)),
            "sliding_window",
        ),
        (
            "huge vocab",
            Box::new(|v| v["vocab_size"] = json!(1u64 << 40)),
            "vocab_size",
        ),
        (
            "product too large",
            Box::new(|v| {
                v["vocab_size"] = json!(1 << 24);
                v["hidden_size"] = json!(1 << 20);
            }),
            "<sizes>",
        ),
        (
            "odd head dim",
            Box::new(|v| v["head_dim"] = json!(7)),
            "head_dim (layer 0)",
        ),
        (
            "eps negative",
            Box::new(|v| v["rms_norm_eps"] = json!(-1.0)),
            "rms_norm_eps",
        ),
        (
            "layer_types length",
            Box::new(|v| v["layer_types"] = json!(["full_attention"])),
            "layer_types",
        ),
        (
            "per-layer key out of range",
            Box::new(|v| v["per_layer_config"] = json!({"17": {"head_dim": 8}})),
            "per_layer_config.17",
        ),
        (
            "missing hidden",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("hidden_size");
            }),
            "hidden_size",
        ),
        (
            "null layers",
            Box::new(|v| v["num_hidden_layers"] = Value::Null),
            "num_hidden_layers",
        ),
        (
            "not gemma",
            Box::new(|v| v["model_type"] = json!("llama")),
            "model_type",
        ),
        (
            "partial rotary > 1",
            Box::new(|v| {
                v["rope_parameters"] = json!({
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "rope_theta": 1e6, "partial_rotary_factor": 2.0}})
            }),
            "rope_parameters.full_attention.partial_rotary_factor",
        ),
        (
            "rope entry missing",
            Box::new(|v| {
                v["rope_parameters"] = json!({
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
            }),
            "rope_parameters.full_attention",
        ),
    ];
    for (what, edit, field) in cases {
        let mut v = base();
        edit(&mut v);
        let e = parse(v).expect_err(what);
        assert_eq!(field_of(&e), field, "{what}: {e}");
    }
}

#[test]
fn consumer_type_without_producer_is_rejected() {
    let mut v = base();
    // F = 4: consumers 4 (sliding) and 5 (full), but layers 0..3 are all full attention.
    v["layer_types"] = json!([
        "full_attention",
        "full_attention",
        "full_attention",
        "full_attention",
        "sliding_attention",
        "full_attention"
    ]);
    let e = parse(v).unwrap_err();
    assert_eq!(field_of(&e), "num_kv_shared_layers");
    assert!(e.to_string().contains("layer 4"), "{e}");
}

#[test]
fn unknown_layer_type_is_rejected_with_its_index() {
    let mut v = base();
    v["layer_types"][3] = json!("chunked_attention");
    match parse(v).unwrap_err() {
        Error::UnknownLayerType { index, value } => {
            assert_eq!((index, value.as_str()), (3, "chunked_attention"))
        }
        other => panic!("expected UnknownLayerType, got {other:?}"),
    }
}

#[test]
fn unsupported_features_are_typed() {
    for (k, val) in [
        ("enable_moe_block", json!(true)),
        ("attention_bias", json!(true)),
        ("use_bidirectional_attention", json!("all")),
        ("hidden_activation", json!("silu")),
    ] {
        let mut v = base();
        v[k] = val;
        let e = parse(v).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { ref feature } if feature.contains(k)),
            "{k}: {e:?}"
        );
    }
    let mut v = base();
    v["rope_parameters"] = json!({"sliding_attention": {"rope_type": "yarn", "rope_theta": 1e4},
                                  "full_attention": {"rope_type": "default", "rope_theta": 1e4}});
    assert!(matches!(parse(v).unwrap_err(), Error::Unsupported { .. }));
}

#[test]
fn nested_errors_carry_the_text_config_path() {
    let mut v = fixture_config("tiny-e2b-release");
    v["text_config"]["sliding_window"] = json!(0);
    assert_eq!(
        field_of(&parse(v).unwrap_err()),
        "text_config.sliding_window"
    );
    let mut v = fixture_config("tiny-e2b-release");
    v.as_object_mut().unwrap().remove("text_config");
    assert_eq!(field_of(&parse(v).unwrap_err()), "text_config");
}
