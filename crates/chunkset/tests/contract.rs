//! The contract pinned: `model_config.json` and `manifest.json` round-trip through their types byte
//! for byte (including a `model_config.json` written before the typed contract existed), reading is
//! strict and names the field, and the small vocabularies parse what they print.

use chunkset::manifest::TOOL;
use chunkset::{
    BuildFacts, BuildSpec, ChunkRange, ChunkSetManifest, Compression, ContractError, FileEntry,
    Functions, LayerKind, LutConfig, ModelConfig, NBits, Precision, Variant,
};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/chunkset")
        .join(name)
}

/// A set written by the exporter before this crate (tiny-pal, swa4 INT4, ctx 64,
/// `--functions decode,verify:3,prefill:32`).
fn legacy_config_text() -> String {
    std::fs::read_to_string(fixture("model_config.json")).unwrap()
}

fn parse_config(text: &str) -> Result<ModelConfig, ContractError> {
    chunkset::error::parse_json(Path::new("model_config.json"), text)
}

fn edited(f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&legacy_config_text()).unwrap();
    f(&mut v);
    v.to_string()
}

#[test]
fn model_config_round_trips_to_the_bytes_of_an_earlier_set() {
    let text = legacy_config_text();
    let mut c = parse_config(&text).unwrap();
    // serde_json's reader may be one ulp off in the last digit of a float (no `float_roundtrip`);
    // the writer's floats are computed, so recompute them as the writer does.
    let (h, p) = (c.hidden_size as f64, c.per_layer_dim as f64);
    c.embed_scale = h.sqrt();
    c.per_layer_embed_scale = p.sqrt();
    c.per_layer_model_projection_scale = 1.0 / h.sqrt();
    c.per_layer_input_scale = std::f64::consts::FRAC_1_SQRT_2;
    assert_eq!(c.to_json().unwrap(), text);
    // the facts the runtime uses
    assert_eq!(c.chunks.len(), 4);
    assert_eq!(c.prefill_chunks().len(), 4);
    assert_eq!(c.verify_k, Some(3));
    assert_eq!(
        c.sliding_cache(),
        chunkset::CachePolicy::ShiftRegister {
            len: c.sliding_window
        }
    );
    assert!(c.full_cache().is_positional());
    assert_eq!(c.layer_types.len(), c.num_layers);
    assert_eq!(c.precision, Precision::Fp16);
    // and written to disk, read back equal
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(chunkset::MODEL_CONFIG_NAME),
        c.to_json().unwrap(),
    )
    .unwrap();
    let back = ModelConfig::read(dir.path()).unwrap();
    assert_eq!(back.chunks, c.chunks);
    assert_eq!(
        back.to_json().unwrap(),
        parse_config(&text).unwrap().to_json().unwrap()
    );
}

#[test]
fn decode_only_configs_leave_the_optional_fields_out() {
    let c = parse_config(&edited(|v| {
        let o = v.as_object_mut().unwrap();
        for k in [
            "verify_k",
            "verify_function",
            "prefill_length",
            "prefill_sliding_mask",
            "prefill_chunks",
        ] {
            o.remove(k);
        }
    }))
    .unwrap();
    assert!(c.prefill_chunks().is_empty());
    let text = c.to_json().unwrap();
    assert!(
        !text.contains("verify_k") && !text.contains("prefill"),
        "{text}"
    );
}

#[test]
fn a_missing_field_is_named_with_its_path() {
    let e = parse_config(&edited(|v| {
        v["chunks"][1]["kv_slots"][0]
            .as_object_mut()
            .unwrap()
            .remove("slot");
    }))
    .unwrap_err();
    assert!(
        matches!(&e, ContractError::MissingField { field, .. } if field == "chunks[1].kv_slots[0].slot"),
        "{e}"
    );
    assert!(e.to_string().starts_with("model_config.json: "), "{e}");
    // nullable fields must be present too
    let e = parse_config(&edited(|v| {
        v.as_object_mut().unwrap().remove("bos_token_id");
    }))
    .unwrap_err();
    assert!(
        matches!(&e, ContractError::MissingField { field, .. } if field == "bos_token_id"),
        "{e}"
    );
}

#[test]
fn an_unknown_field_is_named_with_its_path() {
    let e = parse_config(&edited(|v| {
        v["prefill_chunks"][0]["kv"][0]["extra"] = 1.into();
    }))
    .unwrap_err();
    assert!(
        matches!(&e, ContractError::UnknownField { field, .. } if field.starts_with("prefill_chunks[0].kv[0]") && field.ends_with("extra")),
        "{e}"
    );
    let e = parse_config(&edited(|v| v["num_layer"] = 3.into())).unwrap_err();
    assert!(
        matches!(&e, ContractError::UnknownField { field, .. } if field == "num_layer"),
        "{e}"
    );
}

