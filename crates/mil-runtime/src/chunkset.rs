//! The host side of a chunk set: what the on-device runtime does around the chunks each step.
//!
//! A chunk set directory holds `<chunk>.mlpackage` per chunk, `model_config.json` and the side files
//! (int8 embedding / PLE tables, RoPE tables). [`ChunkSet::open`] reads the config, loads every chunk
//! with a [`Backend`] (the CPU interpreter reads each package back from disk) and the RoPE tables.
//! A [`Session`] then drives one decode step per token:
//!
//! 1. `hidden_states` = scaled token embedding, `per_layer_raw` = scaled PLE row (from an
//!    [`Embedder`]: the int8 side files, or exact tables supplied by the caller);
//! 2. masks per cache policy (shift register: the last `min(pos+1, L)` slots visible, right-aligned;
//!    positional: slots `≤ pos`, and for sliding layers `> pos − W`), fill value −∞, visible 0;
//!    `update_mask` one-hot at `pos`; the four RoPE rows of `pos`;
//! 3. chunks in order: every input is bound by name — step inputs, the chunk's persistent KV buffers
//!    (`X_in`, zero at the start, replaced by `X_out` after the call), or values handed over by earlier
//!    chunks of the step (`hidden_states_out` → `hidden_states`, `per_layer_combined_out` →
//!    `per_layer_combined`, `kv13_*` / `kv14_*`);
//! 4. the last chunk's `token_id` / `token_logit`, and on request the full pre-argmax `logits`
//!    (read by name from the interpreter).
//!
//! Architecture invariant: nothing here knows Gemma's layer structure beyond the I/O names of the
//! runtime contract and `model_config.json`; the chunks are run exactly as written on disk.

use crate::backend::{Backend, BackendKind, LoadOptions, Signature, TensorMap, load_backend};
use crate::error::RuntimeError;
use crate::tensor::Tensor;
use half::f16;
use mil::DType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the pre-argmax logits value in the head chunk.
pub const LOGITS_TAP: &str = "logits";
/// The decode function of every chunk.
pub const DECODE_FUNCTION: &str = "decode_q1";

/// Errors of the host loop.
#[derive(Debug, thiserror::Error)]
pub enum ChunkSetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("{file}: {msg}")]
    SideFile { file: PathBuf, msg: String },
    #[error("chunk {chunk}: {source}")]
    Chunk {
        chunk: String,
        #[source]
        source: Box<RuntimeError>,
    },
    #[error(
        "chunk {chunk}: input `{input}` has no source (not a step input, KV buffer or earlier output)"
    )]
    Unbound { chunk: String, input: String },
    #[error("position {pos} is past the {what} ({limit})")]
    ContextFull {
        pos: usize,
        what: String,
        limit: usize,
    },
    #[error("token {token} is outside the vocabulary ({vocab})")]
    BadToken { token: u32, vocab: usize },
    #[error("chunk {chunk}: output `{output}` missing or malformed")]
    Output { chunk: String, output: String },
}

type R<T> = Result<T, ChunkSetError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ChunkSetError + '_ {
    move |source| ChunkSetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// KV cache policy of one attention kind.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CachePolicy {
    /// Right-aligned shift register of `len` positions.
    ShiftRegister,
    /// `len` absolute positions written by `update_mask`.
    Positional,
}

/// What the host needs from `model_config.json`.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub per_layer_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub sliding_window: usize,
    pub embed_scale: f32,
    pub per_layer_embed_scale: f32,
    pub sliding_cache: CachePolicy,
    pub full_cache: CachePolicy,
    pub chunks: Vec<String>,
    pub variant: String,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub raw: serde_json::Value,
}

