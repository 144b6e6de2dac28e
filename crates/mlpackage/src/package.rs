//! Reading and writing whole `.mlpackage` directories.
//!
//! ```text
//! X.mlpackage/
//! ├── Manifest.json
//! └── Data/com.apple.CoreML/
//!     ├── model.mlmodel        CoreML.Specification.Model (specificationVersion, description, mlProgram)
//!     └── weights/weight.bin   blob storage (only written when the program has blob literals)
//! ```
//! Writing is atomic: everything is built (and fsynced) in a temporary directory beside the
//! destination, which is renamed into place at the end; an existing destination is refused unless
//! [`WriteOptions::overwrite`] is set, in which case it is moved aside, replaced and then deleted.
//! On error the temporary directory is removed and the destination is untouched.
//!
//! Output is deterministic: the same [`Package`] gives byte-identical files (BTreeMap proto maps,
//! blobs in program order, name-derived manifest identifiers, no timestamps).
//!
//! A [`PackageGroup`] writes several packages around one `weight.bin` (the blobs of every member,
//! in the order the members are added), copied byte for byte into each: what lets a runtime
//! hard-link the weight files of a decode chunk and of the prefill chunk holding the same layers.
//!
//! Reading validates the manifest (and that its item paths exist), decodes the model, checks that
//! it is an ML Program with a known specification version, memory-maps and validates `weight.bin`,
//! lifts the program (tensor payloads stay zero-copy slices of the map) and decodes the description.
//! Unknown op types are not rejected here — run the `mil` validator for that.

use crate::convert::lift::Lifter;
use crate::convert::lower::Lowerer;
use crate::description::Description;
use crate::error::{PackageError, WeightsError};
use crate::manifest::{MODEL_ITEM_PATH, Manifest, WEIGHTS_ITEM_PATH};
use crate::weights::{BlobReader, BlobWriter};
use coreml_proto::specification::{self as spec, model};
use coreml_proto::{SPEC_VERSION_IOS18, opset_for_spec_version};
use mil::{Buffer, Program};
use prost::Message;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A model package in memory: the program, its description and the specification version.
#[derive(Clone, Debug, PartialEq)]
pub struct Package {
    /// The MIL program (tensor literals read from disk are zero-copy slices of `weight.bin`).
    pub program: Program,
    /// The model description (interface and metadata).
    pub description: Description,
    /// `Model.specificationVersion` ([`SPEC_VERSION_IOS18`] = 9 by default).
    pub spec_version: i32,
}

impl Package {
    /// A package for iOS 18 (specification version 9).
    pub fn new(program: Program, description: Description) -> Package {
        Package {
            program,
            description,
            spec_version: SPEC_VERSION_IOS18,
        }
    }
}

/// Options of [`write_package`].
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Replace an existing destination (atomically as far as the file system allows).
    pub overwrite: bool,
}

/// What [`write_package`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteReport {
    /// The package directory.
    pub path: PathBuf,
    /// Size of `model.mlmodel`.
    pub model_bytes: u64,
    /// Size of `weight.bin` (0 when absent).
    pub weight_bytes: u64,
    /// Distinct blobs in `weight.bin`.
    pub blob_count: u32,
    /// Blob references in the program (≥ `blob_count`; the difference was deduplicated).
    pub blob_references: usize,
}

