//! `gemma-convert bench`: greedy decoding through a chunk set (as the device runtime does it: int8
//! side-file embeddings, the host loop of `mil_runtime::chunkset`), reporting decode tokens/s and
//! milliseconds per chunk call. The first `--warmup` steps are excluded from the figures. The set
//! passes `verify` first (`crate::verify_cmd::check_set`, its time reported apart, never in the
//! figures).
//!
//! With `--prefill` (sets built with a prefill function) it first times one batched prefill of a
//! full `N`-token prompt (after one untimed prefill when `--warmup` > 0), reports prefill tokens/s and
//! milliseconds per prefill chunk, then decodes on from position `N`.
//!
//! With `--estimate DEVICE` (or `all`) it runs nothing: it prints the calibrated memory roofline of
//! the set's decode step on Apple devices ([`crate::estimate`]).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use mil_runtime::chunkset::{ChunkSet, ChunkSetError, SideFileEmbedder};
use serde_json::json;

use crate::exit::UsageError;
use crate::parity::BackendArg;

/// Arguments of `gemma-convert bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The chunk set directory.
    #[arg(long)]
    pub chunks: PathBuf,
    /// Decode steps to time (default 64, fewer with a note when the context has no room for them;
    /// a value given that does not fit is a usage error).
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Backend that runs the chunks.
    #[arg(long, value_enum, default_value_t = BackendArg::Interpreter)]
    pub backend: BackendArg,
    /// First token (default: the config's BOS).
    #[arg(long)]
    pub start: Option<u32>,
    /// Also time one batched prefill of a full-length prompt through the set's prefill chunks
    /// (stateful sets: `--prompt-tokens` fed one at a time vs in `prefill_b<T>` batches).
    #[arg(long)]
    pub prefill: bool,
    /// Stateful sets: the `prefill_b<T>` batch (default: the engine's choice of 16, 8, 4).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Stateful sets with `--prefill`: prompt length.
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,
    /// Instead of running the set, estimate its decode speed on an Apple device from the bytes each
    /// chunk moves (calibrated roofline): iphone15pro, iphone16pro, iphone17, iphone17pro, m2, m3,
    /// m4, m4pro, m4max, or `all`.
    #[arg(long, value_name = "DEVICE")]
    pub estimate: Option<String>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Decode steps timed when `--tokens` is not given.
const DEFAULT_TOKENS: usize = 64;

