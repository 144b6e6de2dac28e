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
//! Batched prefill ([`Session::prefill`], sets built with `--functions …,prefill:N`), as the Swift
//! runtime does it: the first `min(len, N)` prompt tokens, padded to `N`, go through the
//! `prefill_chunk*` packages in one call each (strictly causal `causal_mask`, `last_position_mask`
//! one-hot at `len − 1`, RoPE rows `0..N`); their per-layer K/V outputs are then written into the
//! decode caches by `model_config.json`'s slot maps: shift-register slots receive the last
//! `min(len, L)` positions right-aligned, positional slots positions `0..len` (true head-dim columns
//! only), and decoding continues at position `len`.
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
/// The function of a `prefill_chunk*` package.
pub const PREFILL_FUNCTION: &str = "main";

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
    #[error("prefill: {0}")]
    Prefill(String),
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

/// Attention kind of a KV cache slot.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SlotKind {
    Sliding,
    Full,
}

impl SlotKind {
    fn parse(s: &str) -> Option<SlotKind> {
        match s {
            "sliding" => Some(SlotKind::Sliding),
            "full" => Some(SlotKind::Full),
            _ => None,
        }
    }

    /// The infix of the cache buffers (`K_sliding_in`, `K_full_in`).
    pub fn label(self) -> &'static str {
        match self {
            SlotKind::Sliding => "sliding",
            SlotKind::Full => "full",
        }
    }
}

/// Layer `layer`'s K/V live in slot `slot` of a decode chunk's `K_<kind>_*` / `V_<kind>_*` buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvSlot {
    pub layer: usize,
    pub kind: SlotKind,
    pub slot: usize,
}

