//! Golden files made by HF transformers (spec/cli-contract.md, "Golden file").
//!
//! | key | dtype, shape |
//! |---|---|
//! | `input_ids` | i64 `[1, S]` (BOS first) |
//! | `logits` | f32 `[1, S, V]` |
//! | `decode_input_ids` | i64 `[N]` (fed at positions S..S+N−1) |
//! | `decode_logits` | f32 `[N, V]` |
//! | `final_hidden` (optional) | f32 `[S, H]` or HF's `[1, S, H]` |
//! | `layer_outputs` (optional) | f32 `[L, S, H]` or HF's `[L, 1, S, H]` |
//!
//! Shapes are checked against each other on load; token ids must fit in `u32`. Other keys (e.g.
//! `rope_inv_freq.*` of `scripts/make_fixtures.py`) are not read; [`Golden::unknown_keys`] lists
//! them so a report can say so.
//!
//! A two-turn golden (`<model>.turns.safetensors`, `scripts/make_turn_goldens.py`) holds several such
//! conversations under key prefixes: `turn1.` (the first turn) and one `turn2.<case>.` per case listed
//! in the metadata key `turns` ([`Turns`]). Each turn's `input_ids` is its whole input, history
//! included, and its logits are HF's from scratch over that input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::st::StFile;

/// A loaded golden file.
#[derive(Debug, Clone)]
pub struct Golden {
    /// File it came from.
    pub path: PathBuf,
    /// Prompt ids (S).
    pub input_ids: Vec<u32>,
    /// Vocabulary size V.
    pub vocab: usize,
    /// Prefill logits, row-major `[S, V]`.
    pub logits: Vec<f32>,
    /// Greedy decode ids (N).
    pub decode_input_ids: Vec<u32>,
    /// Decode logits, row-major `[N, V]`.
    pub decode_logits: Vec<f32>,
    /// `(H, [S, H] row-major)` if present.
    pub final_hidden: Option<(usize, Vec<f32>)>,
    /// `(L, H, [L, S, H] row-major)` if present.
    pub layer_outputs: Option<(usize, usize, Vec<f32>)>,
    /// The safetensors `__metadata__` (generator versions, seed, …).
    pub metadata: BTreeMap<String, String>,
    /// Keys of the file that are none of the above (ignored), sorted.
    pub unknown_keys: Vec<String>,
}

/// Keys a golden file may hold.
pub const GOLDEN_KEYS: [&str; 6] = [
    "input_ids",
    "logits",
    "decode_input_ids",
    "decode_logits",
    "final_hidden",
    "layer_outputs",
];

impl Golden {
    /// Load and cross-check a golden safetensors file.
    pub fn load(path: impl AsRef<Path>) -> Result<Golden> {
        let path = path.as_ref();
        let f = StFile::open(path)?;
        Golden::from_file(path, &f, "")
    }

    /// The golden stored under key prefix `prefix` (`"turn1."`) of an opened file.
    fn from_file(path: &Path, f: &StFile, prefix: &str) -> Result<Golden> {
        let key = |k: &str| format!("{prefix}{k}");
        let bad = |tensor: &str, reason: String| Error::Inconsistent {
            file: path.to_path_buf(),
            tensor: tensor.to_string(),
            reason,
        };
        let ids = |name: &str| -> Result<(Vec<usize>, Vec<u32>)> {
            let (shape, v) = f.read_i64(name)?;
            let v = v
                .iter()
                .map(|&x| {
                    u32::try_from(x).map_err(|_| bad(name, format!("token id {x} out of range")))
                })
                .collect::<Result<Vec<u32>>>()?;
            Ok((shape, v))
        };
        let (ishape, input_ids) = ids(&key("input_ids"))?;
        if ishape.len() != 2 || ishape[0] != 1 {
            return Err(bad(
                &key("input_ids"),
                format!("shape {ishape:?}, expected [1, S]"),
            ));
        }
        let s = input_ids.len();
        let (lshape, logits) = f.read_f32(&key("logits"))?;
        if lshape.len() != 3 || lshape[0] != 1 || lshape[1] != s {
            return Err(bad(
                &key("logits"),
                format!("shape {lshape:?}, expected [1, {s}, V]"),
            ));
        }
        let vocab = lshape[2];
        let (dshape, decode_input_ids) = ids(&key("decode_input_ids"))?;
        if dshape.len() != 1 {
            return Err(bad(
                &key("decode_input_ids"),
                format!("shape {dshape:?}, expected [N]"),
            ));
        }
        let n = decode_input_ids.len();
        let (dlshape, decode_logits) = f.read_f32(&key("decode_logits"))?;
        if dlshape != [n, vocab] {
            return Err(bad(
                &key("decode_logits"),
                format!("shape {dlshape:?}, expected [{n}, {vocab}]"),
            ));
        }
        let final_hidden = if f.entries().contains_key(&key("final_hidden")) {
            let (shape, v) = f.read_f32(&key("final_hidden"))?;
            match shape[..] {
                [ss, h] | [1, ss, h] if ss == s => Some((h, v)),
                _ => {
                    return Err(bad(
                        &key("final_hidden"),
                        format!("shape {shape:?}, expected [{s}, H] or [1, {s}, H]"),
                    ));
                }
            }
        } else {
            None
        };
        let layer_outputs = if f.entries().contains_key(&key("layer_outputs")) {
            let (shape, v) = f.read_f32(&key("layer_outputs"))?;
            match shape[..] {
                [l, ss, h] | [l, 1, ss, h] if ss == s => Some((l, h, v)),
                _ => {
                    return Err(bad(
                        &key("layer_outputs"),
                        format!("shape {shape:?}, expected [L, {s}, H] or [L, 1, {s}, H]"),
                    ));
                }
            }
        } else {
            None
        };
        let unknown_keys = f
            .entries()
            .keys()
            .filter_map(|k| k.strip_prefix(prefix))
            .filter(|k| !GOLDEN_KEYS.contains(k))
            .map(|k| format!("{prefix}{k}"))
            .collect();
        Ok(Golden {
            path: path.to_path_buf(),
            input_ids,
            vocab,
            logits,
            decode_input_ids,
            decode_logits,
            final_hidden,
            layer_outputs,
            metadata: f.metadata().clone(),
            unknown_keys,
        })
    }
}

