//! Token embeddings on the host: the [`Embedder`] trait and the int8 side-file tables of a set.
//!
//! INT8 recipe (the reference runtime's): per row `s = max|w|` stored fp16, `q = round(w·127/s)`;
//! dequantised as `q·s/127·scale` (scale = `embed_scale` = √H, or `per_layer_embed_scale` = √P).

use super::{ChunkSetError, R, io_err};
use ::chunkset::ModelConfig;
use ::chunkset::names;
use half::f16;
use std::path::{Path, PathBuf};

/// Token → `hidden_states` row (scaled embedding, length H) and `per_layer_raw` row (scaled PLE,
/// length L·P).
pub trait Embedder {
    fn hidden(&self, token: u32) -> Result<Vec<f32>, ChunkSetError>;
    fn ple_raw(&self, token: u32) -> Result<Vec<f32>, ChunkSetError>;
}

/// An int8 row table with fp16 per-row max-abs scales (`<stem>_q8.bin`, `<stem>_scales.bin`).
/// The int8 table is memory-mapped (the E2B PLE table is 2.3 GB): only rows used are paged in.
struct Int8Table {
    q: memmap2::Mmap,
    scales: Vec<f16>,
    cols: usize,
    file: PathBuf,
}

impl Int8Table {
    fn open(dir: &Path, stem: &str, cols: usize) -> R<Int8Table> {
        let (q8, scales) = names::int8_files(stem);
        let (qp, sp) = (dir.join(q8), dir.join(scales));
        let qf = std::fs::File::open(&qp).map_err(io_err(&qp))?;
        // SAFETY: the mapping is read-only; a side file truncated by another process while mapped
        // is outside what this tool supports (like any reader of a file under modification).
        let q = unsafe { memmap2::Mmap::map(&qf) }.map_err(io_err(&qp))?;
        let s = std::fs::read(&sp).map_err(io_err(&sp))?;
        if cols == 0 || q.len() % cols != 0 || s.len() != 2 * (q.len() / cols) {
            return Err(ChunkSetError::SideFile {
                file: qp,
                msg: format!(
                    "{} bytes of int8 and {} bytes of scales do not form rows of {cols}",
                    q.len(),
                    s.len()
                ),
            });
        }
        Ok(Int8Table {
            q,
            scales: s
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
            cols,
            file: qp,
        })
    }

    fn row(&self, r: usize, scale: f32) -> R<Vec<f32>> {
        let s = self.scales.get(r).ok_or_else(|| ChunkSetError::SideFile {
            file: self.file.clone(),
            msg: format!("row {r} out of range ({} rows)", self.scales.len()),
        })?;
        let k = s.to_f32() / 127.0 * scale;
        Ok(self.q[r * self.cols..(r + 1) * self.cols]
            .iter()
            .map(|&q| f32::from(q as i8) * k)
            .collect())
    }
}

/// The embedder of the published set: int8 tables dequantised as `q·s/127·scale`.
pub struct SideFileEmbedder {
    embed: Int8Table,
    ple: Option<Int8Table>,
    embed_scale: f32,
    ple_scale: f32,
}

impl SideFileEmbedder {
    /// Open the tables of the set in `dir`.
    pub fn open(dir: &Path, cfg: &ModelConfig) -> R<SideFileEmbedder> {
        let embed = Int8Table::open(dir, names::EMBED_TOKENS, cfg.hidden_size)?;
        let ple = if cfg.per_layer_dim > 0 {
            Some(Int8Table::open(
                dir,
                names::EMBED_TOKENS_PER_LAYER,
                cfg.per_layer_dim * cfg.num_layers,
            )?)
        } else {
            None
        };
        Ok(SideFileEmbedder {
            embed,
            ple,
            embed_scale: cfg.embed_scale as f32,
            ple_scale: cfg.per_layer_embed_scale as f32,
        })
    }
}

impl Embedder for SideFileEmbedder {
    fn hidden(&self, token: u32) -> R<Vec<f32>> {
        self.embed.row(token as usize, self.embed_scale)
    }
    fn ple_raw(&self, token: u32) -> R<Vec<f32>> {
        match &self.ple {
            Some(t) => t.row(token as usize, self.ple_scale),
            None => Ok(Vec::new()),
        }
    }
}
