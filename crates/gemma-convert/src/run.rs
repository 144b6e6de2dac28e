//! `gemma-convert run`: load a checkpoint, run the reference forward on `--ids` (prefill), then
//! greedy-decode `--max-new-tokens` tokens with the KV cache, printing each chosen id and its
//! logit (text, or one JSON object with `--json`). The reference streams its weights from the
//! memory-mapped checkpoint (one layer at a time), so full-size checkpoints run in a few GB.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use gemma4::{Checkpoint, DType, Reference, Tensor};
use serde_json::json;

use crate::exit::UsageError;
use crate::model_source;

/// Compute precision of the reference forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit float (matches HF fp32 goldens within 2e-3).
    F32,
    /// 16-bit float (RMSNorm and softmax still in f32).
    F16,
}

impl DtypeArg {
    fn dtype(self) -> DType {
        match self {
            DtypeArg::F32 => DType::F32,
            DtypeArg::F16 => DType::F16,
        }
    }

    fn name(self) -> &'static str {
        match self {
            DtypeArg::F32 => "f32",
            DtypeArg::F16 => "f16",
        }
    }
}

/// Arguments of `gemma-convert run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Checkpoint directory, or an HF repo id (`owner/name[@rev]`, needs the `hub` feature).
    #[arg(long)]
    pub model: String,
    /// Prompt token ids, comma separated (BOS first, e.g. 2,17,42).
    #[arg(long, value_delimiter = ',', num_args = 1.., required = true)]
    pub ids: Vec<u32>,
    /// Number of tokens to generate greedily.
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Compute precision.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Stop after generating an EOS id from the config.
    #[arg(long)]
    pub stop_at_eos: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One generated token.
struct Step {
    id: u32,
    logit: f32,
}

/// Argmax of the last row of `[S, V]` f32 logits: `(id, logit)`.
fn last_argmax(logits: &Tensor) -> Result<(u32, f32)> {
    let s = logits.dim(0)?;
    let row: Vec<f32> = logits.get(s.saturating_sub(1))?.to_vec1()?;
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v.is_finite() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.and_then(|(i, v)| u32::try_from(i).ok().map(|i| (i, v)))
        .context("logits hold no finite value")
}

/// Execute `run`.
pub fn run(args: &RunArgs) -> Result<()> {
    if args.ids.is_empty() {
        return Err(UsageError {
            flag: "--ids",
            reason: "needs at least one token id".into(),
        }
        .into());
    }
    let dir: PathBuf = model_source::resolve(&args.model)?;
    let ckpt =
        Checkpoint::open(&dir).with_context(|| format!("opening checkpoint {}", dir.display()))?;
    let vocab = ckpt.config().vocab_size();
    if let Some(bad) = args.ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(UsageError {
            flag: "--ids",
            reason: format!("token id {bad} is out of range for a vocabulary of {vocab}"),
        }
        .into());
    }
    let eos = ckpt.config().eos_token_ids().to_vec();
    let prefix = ckpt.prefix().to_string();
    let layers = ckpt.config().num_hidden_layers();
    let model =
        Reference::load_streaming(ckpt, args.dtype.dtype()).context("opening the reference")?;

    let mut state = model.new_state();
    let mut logits = model.forward_last(&args.ids, &mut state, 1)?;
    let mut steps: Vec<Step> = Vec::with_capacity(args.max_new_tokens);
    for i in 0..args.max_new_tokens {
        let (id, logit) = last_argmax(&logits)?;
        steps.push(Step { id, logit });
        if (args.stop_at_eos && eos.contains(&id)) || i + 1 == args.max_new_tokens {
            break;
        }
        logits = model.forward(&[id], &mut state, None)?;
    }

    if args.json {
        let out = json!({
            "model": dir.display().to_string(),
            "prefix": prefix,
            "dtype": args.dtype.name(),
            "prompt_ids": args.ids,
            "generated_ids": steps.iter().map(|s| s.id).collect::<Vec<_>>(),
            "top_logits": steps.iter().map(|s| s.logit).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        println!(
            "model {} (prefix {:?}, {layers} layers, vocab {}, {})",
            dir.display(),
            prefix,
            vocab,
            args.dtype.name()
        );
        let prompt: Vec<String> = args.ids.iter().map(u32::to_string).collect();
        println!("prompt: {}", prompt.join(","));
        for (i, s) in steps.iter().enumerate() {
            println!("step {i:3}: id {:6}  logit {:9.4}", s.id, s.logit);
        }
        let generated: Vec<String> = steps.iter().map(|s| s.id.to_string()).collect();
        println!("continuation: {}", generated.join(","));
    }
    Ok(())
}
