//! `weight.bin`: MIL blob storage format version 2 (coremltools `MILBlob`).
//!
//! Layout (all integers little-endian):
//! ```text
//! 0    storage header, 64 bytes: u32 count, u32 version = 2, 56 zero bytes
//! 64   blob record, 64 bytes:    u32 sentinel 0xDEADBEEF, u32 blob dtype code, u64 size in bytes,
//!                                u64 data offset (= record offset + 64), u64 padding bits,
//!                                4 × u64 zero
//! 128  payload (size bytes), then zeros up to the next multiple of 64, next record, ...
//! ```
//! * `BlobFileValue.offset` in the program points at the **record**, not the payload.
//! * Records and payloads are 64-aligned; the file ends right after the last payload.
//! * Sub-byte payloads (int4, uint1/2/3/4/6) are packed LSB-first (as [`mil::TensorValue`] stores
//!   them); `padding bits` = unused high bits of the last byte (< 8), 0 for other dtypes.
//! * Blob dtype codes differ from the MIL `DataType` numbers, see [`crate::codes`].
//!
//! [`BlobWriter`] streams blobs into any `Write + Seek`, deduplicating identical contents (same
//! dtype and bytes). [`BlobReader`] validates the whole record chain up front (version, count,
//! sentinels, dtype codes, alignment, bounds, padding bits) and hands out tensor payloads as
//! zero-copy [`mil::Buffer`] slices of the memory map.

use crate::codes::{blob_code, dtype_from_blob_code};
use crate::error::{PackageError, WeightsError};
use mil::{Buffer, DType, TensorType, TensorValue};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

/// The value of `BlobFileValue.fileName` for the package's weight file.
pub const WEIGHT_FILE_REF: &str = "@model_path/weights/weight.bin";
/// Storage format version written and accepted.
pub const STORAGE_VERSION: u32 = 2;
/// Record sentinel.
pub const SENTINEL: u32 = 0xDEAD_BEEF;
/// Size of the storage header and of each blob record; also the alignment.
pub const ALIGN: u64 = 64;

fn align64(x: u64) -> Option<u64> {
    x.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

/// Bytes and padding bits of `n` elements of `dtype` in a blob.
fn payload_size(dtype: DType, n: usize) -> Option<(u64, u64)> {
    let bits = dtype.bits()? as u64;
    let total_bits = (n as u64).checked_mul(bits)?;
    let size = total_bits.div_ceil(8);
    let padding = if dtype.is_sub_byte() {
        size * 8 - total_bits
    } else {
        0
    };
    Some((size, padding))
}

/// One validated blob record of a weight file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRecord {
    /// Offset of the 64-byte record (what `BlobFileValue.offset` holds).
    pub offset: u64,
    /// Element dtype of the payload.
    pub dtype: DType,
    /// Payload size in bytes.
    pub size: u64,
    /// Absolute offset of the payload.
    pub data_offset: u64,
    /// Unused high bits of the last payload byte (sub-byte dtypes only).
    pub padding_bits: u64,
}

/// Streams blobs into a weight file, deduplicating identical contents.
///
/// The header's blob count is written by [`BlobWriter::finish`].
pub struct BlobWriter<W: Write + Seek> {
    out: W,
    /// End of the last payload (the file length so far).
    end: u64,
    count: u32,
    /// hash of (dtype, bytes) → blobs with that hash: (dtype, bytes, record offset).
    dedup: HashMap<u64, Vec<(DType, Buffer, u64)>>,
    references: usize,
}

impl<W: Write + Seek> BlobWriter<W> {
    /// Start a weight file: writes the storage header (count 0, version 2) at the current position,
    /// which must be the start of the output.
    pub fn new(mut out: W) -> Result<BlobWriter<W>, WeightsError> {
        let mut header = [0u8; ALIGN as usize];
        header[4..8].copy_from_slice(&STORAGE_VERSION.to_le_bytes());
        out.write_all(&header)?;
        Ok(BlobWriter {
            out,
            end: ALIGN,
            count: 0,
            dedup: HashMap::new(),
            references: 0,
        })
    }

