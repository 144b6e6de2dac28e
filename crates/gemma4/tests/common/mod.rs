//! Shared helpers for the gemma4 integration tests: fixture paths, golden runs, and building
//! broken checkpoints in temp dirs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gemma4::{Checkpoint, Comparison, DType, Golden, Reference, Taps, compare_rows};

/// `fixtures/` at the workspace root.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// `fixtures/models/<name>`.
pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// `fixtures/goldens/<name>.safetensors`, loaded.
pub fn golden(name: &str) -> Golden {
    Golden::load(
        fixtures()
            .join("goldens")
            .join(format!("{name}.safetensors")),
    )
    .expect("golden loads")
}

/// The four fixture models.
pub const MODELS: [&str; 4] = ["tiny-e2b", "tiny-e2b-release", "tiny-gqa", "tiny-pal"];

/// Comparisons of one reference run against a golden.
#[derive(Debug)]
pub struct Parity {
    pub prefill: Comparison,
    pub decode: Comparison,
    /// One comparison per layer output tap (prompt only).
    pub layers: Vec<Comparison>,
    pub final_hidden: Option<Comparison>,
}

/// Run prefill over the golden prompt, then teacher-forced cached decode over
/// `decode_input_ids`, and compare everything with the golden.
pub fn run_parity(dir: &Path, g: &Golden, dtype: DType) -> gemma4::Result<Parity> {
    let ckpt = Checkpoint::open(dir)?;
    let model = Reference::load(&ckpt, dtype)?;
    run_parity_with(&model, g)
}

pub fn run_parity_with(model: &Reference, g: &Golden) -> gemma4::Result<Parity> {
    let mut state = model.new_state();
    let mut taps = Taps::default();
    let logits = model.forward(&g.input_ids, &mut state, Some(&mut taps))?;
    let got: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    let prefill = compare_rows(&got, &g.logits, g.vocab)?;
    let mut dec = Vec::with_capacity(g.decode_logits.len());
    for &id in &g.decode_input_ids {
        let l = model.forward(&[id], &mut state, None)?;
        dec.extend(l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    let decode = compare_rows(&dec, &g.decode_logits, g.vocab)?;
    let mut layers = Vec::new();
    if let Some((l, h, want)) = &g.layer_outputs {
        assert_eq!(*l, taps.layer_outputs.len(), "one tap per layer");
        let s = g.input_ids.len();
        for (i, t) in taps.layer_outputs.iter().enumerate() {
            let got: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            layers.push(compare_rows(&got, &want[i * s * h..(i + 1) * s * h], *h)?);
        }
    }
    let final_hidden = match (&g.final_hidden, &taps.final_hidden) {
        (Some((h, want)), Some(t)) => {
            let got: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            Some(compare_rows(&got, want, *h)?)
        }
        _ => None,
    };
    Ok(Parity {
        prefill,
        decode,
        layers,
        final_hidden,
    })
}

/// Copy a fixture model into a fresh temp dir.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(model_dir(name)).expect("fixture dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).expect("copy");
    }
    tmp
}

/// Rewrite `config.json` of `dir` through `f`.
pub fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// A tensor read back for rewriting: dtype, shape, raw little-endian bytes.
pub struct RawTensor {
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Read every tensor of a safetensors file.
pub fn read_all(path: &Path) -> BTreeMap<String, RawTensor> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                RawTensor {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    data: v.data().to_vec(),
                },
            )
        })
        .collect()
}

/// Write tensors as a safetensors file.
pub fn write_all(path: &Path, tensors: &BTreeMap<String, RawTensor>) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Apply `f` to the tensors of `dir/model.safetensors` and write it back.
pub fn edit_weights(dir: &Path, f: impl FnOnce(&mut BTreeMap<String, RawTensor>)) {
    let p = dir.join("model.safetensors");
    let mut t = read_all(&p);
    f(&mut t);
    write_all(&p, &t);
}

/// Encode f32 values in a tensor's dtype (F32 or BF16).
pub fn encode(dtype: safetensors::Dtype, vals: &[f32]) -> Vec<u8> {
    match dtype {
        safetensors::Dtype::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        safetensors::Dtype::BF16 => vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        safetensors::Dtype::F16 => vals
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        other => panic!("encode: unsupported {other:?}"),
    }
}

/// Decode a tensor's bytes to f32 (F32 or BF16 or F16).
pub fn decode(t: &RawTensor) -> Vec<f32> {
    match t.dtype {
        safetensors::Dtype::F32 => t
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        safetensors::Dtype::BF16 => t
            .data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        safetensors::Dtype::F16 => t
            .data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => panic!("decode: unsupported {other:?}"),
    }
}
