//! Side files of a published chunk set (what the on-device runtime reads besides the chunks):
//!
//! | file | content |
//! |---|---|
//! | `embed_tokens_q8.bin` / `embed_tokens_scales.bin` | int8 `[V, H]` row-major / fp16 `[V]` per-row max-abs |
//! | `embed_tokens_per_layer_q8.bin` / `..._scales.bin` | int8 `[Vp, L·P]` / fp16 `[Vp]` |
//! | `per_layer_projection.bin` | fp16 `[L·P, H]` row-major |
//! | `per_layer_norm_weight.bin` | fp16 `[P]` |
//! | `cos_sliding.npy`, `sin_sliding.npy`, `cos_full.npy`, `sin_full.npy` | fp16 `[max(2C, 4096), D]` HF-correct RoPE rows (fp32 in `--precision fp32` builds) |
//! | `model_config.json` | every field the Swift runtime reads, plus our plan facts |
//! | `hf_model/` | config.json and the tokenizer files of the checkpoint, whatever exists |
//!
//! INT8 recipe (the reference runtime's): per row `s = max|w|` stored fp16, `q = round(w·127/s)`
//! clamped to ±127; dequantised on device as `q·s/127·scale` (scale = √H or √P). Tables are
//! quantised in slabs of rows so memory stays bounded whatever the vocabulary.

use crate::error::{ExportError, Result};
use crate::layout::{LayerKind, layer_type};
use crate::plan::{ChunkPlan, ChunkSpec};
use crate::weights::{WeightSource, decode_rows_f32};
use chunkset::HashingWriter;
use chunkset::manifest::FileEntry;
use chunkset::model_config::{self, ChunkEntry, ModelConfig, PrefillChunkEntry};
use chunkset::names::{self, RopeTable};
use chunkset::{Functions, MODEL_CONFIG_NAME, Precision, VERIFY_FN};
use half::f16;
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;

/// Rows quantised per slab (one slab is written while the next is computed).
const SLAB_ROWS: usize = 4096;
/// Rows per parallel task within a slab.
const TASK_ROWS: usize = 64;

/// Files copied into `hf_model/` when present in the checkpoint directory.
pub const HF_FILES: [&str; 7] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "chat_template.jinja",
];

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(io_err(path))
}

fn f16_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter()
        .flat_map(|x| f16::from_f32(x).to_le_bytes())
        .collect()
}

