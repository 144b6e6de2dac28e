//! The conversion as a readable phase list:
//! `inventory → plan → emit → optimize → serialize → verify → side files → publish`.
//!
//! * **inventory**: open the checkpoint (config, tensor headers, prefix), hash its files.
//! * **plan**: derive the [`ChunkPlan`] of the variant.
//! * **emit** (per chunk): prepare the chunk's weights (palettize them in parallel when `nbits > 0`),
//!   then emit its MIL functions with one code path for every layer: `decode_q1` (default) and, with
//!   `--functions …,verify:K`, `verify_qK` in the same package (same prepared weights, stored once);
//!   with `prefill:N`, the prefill packages nested in this chunk (`prefill_chunk{i}`, swa4 cut) follow
//!   it, emitted from the same prepared weights.
//! * **optimize**: the `mil` default pass pipeline (dead-code elimination, const deduplication), then
//!   the declared inputs are kept alive.
//! * **serialize**: write `<chunk>.mlpackage` (protobuf, `weight.bin`, `Manifest.json`); the chunk's
//!   program is dropped right after, so peak memory is one chunk.
//! * **verify**: read every package back from disk and validate its program.
//! * **side files**: int8 embedding / PLE tables, PLE projection and norm, RoPE tables,
//!   `model_config.json` (plus `verify_k` / `prefill_length` / `prefill_chunks` when those functions
//!   are built), `hf_model/`.
//! * **publish**: `manifest.json` (sha256 of every file, tool version, canonical command), atomic
//!   rename of the temporary directory to `--out`, optional reproducible zip.
//!
//! `--only <chunk>` builds one decode chunk (with the prefill packages it contains), or `side` for the
//! side files, into its own directory with a `part.json`; [`assemble`] joins parts into the same bytes
//! a full build writes.

use crate::bundle::manifest::{
    ChunkSetManifest, MANIFEST_FORMAT, MANIFEST_NAME, hash_tree, sha256_file, write_zip,
};
use crate::bundle::side::{SetFacts, write_side_files};
use crate::emit::{
    DECODE_FN, PREFILL_FN, VERIFY_FN, emit_decode, emit_prefill, emit_verify, keep_inputs_alive,
};
use crate::error::{ExportError, Result};
use crate::layout::ModelLayout;
use crate::plan::{ChunkPlan, ChunkSpec, PlanOptions, Variant};
use crate::weights::{Quant, WeightSource, Weights};
use mil::Program;
use palettize::TensorRecord;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Name of the part descriptor written by `--only`.
pub const PART_NAME: &str = "part.json";
/// `--only` value that builds the side files.
pub const SIDE_PART: &str = "side";

/// Which functions each chunk package holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Functions {
    /// `verify_qK` with this K, in every chunk package beside `decode_q1`.
    pub verify: Option<usize>,
    /// Prefill packages `prefill_chunk{i}.mlpackage` (swa4 cut, one `main` function) of N positions.
    pub prefill: Option<usize>,
}

impl Functions {
    /// Parse `decode[,verify:K][,prefill:N]`.
    pub fn parse(s: &str) -> Result<Functions> {
        let mut f = Functions {
            verify: None,
            prefill: None,
        };
        let mut decode = false;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, arg) = part.split_once(':').unwrap_or((part, ""));
            let num = |what: &str| -> Result<usize> {
                arg.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    ExportError::BadOption(format!("--functions: `{part}` needs a positive {what}"))
                })
            };
            match name {
                "decode" => decode = true,
                "verify" => f.verify = Some(num("K")?),
                "prefill" => f.prefill = Some(num("N")?),
                other => {
                    return Err(ExportError::BadOption(format!(
                        "--functions: unknown function `{other}` (expected decode, verify:K, prefill:N)"
                    )));
                }
            }
        }
        if !decode {
            return Err(ExportError::BadOption(
                "--functions must include `decode`".into(),
            ));
        }
        Ok(f)
    }

    /// Canonical spelling.
    pub fn canonical(&self) -> String {
        let mut s = "decode".to_string();
        if let Some(k) = self.verify {
            s.push_str(&format!(",verify:{k}"));
        }
        if let Some(n) = self.prefill {
            s.push_str(&format!(",prefill:{n}"));
        }
        s
    }
}

