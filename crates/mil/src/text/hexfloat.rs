//! C99 hexadecimal floating point (`printf("%a")`), the form Core ML's compiler writes every float
//! literal in: `0x1p+0`, `-0x1.8p-3`, `0x0p+0`, `0x1.ff8p-15`.
//!
//! Values are formatted as the `double` they widen to (so an fp16 subnormal prints normalised,
//! `0x1p-24`); trailing zero hex digits of the fraction are dropped. `inf`, `-inf` and `nan` are
//! printf's spellings (no sample pins them; see `docs/MLMODELC.md`).

/// Format `x` like C's `printf("%a", x)`.
pub fn format(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x.is_infinite() {
        return format!("{sign}inf");
    }
    if x == 0.0 {
        return format!("{sign}0x0p+0");
    }
    let bits = x.to_bits();
    let raw_exp = ((bits >> 52) & 0x7ff) as i64;
    let mut mant = bits & ((1u64 << 52) - 1);
    let exp = if raw_exp == 0 {
        // subnormal double: normalise so the leading digit is 1
        let shift = mant.leading_zeros() as i64 - 11;
        mant = (mant << shift) & ((1u64 << 52) - 1);
        -1022 - shift
    } else {
        raw_exp - 1023
    };
    let mut digits = format!("{mant:013x}");
    while digits.ends_with('0') {
        digits.pop();
    }
    let frac = if digits.is_empty() {
        String::new()
    } else {
        format!(".{digits}")
    };
    let esign = if exp >= 0 { "+" } else { "" };
    format!("{sign}0x1{frac}p{esign}{exp}")
}

/// Multiply by 2^e exactly (no overflow/underflow surprises for the range MIL literals use).
fn ldexp(mut x: f64, mut e: i64) -> f64 {
    while e > 1000 {
        x *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 {
        x *= 2f64.powi(-1000);
        e += 1000;
    }
    x * 2f64.powi(e as i32)
}

/// Parse a float written by [`format`] (also plain decimal, `inf`, `-inf`, `nan`). `None` if `s`
/// is not a float.
pub fn parse(s: &str) -> Option<f64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if body == "inf" || body == "infinity" {
        f64::INFINITY
    } else if body == "nan" {
        f64::NAN
    } else if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        let (mant, exp) = hex.split_once(['p', 'P'])?;
        let exp: i64 = exp.parse().ok()?;
        let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let mut m: u64 = 0;
        let mut shift: i64 = 0;
        let mut extra = false;
        for (i, c) in int.chars().chain(frac.chars()).enumerate() {
            let d = u64::from(c.to_digit(16)?);
            if m >> 56 != 0 {
                // beyond 60 significant bits: keep the exponent right, note lost bits
                extra |= d != 0;
                if i < int.len() {
                    shift += 4;
                }
                continue;
            }
            m = (m << 4) | d;
            if i >= int.len() {
                shift -= 4;
            }
        }
        if extra {
            m |= 1; // sticky bit for rounding
        }
        ldexp(m as f64, exp + shift)
    } else {
        body.parse::<f64>().ok()?
    };
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn printf_a_spellings() {
        // the values of mlmodelc-export's coremlc fixtures (fp16-subnormal-cast, quantized-constexpr)
        let cases: [(f64, &str); 9] = [
            (1.0, "0x1p+0"),
            (-1.0, "-0x1p+0"),
            (0.5, "0x1p-1"),
            (0.0, "0x0p+0"),
            (-0.0, "-0x0p+0"),
            (f16::from_bits(0x0001).to_f64(), "0x1p-24"),
            (f16::from_bits(0x00a8).to_f64(), "0x1.5p-17"),
            (f16::from_bits(0x03ff).to_f64(), "0x1.ff8p-15"),
            (f64::from(std::f32::consts::PI), "0x1.921fb6p+1"),
        ];
        for (x, s) in cases {
            assert_eq!(format(x), s, "{x}");
            assert_eq!(parse(s).map(f64::to_bits), Some(x.to_bits()), "{s}");
        }
        assert_eq!(format(f64::NEG_INFINITY), "-inf");
        assert!(parse("nan").is_some_and(f64::is_nan));
        assert_eq!(parse("1.5e2"), Some(150.0));
        assert_eq!(parse("0x"), None);
        assert_eq!(parse("abc"), None);
    }

    #[test]
    fn every_f16_and_many_f32_round_trip() {
        for b in 0..=u16::MAX {
            let x = f16::from_bits(b).to_f64();
            if x.is_nan() {
                continue;
            }
            assert_eq!(
                parse(&format(x)).map(f64::to_bits),
                Some(x.to_bits()),
                "{b:#x}"
            );
        }
        let mut s: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let x = f64::from(f32::from_bits(s));
            if x.is_nan() {
                continue;
            }
            assert_eq!(
                parse(&format(x)).map(f64::to_bits),
                Some(x.to_bits()),
                "{s:#x}"
            );
        }
        assert_eq!(format(f64::MIN_POSITIVE / 4.0), "0x1p-1024");
        assert_eq!(parse("0x1p-1024"), Some(f64::MIN_POSITIVE / 4.0));
    }
}
