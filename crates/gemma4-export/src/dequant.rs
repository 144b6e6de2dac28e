//! A checkpoint holding exactly the weights a build's graphs compute with.
//!
//! Palettized projections become their dequantised LUT values, other graph weights are rounded to
//! the graph's float dtype, and the LM head is written as a separate (untied) `lm_head.weight`
//! because the graph palettizes it while the host keeps looking tokens up in the exact embedding
//! table. Running the reference forward on this checkpoint gives the logits a correct INT4 (or fp16)
//! chunk set must reproduce — so `parity --reference-weights graph` checks the conversion itself,
//! separately from the quantisation error. Intended for small models (it writes f32 tensors).

use crate::error::{ExportError, Result};
use crate::weights::Weights;
use chunkset::Compression;
use std::collections::BTreeMap;
use std::path::Path;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `config.json` (untied) and `model.safetensors` into `out` (an existing, empty directory).
pub fn write_graph_weights_checkpoint(
    ckpt: &gemma4::Checkpoint,
    compression: Compression,
    fp32: bool,
    out: &Path,
) -> Result<()> {
    let cfg = ckpt.config();
    let w = Weights::new(ckpt, fp32, compression, None);
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let host_tables = ["embed_tokens.weight", "embed_tokens_per_layer.weight"];
    for spec in gemma4::layout::expected_tensors(cfg)? {
        let name = spec.name.clone();
        let values = if host_tables.contains(&name.as_str()) {
            ckpt.load_f32(&name)?.1
        } else if spec.shape.len() == 2 {
            w.graph_values(&name, spec.shape[0], spec.shape[1])?
        } else {
            w.round(ckpt.load_f32(&name)?.1)
        };
        tensors.insert(
            format!("model.{name}").replace("model.lm_head.weight", "lm_head.weight"),
            (spec.shape, values),
        );
    }
    if cfg.tie_word_embeddings() {
        let [v, h] = [cfg.vocab_size(), cfg.hidden_size()];
        let head = w.graph_values("embed_tokens.weight", v, h)?;
        tensors.insert(gemma4::layout::LM_HEAD.into(), (vec![v, h], head));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (shape, v))| {
            let bytes: &[u8] = bytemuck::cast_slice(v.as_slice());
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|t| (k.clone(), t))
                .map_err(|e| ExportError::Internal(format!("tensor {k}: {e}")))
        })
        .collect::<Result<_>>()?;
    let st = out.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &st)
        .map_err(|e| ExportError::Internal(format!("{}: {e}", st.display())))?;

    // A flat text config, untied.
    let mut text = cfg.text_raw().clone();
    if let Some(o) = text.as_object_mut() {
        o.insert("tie_word_embeddings".into(), false.into());
        o.insert(
            "architectures".into(),
            serde_json::json!(["Gemma4ForCausalLM"]),
        );
        o.insert("model_type".into(), "gemma4_text".into());
        if !o.contains_key("per_layer_config") {
            // keep the release-style head dims where the nested config had them at the top
            for k in ["global_head_dim", "num_global_key_value_heads"] {
                if let Some(v) = cfg.raw().get(k)
                    && !o.contains_key(k)
                {
                    o.insert(k.into(), v.clone());
                }
            }
        }
    }
    let cp = out.join("config.json");
    let s = serde_json::to_string_pretty(&text)
        .map_err(|e| ExportError::Internal(format!("{}: {e}", cp.display())))?;
    std::fs::write(&cp, s).map_err(io_err(&cp))?;
    Ok(())
}
