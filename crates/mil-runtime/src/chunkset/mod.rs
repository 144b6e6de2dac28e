//! The host side of a chunk set: what the on-device runtime does around the chunks each step.
//!
//! A chunk set directory holds `<chunk>.mlpackage` (or `<chunk>.mlmodelc`) per chunk,
//! `model_config.json` and the side files (int8 embedding / PLE tables, RoPE tables).
//! [`ChunkSet::open`] reads the config (the contract's [`ModelConfig`], strictly: a missing or
//! unknown field is an error naming it), loads every chunk with a [`Backend`] (the CPU interpreter
//! reads each package or bundle back from disk) and the RoPE tables.
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
//! 4. the last chunk's `token_id` / `token_logit`, and on request the full pre-argmax logits: the
//!    value the head chunk's `reduce_argmax` behind `token_id` reads ([`crate::logits`]; `logits`
//!    in our chunks, `logits_cast_fp16` in the reference pipeline's), tapped from the interpreter.
//!
//! Batched prefill ([`Session::prefill`], sets built with `--functions …,prefill:N`), as the Swift
//! runtime does it: the first `min(len, N)` prompt tokens, padded to `N`, go through the
//! `prefill_chunk*` packages in one call each (strictly causal `causal_mask`, `last_position_mask`
//! one-hot at `len − 1`, RoPE rows `0..N`); their per-layer K/V outputs are then written into the
//! decode caches by `model_config.json`'s slot maps: shift-register slots receive the last
//! `min(len, L)` positions right-aligned, positional slots positions `0..len` (true head-dim columns
//! only), and decoding continues at position `len`.
//!
//! Both calls go through one loop ([`session`]): bind every declared input, predict, time, route the
//! outputs (state or hand-over).
//!
//! Architecture invariant: nothing here knows Gemma's layer structure beyond the contract (the I/O
//! names of [`::chunkset::names`] and `model_config.json`); the chunks are run exactly as written on
//! disk.

mod embed;
pub(crate) mod rope;
mod session;

pub use self::embed::{Embedder, SideFileEmbedder};
pub use self::session::{Session, StepOutput};
pub use ::chunkset::{LayerKind, ModelConfig};

use crate::backend::{Backend, BackendKind, LoadOptions, Signature, load_backend};
use crate::error::RuntimeError;
use ::chunkset::names;
use ::chunkset::{DECODE_FN, PREFILL_FN};
use std::path::{Path, PathBuf};

/// Name of the pre-argmax logits value in our head chunks (the tap used when a backend cannot say
/// which value its argmax reads).
pub const LOGITS_TAP: &str = names::LOGITS;

/// Errors of the host loop.
#[derive(Debug, thiserror::Error)]
pub enum ChunkSetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `model_config.json` is missing or does not follow the contract.
    #[error(transparent)]
    Contract(#[from] ::chunkset::ContractError),
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
    /// A stateful set is missing a chunk or function, or a call does not fit it.
    #[error("stateful set: {0}")]
    Stateful(String),
}

pub(crate) type R<T> = Result<T, ChunkSetError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ChunkSetError + '_ {
    move |source| ChunkSetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One loaded package and the signature of the function the host calls.
struct LoadedChunk {
    name: String,
    backend: Box<dyn Backend>,
    sig: Signature,
    /// The value holding the full-vocabulary logits (head chunks).
    logits: String,
}

impl LoadedChunk {
    /// Load `<dir>/<name>.mlmodelc` (when it holds `coremldata.bin`, as the Swift runtime picks it)
    /// or else `<dir>/<name>.mlpackage`, and the signature of `function`.
    fn load(dir: &Path, name: &str, kind: BackendKind, function: &str) -> R<LoadedChunk> {
        let pkg = mlpackage::compiled::model_path(dir, name);
        let chunk_err = |source| ChunkSetError::Chunk {
            chunk: name.to_string(),
            source: Box::new(source),
        };
        let backend = load_backend(kind, &pkg, &LoadOptions::default()).map_err(chunk_err)?;
        let sig = backend.signature(function).map_err(chunk_err)?;
        let logits = backend
            .argmax_input(function, names::TOKEN_ID)
            .unwrap_or_else(|| LOGITS_TAP.to_string());
        Ok(LoadedChunk {
            name: name.to_string(),
            backend,
            sig,
            logits,
        })
    }
}

/// A chunk set loaded for decoding.
pub struct ChunkSet {
    dir: PathBuf,
    config: ModelConfig,
    chunks: Vec<LoadedChunk>,
    /// Loaded on request by [`ChunkSet::load_prefill`].
    prefill: Vec<LoadedChunk>,
    kind: BackendKind,
    rope: rope::RopeTables,
    backend_name: String,
}

impl ChunkSet {
    /// Load the set in `dir` with the given backend kind.
    pub fn open(dir: &Path, kind: BackendKind) -> R<ChunkSet> {
        let config = ModelConfig::read(dir)?;
        let chunks = config
            .chunks
            .iter()
            .map(|c| LoadedChunk::load(dir, &c.name, kind, DECODE_FN))
            .collect::<R<Vec<_>>>()?;
        let backend_name = chunks
            .last()
            .map(|c| c.backend.name().to_string())
            .unwrap_or_default();
        let rope = rope::RopeTables::open(dir)?;
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
        if self.config.prefill_chunks().is_empty() {
            return Err(ChunkSetError::Prefill(format!(
                "{} has no prefill chunks (build it with --functions decode,prefill:N)",
                self.dir.display()
            )));
        }
        if self.prefill.is_empty() {
            self.prefill = self
                .config
                .prefill_chunks()
                .iter()
                .map(|c| LoadedChunk::load(&self.dir, &c.name, self.kind, PREFILL_FN))
                .collect::<R<Vec<_>>>()?;
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
            .find(|i| i.name == names::HIDDEN_STATES)
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
        Session::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_off_the_contract_is_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let e = ChunkSet::open(dir.path(), BackendKind::Cpu).err().unwrap();
        assert!(
            matches!(
                &e,
                ChunkSetError::Contract(::chunkset::ContractError::Io { .. })
            ),
            "{e}"
        );
        std::fs::write(
            dir.path().join(::chunkset::MODEL_CONFIG_NAME),
            r#"{"architecture": "gemma4", "hidden_size": 8}"#,
        )
        .unwrap();
        let e = ChunkSet::open(dir.path(), BackendKind::Cpu).err().unwrap();
        assert!(
            matches!(&e, ChunkSetError::Contract(::chunkset::ContractError::MissingField { field, .. }) if field == "model_name"),
            "{e}"
        );
        assert!(e.to_string().contains("model_config.json"), "{e}");
    }
}
