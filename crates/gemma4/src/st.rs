//! Minimal safetensors reader over a memory map: header inventory and bounds-checked views.
//!
//! Format: `u64` little-endian header length `n`, `n` bytes of JSON
//! (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {..}}`), then the data
//! block; offsets are relative to the start of the data block. Every entry is validated when the
//! file is opened: offsets inside the file, `end − begin == numel × dtype size`. Reading a tensor
//! copies its bytes out of the map (the data is not assumed to be aligned).
//!
//! Only the float dtypes F32 / F16 / BF16 convert to float tensors; F64 and the integer types are
//! inventoried (so their sizes are checked) and read back only through [`StFile::read_i64`].

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use serde_json::Value;

use crate::error::{Error, Result};

/// Largest header accepted (the safetensors reference implementation uses the same bound).
const MAX_HEADER: u64 = 100_000_000;

/// Storage dtype of a safetensors entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StDtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE binary64 (inventoried, not loadable as weights).
    F64,
    /// Signed 64-bit integers.
    I64,
    /// Any other known dtype (integers, bool, fp8), with its element size.
    Other(&'static str, usize),
}

impl StDtype {
    fn parse(s: &str) -> Option<StDtype> {
        Some(match s {
            "F32" => StDtype::F32,
            "F16" => StDtype::F16,
            "BF16" => StDtype::BF16,
            "F64" => StDtype::F64,
            "I64" => StDtype::I64,
            "U64" => StDtype::Other("U64", 8),
            "I32" => StDtype::Other("I32", 4),
            "U32" => StDtype::Other("U32", 4),
            "I16" => StDtype::Other("I16", 2),
            "U16" => StDtype::Other("U16", 2),
            "I8" => StDtype::Other("I8", 1),
            "U8" => StDtype::Other("U8", 1),
            "BOOL" => StDtype::Other("BOOL", 1),
            "F8_E4M3" => StDtype::Other("F8_E4M3", 1),
            "F8_E5M2" => StDtype::Other("F8_E5M2", 1),
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StDtype::F32 => 4,
            StDtype::F16 | StDtype::BF16 => 2,
            StDtype::F64 | StDtype::I64 => 8,
            StDtype::Other(_, s) => s,
        }
    }

    /// The header spelling (`F32`, `BF16`, …).
    pub fn name(self) -> &'static str {
        match self {
            StDtype::F32 => "F32",
            StDtype::F16 => "F16",
            StDtype::BF16 => "BF16",
            StDtype::F64 => "F64",
            StDtype::I64 => "I64",
            StDtype::Other(n, _) => n,
        }
    }

    /// Whether the dtype converts to a float tensor.
    pub fn is_loadable_float(self) -> bool {
        matches!(self, StDtype::F32 | StDtype::F16 | StDtype::BF16)
    }
}

/// One header entry.
#[derive(Debug, Clone)]
pub struct StEntry {
    /// Storage dtype.
    pub dtype: StDtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Byte range inside the data block.
    begin: usize,
    end: usize,
}

/// Decoded float data of one tensor, in its storage dtype.
pub(crate) enum FloatData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

