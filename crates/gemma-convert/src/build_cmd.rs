//! The main job: `gemma-convert --model … --variant … --nbits … --ctx … --out …` builds a chunk set
//! (spec/cli-contract.md), with progress bars on stderr and an optional `--json` summary on stdout.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use gemma4_export::build::{BuildOptions, Functions, Progress, build};
use gemma4_export::{Quant, Variant};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::exit::UsageError;
use crate::model_source;

/// Compute precision of the emitted graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
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
    /// Chunking variant: swa4, merged, merged2, merged1, wfa, flash, lite.
    #[arg(long, default_value = "swa4")]
    pub variant: String,
    /// Bits per palettized weight index (0 = keep fp16/fp32; 1, 2, 3, 4, 6, 8).
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
    pub precision: Option<Precision>,
    /// Window of full-attention layers for `--variant wfa`.
    #[arg(long)]
    pub fw: Option<usize>,
    /// Key block size of flash decoding for `--variant flash`.
    #[arg(long)]
    pub flash_block: Option<usize>,
    /// Functions per chunk: decode[,verify:K][,prefill:N].
    #[arg(long, default_value = "decode")]
    pub functions: String,
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
        let variant =
            Variant::parse(&self.variant, self.fw, self.flash_block).map_err(|e| UsageError {
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
        if !matches!(self.nbits, 0 | 1 | 2 | 3 | 4 | 6 | 8) {
            return Err(UsageError {
                flag: "--nbits",
                reason: format!("{} is not one of 0, 1, 2, 3, 4, 6, 8", self.nbits),
            }
            .into());
        }
        if self.group_size == 0 {
            return Err(UsageError {
                flag: "--group-size",
                reason: "must be positive".into(),
            }
            .into());
        }
        if self.ctx == 0 || self.ctx > 1 << 20 {
            return Err(UsageError {
                flag: "--ctx",
                reason: format!("{} is not in 1..=1048576", self.ctx),
            }
            .into());
        }
        if self.threads == Some(0) {
            return Err(UsageError {
                flag: "--threads",
                reason: "must be at least 1".into(),
            }
            .into());
        }
        let functions = Functions::parse(&self.functions).map_err(|e| UsageError {
            flag: "--functions",
            reason: e.to_string(),
        })?;
        let model_dir = model_source::resolve(&model)?;
        Ok(BuildOptions {
            model_dir,
            model_source: model,
            variant,
            ctx: self.ctx,
            fp32: self.precision == Some(Precision::Fp32),
            quant: Quant {
                nbits: self.nbits,
                group_size: self.group_size,
            },
            functions,
            only: self.only.clone(),
            threads: self.threads,
            zip: self.zip,
            force: self.force,
            out,
            model_name: self.model_name.clone(),
            dump_after: self.dump_after.clone(),
        })
    }
}

/// Run the build.
pub fn run(args: &BuildArgs) -> Result<()> {
    let opts = args.options()?;
    let bars = Bars {
        quiet: args.quiet || args.json,
        current: Mutex::new(None),
    };
    if !bars.quiet {
        eprintln!(
            "gemma-convert {}: {} → {} ({}, nbits {}, ctx {}, {})",
            env!("CARGO_PKG_VERSION"),
            opts.model_source,
            opts.out.display(),
            opts.variant.name(),
            opts.quant.nbits,
            opts.ctx,
            if opts.fp32 { "fp32" } else { "fp16" }
        );
    }
    let report = build(&opts, &bars).with_context(|| format!("building {}", opts.out.display()))?;
    if args.json {
        let v = json!({
            "out": report.out,
            "variant": opts.variant.name(),
            "phases": report.phases.iter().map(|(n, s)| json!({"name": n, "seconds": s})).collect::<Vec<_>>(),
            "seconds": report.phases.iter().map(|(_, s)| s).sum::<f64>(),
            "packages": report.packages,
            "files": report.files,
            "total_bytes": report.total_bytes,
            "peak_rss_bytes": report.peak_rss_bytes,
            "uncompressed_weights": report.uncompressed_weights,
            "zip": report.zip,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !args.quiet {
        for p in &report.packages {
            eprintln!(
                "  {:<16} layers {:>3}..{:<3} {:>6} ops  weight.bin {}",
                format!("{}.mlpackage", p.name),
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
            if opts.quant.nbits > 0 {
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
