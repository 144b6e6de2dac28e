//! Checkpoint inventory, prefix detection, loading, and typed errors on broken checkpoints
//! (built from the fixtures in temp dirs at test time).

mod common;

use std::path::Path;

use common::{
    RawTensor, copy_fixture, decode, edit_config, edit_weights, encode, model_dir, read_all,
    write_all,
};
use gemma4::{Checkpoint, DType, Error, Reference, layout};

#[test]
fn prefixes_and_inventory() {
    let e2b = Checkpoint::open(model_dir("tiny-e2b")).unwrap();
    assert_eq!(e2b.prefix(), "model.");
    let rel = Checkpoint::open(model_dir("tiny-e2b-release")).unwrap();
    assert_eq!(rel.prefix(), "model.language_model.");
    let gqa = Checkpoint::open(model_dir("tiny-gqa")).unwrap();
    assert_eq!(gqa.prefix(), "model.");
    assert_eq!(gqa.files().len(), 5, "sharded fixture");

    let names = e2b.tensor_names();
    assert!(names.iter().all(|n| !n.starts_with("model.")));
    assert!(names.contains(&"layers.3.self_attn.k_proj.weight".to_string()));
    assert!(!names.contains(&"layers.7.self_attn.k_proj.weight".to_string()));
    assert_eq!(
        names.len(),
        layout::expected_tensors(e2b.config()).unwrap().len()
    );
    assert!(e2b.unused_tensor_names().is_empty());
    // the release copy carries k_proj / v_proj / k_norm on the 5 shared layers
    assert_eq!(rel.unused_tensor_names().len(), 15);
    assert_eq!(rel.tensor_names().len(), names.len() + 15);

    assert_eq!(
        e2b.shape("layers.0.self_attn.q_proj.weight").unwrap(),
        [48, 64]
    );
    assert_eq!(
        e2b.shape("layers.4.self_attn.o_proj.weight").unwrap(),
        [64, 96]
    );
    assert_eq!(
        e2b.shape("layers.7.mlp.down_proj.weight").unwrap(),
        [64, 64]
    );
    assert_eq!(
        e2b.shape("embed_tokens_per_layer.weight").unwrap(),
        [512, 80]
    );
    assert_eq!(
        gqa.shape("layers.11.self_attn.q_proj.weight").unwrap(),
        [128, 64]
    );
    assert!(matches!(
        e2b.shape("layers.99.x"),
        Err(Error::UnknownTensor { .. })
    ));
}

#[test]
fn bf16_release_and_f32_causal_copies_hold_the_same_weights() {
    let e2b = Checkpoint::open(model_dir("tiny-e2b")).unwrap();
    let rel = Checkpoint::open(model_dir("tiny-e2b-release")).unwrap();
    assert_eq!(rel.storage_dtype("norm.weight").unwrap().name(), "BF16");
    assert_eq!(e2b.storage_dtype("norm.weight").unwrap().name(), "F32");
    for spec in layout::expected_tensors(e2b.config()).unwrap() {
        let a = e2b.load_f32(&spec.name).unwrap();
        let b = rel.load_f32(&spec.name).unwrap();
        assert_eq!(a, b, "{}", spec.name);
        assert_eq!(a.0, spec.shape);
    }
    let t = rel.load("layers.0.mlp.up_proj.weight", DType::F16).unwrap();
    assert_eq!(t.dtype(), DType::F16);
    assert_eq!(t.dims(), [32, 64]);
    let back: Vec<f32> = t
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(
        back,
        e2b.load_f32("layers.0.mlp.up_proj.weight").unwrap().1,
        "bf16 → f16 lossless here"
    );
}

fn open_err(dir: &Path) -> Error {
    Checkpoint::open(dir).expect_err("broken checkpoint must not open")
}