/// Everything a build needs.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Local checkpoint directory (already resolved from a repo id if needed).
    pub model_dir: PathBuf,
    /// `--model` as the user gave it (recorded in the manifest's command).
    pub model_source: String,
    pub variant: Variant,
    pub ctx: usize,
    pub fp32: bool,
    pub quant: Quant,
    pub functions: Functions,
    /// Build only this chunk (or [`SIDE_PART`]).
    pub only: Option<String>,
    /// Worker threads (`None` = all cores).
    pub threads: Option<usize>,
    pub zip: bool,
    /// Replace an existing non-empty `out`.
    pub force: bool,
    pub out: PathBuf,
    /// `model_name` written to model_config.json (default: `gemma4-<variant>-<ctx>`).
    pub model_name: Option<String>,
    /// Print the MIL text of each chunk after this phase (`emit`) or pass (`dead_code_elimination`, ...).
    pub dump_after: Option<String>,
}

impl BuildOptions {
    /// The canonical command that rebuilds this set: `--out`, `--force`, `--threads`, `--only`,
    /// `--zip`, `--quiet`, `--json` and `--dump-after` are left out, every other flag written.
    pub fn canonical_command(&self) -> Vec<String> {
        let mut c = vec![
            "gemma-convert".to_string(),
            "--model".into(),
            self.model_source.clone(),
            "--variant".into(),
            self.variant.name().into(),
            "--nbits".into(),
            self.quant.nbits.to_string(),
            "--group-size".into(),
            self.quant.group_size.to_string(),
            "--ctx".into(),
            self.ctx.to_string(),
            "--precision".into(),
            if self.fp32 { "fp32" } else { "fp16" }.into(),
            "--functions".into(),
            self.functions.canonical(),
        ];
        match self.variant {
            Variant::Wfa { fw } => c.extend(["--fw".into(), fw.to_string()]),
            Variant::Flash { block } => c.extend(["--flash-block".into(), block.to_string()]),
            _ => {}
        }
        if let Some(n) = &self.model_name {
            c.extend(["--model-name".into(), n.clone()]);
        }
        c
    }

    fn model_name(&self) -> String {
        self.model_name
            .clone()
            .unwrap_or_else(|| format!("gemma4-{}-{}", self.variant.name(), self.ctx))
    }

    fn quantization(&self) -> String {
        if self.quant.nbits == 0 {
            if self.fp32 { "fp32" } else { "fp16" }.to_string()
        } else {
            format!("int{}", self.quant.nbits)
        }
    }
}

/// Progress reporting (the CLI draws bars; tests use [`NoProgress`]).
pub trait Progress: Sync {
    /// A phase starts with `total` units of work.
    fn start(&self, _phase: &str, _total: u64) {}
    /// `n` more units of the current phase are done.
    fn advance(&self, _n: u64) {}
    /// The current phase ended after `secs` seconds.
    fn finish(&self, _phase: &str, _secs: f64) {}
    /// Text the user asked to see (e.g. `--dump-after`).
    fn dump(&self, _text: &str) {}
}

/// Silent progress.
pub struct NoProgress;
impl Progress for NoProgress {}

/// One written package.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PackageSummary {
    pub name: String,
    pub layers: [usize; 2],
    pub functions: Vec<String>,
    pub model_bytes: u64,
    pub weight_bytes: u64,
    pub blobs: u32,
    pub ops: usize,
}

/// What a build did.
#[derive(Clone, Debug, Serialize)]
pub struct BuildReport {
    pub out: PathBuf,
    pub phases: Vec<(String, f64)>,
    pub packages: Vec<PackageSummary>,
    pub files: usize,
    pub total_bytes: u64,
    pub peak_rss_bytes: Option<u64>,
    pub uncompressed_weights: Vec<TensorRecord>,
    pub zip: Option<PathBuf>,
}

