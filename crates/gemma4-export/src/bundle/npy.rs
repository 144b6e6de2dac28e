//! NumPy `.npy` (format 1.0) writer for the RoPE side files.
//!
//! Layout: magic `\x93NUMPY`, version `1 0`, u16 little-endian header length, an ASCII dict
//! `{'descr': '<f2', 'fortran_order': False, 'shape': (R, D), }` padded with spaces and ended by `\n` so
//! that the data starts at a multiple of 64 bytes, then the row-major little-endian payload. The Swift
//! runtime reads the header length from bytes 8–9 and copies one row per position.

use half::f16;

/// Encode a row-major fp16 matrix `[rows, cols]` as `.npy` bytes.
pub fn encode_f16_2d(rows: usize, cols: usize, data: &[f16]) -> Vec<u8> {
    debug_assert_eq!(rows * cols, data.len());
    let payload: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    encode_2d("<f2", rows, cols, &payload)
}

/// Encode a row-major fp32 matrix `[rows, cols]` as `.npy` bytes (fp32 builds: exact RoPE rows).
pub fn encode_f32_2d(rows: usize, cols: usize, data: &[f32]) -> Vec<u8> {
    debug_assert_eq!(rows * cols, data.len());
    let payload: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    encode_2d("<f4", rows, cols, &payload)
}

fn encode_2d(descr: &str, rows: usize, cols: usize, payload: &[u8]) -> Vec<u8> {
    let dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let header_len = total - 10;
    let mut out = Vec::with_capacity(total + payload.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

/// Decode an fp16 2-D `.npy` written by [`encode_f16_2d`] (or NumPy): `(rows, cols, data)`.
pub fn decode_f16_2d(bytes: &[u8]) -> Option<(usize, usize, Vec<f16>)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" || bytes[6] != 1 {
        return None;
    }
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(bytes.get(10..10 + hl)?).ok()?;
    if !header.contains("'<f2'") || header.contains("'fortran_order': True") {
        return None;
    }
    let shape = header.split("'shape': (").nth(1)?.split(')').next()?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    let [rows, cols] = dims[..] else { return None };
    let payload = bytes.get(10 + hl..)?;
    if payload.len() != rows.checked_mul(cols)?.checked_mul(2)? {
        return None;
    }
    let data = payload
        .chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]))
        .collect();
    Some((rows, cols, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_128_bytes_like_the_shipped_tables() {
        // The shipped cos_sliding.npy is 4,194,432 B = 128-B header + 8192×256×2.
        let b = encode_f16_2d(8192, 256, &vec![f16::ONE; 8192 * 256]);
        assert_eq!(b.len(), 4_194_432);
        assert_eq!(u16::from_le_bytes([b[8], b[9]]) as usize + 10, 128);
        let (r, c, d) = decode_f16_2d(&b).unwrap();
        assert_eq!((r, c, d.len()), (8192, 256, 8192 * 256));
    }
}
