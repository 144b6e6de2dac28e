//! `manifest.json`: every file of a set with its size and sha256, the tool version, the command line
//! that rebuilds the set, and what the build decided — the build options as data ([`BuildSpec`],
//! what `rebuild` re-runs) and the plan facts (chunks, producers, model files, weights left
//! uncompressed and why).
//!
//! Architecture invariant: the manifest is a pure function of the set's bytes and the build options —
//! no timestamps, no absolute paths beyond the `--model` the user gave, entries sorted by path — so the
//! same build on any machine and any thread count yields the same manifest.

use crate::compression::Compression;
use crate::error::{ContractError, nullable, read_json, sorted};
use crate::forms::{GraphForms, Taps};
use crate::function::Functions;
use crate::kinds::{OutputFormat, Precision};
use crate::variant::Variant;
use palettize::TensorRecord;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Name of the manifest file inside a chunk set.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Format tag written into every manifest.
pub const MANIFEST_FORMAT: &str = "gemma-convert-chunkset/1";
/// `tool`.
pub const TOOL: &str = "gemma-convert";

/// One file, with its size and sha256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the set root (or the checkpoint directory), `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// A chunk's name and layers `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRange {
    pub name: String,
    pub layers: [usize; 2],
}

/// A decode chunk and the prefill chunk holding exactly its layers: both packages carry the same,
/// byte-identical `weight.bin` (same blobs, order and offsets), so a runtime may keep one copy and
/// hard-link the other (the CoreML-LLM downloader does so for `chunk{i}` ↔ `prefill_chunk{i}` and
/// `chunk3_3way` ↔ `prefill_chunk4`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedWeights {
    /// The decode chunk (package stem).
    pub decode: String,
    /// The prefill chunk (package stem).
    pub prefill: String,
}

/// The build options that determine a set's bytes: what `rebuild` re-runs. Output paths, thread
/// counts, `--only`, `--zip` and reporting flags are not part of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSpec {
    /// The checkpoint as the user named it (a directory or an HF repo id).
    pub model: String,
    pub variant: Variant,
    /// Context length `C`.
    pub ctx: usize,
    pub precision: Precision,
    pub compression: Compression,
    pub functions: Functions,
    /// `model_name` of `model_config.json`, when given (default: [`BuildSpec::model_name`]).
    pub model_name: Option<String>,
    /// Packages, compiled bundles or both (`--format`).
    pub format: OutputFormat,
    /// Op forms of the graphs ([`crate::forms`]); recorded when not the default.
    pub forms: GraphForms,
    /// Optional outputs ([`Taps`]); recorded when any.
    pub taps: Taps,
    /// Numerics choices of the graphs when not the exporter's default (the spelling of
    /// `gemma4_export::Numerics`, e.g. `norm-gain=multiply,layer-scalar=multiply`; a developer
    /// option measured with `gemma-convert fidelity`). `None` for every product build.
    pub numerics: Option<String>,
}

impl BuildSpec {
    /// The `model_name` written into `model_config.json` (default `gemma4-<variant>-<ctx>`).
    pub fn model_name(&self) -> String {
        self.model_name
            .clone()
            .unwrap_or_else(|| format!("gemma4-{}-{}", self.variant.name(), self.ctx))
    }

    /// `model_config.json`'s `quantization` (`int4`, or `fp16` / `fp32` for dense sets).
    pub fn quantization(&self) -> String {
        self.compression.label(self.precision)
    }
}

/// `manifest.json`'s `build`: the options and the plan facts of the build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "BuildFactsRecord", try_from = "BuildFactsRecord")]
pub struct BuildFacts {
    pub spec: BuildSpec,
    /// Producer layers of the shared KV (`kv13_*` sliding, `kv14_*` full).
    pub sliding_producer: Option<usize>,
    pub full_producer: Option<usize>,
    /// The decode chunks.
    pub chunks: Vec<ChunkRange>,
    /// The prefill packages, when built.
    pub prefill_chunks: Option<Vec<ChunkRange>>,
    /// With prefill packages: the decode/prefill pairs that share a byte-identical `weight.bin`
    /// (empty when no prefill chunk holds exactly a decode chunk's layers). Absent in manifests of
    /// sets without prefill and of earlier versions.
    pub shared_weights: Option<Vec<SharedWeights>>,
    /// The checkpoint's config, index and weight files with their sha256.
    pub model_files: Vec<FileEntry>,
    /// How many weights were palettized (whole sets; `--only` parts leave it out).
    pub palettized_weights: Option<usize>,
}

