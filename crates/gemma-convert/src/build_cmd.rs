//! The main job: `gemma-convert --model … --variant … --nbits … --ctx … --out …` builds a chunk set
//! (spec/cli-contract.md), with progress bars on stderr and an optional `--json` summary on stdout.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use chunkset::{
    BuildSpec, Compression, FormsError, Functions, GraphForms, LutConfig, NBits, OutputFormat,
    Precision, Taps, Variant,
};
use clap::{Args, ValueEnum};
use gemma4_export::build::{BuildOptions, Progress, build};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::exit::UsageError;
use crate::model_source;

/// Compute precision of the emitted graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// fp16 weights, activations and I/O (the Neural Engine's precision).
    Fp16,
    /// fp32 everywhere (not for the Neural Engine; for exact parity checks).
    Fp32,
}

/// Flags of the build command (the top-level form without a subcommand).
#[derive(Debug, Args, Default, Clone)]
pub struct BuildArgs {
    /// Checkpoint directory, or an HF repo id (`owner/name[@rev]`, needs the `hub` feature).
    #[arg(long)]
    pub model: Option<String>,
    /// Chunking variant: swa4, merged, merged2, merged1, wfa, flash, lite, stateful, stateful3.
    #[arg(long, default_value = "swa4")]
    pub variant: String,
    /// Bits per palettized weight index (0 = keep fp16/fp32; 1, 2, 3, 4, 6, 8). Checked here, once.
    #[arg(long, default_value_t = 4)]
    pub nbits: u8,
    /// Context length (full-attention cache length).
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
    /// Output directory of the chunk set.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Output channels sharing one LUT.
    #[arg(long, default_value_t = 32)]
    pub group_size: usize,
    /// Compute precision.
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Window of full-attention layers for `--variant wfa`.
    #[arg(long)]
    pub fw: Option<usize>,
    /// Key block size of flash decoding for `--variant flash`.
    #[arg(long)]
    pub flash_block: Option<usize>,
    /// Functions per chunk: decode[,verify:K][,prefill:N]; stateful sets decode[,prefill_b:T1,T2,…].
    #[arg(long, default_value = "decode")]
    pub functions: String,
    /// Model form of every chunk: mlpackage (default), mlmodelc (compiled bundles, as the Swift
    /// runtime loads them) or both.
    #[arg(long, default_value = "mlpackage")]
    pub format: String,
    /// Build only this chunk (or `side` for the side files), for CI matrices; join parts with
    /// `gemma-convert assemble`.
    #[arg(long)]
    pub only: Option<String>,
    /// Worker threads (default: all cores). Output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write a reproducible zip `OUT.zip` of the set.
    #[arg(long)]
    pub zip: bool,
    /// Replace an existing non-empty output directory.
    #[arg(long)]
    pub force: bool,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    /// Print one JSON summary object on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// `model_name` written into model_config.json.
    #[arg(long)]
    pub model_name: Option<String>,
    /// Print the MIL text of every chunk after a phase (`emit`) or pass (`dead_code_elimination`,
    /// `const_deduplication`).
    #[arg(long)]
    pub dump_after: Option<String>,
    /// Attention softmax: `decomposed` (default; the reference pipeline's max/sub/exp/sum/div, whose
    /// notes say the native op was rejected on the ANE by earlier iOS releases) or `native`.
    #[arg(long)]
    pub softmax: Option<String>,
    /// Grouped-query attention: `reshape` (default; query heads folded onto the K/V heads) or
    /// `repeat` (K/V repeated per query head, the reference pipeline's form).
    #[arg(long)]
    pub gqa: Option<String>,
    /// Single-position layout changes: `reshape` (default) or `transpose` (the reference pipeline's
    /// permute/unsqueeze/squeeze).
    #[arg(long)]
    pub layout: Option<String>,
    /// Optional outputs the Swift runtime reads: `eagle3` (hidden_at_L{l} from the decode function
    /// of the chunk holding each EAGLE-3 layer), `verify-logits` (logits_fp16 from the head chunk's
    /// verify function); comma-separated.
    #[arg(long)]
    pub taps: Option<String>,
    /// Developer flag (docs/FIDELITY.md): numerics choices of the graphs, e.g.
    /// `norm-gain=multiply` or `layer-scalar=multiply`, to measure them with
    /// `gemma-convert fidelity`. Product builds leave it unset.
    #[arg(long, hide = true)]
    pub numerics: Option<String>,
}

