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
//! The chunk set is loaded from disk (never the exporter's memory). Embeddings come from the
//! checkpoint's exact tables by default (`--embeddings checkpoint`: what HF computes), or from the
//! set's int8 side files (`--embeddings side`: what the device runtime computes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use gemma4::{Checkpoint, DType, Reference};
use mil_runtime::BackendKind;
use mil_runtime::chunkset::{ChunkSet, ChunkSetError, Embedder, SideFileEmbedder};
use mil_runtime::parity::{Comparator, Tolerance};
use serde_json::json;

use crate::exit::{CheckFailed, UsageError};
use crate::model_source;

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

/// The RoPE tables every decode step reads.
const ROPE_FILES: [&str; 4] = [
    "cos_sliding.npy",
    "sin_sliding.npy",
    "cos_full.npy",
    "sin_full.npy",
];

/// A chunk set opened for reading: its shared lock (held while the set is used) and the loaded set.
pub struct OpenSet {
    pub lock: Option<mlpackage::publish::SetLock>,
    pub set: ChunkSet,
}

/// Open the chunk set at `dir` for `parity` / `bench`: a usage error naming the file when it is
/// not a set, lacks a chunk or a RoPE table, lists no chunks, or declares buffers larger than this
/// machine's memory (no command aborts on an allocation); the set is read under its shared lock.
pub fn open_set(dir: &Path, backend: BackendArg) -> Result<OpenSet> {
    let kind = backend.kind()?;
    let bad = |reason: String| UsageError {
        flag: "--chunks",
        reason,
    };
    if !dir.join("model_config.json").is_file() {
        return Err(bad(format!(
            "{}: no model_config.json (not a chunk set)",
            dir.display()
        ))
        .into());
    }
    let lock = mlpackage::publish::read_lock(dir)?;
    let config = mil_runtime::chunkset::ModelConfig::read(dir)?;
    if config.chunks.is_empty() {
        return Err(bad(format!(
            "{}: `chunks` is empty: a set has at least one chunk",
            dir.join("model_config.json").display()
        ))
        .into());
    }
    for f in ROPE_FILES {
        if !dir.join(f).is_file() {
            return Err(bad(format!("{}: missing", dir.join(f).display())).into());
        }
    }
    let mut bytes: u128 = 0;
    for chunk in &config.chunks {
        // the model the runtime loads: `<chunk>.mlmodelc` when it is a bundle, else the package
        let pkg = mlpackage::compiled::model_path(dir, &chunk.name);
        if !pkg.is_dir() {
            return Err(bad(format!("{}: missing", pkg.display())).into());
        }
        if pkg.extension().is_some_and(|e| e == "mlmodelc") {
            continue; // its description is read with the bundle (buffers checked for packages)
        }
        let spec = mlpackage::read_package_spec(&pkg)?;
        let Some(d) = spec.description.as_ref() else {
            continue;
        };
        let d = mlpackage::Description::from_proto(d)
            .with_context(|| format!("{}: model description", pkg.display()))?;
        let Some(io) = d.interface(chunkset::DECODE_FN) else {
            continue;
        };
        for f in io.inputs.iter().chain(io.outputs) {
            if let Some(a) = f.array_type() {
                let n = a
                    .shape
                    .iter()
                    .map(|&x| u128::try_from(x).unwrap_or(0))
                    .product::<u128>();
                bytes += 4 * n;
                if 4 * n > memory_bytes() {
                    return Err(bad(format!(
                        "{}: `{}` of shape {:?} needs {} GB, more than this machine's memory \
                         (a sliding window or context far beyond what the set can run?)",
                        pkg.display(),
                        f.name,
                        a.shape,
                        4 * n / 1_000_000_000
                    ))
                    .into());
                }
            }
        }
    }
    if bytes > memory_bytes() {
        return Err(bad(format!(
            "{}: the chunks' inputs and outputs need {} GB, more than this machine's memory",
            dir.display(),
            bytes / 1_000_000_000
        ))
        .into());
    }
    let set = ChunkSet::open(dir, kind).with_context(|| format!("loading {}", dir.display()))?;
    Ok(OpenSet { lock, set })
}

/// Physical memory (Linux `MemTotal`; 64 GiB where unknown).
fn memory_bytes() -> u128 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            l.split_whitespace().nth(1)?.parse::<u128>().ok()
        })
        .map_or(64 << 30, |kb| kb * 1024)
}

