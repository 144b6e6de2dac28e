//! The conversion as a readable phase list:
//! `inventory → plan → emit → optimize → serialize → [compile] → verify → publish`, with the side
//! files written and the checkpoint hashed on threads of their own beside the chunk phases.
//!
//! * **inventory**: open the checkpoint (config, tensor headers, prefix); its files are hashed (for
//!   the manifest) beside the phases that follow.
//! * **plan**: derive the [`ChunkPlan`] of the variant.
//! * **emit** (per chunk): prepare the chunk's weights (palettize them in parallel when compressing),
//!   then emit its MIL functions with one code path for every layer: `decode_q1` (default) and, with
//!   `--functions …,verify:K`, `verify_qK` in the same package (same prepared weights, stored once);
//!   with `prefill:N`, the prefill packages nested in this chunk (`prefill_chunk{i}`, swa4 cut) follow
//!   it, emitted from the same prepared weights.
//! * **optimize**: the `mil` default pass pipeline (dead-code elimination, const deduplication), then
//!   the declared inputs are kept alive.
//! * **serialize**: write `<chunk>.mlpackage` (protobuf, `weight.bin`, `Manifest.json`); the chunk's
//!   program is dropped once encoded, so peak memory is one chunk. A prefill package holding exactly
//!   a decode chunk's layers is written with it around one `weight.bin` (byte-identical in both, what
//!   the app hard-links; recorded in the manifest's `shared_weights`).
//! * **compile** (`--format mlmodelc|both`): compile the written package into `<chunk>.mlmodelc`
//!   (`mlpackage::compiled`); with `mlmodelc` the package is removed again.
//! * **verify**: read every package (and bundle) back from disk and validate its program.
//! * **side files** (beside emit … verify, sharing the pool): int8 embedding / PLE tables, PLE
//!   projection and norm, RoPE tables,
//!   `model_config.json` (plus `verify_k` / `prefill_length` / `prefill_chunks` when those functions
//!   are built), `hf_model/`.
//! * **publish**: `manifest.json` (sha256 of every file, tool version, the build options as data
//!   and the command line the caller rendered from them), optional reproducible zip, then both
//!   swapped into place together by `mlpackage::publish` (the target was checked and locked before
//!   the first phase; see [`publish_rules`]).
//!
//! `--only <chunk>` builds one decode chunk (with the prefill packages it contains), or `side` for the
//! side files, into its own directory with a `part.json`; [`assemble`] joins parts into the same bytes
//! a full build writes.

use crate::bundle::manifest::{
    build_facts, model_files_sequential, write_manifest, write_manifest_known,
};
use crate::bundle::side::{SetFacts, write_side_files};
use crate::emit::{PREFILL_FN, emit_function, keep_inputs_alive};
use crate::error::{ExportError, Result};
use crate::layout::ModelLayout;
use crate::plan::{ChunkPlan, ChunkSpec, FunctionKind, PlanOptions, Variant};
use crate::weights::{WeightSource, Weights};
use chunkset::error::read_json;
use chunkset::{
    BuildFacts, BuildSpec, Compression, ContractError, DEFAULT_GROUP_SIZE, GraphForms, LutConfig,
    NBits, OutputFormat, PackageFormat, Precision, Taps, list_files, write_zip,
};
use mil::Program;
use palettize::TensorRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use chunkset::Functions;

/// Name of the part descriptor written by `--only`.
pub const PART_NAME: &str = "part.json";
/// `--only` value that builds the side files.
pub const SIDE_PART: &str = "side";

/// Everything a build needs: the options that determine the set's bytes ([`BuildSpec`]) and how to
/// run it. [`BuildOptions::new`] gives the CLI's defaults; the setters change one option each.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Local checkpoint directory (already resolved from a repo id if needed).
    pub model_dir: PathBuf,
    /// The options recorded in the manifest (what `rebuild` re-runs).
    pub spec: BuildSpec,
    /// The command line recorded in the manifest, rendered by the caller from `spec` (the library
    /// neither writes nor parses flag spellings).
    pub command: Vec<String>,
    /// Build only this chunk (or [`SIDE_PART`]).
    pub only: Option<String>,
    /// Worker threads (`None` = all cores).
    pub threads: Option<usize>,
    pub zip: bool,
    /// Replace an existing non-empty `out`.
    pub force: bool,
    pub out: PathBuf,
    /// Print the MIL text of each chunk after this phase (`emit`) or pass (`dead_code_elimination`, ...).
    pub dump_after: Option<String>,
}