/// Quantise the `[rows, cols]` table `key` slab by slab into `<stem>_q8.bin` and `<stem>_scales.bin`;
/// returns both files' manifest entries (hashed while written).
///
/// A checkpoint's stored bytes are decoded and quantised in parallel blocks of rows straight from
/// its memory map (no f32 copy of a slab); a writer thread writes and hashes each finished slab
/// while the next one is computed. The bytes are the same whatever the thread count: rows are
/// independent and slabs are written in order.
fn write_int8_table(
    dir: &Path,
    stem: &str,
    src: &dyn WeightSource,
    key: &str,
    rows: usize,
    cols: usize,
    pool: Option<&rayon::ThreadPool>,
) -> Result<Vec<FileEntry>> {
    let (q8, scales) = names::int8_files(stem);
    let (qp, sp) = (dir.join(&q8), dir.join(&scales));
    let stored = src.stored(key)?;
    if let Some(raw) = &stored
        && (raw.shape.len() != 2 || raw.shape[0] < rows || raw.shape[1] != cols)
    {
        return Err(ExportError::Shape {
            tensor: key.to_string(),
            expected: vec![rows, cols],
            found: raw.shape.clone(),
        });
    }
    let qf = std::fs::File::create(&qp).map_err(io_err(&qp))?;
    let sf = std::fs::File::create(&sp).map_err(io_err(&sp))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<i8>, Vec<f16>)>(1);
    let quantize = |start: usize, q: &mut [i8], s: &mut [f16]| -> Result<()> {
        let pe = |source| ExportError::Palettize {
            tensor: key.to_string(),
            source,
        };
        let Some(raw) = &stored else {
            let slab = src.load_rows(key, start, s.len(), cols)?;
            return palettize::quantize_rows_into(key, &slab, cols, q, s, start, None).map_err(pe);
        };
        let results: Vec<Result<()>> = q
            .par_chunks_mut(TASK_ROWS * cols)
            .zip(s.par_chunks_mut(TASK_ROWS))
            .enumerate()
            .map_init(Vec::new, |f: &mut Vec<f32>, (b, (qb, sb))| {
                let first = start + b * TASK_ROWS;
                f.resize(qb.len(), 0.0);
                decode_rows_f32(raw, cols, first, f)?;
                palettize::quantize_rows_into(key, f, cols, qb, sb, first, None).map_err(pe)
            })
            .collect();
        results.into_iter().collect()
    };
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<[FileEntry; 2]> {
            let mut qw = HashingWriter::new(std::io::BufWriter::new(qf));
            let mut sw = HashingWriter::new(std::io::BufWriter::new(sf));
            for (q, s) in rx {
                qw.write_all(bytemuck::cast_slice(&q))
                    .map_err(io_err(&qp))?;
                let sb: Vec<u8> = s.iter().flat_map(|x| x.to_le_bytes()).collect();
                sw.write_all(&sb).map_err(io_err(&sp))?;
            }
            let (mut qb, qsize, qsha) = qw.finish();
            qb.flush().map_err(io_err(&qp))?;
            let (mut sb, ssize, ssha) = sw.finish();
            sb.flush().map_err(io_err(&sp))?;
            Ok([
                FileEntry {
                    path: q8,
                    size: qsize,
                    sha256: qsha,
                },
                FileEntry {
                    path: scales,
                    size: ssize,
                    sha256: ssha,
                },
            ])
        });
        let produced = (|| -> Result<()> {
            let mut start = 0;
            while start < rows {
                let n = SLAB_ROWS.min(rows - start);
                let mut q = vec![0i8; n * cols];
                let mut s = vec![f16::ZERO; n];
                match pool {
                    Some(p) => p.install(|| quantize(start, &mut q, &mut s))?,
                    None => quantize(start, &mut q, &mut s)?,
                }
                if tx.send((q, s)).is_err() {
                    // the writer stopped on an error, reported below
                    break;
                }
                start += n;
            }
            Ok(())
        })();
        drop(tx);
        let written = writer
            .join()
            .map_err(|_| ExportError::Internal(format!("writer of {stem} panicked")))?;
        produced?;
        Ok(written?.to_vec())
    })
}

/// Rows of the RoPE side tables for context `ctx` (the reference builder's rule).
pub fn rope_rows(ctx: usize) -> usize {
    (2 * ctx).max(4096)
}

/// Facts of the build that `model_config.json` records beyond the plan.
#[derive(Clone, Debug)]
pub struct SetFacts<'a> {
    /// `model_name`.
    pub model_name: &'a str,
    /// `quantization` (`int4`, `fp16`, ...).
    pub quantization: &'a str,
    /// The functions built (`verify_k`, `prefill_length`).
    pub functions: &'a Functions,
    /// The prefill packages, when built.
    pub prefill_chunks: &'a [ChunkSpec],
}