impl ModelConfig {
    /// Read `dir/model_config.json`.
    pub fn read(dir: &Path) -> R<ModelConfig> {
        let path = dir.join("model_config.json");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let raw: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ChunkSetError::Config {
                path: path.clone(),
                msg: e.to_string(),
            })?;
        let bad = |msg: String| ChunkSetError::Config {
            path: path.clone(),
            msg,
        };
        let num = |k: &str| -> R<usize> {
            raw.get(k)
                .and_then(serde_json::Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("field `{k}` missing or not an unsigned integer")))
        };
        let float = |k: &str| -> R<f32> {
            raw.get(k)
                .and_then(serde_json::Value::as_f64)
                .map(|v| v as f32)
                .ok_or_else(|| bad(format!("field `{k}` missing or not a number")))
        };
        let policy = |k: &str, default: CachePolicy| -> R<CachePolicy> {
            match raw.get(k).and_then(serde_json::Value::as_str) {
                None => Ok(default),
                Some("shift_register") => Ok(CachePolicy::ShiftRegister),
                Some("positional") => Ok(CachePolicy::Positional),
                Some(o) => Err(bad(format!("field `{k}`: unknown cache policy `{o}`"))),
            }
        };
        let chunks = raw
            .get("chunks")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| bad("field `chunks` missing (not a gemma-convert chunk set?)".into()))?
            .iter()
            .map(|c| {
                c.get("name")
                    .and_then(serde_json::Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| bad("`chunks[].name` missing".into()))
            })
            .collect::<R<Vec<_>>>()?;
        let eos = match raw
            .get("eos_token_ids")
            .and_then(serde_json::Value::as_array)
        {
            Some(a) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect(),
            None => raw
                .get("eos_token_id")
                .and_then(serde_json::Value::as_u64)
                .map(|v| vec![v as u32])
                .unwrap_or_default(),
        };
        Ok(ModelConfig {
            hidden_size: num("hidden_size")?,
            num_layers: num("num_layers").or_else(|_| num("num_hidden_layers"))?,
            per_layer_dim: num("per_layer_dim")?,
            vocab_size: num("vocab_size")?,
            context_length: num("context_length")?,
            sliding_window: num("sliding_window")?,
            embed_scale: float("embed_scale")?,
            per_layer_embed_scale: float("per_layer_embed_scale")?,
            sliding_cache: policy("sliding_cache_policy", CachePolicy::ShiftRegister)?,
            full_cache: policy("full_cache_policy", CachePolicy::Positional)?,
            variant: raw
                .get("variant")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("swa4")
                .to_string(),
            bos_token_id: raw
                .get("bos_token_id")
                .and_then(serde_json::Value::as_u64)
                .map(|v| v as u32),
            eos_token_ids: eos,
            chunks,
            raw,
        })
    }
}

/// Token → `hidden_states` row (scaled embedding, length H) and `per_layer_raw` row (scaled PLE,
/// length L·P).
pub trait Embedder {
    fn hidden(&self, token: u32) -> Result<Vec<f32>, ChunkSetError>;
    fn ple_raw(&self, token: u32) -> Result<Vec<f32>, ChunkSetError>;
}

/// An int8 row table with fp16 per-row max-abs scales (`<stem>_q8.bin`, `<stem>_scales.bin`).
/// The int8 table is memory-mapped (the E2B PLE table is 2.3 GB): only rows used are paged in.
struct Int8Table {
    q: memmap2::Mmap,
    scales: Vec<f16>,
    cols: usize,
    file: PathBuf,
}

impl Int8Table {
    fn open(dir: &Path, stem: &str, cols: usize) -> R<Int8Table> {
        let qp = dir.join(format!("{stem}_q8.bin"));
        let sp = dir.join(format!("{stem}_scales.bin"));
        let qf = std::fs::File::open(&qp).map_err(io_err(&qp))?;
        // SAFETY: the mapping is read-only; a side file truncated by another process while mapped
        // is outside what this tool supports (like any reader of a file under modification).
        let q = unsafe { memmap2::Mmap::map(&qf) }.map_err(io_err(&qp))?;
        let s = std::fs::read(&sp).map_err(io_err(&sp))?;
        if cols == 0 || q.len() % cols != 0 || s.len() != 2 * (q.len() / cols) {
            return Err(ChunkSetError::SideFile {
                file: qp,
                msg: format!(
                    "{} bytes of int8 and {} bytes of scales do not form rows of {cols}",
                    q.len(),
                    s.len()
                ),
            });
        }
        Ok(Int8Table {
            q,
            scales: s
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
            cols,
            file: qp,
        })
    }