#[test]
fn truncated_file_names_the_tensor() {
    let tmp = copy_fixture("tiny-e2b");
    let p = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    match open_err(tmp.path()) {
        Error::DataOutOfBounds {
            file,
            tensor,
            reason,
        } => {
            assert_eq!(file, p);
            assert!(tensor.starts_with("model."), "{tensor}");
            assert!(reason.contains("truncated"), "{reason}");
        }
        other => panic!("expected DataOutOfBounds, got {other:?}"),
    }
    // cut inside the header
    std::fs::write(&p, &bytes[..200]).unwrap();
    assert!(matches!(open_err(tmp.path()), Error::Header { .. }));
    // shorter than the length field
    std::fs::write(&p, &bytes[..3]).unwrap();
    assert!(matches!(open_err(tmp.path()), Error::Header { .. }));
}

#[test]
fn header_garbage_is_a_header_error() {
    let tmp = copy_fixture("tiny-e2b");
    let p = tmp.path().join("model.safetensors");
    let original = std::fs::read(&p).unwrap();
    for garbage in [[0xffu8; 16], *b"{not json here!}"] {
        let mut bytes = original.clone();
        bytes[8..24].copy_from_slice(&garbage);
        std::fs::write(&p, &bytes).unwrap();
        match open_err(tmp.path()) {
            Error::Header { file, .. } => assert_eq!(file, p),
            other => panic!("expected Header, got {other:?}"),
        }
    }
    // absurd header length
    let mut bytes = std::fs::read(model_dir("tiny-e2b").join("model.safetensors")).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    assert!(matches!(open_err(tmp.path()), Error::Header { .. }));
}

