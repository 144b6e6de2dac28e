//! `gemma-convert fidelity`: the fp16 fidelity benchmark (docs/FIDELITY.md).
//!
//! Runs every sequence of a reference file (made by `scripts/fidelity_reference.py`: N seeded random
//! sequences with the logits of an fp64 HF forward and of HF's own fp16 forward at every position,
//! and HF fp16's figures per position; the CI gate's references carry the figures only, their fp64
//! logits recomputed by `scripts/fidelity_fp64.py`)
//! through the chunk set's host decode loop (a fresh session per sequence, one `decode_q1` step per
//! token), and compares our logits and HF fp16's with the fp64 ones at every position: mean KL
//! (fp64 as P), mean |Δlogit| and top-1 agreement per sequence, then means with 95 % intervals
//! across sequences and the paired ratio ours / HF fp16 ([`mil_runtime::fidelity`]).
//!
//! `--max-kl-ratio R` turns it into a check (exit 1 when mean KL(ours) > R × mean KL(HF fp16), or
//! when the in-graph `token_id` is not the argmax of our logits somewhere).
//!
//! The reference names the checkpoint it was computed from by a content key (`model_sha256`, see
//! [`model_key`]); a reference of another checkpoint is refused (exit 2). For an INT4 set, give
//! the checkpoint of its graph weights (`gemma-convert graph-weights`) as `--model` and a reference
//! computed from it: that isolates the fp16 compute error from the quantisation error.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use gemma4::Checkpoint;
use gemma4::st::StFile;
use mil_runtime::chunkset::{ChunkSet, Embedder, SideFileEmbedder};
use mil_runtime::fidelity::{Paired, SequenceFigures};
use mil_runtime::parity::{Comparator, argmax};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::exit::{CheckFailed, UsageError};
use crate::parity::{BackendArg, CheckpointEmbedder};

/// Where token embeddings come from (one run: the benchmark compares numerics, not side files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FidelityEmbeddings {
    /// The checkpoint's tables, exact (what HF computes).
    Checkpoint,
    /// The set's int8 side files (what the device runtime computes).
    Side,
}