/// A memory-mapped safetensors file with a validated header.
pub struct StFile {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    entries: BTreeMap<String, StEntry>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for StFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StFile")
            .field("path", &self.path)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl StFile {
    /// Map `path` and validate its header and every entry's byte range.
    pub fn open(path: &Path) -> Result<StFile> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        require_regular_file(path)?;
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let header_err = |reason: String| Error::Header {
            file: path.to_path_buf(),
            reason,
        };
        if len < 8 {
            return Err(header_err(format!(
                "file is {len} bytes, shorter than the 8-byte header length field"
            )));
        }
        // SAFETY: the map is read-only and private to this process. Like every mmap-based
        // safetensors reader we rely on nobody truncating or rewriting the file while it is
        // open; all offsets are bounds-checked against the length seen at open time.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let total = map.len() as u64;
        if total < 8 {
            return Err(header_err(format!(
                "file shrank to {total} bytes while opening"
            )));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&map[..8]);
        let n = u64::from_le_bytes(len_bytes);
        if n > MAX_HEADER {
            return Err(header_err(format!(
                "header length {n} exceeds the {MAX_HEADER}-byte limit"
            )));
        }
        if n > total - 8 {
            return Err(header_err(format!(
                "header length {n} runs past the end of the file ({total} bytes): truncated file?"
            )));
        }
        let data_start = 8 + n as usize;
        let text = std::str::from_utf8(&map[8..data_start])
            .map_err(|e| header_err(format!("header is not UTF-8: {e}")))?;
        let json: Value = serde_json::from_str(text.trim_end())
            .map_err(|e| header_err(format!("header is not valid JSON: {e}")))?;
        let obj = json
            .as_object()
            .ok_or_else(|| header_err("header is not a JSON object".into()))?;
        let data_len = map.len() - data_start;
        let mut entries = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, v) in obj {
            if name == "__metadata__" {
                if let Some(m) = v.as_object() {
                    for (k, val) in m {
                        if let Some(s) = val.as_str() {
                            metadata.insert(k.clone(), s.to_string());
                        }
                    }
                }
                continue;
            }
            let entry = parse_entry(path, name, v, data_len)?;
            entries.insert(name.clone(), entry);
        }
        check_no_overlap(path, &entries)?;
        Ok(StFile {
            path: path.to_path_buf(),
            map,
            data_start,
            entries,
            metadata,
        })
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All entries by full name (sorted).
    pub fn entries(&self) -> &BTreeMap<String, StEntry> {
        &self.entries
    }

    /// The `__metadata__` string map.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn bytes(&self, e: &StEntry) -> &[u8] {
        // Bounds were validated at open time.
        &self.map[self.data_start + e.begin..self.data_start + e.end]
    }

    fn entry(&self, name: &str) -> Result<&StEntry> {
        self.entries.get(name).ok_or_else(|| Error::MissingTensor {
            location: self.path.clone(),
            tensor: name.to_string(),
        })
    }

    /// The stored bytes of one tensor (little-endian, in its storage dtype, not assumed aligned)
    /// with its entry: zero copy, for callers that decode large tensors in parallel.
    pub fn raw(&self, name: &str) -> Result<(&StEntry, &[u8])> {
        let e = self.entry(name)?;
        Ok((e, self.bytes(e)))
    }

    /// Decode a float tensor (F32/F16/BF16) in its storage dtype and check every value is finite.
    pub(crate) fn read_float(&self, name: &str) -> Result<(Vec<usize>, FloatData)> {
        let e = self.entry(name)?;
        let b = self.bytes(e);
        let non_finite = |index: usize, v: f32| Error::NonFinite {
            file: self.path.clone(),
            tensor: name.to_string(),
            index,
            value: format!("{v}"),
        };
        let data = match e.dtype {
            StDtype::F32 => {
                let v: Vec<f32> = b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                    return Err(non_finite(i, *x));
                }
                FloatData::F32(v)
            }
            StDtype::F16 => {
                let v: Vec<f16> = b
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect();
                if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                    return Err(non_finite(i, x.to_f32()));
                }
                FloatData::F16(v)
            }
            StDtype::BF16 => {
                let v: Vec<bf16> = b
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                    .collect();
                if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                    return Err(non_finite(i, x.to_f32()));
                }
                FloatData::BF16(v)
            }
            other => {
                return Err(Error::UnsupportedDtype {
                    file: self.path.clone(),
                    tensor: name.to_string(),
                    dtype: other.name().to_string(),
                });
            }
        };
        Ok((e.shape.clone(), data))
    }

    /// Decode an I64 tensor (golden token ids).
    pub fn read_i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let e = self.entry(name)?;
        if e.dtype != StDtype::I64 {
            return Err(Error::UnsupportedDtype {
                file: self.path.clone(),
                tensor: name.to_string(),
                dtype: format!("{} (expected I64)", e.dtype.name()),
            });
        }
        let v = self
            .bytes(e)
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok((e.shape.clone(), v))
    }

    /// Decode rows `start..start+count` (along dim 0) of a float tensor to f32 (checks finiteness).
    /// Only those rows are touched, so large tables (the PLE table) are read slab by slab.
    pub fn read_rows_f32(&self, name: &str, start: usize, count: usize) -> Result<Vec<f32>> {
        let e = self.entry(name)?;
        let rows = e.shape.first().copied().unwrap_or(1);
        let row_len: usize = e.shape.iter().skip(1).product();
        if start.checked_add(count).is_none_or(|end| end > rows) {
            return Err(Error::BadInput {
                reason: format!(
                    "rows {start}..{} of `{name}` in {}: the tensor has {rows} rows",
                    start.saturating_add(count),
                    self.path.display()
                ),
            });
        }
        let width = match e.dtype {
            StDtype::F32 => 4,
            StDtype::F16 | StDtype::BF16 => 2,
            other => {
                return Err(Error::UnsupportedDtype {
                    file: self.path.clone(),
                    tensor: name.to_string(),
                    dtype: other.name().to_string(),
                });
            }
        };
        let all = self.bytes(e);
        let b = &all[start * row_len * width..(start + count) * row_len * width];
        let v: Vec<f32> = match e.dtype {
            StDtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            StDtype::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        };
        if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(Error::NonFinite {
                file: self.path.clone(),
                tensor: name.to_string(),
                index: start * row_len + i,
                value: format!("{x}"),
            });
        }
        Ok(v)
    }

    /// Decode a float tensor to f32 (checks finiteness).
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (shape, data) = self.read_float(name)?;
        let v = match data {
            FloatData::F32(v) => v,
            FloatData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            FloatData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
        };
        Ok((shape, v))
    }
}