/// `part.json` of an `--only` build.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PartDescriptor {
    pub command: Vec<String>,
    pub part: String,
    pub packages: Vec<PackageSummary>,
    pub records: Vec<TensorRecord>,
    pub build: serde_json::Value,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

struct Timer<'a> {
    phases: Vec<(String, f64)>,
    progress: &'a dyn Progress,
}

impl Timer<'_> {
    fn run<T>(&mut self, phase: &str, total: u64, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.run_labelled(phase, phase, total, f)
    }

    /// Like [`Timer::run`]; progress shows `label` (e.g. `emit chunk2`), the report sums by `phase`.
    fn run_labelled<T>(
        &mut self,
        phase: &str,
        label: &str,
        total: u64,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.progress.start(label, total);
        let t0 = Instant::now();
        let r = f();
        let secs = t0.elapsed().as_secs_f64();
        self.progress.finish(label, secs);
        if let Some(p) = self.phases.iter_mut().find(|(n, _)| n == phase) {
            p.1 += secs;
        } else {
            self.phases.push((phase.to_string(), secs));
        }
        r
    }
}

/// Check `out` is usable: absent, or an empty directory, or `force`.
pub fn check_out(out: &Path, force: bool) -> Result<()> {
    if let Ok(meta) = out.symlink_metadata() {
        if !meta.is_dir() {
            return Err(ExportError::BadOption(format!(
                "--out {}: exists and is not a directory",
                out.display()
            )));
        }
        let non_empty = std::fs::read_dir(out)
            .map_err(io_err(out))?
            .next()
            .is_some();
        if non_empty && !force {
            return Err(ExportError::BadOption(format!(
                "--out {}: directory exists and is not empty (use --force to replace it)",
                out.display()
            )));
        }
    }
    Ok(())
}

/// A temporary directory beside `out`, removed on drop unless published.
struct Staging {
    dir: Option<tempfile::TempDir>,
}

impl Staging {
    fn new(out: &Path) -> Result<Staging> {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{name}.partial-"))
            .tempdir_in(&parent)
            .map_err(io_err(&parent))?;
        Ok(Staging { dir: Some(dir) })
    }

    fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("."))
    }

    /// Move the staged directory to `out` (replacing an existing one).
    fn publish(mut self, out: &Path) -> Result<()> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let staged = dir.keep();
        if out.exists() {
            let aside = staged.with_extension("old");
            std::fs::rename(out, &aside).map_err(io_err(out))?;
            if let Err(e) = std::fs::rename(&staged, out) {
                let _ = std::fs::rename(&aside, out);
                let _ = std::fs::remove_dir_all(&staged);
                return Err(ExportError::Io {
                    path: out.to_path_buf(),
                    source: e,
                });
            }
            std::fs::remove_dir_all(&aside).map_err(io_err(&aside))?;
        } else {
            std::fs::rename(&staged, out).map_err(io_err(out))?;
        }
        Ok(())
    }
}

/// Hash the checkpoint's files (config, index, safetensors) for the manifest.
fn model_files(ckpt: &gemma4::Checkpoint) -> Result<serde_json::Value> {
    let dir = ckpt.dir();
    let mut paths: Vec<PathBuf> = vec![dir.join("config.json")];
    let idx = dir.join("model.safetensors.index.json");
    if idx.exists() {
        paths.push(idx);
    }
    paths.extend(ckpt.files().into_iter().map(Path::to_path_buf));
    paths.sort();
    paths.dedup();
    use rayon::prelude::*;
    let v: Result<Vec<serde_json::Value>> = paths
        .par_iter()
        .map(|p| {
            let (size, sha) =
                sha256_file(p).map_err(|e| ExportError::Unsupported(e.to_string()))?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(serde_json::json!({"path": name, "size": size, "sha256": sha}))
        })
        .collect();
    Ok(serde_json::Value::Array(v?))
}

