//! The files of a set against `manifest.json`: present, sizes, sha256, nothing unlisted.

use super::{Findings, HashPolicy, VerifyOptions, VerifyReport};
use chunkset::{ChunkSetManifest, FileEntry, MANIFEST_NAME};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Finder metadata, allowed anywhere without a manifest entry.
const DS_STORE: &str = ".DS_Store";

/// What is on disk under the set: regular files with their sizes, and entries that are neither a
/// regular file nor a directory.
struct Listing {
    files: BTreeMap<String, u64>,
    odd: Vec<String>,
    unreadable: Vec<(String, String)>,
}

fn walk(root: &Path, rel: &str, out: &mut Listing) {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => {
            out.unreadable.push((rel.to_string(), e.to_string()));
            return;
        }
    };
    for e in entries {
        let Ok(e) = e else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(root, &r, out),
            Ok(t) if t.is_file() => {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.files.insert(r, size);
            }
            Ok(_) => out.odd.push(r),
            Err(err) => out.unreadable.push((r, err.to_string())),
        }
    }
}

/// A manifest path the set may hold: relative, `/`-separated plain names.
fn safe_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn allowed_unlisted(rel: &str, opts: &VerifyOptions) -> bool {
    rel == MANIFEST_NAME
        || rel.rsplit('/').next() == Some(DS_STORE)
        || opts.allow_unlisted.iter().any(|a| a == rel)
}

/// Check every file against the manifest; returns the relative paths of the regular files present.
pub(super) fn check(
    dir: &Path,
    manifest: &ChunkSetManifest,
    opts: &VerifyOptions,
    f: &mut Findings,
    report: &mut VerifyReport,
) -> BTreeSet<String> {
    let mut disk = Listing {
        files: BTreeMap::new(),
        odd: Vec::new(),
        unreadable: Vec::new(),
    };
    walk(dir, "", &mut disk);
    for r in &disk.odd {
        f.mismatch(
            r,
            None,
            "not a regular file or directory (a set holds no symlinks or special files)".into(),
        );
    }
    for (r, e) in &disk.unreadable {
        f.unusable(r, None, format!("cannot be read: {e}"));
    }
    let mut listed: BTreeMap<&str, &FileEntry> = BTreeMap::new();
    for e in &manifest.files {
        if !safe_path(&e.path) {
            f.mismatch(
                MANIFEST_NAME,
                Some("files"),
                format!("`{}` is not a relative path inside the set", e.path),
            );
            continue;
        }
        if e.path == MANIFEST_NAME {
            f.mismatch(
                MANIFEST_NAME,
                Some("files"),
                "lists the manifest itself".into(),
            );
            continue;
        }
        if listed.insert(&e.path, e).is_some() {
            f.mismatch(
                MANIFEST_NAME,
                Some("files"),
                format!("`{}` is listed twice", e.path),
            );
        }
    }
    report.files = listed.len();
    report.bytes = listed.values().map(|e| e.size).sum();
    let mut to_hash = Vec::new();
    for (p, e) in &listed {
        match disk.files.get(*p) {
            None => f.unusable(
                p,
                None,
                format!("missing (listed in {MANIFEST_NAME}, {} bytes)", e.size),
            ),
            Some(&size) if size != e.size => f.mismatch(
                p,
                Some("size"),
                format!("is {size} bytes, {MANIFEST_NAME} says {}", e.size),
            ),
            Some(&size) => {
                let hash = match opts.hashes {
                    HashPolicy::All => true,
                    HashPolicy::UpTo(limit) => size <= limit,
                };
                if hash {
                    to_hash.push(*e);
                }
            }
        }
    }
    for p in disk.files.keys() {
        if !listed.contains_key(p.as_str()) && !allowed_unlisted(p, opts) {
            f.mismatch(
                p,
                None,
                format!("not listed in {MANIFEST_NAME} (a set holds only the files it lists)"),
            );
        }
    }
    let hashed: Vec<(&FileEntry, Result<String, String>)> = to_hash
        .par_iter()
        .map(|e| {
            let r = chunkset::sha256_file(&dir.join(&e.path))
                .map(|(_, h)| h)
                .map_err(|err| err.to_string());
            (*e, r)
        })
        .collect();
    for (e, r) in hashed {
        match r {
            Ok(h) if h == e.sha256 => {}
            Ok(h) => f.mismatch(
                &e.path,
                Some("sha256"),
                format!("is {h}, {MANIFEST_NAME} says {}", e.sha256),
            ),
            Err(err) => f.unusable(&e.path, None, format!("cannot be read: {err}")),
        }
        report.hashed_files += 1;
        report.hashed_bytes += e.size;
    }
    disk.files.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_stay_inside_the_set() {
        for ok in ["a", "hf_model/config.json", "x.mlpackage/Data/w.bin"] {
            assert!(safe_path(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b"] {
            assert!(!safe_path(bad), "{bad}");
        }
    }
}