/// Refuse anything but a regular file before opening it: a FIFO or a device as a checkpoint or
/// golden file would block or never end.
pub fn require_regular_file(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a directory, FIFO or device)",
            ),
        }),
        _ => Ok(()),
    }
}

/// Two tensors may not share bytes (the safetensors library rejects that too).
fn check_no_overlap(path: &Path, entries: &BTreeMap<String, StEntry>) -> Result<()> {
    let mut ranges: Vec<(usize, usize, &str)> = entries
        .iter()
        .filter(|(_, e)| e.end > e.begin)
        .map(|(n, e)| (e.begin, e.end, n.as_str()))
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        let ((b0, e0, n0), (b1, e1, n1)) = (w[0], w[1]);
        if b1 < e0 {
            return Err(Error::DataOutOfBounds {
                file: path.to_path_buf(),
                tensor: n1.to_string(),
                reason: format!("data [{b1}, {e1}) overlaps tensor `{n0}` [{b0}, {e0})"),
            });
        }
    }
    Ok(())
}

fn parse_entry(path: &Path, name: &str, v: &Value, data_len: usize) -> Result<StEntry> {
    let header_err = |reason: String| Error::Header {
        file: path.to_path_buf(),
        reason: format!("entry `{name}`: {reason}"),
    };
    let obj = v
        .as_object()
        .ok_or_else(|| header_err("is not an object".into()))?;
    let dtype_str = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| header_err("has no dtype string".into()))?;
    let dtype = StDtype::parse(dtype_str)
        .ok_or_else(|| header_err(format!("unknown dtype {dtype_str:?}")))?;
    let shape = obj
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| header_err("has no shape list".into()))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| header_err("shape holds a non-integer".into()))?;
    let offs = obj
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .ok_or_else(|| header_err("has no [begin, end] data_offsets".into()))?;
    let (begin, end) = match (
        offs[0].as_u64().and_then(|x| usize::try_from(x).ok()),
        offs[1].as_u64().and_then(|x| usize::try_from(x).ok()),
    ) {
        (Some(b), Some(e)) => (b, e),
        _ => return Err(header_err("data_offsets are not integers".into())),
    };
    let oob = |reason: String| Error::DataOutOfBounds {
        file: path.to_path_buf(),
        tensor: name.to_string(),
        reason,
    };
    if end < begin {
        return Err(oob(format!("data_offsets [{begin}, {end}] are reversed")));
    }
    if end > data_len {
        return Err(oob(format!(
            "data [{begin}, {end}) ends past the data block ({data_len} bytes): truncated file?"
        )));
    }
    let need = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| oob(format!("shape {shape:?} overflows")))?;
    if end - begin != need {
        return Err(oob(format!(
            "holds {} bytes but shape {shape:?} of {dtype_str} needs {need}",
            end - begin
        )));
    }
    Ok(StEntry {
        dtype,
        shape,
        begin,
        end,
    })
}