/// Build a chunk set (or one part of it with `--only`).
pub fn build(opts: &BuildOptions, progress: &dyn Progress) -> Result<BuildReport> {
    check_out(&opts.out, opts.force)?;
    let pool = match opts.threads {
        Some(t) => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(t.max(1))
                .build()
                .map_err(|e| ExportError::BadOption(format!("--threads {t}: {e}")))?,
        ),
        None => None,
    };
    let run = || build_in(opts, progress, pool.as_ref());
    match &pool {
        Some(p) => p.install(run),
        None => run(),
    }
}

fn build_in(
    opts: &BuildOptions,
    progress: &dyn Progress,
    pool: Option<&rayon::ThreadPool>,
) -> Result<BuildReport> {
    let mut t = Timer {
        phases: Vec::new(),
        progress,
    };
    let (ckpt, model_files) = t.run("inventory", 1, || {
        let c = gemma4::Checkpoint::open(&opts.model_dir)?;
        let files = model_files(&c)?;
        Ok((c, files))
    })?;
    let plan = t.run("plan", 1, || {
        if ckpt.config().attention_k_eq_v() {
            return Err(ExportError::Unsupported(
                "attention_k_eq_v models (V = raw K on full layers) are not supported by the exporter yet".into(),
            ));
        }
        let layout = ModelLayout::from_config(ckpt.config());
        Ok(ChunkPlan::new(
            &layout,
            &PlanOptions {
                variant: opts.variant.clone(),
                ctx: opts.ctx,
                fp32: opts.fp32,
            },
        )?)
    })?;
    // Functions: verify:K joins every chunk package; prefill:N adds the prefill packages (swa4 cut,
    // each written right after the decode chunk that contains it, from the same prepared weights).
    if let Some(k) = opts.functions.verify {
        plan.check_verify(k)?;
    }
    let prefill_chunks = match opts.functions.prefill {
        Some(n) => plan.prefill_chunks(n)?,
        None => Vec::new(),
    };
    let chunks: Vec<&crate::plan::ChunkSpec> = match &opts.only {
        None => plan.chunks.iter().collect(),
        Some(o) if o == SIDE_PART => Vec::new(),
        Some(o) => vec![plan.chunk(o).ok_or_else(|| {
            ExportError::BadOption(format!(
                "--only {o}: no such chunk in variant {} (chunks: {}, or `{SIDE_PART}`)",
                plan.variant.name(),
                plan.chunks
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?],
    };
    let mut build_facts = serde_json::json!({
        "variant": plan.variant,
        "ctx": plan.ctx,
        "precision": if plan.fp32 { "fp32" } else { "fp16" },
        "nbits": opts.quant.nbits,
        "group_size": opts.quant.group_size,
        "functions": opts.functions.canonical(),
        "sliding_producer": plan.sliding_producer,
        "full_producer": plan.full_producer,
        "chunks": plan.chunks.iter().map(|c| serde_json::json!({
            "name": c.name, "layers": [c.layers.start, c.layers.end],
        })).collect::<Vec<_>>(),
        "model_files": model_files,
    });
    if let (Some(o), Some(_)) = (build_facts.as_object_mut(), opts.functions.prefill) {
        o.insert(
            "prefill_chunks".into(),
            prefill_chunks
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.name, "layers": [c.layers.start, c.layers.end],
                    })
                })
                .collect::<Vec<_>>()
                .into(),
        );
    }

    let staging = Staging::new(&opts.out)?;
    let mut packages = Vec::new();
    let mut records: Vec<TensorRecord> = Vec::new();
    let pctx = PackageCtx {
        opts,
        plan: &plan,
        progress,
        dir: staging.path(),
    };
    for chunk in chunks {
        let mut w = Weights::new(
            &ckpt as &dyn WeightSource,
            plan.fp32,
            opts.quant.clone(),
            pool,
        )?;
        let program = t.run_labelled(
            "emit",
            &format!("emit {}", chunk.name),
            chunk.layers.len() as u64,
            || {
                let f = emit_decode(&plan, chunk, &mut w)?;
                let mut p = Program::single(DECODE_FN, f);
                if let Some(k) = opts.functions.verify {
                    let f = emit_verify(&plan, chunk, k, &mut w)?;
                    p.functions.insert(VERIFY_FN.to_string(), f);
                }
                Ok(p)
            },
        )?;
        packages.push(finish_package(
            &mut t,
            &pctx,
            chunk,
            program,
            Some(DECODE_FN),
            "chunk",
        )?);
        if let Some(n) = opts.functions.prefill {
            let nested = prefill_chunks
                .iter()
                .filter(|p| plan.containing_chunk(p).map(|c| &c.name) == Some(&chunk.name));
            for pchunk in nested {
                let program = t.run_labelled(
                    "emit",
                    &format!("emit {}", pchunk.name),
                    pchunk.layers.len() as u64,
                    || {
                        let f = emit_prefill(&plan, pchunk, n, &mut w)?;
                        Ok(Program::single(PREFILL_FN, f))
                    },
                )?;
                let what = format!("prefill (N = {n}) chunk");
                packages.push(finish_package(&mut t, &pctx, pchunk, program, None, &what)?);
            }
        }
        records.extend(w.records());
        drop(w);
    }

    let side = opts.only.is_none() || opts.only.as_deref() == Some(SIDE_PART);
    if side {
        t.run("side files", 1, || {
            let facts = SetFacts {
                model_name: &opts.model_name(),
                quantization: &opts.quantization(),
                verify_k: opts.functions.verify,
                prefill: opts
                    .functions
                    .prefill
                    .map(|n| (n, prefill_chunks.as_slice())),
            };
            write_side_files(
                staging.path(),
                &plan,
                ckpt.config(),
                &ckpt,
                Some(ckpt.dir()),
                &facts,
                pool,
            )
        })?;
    }

    let command = opts.canonical_command();
    let uncompressed: Vec<TensorRecord> = records
        .iter()
        .filter(|r| matches!(r.outcome, palettize::Outcome::Kept { .. }))
        .cloned()
        .collect();
    let zip = t.run("publish", 1, || {
        match &opts.only {
            None => write_manifest(staging.path(), &command, &build_facts, &records)?,
            Some(part) => {
                let d = PartDescriptor {
                    command: command.clone(),
                    part: part.clone(),
                    packages: packages.clone(),
                    records: records.clone(),
                    build: build_facts.clone(),
                };
                let p = staging.path().join(PART_NAME);
                let mut s = serde_json::to_string_pretty(&d).unwrap_or_default();
                s.push('\n');
                std::fs::write(&p, s).map_err(io_err(&p))?;
            }
        }
        staging.publish(&opts.out)?;
        if opts.zip {
            let z = zip_path(&opts.out);
            let prefix = opts
                .out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            write_zip(&opts.out, &z, &prefix)
                .map_err(|e| ExportError::Unsupported(e.to_string()))?;
            Ok(Some(z))
        } else {
            Ok(None)
        }
    })?;
    let files = hash_tree(&opts.out).map_err(|e| ExportError::Unsupported(e.to_string()))?;
    Ok(BuildReport {
        out: opts.out.clone(),
        phases: t.phases,
        packages,
        files: files.len(),
        total_bytes: files.iter().map(|f| f.size).sum(),
        peak_rss_bytes: peak_rss_bytes(),
        uncompressed_weights: uncompressed,
        zip,
    })
}