/// Arguments of `gemma-convert fidelity`.
#[derive(Debug, Args)]
pub struct FidelityArgs {
    /// The checkpoint directory the reference was computed from (embeddings are read from it).
    #[arg(long)]
    pub model: PathBuf,
    /// The chunk set directory.
    #[arg(long)]
    pub chunks: PathBuf,
    /// Reference file from `scripts/fidelity_reference.py` (`input_ids`, `fp64_logits`,
    /// `hf_fp16_logits`).
    #[arg(long)]
    pub reference: PathBuf,
    /// Use only the first K sequences of the reference (default: all).
    #[arg(long)]
    pub sequences: Option<usize>,
    /// Embedding source.
    #[arg(long, value_enum, default_value_t = FidelityEmbeddings::Checkpoint)]
    pub embeddings: FidelityEmbeddings,
    /// Backend that runs the chunks.
    #[arg(long, value_enum, default_value_t = BackendArg::Interpreter)]
    pub backend: BackendArg,
    /// Fail (exit 1) when mean KL(ours) exceeds this multiple of HF fp16's on the same sequences.
    #[arg(long)]
    pub max_kl_ratio: Option<f64>,
    /// Print one JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Content key of a checkpoint directory: sha256 over `config.json`,
/// `model.safetensors.index.json` (if present) and every `*.safetensors`, in byte order of their
/// names, each fed as name, NUL, size (u64 little-endian), contents. `scripts/fidelity_reference.py`
/// computes the same key.
pub fn model_key(dir: &Path) -> Result<String> {
    let mut names = vec!["config.json".to_string()];
    let rd = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for e in rd {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(".safetensors") || n == "model.safetensors.index.json" {
            names.push(n);
        }
    }
    names.sort();
    names.dedup();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for n in &names {
        let p = dir.join(n);
        let mut f = std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("reading {}", p.display()))?
            .len();
        h.update(n.as_bytes());
        h.update([0u8]);
        h.update(len.to_le_bytes());
        loop {
            let k = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", p.display()))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// HF fp16's figures at every position (`[N·S]` row-major), as the reference file states them.
struct HfFigures {
    kl: Vec<f32>,
    mean_abs: Vec<f32>,
    top1: Vec<i64>,
}

/// A loaded reference file.
struct Reference {
    n: usize,
    s: usize,
    v: usize,
    ids: Vec<u32>,
    fp64: Vec<f32>,
    /// HF's fp16 logits (full references).
    hf16: Option<Vec<f32>>,
    /// HF's fp16 figures per position (every reference written by the current script; the only
    /// HF data of the CI gate's references).
    hf_figures: Option<HfFigures>,
    meta: std::collections::BTreeMap<String, String>,
}

fn bad_reference(path: &Path, reason: impl std::fmt::Display) -> UsageError {
    UsageError {
        flag: "--reference",
        reason: format!("{}: {reason}", path.display()),
    }
}

/// Load a reference computed from the checkpoint whose [`model_key`] is `key`.
fn load_reference(path: &Path, key: &str, model: &Path) -> Result<Reference> {
    let f = StFile::open(path).map_err(|e| bad_reference(path, e))?;
    let bad = |e: gemma4::Error| bad_reference(path, e);
    let stated = f
        .metadata()
        .get("model_sha256")
        .cloned()
        .unwrap_or_default();
    if stated != key {
        return Err(bad_reference(
            path,
            format!(
                "computed from another checkpoint (model_sha256 {}…, {} has {}…)",
                stated.get(..12).unwrap_or("none"),
                model.display(),
                &key[..12]
            ),
        )
        .into());
    }
    let (ishape, ids) = f.read_i64("input_ids").map_err(bad)?;
    let [n, s] = ishape[..] else {
        return Err(bad_reference(
            path,
            format!("input_ids has shape {ishape:?}, expected [N, S]"),
        )
        .into());
    };
    if n == 0 || s == 0 {
        return Err(bad_reference(path, "no sequences").into());
    }
    let has = |name: &str| f.entries().contains_key(name);
    if !has("fp64_logits") {
        return Err(bad_reference(
            path,
            "no fp64_logits (a CI gate fixture? complete it with scripts/fidelity_fp64.py)",
        )
        .into());
    }
    let (fshape, fp64) = f.read_f32("fp64_logits").map_err(bad)?;
    let v = fshape.get(2).copied().unwrap_or(0);
    if fshape[..] != [n, s, v] || v == 0 {
        return Err(bad_reference(
            path,
            format!("fp64_logits has shape {fshape:?}, expected [{n}, {s}, V]"),
        )
        .into());
    }
    let hf16 = if has("hf_fp16_logits") {
        let (hshape, hf16) = f.read_f32("hf_fp16_logits").map_err(bad)?;
        if hshape != fshape {
            return Err(bad_reference(
                path,
                format!("hf_fp16_logits has shape {hshape:?}, fp64_logits {fshape:?}"),
            )
            .into());
        }
        Some(hf16)
    } else {
        None
    };
    let hf_figures = if has("hf_fp16_kl") {
        let per_position = |name: &str, shape: Vec<usize>| -> Result<()> {
            if shape[..] != [n, s] {
                return Err(bad_reference(
                    path,
                    format!("{name} has shape {shape:?}, expected [{n}, {s}]"),
                )
                .into());
            }
            Ok(())
        };
        let (ks, kl) = f.read_f32("hf_fp16_kl").map_err(bad)?;
        per_position("hf_fp16_kl", ks)?;
        let (ms, mean_abs) = f.read_f32("hf_fp16_mean_abs").map_err(bad)?;
        per_position("hf_fp16_mean_abs", ms)?;
        let (ts, top1) = f.read_i64("hf_fp16_top1").map_err(bad)?;
        per_position("hf_fp16_top1", ts)?;
        Some(HfFigures { kl, mean_abs, top1 })
    } else {
        None
    };
    if hf16.is_none() && hf_figures.is_none() {
        return Err(bad_reference(
            path,
            "neither hf_fp16_logits nor the hf_fp16_kl / _mean_abs / _top1 figures",
        )
        .into());
    }
    let ids = ids
        .iter()
        .map(|&t| {
            u32::try_from(t)
                .ok()
                .filter(|&t| (t as usize) < v)
                .ok_or_else(|| bad_reference(path, format!("token id {t} outside 0..{v}")))
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let meta = f.metadata().clone();
    Ok(Reference {
        n,
        s,
        v,
        ids,
        fp64,
        hf16,
        hf_figures,
        meta,
    })
}

/// HF fp16's figures of sequence `q`: from its logits when the reference has them (checked against
/// the stated figures when it has both), else the stated figures. Returns the figures and the
/// per-position KL.
fn hf_sequence(
    reference: &Reference,
    path: &Path,
    q: usize,
) -> Result<(SequenceFigures, Vec<f64>)> {
    let (s, v) = (reference.s, reference.v);
    let stated = reference.hf_figures.as_ref();
    let Some(hf16) = &reference.hf16 else {
        let st = stated.context("no HF fp16 data")?;
        let r = q * s..(q + 1) * s;
        let kl: Vec<f64> = st.kl[r.clone()].iter().map(|&x| f64::from(x)).collect();
        let fig = SequenceFigures {
            kl: kl.iter().sum::<f64>() / s as f64,
            mean_abs: st.mean_abs[r.clone()]
                .iter()
                .map(|&x| f64::from(x))
                .sum::<f64>()
                / s as f64,
            top1: st.top1[r].iter().filter(|&&t| t != 0).count() as f64 / s as f64,
        };
        return Ok((fig, kl));
    };
    let mut cmp = Comparator::new();
    for p in 0..s {
        let row = (q * s + p) * v;
        let hf_row = &hf16[row..row + v];
        cmp.add_at(p, hf_row, &reference.fp64[row..row + v], argmax(hf_row));
    }
    let m = cmp.metrics();
    if let Some(st) = stated {
        for (p, pm) in m.per_position.iter().enumerate() {
            let i = q * s + p;
            let abs = f64::from(st.mean_abs[i]);
            let mean_abs = {
                let row = i * v;
                hf16[row..row + v]
                    .iter()
                    .zip(&reference.fp64[row..row + v])
                    .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
                    .sum::<f64>()
                    / v as f64
            };
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * a.abs().max(b.abs()) + 1e-9;
            if !close(pm.kl, f64::from(st.kl[i]))
                || !close(mean_abs, abs)
                || pm.top1_agree != (st.top1[i] != 0)
            {
                return Err(bad_reference(
                    path,
                    format!(
                        "the stated HF fp16 figures disagree with its logits at sequence {q}, position {p} \
                         (KL {:.6e} vs {:.6e}, mean |Δ| {mean_abs:.6e} vs {abs:.6e}, top-1 {} vs {})",
                        pm.kl, st.kl[i], pm.top1_agree, st.top1[i]
                    ),
                )
                .into());
            }
        }
    }
    let kl = m.per_position.iter().map(|p| p.kl).collect();
    Ok((SequenceFigures::of(&m), kl))
}

/// Per-position mean KL over sequences (ours, HF fp16).
struct PositionProfile {
    ours: Vec<f64>,
    hf: Vec<f64>,
}

/// Run the benchmark.
pub fn run(args: &FidelityArgs) -> Result<()> {
    if let Some(r) = args.max_kl_ratio
        && !(r.is_finite() && r > 0.0)
    {
        return Err(UsageError {
            flag: "--max-kl-ratio",
            reason: format!("{r} is not a positive number"),
        }
        .into());
    }
    if !args.model.join("config.json").is_file() {
        return Err(UsageError {
            flag: "--model",
            reason: format!(
                "{}: no config.json (not a checkpoint)",
                args.model.display()
            ),
        }
        .into());
    }
    // the set passes `verify` first and stays under its shared lock while it is read, as for
    // `parity` and `bench` (not a set: exit 2; a finding: exit 1 naming the file)
    let _checked = crate::verify_cmd::check_set(&args.chunks, args.json)?;
    let key = model_key(&args.model)?;
    let reference = load_reference(&args.reference, &key, &args.model)?;
    let k = match args.sequences {
        None => reference.n,
        Some(k) if (1..=reference.n).contains(&k) => k,
        Some(k) => {
            return Err(UsageError {
                flag: "--sequences",
                reason: format!("{k}: the reference holds 1..={} sequences", reference.n),
            }
            .into());
        }
    };
    let mut set = ChunkSet::open(&args.chunks, args.backend.kind()?)
        .with_context(|| format!("loading {}", args.chunks.display()))?;
    let cfg = set.config().clone();
    if cfg.vocab_size != reference.v {
        return Err(bad_reference(
            &args.reference,
            format!(
                "vocabulary {} but the set's is {}",
                reference.v, cfg.vocab_size
            ),
        )
        .into());
    }
    if reference.s > cfg.context_length {
        return Err(bad_reference(
            &args.reference,
            format!(
                "sequences of {} tokens do not fit the set's context of {}",
                reference.s, cfg.context_length
            ),
        )
        .into());
    }
    let side;
    let exact;
    let embedder: &dyn Embedder = match args.embeddings {
        FidelityEmbeddings::Checkpoint => {
            let ckpt = Checkpoint::open(&args.model)
                .with_context(|| format!("opening {}", args.model.display()))?;
            exact = CheckpointEmbedder::new(ckpt);
            &exact
        }
        FidelityEmbeddings::Side => {
            side = SideFileEmbedder::open(&args.chunks, set.config())?;
            &side
        }
    };

    let (s, v) = (reference.s, reference.v);
    let mut ours_seq = Vec::with_capacity(k);
    let mut hf_seq = Vec::with_capacity(k);
    let mut prof = PositionProfile {
        ours: vec![0.0; s],
        hf: vec![0.0; s],
    };
    let mut id_mismatch = 0usize;
    let t0 = std::time::Instant::now();
    for q in 0..k {
        let mut ours = Comparator::new();
        let mut session = set.session();
        for p in 0..s {
            let row = (q * s + p) * v;
            let want = &reference.fp64[row..row + v];
            let out = session
                .step(reference.ids[q * s + p], embedder, true)
                .with_context(|| format!("sequence {q}, position {p}"))?;
            let got = out.logits.context("the head chunk returned no logits")?;
            ours.add_at(p, &got, want, out.token_id as usize);
        }
        let mo = ours.metrics();
        let (hf_fig, hf_kl) = hf_sequence(&reference, &args.reference, q)?;
        id_mismatch += mo.token_id_mismatches;
        for (p, (a, b)) in mo.per_position.iter().zip(&hf_kl).enumerate() {
            prof.ours[p] += a.kl / k as f64;
            prof.hf[p] += b / k as f64;
        }
        ours_seq.push(SequenceFigures::of(&mo));
        hf_seq.push(hf_fig);
    }
    let secs = t0.elapsed().as_secs_f64();
    let paired = Paired::of(&ours_seq, &hf_seq);
    let verdict = args.max_kl_ratio.map(|r| {
        if id_mismatch > 0 {
            Err(format!(
                "token_id differs from the argmax of the logits at {id_mismatch} position(s)"
            ))
        } else {
            paired.gate(r)
        }
    });
    let attn = reference
        .meta
        .get("hf_fp16_attn_implementation")
        .cloned()
        .unwrap_or_else(|| "?".into());
    let precision = cfg.precision.name().to_string();
    let quant = cfg.quantization.clone();
    if args.json {
        let j = json!({
            "chunks": args.chunks.display().to_string(),
            "variant": cfg.variant,
            "precision": precision,
            "quantization": quant,
            "backend": set.backend_name(),
            "embeddings": match args.embeddings { FidelityEmbeddings::Checkpoint => "checkpoint", FidelityEmbeddings::Side => "side" },
            "reference": args.reference.display().to_string(),
            "reference_key": reference.meta.get("key"),
            "hf_fp16_attn_implementation": attn,
            "sequences": k,
            "positions_per_sequence": s,
            "ours": paired.ours,
            "hf_fp16": paired.baseline,
            "kl_ratio": paired.kl_ratio,
            "kl_ratio_per_sequence": paired.kl_ratio_per_sequence,
            "mean_abs_ratio": paired.mean_abs_ratio,
            "token_id_mismatches": id_mismatch,
            "per_position_kl": { "ours": prof.ours, "hf_fp16": prof.hf },
            "per_sequence": { "ours": ours_seq, "hf_fp16": hf_seq },
            "seconds": secs,
            "max_kl_ratio": args.max_kl_ratio,
            "pass": verdict.as_ref().map(|v| v.is_ok()),
            "failure": verdict.as_ref().and_then(|v| v.as_ref().err()),
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "fidelity {} ({}, {precision}, {quant}, {}) vs the fp64 HF forward: {k} sequences × {s} positions ({:.1} s)",
            args.chunks.display(),
            cfg.variant,
            set.backend_name(),
            secs
        );
        let row = |name: &str, m: &mil_runtime::fidelity::Summary| {
            println!(
                "  {name:<16} mean KL {:.5} [{:.5}, {:.5}]   mean |Δlogit| {:.4} [{:.4}, {:.4}]   top-1 {:.2}% [{:.2}, {:.2}]",
                m.kl.mean,
                m.kl.lo,
                m.kl.hi,
                m.mean_abs.mean,
                m.mean_abs.lo,
                m.mean_abs.hi,
                100.0 * m.top1.mean,
                100.0 * m.top1.lo,
                100.0 * m.top1.hi
            );
        };
        row("ours", &paired.ours);
        row(&format!("HF fp16 ({attn})"), &paired.baseline);
        let fmt = |r: Option<mil_runtime::fidelity::RatioEstimate>| match r {
            Some(r) => format!("×{:.3} [{:.3}, {:.3}]", r.ratio, r.lo, r.hi),
            None => "undefined".into(),
        };
        println!(
            "  paired ours/HF fp16: mean KL {}, per sequence (geometric) {}, mean |Δlogit| {}",
            fmt(paired.kl_ratio),
            fmt(paired.kl_ratio_per_sequence),
            fmt(paired.mean_abs_ratio)
        );
        if id_mismatch > 0 {
            println!(
                "  token_id differs from the argmax of the logits at {id_mismatch} position(s)"
            );
        }
        if let (Some(r), Some(v)) = (args.max_kl_ratio, &verdict) {
            println!(
                "  gate: mean KL ≤ ×{r} HF fp16's → {}",
                if v.is_ok() { "PASS" } else { "FAIL" }
            );
        }
    }
    match verdict {
        Some(Err(why)) => Err(CheckFailed(format!("fidelity: {why}")).into()),
        _ => Ok(()),
    }
}

/// Arguments of `gemma-convert graph-weights`.
#[derive(Debug, Args)]
pub struct GraphWeightsArgs {
    /// The checkpoint the set was built from.
    #[arg(long)]
    pub model: PathBuf,
    /// The chunk set directory (its manifest.json gives the build settings).
    #[arg(long)]
    pub chunks: PathBuf,
    /// Output directory (must not exist, or be empty): `config.json` (untied Gemma4ForCausalLM)
    /// and `model.safetensors` (f32).
    #[arg(long)]
    pub out: PathBuf,
}

/// Write the graph-weights checkpoint of a set: palettized projections as their dequantised LUT
/// values, other graph weights rounded to the graph dtype, the host's embedding tables exact. A
/// reference computed from it (`scripts/fidelity_reference.py --model OUT`) measures an INT4 set's
/// fp16 compute error separately from its quantisation error.
pub fn graph_weights(args: &GraphWeightsArgs) -> Result<()> {
    if args.out.exists() {
        let empty = args.out.is_dir()
            && std::fs::read_dir(&args.out)
                .with_context(|| format!("reading {}", args.out.display()))?
                .next()
                .is_none();
        if !empty {
            return Err(UsageError {
                flag: "--out",
                reason: format!(
                    "{} exists and is not an empty directory",
                    args.out.display()
                ),
            }
            .into());
        }
    }
    if !args.chunks.join("manifest.json").is_file() {
        return Err(UsageError {
            flag: "--chunks",
            reason: format!(
                "{}: no manifest.json (not a chunk set)",
                args.chunks.display()
            ),
        }
        .into());
    }
    let ckpt = Checkpoint::open(&args.model)
        .with_context(|| format!("opening {}", args.model.display()))?;
    let parent = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stage = tempfile::Builder::new()
        .prefix(".graph-weights-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    crate::parity::write_graph_weights(&ckpt, &args.chunks, stage.path())?;
    if args.out.exists() {
        std::fs::remove_dir(&args.out)
            .with_context(|| format!("replacing the empty {}", args.out.display()))?;
    }
    let staged = stage.keep();
    if let Err(e) = std::fs::rename(&staged, &args.out) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(anyhow::Error::new(e)
            .context(format!("moving the checkpoint to {}", args.out.display())));
    }
    println!(
        "graph weights of {} → {}",
        args.chunks.display(),
        args.out.display()
    );
    Ok(())
}
