//! `analytics/coremldata.bin`: groups of string key/value pairs, every string preceded by its
//! length as a u64 LE, every group by its name and its entry count:
//!
//! ```text
//! "NeuralNetworkModelDetails" 2 { "containsCustomLayer": "0", "modelDimension": "0" }
//! "SpecificationDetails"      2 { "modelHash": base64(sha256(source model file)),
//!                                 "modelName": stem of the source model file }
//! ```
//!
//! Established from the samples: `modelHash` is the base64 SHA-256 of the `input.mlmodel` that
//! coremlc compiled, in all seven coremlc fixtures of mlmodelc-export; `modelName` is that file's
//! stem (`input`). The spec-7 sample was compiled from a package (its `modelName` is `model`, the
//! stem of the package's `model.mlmodel`, while `generatedClassName` is the package's name), so for
//! a package the hashed file is taken to be `Data/com.apple.CoreML/model.mlmodel` (inferred: its
//! source is not available to check the hash).

use sha2::{Digest, Sha256};

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `modelHash` of a source model file.
pub fn model_hash(model_file: &[u8]) -> String {
    base64(&Sha256::digest(model_file))
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn group(out: &mut Vec<u8>, name: &str, entries: &[(&str, &str)]) {
    string(out, name);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (k, v) in entries {
        string(out, k);
        string(out, v);
    }
}

/// The file for a source model file's bytes and stem.
pub fn encode(model_file: &[u8], model_name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    group(
        &mut out,
        "NeuralNetworkModelDetails",
        &[("containsCustomLayer", "0"), ("modelDimension", "0")],
    );
    let hash = model_hash(model_file);
    group(
        &mut out,
        "SpecificationDetails",
        &[("modelHash", &hash), ("modelName", model_name)],
    );
    out
}

/// One group: its name and its `(key, value)` entries.
pub type Group = (String, Vec<(String, String)>);

/// The groups of a file (for tests and tools).
pub fn decode(b: &[u8]) -> Option<Vec<Group>> {
    let mut pos = 0;
    let u64_at = |pos: &mut usize| -> Option<u64> {
        let v = u64::from_le_bytes(b.get(*pos..*pos + 8)?.try_into().ok()?);
        *pos += 8;
        Some(v)
    };
    let string = |pos: &mut usize| -> Option<String> {
        let n = usize::try_from(u64_at(pos)?).ok()?;
        let s = std::str::from_utf8(b.get(*pos..pos.checked_add(n)?)?).ok()?;
        *pos += n;
        Some(s.to_string())
    };
    let mut groups = Vec::new();
    while pos < b.len() {
        let name = string(&mut pos)?;
        let n = u64_at(&mut pos)?;
        let mut entries = Vec::new();
        for _ in 0..n {
            let k = string(&mut pos)?;
            let v = string(&mut pos)?;
            entries.push((k, v));
        }
        groups.push((name, entries));
    }
    Some(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn round_trip() {
        let b = encode(b"model bytes", "model");
        let g = decode(&b).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].1[0].1, model_hash(b"model bytes"));
        assert_eq!(g[1].1[1], ("modelName".to_string(), "model".to_string()));
    }
}
