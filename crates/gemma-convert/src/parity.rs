//! `gemma-convert parity`: run a chunk set's decode function token by token and compare the
//! full-vocabulary logits with a golden file (HF transformers, fp32) or with our reference forward.
//!
//! Teacher forcing: the golden's `input_ids` (prompt) then its `decode_input_ids` are fed one per
//! step at positions 0, 1, …; step `p` is compared with golden row `p` (prompt logits, then decode
//! logits). Without `--golden`, the reference forward (gemma4, f32) runs over `--ids` and then
//! greedily continues `--decode-tokens` steps; the chunk set is fed the same ids.
//!
//! With `--prefill` (sets built with a prefill function) the prompt goes the way the Swift runtime
//! sends it: its first `min(len, N)` tokens through the batched `prefill_chunk*` packages in one
//! call (compared at the last of those positions), the K/V they produce written into the decode
//! caches, then the rest of the prompt and the decode ids one step at a time.
//!
//! Before anything runs, the set passes `verify` (`crate::verify_cmd::check_set`, under its shared
//! lock) and the side files the run reads are compared with the checkpoint
//! (`crate::side_check`). Then, by default (`--embeddings both`), the set runs twice: the **device
//! run** with the int8 embedding and PLE tables of the side files, as the Swift runtime feeds
//! `hidden_states` and `per_layer_raw` (held to the `palettized` bound: int8 embeddings move the
//! logits of the tiny random fixtures a lot, see the README), and the **exact-checkpoint run** with
//! the checkpoint's embeddings (what HF computes; held to the named tolerance). The set is loaded
//! from disk (never the exporter's memory); the logits are read where the head chunk's argmax reads
//! them (`mil_runtime::logits`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use gemma4::{Checkpoint, DType, Reference};
use mil_runtime::BackendKind;
use mil_runtime::chunkset::{ChunkSet, ChunkSetError, Embedder, ModelConfig, SideFileEmbedder};
use mil_runtime::parity::{Comparator, Metrics, Tolerance};
use serde_json::json;

use crate::exit::{CheckFailed, UsageError};
use crate::model_source;
use crate::side_check::SideReport;
use crate::verify_cmd::CheckedSet;

/// Which backend runs the chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// The CPU MIL interpreter (any platform).
    Interpreter,
    /// Core ML on the Neural Engine (macOS builds with `--features coreml` only).
    Coreml,
}

impl BackendArg {
    /// The runtime's backend kind; `coreml` where this binary cannot run it is a usage error.
    pub fn kind(self) -> Result<BackendKind, UsageError> {
        match self {
            BackendArg::Interpreter => Ok(BackendKind::Cpu),
            BackendArg::Coreml if cfg!(target_vendor = "apple") => Ok(BackendKind::CoreMl),
            BackendArg::Coreml => Err(UsageError {
                flag: "--backend",
                reason: "coreml needs macOS (Core ML); this platform runs the CPU interpreter \
                         only (--backend interpreter)"
                    .into(),
            }),
        }
    }
}

/// The checkpoint a parity run compares with must be the one the set was built from: a usage
/// error naming the field when its shapes differ from the set's `model_config.json`.
fn check_same_model(ckpt: &Checkpoint, s: &ModelConfig, model: &str) -> Result<(), UsageError> {
    let c = ckpt.config();
    let ple = if c.has_ple() {
        c.hidden_size_per_layer_input()
    } else {
        0
    };
    for (field, ours, theirs) in [
        ("hidden_size", c.hidden_size(), s.hidden_size),
        ("vocab_size", c.vocab_size(), s.vocab_size),
        ("num_hidden_layers", c.num_hidden_layers(), s.num_layers),
        ("hidden_size_per_layer_input", ple, s.per_layer_dim),
    ] {
        if ours != theirs {
            return Err(UsageError {
                flag: "--model",
                reason: format!(
                    "{model}: {field} is {ours}, but the set's model_config.json says {theirs}: \
                     the set was built from a different checkpoint"
                ),
            });
        }
    }
    Ok(())
}

