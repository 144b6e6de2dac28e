//! `gemma-convert publish SET --out DIR`: lay out a built chunk set as the repository the
//! CoreML-LLM app's downloader fetches (`chunkset::published`), with a per-file `manifest.json`
//! (path, size, sha256, and what the downloader does with each file).
//!
//! Publishing only moves bytes that were built and recorded: every published file is a file of the
//! set whose size and sha256 its `manifest.json` records (checked while copying), so a published
//! directory is reproducible with `gemma-convert rebuild` on the set. For the same reason sets
//! built as `.mlpackage` only are refused rather than compiled here: their bundles were never
//! recorded; `--format mlmodelc` (or `both`) writes and records them in the build.
//!
//! Refused before anything is written (exit 2): a directory that is not a set (or is an `--only`
//! part); a variant the downloader has no entry for (`Layout::for_variant`, e.g. the 4-chunk
//! `stateful`: no entry fetches its `chunk_4`); `--precision fp32` sets (the app binds fp16
//! arrays and Core ML states are fp16); a set missing a file the entry fetches (prefill bundles for
//! the E2B entries, the tokenizer files of `hf_model/`); a decode/prefill pair the downloader
//! hard-links whose `weight.bin` differ (the device would run prefill with the decode chunk's
//! weights); a chunk 1 whose `causal_mask_full` disagrees with `context_length` (the downloader
//! deletes such an install); then a set that fails `verify` (`mil_runtime::verify`: files, config,
//! packages' I/O, side files). Refused while copying, leaving nothing: a file that no longer matches
//! the set's manifest; a bundle that does not read back (`mlpackage::read_model`).
//!
//! Output goes through `mlpackage::publish` (target guard, lock, staging, atomic swap), and the set
//! is read under its shared lock. Prefill weights the downloader links are hard links of the decode
//! weights inside the published directory (one copy on disk; every bundle is complete).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use chunkset::published::{
    DownloaderFile, Fetch, FetchKind, Layout, NoLayout, PER_FILE_MODE, PUBLISHED_FORMAT,
    PublishedFile, PublishedManifest, PublishedSource, downloader_context,
};
use chunkset::{ChunkSetManifest, MANIFEST_NAME, ModelConfig, OutputFormat, Precision};
use clap::Args;
use serde_json::json;

use crate::exit::UsageError;

/// Arguments of `gemma-convert publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The chunk set to publish (a directory with gemma-convert's manifest.json).
    pub set: PathBuf,
    /// Output directory: the repository layout.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing non-empty output directory (only one written by `publish`).
    #[arg(long)]
    pub force: bool,
    /// The Hugging Face repository (`owner/name`) the directory is for: every file of the manifest
    /// then carries its download URL.
    #[arg(long)]
    pub hf_repo: Option<String>,
    /// The revision of those URLs (default: the one the downloader entry downloads from).
    #[arg(long, requires = "hf_repo")]
    pub revision: Option<String>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// Why a set cannot be published as it is.