#[test]
fn a_malformed_value_is_named_with_its_path() {
    for (edit, want) in [
        (
            edited(|v| v["chunks"][0]["kv_slots"][1]["kind"] = "local".into()),
            "chunks[0].kv_slots[1].kind",
        ),
        (
            edited(|v| v["layer_types"][2] = "conv".into()),
            "layer_types",
        ),
        (
            edited(|v| v["sliding_cache_policy"] = "circular".into()),
            "sliding_cache_policy",
        ),
        (edited(|v| v["hidden_size"] = (-1).into()), "hidden_size"),
    ] {
        let e = parse_config(&edit).unwrap_err();
        assert!(
            matches!(&e, ContractError::InvalidField { field, .. } if field.starts_with(want)),
            "{want}: {e}"
        );
    }
    let e = parse_config("{\"architecture\": ").unwrap_err();
    assert!(matches!(e, ContractError::Syntax { .. }), "{e}");
    let e = parse_config(&format!("{} x", legacy_config_text())).unwrap_err();
    assert!(matches!(e, ContractError::Syntax { .. }), "{e}");
}

fn manifest() -> ChunkSetManifest {
    ChunkSetManifest {
        format: chunkset::MANIFEST_FORMAT.into(),
        tool: TOOL.into(),
        tool_version: "0.1.0".into(),
        command: vec!["gemma-convert".into(), "--model".into(), "m".into()],
        build: BuildFacts {
            spec: BuildSpec {
                model: "m".into(),
                variant: Variant::Wfa { fw: 16 },
                ctx: 64,
                precision: Precision::Fp32,
                compression: Compression::Palettize(LutConfig {
                    nbits: NBits::B3,
                    group_size: 16,
                }),
                functions: "decode,prefill:8".parse().unwrap(),
                model_name: Some("custom".into()),
                format: chunkset::OutputFormat::Both,
                forms: "softmax=native,gqa=repeat".parse().unwrap(),
                taps: "eagle3".parse().unwrap(),
                numerics: Some("norm-gain=multiply,layer-scalar=multiply".into()),
            },
            sliding_producer: Some(3),
            full_producer: None,
            chunks: vec![ChunkRange {
                name: "chunk1".into(),
                layers: [0, 3],
            }],
            prefill_chunks: Some(vec![ChunkRange {
                name: "prefill_chunk1".into(),
                layers: [0, 3],
            }]),
            shared_weights: Some(vec![chunkset::SharedWeights {
                decode: "chunk1".into(),
                prefill: "prefill_chunk1".into(),
            }]),
            model_files: vec![FileEntry {
                path: "config.json".into(),
                size: 3,
                sha256: "ab".into(),
            }],
            palettized_weights: Some(7),
        },
        uncompressed_weights: vec![palettize::TensorRecord::kept(
            "norm.weight",
            &[8],
            palettize::KeepReason::RankTooLow {
                rank: 1,
                min_rank: 2,
            },
        )],
        files: vec![FileEntry {
            path: "chunk1.mlpackage/Manifest.json".into(),
            size: 10,
            sha256: "cd".into(),
        }],
    }
}

#[test]
fn manifest_round_trips_with_sorted_build_facts() {
    let m = manifest();
    let text = m.to_json().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(chunkset::MANIFEST_NAME), &text).unwrap();
    let back = ChunkSetManifest::read(dir.path()).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.to_json().unwrap(), text);
    // top level in declared order, `build` keys sorted (the layout of every earlier set)
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let build: Vec<&String> = v["build"].as_object().unwrap().keys().collect();
    let mut sorted = build.clone();
    sorted.sort();
    assert_eq!(build, sorted);
    assert!(text.find("\"format\"").unwrap() < text.find("\"command\"").unwrap());
    assert!(text.find("\"command\"").unwrap() < text.find("\"build\"").unwrap());
    assert!(
        text.contains("\"nbits\": 3") && text.contains("\"group_size\": 16"),
        "{text}"
    );
    assert!(text.contains("\"fw\": 16"), "{text}");
    assert!(
        text.contains("\"functions\": \"decode,prefill:8\""),
        "{text}"
    );
    assert!(text.contains("\"shared_weights\""), "{text}");
    assert!(
        text.contains("\"forms\": \"softmax=native,gqa=repeat,layout=reshape\""),
        "{text}"
    );
    assert!(text.contains("\"taps\": \"eagle3\""), "{text}");
}