/// Progress on stderr: one spinner per phase, a line with its time when it ends.
struct Bars {
    quiet: bool,
    current: Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, phase: &str, _total: u64) {
        if self.quiet {
            return;
        }
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_message(phase.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut c) = self.current.lock() {
            *c = Some(pb);
        }
    }

    fn finish(&self, phase: &str, secs: f64) {
        if let Ok(mut c) = self.current.lock()
            && let Some(pb) = c.take()
        {
            pb.finish_and_clear();
            if !self.quiet {
                eprintln!("  {phase:<11} {secs:8.2} s");
            }
        }
    }

    fn dump(&self, text: &str) {
        println!("{text}");
    }
}

impl BuildArgs {
    /// The weight compression of `--nbits` / `--group-size` (bad values are usage errors, exit 2).
    fn compression(&self) -> Result<Compression, UsageError> {
        if self.group_size == 0 {
            return Err(UsageError {
                flag: "--group-size",
                reason: "must be positive".into(),
            });
        }
        if self.nbits == 0 {
            return Ok(Compression::Dense);
        }
        let nbits = NBits::try_from(self.nbits).map_err(|_| UsageError {
            flag: "--nbits",
            reason: format!("{} is not one of 0, 1, 2, 3, 4, 6, 8", self.nbits),
        })?;
        Ok(Compression::Palettize(LutConfig {
            nbits,
            group_size: self.group_size,
        }))
    }

    /// The build options as data (what the manifest records and `rebuild` re-runs).
    fn spec(&self, model: String) -> Result<BuildSpec> {
        // defaults of --fw / --flash-block follow --ctx, so no message quotes a value nobody typed
        let fw = self.fw.or(Some(DEFAULT_FW.min(self.ctx.max(1))));
        let flash_block = self
            .flash_block
            .or(Some(gcd(DEFAULT_FLASH_BLOCK, self.ctx.max(1))));
        let variant = Variant::parse(&self.variant, fw, flash_block).map_err(|e| UsageError {
            flag: "--variant",
            reason: e.to_string(),
        })?;
        if self.fw.is_some() && !matches!(variant, Variant::Wfa { .. }) {
            return Err(UsageError {
                flag: "--fw",
                reason: "only applies to --variant wfa".into(),
            }
            .into());
        }
        if self.flash_block.is_some() && !matches!(variant, Variant::Flash { .. }) {
            return Err(UsageError {
                flag: "--flash-block",
                reason: "only applies to --variant flash".into(),
            }
            .into());
        }
        let compression = self.compression()?;
        if self.ctx == 0 || self.ctx > 1 << 20 {
            return Err(UsageError {
                flag: "--ctx",
                reason: format!("{} is not in 1..=1048576", self.ctx),
            }
            .into());
        }
        let functions: Functions = self.functions.parse().map_err(|e| UsageError {
            flag: "--functions",
            reason: format!("{e}"),
        })?;
        let format: OutputFormat = self.format.parse().map_err(|e| UsageError {
            flag: "--format",
            reason: e,
        })?;
        let mut forms = GraphForms::default();
        if let Some(v) = &self.softmax {
            forms.softmax = v.parse().map_err(|e: FormsError| UsageError {
                flag: "--softmax",
                reason: e.to_string(),
            })?;
        }
        if let Some(v) = &self.gqa {
            forms.gqa = v.parse().map_err(|e: FormsError| UsageError {
                flag: "--gqa",
                reason: e.to_string(),
            })?;
        }
        if let Some(v) = &self.layout {
            forms.layout = v.parse().map_err(|e: FormsError| UsageError {
                flag: "--layout",
                reason: e.to_string(),
            })?;
        }
        let taps: Taps = match &self.taps {
            None => Taps::none(),
            Some(t) => t.parse().map_err(|e: FormsError| UsageError {
                flag: "--taps",
                reason: e.to_string(),
            })?,
        };
        if taps.verify_logits && functions.verify.is_none() {
            return Err(UsageError {
                flag: "--taps",
                reason: "verify-logits needs the verify function (--functions decode,verify:K)"
                    .into(),
            }
            .into());
        }
        Ok(BuildSpec {
            model,
            variant,
            ctx: self.ctx,
            precision: match self.precision {
                Some(PrecisionArg::Fp32) => Precision::Fp32,
                Some(PrecisionArg::Fp16) | None => Precision::Fp16,
            },
            compression,
            functions,
            model_name: self.model_name.clone(),
            format,
            forms,
            taps,
            numerics: match &self.numerics {
                None => None,
                Some(n) => {
                    let parsed =
                        gemma4_export::Numerics::parse(n).map_err(|reason| UsageError {
                            flag: "--numerics",
                            reason,
                        })?;
                    (!parsed.is_default()).then(|| parsed.name())
                }
            },
        })
    }