impl BuildOptions {
    /// A build of the checkpoint in `model_dir` into `out` with the CLI's defaults: swa4, INT4 with
    /// group size 32, ctx 2048, fp16, `decode_q1` only, all cores; the recorded model is `model_dir`
    /// as text and the recorded command is empty.
    pub fn new(model_dir: impl Into<PathBuf>, out: impl Into<PathBuf>) -> BuildOptions {
        let model_dir = model_dir.into();
        BuildOptions {
            spec: BuildSpec {
                model: model_dir.display().to_string(),
                variant: Variant::Swa4,
                ctx: 2048,
                precision: Precision::Fp16,
                compression: Compression::Palettize(LutConfig {
                    nbits: NBits::B4,
                    group_size: DEFAULT_GROUP_SIZE,
                }),
                functions: Functions::decode_only(),
                model_name: None,
                format: OutputFormat::Mlpackage,
                forms: GraphForms::default(),
                taps: Taps::none(),
                numerics: None,
            },
            model_dir,
            command: Vec::new(),
            only: None,
            threads: None,
            zip: false,
            force: false,
            out: out.into(),
            dump_after: None,
        }
    }

    /// The model as recorded in the manifest (`--model` as the user gave it).
    pub fn model_source(mut self, source: impl Into<String>) -> Self {
        self.spec.model = source.into();
        self
    }

    pub fn variant(mut self, variant: Variant) -> Self {
        self.spec.variant = variant;
        self
    }

    pub fn ctx(mut self, ctx: usize) -> Self {
        self.spec.ctx = ctx;
        self
    }

    pub fn precision(mut self, precision: Precision) -> Self {
        self.spec.precision = precision;
        self
    }

    pub fn compression(mut self, compression: Compression) -> Self {
        self.spec.compression = compression;
        self
    }

    pub fn functions(mut self, functions: Functions) -> Self {
        self.spec.functions = functions;
        self
    }

    /// Packages, compiled bundles or both.
    pub fn format(mut self, format: OutputFormat) -> Self {
        self.spec.format = format;
        self
    }

    /// Op forms of the graphs (the reference pipeline's or leaner, [`chunkset::forms`]).
    pub fn forms(mut self, forms: GraphForms) -> Self {
        self.spec.forms = forms;
        self
    }

    /// Optional outputs (EAGLE-3 hidden states, verify logits).
    pub fn taps(mut self, taps: Taps) -> Self {
        self.spec.taps = taps;
        self
    }

    pub fn model_name(mut self, name: impl Into<String>) -> Self {
        self.spec.model_name = Some(name.into());
        self
    }

    /// Numerics choices of the graphs ([`crate::numerics`]); the default is recorded as `None`.
    pub fn numerics(mut self, numerics: crate::numerics::Numerics) -> Self {
        self.spec.numerics = (!numerics.is_default()).then(|| numerics.name());
        self
    }

    pub fn command(mut self, command: Vec<String>) -> Self {
        self.command = command;
        self
    }

