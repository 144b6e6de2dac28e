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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_128_bytes_like_the_shipped_tables() {
        // The shipped cos_sliding.npy is 4,194,432 B = 128-B header + 8192×256×2.
        let b = encode_f16_2d(8192, 256, &vec![f16::ONE; 8192 * 256]);
        assert_eq!(b.len(), 4_194_432);
        assert_eq!(u16::from_le_bytes([b[8], b[9]]) as usize + 10, 128);
        let header = std::str::from_utf8(&b[10..128]).unwrap();
        assert!(
            header.starts_with("{'descr': '<f2', 'fortran_order': False, 'shape': (8192, 256), }")
        );
        assert!(header.ends_with('\n'));
        assert_eq!(&b[128..130], &f16::ONE.to_le_bytes());
    }
}
