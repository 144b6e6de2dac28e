//! Checkpoint inventory and lazy tensor loading.
//!
//! A checkpoint directory holds `config.json` plus either `model.safetensors` or a sharded set
//! described by `model.safetensors.index.json` (`weight_map`: tensor → shard file). Opening reads
//! the config and the safetensors *headers only* (the data stays memory-mapped), detects the
//! text-decoder prefix (`model.language_model.` for the release layout, `model.` for
//! `Gemma4ForCausalLM`, or none) from where `embed_tokens.weight` lives, and checks that every
//! tensor the config requires ([`crate::layout::expected_tensors`]) is present with the right
//! shape and a float dtype. Unused KV tensors of shared layers are accepted and ignored.
//!
//! Tensors are read one at a time on request ([`Checkpoint::load`], [`Checkpoint::load_f32`]),
//! converted from F32/F16/BF16 to the requested dtype, and rejected if they hold NaN or ±inf.
//! All names in this API are the part after the prefix (`layers.3.self_attn.q_proj.weight`);
//! an untied `lm_head.weight` is found without prefix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::config::Gemma4Config;
use crate::error::{CandleContext, Error, Result};
use crate::layout::{self, LM_HEAD};
use crate::st::{FloatData, StDtype, StFile};

/// Prefixes tried, in order, to locate the text decoder's tensors.
pub const PREFIX_CANDIDATES: [&str; 3] = ["model.language_model.", "model.", ""];

/// An opened, inventoried Gemma 4 checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    config: Gemma4Config,
    prefix: String,
    files: Vec<StFile>,
    /// Full tensor name → index into `files`.
    index: BTreeMap<String, usize>,
}

impl Checkpoint {
    /// Open `dir`: parse the config, read every safetensors header, detect the prefix and check
    /// the required tensors.
    pub fn open(dir: impl AsRef<Path>) -> Result<Checkpoint> {
        let dir = dir.as_ref().to_path_buf();
        let config = Gemma4Config::from_file(&dir.join("config.json"))?;
        let (files, index) = open_weights(&dir)?;
        let prefix = PREFIX_CANDIDATES
            .iter()
            .find(|p| index.contains_key(&format!("{p}embed_tokens.weight")))
            .ok_or_else(|| Error::MissingTensor {
                location: dir.clone(),
                tensor: "model.language_model.embed_tokens.weight (or model.embed_tokens.weight)"
                    .into(),
            })?
            .to_string();
        let ckpt = Checkpoint {
            dir,
            config,
            prefix,
            files,
            index,
        };
        ckpt.check_expected()?;
        Ok(ckpt)
    }

    fn check_expected(&self) -> Result<()> {
        for spec in layout::expected_tensors(&self.config)? {
            let full = self.full_name(&spec.name);
            let Some(&fi) = self.index.get(&full) else {
                return Err(Error::MissingTensor {
                    location: self.dir.clone(),
                    tensor: full,
                });
            };
            let file = &self.files[fi];
            let Some(entry) = file.entries().get(&full) else {
                return Err(Error::MissingTensor {
                    location: file.path().to_path_buf(),
                    tensor: full,
                });
            };
            if entry.shape != spec.shape {
                return Err(Error::WrongShape {
                    file: file.path().to_path_buf(),
                    tensor: full,
                    expected: spec.shape,
                    found: entry.shape.clone(),
                });
            }
            if !entry.dtype.is_loadable_float() {
                return Err(Error::UnsupportedDtype {
                    file: file.path().to_path_buf(),
                    tensor: full,
                    dtype: entry.dtype.name().to_string(),
                });
            }
        }
        Ok(())
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The validated config.
    pub fn config(&self) -> &Gemma4Config {
        &self.config
    }

    /// The detected text-decoder prefix (`model.language_model.`, `model.` or empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The safetensors files, in name order.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(StFile::path).collect()
    }

    /// Full stored name of `name` (prefix added; `lm_head.weight` stays bare).
    pub fn full_name(&self, name: &str) -> String {
        if name == LM_HEAD {
            name.to_string()
        } else {
            format!("{}{name}", self.prefix)
        }
    }