    /// Build only this chunk (or [`SIDE_PART`]).
    pub fn only(mut self, part: impl Into<String>) -> Self {
        self.only = Some(part.into());
        self
    }

    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    pub fn zip(mut self, zip: bool) -> Self {
        self.zip = zip;
        self
    }

    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    fn fp32(&self) -> bool {
        self.spec.precision.is_fp32()
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
#[serde(deny_unknown_fields)]
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
    /// Wall time of the whole build (every phase, the overlapped checkpoint hashing included).
    pub seconds: f64,
    /// Wall time per phase; [`HASH_PHASE`] and [`SIDE_PHASE`] run beside the others and are not
    /// part of their sum.
    pub phases: Vec<(String, f64)>,
    pub packages: Vec<PackageSummary>,
    pub files: usize,
    pub total_bytes: u64,
    pub peak_rss_bytes: Option<u64>,
    pub uncompressed_weights: Vec<TensorRecord>,
    pub zip: Option<PathBuf>,
    /// Things the user should know about publishing (debris removed, previous set not removed).
    pub warnings: Vec<String>,
}

/// `part.json` of an `--only` build.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PartDescriptor {
    pub command: Vec<String>,
    pub part: String,
    pub packages: Vec<PackageSummary>,
    pub records: Vec<TensorRecord>,
    #[serde(serialize_with = "chunkset::error::sorted")]
    pub build: BuildFacts,
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

/// Whether `dir` was written by a build: a chunk set (`manifest.json` of gemma-convert) or an
/// `--only` part (`part.json`).
pub fn is_our_output(dir: &Path) -> bool {
    chunkset::ChunkSetManifest::read(dir).is_ok_and(|m| m.tool == chunkset::manifest::TOOL)
        || read_json::<PartDescriptor>(&dir.join(PART_NAME)).is_ok()
}

/// Whether `zip` is a set zip written by `--zip` for an output named `name`.
pub fn is_our_zip(zip: &Path, name: &str) -> bool {
    let Ok(f) = std::fs::File::open(zip) else {
        return false;
    };
    let Ok(z) = zip::ZipArchive::new(std::io::BufReader::new(f)) else {
        return false;
    };
    let want = format!("{name}/{}", chunkset::MANIFEST_NAME);
    z.file_names().any(|n| n.is_ok_and(|n| n == want.as_str()))
}

/// The publishing rules of a build (or `assemble`) into `out`: nothing that is, contains or lies
/// inside `protected` (`(what, path)`), a non-empty `out` only with `force` and only if it is one of
/// ours, `OUT.zip` likewise.
pub fn publish_rules<'a>(
    force: bool,
    protected: Vec<(&'a str, PathBuf)>,
) -> mlpackage::publish::Rules<'a> {
    use mlpackage::publish::{Companion, Rules};
    Rules {
        flag: "--out",
        force,
        protected,
        is_ours: &is_our_output,
        marker: "manifest.json or part.json written by gemma-convert",
        companions: vec![Companion {
            suffix: ".zip",
            is_ours: &|z: &Path| {
                let name = z
                    .file_name()
                    .map(|n| n.to_string_lossy().trim_end_matches(".zip").to_string())
                    .unwrap_or_default();
                is_our_zip(z, &name)
            },
        }],
    }
}

/// Build a chunk set (or one part of it with `--only`).
pub fn build(opts: &BuildOptions, progress: &dyn Progress) -> Result<BuildReport> {
    let rules = publish_rules(
        opts.force,
        vec![("the model directory", opts.model_dir.clone())],
    );
    let publisher = mlpackage::publish::Publisher::begin(&opts.out, &rules)?;
    let pool = match opts.threads {
        Some(t) => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(t.max(1))
                .build()
                .map_err(|e| ExportError::BadOption(format!("--threads {t}: {e}")))?,
        ),
        None => None,
    };
    let run = || build_in(opts, progress, pool.as_ref(), publisher);
    match &pool {
        Some(p) => p.install(run),
        None => run(),
    }
}

fn build_in(
    opts: &BuildOptions,
    progress: &dyn Progress,
    pool: Option<&rayon::ThreadPool>,
    staging: mlpackage::publish::Publisher,
) -> Result<BuildReport> {
    let start = Instant::now();
    let mut t = Timer {
        phases: Vec::new(),
        progress,
    };
    let ckpt = t.run("inventory", 1, || {
        Ok(gemma4::Checkpoint::open(&opts.model_dir)?)
    })?;
    let plan = t.run("plan", 1, || plan_of(&ckpt, opts))?;
    let prefill_chunks = check_functions(&plan, &opts.spec.functions)?;
    let chunks = selected_chunks(&plan, opts.only.as_deref())?;
    // the checkpoint's sha256 (for the manifest) is computed on a thread of its own while the
    // chunks are emitted; joined before publishing
    std::thread::scope(|scope| {
        let hasher = scope.spawn(|| {
            let t0 = Instant::now();
            (model_files_sequential(&ckpt), t0.elapsed().as_secs_f64())
        });
        let built = build_parts(
            &mut t,
            opts,
            &ckpt,
            &plan,
            &prefill_chunks,
            &chunks,
            staging.dir(),
            pool,
        );
        let (model_files, secs) = hasher
            .join()
            .map_err(|_| ExportError::Internal("checkpoint hashing thread panicked".into()))?;
        t.phases.push((HASH_PHASE.to_string(), secs));
        let (packages, records, known) = built?;
        let facts = build_facts(&opts.spec, &plan, &prefill_chunks, model_files?);
        let uncompressed: Vec<TensorRecord> = records
            .iter()
            .filter(|r| matches!(r.outcome, palettize::Outcome::Kept { .. }))
            .cloned()
            .collect();
        let out = staging.target().path.clone();
        let (zip, warnings) = t.run("publish", 1, || {
            publish(opts, staging, &facts, &packages, &records, &known)
        })?;
        // the report counts the files and bytes of the published set (no second hashing)
        let files = list_files(&out, &[chunkset::MANIFEST_NAME])?;
        let mut total_bytes = 0;
        for f in &files {
            let p = out.join(f);
            total_bytes += std::fs::metadata(&p).map_err(io_err(&p))?.len();
        }
        Ok(BuildReport {
            out: opts.out.clone(),
            seconds: start.elapsed().as_secs_f64(),
            phases: t.phases,
            packages,
            files: files.len(),
            total_bytes,
            peak_rss_bytes: peak_rss_bytes(),
            uncompressed_weights: uncompressed,
            zip,
            warnings,
        })
    })
}