/// The checkpoint a parity run compares with must be the one the set was built from: a usage
/// error naming the field when its shapes differ from the set's `model_config.json`.
fn check_same_model(ckpt: &Checkpoint, set: &ChunkSet, model: &str) -> Result<(), UsageError> {
    let (c, s) = (ckpt.config(), set.config());
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
    /// The checkpoint's tables, exact (what HF computes).
    Checkpoint,
    /// The set's int8 side files (what the device runtime computes).
    Side,
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
    /// Embedding source.
    #[arg(long, value_enum, default_value_t = EmbeddingsArg::Checkpoint)]
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
    let m = chunkset::ChunkSetManifest::read(set).map_err(|e| UsageError {
        flag: "--reference-weights",
        reason: format!("graph weights need the set's manifest.json: {e}"),
    })?;
    let spec = &m.build.spec;
    let tmp = tempfile::tempdir().context("temporary directory")?;
    gemma4_export::dequant::write_graph_weights_checkpoint(
        ckpt,
        spec.compression,
        spec.precision.is_fp32(),
        tmp.path(),
    )?;
    let c = Checkpoint::open(tmp.path()).context("opening the graph-weights checkpoint")?;
    Ok((tmp, c))
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

/// The ids to feed and the reference logits row of each step.
struct ReferenceRun {
    ids: Vec<u32>,
    /// How many of `ids` are the prompt.
    prompt_len: usize,
    logits: Vec<Vec<f32>>,
    source: String,
    /// Keys of the golden file parity does not read.
    unused_keys: Vec<String>,
}

fn golden_reference(path: &Path) -> Result<ReferenceRun> {
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
        logits,
        source: format!("golden:{}", path.display()),
        unused_keys: g.unknown_keys,
    })
}

fn forward_reference(ckpt: &Checkpoint, prompt: &[u32], steps: usize) -> Result<ReferenceRun> {
    let r = Reference::load(ckpt, DType::F32)?;
    let mut state = r.new_state();
    let mut ids = prompt.to_vec();
    let mut logits = Vec::new();
    let out = r.forward(prompt, &mut state, None)?;
    let rows: Vec<Vec<f32>> = out.to_vec2()?;
    logits.extend(rows);
    for _ in 0..steps {
        let last = logits.last().context("empty prompt")?;
        let next = mil_runtime::parity::argmax(last) as u32;
        ids.push(next);
        let out = r.forward(&[next], &mut state, None)?;
        let mut rows: Vec<Vec<f32>> = out.to_vec2()?;
        logits.push(rows.pop().context("no logits")?);
    }
    // the last greedy token was never fed; drop it so ids and rows align
    ids.truncate(logits.len());
    Ok(ReferenceRun {
        ids,
        prompt_len: prompt.len(),
        logits,
        source: "reference-forward(f32)".into(),
        unused_keys: Vec::new(),
    })
}

fn default_tolerance(set: &ChunkSet) -> Tolerance {
    let cfg = set.config();
    if cfg.quantization.starts_with("int") {
        Tolerance::Palettized
    } else if cfg.precision.is_fp32() {
        Tolerance::Fp32
    } else {
        Tolerance::Fp16
    }
}

