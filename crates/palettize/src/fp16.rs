//! fp16 helpers: correctly rounded f64 → fp16 and the non-finite test.
//!
//! [`f64_to_f16`] rounds an `f64` to the nearest fp16 (ties to even) in **one** step, like
//! NumPy's `astype(np.float16)`. `half::f16::from_f64` goes through `f32` on x86 with F16C, which
//! can double-round; LUT entries must not depend on the CPU, so we do not use it.

use half::f16;

/// Largest finite fp16 magnitude, 65504.
const F16_MAX: f64 = 65504.0;

/// Round `x` to the nearest fp16 value, ties to even, overflow to ±inf, NaN to a quiet NaN.
///
/// Exact for every input: the scaling by powers of two below is exact in `f64`, and
/// `round_ties_even` is a single rounding.
pub fn f64_to_f16(x: f64) -> f16 {
    f16::from_bits(f64_to_f16_bits(x))
}

/// Bit pattern of [`f64_to_f16`].
pub fn f64_to_f16_bits(x: f64) -> u16 {
    if x.is_nan() {
        return 0x7e00;
    }
    let sign: u16 = if x.is_sign_negative() { 0x8000 } else { 0 };
    let a = x.abs();
    // Midpoint between 65504 and 65536 (= 2^16, not representable) rounds to even = infinity.
    if a >= F16_MAX + 16.0 {
        return sign | 0x7c00;
    }
    // Subnormal range (and zero): value = m * 2^-24.
    if a < 2f64.powi(-14) {
        let m = (a * 2f64.powi(24)).round_ties_even();
        // m == 1024 encodes the smallest normal 2^-14, which is exactly bits 0x0400.
        return sign | (m as u16);
    }
    // Normal: a = 2^e * (1 + f), 1024 <= a / 2^(e-10) < 2048.
    let e = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let mut m = (a * 2f64.powi(10 - e)).round_ties_even();
    let mut e16 = e + 15;
    if m >= 2048.0 {
        m = 1024.0;
        e16 += 1;
    }
    if e16 >= 31 {
        return sign | 0x7c00;
    }
    sign | ((e16 as u16) << 10) | ((m as u16) - 1024)
}

/// Exact value of a finite fp16 bit pattern as `f64` (inlinable; no CPU-feature dispatch).
/// Non-finite patterns map to ±inf (NaN payloads are not preserved).
#[inline]
pub fn f16_bits_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = (bits >> 10) & 0x1f;
    let mant = u64::from(bits & 0x03ff);
    let mag = match exp {
        0 => mant as f64 * (1.0 / 16_777_216.0), // subnormal: mant · 2^-24
        31 => f64::INFINITY,
        e => f64::from_bits(((u64::from(e) + 1023 - 15) << 52) | (mant << 42)),
    };
    sign * mag
}

/// True if the fp16 bit pattern is NaN or ±infinity.
#[inline]
pub fn is_non_finite(bits: u16) -> bool {
    bits & 0x7c00 == 0x7c00
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_exact_reference_on_all_midpoints() {
        // For every pair of adjacent finite positive fp16 values, the midpoint must round to the
        // one with an even mantissa, and points just off the midpoint to the nearer one.
        for bits in 0u16..0x7bff {
            let lo = f16::from_bits(bits).to_f64();
            let hi = f16::from_bits(bits + 1).to_f64();
            let mid = (lo + hi) / 2.0; // exact in f64
            let even = if bits % 2 == 0 { bits } else { bits + 1 };
            assert_eq!(f64_to_f16_bits(mid), even, "midpoint of {bits:#x}");
            assert_eq!(f64_to_f16_bits(-mid), 0x8000 | even);
            let below = mid - (hi - lo) * 1e-6;
            let above = mid + (hi - lo) * 1e-6;
            assert_eq!(f64_to_f16_bits(below), bits);
            assert_eq!(f64_to_f16_bits(above), bits + 1);
            assert_eq!(f64_to_f16_bits(lo), bits);
        }
    }

    #[test]
    fn double_rounding_case_differs_from_f32_path() {
        // 1 + 2^-11 + 2^-40: just above the fp16 midpoint between 1 and 1+2^-10, so it must round
        // up; rounding through f32 first lands exactly on the midpoint and then rounds to even (1).
        let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(f64_to_f16_bits(x), 0x3c01);
        assert_eq!(f16::from_f32(x as f32).to_bits(), 0x3c00);
    }

    #[test]
    fn f16_to_f64_exact_for_all_finite() {
        for b in 0..=u16::MAX {
            if !is_non_finite(b) {
                assert_eq!(f16_bits_to_f64(b), f16::from_bits(b).to_f64(), "{b:#x}");
            }
        }
    }

    #[test]
    fn overflow_and_specials() {
        assert_eq!(f64_to_f16_bits(65504.0), 0x7bff);
        assert_eq!(f64_to_f16_bits(65519.99), 0x7bff);
        assert_eq!(f64_to_f16_bits(65520.0), 0x7c00);
        assert_eq!(f64_to_f16_bits(-1e9), 0xfc00);
        assert_eq!(f64_to_f16_bits(0.0), 0);
        assert_eq!(f64_to_f16_bits(-0.0), 0x8000);
        assert_eq!(f64_to_f16_bits(2f64.powi(-25)), 0); // tie between 0 and 2^-24 -> even (0)
        assert_eq!(f64_to_f16_bits(3.0 * 2f64.powi(-25)), 2); // tie between 1 and 2 ulps -> 2
        assert!(is_non_finite(0x7c00) && is_non_finite(0xfe00) && !is_non_finite(0x7bff));
    }
}