#[test]
fn manifests_without_the_later_optional_facts_still_read() {
    // a set written before `shared_weights`, `forms` and `taps` existed (or without prefill, with
    // the default forms and no taps) reads as `None` / the defaults
    let mut m = manifest();
    m.build.shared_weights = None;
    m.build.spec.forms = chunkset::GraphForms::default();
    m.build.spec.taps = chunkset::Taps::none();
    let text = m.to_json().unwrap();
    for key in ["shared_weights", "forms", "taps"] {
        assert!(!text.contains(key), "{key}: {text}");
    }
    let back: ChunkSetManifest =
        chunkset::error::parse_json(Path::new("manifest.json"), &text).unwrap();
    assert_eq!(back.build.shared_weights, None);
    assert_eq!(back, m);
}

#[test]
fn dense_builds_record_nbits_zero() {
    let mut m = manifest();
    m.build.spec.compression = Compression::Dense;
    let text = m.to_json().unwrap();
    assert!(
        text.contains("\"nbits\": 0") && text.contains("\"group_size\": 32"),
        "{text}"
    );
    let back: ChunkSetManifest =
        chunkset::error::parse_json(Path::new("manifest.json"), &text).unwrap();
    assert_eq!(back.build.spec.compression, Compression::Dense);
}

#[test]
fn manifest_problems_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let write = |v: &serde_json::Value| {
        std::fs::write(dir.path().join("manifest.json"), v.to_string()).unwrap();
    };
    let good: serde_json::Value = serde_json::from_str(&manifest().to_json().unwrap()).unwrap();
    let mut v = good.clone();
    v["format"] = "other/2".into();
    write(&v);
    let e = ChunkSetManifest::read(dir.path()).unwrap_err();
    assert!(
        matches!(&e, ContractError::Format { found, .. } if found == "other/2"),
        "{e}"
    );
    let mut v = good.clone();
    v["build"]["nbits"] = 5.into();
    write(&v);
    let e = ChunkSetManifest::read(dir.path()).unwrap_err();
    assert!(
        matches!(&e, ContractError::InvalidField { field, msg, .. } if field == "build" && msg.contains("nbits")),
        "{e}"
    );
    let mut v = good.clone();
    v["build"].as_object_mut().unwrap().remove("model");
    write(&v);
    let e = ChunkSetManifest::read(dir.path()).unwrap_err();
    assert!(
        matches!(&e, ContractError::MissingField { field, .. } if field == "build.model"),
        "{e}"
    );
    let mut v = good;
    v["build"]["variant"] = serde_json::json!({"name": "wfa", "fw": 8, "block": 2});
    write(&v);
    let e = ChunkSetManifest::read(dir.path()).unwrap_err();
    assert!(e.to_string().contains("block"), "{e}");
    let e = ChunkSetManifest::read(&dir.path().join("absent")).unwrap_err();
    assert!(matches!(e, ContractError::Io { .. }), "{e}");
}

#[test]
fn functions_print_what_they_parse() {
    for s in [
        "decode",
        "decode,verify:3",
        "decode,prefill:16",
        "decode,verify:2,prefill:8",
    ] {
        let f: Functions = s.parse().unwrap();
        assert_eq!(f.to_string(), s);
    }
    let f: Functions = " prefill:4 , decode ,".parse().unwrap();
    assert_eq!(f.to_string(), "decode,prefill:4");
    for (bad, needle) in [
        ("verify:3", "decode"),
        ("decode,verify:0", "verify:0"),
        ("decode,prefill:x", "prefill:x"),
        ("decode,bogus", "bogus"),
    ] {
        let e = bad.parse::<Functions>().unwrap_err();
        assert!(e.to_string().contains(needle), "{bad}: {e}");
    }
}

#[test]
fn nbits_holds_only_mil_index_widths() {
    let ok: Vec<u8> = (0..=9u8).filter(|&n| NBits::try_from(n).is_ok()).collect();
    assert_eq!(ok, vec![1, 2, 3, 4, 6, 8]);
    assert_eq!(Compression::int(NBits::B4).label(Precision::Fp16), "int4");
    assert_eq!(Compression::Dense.label(Precision::Fp32), "fp32");
    assert_eq!(Compression::from_record(0, 7), Ok(Compression::Dense));
    assert!(Compression::from_record(5, 32).is_err());
}

#[test]
fn variants_and_layer_kinds_keep_their_names() {
    for name in chunkset::variant::VARIANT_NAMES {
        let v = Variant::parse(name, Some(16), Some(8)).unwrap();
        assert_eq!(v.name(), name);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["name"], name);
        assert_eq!(serde_json::from_value::<Variant>(json).unwrap(), v);
    }
    assert_eq!(
        Variant::parse("swa5", None, None),
        Err(chunkset::UnknownVariant("swa5".into()))
    );
    for kind in LayerKind::ALL {
        assert_eq!(
            LayerKind::from_attention_type(kind.attention_type()),
            Some(kind)
        );
    }
    assert_eq!(
        serde_json::to_string(&LayerKind::Sliding).unwrap(),
        "\"sliding\""
    );
}