/// What every package of one build shares.
struct PackageCtx<'a> {
    opts: &'a BuildOptions,
    plan: &'a ChunkPlan,
    progress: &'a dyn Progress,
    /// The staging directory.
    dir: &'a Path,
}

/// optimize → serialize → read back one emitted package (`default_fn`: the default function of a
/// multi-function package, `None` for a single `main` function); returns its summary.
fn finish_package(
    t: &mut Timer<'_>,
    pc: &PackageCtx<'_>,
    chunk: &ChunkSpec,
    mut program: Program,
    default_fn: Option<&str>,
    what: &str,
) -> Result<PackageSummary> {
    let (opts, plan, progress) = (pc.opts, pc.plan, pc.progress);
    if opts.dump_after.as_deref() == Some("emit") {
        progress.dump(&format!(
            "// chunk {}\n{}",
            chunk.name,
            mil::printer::print_program(&program)
        ));
    }
    t.run_labelled("optimize", &format!("optimize {}", chunk.name), 1, || {
        let mut pipe = mil::passes::Pipeline::named("default")
            .map_err(|e| ExportError::Unsupported(e.to_string()))?;
        if let Some(pass) = opts.dump_after.as_deref().filter(|p| *p != "emit") {
            pipe = pipe
                .dump_after(pass)
                .map_err(|e| ExportError::BadOption(format!("--dump-after: {e}")))?;
        }
        let report = pipe.run(&mut program).map_err(|e| ExportError::Invalid {
            chunk: chunk.name.clone(),
            source: match e {
                mil::passes::PassError::Invalid { source, .. } => source,
                other => return ExportError::Unsupported(other.to_string()),
            },
        })?;
        for (_, text) in report.dumps {
            progress.dump(&format!("// chunk {}\n{text}", chunk.name));
        }
        for f in program.functions.values_mut() {
            keep_inputs_alive(f);
        }
        mil::validate::validate(&program).map_err(|source| ExportError::Invalid {
            chunk: chunk.name.clone(),
            source: Box::new(source),
        })
    })?;
    let dest = pc.dir.join(format!("{}.mlpackage", chunk.name));
    let ops = program
        .functions
        .values()
        .map(|f| f.block.operations.len())
        .sum();
    let functions: Vec<String> = program.functions.keys().cloned().collect();
    let report = t.run_labelled("serialize", &format!("serialize {}", chunk.name), 1, || {
        let meta = mlpackage::Metadata {
            short_description: format!(
                "Gemma 4 {} {what} {} (layers {}..{}), {} ctx {}",
                plan.variant.name(),
                chunk.name,
                chunk.layers.start,
                chunk.layers.end,
                opts.quantization(),
                plan.ctx
            ),
            version: env!("CARGO_PKG_VERSION").to_string(),
            author: "gemma-convert".into(),
            license: String::new(),
            user_defined: [
                (
                    "com.github.gemma-convert.version".to_string(),
                    env!("CARGO_PKG_VERSION").to_string(),
                ),
                (
                    "com.github.gemma-convert.variant".to_string(),
                    plan.variant.name().to_string(),
                ),
                (
                    "com.github.gemma-convert.chunk".to_string(),
                    chunk.name.clone(),
                ),
            ]
            .into_iter()
            .collect(),
        };
        let desc = mlpackage::Description::derive(&program, default_fn, meta)
            .map_err(|e| ExportError::Unsupported(format!("chunk {}: {e}", chunk.name)))?;
        let pkg = mlpackage::Package::new(program, desc);
        mlpackage::write_package(&pkg, &dest, &mlpackage::WriteOptions::default())
            .map_err(|e| ExportError::Unsupported(format!("writing {}: {e}", dest.display())))
    })?;
    t.run_labelled("verify", &format!("verify {}", chunk.name), 1, || {
        let back = mlpackage::read_package(&dest).map_err(|e| {
            ExportError::Unsupported(format!("reading back {}: {e}", dest.display()))
        })?;
        mil::validate::validate(&back.program).map_err(|source| ExportError::Invalid {
            chunk: chunk.name.clone(),
            source: Box::new(source),
        })
    })?;
    Ok(PackageSummary {
        name: chunk.name.clone(),
        layers: [chunk.layers.start, chunk.layers.end],
        functions,
        model_bytes: report.model_bytes,
        weight_bytes: report.weight_bytes,
        blobs: report.blob_count,
        ops,
    })
}