/// Where token embeddings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbeddingsArg {
    /// Both runs: the device run (side files) and the exact-checkpoint run, each against the
    /// reference.
    Both,
    /// The checkpoint's tables, exact (what HF computes).
    Checkpoint,
    /// The set's int8 side files (what the device runtime computes).
    Side,
}

impl EmbeddingsArg {
    /// The runs of this choice, the device run first.
    pub fn runs(self) -> Vec<RunKind> {
        match self {
            EmbeddingsArg::Both => vec![RunKind::Device, RunKind::Exact],
            EmbeddingsArg::Checkpoint => vec![RunKind::Exact],
            EmbeddingsArg::Side => vec![RunKind::Device],
        }
    }
}

/// One run of a parity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// The int8 side files, as the device feeds the chunks.
    Device,
    /// The checkpoint's embeddings, exact.
    Exact,
}

impl RunKind {
    /// `side` / `checkpoint` (the report's `embeddings`).
    pub fn embeddings(self) -> &'static str {
        match self {
            RunKind::Device => "side",
            RunKind::Exact => "checkpoint",
        }
    }

    /// How the text report names the run.
    pub fn label(self) -> &'static str {
        match self {
            RunKind::Device => "device run (int8 side-file embeddings)",
            RunKind::Exact => "exact-checkpoint run",
        }
    }

    /// The bound of this run: the named one, except that the device run's int8 embeddings are
    /// held to the `palettized` bound (top-1 ≥ 50 %, mean KL ≤ 1 nat) at most — the side files
    /// themselves are checked exactly against the checkpoint (`side_check`).
    pub fn tolerance(self, named: Tolerance) -> Tolerance {
        match self {
            RunKind::Exact => named,
            RunKind::Device => Tolerance::Palettized,
        }
    }
}

/// Arguments of `gemma-convert parity`.
#[derive(Debug, Args)]
pub struct ParityArgs {
    /// The checkpoint the set was built from (directory or HF repo id).
    #[arg(long)]
    pub model: String,
    /// The chunk set directory.
    #[arg(long)]
    pub chunks: PathBuf,
    /// Golden file made by HF transformers (`input_ids`, `logits`, `decode_input_ids`,
    /// `decode_logits`); without it the reference forward is the reference.
    #[arg(long)]
    pub golden: Option<PathBuf>,
    /// Named tolerance (default: from the set — fp32 graphs → fp32, fp16 → fp16, palettized →
    /// palettized).
    #[arg(long)]
    pub tolerance: Option<String>,
    /// Backend that runs the chunks.
    #[arg(long, value_enum, default_value_t = BackendArg::Interpreter)]
    pub backend: BackendArg,
    /// Embedding source: `both` runs the set with the side files' int8 tables (as the device does)
    /// and with the checkpoint's exact embeddings, and reports both.
    #[arg(long, value_enum, default_value_t = EmbeddingsArg::Both)]
    pub embeddings: EmbeddingsArg,
    /// Prompt ids without `--golden` (default: BOS then ids 3..18).
    #[arg(long, value_delimiter = ',')]
    pub ids: Vec<u32>,
    /// Greedy steps after the prompt without `--golden`.
    #[arg(long, default_value_t = 16)]
    pub decode_tokens: usize,
    /// Weights of the reference forward (without `--golden`): `original`, or `graph` = exactly the
    /// weights the set's graphs use (dequantised LUTs, rounded to the graph dtype) — checks the
    /// conversion separately from the quantisation error. `graph` writes a temporary f32 checkpoint:
    /// for small models.
    #[arg(long, value_enum, default_value_t = ReferenceWeights::Original)]
    pub reference_weights: ReferenceWeights,
    /// Run the prompt's first `min(len, N)` tokens through the set's prefill chunks (one batched
    /// call, compared at its last position; K/V written back into the decode caches), the rest of
    /// the prompt and the decode ids through `decode_q1`. Stateful sets: send the prompt in the
    /// engine's `prefill_b<T>` batches (T = 16, 8 or 4, the first the set has).
    #[arg(long)]
    pub prefill: bool,
    /// Stateful sets: the `prefill_b<T>` batch for the prompt (implies batched prefill).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Stateful sets: a two-turn golden (`<model>.turns.safetensors`); runs its turn 1, then each
    /// second turn from turn 1's states (KV reused up to the longest common prefix) and compares
    /// every computed position.
    #[arg(long, conflicts_with = "golden")]
    pub turns: Option<PathBuf>,
    /// Print one JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Weights the reference forward runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReferenceWeights {
    /// The checkpoint as is.
    Original,
    /// The weights the set's graphs compute with.
    Graph,
}