/// A prefill chunk and the layer behind each of its K/V outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefillChunkInfo {
    pub name: String,
    /// `(layer, K output name, V output name)`.
    pub kv: Vec<(usize, String, String)>,
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
    /// Per decode chunk, its KV slot map (empty when the set predates `kv_slots`).
    pub chunk_kv_slots: Vec<Vec<KvSlot>>,
    /// The prefill chunks, when the set was built with a prefill function.
    pub prefill_chunks: Vec<PrefillChunkInfo>,
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
        let chunk_list = raw
            .get("chunks")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| bad("field `chunks` missing (not a gemma-convert chunk set?)".into()))?;
        let chunks = chunk_list
            .iter()
            .map(|c| {
                c.get("name")
                    .and_then(serde_json::Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| bad("`chunks[].name` missing".into()))
            })
            .collect::<R<Vec<_>>>()?;
        let uint = |v: &serde_json::Value, k: &str, at: &str| -> R<usize> {
            v.get(k)
                .and_then(serde_json::Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("`{at}.{k}` missing or not an unsigned integer")))
        };
        let kind = |v: &serde_json::Value, at: &str| -> R<SlotKind> {
            v.get("kind")
                .and_then(serde_json::Value::as_str)
                .and_then(SlotKind::parse)
                .ok_or_else(|| bad(format!("`{at}.kind` must be \"sliding\" or \"full\"")))
        };
        let mut chunk_kv_slots = Vec::new();
        for c in chunk_list {
            let mut slots = Vec::new();
            for s in c
                .get("kv_slots")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
            {
                slots.push(KvSlot {
                    layer: uint(s, "layer", "chunks[].kv_slots[]")?,
                    kind: kind(s, "chunks[].kv_slots[]")?,
                    slot: uint(s, "slot", "chunks[].kv_slots[]")?,
                });
            }
            chunk_kv_slots.push(slots);
        }
        let mut prefill_chunks = Vec::new();
        for c in raw
            .get("prefill_chunks")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = c
                .get("name")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| bad("`prefill_chunks[].name` missing".into()))?
                .to_string();
            let mut kv = Vec::new();
            for e in c
                .get("kv")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
            {
                let text = |k: &str| -> R<String> {
                    e.get(k)
                        .and_then(serde_json::Value::as_str)
                        .map(String::from)
                        .ok_or_else(|| bad(format!("`prefill_chunks[].kv[].{k}` missing")))
                };
                kv.push((
                    uint(e, "layer", "prefill_chunks[].kv[]")?,
                    text("k")?,
                    text("v")?,
                ));
            }
            prefill_chunks.push(PrefillChunkInfo { name, kv });
        }
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
            chunk_kv_slots,
            prefill_chunks,
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
    /// Loaded on request by [`ChunkSet::load_prefill`].
    prefill: Vec<LoadedChunk>,
    kind: BackendKind,
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
            prefill: Vec::new(),
            kind,
            rope,
            backend_name,
        })
    }

    /// The parsed `model_config.json`.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Load the set's `prefill_chunk*` packages (needed by [`Session::prefill`]); returns the
    /// prefill length `N`. Sets built without a prefill function give [`ChunkSetError::Prefill`].
    pub fn load_prefill(&mut self) -> R<usize> {
        if self.config.prefill_chunks.is_empty() {
            return Err(ChunkSetError::Prefill(format!(
                "{} has no prefill chunks (build it with --functions decode,prefill:N)",
                self.dir.display()
            )));
        }
        if self.config.chunk_kv_slots.iter().all(Vec::is_empty) {
            return Err(ChunkSetError::Prefill(format!(
                "{}/model_config.json has no `chunks[].kv_slots` to write prefill K/V back with \
                 (rebuild the set with this version)",
                self.dir.display()
            )));
        }
        if self.prefill.is_empty() {
            for info in &self.config.prefill_chunks {
                let pkg = self.dir.join(format!("{}.mlpackage", info.name));
                let chunk_err = |source| ChunkSetError::Chunk {
                    chunk: info.name.clone(),
                    source: Box::new(source),
                };
                let backend =
                    load_backend(self.kind, &pkg, &LoadOptions::default()).map_err(chunk_err)?;
                let sig = backend.signature(PREFILL_FUNCTION).map_err(chunk_err)?;
                self.prefill.push(LoadedChunk {
                    name: info.name.clone(),
                    backend,
                    sig,
                });
            }
        }
        self.prefill_length()
    }

    /// `N` of the loaded prefill chunks (the `hidden_states` input's second dimension).
    fn prefill_length(&self) -> R<usize> {
        let first = self
            .prefill
            .first()
            .ok_or_else(|| ChunkSetError::Prefill("prefill chunks not loaded".into()))?;
        first
            .sig
            .inputs
            .iter()
            .find(|i| i.name == "hidden_states")
            .and_then(|i| i.ty.as_ref()?.static_shape())
            .and_then(|s| s.get(1).copied())
            .ok_or_else(|| ChunkSetError::Unbound {
                chunk: first.name.clone(),
                input: "hidden_states (static [1, N, H])".into(),
            })
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

/// The RoPE table key of a step input (`cos_s`, `sin_s`, `cos_f`, `sin_f`).
fn rope_key(input: &str) -> Option<&'static str> {
    ["cos_s", "sin_s", "cos_f", "sin_f"]
        .into_iter()
        .find(|k| *k == input)
}

/// The earlier output an input is handed over from (`hidden_states` ← `hidden_states_out`, …).
fn handoff_source(input: &str) -> &str {
    match input {
        "hidden_states" => "hidden_states_out",
        "per_layer_combined" => "per_layer_combined_out",
        other => other,
    }
}

