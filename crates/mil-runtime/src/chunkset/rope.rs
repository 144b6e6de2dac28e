//! The RoPE side tables of a set (`cos_sliding.npy`, ...): `.npy` 1.0, fp16 (`<f2`) or, in fp32
//! builds, fp32 (`<f4`), `[rows, head_dim]` row-major.

use super::{ChunkSetError, LayerKind, R, io_err};
use ::chunkset::names::{self, RopeTable as Table};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The RoPE tables of a set, by step input (`cos_s`, `sin_s`, `cos_f`, `sin_f`).
pub(crate) struct RopeTables {
    dir: PathBuf,
    tables: BTreeMap<&'static str, RopeTable>,
}

impl RopeTables {
    /// Read every RoPE table present in `dir`.
    pub fn open(dir: &Path) -> R<RopeTables> {
        let mut tables = BTreeMap::new();
        for kind in LayerKind::ALL {
            for table in Table::BOTH {
                let p = dir.join(kind.rope_file(table));
                if p.exists() {
                    tables.insert(names::rope_input(kind, table), read_npy(&p)?);
                }
            }
        }
        Ok(RopeTables {
            dir: dir.to_path_buf(),
            tables,
        })
    }

    /// Rows `start..start + n` of the table of input `key` (`cos_s`, ...), concatenated.
    pub fn rows(&self, key: &str, start: usize, n: usize) -> R<Vec<f32>> {
        let t = self
            .tables
            .get(key)
            .ok_or_else(|| ChunkSetError::SideFile {
                file: match names::rope_of_input(key) {
                    Some((kind, table)) => self.dir.join(kind.rope_file(table)),
                    None => self.dir.clone(),
                },
                msg: format!("RoPE table of `{key}` missing"),
            })?;
        if start + n > t.rows {
            return Err(ChunkSetError::ContextFull {
                pos: start + n - 1,
                what: format!("RoPE table ({key})"),
                limit: t.rows,
            });
        }
        Ok(t.data[start * t.dim..(start + n) * t.dim].to_vec())
    }
}

/// One table `[rows, dim]`.
pub(super) struct RopeTable {
    pub rows: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

fn read_npy(path: &Path) -> R<RopeTable> {
    let b = std::fs::read(path).map_err(io_err(path))?;
    let t = crate::npy::parse(&b).map_err(|msg| ChunkSetError::SideFile {
        file: path.to_path_buf(),
        msg,
    })?;
    Ok(RopeTable {
        rows: t.rows,
        dim: t.cols,
        data: t.data,
    })
}