/// Phase name of the checkpoint hashing in the report (it overlaps the other phases, so it is not
/// part of their sum).
pub const HASH_PHASE: &str = "checkpoint sha256 (overlapped)";

/// Phase name of the side files in the report (written beside the chunks' phases, so not part of
/// their sum either).
pub const SIDE_PHASE: &str = "side files (overlapped)";

/// What [`build_parts`] produced: the packages, the weight records, the files hashed while written.
type Parts = (
    Vec<PackageSummary>,
    Vec<TensorRecord>,
    BTreeMap<String, chunkset::FileEntry>,
);

/// emit → … → verify of every selected chunk and, beside them, the side files (unless `--only`
/// names a chunk), into the staging directory `dir`.
#[allow(clippy::too_many_arguments)]
fn build_parts(
    t: &mut Timer<'_>,
    opts: &BuildOptions,
    ckpt: &gemma4::Checkpoint,
    plan: &ChunkPlan,
    prefill_chunks: &[ChunkSpec],
    chunks: &[&ChunkSpec],
    dir: &Path,
    pool: Option<&rayon::ThreadPool>,
) -> Result<Parts> {
    let pctx = PackageCtx {
        opts,
        plan,
        progress: t.progress,
        dir,
    };
    let side = opts.only.is_none() || opts.only.as_deref() == Some(SIDE_PART);
    // The side files (int8 tables, RoPE, config, hf_model/) depend on nothing the chunks produce:
    // they are written beside the chunks' emission as the other half of a `rayon::join`, so both
    // share the build's pool (each alone leaves cores idle in its serial stretches: a chunk's
    // optimize and serialize, a table's writing and hashing). A join, not a thread of its own: the
    // build runs on a pool worker, and a worker blocked on a thread that waits for the pool would
    // deadlock a one-thread pool; with one thread the join runs the two halves one after the other.
    let write_side = || {
        side.then(|| {
            let t0 = Instant::now();
            let facts = SetFacts {
                model_name: &opts.spec.model_name(),
                quantization: &opts.spec.quantization(),
                functions: &opts.spec.functions,
                prefill_chunks,
            };
            let r = write_side_files(
                dir,
                plan,
                ckpt.config(),
                ckpt,
                Some(ckpt.dir()),
                &facts,
                pool,
            );
            (r, t0.elapsed().as_secs_f64())
        })
    };
    let mut packages = Vec::new();
    let mut records: Vec<TensorRecord> = Vec::new();
    let emit_all = || -> Result<()> {
        for chunk in chunks {
            let mut w = Weights::new(
                ckpt as &dyn WeightSource,
                plan.fp32,
                opts.spec.compression,
                pool,
            );
            packages.extend(emit_chunk(t, &pctx, chunk, prefill_chunks, &mut w)?);
            records.extend(w.records());
        }
        Ok(())
    };
    let (emitted, side_files) = match pool {
        Some(p) => p.install(|| rayon::join(emit_all, write_side)),
        None => rayon::join(emit_all, write_side),
    };
    let mut known = BTreeMap::new();
    if let Some((hashed, secs)) = side_files {
        // shown and reported once done (it ran beside the chunks' phases, not after them)
        t.progress.start(SIDE_PHASE, 1);
        t.progress.finish(SIDE_PHASE, secs);
        t.phases.push((SIDE_PHASE.to_string(), secs));
        emitted?;
        known.extend(hashed?.into_iter().map(|f| (f.path.clone(), f)));
    } else {
        emitted?;
    }
    Ok((packages, records, known))
}