/// Write the graph-weights checkpoint of `set` into a temp dir (build settings from its manifest).
fn graph_weights_checkpoint(
    ckpt: &Checkpoint,
    set: &Path,
) -> Result<(tempfile::TempDir, Checkpoint)> {
    let tmp = tempfile::tempdir().context("temporary directory")?;
    write_graph_weights(ckpt, set, tmp.path())?;
    let c = Checkpoint::open(tmp.path()).context("opening the graph-weights checkpoint")?;
    Ok((tmp, c))
}

/// Write the checkpoint of exactly the weights `set`'s graphs compute with into the existing,
/// empty directory `out` (build settings from the set's manifest).
pub(crate) fn write_graph_weights(ckpt: &Checkpoint, set: &Path, out: &Path) -> Result<()> {
    let m = chunkset::ChunkSetManifest::read(set).map_err(|e| UsageError {
        flag: "--reference-weights",
        reason: format!("graph weights need the set's manifest.json: {e}"),
    })?;
    let spec = &m.build.spec;
    gemma4_export::dequant::write_graph_weights_checkpoint(
        ckpt,
        spec.compression,
        spec.precision.is_fp32(),
        out,
    )?;
    Ok(())
}

/// Exact embeddings from the checkpoint: `embed_tokens[t]·√H` and `embed_tokens_per_layer[t]·√P`
/// in f32, read row by row through mmap.
pub struct CheckpointEmbedder {
    ckpt: Checkpoint,
    embed_scale: f32,
    ple_scale: f32,
    has_ple: bool,
}

impl CheckpointEmbedder {
    /// Wrap an opened checkpoint.
    pub fn new(ckpt: Checkpoint) -> CheckpointEmbedder {
        let cfg = ckpt.config();
        CheckpointEmbedder {
            embed_scale: (cfg.hidden_size() as f32).sqrt(),
            ple_scale: (cfg.hidden_size_per_layer_input() as f32).sqrt(),
            has_ple: cfg.has_ple(),
            ckpt,
        }
    }

    fn row(&self, name: &str, t: u32, scale: f32) -> Result<Vec<f32>, ChunkSetError> {
        let v =
            self.ckpt
                .load_rows_f32(name, t as usize, 1)
                .map_err(|e| ChunkSetError::SideFile {
                    file: self.ckpt.dir().to_path_buf(),
                    msg: e.to_string(),
                })?;
        Ok(v.into_iter().map(|x| x * scale).collect())
    }
}

impl Embedder for CheckpointEmbedder {
    fn hidden(&self, t: u32) -> Result<Vec<f32>, ChunkSetError> {
        self.row("embed_tokens.weight", t, self.embed_scale)
    }
    fn ple_raw(&self, t: u32) -> Result<Vec<f32>, ChunkSetError> {
        if !self.has_ple {
            return Ok(Vec::new());
        }
        self.row("embed_tokens_per_layer.weight", t, self.ple_scale)
    }
}

/// The ids to feed and the reference logits row of each compared step.
pub struct ReferenceRun {
    pub ids: Vec<u32>,
    /// How many of `ids` are the prompt.
    pub prompt_len: usize,
    /// Position of `logits[0]` (rows before it are never compared and were not kept).
    pub first: usize,
    pub logits: Vec<Vec<f32>>,
    pub source: String,
    /// Keys of the golden file parity does not read.
    pub unused_keys: Vec<String>,
}

impl ReferenceRun {
    /// The reference logits at position `p`.
    pub fn at(&self, p: usize) -> Result<&Vec<f32>> {
        p.checked_sub(self.first)
            .and_then(|i| self.logits.get(i))
            .with_context(|| format!("no reference logits kept for position {p}"))
    }
}

