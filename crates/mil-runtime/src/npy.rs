//! The `.npy` tables of a set (RoPE): version 1.0 header, little-endian fp16 (`<f2`) or fp32
//! (`<f4`), C order, 2-D.

use half::f16;

/// A parsed 2-D table.
pub(crate) struct Npy {
    /// Bytes per element (2 or 4).
    pub width: usize,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// Parse `bytes` as a 2-D fp16 / fp32 `.npy` table; `Err` says what is wrong.
pub(crate) fn parse(bytes: &[u8]) -> Result<Npy, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = bytes
        .get(10..10 + hl)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated header")?;
    let width = if header.contains("'<f2'") {
        2
    } else if header.contains("'<f4'") {
        4
    } else {
        return Err("expected little-endian fp16 ('<f2') or fp32 ('<f4')".into());
    };
    if header.contains("'fortran_order': True") {
        return Err("Fortran order (expected C order)".into());
    }
    let dims: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| s.split(',').filter_map(|d| d.trim().parse().ok()).collect())
        .unwrap_or_default();
    let [rows, cols] = dims[..] else {
        return Err("expected a 2-D table".into());
    };
    let payload = &bytes[10 + hl..];
    let want = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(width))
        .ok_or("shape overflows")?;
    if payload.len() != want {
        return Err(format!(
            "{} bytes of data, the header's shape ({rows}, {cols}) needs {want}",
            payload.len()
        ));
    }
    let data = if width == 2 {
        payload
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    } else {
        payload
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    Ok(Npy {
        width,
        rows,
        cols,
        data,
    })
}