/// Paths inside a package.
fn manifest_path(pkg: &Path) -> PathBuf {
    pkg.join("Manifest.json")
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T, PackageError> {
    r.map_err(|e| PackageError::io(path, e))
}

fn sync_dir(path: &Path) -> Result<(), PackageError> {
    // Directory fsync makes the renames durable; not supported everywhere, so best effort only on
    // platforms where opening a directory fails.
    match File::open(path) {
        Ok(d) => io(path, d.sync_all()),
        Err(_) => Ok(()),
    }
}

/// Encode the `Model` proto of a package (blob literals go to `sink`).
fn encode_model(
    pkg: &Package,
    model_path: &Path,
    sink: &mut dyn FnMut(&mil::TensorValue) -> Result<u64, WeightsError>,
) -> Result<Vec<u8>, PackageError> {
    if opset_for_spec_version(pkg.spec_version).is_none() {
        return Err(PackageError::SpecVersion {
            path: model_path.to_path_buf(),
            found: pkg.spec_version,
        });
    }
    pkg.description
        .check(&pkg.program)
        .map_err(|source| PackageError::Description {
            path: model_path.to_path_buf(),
            source,
        })?;
    let mut lowerer = Lowerer {
        spec_version: pkg.spec_version,
        sink,
    };
    let program = lowerer
        .program(&pkg.program)
        .map_err(|e| PackageError::Program {
            path: model_path.to_path_buf(),
            location: e.location,
            source: e.error,
        })?;
    let model = spec::Model {
        specification_version: pkg.spec_version,
        description: Some(pkg.description.to_proto()),
        is_updatable: false,
        r#type: Some(model::Type::MlProgram(program)),
    };
    Ok(model.encode_to_vec())
}

/// Encode a package in memory: the `model.mlmodel` bytes and the `weight.bin` bytes (`None` when
/// the program has no blob literals). Same bytes as [`write_package`] writes.
pub fn encode_in_memory(pkg: &Package) -> Result<(Vec<u8>, Option<Buffer>), PackageError> {
    let model_path = Path::new("Data").join(MODEL_ITEM_PATH);
    let weight_path = Path::new("Data").join(WEIGHTS_ITEM_PATH).join("weight.bin");
    let wrap = |source: WeightsError| PackageError::Weights {
        path: weight_path.clone(),
        source,
    };
    let mut blobs = BlobWriter::new(std::io::Cursor::new(Vec::new())).map_err(wrap)?;
    let model = encode_model(pkg, &model_path, &mut |t: &mil::TensorValue| {
        blobs.write_tensor(t)
    })?;
    let weights = if blobs.is_empty() {
        None
    } else {
        Some(Buffer::from_vec(blobs.finish().map_err(wrap)?.into_inner()))
    };
    Ok((model, weights))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), PackageError> {
    let mut f = io(path, File::create(path))?;
    io(path, f.write_all(bytes))?;
    io(path, f.sync_all())
}

/// The directory a destination lives in (`.` for a bare name).
fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `weight.bin` inside a package directory.
fn weight_file(pkg: &Path) -> PathBuf {
    pkg.join("Data").join(WEIGHTS_ITEM_PATH).join("weight.bin")
}

/// One encoded member of a [`PackageGroup`].
struct Member {
    dest: PathBuf,
    model: Vec<u8>,
    references: usize,
}

/// Packages written around **one** `weight.bin`: the blob literals of every package added go into
/// the same weight file (in the order the packages are added, identical contents stored once), and
/// every package of the group gets a byte-identical copy of it (a hard link of one file where the
/// filesystem allows, a copy otherwise), so each package's blob offsets are valid in every other's
/// weight file. This is what lets a runtime hard-link the weight file of a
/// decode chunk and of the prefill chunk holding the same layers (each package still loads on its
/// own; blobs only another member references are carried unused).
///
/// Packages are encoded as they are added (only the encoded model bytes are kept, the program can
/// be dropped); the weight file is streamed to a temporary directory and [`PackageGroup::finish`]
/// writes every package atomically as [`write_package`] does. A group of one package writes exactly
/// what [`write_package`] writes. Dropping an unfinished group removes everything it wrote.
pub struct PackageGroup {
    /// Holds the weight file while packages are added (removed on drop).
    tmp: tempfile::TempDir,
    weight_path: PathBuf,
    blobs: BlobWriter<BufWriter<File>>,
    members: Vec<Member>,
    overwrite: bool,
}

impl PackageGroup {
    /// An empty group whose temporary weight file lives in `dir` (the directory the packages will
    /// be written to, so the file can be moved into place).
    pub fn new(dir: &Path, options: &WriteOptions) -> Result<PackageGroup, PackageError> {
        let tmp = io(
            dir,
            tempfile::Builder::new()
                .prefix(".weights.tmp-")
                .tempdir_in(dir),
        )?;
        let weight_path = tmp.path().join("weight.bin");
        let file = io(&weight_path, File::create(&weight_path))?;
        let blobs =
            BlobWriter::new(BufWriter::new(file)).map_err(|source| PackageError::Weights {
                path: weight_path.clone(),
                source,
            })?;
        Ok(PackageGroup {
            tmp,
            weight_path,
            blobs,
            members: Vec::new(),
            overwrite: options.overwrite,
        })
    }

    /// Encode `pkg` to be written at `dest` by [`PackageGroup::finish`]; its literals join the
    /// group's weight file now. An existing `dest` is refused unless the group overwrites.
    pub fn add(&mut self, pkg: &Package, dest: &Path) -> Result<(), PackageError> {
        if dest.symlink_metadata().is_ok() && !self.overwrite {
            return Err(PackageError::DestinationExists {
                path: dest.to_path_buf(),
            });
        }
        if self.members.iter().any(|m| m.dest == dest) {
            return Err(PackageError::DestinationExists {
                path: dest.to_path_buf(),
            });
        }
        let model_path = dest.join("Data").join(MODEL_ITEM_PATH);
        let weight_path = weight_file(dest);
        let before = self.blobs.references();
        let blobs = &mut self.blobs;
        let model = encode_model(pkg, &model_path, &mut |t: &mil::TensorValue| {
            blobs.write_tensor(t)
        })
        .map_err(|e| match e {
            PackageError::Weights { source, .. } => PackageError::Weights {
                path: weight_path.clone(),
                source,
            },
            e => e,
        })?;
        self.members.push(Member {
            dest: dest.to_path_buf(),
            model,
            references: self.blobs.references() - before,
        });
        Ok(())
    }

    /// Write every package of the group (each atomically, in the order added); returns their
    /// reports. Without any blob literal in the group, no package gets a `weight.bin`.
    pub fn finish(self) -> Result<Vec<WriteReport>, PackageError> {
        let PackageGroup {
            tmp,
            weight_path,
            blobs,
            members,
            overwrite,
        } = self;
        let wrap = |source: WeightsError| PackageError::Weights {
            path: weight_path.clone(),
            source,
        };
        let (count, weight_bytes, has_weights) =
            (blobs.blob_count(), blobs.len(), !blobs.is_empty());
        let out = blobs.finish().map_err(wrap)?;
        let file = out
            .into_inner()
            .map_err(|e| PackageError::io(&weight_path, e.into_error()))?;
        io(&weight_path, file.sync_all())?;
        drop(file);
        let last = members.len().saturating_sub(1);
        let mut reports = Vec::with_capacity(members.len());
        for (i, m) in members.into_iter().enumerate() {
            let weights = has_weights.then_some((weight_path.as_path(), i == last));
            place(&m, weights, overwrite)?;
            reports.push(WriteReport {
                path: m.dest.clone(),
                model_bytes: m.model.len() as u64,
                weight_bytes: if has_weights { weight_bytes } else { 0 },
                blob_count: count,
                blob_references: m.references,
            });
        }
        drop(tmp);
        Ok(reports)
    }
}

/// Build one encoded package in a temporary directory beside its destination and move it into
/// place. `weights`: the group's weight file and whether it may be moved (the last member) rather
/// than copied.
fn place(m: &Member, weights: Option<(&Path, bool)>, overwrite: bool) -> Result<(), PackageError> {
    let dest = &m.dest;
    let exists = dest.symlink_metadata().is_ok();
    if exists && !overwrite {
        return Err(PackageError::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    let parent = parent_of(dest);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package".into());
    let tmp = io(
        &parent,
        tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempdir_in(&parent),
    )?;
    let dir = tmp.path();
    let data = dir.join("Data");
    let model_path = data.join(MODEL_ITEM_PATH);
    let weights_dir = data.join(WEIGHTS_ITEM_PATH);
    io(&weights_dir, fs::create_dir_all(&weights_dir))?;
    if let Some((src, last)) = weights {
        let w = weights_dir.join("weight.bin");
        if last {
            io(&w, fs::rename(src, &w))?;
        } else if fs::hard_link(src, &w).is_err() {
            // One file on disk for every member where the filesystem allows (the members sit in
            // one directory tree, so it does unless links are unsupported); a copy otherwise.
            io(&w, fs::copy(src, &w))?;
            io(&w, File::open(&w).and_then(|f| f.sync_all()))?;
        }
    }
    write_synced(&model_path, &m.model)?;
    write_synced(
        &manifest_path(dir),
        Manifest::standard().to_json().as_bytes(),
    )?;
    let model_dir = model_path.parent().unwrap_or(&data);
    for d in [weights_dir.as_path(), model_dir, data.as_path(), dir] {
        sync_dir(d)?;
    }

    if exists {
        // Move the old package aside, put the new one in place, then delete the old one.
        let old = io(
            &parent,
            tempfile::Builder::new()
                .prefix(&format!(".{name}.old-"))
                .tempdir_in(&parent),
        )?;
        let aside = old.path().join("old");
        io(dest, fs::rename(dest, &aside))?;
        if let Err(e) = fs::rename(dir, dest) {
            let _ = fs::rename(&aside, dest);
            return Err(PackageError::io(dest, e));
        }
        // `old` (holding the previous package) is removed when dropped.
        drop(old);
    } else {
        io(dest, fs::rename(dir, dest))?;
    }
    // The temporary directory now is the package: do not delete it.
    let _ = tmp.keep();
    sync_dir(&parent)
}

/// Write a package to `dest` (a `.mlpackage` directory), atomically.
pub fn write_package(
    pkg: &Package,
    dest: &Path,
    options: &WriteOptions,
) -> Result<WriteReport, PackageError> {
    let mut group = PackageGroup::new(&parent_of(dest), options)?;
    group.add(pkg, dest)?;
    let mut reports = group.finish()?;
    reports.pop().ok_or_else(|| {
        PackageError::io(
            dest,
            std::io::Error::other("package group wrote no package"),
        )
    })
}

/// Decode a package from its three files' bytes (no file system access; used by the fuzzer).
/// `weights` is the content of `weight.bin`, if present. Item paths of the manifest are validated
/// syntactically; the root item must be the standard `com.apple.CoreML/model.mlmodel`.
pub fn read_package_from_parts(
    manifest: &[u8],
    model: &[u8],
    weights: Option<Buffer>,
) -> Result<Package, PackageError> {
    let manifest_file = PathBuf::from("Manifest.json");
    let m = Manifest::parse(manifest).map_err(|source| PackageError::Manifest {
        path: manifest_file.clone(),
        source,
    })?;
    if m.root_item().map(|i| i.path.as_str()) != Some(MODEL_ITEM_PATH) {
        return Err(PackageError::Manifest {
            path: manifest_file,
            source: crate::error::ManifestError::ItemMissing {
                id: m.root.clone(),
                path: MODEL_ITEM_PATH.into(),
            },
        });
    }
    let weight_path = PathBuf::from("Data")
        .join(WEIGHTS_ITEM_PATH)
        .join("weight.bin");
    let reader = weights
        .map(|b| {
            BlobReader::from_buffer(b).map_err(|source| PackageError::Weights {
                path: weight_path.clone(),
                source,
            })
        })
        .transpose()?;
    decode(
        &PathBuf::from("Data").join(MODEL_ITEM_PATH),
        model,
        reader.as_ref(),
    )
}

/// Decode and check `model.mlmodel` bytes into a `Model` proto that holds an ML Program.
fn decode_spec(model_path: &Path, bytes: &[u8]) -> Result<spec::Model, PackageError> {
    let model = spec::Model::decode(bytes).map_err(|source| PackageError::Decode {
        path: model_path.to_path_buf(),
        source,
    })?;
    if opset_for_spec_version(model.specification_version).is_none() {
        return Err(PackageError::SpecVersion {
            path: model_path.to_path_buf(),
            found: model.specification_version,
        });
    }
    if model.is_updatable {
        return Err(PackageError::NotMlProgram {
            path: model_path.to_path_buf(),
            what: "updatable models are not supported".into(),
        });
    }
    match &model.r#type {
        Some(model::Type::MlProgram(_)) => Ok(model),
        Some(_) => Err(PackageError::NotMlProgram {
            path: model_path.to_path_buf(),
            what: "the model is not an ML Program (Model.Type is not mlProgram)".into(),
        }),
        None => Err(PackageError::NotMlProgram {
            path: model_path.to_path_buf(),
            what: "the model has no type (Model.Type is empty)".into(),
        }),
    }
}

fn decode(
    model_path: &Path,
    bytes: &[u8],
    blobs: Option<&BlobReader>,
) -> Result<Package, PackageError> {
    let model = decode_spec(model_path, bytes)?;
    let Some(model::Type::MlProgram(program)) = &model.r#type else {
        return Err(PackageError::NotMlProgram {
            path: model_path.to_path_buf(),
            what: "the model is not an ML Program".into(),
        });
    };
    let program = Lifter { blobs }
        .program(program)
        .map_err(|e| PackageError::Program {
            path: model_path.to_path_buf(),
            location: e.location,
            source: e.error,
        })?;
    let description = model
        .description
        .as_ref()
        .map(Description::from_proto)
        .transpose()
        .map_err(|source| PackageError::Description {
            path: model_path.to_path_buf(),
            source,
        })?
        .unwrap_or_default();
    Ok(Package {
        program,
        description,
        spec_version: model.specification_version,
    })
}

/// Read and validate the manifest of a package; returns it with the model file's path.
pub(crate) fn open_manifest(pkg: &Path) -> Result<(Manifest, PathBuf), PackageError> {
    let mpath = manifest_path(pkg);
    let bytes = io(&mpath, fs::read(&mpath))?;
    let manifest = Manifest::parse(&bytes).map_err(|source| PackageError::Manifest {
        path: mpath.clone(),
        source,
    })?;
    let data = pkg.join("Data");
    for (id, item) in &manifest.items {
        if !data.join(&item.path).exists() {
            return Err(PackageError::Manifest {
                path: mpath,
                source: crate::error::ManifestError::ItemMissing {
                    id: id.clone(),
                    path: item.path.clone(),
                },
            });
        }
    }
    let root = manifest.root_item().map(|i| data.join(&i.path));
    match root {
        Some(p) if p.is_file() => Ok((manifest, p)),
        _ => Err(PackageError::Manifest {
            path: mpath,
            source: crate::error::ManifestError::ItemMissing {
                id: manifest.root.clone(),
                path: manifest
                    .root_item()
                    .map(|i| i.path.clone())
                    .unwrap_or_default(),
            },
        }),
    }
}

/// Read only the `Model` proto of a package (manifest validated, weights not opened).
pub fn read_package_spec(pkg: &Path) -> Result<spec::Model, PackageError> {
    let (_, model_path) = open_manifest(pkg)?;
    let bytes = io(&model_path, fs::read(&model_path))?;
    decode_spec(&model_path, &bytes)
}

/// Read a package: manifest, model, weights (memory-mapped, zero copy) and description.
pub fn read_package(pkg: &Path) -> Result<Package, PackageError> {
    let (_, model_path) = open_manifest(pkg)?;
    let bytes = io(&model_path, fs::read(&model_path))?;
    // `@model_path` is the directory holding model.mlmodel.
    let weight_path = model_path.with_file_name("weights").join("weight.bin");
    let reader = if weight_path.is_file() {
        Some(BlobReader::open(&weight_path)?)
    } else {
        None
    };
    decode(&model_path, &bytes, reader.as_ref())
}

/// Every operation of the program of the package at `pkg` (functions in name order, nested blocks
/// included), in program order.
fn for_each_op(
    pkg: &Path,
    mut f: impl FnMut(&coreml_proto::mil_spec::Operation),
) -> Result<(), PackageError> {
    use coreml_proto::mil_spec as pb;
    fn block(b: &pb::Block, f: &mut dyn FnMut(&pb::Operation)) {
        for op in &b.operations {
            f(op);
            op.blocks.iter().for_each(|nested| block(nested, f));
        }
    }
    let model = read_package_spec(pkg)?;
    if let Some(model::Type::MlProgram(p)) = &model.r#type {
        let mut names: Vec<_> = p.functions.keys().collect();
        names.sort();
        for n in names {
            p.functions[n]
                .block_specializations
                .values()
                .for_each(|b| block(b, &mut f));
        }
    }
    Ok(())
}

