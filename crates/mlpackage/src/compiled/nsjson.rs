//! `metadata.json` is written by Foundation's `NSJSONSerialization` (pretty-printed, `" : "`
//! separators, two-space indent) from `NSMutableDictionary`s, so its key order is the dictionary's
//! bucket order. This module reproduces that order:
//!
//! * the key hash is CoreFoundation's `CFStringHash` (`__CFStrHashCharacters` over UTF-16 code
//!   units; every character for strings of at most 96 units, else the first, middle and last 32);
//! * the table is open addressing with linear probing, `slot = hash % size`, over the prime sizes
//!   3, 7, 13, 23, 41, 71, … with capacities 3, 6, 11, 19, 32, 52, …; a full table grows to the
//!   next size and re-inserts its keys in bucket order;
//! * enumeration (and so the JSON) is in bucket order.
//!
//! Established from the samples: every dictionary of `shared/samples/compiled/*/metadata.json`
//! and of the coremlc fixtures of mlmodelc-export (sizes 3, 7, 13, 23, including a 7-key
//! operation histogram whose order needs the growth and re-insertion step) is reproduced by this
//! model with one fixed insertion order per kind of dictionary (`metadata.rs`). Larger sizes (41
//! and up) follow the same table of primes but no sample exercises them (docs/MLMODELC.md).

/// `CFStringHash` of a string.
pub fn cf_string_hash(s: &str) -> u64 {
    let u: Vec<u16> = s.encode_utf16().collect();
    let len = u.len();
    let mut r: u64 = len as u64;
    let four = |r: u64, c: &[u16]| -> u64 {
        r.wrapping_mul(67_503_105)
            .wrapping_add(u64::from(c[0]).wrapping_mul(16_974_593))
            .wrapping_add(u64::from(c[1]).wrapping_mul(66_049))
            .wrapping_add(u64::from(c[2]).wrapping_mul(257))
            .wrapping_add(u64::from(c[3]))
    };
    if len <= 96 {
        let mut chunks = u.chunks_exact(4);
        for c in &mut chunks {
            r = four(r, c);
        }
        for &c in chunks.remainder() {
            r = r.wrapping_mul(257).wrapping_add(u64::from(c));
        }
    } else {
        let mid = (len >> 1) - 16;
        for range in [0..32, mid..mid + 32, len - 32..len] {
            for c in u[range].chunks_exact(4) {
                r = four(r, c);
            }
        }
    }
    r.wrapping_add(r << (len & 31))
}

/// Table sizes (primes) and the capacity at which each is full.
const SIZES: [usize; 13] = [0, 3, 7, 13, 23, 41, 71, 127, 191, 251, 383, 631, 1087];
const CAPACITIES: [usize; 13] = [0, 3, 6, 11, 19, 32, 52, 85, 118, 155, 237, 390, 672];

/// The largest number of keys [`enumeration_order`] handles.
pub const MAX_KEYS: usize = 672;

fn insert(table: &mut [Option<usize>], hashes: &[u64], k: usize) {
    let size = table.len();
    let mut slot = (hashes[k] % size as u64) as usize;
    while table[slot].is_some() {
        slot = (slot + 1) % size;
    }
    table[slot] = Some(k);
}

/// Enumeration order of an `NSMutableDictionary` filled with `keys` in this order (duplicates
/// keep their first place): indices into `keys`. `None` beyond [`MAX_KEYS`] keys.
pub fn enumeration_order(keys: &[&str]) -> Option<Vec<usize>> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<usize> = (0..keys.len()).filter(|&i| seen.insert(keys[i])).collect();
    if unique.len() > MAX_KEYS {
        return None;
    }
    let hashes: Vec<u64> = keys.iter().map(|k| cf_string_hash(k)).collect();
    let mut level = 0;
    let mut table: Vec<Option<usize>> = Vec::new();
    for (n, &k) in unique.iter().enumerate() {
        if n + 1 > CAPACITIES[level] {
            let old: Vec<usize> = table.iter().flatten().copied().collect();
            level += 1;
            table = vec![None; SIZES[level]];
            for o in old {
                insert(&mut table, &hashes, o);
            }
        }
        insert(&mut table, &hashes, k);
    }
    Some(table.into_iter().flatten().collect())
}

/// A JSON value whose object keys are already in output order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Str(String),
    Int(i64),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// `s` as a JSON string.
    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }
}