/// The zip written by `--zip`: `OUT.zip` beside `OUT`.
pub fn zip_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_os_string();
    s.push(".zip");
    PathBuf::from(s)
}

fn write_manifest(
    dir: &Path,
    command: &[String],
    build: &serde_json::Value,
    records: &[TensorRecord],
) -> Result<()> {
    let files = hash_tree(dir).map_err(|e| ExportError::Unsupported(e.to_string()))?;
    let mut sorted: Vec<&TensorRecord> = records.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.dedup_by(|a, b| a.name == b.name);
    let uncompressed = sorted
        .iter()
        .filter(|r| matches!(r.outcome, palettize::Outcome::Kept { .. }))
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .collect();
    let palettized = sorted
        .iter()
        .filter(|r| matches!(r.outcome, palettize::Outcome::Palettized { .. }))
        .count();
    let mut build = build.clone();
    if let Some(o) = build.as_object_mut() {
        o.insert("palettized_weights".into(), palettized.into());
    }
    let m = ChunkSetManifest {
        format: MANIFEST_FORMAT.into(),
        tool: "gemma-convert".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        command: command.to_vec(),
        build,
        uncompressed_weights: uncompressed,
        files,
    };
    let p = dir.join(MANIFEST_NAME);
    std::fs::write(&p, m.to_json()).map_err(io_err(&p))
}