/// The head chunk's `token_id` / `token_logit` (and tapped logits on request).
fn head_output(
    chunk: &str,
    outs: &TensorMap,
    tapped: &TensorMap,
    want_logits: bool,
) -> R<StepOutput> {
    let out_err = |o: &str| ChunkSetError::Output {
        chunk: chunk.to_string(),
        output: o.to_string(),
    };
    let tok = outs
        .get("token_id")
        .and_then(|t| t.to_i64().ok())
        .and_then(|v| v.first().copied())
        .ok_or_else(|| out_err("token_id"))?;
    let logit = outs
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
    Ok(StepOutput {
        token_id: tok as u32,
        token_logit: logit,
        logits,
        chunk_times: Vec::new(),
    })
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
        self.rope_rows(key, self.pos, 1)
    }

    /// Rows `start..start + n` of the RoPE table `key`, concatenated.
    fn rope_rows(&self, key: &'static str, start: usize, n: usize) -> R<Vec<f32>> {
        let t = self
            .set
            .rope
            .get(key)
            .ok_or_else(|| ChunkSetError::SideFile {
                file: self.set.dir.join(format!("{key}.npy")),
                msg: "RoPE table missing".into(),
            })?;
        if start + n > t.rows {
            return Err(ChunkSetError::ContextFull {
                pos: start + n - 1,
                what: format!("RoPE table ({key})"),
                limit: t.rows,
            });
        }
        Ok(t.data[start * t.dim..(start + n) * t.dim].to_vec())
    }

    /// Batched prefill of `tokens` (at most the prefill length `N`; call
    /// [`ChunkSet::load_prefill`] first) at positions `0..len` of a fresh session: runs every
    /// prefill chunk once on the tokens padded to `N` with the pad token, writes the K/V they
    /// produce into the decode caches, and leaves the session at position `len`. Returns the last
    /// real position's `token_id` / `token_logit` (and its logits on request).
    pub fn prefill(
        &mut self,
        tokens: &[u32],
        embedder: &dyn Embedder,
        want_logits: bool,
    ) -> R<StepOutput> {
        let n = self.set.prefill_length()?;
        let len = tokens.len();
        if self.pos != 0 {
            return Err(ChunkSetError::Prefill(format!(
                "prefill runs at positions 0.. of a fresh session; this one is at position {}",
                self.pos
            )));
        }
        if len == 0 || len > n {
            return Err(ChunkSetError::Prefill(format!(
                "{len} tokens do not fit the prefill length {n} (1..={n})"
            )));
        }
        let cfg = self.set.config.clone();
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(ChunkSetError::BadToken {
                token,
                vocab: cfg.vocab_size,
            });
        }
        let pad = cfg
            .raw
            .get("pad_token_id")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0) as u32;
        let mut padded = tokens.to_vec();
        padded.resize(n, pad);
        let (mut hidden, mut ple_raw) = (Vec::new(), Vec::new());
        for &t in &padded {
            hidden.extend(embedder.hidden(t)?);
            ple_raw.extend(embedder.ple_raw(t)?);
        }
        let mut handoff = TensorMap::new();
        let mut layer_kv: BTreeMap<usize, (Tensor, Tensor)> = BTreeMap::new();
        let mut times = Vec::new();
        let mut result = None;
        let count = self.set.prefill.len();
        for ci in 0..count {
            let (name, sig) = {
                let c = &self.set.prefill[ci];
                (c.name.clone(), c.sig.clone())
            };
            let cerr = |source| ChunkSetError::Chunk {
                chunk: name.clone(),
                source: Box::new(source),
            };
            let unbound = |input: &str| ChunkSetError::Unbound {
                chunk: name.clone(),
                input: input.to_string(),
            };
            let mut inputs = TensorMap::new();
            for spec in &sig.inputs {
                let i = spec.name.as_str();
                let ty = spec.ty.as_ref().ok_or_else(|| unbound(i))?;
                let shape = ty.static_shape().ok_or_else(|| unbound(i))?;
                let dt = ty.dtype;
                let make = |v: &[f32]| tensor_of(dt, &shape, v).map_err(cerr);
                let t = match i {
                    "hidden_states" if ci == 0 => make(&hidden)?,
                    "per_layer_raw" => make(&ple_raw)?,
                    "causal_mask" => make(
                        &(0..n * n)
                            .map(|e| {
                                if e % n <= e / n {
                                    0.0
                                } else {
                                    f32::NEG_INFINITY
                                }
                            })
                            .collect::<Vec<_>>(),
                    )?,
                    "last_position_mask" => make(
                        &(0..n)
                            .map(|j| f32::from(u8::from(j + 1 == len)))
                            .collect::<Vec<_>>(),
                    )?,
                    _ if rope_key(i).is_some() => {
                        make(&self.rope_rows(rope_key(i).unwrap_or_default(), 0, n)?)?
                    }
                    _ => handoff
                        .get(handoff_source(i))
                        .cloned()
                        .ok_or_else(|| unbound(i))?,
                };
                inputs.insert(i.to_string(), t);
            }
            let last = ci + 1 == count;
            let taps: Vec<&str> = if last && want_logits {
                vec![LOGITS_TAP]
            } else {
                vec![]
            };
            let t0 = Instant::now();
            let (outs, tapped) = self.set.prefill[ci]
                .backend
                .predict_with_taps(PREFILL_FUNCTION, &inputs, &taps)
                .map_err(cerr)?;
            times.push(t0.elapsed());
            let out_err = |o: &str| ChunkSetError::Output {
                chunk: name.clone(),
                output: o.to_string(),
            };
            for (layer, k, v) in &cfg.prefill_chunks[ci].kv {
                let kt = outs.get(k).ok_or_else(|| out_err(k))?;
                let vt = outs.get(v).ok_or_else(|| out_err(v))?;
                layer_kv.insert(*layer, (kt.clone(), vt.clone()));
            }
            if last {
                result = Some(head_output(&name, &outs, &tapped, want_logits)?);
            }
            handoff.extend(outs);
        }
        self.write_back(&layer_kv, len)?;
        self.pos = len;
        let mut out = result.ok_or_else(|| ChunkSetError::Output {
            chunk: "(none)".into(),
            output: "token_id".into(),
        })?;
        out.chunk_times = times;
        Ok(out)
    }

    /// Write prefill K/V (`[1, kv_heads, N, head_dim]` per layer) of positions `0..len` into the
    /// decode caches through each chunk's slot map.
    fn write_back(&mut self, layer_kv: &BTreeMap<usize, (Tensor, Tensor)>, len: usize) -> R<()> {
        let cfg = &self.set.config;
        let bad = |msg: String| ChunkSetError::Prefill(msg);
        for (ci, slots) in cfg.chunk_kv_slots.iter().enumerate() {
            let chunk = &self.set.chunks[ci];
            for s in slots {
                let (kt, vt) = layer_kv.get(&s.layer).ok_or_else(|| {
                    bad(format!(
                        "no prefill chunk produces the K/V of layer {} ({} slot {} of {})",
                        s.layer,
                        s.kind.label(),
                        s.slot,
                        chunk.name
                    ))
                })?;
                let policy = match s.kind {
                    SlotKind::Sliding => cfg.sliding_cache,
                    SlotKind::Full => cfg.full_cache,
                };
                for (which, src) in [("K", kt), ("V", vt)] {
                    let name = format!("{which}_{}_in", s.kind.label());
                    let unbound = || ChunkSetError::Unbound {
                        chunk: chunk.name.clone(),
                        input: name.clone(),
                    };
                    let ty = chunk
                        .sig
                        .inputs
                        .iter()
                        .find(|i| i.name == name)
                        .and_then(|i| i.ty.clone())
                        .ok_or_else(unbound)?;
                    let shape = ty.static_shape().ok_or_else(unbound)?;
                    let &[nslots, kvh, tlen, width] = shape.as_slice() else {
                        return Err(bad(format!(
                            "{}: `{name}` is {shape:?}, expected [slots, kv_heads, len, head_dim]",
                            chunk.name
                        )));
                    };
                    let ss = src.shape();
                    if ss.len() != 4 || ss[1] != kvh || ss[3] > width || s.slot >= nslots {
                        return Err(bad(format!(
                            "layer {}: prefill {which} {ss:?} does not fit slot {} of `{name}` {shape:?} in {}",
                            s.layer, s.slot, chunk.name
                        )));
                    }
                    let (n, d) = (ss[2], ss[3]);
                    let (first, dst0) = match policy {
                        CachePolicy::ShiftRegister => {
                            let m = len.min(tlen);
                            (len - m, tlen - m)
                        }
                        CachePolicy::Positional if len <= tlen => (0, 0),
                        CachePolicy::Positional => {
                            return Err(ChunkSetError::ContextFull {
                                pos: len - 1,
                                what: format!("cache `{name}` of {}", chunk.name),
                                limit: tlen,
                            });
                        }
                    };
                    let key = (ci, name.clone());
                    let mut buf = match self.kv.get(&key) {
                        Some(t) => t
                            .to_f32()
                            .map_err(|e| bad(format!("{name}: {e}")))?
                            .into_owned(),
                        None => vec![0.0; shape.iter().product()],
                    };
                    let sv = src.to_f32().map_err(|e| bad(format!("{name}: {e}")))?;
                    for h in 0..kvh {
                        for (r, p) in (first..len).enumerate() {
                            let dst = ((s.slot * kvh + h) * tlen + dst0 + r) * width;
                            let from = (h * n + p) * d;
                            buf[dst..dst + d].copy_from_slice(&sv[from..from + d]);
                        }
                    }
                    let t =
                        tensor_of(ty.dtype, &shape, &buf).map_err(|e| ChunkSetError::Chunk {
                            chunk: chunk.name.clone(),
                            source: Box::new(e),
                        })?;
                    self.kv.insert(key, t);
                }
            }
        }
        Ok(())
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
                    _ if rope_key(n).is_some() => {
                        make(&self.rope_row(rope_key(n).unwrap_or_default())?)?
                    }
                    _ if n.ends_with("_in") => match self.kv.get(&(ci, n.to_string())) {
                        Some(t) => t.clone(),
                        None => make(&vec![0.0; shape.iter().product()])?,
                    },
                    _ => handoff.get(handoff_source(n)).cloned().ok_or_else(|| {
                        ChunkSetError::Unbound {
                            chunk: name.clone(),
                            input: n.to_string(),
                        }
                    })?,
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
                token_out = Some(head_output(&name, &handoff, &tapped, want_logits)?);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> R<ModelConfig> {
        let dir = tempfile::tempdir().unwrap();
        let mut v = serde_json::json!({
            "hidden_size": 8, "num_layers": 2, "per_layer_dim": 4, "vocab_size": 16,
            "context_length": 32, "sliding_window": 4, "embed_scale": 1.0,
            "per_layer_embed_scale": 1.0,
            "chunks": [{"name": "chunk1", "layers": [0, 2], "kv_slots": [
                {"layer": 0, "kind": "sliding", "slot": 0},
                {"layer": 1, "kind": "full", "slot": 0}]}],
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        std::fs::write(dir.path().join("model_config.json"), v.to_string()).unwrap();
        ModelConfig::read(dir.path())
    }

    #[test]
    fn slot_maps_and_prefill_chunks_are_read() {
        let c = config(
            serde_json::json!({"prefill_chunks": [{"name": "prefill_chunk1", "kv": [
            {"layer": 0, "kind": "sliding", "k": "K0", "v": "V0"},
            {"layer": 1, "kind": "full", "k": "kv14_k", "v": "kv14_v"}]}]}),
        )
        .unwrap();
        assert_eq!(
            c.chunk_kv_slots,
            vec![vec![
                KvSlot {
                    layer: 0,
                    kind: SlotKind::Sliding,
                    slot: 0
                },
                KvSlot {
                    layer: 1,
                    kind: SlotKind::Full,
                    slot: 0
                }
            ]]
        );
        assert_eq!(
            c.prefill_chunks[0].kv[1],
            (1, "kv14_k".into(), "kv14_v".into())
        );
    }

    #[test]
    fn malformed_slot_maps_are_config_errors_naming_the_field() {
        let e = config(serde_json::json!({"chunks": [{"name": "chunk1",
            "kv_slots": [{"layer": 0, "kind": "local", "slot": 0}]}]}))
        .unwrap_err();
        assert!(
            matches!(&e, ChunkSetError::Config { msg, .. } if msg.contains("kv_slots[].kind")),
            "{e}"
        );
        let e = config(serde_json::json!({"prefill_chunks": [{"name": "p",
            "kv": [{"layer": 0, "k": "K0"}]}]}))
        .unwrap_err();
        assert!(
            matches!(&e, ChunkSetError::Config { msg, .. } if msg.contains("kv[].v")),
            "{e}"
        );
    }
}