#[test]
fn missing_tensor_is_named() {
    let tmp = copy_fixture("tiny-e2b");
    edit_weights(tmp.path(), |t| {
        t.remove("model.layers.2.mlp.up_proj.weight").unwrap();
    });
    match open_err(tmp.path()) {
        Error::MissingTensor { tensor, .. } => {
            assert_eq!(tensor, "model.layers.2.mlp.up_proj.weight")
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}

#[test]
fn wrong_shape_reports_expected_and_found() {
    let tmp = copy_fixture("tiny-e2b-release");
    edit_weights(tmp.path(), |t| {
        let q = t
            .get_mut("model.language_model.layers.1.self_attn.q_norm.weight")
            .unwrap();
        q.shape = vec![8];
        q.data.truncate(8 * 2);
    });
    match open_err(tmp.path()) {
        Error::WrongShape {
            tensor,
            expected,
            found,
            file,
        } => {
            assert_eq!(
                tensor,
                "model.language_model.layers.1.self_attn.q_norm.weight"
            );
            assert_eq!((expected, found), (vec![16], vec![8]));
            assert!(file.ends_with("model.safetensors"));
        }
        other => panic!("expected WrongShape, got {other:?}"),
    }
}

#[test]
fn nan_and_inf_weights_fail_on_load() {
    for bad in [f32::NAN, f32::INFINITY] {
        let tmp = copy_fixture("tiny-e2b");
        edit_weights(tmp.path(), |t| {
            let g = t.get_mut("model.layers.0.mlp.gate_proj.weight").unwrap();
            let mut v = decode(g);
            v[5] = bad;
            g.data = encode(g.dtype, &v);
        });
        let ck = Checkpoint::open(tmp.path()).expect("headers are fine");
        match ck
            .load("layers.0.mlp.gate_proj.weight", DType::F32)
            .unwrap_err()
        {
            Error::NonFinite { tensor, index, .. } => {
                assert_eq!(tensor, "model.layers.0.mlp.gate_proj.weight");
                assert_eq!(index, 5);
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
        assert!(matches!(
            Reference::load(&ck, DType::F32).unwrap_err(),
            Error::NonFinite { .. }
        ));
        assert!(ck.load("layers.0.mlp.up_proj.weight", DType::F32).is_ok());
    }
}

#[test]
fn non_float_dtype_is_rejected_at_open() {
    let tmp = copy_fixture("tiny-e2b");
    edit_weights(tmp.path(), |t| {
        let old = t.remove("model.norm.weight").unwrap();
        let n = old.shape.iter().product::<usize>();
        t.insert(
            "model.norm.weight".into(),
            RawTensor {
                dtype: safetensors::Dtype::I32,
                shape: old.shape,
                data: vec![0; n * 4],
            },
        );
    });
    match open_err(tmp.path()) {
        Error::UnsupportedDtype { tensor, dtype, .. } => {
            assert_eq!(
                (tensor.as_str(), dtype.as_str()),
                ("model.norm.weight", "I32")
            );
        }
        other => panic!("expected UnsupportedDtype, got {other:?}"),
    }
}

#[test]
fn sharded_index_problems() {
    // a shard listed in the index is gone
    let tmp = copy_fixture("tiny-gqa");
    std::fs::remove_file(tmp.path().join("model-00003-of-00005.safetensors")).unwrap();
    match open_err(tmp.path()) {
        Error::Io { path, .. } => assert!(path.ends_with("model-00003-of-00005.safetensors")),
        other => panic!("expected Io, got {other:?}"),
    }
    // the index names a tensor its shard does not hold
    let tmp = copy_fixture("tiny-gqa");
    let p = tmp.path().join("model-00002-of-00005.safetensors");
    let mut t = read_all(&p);
    let victim = t.keys().next().unwrap().clone();
    t.remove(&victim);
    write_all(&p, &t);
    match open_err(tmp.path()) {
        Error::MissingTensor { tensor, location } => {
            assert_eq!(tensor, victim);
            assert_eq!(location, p);
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}

#[test]
fn directory_without_weights_or_with_bad_config() {
    let tmp = copy_fixture("tiny-e2b");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    assert!(matches!(open_err(tmp.path()), Error::NoWeights { .. }));

    let tmp = copy_fixture("tiny-e2b");
    edit_config(tmp.path(), |v| {
        v["layer_types"][2] = serde_json::json!("local_attention")
    });
    assert!(matches!(
        open_err(tmp.path()),
        Error::UnknownLayerType { index: 2, .. }
    ));

    let tmp = copy_fixture("tiny-e2b");
    std::fs::write(tmp.path().join("config.json"), "{ not json").unwrap();
    assert!(matches!(open_err(tmp.path()), Error::Json { .. }));

    // absurd config values in a real checkpoint directory
    for (field, value) in [
        ("num_kv_shared_layers", serde_json::json!(10)),
        ("num_attention_heads", serde_json::json!(0)),
        ("sliding_window", serde_json::json!(0)),
        ("vocab_size", serde_json::json!(1u64 << 50)),
    ] {
        let tmp = copy_fixture("tiny-e2b");
        edit_config(tmp.path(), |v| v[field] = value.clone());
        match open_err(tmp.path()) {
            Error::InvalidField { field: f, .. } => assert_eq!(f, field),
            other => panic!("{field}: expected InvalidField, got {other:?}"),
        }
    }

    // config and weights disagree: a wider MLP than stored
    let tmp = copy_fixture("tiny-e2b");
    edit_config(tmp.path(), |v| {
        v["intermediate_size"] = serde_json::json!(40)
    });
    assert!(matches!(open_err(tmp.path()), Error::WrongShape { .. }));
}

#[test]
fn reference_rejects_bad_token_ids_and_foreign_state() {
    let ck = Checkpoint::open(model_dir("tiny-e2b")).unwrap();
    let m = Reference::load(&ck, DType::F32).unwrap();
    let mut st = m.new_state();
    match m.forward(&[2, 512], &mut st, None).unwrap_err() {
        Error::BadInput { reason } => assert!(reason.contains("512"), "{reason}"),
        other => panic!("expected BadInput, got {other:?}"),
    }
    assert!(matches!(
        m.forward(&[], &mut st, None),
        Err(Error::BadInput { .. })
    ));
    assert_eq!(st.pos(), 0, "failed calls leave the state alone");
    let pal = Reference::load(
        &Checkpoint::open(model_dir("tiny-pal")).unwrap(),
        DType::F32,
    )
    .unwrap();
    let mut other = pal.new_state();
    assert!(matches!(
        m.forward(&[2], &mut other, None),
        Err(Error::BadInput { .. })
    ));
    let f16 = Reference::load(&ck, DType::F16).unwrap();
    assert!(matches!(
        f16.forward(&[2], &mut st, None),
        Err(Error::BadInput { .. })
    ));
    assert!(matches!(
        Reference::load(&ck, DType::U32),
        Err(Error::BadInput { .. })
    ));
}