/// How [`BuildFacts`] is written: one flat object.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildFactsRecord {
    model: String,
    #[serde(deserialize_with = "nullable")]
    model_name: Option<String>,
    variant: Variant,
    ctx: usize,
    precision: Precision,
    /// Bits per palettized index, 0 = dense.
    nbits: u8,
    group_size: usize,
    functions: Functions,
    #[serde(deserialize_with = "nullable")]
    sliding_producer: Option<usize>,
    #[serde(deserialize_with = "nullable")]
    full_producer: Option<usize>,
    chunks: Vec<ChunkRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefill_chunks: Option<Vec<ChunkRange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shared_weights: Option<Vec<SharedWeights>>,
    model_files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    palettized_weights: Option<usize>,
    /// Left out for the default (`mlpackage`), so package sets keep their manifest bytes.
    #[serde(default, skip_serializing_if = "OutputFormat::is_default")]
    format: OutputFormat,
    #[serde(default, skip_serializing_if = "GraphForms::is_default")]
    forms: GraphForms,
    #[serde(default, skip_serializing_if = "Taps::is_none")]
    taps: Taps,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    numerics: Option<String>,
}

impl From<BuildFacts> for BuildFactsRecord {
    fn from(b: BuildFacts) -> BuildFactsRecord {
        let (nbits, group_size) = b.spec.compression.to_record();
        let s = b.spec;
        BuildFactsRecord {
            model: s.model,
            model_name: s.model_name,
            variant: s.variant,
            ctx: s.ctx,
            precision: s.precision,
            nbits,
            group_size,
            functions: s.functions,
            sliding_producer: b.sliding_producer,
            full_producer: b.full_producer,
            chunks: b.chunks,
            prefill_chunks: b.prefill_chunks,
            shared_weights: b.shared_weights,
            model_files: b.model_files,
            palettized_weights: b.palettized_weights,
            format: s.format,
            forms: s.forms,
            taps: s.taps,
            numerics: s.numerics,
        }
    }
}

impl TryFrom<BuildFactsRecord> for BuildFacts {
    type Error = String;

    fn try_from(r: BuildFactsRecord) -> Result<BuildFacts, String> {
        let compression = Compression::from_record(r.nbits, r.group_size)
            .map_err(|e| format!("field `nbits`: {e} (or 0 for dense)"))?;
        Ok(BuildFacts {
            spec: BuildSpec {
                model: r.model,
                variant: r.variant,
                ctx: r.ctx,
                precision: r.precision,
                compression,
                functions: r.functions,
                model_name: r.model_name,
                format: r.format,
                forms: r.forms,
                taps: r.taps,
                numerics: r.numerics,
            },
            sliding_producer: r.sliding_producer,
            full_producer: r.full_producer,
            chunks: r.chunks,
            prefill_chunks: r.prefill_chunks,
            shared_weights: r.shared_weights,
            model_files: r.model_files,
            palettized_weights: r.palettized_weights,
        })
    }
}

/// The manifest of a chunk set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkSetManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// [`TOOL`].
    pub tool: String,
    pub tool_version: String,
    /// The command line that rebuilds this set, as the caller rendered it from [`BuildFacts::spec`]
    /// (recorded as given; readers use the spec).
    pub command: Vec<String>,
    /// Keys sorted, like every set written before the typed contract.
    #[serde(serialize_with = "sorted")]
    pub build: BuildFacts,
    /// Weights left uncompressed and why, sorted by name.
    #[serde(serialize_with = "sorted")]
    pub uncompressed_weights: Vec<TensorRecord>,
    /// Every file of the set except this manifest, sorted by path.
    pub files: Vec<FileEntry>,
}

impl ChunkSetManifest {
    /// The file's bytes: pretty JSON with a trailing newline.
    pub fn to_json(&self) -> Result<String, ContractError> {
        let mut s = serde_json::to_string_pretty(self).map_err(|e| ContractError::Serialize {
            what: MANIFEST_NAME,
            msg: e.to_string(),
        })?;
        s.push('\n');
        Ok(s)
    }

    /// Read `dir/manifest.json` (of this format).
    pub fn read(dir: &Path) -> Result<ChunkSetManifest, ContractError> {
        let path = dir.join(MANIFEST_NAME);
        // The format tag first, so a manifest of another format says so rather than naming a field.
        #[derive(Deserialize)]
        struct Tag {
            format: Option<String>,
        }
        let tag: Tag = read_json(&path)?;
        if tag.format.as_deref() != Some(MANIFEST_FORMAT) {
            return Err(ContractError::Format {
                path,
                found: tag.format.unwrap_or_default(),
                expected: MANIFEST_FORMAT,
            });
        }
        read_json(&path)
    }
}
