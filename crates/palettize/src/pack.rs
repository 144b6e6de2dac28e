//! Sub-byte packing of LUT indices, LSB first (MIL blob storage v2 layout).
//!
//! Element `i` of an `nbits` stream occupies bits `[i·nbits, (i+1)·nbits)` of a little-endian bit
//! stream: bit 0 is the least significant bit of byte 0. Elements may straddle bytes (3 and 6
//! bits). The packed size is `ceil(n·nbits/8)` bytes and the unused high bits of the last byte
//! (`padding_bits`) are zero. This is the byte layout coremltools writes into `weight.bin` for
//! `uint1/2/3/4/6` blobs (spec §3), e.g. uint4 `[1,2,3,4,5]` → `21 43 05`; for 8 bits it is the
//! identity. MIL has index types for 1, 2, 3, 4, 6 and 8 bits only; 5 and 7 bits pack the same
//! way but have no MIL dtype.
//!
//! Input values must be `< 2^nbits` ([`pack`] checks). Both directions run sequentially; the
//! palettizer packs each group (or 8-element-aligned chunks) in parallel with the same routine.

use crate::error::PackError;

/// Bytes needed for `n` elements of `nbits` bits.
pub fn packed_len(n: usize, nbits: u8) -> usize {
    (n * nbits as usize).div_ceil(8)
}

/// Unused trailing bits of the last byte (`padding_size_in_bits` in the blob metadata).
pub fn padding_bits(n: usize, nbits: u8) -> u8 {
    ((8 - (n * nbits as usize) % 8) % 8) as u8
}

fn check_nbits(nbits: u8) -> Result<(), PackError> {
    if (1..=8).contains(&nbits) {
        Ok(())
    } else {
        Err(PackError::UnsupportedNbits { nbits })
    }
}

/// Pack `values` (each `< 2^nbits`) LSB first.
pub fn pack(values: &[u8], nbits: u8) -> Result<Vec<u8>, PackError> {
    check_nbits(nbits)?;
    if nbits < 8 {
        let limit = 1u16 << nbits;
        if let Some(index) = values.iter().position(|v| u16::from(*v) >= limit) {
            return Err(PackError::ValueTooLarge {
                index,
                value: values[index],
                nbits,
            });
        }
    }
    let mut out = vec![0u8; packed_len(values.len(), nbits)];
    pack_into(values, nbits, &mut out);
    Ok(out)
}

/// Pack already-validated values into `out` (length `packed_len(values.len(), nbits)`).
/// Values are masked to `nbits`; `nbits` must be in 1..=8.
pub(crate) fn pack_into(values: &[u8], nbits: u8, out: &mut [u8]) {
    match nbits {
        8 => out.copy_from_slice(values),
        4 => {
            for (o, pair) in out.iter_mut().zip(values.chunks(2)) {
                let hi = pair.get(1).copied().unwrap_or(0);
                *o = (pair[0] & 0x0f) | (hi << 4);
            }
        }
        _ => {
            let mask = (1u32 << nbits) - 1;
            let mut acc: u32 = 0;
            let mut bits: u32 = 0;
            let mut pos = 0;
            for &v in values {
                acc |= (u32::from(v) & mask) << bits;
                bits += u32::from(nbits);
                while bits >= 8 {
                    out[pos] = acc as u8;
                    pos += 1;
                    acc >>= 8;
                    bits -= 8;
                }
            }
            if bits > 0 {
                out[pos] = acc as u8;
            }
        }
    }
}

/// Unpack `n` elements of `nbits` bits; `bytes.len()` must be exactly `ceil(n·nbits/8)`.
pub fn unpack(bytes: &[u8], nbits: u8, n: usize) -> Result<Vec<u8>, PackError> {
    check_nbits(nbits)?;
    let expected = packed_len(n, nbits);
    if bytes.len() != expected {
        return Err(PackError::WrongLength {
            n,
            nbits,
            expected,
            actual: bytes.len(),
        });
    }
    let mut out = Vec::with_capacity(n);
    match nbits {
        8 => out.extend_from_slice(bytes),
        4 => {
            for &b in bytes {
                out.push(b & 0x0f);
                out.push(b >> 4);
            }
            out.truncate(n);
        }
        _ => {
            let mask = (1u32 << nbits) - 1;
            let mut acc: u32 = 0;
            let mut bits: u32 = 0;
            let mut it = bytes.iter();
            while out.len() < n {
                while bits < u32::from(nbits) {
                    // Length was checked, so the stream cannot run dry before n elements.
                    let b = it.next().copied().unwrap_or(0);
                    acc |= u32::from(b) << bits;
                    bits += 8;
                }
                out.push((acc & mask) as u8);
                acc >>= nbits;
                bits -= u32::from(nbits);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coremltools_vectors() {
        assert_eq!(pack(&[1, 2, 3, 4, 5], 4).unwrap(), [0x21, 0x43, 0x05]);
        assert_eq!(padding_bits(5, 4), 4);
        assert_eq!(pack(&[1, 2, 3, 4, 5, 6, 7], 3).unwrap(), [0xd1, 0x58, 0x1f]);
        assert_eq!(padding_bits(7, 3), 3);
        assert_eq!(pack(&[1, 63, 2], 6).unwrap(), [0xc1, 0x2f, 0x00]);
        assert_eq!(padding_bits(3, 6), 6);
        assert_eq!(pack(&[1, 0, 1, 1, 0, 0, 0, 0, 1], 1).unwrap(), [0x0d, 0x01]);
        assert_eq!(padding_bits(9, 1), 7);
        // Real 4-bit model: byte 0x78 -> idx[0]=8, idx[1]=7.
        assert_eq!(unpack(&[0x78], 4, 2).unwrap(), [8, 7]);
        assert_eq!(
            unpack(&[0xd1, 0x58, 0x1f], 3, 7).unwrap(),
            [1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(unpack(&[0xc1, 0x2f, 0x00], 6, 3).unwrap(), [1, 63, 2]);
        assert_eq!(
            unpack(&[0x0d, 0x01], 1, 9).unwrap(),
            [1, 0, 1, 1, 0, 0, 0, 0, 1]
        );
        assert_eq!(
            pack(&[3, 0, 2, 1, 3], 2).unwrap(),
            [0b0110_0011, 0b0000_0011]
        );
        assert_eq!(pack(&[200, 7], 8).unwrap(), [200, 7]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            pack(&[0, 16], 4).unwrap_err(),
            PackError::ValueTooLarge {
                index: 1,
                value: 16,
                nbits: 4
            }
        );
        assert!(matches!(
            pack(&[0], 0),
            Err(PackError::UnsupportedNbits { nbits: 0 })
        ));
        assert!(matches!(
            pack(&[0], 9),
            Err(PackError::UnsupportedNbits { nbits: 9 })
        ));
        assert!(matches!(
            unpack(&[0, 0], 4, 5),
            Err(PackError::WrongLength { expected: 3, .. })
        ));
        assert!(unpack(&[], 3, 0).unwrap().is_empty());
    }
}
