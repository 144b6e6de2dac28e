//! `verify`: is a chunk set on disk what its manifest and `model_config.json` say it is, and what
//! the contract says a set of that variant and those build options holds? Nothing is run.
//!
//! [`verify_set`] checks, and reports every problem as a [`Finding`] naming the file (relative to
//! the set) and, where there is one, the field:
//!
//! 1. **Files** ([`files`]): every file `manifest.json` lists is there with its size and sha256
//!    ([`HashPolicy`]); nothing else is there except `manifest.json` itself, `.DS_Store` files (the
//!    Finder writes them when a set is browsed on a Mac) and what the caller allows
//!    ([`VerifyOptions::allow_unlisted`]); no symlinks or special files.
//! 2. **`model_config.json`** ([`config`]): follows the contract (strict read); agrees with the
//!    manifest's build options (variant, context, precision, quantization, model name, functions,
//!    decode and prefill chunk lists, KV producers) and with itself (layer counts, the scales the
//!    runtime multiplies by, the variant's cache policies, chunks covering the decoder in order
//!    with the KV slots of their KV-owning layers, RoPE rows); `hf_model/config.json` is the
//!    checkpoint's config recorded in the manifest and spells the same facts.
//! 3. **Packages** ([`packages`]): every decode and prefill chunk in every form present
//!    (`.mlpackage`, `.mlmodelc`; the ones the build's `--format` wrote must be there) reads back,
//!    its description matches its program and the program validates; its functions are the ones
//!    of the variant and options, and every function's inputs, outputs and states are the
//!    contract's ([`chunkset::IoContract`], derived from `model_config.json` for the recorded
//!    variant), in order, with their shapes and dtypes; the head chunk's `token_id` is the argmax
//!    of a vocabulary-wide value ([`crate::logits`]).
//! 4. **Side files** ([`side`]): sizes from the config (int8 tables and their fp16 row scales, PLE
//!    projection and norm, RoPE tables' dtype, rows and widths; no PLE files without PLE, no RoPE
//!    table of an absent layer kind); scales and norm finite, RoPE rows on the unit circle.
//!
//! A finding is *unusable* when a file is missing or cannot be read at all (the set cannot be run:
//! bad input), otherwise it is a mismatch. [`VerifyError`] is for a set that cannot be verified at
//! all (not a directory, no readable manifest of this format).
//!
//! The check is the writer-independent reading of the contract: it derives the expected I/O from
//! `model_config.json` and `chunkset`, never from the exporter's plan.

mod config;
mod files;
mod packages;
mod side;

use chunkset::{ChunkSetManifest, ContractError, ModelConfig};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Which files get their sha256 compared with the manifest (sizes are always compared).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HashPolicy {
    /// Every file.
    All,
    /// Files of at most this many bytes; larger ones by size only.
    UpTo(u64),
}

/// Options of [`verify_set`].
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub hashes: HashPolicy,
    /// Relative paths (`/`-separated) that may be present without a manifest entry (e.g. files a
    /// publishing step adds beside the set's own).
    pub allow_unlisted: Vec<String>,
}

impl Default for VerifyOptions {
    fn default() -> VerifyOptions {
        VerifyOptions {
            hashes: HashPolicy::All,
            allow_unlisted: Vec::new(),
        }
    }
}

/// One problem, naming the file (relative to the set) and the field where there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub file: String,
    /// The field (`context_length`, `chunks[1].kv_slots`), or for a package the function and
    /// list (`decode_q1.inputs`).
    pub field: Option<String>,
    pub problem: String,
    /// The file is missing or cannot be read at all (the set cannot run), rather than disagreeing.
    pub unusable: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {field}: {}", self.file, self.problem),
            None => write!(f, "{}: {}", self.file, self.problem),
        }
    }
}

/// One declared input, output or state of a package function, with its element count (for
/// callers that refuse sets whose buffers exceed the machine's memory before loading them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Buffer {
    /// The package or bundle, relative to the set.
    pub package: String,
    pub function: String,
    pub name: String,
    pub shape: Vec<u64>,
    pub elements: u128,
}