#[derive(Debug, thiserror::Error)]
pub enum PublishSetError {
    /// Not a chunk set.
    #[error("{}: not a chunk set (no manifest.json written by gemma-convert)", set.display())]
    NotASet { set: PathBuf },
    /// An `--only` part.
    #[error(
        "{}: is an --only part (part.json), not a set: join the parts with `gemma-convert assemble` first",
        set.display()
    )]
    Part { set: PathBuf },
    /// The variant has no downloader entry.
    #[error("{}: {source}", set.display())]
    NoLayout {
        set: PathBuf,
        #[source]
        source: NoLayout,
    },
    /// Packages only.
    #[error(
        "{}: built as .mlpackage only, and the app's downloader fetches compiled .mlmodelc bundles: \
         rebuild with --format mlmodelc (or --format both); publish only moves files the build \
         recorded, so it does not compile them itself",
        set.display()
    )]
    PackagesOnly { set: PathBuf },
    /// fp32 verification builds.
    #[error(
        "{}: built with --precision fp32, a verification build: the app binds fp16 arrays \
         (ChunkedEngine) and Core ML states are fp16; publish an fp16 build",
        set.display()
    )]
    Fp32 { set: PathBuf },
    /// Chunks other than the layout's.
    #[error("{}: {what} are {found:?}, but {layout} needs {want:?}", set.display())]
    Chunks {
        set: PathBuf,
        what: &'static str,
        found: Vec<String>,
        want: Vec<&'static str>,
        layout: &'static str,
    },
    /// Files the downloader entry fetches that the set does not have.
    #[error(
        "{}: the downloader entry `{entry}` fetches {} file(s) this set does not have: {}{hint}",
        set.display(), missing.len(), missing.join(", ")
    )]
    Missing {
        set: PathBuf,
        entry: &'static str,
        missing: Vec<String>,
        hint: String,
    },
    /// Linked pairs whose weights differ.
    #[error(
        "{}: the downloader entry `{entry}` does not download {}: it hard-links the decode \
         chunk's weight.bin in its place, and here they differ ({}): the device would run prefill \
         with the decode chunk's weights; rebuild with a gemma-convert whose decode/prefill pairs \
         share one weight.bin",
        set.display(),
        pairs.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(", "),
        pairs.iter().map(|(p, d)| format!("{p} vs {d}")).collect::<Vec<_>>().join("; ")
    )]
    Unshared {
        set: PathBuf,
        entry: &'static str,
        pairs: Vec<(String, String)>,
    },
    /// The downloader would delete the install.
    #[error(
        "{}: causal_mask_full has {found} positions but model_config.json's context_length is \
         {expected}: the app's downloader deletes such an install",
        path.display()
    )]
    Context {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    /// A file changed since the build.
    #[error(
        "{}: {what} (the set's manifest.json records {expected}): the set changed after it was built; \
         rebuild it",
        path.display()
    )]
    Changed {
        path: PathBuf,
        what: String,
        expected: String,
    },
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PublishSetError {
    /// True when the set (the input) is at fault: exit status 2.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, PublishSetError::Io { .. })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishSetError + '_ {
    move |source| PublishSetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `dir` was written by `publish` (what `--force` may replace).
fn is_published(dir: &Path) -> bool {
    PublishedManifest::read(dir).is_ok_and(|m| m.tool == chunkset::manifest::TOOL)
}

/// One file of the set and where it goes.
struct Placement {
    /// Path in the set.
    src: String,
    size: u64,
    sha256: String,
    /// How the downloader gets it, if it does.
    fetch: Option<DownloaderFile>,
}

/// What will be published, checked against the downloader entry (nothing written yet).
struct Plan {
    layout: Layout,
    /// Repository path → placement, sorted.
    files: BTreeMap<String, Placement>,
    not_provided: Vec<String>,
    /// The bundles to read back (repository paths of `.mlmodelc` directories).
    bundles: Vec<String>,
    source: PublishedSource,
}

fn plan(set: &Path) -> Result<Plan> {
    let set_buf = set.to_path_buf();
    if !set.join(MANIFEST_NAME).is_file() {
        return Err(if set.join(gemma4_export::build::PART_NAME).is_file() {
            PublishSetError::Part { set: set_buf }
        } else {
            PublishSetError::NotASet { set: set_buf }
        }
        .into());
    }
    // a malformed manifest is a ContractError naming the field (exit 2)
    let m = ChunkSetManifest::read(set)?;
    let spec = &m.build.spec;
    let layout =
        Layout::for_variant(&spec.variant).map_err(|source| PublishSetError::NoLayout {
            set: set_buf.clone(),
            source,
        })?;
    if spec.precision == Precision::Fp32 {
        return Err(PublishSetError::Fp32 { set: set_buf }.into());
    }
    if spec.format == OutputFormat::Mlpackage {
        return Err(PublishSetError::PackagesOnly { set: set_buf }.into());
    }
    let decode: Vec<String> = m.build.chunks.iter().map(|c| c.name.clone()).collect();
    if decode != layout.decode_chunks() {
        return Err(PublishSetError::Chunks {
            set: set_buf,
            what: "the decode chunks",
            found: decode,
            want: layout.decode_chunks().to_vec(),
            layout: layout.describe(),
        }
        .into());
    }
    let prefill: Vec<String> = m
        .build
        .prefill_chunks
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    if prefill.is_empty() && !layout.prefill_chunks().is_empty() {
        return Err(PublishSetError::Missing {
            set: set_buf,
            entry: layout.entry(),
            missing: layout
                .prefill_chunks()
                .iter()
                .map(|c| format!("{c}.mlmodelc"))
                .collect(),
            hint: " (the entry fetches prefill/chunk{1..4}.mlmodelc and fails on a missing one: \
                   build with --functions decode,prefill:N; the app's published sets use N = 1024)"
                .into(),
        }
        .into());
    }
    if prefill != layout.prefill_chunks() {
        return Err(PublishSetError::Chunks {
            set: set_buf,
            what: "the prefill chunks",
            found: prefill,
            want: layout.prefill_chunks().to_vec(),
            layout: layout.describe(),
        }
        .into());
    }

    if layout.checks_context() {
        let cfg = ModelConfig::read(set)?;
        let mil = set.join(format!("{}.mlmodelc/model.mil", layout.decode_chunks()[0]));
        let text = std::fs::read_to_string(&mil).map_err(io(&mil))?;
        if let Some(found) = downloader_context(&text)
            && found != cfg.context_length
        {
            return Err(PublishSetError::Context {
                path: mil,
                found,
                expected: cfg.context_length,
            }
            .into());
        }
    }

    let mut files = BTreeMap::new();
    for f in &m.files {
        let Some(remote) = layout.remote_path(&f.path) else {
            continue;
        };
        files.insert(
            remote,
            Placement {
                src: f.path.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
                fetch: None,
            },
        );
    }
    let (mut missing, mut unshared, mut not_provided) = (Vec::new(), Vec::new(), Vec::new());
    for d in layout.downloader_files() {
        if d.fetch == Fetch::Multimodal {
            not_provided.push(d.remote);
            continue;
        }
        if let Fetch::Hardlink { from } = &d.fetch {
            let same = match (files.get(&d.remote), files.get(from)) {
                (Some(a), Some(b)) => a.sha256 == b.sha256 && a.size == b.size,
                _ => true, // reported as missing below
            };
            if !same {
                unshared.push((d.remote.clone(), from.clone()));
            }
        }
        match files.get_mut(&d.remote) {
            Some(p) => p.fetch = Some(d),
            None => missing.push(d.remote),
        }
    }
    if !missing.is_empty() {
        let hint = if missing.iter().any(|p| p.starts_with("hf_model/")) {
            " (the checkpoint had no such file to copy into hf_model/: add the tokenizer files \
             to the checkpoint directory and rebuild)"
        } else {
            ""
        };
        return Err(PublishSetError::Missing {
            set: set_buf,
            entry: layout.entry(),
            missing,
            hint: hint.into(),
        }
        .into());
    }
    if !unshared.is_empty() {
        return Err(PublishSetError::Unshared {
            set: set_buf,
            entry: layout.entry(),
            pairs: unshared,
        }
        .into());
    }
    let bundles = files
        .keys()
        .filter_map(|p| {
            let (dir, _) = p.split_once(".mlmodelc/")?;
            Some(format!("{dir}.mlmodelc"))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (_, manifest_sha256) = chunkset::sha256_file(&set.join(MANIFEST_NAME))?;
    not_provided.sort();
    Ok(Plan {
        layout,
        files,
        not_provided,
        bundles,
        source: PublishedSource {
            variant: spec.variant.name().to_string(),
            command: m.command.clone(),
            tool_version: m.tool_version.clone(),
            manifest_sha256,
        },
    })
}

/// Copy `src` to `dst` and hash the copy (what is published is what is checked).
fn copy_hashed(src: &Path, dst: &Path) -> Result<(u64, String)> {
    if !src.is_file() {
        return Err(PublishSetError::Changed {
            path: src.to_path_buf(),
            what: "is missing".into(),
            expected: "it".into(),
        }
        .into());
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::copy(src, dst).map_err(io(src))?;
    Ok(chunkset::sha256_file(dst)?)
}

/// Write the planned files into `dir` (the staging directory) and return the manifest.
fn write(
    plan: &Plan,
    set: &Path,
    dir: &Path,
    url_base: Option<&str>,
    repo: Option<&str>,
) -> Result<PublishedManifest> {
    let linked = |p: &Placement| {
        matches!(
            p.fetch,
            Some(DownloaderFile {
                fetch: Fetch::Hardlink { .. },
                ..
            })
        )
    };
    // every file but the linked ones, then the links (their targets are in place by then)
    for (remote, p) in plan.files.iter().filter(|(_, p)| !linked(p)) {
        let src = set.join(&p.src);
        let (size, sha) = copy_hashed(&src, &dir.join(remote))?;
        if (size, sha.as_str()) != (p.size, p.sha256.as_str()) {
            return Err(PublishSetError::Changed {
                path: src,
                what: format!("has {size} bytes with sha256 {sha}"),
                expected: format!("{} bytes with sha256 {}", p.size, p.sha256),
            }
            .into());
        }
    }
    for (remote, p) in plan.files.iter().filter(|(_, p)| linked(p)) {
        let Some(DownloaderFile {
            fetch: Fetch::Hardlink { from },
            ..
        }) = &p.fetch
        else {
            continue;
        };
        let dst = dir.join(remote);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // byte-identical (checked by the plan against the recorded hashes, and the source was
        // verified while copying): one file on disk
        if std::fs::hard_link(dir.join(from), &dst).is_err() {
            std::fs::copy(dir.join(from), &dst).map_err(io(&dst))?;
        }
    }
    for b in &plan.bundles {
        mlpackage::read_model(&dir.join(b))
            .map_err(|e| anyhow::Error::new(e).context(format!("reading back {b}")))?;
    }
    let files: Vec<PublishedFile> = plan
        .files
        .iter()
        .map(|(remote, p)| {
            let (fetch, local_path, link_from) = match &p.fetch {
                None => (FetchKind::None, None, None),
                Some(d) => match &d.fetch {
                    Fetch::Hardlink { from } => (
                        FetchKind::Hardlink,
                        Some(d.local.clone()),
                        Some(from.clone()),
                    ),
                    _ => (FetchKind::Download, Some(d.local.clone()), None),
                },
            };
            PublishedFile {
                path: remote.clone(),
                url: url_base.map(|u| format!("{u}/{remote}")),
                size_bytes: p.size,
                sha256: p.sha256.clone(),
                fetch,
                local_path,
                link_from,
            }
        })
        .collect();
    let m = PublishedManifest {
        format: PUBLISHED_FORMAT.into(),
        tool: chunkset::manifest::TOOL.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        mode: PER_FILE_MODE.into(),
        layout: plan.layout,
        downloader_entry: plan.layout.entry().into(),
        revision: plan.layout.revision().into(),
        repo: repo.map(String::from),
        source: plan.source.clone(),
        total_size: files.iter().map(|f| f.size_bytes).sum(),
        not_provided: plan.not_provided.clone(),
        files,
    };
    let path = dir.join(PublishedManifest::NAME);
    std::fs::write(&path, m.to_json()?).map_err(io(&path))?;
    Ok(m)
}

/// `owner/name`, each part non-empty and of the characters Hugging Face allows.
fn check_repo(repo: &str) -> Result<(), UsageError> {
    let ok_part = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((o, n)) if ok_part(o) && ok_part(n) => Ok(()),
        _ => Err(UsageError {
            flag: "--hf-repo",
            reason: format!("`{repo}` is not owner/name"),
        }),
    }
}

/// `publish`.
pub fn run(args: &PublishArgs) -> Result<()> {
    if let Some(r) = &args.hf_repo {
        check_repo(r)?;
    }
    if let Some(rev) = &args.revision
        && (rev.is_empty() || rev.contains(char::is_whitespace))
    {
        return Err(UsageError {
            flag: "--revision",
            reason: format!("`{rev}` is not a revision"),
        }
        .into());
    }
    let rules = mlpackage::publish::Rules {
        flag: "--out",
        force: args.force,
        protected: vec![("the set being published", args.set.clone())],
        is_ours: &is_published,
        marker: "manifest.json written by `gemma-convert publish`",
        companions: Vec::new(),
    };
    // the target first: a refused --out costs nothing
    mlpackage::publish::check_target(&args.out, &rules)?;
    if !args.set.is_dir() {
        return Err(UsageError {
            flag: "SET",
            reason: format!("{}: not a directory", args.set.display()),
        }
        .into());
    }
    let _read = mlpackage::publish::read_lock(&args.set)?;
    let plan = plan(&args.set)?;
    // what the downloader cannot use is refused above with its reason; then the set must be what
    // its manifest and model_config.json say (`gemma-convert verify`)
    crate::verify_cmd::check_publishable(&args.set)?;
    let revision = args
        .revision
        .clone()
        .unwrap_or_else(|| plan.layout.revision().to_string());
    let url_base = args
        .hf_repo
        .as_ref()
        .map(|r| format!("https://huggingface.co/{r}/resolve/{revision}"));
    let publisher = mlpackage::publish::Publisher::begin(&args.out, &rules)?;
    let m = write(
        &plan,
        &args.set,
        publisher.dir(),
        url_base.as_deref(),
        args.hf_repo.as_deref(),
    )?;
    let done = publisher.commit()?;
    for w in &done.warnings {
        eprintln!("warning: {w}");
    }
    let links: Vec<(&str, &str)> = m
        .files
        .iter()
        .filter_map(|f| Some((f.path.as_str(), f.link_from.as_deref()?)))
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "out": args.out,
                "layout": m.layout,
                "downloader_entry": m.downloader_entry,
                "revision": m.revision,
                "files": m.files.len(),
                "total_size": m.total_size,
                "hardlinks": links.iter().map(|(p, f)| json!({"path": p, "link_from": f})).collect::<Vec<_>>(),
                "not_provided": m.not_provided,
            }))?
        );
    } else {
        eprintln!(
            "published {} files ({:.1} MB) into {}: {} for the downloader entry `{}` (revision {})",
            m.files.len(),
            m.total_size as f64 / 1e6,
            args.out.display(),
            m.layout.describe(),
            m.downloader_entry,
            m.revision
        );
        for (p, f) in &links {
            eprintln!("  {p}: hard-linked on the device from {f} (byte-identical)");
        }
        if !m.not_provided.is_empty() {
            eprintln!(
                "  not provided ({} files the entry fetches with multimodal on: the vision and \
                 audio encoders); see manifest.json `not_provided`",
                m.not_provided.len()
            );
        }
    }
    Ok(())
}