/// An object whose keys were inserted in the order of `entries`, laid out in
/// `NSMutableDictionary` enumeration order. `None` beyond [`MAX_KEYS`] keys.
pub fn ns_object(entries: Vec<(String, Json)>) -> Option<Json> {
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    let order = enumeration_order(&keys)?;
    let mut slots: Vec<Option<(String, Json)>> = entries.into_iter().map(Some).collect();
    Some(Json::Obj(
        order.into_iter().filter_map(|i| slots[i].take()).collect(),
    ))
}

fn escape(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write(v: &Json, indent: usize, out: &mut String) {
    let pad = |n: usize| " ".repeat(n);
    match v {
        Json::Str(s) => escape(s, out),
        Json::Int(i) => out.push_str(&i.to_string()),
        Json::Arr(items) => {
            out.push_str("[\n");
            if items.is_empty() {
                out.push('\n');
            }
            for (i, x) in items.iter().enumerate() {
                out.push_str(&pad(indent + 2));
                write(x, indent + 2, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Json::Obj(entries) => {
            out.push_str("{\n");
            if entries.is_empty() {
                out.push('\n');
            }
            for (i, (k, x)) in entries.iter().enumerate() {
                out.push_str(&pad(indent + 2));
                escape(k, out);
                out.push_str(" : ");
                write(x, indent + 2, out);
                out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
    }
}

/// `NSJSONSerialization` pretty-printed text of `v` (strings escape `/` as `\/`, as Foundation
/// does; non-ASCII characters are written as UTF-8).
pub fn to_text(v: &Json) -> String {
    let mut out = String::new();
    write(v, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_model_top_level_order() {
        // the 14 top-level keys of shared/samples/compiled/add_model.mlmodelc/metadata.json, in the
        // order they come out, inserted in that order (no collision changes places here)
        let keys = [
            "metadataOutputVersion",
            "outputSchema",
            "modelParameters",
            "specificationVersion",
            "mlProgramOperationTypeHistogram",
            "computePrecision",
            "isUpdatable",
            "stateSchema",
            "availability",
            "modelType",
            "userDefinedMetadata",
            "inputSchema",
            "generatedClassName",
            "method",
        ];
        let order = enumeration_order(&keys).unwrap();
        assert_eq!(order, (0..14).collect::<Vec<_>>());
        // the two keys that collide (both hash to slot 16 or 17 of 23) come out in insertion
        // order: inserting inputSchema first puts it first
        let mut swapped = keys;
        swapped.swap(10, 11);
        let order = enumeration_order(&swapped).unwrap();
        let out: Vec<&str> = order.iter().map(|&i| swapped[i]).collect();
        assert_eq!(out[10], "inputSchema");
        assert_eq!(out[11], "userDefinedMetadata");
    }

    #[test]
    fn growth_reorders_like_the_coremlc_histogram() {
        // flexible-gather (mlmodelc-export fixture): op types in first-use order …
        let first_use = [
            "Ios17.cast",
            "Ios17.less",
            "Ios17.mul",
            "Ios17.add",
            "Ios17.maximum",
            "Ios17.minimum",
            "Ios17.gather",
        ];
        let order = enumeration_order(&first_use).unwrap();
        let out: Vec<&str> = order.iter().map(|&i| first_use[i]).collect();
        // … come out in the order coremlc wrote them
        assert_eq!(
            out,
            [
                "Ios17.gather",
                "Ios17.cast",
                "Ios17.less",
                "Ios17.mul",
                "Ios17.maximum",
                "Ios17.add",
                "Ios17.minimum"
            ]
        );
    }

    #[test]
    fn long_strings_hash_three_windows() {
        let a = "x".repeat(200);
        let mut b = a.clone();
        b.replace_range(40..41, "y"); // outside the first, middle and last 32 units
        assert_eq!(cf_string_hash(&a), cf_string_hash(&b));
        b.replace_range(5..6, "y");
        assert_ne!(cf_string_hash(&a), cf_string_hash(&b));
    }

    #[test]
    fn pretty_printing() {
        let v = Json::Arr(vec![Json::Obj(vec![
            ("a".into(), Json::Arr(vec![])),
            ("b".into(), Json::Obj(vec![])),
            ("c/d".into(), Json::str("x\"/\u{1}×")),
            ("e".into(), Json::Int(7)),
        ])]);
        assert_eq!(
            to_text(&v),
            "[\n  {\n    \"a\" : [\n\n    ],\n    \"b\" : {\n\n    },\n    \"c\\/d\" : \"x\\\"\\/\\u0001×\",\n    \"e\" : 7\n  }\n]"
        );
    }
}