/// Run the parity check.
pub fn run(args: &ParityArgs) -> Result<()> {
    let tolerance = match &args.tolerance {
        Some(t) => Some(Tolerance::parse(t).ok_or_else(|| UsageError {
            flag: "--tolerance",
            reason: format!("`{t}` is not one of exact, fp32, fp16, palettized"),
        })?),
        None => None,
    };
    let model_dir = model_source::resolve(&args.model)?;
    if let Some(turns) = &args.turns {
        return crate::stateful_cmd::turns(args, &model_dir, turns, tolerance);
    }
    let ckpt =
        Checkpoint::open(&model_dir).with_context(|| format!("opening {}", model_dir.display()))?;
    if !args.chunks.join("model_config.json").is_file() {
        return Err(UsageError {
            flag: "--chunks",
            reason: format!(
                "{}: no model_config.json (not a chunk set)",
                args.chunks.display()
            ),
        }
        .into());
    }
    // read under its shared lock: no build replaces the set meanwhile
    let _held = mlpackage::publish::read_lock(&args.chunks)?;
    let reference = match &args.golden {
        Some(g) => golden_reference(g)?,
        None => {
            let prompt = if args.ids.is_empty() {
                let bos = ckpt.config().bos_token_id().unwrap_or(2);
                std::iter::once(bos).chain(3..18).collect()
            } else {
                args.ids.clone()
            };
            match args.reference_weights {
                ReferenceWeights::Original => {
                    forward_reference(&ckpt, &prompt, args.decode_tokens)?
                }
                ReferenceWeights::Graph => {
                    let (_tmp, g) = graph_weights_checkpoint(&ckpt, &args.chunks)?;
                    let mut r = forward_reference(&g, &prompt, args.decode_tokens)?;
                    r.source = "reference-forward(f32, graph weights)".into();
                    r
                }
            }
        }
    };
    if args.golden.is_some() && args.reference_weights == ReferenceWeights::Graph {
        return Err(UsageError {
            flag: "--reference-weights",
            reason: "`graph` applies to the reference forward; drop --golden".into(),
        }
        .into());
    }
    if crate::stateful_cmd::is_stateful(&args.chunks) {
        return crate::stateful_cmd::parity(
            args,
            &model_dir,
            &reference.ids,
            reference.prompt_len,
            &reference.logits,
            &reference.source,
            tolerance,
        );
    }
    if args.batch.is_some() {
        return Err(UsageError {
            flag: "--batch",
            reason: "applies to stateful sets (--variant stateful, stateful3) only".into(),
        }
        .into());
    }
    let OpenSet {
        lock: _set_lock,
        mut set,
    } = open_set(&args.chunks, args.backend)?;
    check_same_model(&ckpt, &set, &args.model)?;
    let tolerance = tolerance.unwrap_or_else(|| default_tolerance(&set));
    if reference.logits.first().map(Vec::len) != Some(set.config().vocab_size) {
        bail!(UsageError {
            flag: "--golden",
            reason: format!(
                "reference vocabulary {} does not match the set's {}",
                reference.logits.first().map(Vec::len).unwrap_or(0),
                set.config().vocab_size
            ),
        });
    }
    let variant = set.config().variant.clone();
    let backend = set.backend_name().to_string();
    let side;
    let exact;
    let embedder: &dyn Embedder = match args.embeddings {
        EmbeddingsArg::Checkpoint => {
            exact = CheckpointEmbedder::new(Checkpoint::open(&model_dir)?);
            &exact
        }
        EmbeddingsArg::Side => {
            side = SideFileEmbedder::open(&args.chunks, set.config())?;
            &side
        }
    };
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
    let mut cmp = Comparator::new();
    let mut session = set.session();
    let mut chunk_ms: BTreeMap<usize, f64> = BTreeMap::new();
    let mut prefill_report = None;
    if let Some(m) = prefill_len.filter(|&m| m > 0) {
        let out = session
            .prefill(&reference.ids[..m], embedder, true)
            .with_context(|| format!("prefill of {m} prompt tokens"))?;
        let got = out
            .logits
            .context("the head prefill chunk returned no logits")?;
        let want = &reference.logits[m - 1];
        cmp.add_at(m - 1, &got, want, out.token_id as usize);
        let ms: Vec<f64> = out
            .chunk_times
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        prefill_report = Some(json!({
            "tokens": m,
            "position": m - 1,
            "max_abs_logit_diff": cmp.metrics().max_abs_logit_diff,
            "top1_agree": mil_runtime::parity::argmax(&got) == mil_runtime::parity::argmax(want),
            "chunk_ms": ms,
        }));
    }
    let start = prefill_len.unwrap_or(0);
    for (p, (&t, want)) in reference
        .ids
        .iter()
        .zip(&reference.logits)
        .enumerate()
        .skip(start)
    {
        let out = session
            .step(t, embedder, true)
            .with_context(|| format!("decode step at position {p}"))?;
        let got = out.logits.context("the head chunk returned no logits")?;
        cmp.add_at(p, &got, want, out.token_id as usize);
        for (i, d) in out.chunk_times.iter().enumerate() {
            *chunk_ms.entry(i).or_default() += d.as_secs_f64() * 1e3;
        }
    }
    let m = cmp.metrics();
    let verdict = tolerance.check(&m);
    if args.json {
        let v = json!({
            "variant": variant,
            "backend": backend,
            "reference": reference.source,
            "embeddings": match args.embeddings { EmbeddingsArg::Checkpoint => "checkpoint", EmbeddingsArg::Side => "side" },
            "tolerance": tolerance.name(),
            "positions": m.positions,
            "top1_agreement": m.top1_agreement,
            "max_abs_logit_diff": m.max_abs_logit_diff,
            "mean_abs_logit_diff": m.mean_abs_logit_diff,
            "mean_kl": m.mean_kl,
            "token_id_is_argmax": m.token_id_is_argmax,
            "worst_position": m.worst_position,
            "prefill": prefill_report,
            "golden_unused_keys": reference.unused_keys,
            "pass": verdict.is_ok(),
            "failure": verdict.as_ref().err(),
            "per_position": m.per_position,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if !reference.unused_keys.is_empty() {
            println!(
                "note: the golden's keys {} are not used by parity",
                reference.unused_keys.join(", ")
            );
        }
        if let Some(r) = &prefill_report {
            println!(
                "prefill: {} prompt tokens in one batched call, position {}: max |Δlogit| {:.3e}, top-1 {}",
                r["tokens"],
                r["position"],
                r["max_abs_logit_diff"].as_f64().unwrap_or(f64::NAN),
                if r["top1_agree"] == true {
                    "agrees"
                } else {
                    "differs"
                },
            );
        }
        println!(
            "parity {} ({variant}, {backend}) vs {}: {} positions, top-1 {:.1}%, max |Δlogit| {:.3e}, mean |Δlogit| {:.3e}, mean KL {:.3e} → {} ({})",
            args.chunks.display(),
            reference.source,
            m.positions,
            100.0 * m.top1_agreement,
            m.max_abs_logit_diff,
            m.mean_abs_logit_diff,
            m.mean_kl,
            if verdict.is_ok() { "PASS" } else { "FAIL" },
            tolerance.name()
        );
    }
    match verdict {
        Ok(()) => Ok(()),
        Err(why) => {
            Err(CheckFailed(format!("parity ({} tolerance): {why}", tolerance.name())).into())
        }
    }
}