    fn row(&self, r: usize, scale: f32) -> R<Vec<f32>> {
        let s = self.scales.get(r).ok_or_else(|| ChunkSetError::SideFile {
            file: self.file.clone(),
            msg: format!("row {r} out of range ({} rows)", self.scales.len()),
        })?;
        let k = s.to_f32() / 127.0 * scale;
        Ok(self.q[r * self.cols..(r + 1) * self.cols]
            .iter()
            .map(|&q| f32::from(q as i8) * k)
            .collect())
    }
}

/// The embedder of the published set: int8 tables dequantised as `q·s/127·scale`.
pub struct SideFileEmbedder {
    embed: Int8Table,
    ple: Option<Int8Table>,
    embed_scale: f32,
    ple_scale: f32,
}

impl SideFileEmbedder {
    /// Open the tables of the set in `dir`.
    pub fn open(dir: &Path, cfg: &ModelConfig) -> R<SideFileEmbedder> {
        let embed = Int8Table::open(dir, "embed_tokens", cfg.hidden_size)?;
        let ple = if cfg.per_layer_dim > 0 {
            Some(Int8Table::open(
                dir,
                "embed_tokens_per_layer",
                cfg.per_layer_dim * cfg.num_layers,
            )?)
        } else {
            None
        };
        Ok(SideFileEmbedder {
            embed,
            ple,
            embed_scale: cfg.embed_scale,
            ple_scale: cfg.per_layer_embed_scale,
        })
    }
}

impl Embedder for SideFileEmbedder {
    fn hidden(&self, token: u32) -> R<Vec<f32>> {
        self.embed.row(token as usize, self.embed_scale)
    }
    fn ple_raw(&self, token: u32) -> R<Vec<f32>> {
        match &self.ple {
            Some(t) => t.row(token as usize, self.ple_scale),
            None => Ok(Vec::new()),
        }
    }
}

/// One RoPE table `[rows, dim]` from a `.npy` side file (fp16, or fp32 in fp32 builds).
struct RopeTable {
    rows: usize,
    dim: usize,
    data: Vec<f32>,
}

fn read_npy_f16(path: &Path) -> R<RopeTable> {
    let b = std::fs::read(path).map_err(io_err(path))?;
    let bad = |msg: &str| ChunkSetError::SideFile {
        file: path.to_path_buf(),
        msg: msg.to_string(),
    };
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file"));
    }
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = b
        .get(10..10 + hl)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    let width = if header.contains("'<f2'") {
        2
    } else if header.contains("'<f4'") {
        4
    } else {
        return Err(bad("expected little-endian fp16 ('<f2') or fp32 ('<f4')"));
    };
    let dims: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| s.split(',').filter_map(|d| d.trim().parse().ok()).collect())
        .unwrap_or_default();
    let [rows, dim] = dims[..] else {
        return Err(bad("expected a 2-D table"));
    };
    let payload = &b[10 + hl..];
    if payload.len() != rows * dim * width {
        return Err(bad("payload size does not match the shape"));
    }
    let data = if width == 2 {
        payload
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    } else {
        payload
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    Ok(RopeTable { rows, dim, data })
}

struct LoadedChunk {
    name: String,
    backend: Box<dyn Backend>,
    sig: Signature,
}

/// A chunk set loaded for decoding.
pub struct ChunkSet {
    dir: PathBuf,
    config: ModelConfig,
    chunks: Vec<LoadedChunk>,
    rope: BTreeMap<&'static str, RopeTable>,
    backend_name: String,
}

impl ChunkSet {
    /// Load the set in `dir` with the given backend kind.
    pub fn open(dir: &Path, kind: BackendKind) -> R<ChunkSet> {
        let config = ModelConfig::read(dir)?;
        let mut chunks = Vec::new();
        let mut backend_name = String::new();
        for name in &config.chunks {
            let pkg = dir.join(format!("{name}.mlpackage"));
            let chunk_err = |source| ChunkSetError::Chunk {
                chunk: name.clone(),
                source: Box::new(source),
            };
            let backend = load_backend(kind, &pkg, &LoadOptions::default()).map_err(chunk_err)?;
            let sig = backend.signature(DECODE_FUNCTION).map_err(chunk_err)?;
            backend_name = backend.name().to_string();
            chunks.push(LoadedChunk {
                name: name.clone(),
                backend,
                sig,
            });
        }
        let mut rope = BTreeMap::new();
        for (key, file) in [
            ("cos_s", "cos_sliding.npy"),
            ("sin_s", "sin_sliding.npy"),
            ("cos_f", "cos_full.npy"),
            ("sin_f", "sin_full.npy"),
        ] {
            let p = dir.join(file);
            if p.exists() {
                rope.insert(key, read_npy_f16(&p)?);
            }
        }
        Ok(ChunkSet {
            dir: dir.to_path_buf(),
            config,
            chunks,
            rope,
            backend_name,
        })
    }

