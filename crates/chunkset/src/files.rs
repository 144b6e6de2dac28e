//! The files of a chunk set as a whole: streamed sha256, the sorted file list, the file-by-file
//! comparison of two sets, and the reproducible zip.

use crate::error::{ContractError, io_err};
use crate::manifest::{FileEntry, MANIFEST_NAME};
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

/// Files at least this large are hashed through a memory map (no copy into a read buffer).
const MAP_AT: u64 = 1 << 24;

/// sha256 of a file (memory-mapped when large, else streamed).
pub fn sha256_file(path: &Path) -> Result<(u64, String), ContractError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    if len >= MAP_AT {
        // SAFETY: read-only private map, dropped before returning; the files hashed are the
        // checkpoint (read-only input) and the set being published, which nothing rewrites while
        // the build runs.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(io_err(path))?;
        let mut h = Sha256::new();
        for block in map.chunks(1 << 20) {
            h.update(block);
        }
        return Ok((map.len() as u64, hex::encode(h.finalize())));
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex::encode(h.finalize())))
}

/// A writer that computes the sha256 and size of everything written through it, so a file's
/// manifest entry is known without reading it back.
pub struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hash: Sha256::new(),
            size: 0,
        }
    }

    /// The inner writer, the number of bytes written and their sha256 (lowercase hex).
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.size, hex::encode(self.hash.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Every regular file under `root` (relative `/` paths, sorted), skipping `skip` at the top level.
pub fn list_files(root: &Path, skip: &[&str]) -> Result<Vec<String>, ContractError> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), ContractError> {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        for e in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type().map_err(io_err(&e.path()))?;
            if ft.is_dir() {
                walk(root, &r, out)?;
            } else if ft.is_file() {
                out.push(r);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, "", &mut out)?;
    out.retain(|p| !skip.contains(&p.as_str()));
    out.sort();
    Ok(out)
}

/// Hash every file under `root` except the manifest (in parallel; result sorted by path).
pub fn hash_tree(root: &Path) -> Result<Vec<FileEntry>, ContractError> {
    hash_tree_known(root, &BTreeMap::new())
}

/// [`hash_tree`], taking the entry of a file from `known` (by relative path) instead of reading
/// it when its size on disk is the size recorded there (hashes computed while the file was
/// written, [`HashingWriter`]).
pub fn hash_tree_known(
    root: &Path,
    known: &BTreeMap<String, FileEntry>,
) -> Result<Vec<FileEntry>, ContractError> {
    let files = list_files(root, &[MANIFEST_NAME])?;
    files
        .par_iter()
        .map(|p| {
            let path = root.join(p);
            if let Some(k) = known.get(p) {
                let len = std::fs::metadata(&path).map_err(io_err(&path))?.len();
                if len == k.size {
                    return Ok(FileEntry {
                        path: p.clone(),
                        size: k.size,
                        sha256: k.sha256.clone(),
                    });
                }
            }
            let (size, sha256) = sha256_file(&path)?;
            Ok(FileEntry {
                path: p.clone(),
                size,
                sha256,
            })
        })
        .collect()
}

/// How two sets differ, file by file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SetDiff {
    pub identical: Vec<String>,
    pub differ: Vec<String>,
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
}

impl SetDiff {
    /// True if both sets hold the same files with the same bytes.
    pub fn is_identical(&self) -> bool {
        self.differ.is_empty() && self.only_in_a.is_empty() && self.only_in_b.is_empty()
    }
}

/// Compare two sets by hashing their files (the manifests themselves are compared too).
pub fn compare_sets(a: &Path, b: &Path) -> Result<SetDiff, ContractError> {
    let ha: BTreeMap<String, String> = hash_all(a)?;
    let hb: BTreeMap<String, String> = hash_all(b)?;
    let mut d = SetDiff::default();
    for (p, sa) in &ha {
        match hb.get(p) {
            Some(sb) if sb == sa => d.identical.push(p.clone()),
            Some(_) => d.differ.push(p.clone()),
            None => d.only_in_a.push(p.clone()),
        }
    }
    d.only_in_b = hb
        .keys()
        .filter(|p| !ha.contains_key(*p))
        .cloned()
        .collect();
    Ok(d)
}

fn hash_all(root: &Path) -> Result<BTreeMap<String, String>, ContractError> {
    let files = list_files(root, &[])?;
    let v: Result<Vec<(String, String)>, ContractError> = files
        .par_iter()
        .map(|p| Ok((p.clone(), sha256_file(&root.join(p))?.1)))
        .collect();
    Ok(v?.into_iter().collect())
}