    /// Turn the flags into build options (bad values are usage errors, exit 2).
    pub fn options(&self) -> Result<BuildOptions> {
        let model = self.model.clone().ok_or_else(|| UsageError {
            flag: "--model",
            reason: "required (a checkpoint directory or an HF repo id)".into(),
        })?;
        let out = self.out.clone().ok_or_else(|| UsageError {
            flag: "--out",
            reason: "required (the output directory of the chunk set)".into(),
        })?;
        let spec = self.spec(model)?;
        let threads = cap_threads(self.threads)?;
        let mut opts = options_of(spec, out)?;
        opts.only = self.only.clone();
        opts.threads = threads;
        opts.zip = self.zip;
        opts.force = self.force;
        opts.dump_after = self.dump_after.clone();
        Ok(opts)
    }
}

/// Build options of `spec` into `out` (the model resolved to a local directory, the command
/// rendered), to be completed with the run-only options.
pub fn options_of(spec: BuildSpec, out: PathBuf) -> Result<BuildOptions> {
    let model_dir = model_source::resolve(&spec.model)?;
    let mut opts = BuildOptions::new(model_dir, out);
    opts.command = canonical_command(&spec);
    opts.spec = spec;
    Ok(opts)
}

/// The command line that rebuilds a set with `spec`: every option that changes the set's bytes, in a
/// fixed order (`--out`, `--force`, `--threads`, `--only`, `--zip`, `--quiet`, `--json` and
/// `--dump-after` are left out). Dense builds record `--nbits 0` with the default group size.
pub fn canonical_command(spec: &BuildSpec) -> Vec<String> {
    let (nbits, group_size) = spec.compression.to_record();
    let mut c: Vec<String> = [
        "gemma-convert",
        "--model",
        &spec.model,
        "--variant",
        spec.variant.name(),
        "--nbits",
        &nbits.to_string(),
        "--group-size",
        &group_size.to_string(),
        "--ctx",
        &spec.ctx.to_string(),
        "--precision",
        spec.precision.name(),
        "--functions",
        &spec.functions.to_string(),
    ]
    .map(String::from)
    .into();
    if let Some(n) = &spec.numerics {
        c.extend(["--numerics".into(), n.clone()]);
    }
    match spec.variant {
        Variant::Wfa { fw } => c.extend(["--fw".into(), fw.to_string()]),
        Variant::Flash { block } => c.extend(["--flash-block".into(), block.to_string()]),
        _ => {}
    }
    if let Some(n) = &spec.model_name {
        c.extend(["--model-name".into(), n.clone()]);
    }
    if !spec.format.is_default() {
        c.extend(["--format".into(), spec.format.name().into()]);
    }
    let (f, d) = (spec.forms, GraphForms::default());
    for (flag, value, default) in [
        ("--softmax", f.softmax.name(), d.softmax.name()),
        ("--gqa", f.gqa.name(), d.gqa.name()),
        ("--layout", f.layout.name(), d.layout.name()),
    ] {
        if value != default {
            c.extend([flag.into(), value.into()]);
        }
    }
    if !spec.taps.is_none() {
        c.extend(["--taps".into(), spec.taps.to_string()]);
    }
    c
}