    /// The parsed `model_config.json`.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The set's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Chunk names in call order.
    pub fn chunk_names(&self) -> Vec<String> {
        self.chunks.iter().map(|c| c.name.clone()).collect()
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &str {
        &self.backend_name
    }

    /// A fresh decoding session (all KV buffers zero, position 0).
    pub fn session(&mut self) -> Session<'_> {
        Session {
            set: self,
            kv: BTreeMap::new(),
            pos: 0,
        }
    }
}

/// What one decode step produced.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// The head chunk's `token_id` (in-graph argmax).
    pub token_id: u32,
    /// The head chunk's `token_logit`.
    pub token_logit: f32,
    /// Full-vocabulary softcapped logits, when requested.
    pub logits: Option<Vec<f32>>,
    /// Wall time of each chunk call, in chunk order.
    pub chunk_times: Vec<Duration>,
}

/// A decoding session over a [`ChunkSet`].
pub struct Session<'a> {
    set: &'a mut ChunkSet,
    kv: BTreeMap<(usize, String), Tensor>,
    pos: usize,
}

fn tensor_of(dtype: DType, shape: &[usize], v: &[f32]) -> Result<Tensor, RuntimeError> {
    match dtype {
        DType::F32 => Tensor::from_f32(shape, v.to_vec()),
        _ => Tensor::f16_from_f32(shape, v),
    }
}