    /// Names (after the prefix) of every stored text-decoder tensor, sorted; includes
    /// `lm_head.weight` if stored, and unused shared-layer K/V tensors if present.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .index
            .keys()
            .filter_map(|k| k.strip_prefix(self.prefix.as_str()))
            .map(str::to_string)
            .collect();
        if self.index.contains_key(LM_HEAD) && !out.iter().any(|n| n == LM_HEAD) {
            out.push(LM_HEAD.to_string());
            out.sort();
        }
        out
    }

    /// Tensors present in the checkpoint that the forward never reads (shared-layer K/V).
    pub fn unused_tensor_names(&self) -> Vec<String> {
        layout::unused_tensors(&self.config)
            .into_iter()
            .filter(|n| self.index.contains_key(&self.full_name(n)))
            .collect()
    }

    fn locate(&self, name: &str) -> Result<(&StFile, String)> {
        let full = self.full_name(name);
        match self.index.get(&full) {
            Some(&fi) => Ok((&self.files[fi], full)),
            None => Err(Error::UnknownTensor {
                dir: self.dir.clone(),
                tensor: name.to_string(),
            }),
        }
    }

    /// Shape of a stored tensor.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let (file, full) = self.locate(name)?;
        file.entries()
            .get(&full)
            .map(|e| e.shape.clone())
            .ok_or_else(|| Error::UnknownTensor {
                dir: self.dir.clone(),
                tensor: name.to_string(),
            })
    }

    /// Storage dtype of a stored tensor (`F32`, `BF16`, …).
    pub fn storage_dtype(&self, name: &str) -> Result<StDtype> {
        let (file, full) = self.locate(name)?;
        file.entries()
            .get(&full)
            .map(|e| e.dtype)
            .ok_or_else(|| Error::UnknownTensor {
                dir: self.dir.clone(),
                tensor: name.to_string(),
            })
    }

    /// File holding a stored tensor.
    pub fn file_of(&self, name: &str) -> Result<&Path> {
        Ok(self.locate(name)?.0.path())
    }

    /// Read one tensor (CPU) converted to `dtype` (F32, F16, BF16 or F64).
    pub fn load(&self, name: &str, dtype: DType) -> Result<Tensor> {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
            return Err(Error::BadInput {
                reason: format!("cannot load tensor `{name}` as {dtype:?}: only float dtypes"),
            });
        }
        let (file, full) = self.locate(name)?;
        let (shape, data) = file.read_float(&full)?;
        let dev = Device::Cpu;
        let op = || format!("load `{full}` from {}", file.path().display());
        let t = match data {
            FloatData::F32(v) => Tensor::from_vec(v, shape, &dev).ctx(op)?,
            FloatData::F16(v) => Tensor::from_vec(v, shape, &dev).ctx(op)?,
            FloatData::BF16(v) => Tensor::from_vec(v, shape, &dev).ctx(op)?,
        };
        t.to_dtype(dtype).ctx(op)
    }

    /// The stored bytes of one tensor (zero copy, storage dtype, little-endian, not assumed
    /// aligned) with its storage dtype and shape, and the file holding it (for error messages).
    pub fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        let (file, full) = self.locate(name)?;
        let (e, bytes) = file.raw(&full)?;
        Ok(RawTensor {
            dtype: e.dtype,
            shape: e.shape.clone(),
            bytes,
            file: file.path(),
            name: full,
        })
    }

    /// Read rows `start..start+count` (along dim 0) of one tensor as f32, touching only those rows.
    pub fn load_rows_f32(&self, name: &str, start: usize, count: usize) -> Result<Vec<f32>> {
        let (file, full) = self.locate(name)?;
        file.read_rows_f32(&full, start, count)
    }

    /// Read one tensor as f32: `(shape, row-major values)`.
    pub fn load_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (file, full) = self.locate(name)?;
        file.read_f32(&full)
    }
}

/// Open the weight files of `dir` and build the full-name → file index.
fn open_weights(dir: &Path) -> Result<(Vec<StFile>, BTreeMap<String, usize>)> {
    let index_path = dir.join("model.safetensors.index.json");
    let single = dir.join("model.safetensors");
    let mut weight_map: Option<BTreeMap<String, String>> = None;
    let file_names: Vec<String> = if index_path.exists() {
        crate::st::require_regular_file(&index_path)?;
        let text = std::fs::read_to_string(&index_path).map_err(|source| Error::Io {
            path: index_path.clone(),
            source,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: index_path.clone(),
            source,
        })?;
        let wm = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::Header {
                file: index_path.clone(),
                reason: "no `weight_map` object".into(),
            })?;
        let mut map = BTreeMap::new();
        for (tensor, f) in wm {
            let fname = f.as_str().ok_or_else(|| Error::Header {
                file: index_path.clone(),
                reason: format!("weight_map entry `{tensor}` is not a file name"),
            })?;
            if fname.contains('/') || fname.contains('\\') || fname.starts_with('.') {
                return Err(Error::Header {
                    file: index_path.clone(),
                    reason: format!(
                        "weight_map entry `{tensor}` points outside the directory: {fname:?}"
                    ),
                });
            }
            map.insert(tensor.clone(), fname.to_string());
        }
        let mut names: Vec<String> = map.values().cloned().collect();
        names.sort();
        names.dedup();
        weight_map = Some(map);
        names
    } else if single.exists() {
        vec!["model.safetensors".to_string()]
    } else {
        return Err(Error::NoWeights {
            dir: dir.to_path_buf(),
        });
    };

    let mut files = Vec::with_capacity(file_names.len());
    let mut index = BTreeMap::new();
    for (fi, name) in file_names.iter().enumerate() {
        let f = StFile::open(&dir.join(name))?;
        for tensor in f.entries().keys() {
            if let Some(prev) = index.insert(tensor.clone(), fi) {
                return Err(Error::Inconsistent {
                    file: f.path().to_path_buf(),
                    tensor: tensor.clone(),
                    reason: format!("also stored in {}", file_names[prev]),
                });
            }
        }
        files.push(f);
    }
    if let Some(map) = weight_map {
        for (tensor, fname) in &map {
            match index.get(tensor) {
                Some(&fi) if &file_names[fi] == fname => {}
                Some(&fi) => {
                    return Err(Error::Inconsistent {
                        file: index_path.clone(),
                        tensor: tensor.clone(),
                        reason: format!("index says {fname}, found in {}", file_names[fi]),
                    });
                }
                None => {
                    return Err(Error::MissingTensor {
                        location: dir.join(fname),
                        tensor: tensor.clone(),
                    });
                }
            }
        }
    }
    Ok((files, index))
}

/// The stored bytes of one checkpoint tensor ([`Checkpoint::raw`]).
#[derive(Debug)]
pub struct RawTensor<'a> {
    /// Storage dtype.
    pub dtype: StDtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major little-endian bytes (`numel × dtype size`, checked when the file was opened).
    pub bytes: &'a [u8],
    /// File holding the tensor.
    pub file: &'a Path,
    /// Full tensor name (with the checkpoint's prefix).
    pub name: String,
}