/// The plan of the checkpoint's layout (models the exporter cannot convert are refused here).
fn plan_of(ckpt: &gemma4::Checkpoint, opts: &BuildOptions) -> Result<ChunkPlan> {
    if ckpt.config().attention_k_eq_v() {
        return Err(ExportError::Unsupported(format!(
            "{}: attention_k_eq_v models (V = raw K on full layers) are not supported by the \
             exporter yet",
            ckpt.dir().join("config.json").display()
        )));
    }
    let layout = ModelLayout::from_config(ckpt.config());
    let mut plan = ChunkPlan::new(
        &layout,
        &PlanOptions {
            variant: opts.spec.variant.clone(),
            ctx: opts.spec.ctx,
            fp32: opts.fp32(),
        },
    )?;
    plan.forms = opts.spec.forms;
    plan.taps = opts.spec.taps;
    if let Some(n) = &opts.spec.numerics {
        plan.numerics = crate::numerics::Numerics::parse(n)
            .map_err(|e| ExportError::BadOption(format!("numerics `{n}`: {e}")))?;
    }
    Ok(plan)
}

/// Check the functions fit the plan; returns the prefill packages (none without prefill).
/// `verify:K` joins every chunk package; `prefill:N` adds the prefill packages (swa4 cut, each written
/// right after the decode chunk that contains it, from the same prepared weights). Stateful sets hold
/// `infer` and the `prefill_b<T>` functions in every package, and neither of the others.
fn check_functions(plan: &ChunkPlan, functions: &Functions) -> Result<Vec<ChunkSpec>> {
    if plan.variant.is_stateful() && (functions.verify.is_some() || functions.prefill.is_some()) {
        return Err(ExportError::BadOption(format!(
            "--functions: verify:K and prefill:N are not available for --variant {} (its batched \
             prefill is prefill_b:T)",
            plan.variant.name()
        )));
    }
    for &t in &functions.prefill_batches {
        plan.check_prefill_batch(t)?;
    }
    if let Some(k) = functions.verify {
        plan.check_verify(k)?;
    }
    if plan.variant.is_stateful() && !plan.taps.is_none() {
        return Err(ExportError::BadOption(format!(
            "--taps: the EAGLE-3 and verify taps are outputs of ChunkedEngine's chunks, not of \
             --variant {}",
            plan.variant.name()
        )));
    }
    if plan.taps.verify_logits && functions.verify.is_none() {
        return Err(ExportError::BadOption(
            "--taps verify-logits needs the verify function (--functions decode,verify:K)".into(),
        ));
    }
    Ok(match functions.prefill {
        Some(n) => plan.prefill_chunks(n)?,
        None => Vec::new(),
    })
}

/// The decode chunks this build writes: all, the one `--only` names, or none for the side files.
fn selected_chunks<'p>(plan: &'p ChunkPlan, only: Option<&str>) -> Result<Vec<&'p ChunkSpec>> {
    Ok(match only {
        None => plan.chunks.iter().collect(),
        Some(SIDE_PART) => Vec::new(),
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
    })
}

/// Emit, optimise, write and read back one decode chunk's package (its functions share `w`'s
/// prepared weights), then the prefill packages nested in it. A prefill chunk holding exactly the
/// decode chunk's layers (its weight twin, [`ChunkPlan::weight_twin`]) is written in one
/// [`mlpackage::PackageGroup`] with it: both packages get the same, byte-identical `weight.bin`.
fn emit_chunk(
    t: &mut Timer<'_>,
    pc: &PackageCtx<'_>,
    chunk: &ChunkSpec,
    prefill_chunks: &[ChunkSpec],
    w: &mut Weights<'_>,
) -> Result<Vec<PackageSummary>> {
    let (plan, functions) = (pc.plan, &pc.opts.spec.functions);
    let label = format!("emit {}", chunk.name);
    let program = t.run_labelled("emit", &label, chunk.layers.len() as u64, || {
        let mut p: Option<Program> = None;
        for kind in functions.chunk_functions(&plan.variant) {
            let f = emit_function(plan, chunk, kind, w)?;
            match &mut p {
                None => p = Some(Program::single(kind.name(), f)),
                Some(p) => {
                    p.functions.insert(kind.name(), f);
                }
            }
        }
        p.ok_or_else(|| ExportError::Internal("no chunk function to emit".into()))
    })?;
    // the first chunk function is the package's default (`decode_q1`, or `infer` when stateful)
    let default_fn = functions.chunk_functions(&plan.variant)[0].name();
    let mut group = Group::new(pc, chunk)?;
    group.add(t, pc, chunk, program, Some(&default_fn), "chunk")?;
    let mut alone = Vec::new();
    if let Some(n) = functions.prefill {
        let nested = prefill_chunks
            .iter()
            .filter(|p| plan.containing_chunk(p).map(|c| &c.name) == Some(&chunk.name));
        for pchunk in nested {
            let label = format!("emit {}", pchunk.name);
            let program = t.run_labelled("emit", &label, pchunk.layers.len() as u64, || {
                Ok(Program::single(
                    PREFILL_FN,
                    emit_function(plan, pchunk, FunctionKind::Prefill { n }, w)?,
                ))
            })?;
            let what = format!("prefill (N = {n}) chunk");
            if plan.weight_twin(pchunk).map(|c| &c.name) == Some(&chunk.name) {
                group.add(t, pc, pchunk, program, None, &what)?;
            } else {
                let mut single = Group::new(pc, pchunk)?;
                single.add(t, pc, pchunk, program, None, &what)?;
                alone.push(single);
            }
        }
    }
    let mut packages = group.finish(t, pc)?;
    for g in alone {
        packages.extend(g.finish(t, pc)?);
    }
    Ok(packages)
}