/// What [`verify_set`] found and covered.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Every problem found; empty when the set passes.
    pub findings: Vec<Finding>,
    /// Files listed in the manifest, and their bytes.
    pub files: usize,
    pub bytes: u64,
    /// Files and bytes whose sha256 was compared.
    pub hashed_files: usize,
    pub hashed_bytes: u64,
    /// Packages and bundles read and checked (relative paths).
    pub packages: Vec<String>,
    /// Functions whose I/O was checked.
    pub functions: usize,
    /// Declared inputs, outputs and states of every function checked.
    #[serde(skip)]
    pub buffers: Vec<Buffer>,
}

impl VerifyReport {
    /// True when nothing was found.
    pub fn pass(&self) -> bool {
        self.findings.is_empty()
    }

    /// True when some file is missing or unreadable (bad input rather than a mismatch).
    pub fn unusable(&self) -> bool {
        self.findings.iter().any(|f| f.unusable)
    }
}

/// The set cannot be verified at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{}: {reason}", path.display())]
    NotASet { path: PathBuf, reason: String },
    /// `manifest.json` is missing, unreadable, or not a chunk-set manifest of this format.
    #[error(transparent)]
    Manifest(#[from] ContractError),
}

/// Collects findings.
#[derive(Default)]
pub(crate) struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, file: &str, field: Option<&str>, problem: String, unusable: bool) {
        self.0.push(Finding {
            file: file.to_string(),
            field: field.map(str::to_string),
            problem,
            unusable,
        });
    }

    /// The file disagrees with the manifest, the config or the contract.
    pub(crate) fn mismatch(&mut self, file: &str, field: Option<&str>, problem: String) {
        self.push(file, field, problem, false);
    }

    /// The file is missing or cannot be read.
    pub(crate) fn unusable(&mut self, file: &str, field: Option<&str>, problem: String) {
        self.push(file, field, problem, true);
    }

    /// Record `got != want` for `field` of `file`, both as text (`what` says where `want` comes
    /// from).
    pub(crate) fn differ_text(
        &mut self,
        file: &str,
        field: &str,
        got: String,
        want: String,
        what: &str,
    ) {
        if got != want {
            self.mismatch(file, Some(field), format!("is {got}, {what} {want}"));
        }
    }

    /// Record `got != want` for `field` of `file` (`what` says where `want` comes from).
    pub(crate) fn differ<T: PartialEq + fmt::Debug>(
        &mut self,
        file: &str,
        field: &str,
        got: T,
        want: T,
        what: &str,
    ) {
        if got != want {
            self.mismatch(file, Some(field), format!("is {got:?}, {what} {want:?}"));
        }
    }
}

/// Check the chunk set in `dir` (see the module doc).
pub fn verify_set(dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    if !dir.is_dir() {
        return Err(VerifyError::NotASet {
            path: dir.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    if !dir.join(chunkset::MANIFEST_NAME).is_file() {
        return Err(VerifyError::NotASet {
            path: dir.to_path_buf(),
            reason: format!(
                "no {} (not a chunk set written by gemma-convert)",
                chunkset::MANIFEST_NAME
            ),
        });
    }
    let manifest = ChunkSetManifest::read(dir)?;
    let mut report = VerifyReport::default();
    let mut f = Findings::default();
    let present = files::check(dir, &manifest, opts, &mut f, &mut report);
    let cfg = match ModelConfig::read(dir) {
        Ok(c) => Some(c),
        Err(e) => {
            let (field, problem) = config::describe(&e);
            f.unusable(chunkset::MODEL_CONFIG_NAME, field.as_deref(), problem);
            None
        }
    };
    if let Some(cfg) = &cfg {
        config::check(dir, cfg, &manifest, &present, &mut f);
        let derived = config::derive(cfg, &manifest.build.spec, &mut f);
        packages::check(dir, cfg, &manifest, derived.as_ref(), &mut f, &mut report);
        side::check(dir, cfg, &manifest, &present, &mut f);
    } else {
        packages::check_readable(dir, &manifest, &mut f, &mut report);
    }
    report.findings = f.0;
    Ok(report)
}