pub(crate) fn golden_reference(path: &Path) -> Result<ReferenceRun> {
    let g = gemma4::golden::Golden::load(path).map_err(|e| UsageError {
        flag: "--golden",
        reason: e.to_string(),
    })?;
    let v = g.vocab;
    let mut logits: Vec<Vec<f32>> = g.logits.chunks(v).map(<[f32]>::to_vec).collect();
    logits.extend(g.decode_logits.chunks(v).map(<[f32]>::to_vec));
    let ids: Vec<u32> = g
        .input_ids
        .iter()
        .chain(&g.decode_input_ids)
        .copied()
        .collect();
    Ok(ReferenceRun {
        ids,
        prompt_len: g.input_ids.len(),
        first: 0,
        logits,
        source: format!("golden:{}", path.display()),
        unused_keys: g.unknown_keys,
    })
}

/// Greedy run of the streamed reference forward (f32; weights read from the memory-mapped checkpoint
/// one layer at a time, so a full-size model fits in a few GB): the prompt in one call, keeping the
/// logits of positions `first..` only, then `steps` greedy tokens.
fn forward_reference(
    ckpt: Checkpoint,
    prompt: &[u32],
    steps: usize,
    first: usize,
) -> Result<ReferenceRun> {
    if prompt.is_empty() {
        bail!(UsageError {
            flag: "--ids",
            reason: "the prompt needs at least one token id".into(),
        });
    }
    let r = Reference::load_streaming(ckpt, DType::F32)?;
    let mut state = r.new_state();
    let mut ids = prompt.to_vec();
    let first = first.min(prompt.len() - 1);
    let out = r.forward_last(prompt, &mut state, prompt.len() - first)?;
    let mut logits: Vec<Vec<f32>> = out.to_vec2()?;
    for _ in 0..steps {
        let last = logits.last().context("empty prompt")?;
        let next = mil_runtime::parity::argmax(last) as u32;
        ids.push(next);
        let out = r.forward(&[next], &mut state, None)?;
        let mut rows: Vec<Vec<f32>> = out.to_vec2()?;
        logits.push(rows.pop().context("no logits")?);
    }
    // the last greedy token was never fed; drop it so ids and rows align
    ids.truncate(first + logits.len());
    Ok(ReferenceRun {
        ids,
        prompt_len: prompt.len(),
        first,
        logits,
        source: "reference-forward(f32)".into(),
        unused_keys: Vec::new(),
    })
}

/// Prefill length N recorded in the set's `model_config.json` (0 when it has no prefill function),
/// read before the set is loaded so the reference keeps only the logits the check compares.
/// Stateful sets compare every row (their `prefill_b<T>` batches cover the whole prompt): 0.
fn recorded_prefill_len(set: &Path) -> usize {
    let Some(v) = std::fs::read_to_string(set.join("model_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return 0;
    };
    let stateful = v
        .get("variant")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|n| chunkset::Variant::parse(n, None, None).is_ok_and(|v| v.is_stateful()));
    if stateful {
        return 0;
    }
    v.get("prefill_length")
        .and_then(serde_json::Value::as_u64)
        .map_or(0, |n| n as usize)
}

/// The named tolerance of a set: fp32 graphs → fp32, fp16 → fp16, palettized → palettized.
pub fn default_tolerance(cfg: &ModelConfig) -> Tolerance {
    if cfg.quantization.starts_with("int") {
        Tolerance::Palettized
    } else if cfg.precision.is_fp32() {
        Tolerance::Fp32
    } else {
        Tolerance::Fp16
    }
}

/// True if the set's `model_config.json` names a stateful variant.
pub fn is_stateful(cfg: &ModelConfig) -> bool {
    chunkset::Variant::parse(&cfg.variant, None, None).is_ok_and(|v| v.is_stateful())
}

/// One run of the set (device or exact) against the reference.
pub struct Run {
    pub kind: RunKind,
    pub tolerance: Tolerance,
    pub metrics: Metrics,
    /// How the run fed the set, for the text report (may be empty).
    pub how: String,
    /// Lines printed before the run's line.
    pub notes: Vec<String>,
    /// Fields of the run's JSON report beside the metrics.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Run {
    /// `Err` says which bound failed.
    pub fn verdict(&self) -> Result<(), String> {
        self.tolerance.check(&self.metrics)
    }