/// Write the manifest (or, for `--only`, the part descriptor) and, on request, the zip beside the
/// staged set, then swap both into place (together or not at all); returns the zip's path and the
/// publishing warnings.
fn publish(
    opts: &BuildOptions,
    staging: mlpackage::publish::Publisher,
    facts: &BuildFacts,
    packages: &[PackageSummary],
    records: &[TensorRecord],
    known: &BTreeMap<String, chunkset::FileEntry>,
) -> Result<(Option<PathBuf>, Vec<String>)> {
    match &opts.only {
        None => {
            write_manifest_known(staging.dir(), &opts.command, facts, records, known)?;
        }
        Some(part) => {
            let d = PartDescriptor {
                command: opts.command.clone(),
                part: part.clone(),
                packages: packages.to_vec(),
                records: records.to_vec(),
                build: facts.clone(),
            };
            let p = staging.dir().join(PART_NAME);
            let mut s = serde_json::to_string_pretty(&d).map_err(|e| ContractError::Serialize {
                what: PART_NAME,
                msg: e.to_string(),
            })?;
            s.push('\n');
            std::fs::write(&p, s).map_err(io_err(&p))?;
        }
    }
    let zip = if opts.zip {
        let prefix = staging.target().name.to_string_lossy().into_owned();
        write_zip(staging.dir(), &staging.companion(".zip"), &prefix)?;
        // beside the resolved target (`OUT` may be a symlink to it)
        Some(staging.target().companion(".zip"))
    } else {
        None
    };
    let published = staging.commit()?;
    Ok((zip, published.warnings))
}

/// What every package of one build shares.
struct PackageCtx<'a> {
    opts: &'a BuildOptions,
    plan: &'a ChunkPlan,
    progress: &'a dyn Progress,
    /// The staging directory.
    dir: &'a Path,
}

/// Packages written around one weight file ([`mlpackage::PackageGroup`]): a decode chunk and its
/// prefill weight twin, or one package alone. Members are optimised and encoded as they are added
/// (their programs dropped right after), written and read back by [`Group::finish`].
struct Group<'c> {
    /// The chunk errors of the group's weight file are reported against (its first member).
    first: String,
    packages: mlpackage::PackageGroup,
    /// Each member's chunk, destination, op count and functions, in the order added.
    members: Vec<(&'c ChunkSpec, PathBuf, usize, Vec<String>)>,
}