/// A two-turn golden: the first turn and the second-turn cases (see the module doc).
#[derive(Debug, Clone)]
pub struct Turns {
    /// File it came from.
    pub path: PathBuf,
    /// The first turn.
    pub turn1: Golden,
    /// `(case name, turn)` in the order of the metadata key `turns` (names without the `turn2.`
    /// prefix).
    pub turn2: Vec<(String, Golden)>,
    /// The safetensors `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

impl Turns {
    /// Load and cross-check a two-turn golden file.
    pub fn load(path: impl AsRef<Path>) -> Result<Turns> {
        let path = path.as_ref();
        let f = StFile::open(path)?;
        let bad = |reason: String| Error::Inconsistent {
            file: path.to_path_buf(),
            tensor: "__metadata__.turns".into(),
            reason,
        };
        let turn1 = Golden::from_file(path, &f, "turn1.")?;
        let list = f.metadata().get("turns").ok_or_else(|| {
            bad("missing (a comma-separated list of `turn2.<case>` prefixes)".into())
        })?;
        let mut turn2 = Vec::new();
        for prefix in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let case = prefix
                .strip_prefix("turn2.")
                .ok_or_else(|| bad(format!("`{prefix}` does not start with `turn2.`")))?;
            let g = Golden::from_file(path, &f, &format!("{prefix}."))?;
            if g.vocab != turn1.vocab {
                return Err(bad(format!(
                    "`{prefix}` has vocabulary {}, turn 1 has {}",
                    g.vocab, turn1.vocab
                )));
            }
            turn2.push((case.to_string(), g));
        }
        if turn2.is_empty() {
            return Err(bad("lists no second turn".into()));
        }
        Ok(Turns {
            path: path.to_path_buf(),
            turn1,
            turn2,
            metadata: f.metadata().clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::{Dtype, TensorView};

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn i64s(v: &[i64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// A golden of S = 2 prompt tokens, V = 3, N = 1 decode step, H = 2, L = 2, with the optional
    /// tensors in `layout` (`false`: without batch dimension, `true`: HF's with it) and an extra key.
    fn write(path: &Path, batched: bool) {
        let (s, v, h, l) = (2usize, 3usize, 2usize, 2usize);
        let ids = i64s(&[2, 5]);
        let logits = f32s(&vec![0.5; s * v]);
        let dids = i64s(&[1]);
        let dlogits = f32s(&vec![0.25; v]);
        let fh = f32s(&(0..s * h).map(|x| x as f32).collect::<Vec<_>>());
        let lo = f32s(&(0..l * s * h).map(|x| x as f32).collect::<Vec<_>>());
        let extra = f32s(&[1.0, 2.0]);
        let fh_shape = if batched { vec![1, s, h] } else { vec![s, h] };
        let lo_shape = if batched {
            vec![l, 1, s, h]
        } else {
            vec![l, s, h]
        };
        let views = vec![
            (
                "input_ids",
                TensorView::new(Dtype::I64, vec![1, s], &ids).unwrap(),
            ),
            (
                "logits",
                TensorView::new(Dtype::F32, vec![1, s, v], &logits).unwrap(),
            ),
            (
                "decode_input_ids",
                TensorView::new(Dtype::I64, vec![1], &dids).unwrap(),
            ),
            (
                "decode_logits",
                TensorView::new(Dtype::F32, vec![1, v], &dlogits).unwrap(),
            ),
            (
                "final_hidden",
                TensorView::new(Dtype::F32, fh_shape, &fh).unwrap(),
            ),
            (
                "layer_outputs",
                TensorView::new(Dtype::F32, lo_shape, &lo).unwrap(),
            ),
            (
                "rope_inv_freq.full",
                TensorView::new(Dtype::F32, vec![2], &extra).unwrap(),
            ),
        ];
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    #[test]
    fn optional_tensors_load_with_or_without_hf_batch_dimension_and_extra_keys_are_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut loaded = Vec::new();
        for batched in [false, true] {
            let p = tmp.path().join(format!("g{batched}.safetensors"));
            write(&p, batched);
            let g = Golden::load(&p).unwrap_or_else(|e| panic!("batched={batched}: {e}"));
            assert_eq!(g.final_hidden.as_ref().map(|x| x.0), Some(2));
            assert_eq!(g.layer_outputs.as_ref().map(|x| (x.0, x.1)), Some((2, 2)));
            assert_eq!(g.unknown_keys, ["rope_inv_freq.full"]);
            loaded.push((g.final_hidden, g.layer_outputs));
        }
        assert_eq!(loaded[0], loaded[1], "same values either way");
    }
}