    /// Store a tensor (reusing an identical earlier blob) and return its record offset.
    pub fn write_tensor(&mut self, t: &TensorValue) -> Result<u64, WeightsError> {
        let bytes = t
            .bytes()
            .ok_or(WeightsError::NoBlobEncoding { dtype: t.dtype() })?;
        let n = t
            .ty()
            .num_elements()
            .ok_or_else(|| WeightsError::DynamicShape { ty: t.ty().clone() })?;
        self.references += 1;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        t.dtype().hash(&mut h);
        bytes.as_bytes().hash(&mut h);
        let key = h.finish();
        if let Some(found) = self.dedup.get(&key).and_then(|v| {
            v.iter()
                .find(|(d, b, _)| *d == t.dtype() && b.as_bytes() == bytes.as_bytes())
        }) {
            return Ok(found.2);
        }
        let offset = self.append(t.dtype(), bytes.as_bytes(), n)?;
        self.dedup
            .entry(key)
            .or_default()
            .push((t.dtype(), bytes.clone(), offset));
        Ok(offset)
    }

    /// Append one blob of `n` elements (no deduplication) and return its record offset.
    /// `bytes` must be exactly the packed payload of `n` elements.
    pub fn append(&mut self, dtype: DType, bytes: &[u8], n: usize) -> Result<u64, WeightsError> {
        let code = blob_code(dtype).ok_or(WeightsError::NoBlobEncoding { dtype })?;
        let (size, padding) = payload_size(dtype, n).ok_or(WeightsError::Overflow)?;
        if size != bytes.len() as u64 {
            return Err(WeightsError::SizeMismatch {
                offset: self.end,
                ty: TensorType::new(dtype, &[n]),
                expected: size,
                found: bytes.len() as u64,
                padding_bits: padding,
            });
        }
        let offset = align64(self.end).ok_or(WeightsError::Overflow)?;
        let data_offset = offset.checked_add(ALIGN).ok_or(WeightsError::Overflow)?;
        let gap = (offset - self.end) as usize;
        self.out.write_all(&[0u8; ALIGN as usize][..gap])?;
        let mut record = [0u8; ALIGN as usize];
        record[0..4].copy_from_slice(&SENTINEL.to_le_bytes());
        record[4..8].copy_from_slice(&code.to_le_bytes());
        record[8..16].copy_from_slice(&size.to_le_bytes());
        record[16..24].copy_from_slice(&data_offset.to_le_bytes());
        record[24..32].copy_from_slice(&padding.to_le_bytes());
        self.out.write_all(&record)?;
        self.out.write_all(bytes)?;
        self.end = data_offset
            .checked_add(size)
            .ok_or(WeightsError::Overflow)?;
        self.count = self.count.checked_add(1).ok_or(WeightsError::Overflow)?;
        Ok(offset)
    }

    /// Number of distinct blobs written.
    pub fn blob_count(&self) -> u32 {
        self.count
    }

    /// Number of [`BlobWriter::write_tensor`] calls (blob references, including deduplicated ones).
    pub fn references(&self) -> usize {
        self.references
    }

    /// Current file length in bytes.
    pub fn len(&self) -> u64 {
        self.end
    }

    /// True if no blob has been written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Write the blob count into the header and return the output (positioned at its end).
    pub fn finish(mut self) -> Result<W, WeightsError> {
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&self.count.to_le_bytes())?;
        self.out.seek(SeekFrom::Start(self.end))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A sub-range of a shared buffer, itself usable as a [`Buffer`] owner (zero copy).
struct Slice {
    parent: Buffer,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        self.parent
            .as_bytes()
            .get(self.start..self.end)
            .unwrap_or(&[])
    }
}

/// A validated, read-only view of a weight file (normally memory-mapped).
pub struct BlobReader {
    data: Buffer,
    records: BTreeMap<u64, BlobRecord>,
}

