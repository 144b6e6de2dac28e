//! `coremldata.bin`: the compiled model's header, its `ModelDescription` and a trailer.
//!
//! ```text
//! 0x00  u32 LE  model kind: 502 (= the `mlProgram` field number of Model.Type)
//! 0x04  u32 LE  header format: 5 in the spec-7 sample (coremlc 3402), the specification
//!               version (9) in every spec-9 sample (coremlc 3520 / 3600)
//! 0x08  20 zero bytes
//! 0x1C  u32 LE  7, the length of …
//! 0x20  4 zero bytes
//! 0x24  "generic"
//! 0x2B  u8      specification version
//! 0x2C  31 zero bytes
//! 0x4B  u64 LE  payload length
//! 0x53  payload: the source model's `ModelDescription` bytes as they are in the source file,
//!       followed by an empty `metadata` field (`a2 06 00`) when the source has none
//! …     one 16-byte record per program function: u32 LE 502, 12 zero bytes
//! ```
//!
//! Established from the two samples in `shared/samples/compiled/` and the seven coremlc fixtures of
//! mlmodelc-export (which compares its own writer with them byte for byte).

use coreml_proto::specification as spec;
use prost::Message;

/// `Model.mlProgram`'s field number, the kind word of an ML Program.
pub const KIND_ML_PROGRAM: u32 = 502;
const HEADER_LEN: usize = 0x53;
const TRAILER_RECORD: usize = 16;

/// Errors reading the container.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CoremldataError {
    #[error("{len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort { len: usize },
    #[error("model kind {0} is not an ML Program ({KIND_ML_PROGRAM})")]
    Kind(u32),
    #[error("header field at {offset:#x} is {found:?}, expected {expected:?}")]
    Header {
        offset: usize,
        found: Vec<u8>,
        expected: Vec<u8>,
    },
    #[error("payload of {len} bytes runs past the end of the file ({file} bytes)")]
    Payload { len: u64, file: usize },
    #[error("trailer of {len} bytes is not one 16-byte record per function ({functions})")]
    Trailer { len: usize, functions: usize },
    #[error("ModelDescription does not decode: {0}")]
    Description(String),
    #[error("the source model has no ModelDescription")]
    NoDescription,
    #[error("malformed protobuf in the source model at byte {0}")]
    Protobuf(usize),
}

/// What the header and trailer hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    /// The word at 0x04.
    pub header_format: u32,
    /// The byte at 0x2B.
    pub spec_version: u8,
    /// The payload (ModelDescription bytes).
    pub description: Vec<u8>,
    /// Number of 16-byte trailer records.
    pub functions: usize,
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// One field of a message: field number, wire type, the whole field's byte range, the payload's.
type Field = (u64, u8, std::ops::Range<usize>, std::ops::Range<usize>);

/// Top-level fields of a protobuf message.
fn fields(b: &[u8]) -> Result<Vec<Field>, usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let start = pos;
        let key = varint(b, &mut pos).ok_or(start)?;
        let (field, wire) = (key >> 3, (key & 7) as u8);
        let payload = match wire {
            0 => {
                let s = pos;
                varint(b, &mut pos).ok_or(start)?;
                s..pos
            }
            1 => {
                pos += 8;
                pos - 8..pos
            }
            2 => {
                let len = varint(b, &mut pos).ok_or(start)? as usize;
                let s = pos;
                pos = pos.checked_add(len).ok_or(start)?;
                s..pos
            }
            5 => {
                pos += 4;
                pos - 4..pos
            }
            _ => return Err(start),
        };
        if pos > b.len() {
            return Err(start);
        }
        out.push((field, wire, start..pos, payload));
    }
    Ok(out)
}

/// The `ModelDescription` bytes of a serialized `Model` exactly as they are in the file, with an
/// empty `metadata` (field 100) appended when the description has none.
pub fn description_bytes(model: &[u8]) -> Result<Vec<u8>, CoremldataError> {
    let top = fields(model).map_err(CoremldataError::Protobuf)?;
    let (_, _, _, payload) = top
        .into_iter()
        .rfind(|(f, w, _, _)| *f == 2 && *w == 2)
        .ok_or(CoremldataError::NoDescription)?;
    let mut d = model[payload].to_vec();
    let inner = fields(&d).map_err(CoremldataError::Protobuf)?;
    if !inner.iter().any(|(f, _, _, _)| *f == 100) {
        d.extend_from_slice(&[0xa2, 0x06, 0x00]);
    }
    Ok(d)
}

/// The container bytes.
pub fn encode(
    header_format: u32,
    spec_version: u8,
    description: &[u8],
    functions: usize,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + description.len() + 16 * functions);
    b.extend_from_slice(&KIND_ML_PROGRAM.to_le_bytes());
    b.extend_from_slice(&header_format.to_le_bytes());
    b.extend_from_slice(&[0; 20]);
    b.extend_from_slice(&7u32.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(b"generic");
    b.push(spec_version);
    b.extend_from_slice(&[0; 31]);
    b.extend_from_slice(&(description.len() as u64).to_le_bytes());
    b.extend_from_slice(description);
    for _ in 0..functions.max(1) {
        b.extend_from_slice(&KIND_ML_PROGRAM.to_le_bytes());
        b.extend_from_slice(&[0; 12]);
    }
    b
}

/// Read the container (checks every constant field).
pub fn decode(b: &[u8]) -> Result<Container, CoremldataError> {
    if b.len() < HEADER_LEN {
        return Err(CoremldataError::TooShort { len: b.len() });
    }
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let kind = u32_at(0);
    if kind != KIND_ML_PROGRAM {
        return Err(CoremldataError::Kind(kind));
    }
    let expect = |offset: usize, expected: &[u8]| -> Result<(), CoremldataError> {
        let found = &b[offset..offset + expected.len()];
        if found == expected {
            Ok(())
        } else {
            Err(CoremldataError::Header {
                offset,
                found: found.to_vec(),
                expected: expected.to_vec(),
            })
        }
    };
    expect(0x08, &[0; 20])?;
    expect(0x1c, &7u32.to_le_bytes())?;
    expect(0x20, &[0; 4])?;
    expect(0x24, b"generic")?;
    expect(0x2c, &[0; 31])?;
    let len = u64::from_le_bytes(b[0x4b..0x53].try_into().unwrap_or([0; 8]));
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| HEADER_LEN.checked_add(l))
        .filter(|&e| e <= b.len())
        .ok_or(CoremldataError::Payload { len, file: b.len() })?;
    let trailer = &b[end..];
    let functions = trailer.len() / TRAILER_RECORD;
    let record_ok =
        |r: &[u8]| r[..4] == KIND_ML_PROGRAM.to_le_bytes() && r[4..].iter().all(|&x| x == 0);
    if trailer.is_empty()
        || !trailer.len().is_multiple_of(TRAILER_RECORD)
        || !trailer.chunks(TRAILER_RECORD).all(record_ok)
    {
        return Err(CoremldataError::Trailer {
            len: trailer.len(),
            functions,
        });
    }
    Ok(Container {
        header_format: u32_at(4),
        spec_version: b[0x2b],
        description: b[HEADER_LEN..end].to_vec(),
        functions,
    })
}

impl Container {
    /// The decoded description.
    pub fn model_description(&self) -> Result<spec::ModelDescription, CoremldataError> {
        spec::ModelDescription::decode(self.description.as_slice())
            .map_err(|e| CoremldataError::Description(e.to_string()))
    }
}
