//! The chunk-set `manifest.json` as a build writes it (the type and the file-set helpers are the
//! contract's, [`chunkset::manifest`] and [`chunkset::files`]): the checkpoint's files with their
//! sha256, the build facts of a plan, and the manifest of a finished set.

use crate::error::Result;
use crate::plan::{ChunkPlan, ChunkSpec};
use chunkset::manifest::TOOL;
use chunkset::{
    BuildFacts, BuildSpec, ChunkRange, ChunkSetManifest, FileEntry, MANIFEST_FORMAT, MANIFEST_NAME,
    SharedWeights, hash_tree_known, sha256_file,
};
use palettize::{Outcome, TensorRecord};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The checkpoint's config, index and weight files with their size and sha256 (by file name),
/// hashed in parallel.
pub fn model_files(ckpt: &gemma4::Checkpoint) -> Result<Vec<FileEntry>> {
    model_paths(ckpt)
        .par_iter()
        .map(|p| model_file(p))
        .collect()
}

/// [`model_files`] hashed one file after another on the calling thread (the build runs it in the
/// background, overlapped with emission).
pub fn model_files_sequential(ckpt: &gemma4::Checkpoint) -> Result<Vec<FileEntry>> {
    model_paths(ckpt).iter().map(|p| model_file(p)).collect()
}

fn model_file(p: &Path) -> Result<FileEntry> {
    let (size, sha256) = sha256_file(p)?;
    let path = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(FileEntry { path, size, sha256 })
}

fn model_paths(ckpt: &gemma4::Checkpoint) -> Vec<PathBuf> {
    let dir = ckpt.dir();
    let mut paths: Vec<PathBuf> = vec![dir.join("config.json")];
    let idx = dir.join("model.safetensors.index.json");
    if idx.exists() {
        paths.push(idx);
    }
    paths.extend(ckpt.files().into_iter().map(Path::to_path_buf));
    paths.sort();
    paths.dedup();
    paths
}

fn ranges(chunks: &[ChunkSpec]) -> Vec<ChunkRange> {
    chunks
        .iter()
        .map(|c| ChunkRange {
            name: c.name.clone(),
            layers: c.layer_bounds(),
        })
        .collect()
}

/// The build facts of `plan` built with `spec` (the palettized count is added by
/// [`write_manifest`]).
pub fn build_facts(
    spec: &BuildSpec,
    plan: &ChunkPlan,
    prefill_chunks: &[ChunkSpec],
    model_files: Vec<FileEntry>,
) -> BuildFacts {
    BuildFacts {
        spec: spec.clone(),
        sliding_producer: plan.sliding_producer,
        full_producer: plan.full_producer,
        chunks: ranges(&plan.chunks),
        prefill_chunks: spec.functions.prefill.map(|_| ranges(prefill_chunks)),
        shared_weights: spec.functions.prefill.map(|_| {
            prefill_chunks
                .iter()
                .filter_map(|p| {
                    plan.weight_twin(p).map(|c| SharedWeights {
                        decode: c.name.clone(),
                        prefill: p.name.clone(),
                    })
                })
                .collect()
        }),
        model_files,
        palettized_weights: None,
    }
}

/// Write `dir/manifest.json`: every file under `dir`, the command, the build facts with the number of
/// palettized weights, and the weights left uncompressed (`records` of every chunk, deduplicated by
/// name).
pub fn write_manifest(
    dir: &Path,
    command: &[String],
    build: &BuildFacts,
    records: &[TensorRecord],
) -> Result<Vec<FileEntry>> {
    write_manifest_known(dir, command, build, records, &BTreeMap::new())
}

/// [`write_manifest`], with the entries of files hashed while they were written (`known`, by
/// relative path; used when the size on disk matches). Returns the files listed.
pub fn write_manifest_known(
    dir: &Path,
    command: &[String],
    build: &BuildFacts,
    records: &[TensorRecord],
    known: &BTreeMap<String, FileEntry>,
) -> Result<Vec<FileEntry>> {
    let files = hash_tree_known(dir, known)?;
    let mut sorted: Vec<&TensorRecord> = records.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.dedup_by(|a, b| a.name == b.name);
    let uncompressed_weights = sorted
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Kept { .. }))
        .map(|r| (*r).clone())
        .collect();
    let palettized = sorted
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Palettized { .. }))
        .count();
    let m = ChunkSetManifest {
        format: MANIFEST_FORMAT.into(),
        tool: TOOL.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        command: command.to_vec(),
        build: BuildFacts {
            palettized_weights: Some(palettized),
            ..build.clone()
        },
        uncompressed_weights,
        files,
    };
    let p = dir.join(MANIFEST_NAME);
    std::fs::write(&p, m.to_json()?).map_err(|source| crate::error::ExportError::Io {
        path: p.clone(),
        source,
    })?;
    Ok(m.files)
}