impl<'c> Group<'c> {
    fn new(pc: &PackageCtx<'_>, first: &ChunkSpec) -> Result<Group<'c>> {
        let packages = mlpackage::PackageGroup::new(pc.dir, &mlpackage::WriteOptions::default())
            .map_err(|e| ExportError::from(e).in_chunk(&first.name, None))?;
        Ok(Group {
            first: first.name.clone(),
            packages,
            members: Vec::new(),
        })
    }

    /// optimize → encode one emitted package (`default_fn`: the default function of a
    /// multi-function package, `None` for a single `main` function). Errors name the chunk.
    fn add(
        &mut self,
        t: &mut Timer<'_>,
        pc: &PackageCtx<'_>,
        chunk: &'c ChunkSpec,
        mut program: Program,
        default_fn: Option<&str>,
        what: &str,
    ) -> Result<()> {
        let (opts, plan, progress) = (pc.opts, pc.plan, pc.progress);
        let r = (|| {
            if opts.dump_after.as_deref() == Some("emit") {
                progress.dump(&format!(
                    "// chunk {}\n{}",
                    chunk.name,
                    mil::printer::print_program(&program)
                ));
            }
            t.run_labelled("optimize", &format!("optimize {}", chunk.name), 1, || {
                for text in optimize(&mut program, opts.dump_after.as_deref())? {
                    progress.dump(&format!("// chunk {}\n{text}", chunk.name));
                }
                Ok(())
            })?;
            let dest = pc.dir.join(PackageFormat::Mlpackage.file_name(&chunk.name));
            let ops = program
                .functions
                .values()
                .map(|f| f.block.operations.len())
                .sum();
            let functions: Vec<String> = program.functions.keys().cloned().collect();
            t.run_labelled("serialize", &format!("serialize {}", chunk.name), 1, || {
                let meta = package_metadata(opts, plan, chunk, what);
                // fp32 builds of the stateful variants hold fp32 states: verification sets (Core
                // ML's states are fp16 only; docs/STATEFUL.md)
                let states = if plan.fp32 {
                    mlpackage::StateDtypes::AllowFp32
                } else {
                    mlpackage::StateDtypes::Fp16Only
                };
                let desc = mlpackage::Description::derive_with(&program, default_fn, meta, states)?;
                self.packages
                    .add(&mlpackage::Package::new(program, desc), &dest)?;
                Ok(())
            })?;
            self.members.push((chunk, dest, ops, functions));
            Ok(())
        })();
        r.map_err(|e: ExportError| e.in_chunk(&chunk.name, None))
    }

    /// Write every member, compile it into `<chunk>.mlmodelc` with `--format mlmodelc|both` (the
    /// bundle's `weights/weight.bin` is the package's, byte for byte, so twins stay identical; with
    /// `mlmodelc` the package is removed again), read each back and validate it; returns their
    /// summaries.
    fn finish(self, t: &mut Timer<'_>, pc: &PackageCtx<'_>) -> Result<Vec<PackageSummary>> {
        let Group {
            first,
            packages,
            members,
        } = self;
        let reports = t
            .run_labelled("serialize", &format!("serialize {first}"), 1, || {
                Ok(packages.finish()?)
            })
            .map_err(|e| e.in_chunk(&first, None))?;
        let mut out = Vec::with_capacity(members.len());
        let formats = pc.opts.spec.format.formats();
        for ((chunk, dest, ops, functions), report) in members.into_iter().zip(reports) {
            let mut written = Vec::new();
            if formats.contains(&PackageFormat::Mlmodelc) {
                let bundle = pc.dir.join(PackageFormat::Mlmodelc.file_name(&chunk.name));
                t.run_labelled("compile", &format!("compile {}", chunk.name), 1, || {
                    Ok(mlpackage::compiled::compile_package(
                        &dest,
                        &bundle,
                        &Default::default(),
                    )?)
                })
                .map_err(|e| e.in_chunk(&chunk.name, None))?;
                written.push(bundle);
            }
            if formats.contains(&PackageFormat::Mlpackage) {
                written.push(dest);
            } else {
                std::fs::remove_dir_all(&dest).map_err(|source| ExportError::Io {
                    path: dest.clone(),
                    source,
                })?;
            }
            t.run_labelled("verify", &format!("verify {}", chunk.name), 1, || {
                for path in &written {
                    let back = mlpackage::read_model(path)?;
                    mil::validate::validate(&back.program)?;
                }
                Ok(())
            })
            .map_err(|e| e.in_chunk(&chunk.name, None))?;
            out.push(PackageSummary {
                name: chunk.name.clone(),
                layers: chunk.layer_bounds(),
                functions,
                model_bytes: report.model_bytes,
                weight_bytes: report.weight_bytes,
                blobs: report.blob_count,
                ops,
            });
        }
        Ok(out)
    }
}

/// The `optimize` phase of one emitted program: the `mil` default pipeline (dead-code elimination,
/// const deduplication), then every declared input kept alive, then validation. Returns the MIL text
/// dumps asked for by `dump_after` (a pass name; `emit` is dumped before this phase).
pub fn optimize(program: &mut Program, dump_after: Option<&str>) -> Result<Vec<String>> {
    let mut pipe = mil::passes::Pipeline::named("default")?;
    if let Some(pass) = dump_after.filter(|p| *p != "emit") {
        pipe = pipe
            .dump_after(pass)
            .map_err(|e| ExportError::BadOption(format!("--dump-after: {e}")))?;
    }
    let report = pipe.run(program).map_err(|e| match e {
        mil::passes::PassError::Invalid { source, .. } => ExportError::Invalid(source),
        other => ExportError::Pass(other),
    })?;
    for f in program.functions.values_mut() {
        keep_inputs_alive(f);
    }
    mil::validate::validate(program)?;
    Ok(report.dumps.into_iter().map(|(_, text)| text).collect())
}

/// The package metadata of a chunk (description, version, variant and chunk in user-defined keys).
fn package_metadata(
    opts: &BuildOptions,
    plan: &ChunkPlan,
    chunk: &ChunkSpec,
    what: &str,
) -> mlpackage::Metadata {
    let version = env!("CARGO_PKG_VERSION").to_string();
    mlpackage::Metadata {
        short_description: format!(
            "Gemma 4 {} {what} {} (layers {}..{}), {} ctx {}",
            plan.variant.name(),
            chunk.name,
            chunk.layers.start,
            chunk.layers.end,
            opts.spec.quantization(),
            plan.ctx
        ),
        version: version.clone(),
        author: "gemma-convert".into(),
        license: String::new(),
        user_defined: [
            ("com.github.gemma-convert.version", version),
            (
                "com.github.gemma-convert.variant",
                plan.variant.name().to_string(),
            ),
            ("com.github.gemma-convert.chunk", chunk.name.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    }
}

/// The zip written by `--zip`: `OUT.zip` beside `OUT`.
pub fn zip_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_os_string();
    s.push(".zip");
    PathBuf::from(s)
}

/// Join `--only` parts into one chunk set at `out`: every part must come from the same build (the
/// same recorded options and command), and together they must hold every chunk and the side files.
/// The result is byte-identical to a full build with those options.
pub fn assemble(parts: &[PathBuf], out: &Path, force: bool) -> Result<PathBuf> {
    let mut rules = publish_rules(force, parts.iter().map(|p| ("a part", p.clone())).collect());
    rules.companions.clear();
    let staging = mlpackage::publish::Publisher::begin(out, &rules)?;
    let mut descs = Vec::new();
    for p in parts {
        let d: PartDescriptor = read_json(&p.join(PART_NAME))?;
        descs.push((p.clone(), d));
    }
    let Some((_, first)) = descs.first() else {
        return Err(ExportError::BadOption("assemble: no parts given".into()));
    };
    let (command, build) = (first.command.clone(), first.build.clone());
    let first_path = descs[0].0.display().to_string();
    for (p, d) in &descs {
        if d.command != command {
            return Err(ExportError::BadOption(format!(
                "{}: part was built by a different command ({}) than {first_path} ({})",
                p.display(),
                d.command.join(" "),
                command.join(" ")
            )));
        }
        if d.build != build {
            // same command, different inputs (e.g. another checkpoint at the same path)
            let keys = differing_keys(&d.build, &build);
            return Err(ExportError::BadOption(format!(
                "{}: part was built by the same command as {first_path} but from different \
                 inputs: `{}` differ{}",
                p.display(),
                keys.join("`, `"),
                if keys.iter().any(|k| k == "model_files") {
                    " (the checkpoint's files changed between the builds)"
                } else {
                    ""
                }
            )));
        }
    }
    let mut have: Vec<String> = descs.iter().map(|(_, d)| d.part.clone()).collect();
    have.sort();
    let mut want: Vec<String> = build.chunks.iter().map(|c| c.name.clone()).collect();
    want.push(SIDE_PART.into());
    want.sort();
    if have != want {
        return Err(ExportError::BadOption(format!(
            "assemble: parts {have:?} do not cover exactly the chunks and side files {want:?}"
        )));
    }
    let mut records = Vec::new();
    for (p, d) in &descs {
        copy_tree(p, staging.dir(), &[PART_NAME])?;
        records.extend(d.records.clone());
    }
    write_manifest(staging.dir(), &command, &build, &records)?;
    staging.commit()?;
    Ok(out.to_path_buf())
}

/// The top-level fields in which two build records differ (by their JSON form).
fn differing_keys(a: &BuildFacts, b: &BuildFacts) -> Vec<String> {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) => a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        _ => vec!["build".into()],
    }
}

fn copy_tree(src: &Path, dst: &Path, skip: &[&str]) -> Result<()> {
    for f in list_files(src, skip)? {
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