/// The record offset of a blob value.
fn blob_offset(v: &coreml_proto::mil_spec::Value) -> Option<u64> {
    match &v.value {
        Some(coreml_proto::mil_spec::value::Value::BlobFileValue(b)) => Some(b.offset),
        _ => None,
    }
}

/// The `const` ops of the package at `pkg` whose value is a blob, by op name (the first function
/// that names it), with the blob's record offset in `weight.bin`: where a named weight is stored.
pub fn named_blobs(pkg: &Path) -> Result<std::collections::BTreeMap<String, u64>, PackageError> {
    use coreml_proto::mil_spec as pb;
    let mut out = std::collections::BTreeMap::new();
    for_each_op(pkg, |op| {
        let blob = op.attributes.get("val").and_then(blob_offset);
        let name = op.attributes.get("name").and_then(|v| match &v.value {
            Some(pb::value::Value::ImmediateValue(i)) => match &i.value {
                Some(pb::value::immediate_value::Value::Tensor(t)) => match &t.value {
                    Some(pb::tensor_value::Value::Strings(s)) => s.values.first().cloned(),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        });
        if let (Some(offset), Some(name), "const") = (blob, name, op.r#type.as_str()) {
            out.entry(name).or_insert(offset);
        }
    })?;
    Ok(out)
}

/// The offsets (record offsets into `weight.bin`) of every blob the program of the package at `pkg`
/// references, in any function, op input or attribute, including nested blocks.
pub fn referenced_blobs(pkg: &Path) -> Result<std::collections::BTreeSet<u64>, PackageError> {
    use coreml_proto::mil_spec as pb;
    let mut out = std::collections::BTreeSet::new();
    for_each_op(pkg, |op| {
        out.extend(op.attributes.values().filter_map(blob_offset));
        for arg in op.inputs.values() {
            for a in &arg.arguments {
                if let Some(pb::argument::binding::Binding::Value(v)) = &a.binding {
                    out.extend(blob_offset(v));
                }
            }
        }
    })?;
    Ok(out)
}