/// Write a reproducible zip of `root` (entries sorted, fixed 1980-01-01 timestamps, mode 0644,
/// deflate level 6 for side files, stored for already-dense weight files). The zip is written to a
/// temporary name and renamed, so a failure leaves nothing behind.
pub fn write_zip(root: &Path, zip_path: &Path, prefix: &str) -> Result<(), ContractError> {
    let zerr = |msg: String| ContractError::Zip {
        path: zip_path.to_path_buf(),
        msg,
    };
    let files = list_files(root, &[])?;
    let tmp = zip_path.with_extension("zip.partial");
    let result = (|| {
        let f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut z = zip::ZipWriter::new(std::io::BufWriter::new(f));
        for p in &files {
            let method = if p.ends_with("weight.bin") || p.ends_with("_q8.bin") {
                zip::CompressionMethod::Stored
            } else {
                zip::CompressionMethod::Deflated
            };
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(method)
                .compression_level(if method == zip::CompressionMethod::Deflated {
                    Some(6)
                } else {
                    None
                })
                .last_modified_time(zip::DateTime::default())
                .unix_permissions(0o644)
                .large_file(true);
            let name = if prefix.is_empty() {
                p.clone()
            } else {
                format!("{prefix}/{p}")
            };
            z.start_file(name, opts).map_err(|e| zerr(e.to_string()))?;
            let src = root.join(p);
            let mut r = std::fs::File::open(&src).map_err(io_err(&src))?;
            std::io::copy(&mut r, &mut z).map_err(io_err(&src))?;
        }
        let mut w = z.finish().map_err(|e| zerr(e.to_string()))?;
        w.flush().map_err(io_err(&tmp))?;
        drop(w);
        std::fs::rename(&tmp, zip_path).map_err(io_err(zip_path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(dir: &Path, files: &[(&str, &[u8])]) {
        for (p, b) in files {
            let path = dir.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b).unwrap();
        }
    }

    #[test]
    fn compare_reports_each_kind_of_difference() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        set(
            a.path(),
            &[("x/1", b"same"), ("x/2", b"aaa"), ("only_a", b"")],
        );
        set(
            b.path(),
            &[("x/1", b"same"), ("x/2", b"bbb"), ("only_b", b"")],
        );
        let d = compare_sets(a.path(), b.path()).unwrap();
        assert_eq!(d.identical, vec!["x/1"]);
        assert_eq!(d.differ, vec!["x/2"]);
        assert_eq!(d.only_in_a, vec!["only_a"]);
        assert_eq!(d.only_in_b, vec!["only_b"]);
        assert!(!d.is_identical());
    }

    #[test]
    fn hashes_taken_while_writing_are_used_only_when_the_size_matches() {
        let a = tempfile::tempdir().unwrap();
        let payload: Vec<u8> = (0..(MAP_AT as usize + 777))
            .map(|i| (i * 31) as u8)
            .collect();
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&payload[..1000]).unwrap();
        w.write_all(&payload[1000..]).unwrap();
        let (bytes, size, sha) = w.finish();
        assert_eq!(bytes, payload);
        set(a.path(), &[("big.bin", &payload), ("small", b"abc")]);
        // a large file is hashed through a map, a small one streamed: same digests as the writer's
        assert_eq!(
            sha256_file(&a.path().join("big.bin")).unwrap(),
            (size, sha.clone())
        );
        let plain = hash_tree(a.path()).unwrap();
        let entry = |path: &str, size: u64, sha256: &str| FileEntry {
            path: path.into(),
            size,
            sha256: sha256.into(),
        };
        // a known entry of the right size is taken as is (here deliberately not the file's hash,
        // to see it used), one whose size differs is ignored and the file hashed
        let known: BTreeMap<String, FileEntry> = [
            ("big.bin".to_string(), entry("big.bin", size, "feed")),
            ("small".to_string(), entry("small", 99, "beef")),
        ]
        .into_iter()
        .collect();
        let got = hash_tree_known(a.path(), &known).unwrap();
        assert_eq!(got[0], entry("big.bin", size, "feed"));
        assert_eq!(got[1], plain[1]);
        assert_eq!(plain[0], entry("big.bin", size, &sha));
    }

    #[test]
    fn zip_is_reproducible() {
        let a = tempfile::tempdir().unwrap();
        set(
            a.path(),
            &[("b/weight.bin", &[7u8; 300]), ("a.json", b"{}")],
        );
        let out = tempfile::tempdir().unwrap();
        let z1 = out.path().join("1.zip");
        let z2 = out.path().join("2.zip");
        write_zip(a.path(), &z1, "set").unwrap();
        // touch files: mtimes must not matter
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(a.path().join("a.json"), b"{}").unwrap();
        write_zip(a.path(), &z2, "set").unwrap();
        assert_eq!(std::fs::read(&z1).unwrap(), std::fs::read(&z2).unwrap());
    }
}