fn u32_at(b: &[u8], at: u64) -> u32 {
    let at = at as usize;
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

impl BlobReader {
    /// Memory-map and validate a weight file.
    pub fn open(path: &Path) -> Result<BlobReader, PackageError> {
        let file = std::fs::File::open(path).map_err(|e| PackageError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| PackageError::io(path, e))?
            .len();
        if len < ALIGN {
            return Err(PackageError::Weights {
                path: path.to_path_buf(),
                source: WeightsError::TooShort { len },
            });
        }
        // SAFETY: the map is read-only and private to this reader. As with any file mapping, the
        // caller must not truncate or rewrite the file while tensors read from it are alive.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| PackageError::io(path, e))?;
        BlobReader::from_buffer(Buffer::from_owner(Arc::new(map))).map_err(|source| {
            PackageError::Weights {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Validate a weight file held in memory.
    pub fn from_buffer(data: Buffer) -> Result<BlobReader, WeightsError> {
        let b = data.as_bytes();
        let len = b.len() as u64;
        if len < ALIGN {
            return Err(WeightsError::TooShort { len });
        }
        let count = u32_at(b, 0);
        let version = u32_at(b, 4);
        if version != STORAGE_VERSION {
            return Err(WeightsError::Version { found: version });
        }
        let mut records = BTreeMap::new();
        let mut offset = ALIGN;
        for index in 0..count {
            if offset.checked_add(ALIGN).is_none_or(|end| end > len) {
                return Err(WeightsError::RecordOutOfBounds { index, offset, len });
            }
            let sentinel = u32_at(b, offset);
            if sentinel != SENTINEL {
                return Err(WeightsError::Sentinel {
                    offset,
                    found: sentinel,
                });
            }
            let code = u32_at(b, offset + 4);
            let dtype = dtype_from_blob_code(code)
                .ok_or(WeightsError::UnknownDtypeCode { offset, code })?;
            let size = u64_at(b, offset + 8);
            let data_offset = u64_at(b, offset + 16);
            let padding_bits = u64_at(b, offset + 24);
            if data_offset < offset + ALIGN || !data_offset.is_multiple_of(ALIGN) {
                return Err(WeightsError::DataOffset {
                    offset,
                    data_offset,
                });
            }
            let end = data_offset.checked_add(size);
            if end.is_none_or(|e| e > len) {
                return Err(WeightsError::PayloadOutOfBounds {
                    offset,
                    data_offset,
                    size,
                    len,
                });
            }
            let padding_ok = if dtype.is_sub_byte() {
                padding_bits < 8 && size > 0 || padding_bits == 0
            } else {
                padding_bits == 0
            };
            let bits = dtype.bits().unwrap_or(8) as u64;
            // the number of elements must be whole: (size·8 − padding) divisible by bits
            if !padding_ok || !(size * 8 - padding_bits).is_multiple_of(bits) {
                return Err(WeightsError::Padding {
                    offset,
                    dtype,
                    size,
                    padding_bits,
                });
            }
            records.insert(
                offset,
                BlobRecord {
                    offset,
                    dtype,
                    size,
                    data_offset,
                    padding_bits,
                },
            );
            offset = end.and_then(align64).ok_or(WeightsError::Overflow)?;
        }
        Ok(BlobReader { data, records })
    }

    /// Every record, in file order.
    pub fn records(&self) -> impl Iterator<Item = &BlobRecord> {
        self.records.values()
    }

    /// The record at a record offset.
    pub fn record(&self, offset: u64) -> Option<&BlobRecord> {
        self.records.get(&offset)
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if the file holds no blobs.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The raw payload of a record (zero copy).
    pub fn payload(&self, offset: u64) -> Result<Buffer, WeightsError> {
        let r = self
            .records
            .get(&offset)
            .ok_or(WeightsError::NotARecord { offset })?;
        Ok(self.slice(r))
    }

    fn slice(&self, r: &BlobRecord) -> Buffer {
        Buffer::from_owner(Arc::new(Slice {
            parent: self.data.clone(),
            start: r.data_offset as usize,
            end: (r.data_offset + r.size) as usize,
        }))
    }

    /// Read the tensor of type `ty` stored at record `offset`, checking dtype and size (zero copy).
    pub fn read(&self, offset: u64, ty: &TensorType) -> Result<TensorValue, WeightsError> {
        let r = self
            .records
            .get(&offset)
            .ok_or(WeightsError::NotARecord { offset })?;
        if r.dtype != ty.dtype {
            return Err(WeightsError::DtypeMismatch {
                offset,
                expected: ty.dtype,
                found: r.dtype,
            });
        }
        let n = ty
            .num_elements()
            .ok_or_else(|| WeightsError::DynamicShape { ty: ty.clone() })?;
        let (size, padding) = payload_size(ty.dtype, n).ok_or(WeightsError::Overflow)?;
        if r.size != size || r.padding_bits != padding {
            return Err(WeightsError::SizeMismatch {
                offset,
                ty: ty.clone(),
                expected: size,
                found: r.size,
                padding_bits: r.padding_bits,
            });
        }
        TensorValue::from_bytes(ty.clone(), self.slice(r)).map_err(|_| WeightsError::SizeMismatch {
            offset,
            ty: ty.clone(),
            expected: size,
            found: r.size,
            padding_bits: r.padding_bits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use mil::value::pack_bits;
    use std::io::Cursor;

    fn write(tensors: &[TensorValue]) -> (Vec<u8>, Vec<u64>) {
        let mut w = BlobWriter::new(Cursor::new(Vec::new())).unwrap();
        let offs = tensors.iter().map(|t| w.write_tensor(t).unwrap()).collect();
        (w.finish().unwrap().into_inner(), offs)
    }

    fn u4(shape: &[usize], v: &[u8]) -> TensorValue {
        TensorValue::from_bytes(TensorType::new(DType::U4, shape), pack_bits(v, 4)).unwrap()
    }

    #[test]
    fn layout_matches_coremltools() {
        let a = TensorValue::from_f16(&[3], &[f16::ONE, f16::ZERO, f16::ONE]).unwrap();
        let b = u4(&[5], &[1, 2, 3, 4, 5]);
        let (bytes, offs) = write(&[a, b]);
        assert_eq!(offs, vec![64, 192]);
        assert_eq!(&bytes[0..8], &[2, 0, 0, 0, 2, 0, 0, 0]);
        assert!(bytes[8..64].iter().all(|&x| x == 0));
        // record 1: fp16 (code 1), 6 bytes at 128, no padding bits
        assert_eq!(&bytes[64..68], &[0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(u32_at(&bytes, 68), 1);
        assert_eq!(u64_at(&bytes, 72), 6);
        assert_eq!(u64_at(&bytes, 80), 128);
        assert_eq!(u64_at(&bytes, 88), 0);
        assert_eq!(&bytes[128..134], &[0x00, 0x3c, 0, 0, 0x00, 0x3c]);
        // record 2 at align64(134) = 192: uint4 (code 11), 3 bytes, 4 padding bits
        assert_eq!(u32_at(&bytes, 196), 11);
        assert_eq!(u64_at(&bytes, 200), 3);
        assert_eq!(u64_at(&bytes, 208), 256);
        assert_eq!(u64_at(&bytes, 216), 4);
        assert_eq!(
            &bytes[256..],
            &[0x21, 0x43, 0x05],
            "no padding after the last payload"
        );
    }

    #[test]
    fn identical_blobs_are_stored_once() {
        let a = TensorValue::from_f32(&[12], &[1.5; 12]).unwrap();
        let b = TensorValue::from_f32(&[3, 4], &[1.5; 12]).unwrap();
        let c = TensorValue::from_i32(&[12], &[1.5f32.to_bits() as i32; 12]).unwrap();
        let mut w = BlobWriter::new(Cursor::new(Vec::new())).unwrap();
        let oa = w.write_tensor(&a).unwrap();
        let ob = w.write_tensor(&b).unwrap();
        let oc = w.write_tensor(&c).unwrap();
        assert_eq!(oa, ob, "same dtype and bytes share a blob");
        assert_ne!(oa, oc, "same bytes but another dtype do not");
        assert_eq!((w.blob_count(), w.references()), (2, 3));
    }

    #[test]
    fn reader_round_trips_zero_copy() {
        let a =
            TensorValue::from_f32(&[2, 6], &(0..12).map(|x| x as f32).collect::<Vec<_>>()).unwrap();
        let b = u4(&[3, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let (bytes, offs) = write(&[a.clone(), b.clone()]);
        let r = BlobReader::from_buffer(Buffer::from_vec(bytes)).unwrap();
        assert_eq!(r.len(), 2);
        let ra = r.read(offs[0], a.ty()).unwrap();
        assert_eq!(ra, a);
        assert_eq!(r.read(offs[1], b.ty()).unwrap(), b);
        let p1 = r.payload(offs[0]).unwrap();
        let p2 = r.payload(offs[0]).unwrap();
        assert_eq!(
            p1.as_bytes().as_ptr(),
            p2.as_bytes().as_ptr(),
            "slices share the file bytes"
        );
    }

    #[test]
    fn reader_rejects_mismatches() {
        let a = TensorValue::from_f32(&[12], &[0.5; 12]).unwrap();
        let (bytes, offs) = write(&[a]);
        let r = BlobReader::from_buffer(Buffer::from_vec(bytes)).unwrap();
        let e = r
            .read(offs[0], &TensorType::new(DType::F16, &[24]))
            .unwrap_err();
        assert!(matches!(
            e,
            WeightsError::DtypeMismatch {
                expected: DType::F16,
                found: DType::F32,
                ..
            }
        ));
        let e = r
            .read(offs[0], &TensorType::new(DType::F32, &[11]))
            .unwrap_err();
        assert!(matches!(
            e,
            WeightsError::SizeMismatch {
                expected: 44,
                found: 48,
                ..
            }
        ));
        assert!(matches!(
            r.read(65, &TensorType::new(DType::F32, &[12])),
            Err(WeightsError::NotARecord { offset: 65 })
        ));
    }

    #[test]
    fn reader_validates_structure() {
        let a = TensorValue::from_f32(&[12], &[0.5; 12]).unwrap();
        let (good, _) = write(&[a]);
        let check = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            BlobReader::from_buffer(Buffer::from_vec(b)).err()
        };
        assert!(check(&|_| ()).is_none());
        assert!(matches!(
            check(&|b| b.truncate(40)),
            Some(WeightsError::TooShort { len: 40 })
        ));
        assert!(matches!(
            check(&|b| b[4] = 1),
            Some(WeightsError::Version { found: 1 })
        ));
        assert!(matches!(
            check(&|b| b[64] = 0),
            Some(WeightsError::Sentinel { offset: 64, .. })
        ));
        assert!(matches!(
            check(&|b| b[68] = 99),
            Some(WeightsError::UnknownDtypeCode {
                offset: 64,
                code: 99
            })
        ));
        assert!(matches!(
            check(&|b| b.truncate(150)),
            Some(WeightsError::PayloadOutOfBounds { .. })
        ));
        assert!(matches!(
            check(&|b| b[0] = 2),
            Some(WeightsError::RecordOutOfBounds { index: 1, .. })
        ));
        assert!(matches!(
            check(&|b| b[80] = 100),
            Some(WeightsError::DataOffset { .. })
        ));
        assert!(matches!(
            check(&|b| b[88] = 3),
            Some(WeightsError::Padding { .. })
        ));
        assert!(matches!(
            check(&|b| b[72..80].copy_from_slice(&u64::MAX.to_le_bytes())),
            Some(WeightsError::PayloadOutOfBounds { .. })
        ));
    }

    #[test]
    fn writer_rejects_unblobbable_dtypes() {
        let t = TensorValue::from_bool(&[12], &[true; 12]).unwrap();
        let mut w = BlobWriter::new(Cursor::new(Vec::new())).unwrap();
        assert!(matches!(
            w.write_tensor(&t),
            Err(WeightsError::NoBlobEncoding { dtype: DType::Bool })
        ));
    }
}