/// Write every side file of the set into `dir`. `model_dir` (the checkpoint directory) provides the
/// files copied into `hf_model/`.
pub fn write_side_files(
    dir: &Path,
    plan: &ChunkPlan,
    cfg: &gemma4::config::Gemma4Config,
    src: &dyn WeightSource,
    model_dir: Option<&Path>,
    facts: &SetFacts<'_>,
    pool: Option<&rayon::ThreadPool>,
) -> Result<Vec<FileEntry>> {
    let lay = &plan.layout;
    let (h, l, p, v) = (lay.hidden, lay.num_layers(), lay.ple_dim, lay.vocab);
    let mut hashed = write_int8_table(
        dir,
        names::EMBED_TOKENS,
        src,
        "embed_tokens.weight",
        v,
        h,
        pool,
    )?;
    if p > 0 {
        let vp = cfg.vocab_size_per_layer_input();
        hashed.extend(write_int8_table(
            dir,
            names::EMBED_TOKENS_PER_LAYER,
            src,
            "embed_tokens_per_layer.weight",
            vp,
            l * p,
            pool,
        )?);
        let proj = src.load_rows("per_layer_model_projection.weight", 0, l * p, h)?;
        write_file(
            &dir.join(names::PER_LAYER_PROJECTION_FILE),
            &f16_bytes(proj),
        )?;
        let norm = src.load_rows("per_layer_projection_norm.weight", 0, 1, p)?;
        write_file(&dir.join(names::PER_LAYER_NORM_FILE), &f16_bytes(norm))?;
    }

    let rows = rope_rows(plan.ctx);
    for kind in LayerKind::ALL {
        let t = layer_type(kind);
        let Some(_) = cfg.head_dim_of_type(t) else {
            continue;
        };
        let table = gemma4::rope::RopeTable::new(cfg, t)?;
        let (cos, sin) = table.cos_sin(0, rows);
        for (name, v) in [(RopeTable::Cos, cos), (RopeTable::Sin, sin)] {
            // fp16 like the shipped tables; fp32 builds (not for the Neural Engine) keep exact rows.
            let bytes = if plan.fp32 {
                super::npy::encode_f32_2d(rows, table.head_dim, &v)
            } else {
                let h: Vec<f16> = v.into_iter().map(f16::from_f32).collect();
                super::npy::encode_f16_2d(rows, table.head_dim, &h)
            };
            write_file(&dir.join(kind.rope_file(name)), &bytes)?;
        }
    }

    let text = model_config(plan, cfg, facts).to_json()?;
    write_file(&dir.join(MODEL_CONFIG_NAME), text.as_bytes())?;

    if let Some(md) = model_dir {
        let hf = dir.join(names::HF_MODEL_DIR);
        std::fs::create_dir_all(&hf).map_err(io_err(&hf))?;
        for f in HF_FILES {
            let s = md.join(f);
            if s.is_file() {
                let d = hf.join(f);
                std::fs::copy(&s, &d).map_err(io_err(&s))?;
            }
        }
    }
    Ok(hashed)
}