/// Default `--fw` (capped at `--ctx`).
const DEFAULT_FW: usize = 2048;
/// Default `--flash-block` (the largest power of two up to this that divides `--ctx`).
const DEFAULT_FLASH_BLOCK: usize = 1024;
/// `--threads` above this multiple of the cores is capped (more threads only add overhead).
const THREADS_PER_CORE: usize = 4;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Check `--threads`: at least 1; above [`THREADS_PER_CORE`] × the cores it is capped, with a note.
pub fn cap_threads(threads: Option<usize>) -> Result<Option<usize>> {
    let Some(t) = threads else {
        return Ok(None);
    };
    if t == 0 {
        return Err(UsageError {
            flag: "--threads",
            reason: "must be at least 1".into(),
        }
        .into());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cap = THREADS_PER_CORE * cores;
    if t > cap {
        eprintln!(
            "note: --threads {t} capped at {cap} ({THREADS_PER_CORE} × {cores} cores); the output does not depend on it"
        );
        return Ok(Some(cap));
    }
    Ok(Some(t))
}

/// Warn when `--ctx` exceeds the checkpoint's `max_position_embeddings`.
fn warn_ctx(opts: &BuildOptions) {
    if let Ok(cfg) = gemma4::config::Gemma4Config::from_file(&opts.model_dir.join("config.json"))
        && opts.spec.ctx > cfg.max_position_embeddings()
    {
        eprintln!(
            "warning: --ctx {} exceeds the model's max_position_embeddings ({}): positions past it \
             were never trained",
            opts.spec.ctx,
            cfg.max_position_embeddings()
        );
    }
}

/// Run the build.
pub fn run(args: &BuildArgs) -> Result<()> {
    let opts = args.options()?;
    execute(&opts, args.quiet || args.json, args.json)
}

/// Build `opts`: progress on stderr unless `quiet`, one JSON summary on stdout with `json`, else a
/// table of the packages.
pub fn execute(opts: &BuildOptions, quiet: bool, json_out: bool) -> Result<()> {
    let bars = Bars {
        quiet,
        current: Mutex::new(None),
    };
    let spec = &opts.spec;
    if !bars.quiet {
        eprintln!(
            "gemma-convert {}: {} → {} ({}, {}, ctx {}, {})",
            env!("CARGO_PKG_VERSION"),
            spec.model,
            opts.out.display(),
            spec.variant.name(),
            spec.quantization(),
            spec.ctx,
            spec.precision.name()
        );
    }
    warn_ctx(opts);
    let report = build(opts, &bars).with_context(|| format!("building {}", opts.out.display()))?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if json_out {
        let v = json!({
            "out": report.out,
            "variant": spec.variant.name(),
            "phases": report.phases.iter().map(|(n, s)| json!({"name": n, "seconds": s})).collect::<Vec<_>>(),
            "seconds": report.seconds,
            "packages": report.packages,
            "files": report.files,
            "total_bytes": report.total_bytes,
            "peak_rss_bytes": report.peak_rss_bytes,
            "uncompressed_weights": report.uncompressed_weights,
            "zip": report.zip,
            "warnings": report.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !bars.quiet {
        let form = spec.format.formats()[0];
        for p in &report.packages {
            eprintln!(
                "  {:<16} layers {:>3}..{:<3} {:>6} ops  weight.bin {}",
                form.file_name(&p.name),
                p.layers[0],
                p.layers[1],
                p.ops,
                human_bytes(p.weight_bytes)
            );
        }
        let kept = report.uncompressed_weights.len();
        eprintln!(
            "wrote {} files, {} total{}{}",
            report.files,
            human_bytes(report.total_bytes),
            if spec.compression.lut().is_some() {
                format!(", {kept} weights left uncompressed (see manifest.json)")
            } else {
                String::new()
            },
            report
                .peak_rss_bytes
                .map(|b| format!(", peak memory {}", human_bytes(b)))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `12.3 MiB`-style sizes.
pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