    /// The run's metrics, verdict and extra fields as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = metrics_json(&self.metrics, self.tolerance);
        if let Some(o) = v.as_object_mut() {
            o.insert("embeddings".into(), json!(self.kind.embeddings()));
            o.insert("tolerance".into(), json!(self.tolerance.name()));
            o.insert("per_position".into(), json!(self.metrics.per_position));
        }
        if let Some(o) = v.as_object_mut() {
            o.extend(self.extra.clone());
        }
        v
    }

    /// The run's line of the text report.
    pub fn line(&self, head: &str) -> String {
        let m = &self.metrics;
        format!(
            "{head}: {}: {}{} positions, top-1 {:.1}%, max |Δlogit| {:.3e}, mean |Δlogit| {:.3e}, \
             mean KL {:.3e} → {} ({})",
            self.kind.label(),
            self.how,
            m.positions,
            100.0 * m.top1_agreement,
            m.max_abs_logit_diff,
            m.mean_abs_logit_diff,
            m.mean_kl,
            if self.verdict().is_ok() {
                "PASS"
            } else {
                "FAIL"
            },
            self.tolerance.name()
        )
    }
}

/// The embedder of a run: the set's int8 side files, or the checkpoint's exact tables.
pub fn embedder_for(
    kind: RunKind,
    set: &Path,
    cfg: &ModelConfig,
    model_dir: &Path,
) -> Result<Box<dyn Embedder>> {
    Ok(match kind {
        RunKind::Device => Box::new(SideFileEmbedder::open(set, cfg)?),
        RunKind::Exact => Box::new(CheckpointEmbedder::new(Checkpoint::open(model_dir)?)),
    })
}

/// The runs of a set and the facts the report heads them with.
pub struct Runs {
    pub backend: String,
    pub runs: Vec<Run>,
}