/// Run the benchmark.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.tokens == Some(0) {
        return Err(UsageError {
            flag: "--tokens",
            reason: "must be at least 1".into(),
        }
        .into());
    }
    // verified first, under its shared lock: no build replaces the set meanwhile
    let checked = crate::verify_cmd::check_set(&args.chunks, args.json)?;
    if let Some(which) = &args.estimate {
        if which != "all" && !crate::estimate::DEVICES.iter().any(|d| d.key == which) {
            return Err(UsageError {
                flag: "--estimate",
                reason: format!(
                    "unknown device `{which}` (known: {}, all)",
                    crate::estimate::DEVICES
                        .iter()
                        .map(|d| d.key)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
            .into());
        }
        return crate::estimate::run(&args.chunks, which, args.json);
    }
    if crate::parity::is_stateful(&checked.config) {
        return crate::stateful_cmd::bench(args, &checked);
    }
    let t_load = Instant::now();
    let mut set = ChunkSet::open(&args.chunks, args.backend.kind()?)
        .with_context(|| format!("loading {}", args.chunks.display()))?;
    let load_s = t_load.elapsed().as_secs_f64();
    let emb = SideFileEmbedder::open(&args.chunks, set.config())?;
    let names = set.chunk_names();
    let backend = set.backend_name().to_string();
    let ctx = set.config().context_length;
    let mut token = args.start.or(set.config().bos_token_id).unwrap_or(2);
    let prefill_n = if args.prefill {
        set.load_prefill().map_err(|e| UsageError {
            flag: "--prefill",
            reason: match e {
                ChunkSetError::Prefill(why) => why,
                other => other.to_string(),
            },
        })?
    } else {
        0
    };
    // steps that fit after the prefill positions and the warm-up steps
    let room = ctx.saturating_sub(prefill_n).saturating_sub(args.warmup);
    let timed = match args.tokens {
        Some(t) if t > room => {
            return Err(UsageError {
                flag: "--tokens",
                reason: format!(
                    "{t}: context length {ctx} leaves room for {room} timed steps after {} warm-up \
                     steps{}",
                    args.warmup,
                    if prefill_n > 0 {
                        format!(" and {prefill_n} prefill positions")
                    } else {
                        String::new()
                    }
                ),
            }
            .into());
        }
        Some(t) => t,
        None if room == 0 => {
            return Err(UsageError {
                flag: "--warmup",
                reason: format!(
                    "context length {ctx} leaves no step after {} warm-up steps",
                    args.warmup
                ),
            }
            .into());
        }
        None => {
            if room < DEFAULT_TOKENS {
                eprintln!(
                    "note: timing {room} steps, not {DEFAULT_TOKENS}: the context length is {ctx}"
                );
            }
            room.min(DEFAULT_TOKENS)
        }
    };
    let total = args.warmup + timed;
    let mut prefill_report = None;
    let prompt: Vec<u32> = {
        let vocab = set.config().vocab_size as u32;
        std::iter::once(token)
            .chain((3..).map(|t| t % vocab))
            .take(prefill_n)
            .collect()
    };
    if prefill_n > 0 && args.warmup > 0 {
        set.session()
            .prefill(&prompt, &emb, false)
            .context("warm-up prefill")?;
    }
    let prefill_names: Vec<String> = set
        .config()
        .prefill_chunks()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let mut per_chunk = vec![0f64; names.len()];
    let mut session = set.session();
    if prefill_n > 0 {
        let t = Instant::now();
        let out = session.prefill(&prompt, &emb, false).context("prefill")?;
        let secs = t.elapsed().as_secs_f64();
        let ms: Vec<(String, f64)> = prefill_names
            .into_iter()
            .zip(&out.chunk_times)
            .map(|(n, d)| (n, d.as_secs_f64() * 1e3))
            .collect();
        prefill_report = Some((secs, ms));
        token = out.token_id;
    }
    let mut generated = Vec::new();
    let mut t0 = Instant::now();
    for step in 0..total {
        if step == args.warmup {
            t0 = Instant::now();
            per_chunk.iter_mut().for_each(|x| *x = 0.0);
        }
        let out = session
            .step(token, &emb, false)
            .with_context(|| format!("decode step {step}"))?;
        for (acc, d) in per_chunk.iter_mut().zip(&out.chunk_times) {
            *acc += d.as_secs_f64() * 1e3;
        }
        token = out.token_id;
        generated.push(token);
    }
    let secs = t0.elapsed().as_secs_f64();
    let tps = timed as f64 / secs;
    let ms: Vec<f64> = per_chunk.iter().map(|t| t / timed as f64).collect();
    if args.json {
        let v = json!({
            "chunks": args.chunks,
            "backend": backend,
            "tokens": timed,
            "warmup": args.warmup,
            "load_seconds": load_s,
            "verify_seconds": checked.seconds,
            "tokens_per_second": tps,
            "ms_per_token": 1e3 / tps,
            "ms_per_chunk_call": names.iter().zip(&ms).map(|(n, m)| json!({"chunk": n, "ms": m})).collect::<Vec<_>>(),
            "generated": generated,
            "prefill": prefill_report.as_ref().map(|(secs, ms)| json!({
                "tokens": prefill_n,
                "seconds": secs,
                "tokens_per_second": prefill_n as f64 / secs,
                "ms_per_chunk_call": ms.iter().map(|(n, m)| json!({"chunk": n, "ms": m})).collect::<Vec<_>>(),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "bench {} ({backend}): {timed} tokens in {secs:.2} s = {tps:.2} tokens/s ({:.1} ms/token), load {load_s:.2} s",
            args.chunks.display(),
            1e3 / tps
        );
        for (n, m) in names.iter().zip(&ms) {
            println!("  {n:<16} {m:9.2} ms/call");
        }
        if let Some((secs, ms)) = &prefill_report {
            println!(
                "prefill: {prefill_n} tokens in one batched call, {secs:.2} s = {:.1} tokens/s",
                prefill_n as f64 / secs
            );
            for (n, m) in ms {
                println!("  {n:<16} {m:9.2} ms/call");
            }
        }
    }
    Ok(())
}