impl Session<'_> {
    /// The next position to be written.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn mask(&self, len: usize, policy: CachePolicy, window: Option<usize>) -> Vec<f32> {
        let pos = self.pos;
        (0..len)
            .map(|j| {
                let visible = match policy {
                    CachePolicy::ShiftRegister => j + (pos + 1).min(len) >= len,
                    CachePolicy::Positional => j <= pos && window.is_none_or(|w| j + w > pos),
                };
                if visible { 0.0 } else { f32::NEG_INFINITY }
            })
            .collect()
    }

    fn rope_row(&self, key: &'static str) -> R<Vec<f32>> {
        let t = self
            .set
            .rope
            .get(key)
            .ok_or_else(|| ChunkSetError::SideFile {
                file: self.set.dir.join(format!("{key}.npy")),
                msg: "RoPE table missing".into(),
            })?;
        if self.pos >= t.rows {
            return Err(ChunkSetError::ContextFull {
                pos: self.pos,
                what: format!("RoPE table ({key})"),
                limit: t.rows,
            });
        }
        Ok(t.data[self.pos * t.dim..(self.pos + 1) * t.dim].to_vec())
    }

    /// Run one decode step on `token` at the current position, then advance.
    pub fn step(
        &mut self,
        token: u32,
        embedder: &dyn Embedder,
        want_logits: bool,
    ) -> R<StepOutput> {
        let cfg = self.set.config.clone();
        if token as usize >= cfg.vocab_size {
            return Err(ChunkSetError::BadToken {
                token,
                vocab: cfg.vocab_size,
            });
        }
        let hidden = embedder.hidden(token)?;
        let ple_raw = embedder.ple_raw(token)?;
        let mut handoff: TensorMap = TensorMap::new();
        let mut times = Vec::with_capacity(self.set.chunks.len());
        let mut token_out = None;
        let nchunks = self.set.chunks.len();
        for ci in 0..nchunks {
            let (name, sig) = {
                let c = &self.set.chunks[ci];
                (c.name.clone(), c.sig.clone())
            };
            let cerr = |source| ChunkSetError::Chunk {
                chunk: name.clone(),
                source: Box::new(source),
            };
            let mut inputs = TensorMap::new();
            for spec in &sig.inputs {
                let Some(ty) = &spec.ty else {
                    return Err(ChunkSetError::Unbound {
                        chunk: name.clone(),
                        input: spec.name.clone(),
                    });
                };
                let shape = ty.static_shape().unwrap_or_default();
                let dt = ty.dtype;
                let n = spec.name.as_str();
                let make = |v: &[f32]| tensor_of(dt, &shape, v).map_err(cerr);
                let t = match n {
                    "hidden_states" if ci == 0 => make(&hidden)?,
                    "per_layer_raw" => make(&ple_raw)?,
                    "causal_mask_full" | "causal_mask_sliding" => {
                        let len = shape.last().copied().unwrap_or(0);
                        let (policy, window) = if n == "causal_mask_full" {
                            (cfg.full_cache, None)
                        } else {
                            (cfg.sliding_cache, Some(cfg.sliding_window))
                        };
                        if policy == CachePolicy::Positional && self.pos >= len {
                            return Err(ChunkSetError::ContextFull {
                                pos: self.pos,
                                what: format!("context length of {n}"),
                                limit: len,
                            });
                        }
                        make(&self.mask(len, policy, window))?
                    }
                    "update_mask" => {
                        let len: usize = shape.iter().product();
                        let mut v = vec![0.0; len];
                        if let Some(x) = v.get_mut(self.pos.min(len.saturating_sub(1))) {
                            *x = 1.0;
                        }
                        make(&v)?
                    }
                    "cos_s" | "sin_s" | "cos_f" | "sin_f" => {
                        let key = match n {
                            "cos_s" => "cos_s",
                            "sin_s" => "sin_s",
                            "cos_f" => "cos_f",
                            _ => "sin_f",
                        };
                        make(&self.rope_row(key)?)?
                    }
                    _ if n.ends_with("_in") => match self.kv.get(&(ci, n.to_string())) {
                        Some(t) => t.clone(),
                        None => make(&vec![0.0; shape.iter().product()])?,
                    },
                    _ => {
                        let from = match n {
                            "hidden_states" => "hidden_states_out",
                            "per_layer_combined" => "per_layer_combined_out",
                            other => other,
                        };
                        handoff
                            .get(from)
                            .cloned()
                            .ok_or_else(|| ChunkSetError::Unbound {
                                chunk: name.clone(),
                                input: n.to_string(),
                            })?
                    }
                };
                inputs.insert(n.to_string(), t);
            }
            let last = ci + 1 == nchunks;
            let taps: Vec<&str> = if last && want_logits {
                vec![LOGITS_TAP]
            } else {
                vec![]
            };
            let t0 = Instant::now();
            let (outs, tapped) = self.set.chunks[ci]
                .backend
                .predict_with_taps(DECODE_FUNCTION, &inputs, &taps)
                .map_err(cerr)?;
            times.push(t0.elapsed());
            for (k, v) in outs {
                if let Some(stem) = k
                    .strip_suffix("_out")
                    .filter(|s| s.starts_with('K') || s.starts_with('V'))
                {
                    self.kv.insert((ci, format!("{stem}_in")), v);
                } else {
                    handoff.insert(k, v);
                }
            }
            if last {
                let out_err = |o: &str| ChunkSetError::Output {
                    chunk: name.clone(),
                    output: o.to_string(),
                };
                let tok = handoff
                    .get("token_id")
                    .and_then(|t| t.to_i64().ok())
                    .and_then(|v| v.first().copied())
                    .ok_or_else(|| out_err("token_id"))?;
                let logit = handoff
                    .get("token_logit")
                    .and_then(|t| t.to_f32().ok().and_then(|v| v.first().copied()))
                    .ok_or_else(|| out_err("token_logit"))?;
                let logits = if want_logits {
                    Some(
                        tapped
                            .get(LOGITS_TAP)
                            .and_then(|t| t.to_f32().ok().map(|v| v.into_owned()))
                            .ok_or_else(|| out_err(LOGITS_TAP))?,
                    )
                } else {
                    None
                };
                token_out = Some(StepOutput {
                    token_id: tok as u32,
                    token_logit: logit,
                    logits,
                    chunk_times: Vec::new(),
                });
            }
        }
        self.pos += 1;
        let mut out = token_out.ok_or_else(|| ChunkSetError::Output {
            chunk: "(none)".into(),
            output: "token_id".into(),
        })?;
        out.chunk_times = times;
        Ok(out)
    }
}
