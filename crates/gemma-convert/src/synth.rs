//! `gemma-convert synth --config CONFIG.json --out DIR`: a random-weight checkpoint with the exact
//! tensor names and shapes a config implies (e.g. the real E2B config in
//! `fixtures/configs/gemma-4-e2b.json`), in the release layout (`model.language_model.*`, sharded
//! bf16 safetensors + index). For performance work at full size where real weights cannot be
//! downloaded. Deterministic for a seed.
//!
//! Values: linear weights uniform with std `1/√fan_in`, embedding tables std 0.02, norm gains
//! `1 ± 0.1`, `layer_scalar` in [0.1, 0.9]. Tensors are generated and written one at a time, in
//! parallel blocks, so memory stays bounded by the largest tensor.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use half::bf16;
use rayon::prelude::*;
use serde_json::json;

use crate::exit::UsageError;

/// Arguments of `gemma-convert synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// A Gemma 4 config.json (flat or nested).
    #[arg(long)]
    pub config: PathBuf,
    /// Output checkpoint directory (must not exist, or be empty, or with `--force` hold an earlier
    /// synth checkpoint).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing checkpoint written by `synth` (never anything else).
    #[arg(long)]
    pub force: bool,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Approximate shard size in bytes.
    #[arg(long, default_value_t = 2_000_000_000)]
    pub shard_bytes: u64,
}

/// SplitMix64: a tiny, good enough generator for weights.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn name_seed(name: &str, seed: u64) -> u64 {
    name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `(center, half-width)` of the uniform distribution of a tensor.
fn distribution(name: &str, shape: &[usize]) -> (f32, f32) {
    let s3 = 3f32.sqrt();
    if name.ends_with("layer_scalar") {
        (0.5, 0.4)
    } else if name.contains("norm") {
        (1.0, 0.1)
    } else if name.starts_with("embed_tokens") {
        (0.0, 0.02 * s3)
    } else {
        let fan_in = shape.get(1).copied().unwrap_or(1).max(1) as f32;
        (0.0, s3 / fan_in.sqrt())
    }
}

fn fill(name: &str, shape: &[usize], seed: u64) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let (c, w) = distribution(name, shape);
    let base = name_seed(name, seed);
    const BLOCK: usize = 1 << 16;
    let mut out = vec![0u8; n * 2];
    out.par_chunks_mut(BLOCK * 2)
        .enumerate()
        .for_each(|(bi, chunk)| {
            let mut st = base ^ (bi as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
            for pair in chunk.chunks_exact_mut(2) {
                let u = (splitmix(&mut st) >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
                let v = bf16::from_f32(c + w * (2.0 * u - 1.0));
                pair.copy_from_slice(&v.to_le_bytes());
            }
        });
    out
}

/// The marker of a synth checkpoint: `generator` in the index's `metadata`.
const GENERATOR: &str = "gemma-convert synth";
const INDEX: &str = "model.safetensors.index.json";

/// Whether `dir` holds a checkpoint written by `synth` (its index names [`GENERATOR`]).
fn is_synth_checkpoint(dir: &std::path::Path) -> bool {
    std::fs::read_to_string(dir.join(INDEX))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["metadata"]["generator"] == GENERATOR)
}

/// Run `synth`.
pub fn run(args: &SynthArgs) -> Result<()> {
    let cfg = gemma4::config::Gemma4Config::from_file(&args.config).map_err(|e| UsageError {
        flag: "--config",
        reason: e.to_string(),
    })?;
    // same publishing rules as a build: staged beside --out (pid in the name), locked, swapped in
    let rules = mlpackage::publish::Rules {
        flag: "--out",
        force: args.force,
        protected: vec![("the config file", args.config.clone())],
        is_ours: &is_synth_checkpoint,
        marker: "model.safetensors.index.json written by gemma-convert synth",
        companions: Vec::new(),
    };
    let publisher = mlpackage::publish::Publisher::begin(&args.out, &rules)?;
    for n in publisher.notes() {
        eprintln!("note: {n}");
    }
    let specs = gemma4::layout::expected_tensors(&cfg)?;
    let prefix = if cfg.is_nested() {
        "model.language_model."
    } else {
        "model."
    };
    let full = |n: &str| {
        if n == gemma4::layout::LM_HEAD {
            n.to_string()
        } else {
            format!("{prefix}{n}")
        }
    };
    // assign tensors to shards in order
    let mut shards: Vec<Vec<&gemma4::layout::TensorSpec>> = vec![Vec::new()];
    let mut cur = 0u64;
    for s in &specs {
        let bytes = 2 * s.shape.iter().product::<usize>() as u64;
        if cur > 0 && cur + bytes > args.shard_bytes {
            shards.push(Vec::new());
            cur = 0;
        }
        cur += bytes;
        if let Some(last) = shards.last_mut() {
            last.push(s);
        }
    }
    let staging = publisher.dir().to_path_buf();
    let total = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total_bytes = 0u64;
    for (si, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", si + 1, total);
        let mut header = serde_json::Map::new();
        let mut off = 0usize;
        for s in shard {
            let n = 2 * s.shape.iter().product::<usize>();
            header.insert(
                full(&s.name),
                json!({"dtype": "BF16", "shape": s.shape, "data_offsets": [off, off + n]}),
            );
            weight_map.insert(full(&s.name), json!(file));
            off += n;
        }
        header.insert("__metadata__".into(), json!({"format": "pt", "generator": "gemma-convert synth", "seed": args.seed.to_string()}));
        let mut h = serde_json::to_vec(&serde_json::Value::Object(header))?;
        while (8 + h.len()) % 8 != 0 {
            h.push(b' ');
        }
        let path = staging.join(&file);
        let mut w = std::io::BufWriter::with_capacity(
            1 << 22,
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        let write = |w: &mut std::io::BufWriter<std::fs::File>| -> std::io::Result<()> {
            w.write_all(&(h.len() as u64).to_le_bytes())?;
            w.write_all(&h)?;
            for s in shard {
                w.write_all(&fill(&full(&s.name), &s.shape, args.seed))?;
            }
            w.flush()?;
            w.get_ref().sync_all()
        };
        write(&mut w).with_context(|| format!("writing {}", path.display()))?;
        total_bytes += (8 + h.len() + off) as u64;
        eprintln!("  wrote {file} ({} tensors)", shard.len());
    }
    let index = json!({
        "metadata": {"total_size": total_bytes, "generator": GENERATOR},
        "weight_map": weight_map,
    });
    let index_path = staging.join(INDEX);
    std::fs::write(&index_path, serde_json::to_string_pretty(&index)?)
        .with_context(|| format!("writing {}", index_path.display()))?;
    std::fs::copy(&args.config, staging.join("config.json"))
        .with_context(|| format!("copying {}", args.config.display()))?;
    let published = publisher.commit()?;
    for w in &published.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "synth: {} tensors, {:.2} GB in {} shards → {}",
        specs.len(),
        total_bytes as f64 / 1e9,
        total,
        args.out.display()
    );
    Ok(())
}