/// Print the report of `runs` (one JSON object with `--json`) and turn failures into the error.
pub fn report(
    args: &ParityArgs,
    checked: &CheckedSet,
    side: &SideReport,
    reference: &ReferenceRun,
    runs: &Runs,
) -> Result<()> {
    let variant = &checked.config.variant;
    // the exact run heads the report when there is one (the named tolerance), else the device run
    let primary = runs
        .runs
        .iter()
        .find(|r| r.kind == RunKind::Exact)
        .or(runs.runs.first())
        .context("no run")?;
    let mut failures: Vec<String> = side.failures.clone();
    for r in &runs.runs {
        if let Err(why) = r.verdict() {
            failures.push(format!(
                "{} ({} tolerance): {why}",
                r.kind.label(),
                r.tolerance.name()
            ));
        }
    }
    if args.json {
        let mut v = json!({
            "variant": variant,
            "backend": runs.backend,
            "reference": reference.source,
            "golden_unused_keys": reference.unused_keys,
            "verify": crate::verify_cmd::report_json(&args.chunks, &checked.report, checked.seconds),
            "side_files": side.to_json(),
        });
        if let Some(o) = v.as_object_mut() {
            if let Some(p) = primary.to_json().as_object() {
                o.extend(p.clone());
            }
            if primary.kind == RunKind::Exact
                && let Some(d) = runs.runs.iter().find(|r| r.kind == RunKind::Device)
            {
                o.insert("device".into(), d.to_json());
            }
            o.insert("pass".into(), failures.is_empty().into());
            o.insert("failures".into(), json!(failures));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if !reference.unused_keys.is_empty() {
            println!(
                "note: the golden's keys {} are not used by parity",
                reference.unused_keys.join(", ")
            );
        }
        println!(
            "{}",
            crate::verify_cmd::summary(&args.chunks, &checked.report, checked.seconds)
        );
        println!("{}", side.line());
        for f in &side.failures {
            println!("FAIL {f}");
        }
        let head = format!(
            "parity {} ({variant}, {}) vs {}",
            args.chunks.display(),
            runs.backend,
            reference.source
        );
        for r in &runs.runs {
            for n in &r.notes {
                println!("{n}");
            }
            println!("{}", r.line(&head));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CheckFailed(format!("parity: {}", failures.join("; "))).into())
    }
}

/// Parse `--tolerance`.
fn parse_tolerance(t: &Option<String>) -> Result<Option<Tolerance>, UsageError> {
    match t {
        Some(t) => Ok(Some(Tolerance::parse(t).ok_or_else(|| UsageError {
            flag: "--tolerance",
            reason: format!("`{t}` is not one of exact, fp32, fp16, palettized"),
        })?)),
        None => Ok(None),
    }
}

/// Run the parity check.
pub fn run(args: &ParityArgs) -> Result<()> {
    let tolerance = parse_tolerance(&args.tolerance)?;
    let model_dir = model_source::resolve(&args.model)?;
    // the set first: verified under its shared lock (no build replaces it meanwhile)
    let checked = crate::verify_cmd::check_set(&args.chunks, args.json)?;
    let ckpt =
        Checkpoint::open(&model_dir).with_context(|| format!("opening {}", model_dir.display()))?;
    check_same_model(&ckpt, &checked.config, &args.model)?;
    let stateful = is_stateful(&checked.config);
    let named = tolerance.unwrap_or_else(|| default_tolerance(&checked.config));
    if let Some(turns) = &args.turns {
        if !stateful {
            return Err(UsageError {
                flag: "--turns",
                reason: format!(
                    "{} is not a stateful set (cross-turn KV reuse needs --variant stateful or stateful3)",
                    args.chunks.display()
                ),
            }
            .into());
        }
        return crate::stateful_cmd::turns(args, &model_dir, &ckpt, turns, named, &checked);
    }
    if args.golden.is_some() && args.reference_weights == ReferenceWeights::Graph {
        return Err(UsageError {
            flag: "--reference-weights",
            reason: "`graph` applies to the reference forward; drop --golden".into(),
        }
        .into());
    }
    if !stateful && args.batch.is_some() {
        return Err(UsageError {
            flag: "--batch",
            reason: "applies to stateful sets (--variant stateful, stateful3) only".into(),
        }
        .into());
    }
    let reference = match &args.golden {
        Some(g) => golden_reference(g)?,
        None => {
            let prompt = if args.ids.is_empty() {
                let bos = ckpt.config().bos_token_id().unwrap_or(2);
                std::iter::once(bos).chain(3..18).collect()
            } else {
                args.ids.clone()
            };
            // with --prefill, positions before the prefill's last one are never compared
            let first = if args.prefill {
                recorded_prefill_len(&args.chunks)
                    .min(prompt.len())
                    .saturating_sub(1)
            } else {
                0
            };
            match args.reference_weights {
                ReferenceWeights::Original => forward_reference(
                    Checkpoint::open(&model_dir)?,
                    &prompt,
                    args.decode_tokens,
                    first,
                )?,
                ReferenceWeights::Graph => {
                    let (_tmp, g) = graph_weights_checkpoint(&ckpt, &args.chunks)?;
                    let mut r = forward_reference(g, &prompt, args.decode_tokens, first)?;
                    r.source = "reference-forward(f32, graph weights)".into();
                    r
                }
            }
        }
    };
    let vocab = checked.config.vocab_size;
    if reference.logits.first().map(Vec::len) != Some(vocab) {
        bail!(UsageError {
            flag: "--golden",
            reason: format!(
                "reference vocabulary {} does not match the set's {vocab}",
                reference.logits.first().map(Vec::len).unwrap_or(0),
            ),
        });
    }
    if let Some(&t) = reference.ids.iter().find(|&&t| t as usize >= vocab) {
        bail!(UsageError {
            flag: if args.golden.is_some() {
                "--golden"
            } else {
                "--ids"
            },
            reason: format!("token {t} is outside the vocabulary ({vocab})"),
        });
    }
    let side = crate::side_check::check(&args.chunks, &checked.config, &ckpt, &reference.ids)?;
    let runs = if stateful {
        crate::stateful_cmd::parity_runs(args, &model_dir, &checked.config, &reference, named)?
    } else {
        decode_runs(args, &model_dir, &reference, named)?
    };
    report(args, &checked, &side, &reference, &runs)
}

/// The runs of a decode set (`decode_q1`, with `--prefill` the prefill chunks first).
fn decode_runs(
    args: &ParityArgs,
    model_dir: &Path,
    reference: &ReferenceRun,
    named: Tolerance,
) -> Result<Runs> {
    let mut set = ChunkSet::open(&args.chunks, args.backend.kind()?)
        .with_context(|| format!("loading {}", args.chunks.display()))?;
    let backend = set.backend_name().to_string();
    let prefill_len = if args.prefill {
        let n = set.load_prefill().map_err(|e| UsageError {
            flag: "--prefill",
            reason: match e {
                ChunkSetError::Prefill(why) => why,
                other => other.to_string(),
            },
        })?;
        Some(n.min(reference.prompt_len))
    } else {
        None
    };
    let mut runs = Vec::new();
    for kind in args.embeddings.runs() {
        let cfg = set.config().clone();
        let embedder = embedder_for(kind, &args.chunks, &cfg, model_dir)?;
        let embedder = embedder.as_ref();
        let mut cmp = Comparator::new();
        let mut session = set.session();
        let mut chunk_ms: BTreeMap<usize, f64> = BTreeMap::new();
        let mut extra = serde_json::Map::new();
        let mut notes = Vec::new();
        if let Some(m) = prefill_len.filter(|&m| m > 0) {
            let out = session
                .prefill(&reference.ids[..m], embedder, true)
                .with_context(|| format!("{}: prefill of {m} prompt tokens", kind.label()))?;
            let got = out
                .logits
                .context("the head prefill chunk returned no logits")?;
            let want = reference.at(m - 1)?;
            cmp.add_at(m - 1, &got, want, out.token_id as usize);
            let ms: Vec<f64> = out
                .chunk_times
                .iter()
                .map(|d| d.as_secs_f64() * 1e3)
                .collect();
            let top1 = mil_runtime::parity::argmax(&got) == mil_runtime::parity::argmax(want);
            let max = cmp.metrics().max_abs_logit_diff;
            notes.push(format!(
                "prefill ({}): {m} prompt tokens in one batched call, position {}: max |Δlogit| \
                 {max:.3e}, top-1 {}",
                kind.label(),
                m - 1,
                if top1 { "agrees" } else { "differs" },
            ));
            extra.insert(
                "prefill".into(),
                json!({
                    "tokens": m,
                    "position": m - 1,
                    "max_abs_logit_diff": max,
                    "top1_agree": top1,
                    "chunk_ms": ms,
                }),
            );
        } else {
            extra.insert("prefill".into(), serde_json::Value::Null);
        }
        let start = prefill_len.unwrap_or(0);
        for (p, &t) in reference.ids.iter().enumerate().skip(start) {
            let want = reference.at(p)?;
            let out = session
                .step(t, embedder, true)
                .with_context(|| format!("{}: decode step at position {p}", kind.label()))?;
            let got = out.logits.context("the head chunk returned no logits")?;
            cmp.add_at(p, &got, want, out.token_id as usize);
            for (i, d) in out.chunk_times.iter().enumerate() {
                *chunk_ms.entry(i).or_default() += d.as_secs_f64() * 1e3;
            }
        }
        runs.push(Run {
            kind,
            tolerance: kind.tolerance(named),
            metrics: cmp.metrics(),
            how: String::new(),
            notes,
            extra,
        });
    }
    Ok(Runs { backend, runs })
}

/// The figures and verdict of one comparison as the report spells them (both hosts' reports).
pub(crate) fn metrics_json(m: &Metrics, tolerance: Tolerance) -> serde_json::Value {
    let verdict = tolerance.check(m);
    json!({
        "positions": m.positions,
        "top1_agreement": m.top1_agreement,
        "max_abs_logit_diff": m.max_abs_logit_diff,
        "mean_abs_logit_diff": m.mean_abs_logit_diff,
        "mean_kl": m.mean_kl,
        "token_id_is_argmax": m.token_id_is_argmax,
        "worst_position": m.worst_position,
        "pass": verdict.is_ok(),
        "failure": verdict.as_ref().err(),
    })
}