/// `model_config.json` of a set: the fields the Swift runtime reads (names as it spells them), plus
/// the plan facts our own runtime uses (`variant`, `chunks` with their KV slot maps, cache lengths and
/// policies, RoPE rows) and, only when those functions are built (so a decode-only set is unchanged),
/// `verify_k` / `verify_function` and `prefill_length` / `prefill_chunks` (name, layers, the layer
/// behind each K/V output) / `prefill_sliding_mask` (sliding layers use `causal_mask` plus an
/// in-graph window band).
pub fn model_config(
    plan: &ChunkPlan,
    cfg: &gemma4::config::Gemma4Config,
    facts: &SetFacts<'_>,
) -> ModelConfig {
    let lay = &plan.layout;
    let h = lay.hidden as f64;
    let p = lay.ple_dim as f64;
    let eos = cfg.eos_token_ids();
    let prefill = facts.functions.prefill;
    ModelConfig {
        model_name: facts.model_name.to_string(),
        architecture: model_config::ARCHITECTURE.into(),
        hidden_size: lay.hidden,
        num_hidden_layers: lay.num_layers(),
        num_layers: lay.num_layers(),
        num_attention_heads: lay.num_heads,
        num_key_value_heads: lay
            .kv_heads(LayerKind::Sliding)
            .or(lay.kv_heads(LayerKind::Full)),
        head_dim: lay.head_dim(LayerKind::Sliding),
        global_head_dim: lay.head_dim(LayerKind::Full),
        vocab_size: lay.vocab,
        vocab_size_per_layer_input: cfg.vocab_size_per_layer_input(),
        context_length: plan.ctx,
        sliding_window: lay.sliding_window,
        per_layer_dim: lay.ple_dim,
        num_kv_shared_layers: lay.num_layers() - lay.first_shared(),
        layer_types: lay.layers.iter().map(|x| x.kind).collect(),
        embed_scale: h.sqrt(),
        per_layer_embed_scale: p.sqrt(),
        per_layer_model_projection_scale: 1.0 / h.sqrt(),
        per_layer_input_scale: std::f64::consts::FRAC_1_SQRT_2,
        rms_norm_eps: lay.rms_norm_eps,
        bos_token_id: cfg.bos_token_id(),
        eos_token_id: eos.first().copied(),
        eos_token_ids: eos.to_vec(),
        pad_token_id: cfg.pad_token_id(),
        final_logit_softcapping: lay.final_logit_softcapping,
        quantization: facts.quantization.to_string(),
        compute_units: model_config::COMPUTE_UNITS.into(),
        tokenizer_repo: names::HF_MODEL_DIR.into(),
        precision: Precision::from_fp32(plan.fp32),
        variant: plan.variant.name().into(),
        chunks: plan
            .chunks
            .iter()
            .map(|c| ChunkEntry {
                name: c.name.clone(),
                layers: c.layer_bounds(),
                kv_slots: c.kv_slots.clone(),
            })
            .collect(),
        sliding_cache_length: plan.sliding_cache.len(),
        full_cache_length: plan.full_cache.len(),
        sliding_cache_policy: plan.sliding_cache.kind(),
        full_cache_policy: plan.full_cache.kind(),
        rope_rows: rope_rows(plan.ctx),
        rope: model_config::ROPE_HF.into(),
        verify_k: facts.functions.verify,
        verify_function: facts.functions.verify.map(|_| VERIFY_FN.into()),
        prefill_length: prefill,
        prefill_sliding_mask: prefill.map(|_| model_config::PREFILL_SLIDING_MASK.into()),
        prefill_chunks: prefill.map(|_| {
            facts
                .prefill_chunks
                .iter()
                .map(|c| PrefillChunkEntry {
                    name: c.name.clone(),
                    layers: c.layer_bounds(),
                    kv: plan.prefill_kv_outputs(c),
                })
                .collect()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma4::checkpoint::RawTensor;
    use gemma4::st::StDtype;

    /// A bf16 table served either as stored bytes (as a checkpoint does) or only through `load`.
    struct Table {
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
        stored: bool,
    }

    impl WeightSource for Table {
        fn load(&self, _key: &str) -> Result<(Vec<usize>, Vec<f32>)> {
            let v = self
                .bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect();
            Ok((vec![self.rows, self.cols], v))
        }

        fn stored(&self, _key: &str) -> Result<Option<RawTensor<'_>>> {
            Ok(self.stored.then(|| RawTensor {
                dtype: StDtype::BF16,
                shape: vec![self.rows, self.cols],
                bytes: &self.bytes,
                file: Path::new("table.safetensors"),
                name: "t".into(),
            }))
        }
    }

    #[test]
    fn int8_tables_are_the_same_bytes_from_stored_rows_or_loaded_slabs_at_any_thread_count() {
        // more than one slab, a last slab and a last task that are partial, one all-zero row
        let (rows, cols) = (SLAB_ROWS + 100, 24);
        let mut v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i as f32) * 0.377).sin() * (1.0 + (i / cols % 13) as f32))
            .collect();
        v[5 * cols..6 * cols].fill(0.0);
        // the values as stored (bf16)
        for x in &mut v {
            *x = half::bf16::from_f32(*x).to_f32();
        }
        let bytes: Vec<u8> = v
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect();
        let mut outputs = Vec::new();
        for (stored, threads) in [(false, 1), (true, 1), (true, 2)] {
            let src = Table {
                rows,
                cols,
                bytes: bytes.clone(),
                stored,
            };
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let entries =
                write_int8_table(dir.path(), "t", &src, "t", rows, cols, Some(&pool)).unwrap();
            let (q8, scales) = names::int8_files("t");
            assert_eq!(
                entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
                [q8.as_str(), scales.as_str()]
            );
            for e in &entries {
                // the entry hashed while writing is the file's
                let (size, sha) = chunkset::sha256_file(&dir.path().join(&e.path)).unwrap();
                assert_eq!((size, sha), (e.size, e.sha256.clone()), "{}", e.path);
            }
            let q = std::fs::read(dir.path().join(&q8)).unwrap();
            let s = std::fs::read(dir.path().join(&scales)).unwrap();
            assert_eq!((q.len(), s.len()), (rows * cols, rows * 2));
            // the reference recipe on the whole table at once
            let want = palettize::quantize_rows("t", &v, rows, cols, None).unwrap();
            assert!(
                q == want.q_bytes(),
                "q8: stored {stored}, {threads} threads"
            );
            assert!(
                s == want.scale_bytes(),
                "scales: stored {stored}, {threads} threads"
            );
            outputs.push((q, s));
        }
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
    }
}