/// Join `--only` parts into one chunk set at `out`: every part must come from the same canonical
/// command, and together they must hold every chunk and the side files. The result is byte-identical
/// to a full build with that command.
pub fn assemble(parts: &[PathBuf], out: &Path, force: bool) -> Result<PathBuf> {
    check_out(out, force)?;
    let mut descs = Vec::new();
    for p in parts {
        let path = p.join(PART_NAME);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let d: PartDescriptor = serde_json::from_str(&text).map_err(|e| {
            ExportError::BadOption(format!("{}: not a part descriptor: {e}", path.display()))
        })?;
        descs.push((p.clone(), d));
    }
    let Some((_, first)) = descs.first() else {
        return Err(ExportError::BadOption("assemble: no parts given".into()));
    };
    let command = first.command.clone();
    let mut build = first.build.clone();
    if let Some(o) = build.as_object_mut() {
        o.remove("palettized_weights");
    }
    for (p, d) in &descs {
        if d.command != command || d.build != first.build {
            return Err(ExportError::BadOption(format!(
                "{}: part was built by a different command ({}) than the first part ({})",
                p.display(),
                d.command.join(" "),
                command.join(" ")
            )));
        }
    }
    let expected: Vec<String> = build["chunks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut have: Vec<String> = descs.iter().map(|(_, d)| d.part.clone()).collect();
    have.sort();
    let mut want = expected.clone();
    want.push(SIDE_PART.into());
    want.sort();
    if have != want {
        return Err(ExportError::BadOption(format!(
            "assemble: parts {have:?} do not cover exactly the chunks and side files {want:?}"
        )));
    }
    let staging = Staging::new(out)?;
    let mut records = Vec::new();
    for (p, d) in &descs {
        copy_tree(p, staging.path(), &[PART_NAME])?;
        records.extend(d.records.clone());
    }
    write_manifest(staging.path(), &command, &build, &records)?;
    staging.publish(out)?;
    Ok(out.to_path_buf())
}

fn copy_tree(src: &Path, dst: &Path, skip: &[&str]) -> Result<()> {
    let files = crate::bundle::manifest::list_files(src, skip)
        .map_err(|e| ExportError::Unsupported(e.to_string()))?;
    for f in files {
        let s = src.join(&f);
        let d = dst.join(&f);
        if d.exists() {
            return Err(ExportError::BadOption(format!(
                "assemble: {f} is in more than one part"
            )));
        }
        if let Some(parent) = d.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::copy(&s, &d).map_err(io_err(&s))?;
    }
    Ok(())
}
