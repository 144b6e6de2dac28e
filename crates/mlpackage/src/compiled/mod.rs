//! Compiled model bundles (`.mlmodelc`): what Core ML's compiler writes and what
//! `MLModel(contentsOf:)` loads on a device, written and read on any platform.
//!
//! ```text
//! X.mlmodelc/
//! ├── model.mil                  the ML Program as MIL text (mil_text)
//! ├── weights/weight.bin         the package's weight file, byte for byte
//! ├── coremldata.bin             header + ModelDescription + per-function trailer (coremldata)
//! ├── metadata.json              schemas, op histogram, precisions, availability (metadata)
//! └── analytics/coremldata.bin   model hash and name (analytics)
//! ```
//!
//! [`compile`] turns a source model (the `model.mlmodel` bytes and the files its blobs reference)
//! into the five files; [`compile_package`] does it for a `.mlpackage` on disk (weights
//! memory-mapped and copied as they are), [`write_bundle`] for a [`Package`] in memory;
//! [`read_bundle`] reads a bundle back into a [`Package`] (the program parsed from `model.mil`,
//! weights memory-mapped) and [`crate::read_model`] accepts either form.
//!
//! Every field and how it was established (from Apple's compiled samples, from the protobuf
//! schema, or inferred) is documented in `docs/MLMODELC.md`. Specification versions 7
//! ([`mil::text::Dialect::Legacy`]) and 9 ([`mil::text::Dialect::Ios18`]) are supported — the two
//! a compiled sample pins; others are refused with a typed error.
//!
//! Writing is atomic (a temporary directory beside the destination, renamed into place) and
//! deterministic.

pub mod analytics;
pub mod coremldata;
mod metadata;
mod mil_text;
pub mod nsjson;

use crate::description::Description;
use crate::error::{DescriptionError, PackageError, ProgramError, WeightsError};
use crate::package::{Package, encode_in_memory};
use crate::weights::BlobReader;
use coreml_proto::mil_spec as pb;
use coreml_proto::specification::{self as spec, model};
use mil::Buffer;
use mil::text::{Dialect, TextError};
use prost::Message;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub use coremldata::CoremldataError;

/// Files of a bundle.
pub const MODEL_MIL: &str = "model.mil";
pub const COREMLDATA: &str = "coremldata.bin";
pub const METADATA: &str = "metadata.json";
pub const ANALYTICS: &str = "analytics/coremldata.bin";
/// The `buildInfo` keys a compiler adds to the program.
pub const COMPILER_BUILD_INFO_KEYS: [&str; 2] = ["coremlc-component-MIL", "coremlc-version"];

/// The compiler named in `model.mil`'s `buildInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiler {
    /// `coremlc-component-MIL`.
    pub mil_component: String,
    /// `coremlc-version`.
    pub version: String,
}

impl Compiler {
    /// This tool: `gemma-convert` / its version. (mlmodelc-export's bundles, which name their
    /// own writer the same way, load on devices: the loader does not require Apple's versions.)
    pub fn gemma_convert() -> Compiler {
        Compiler {
            mil_component: "gemma-convert".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// Any other name (tests reproduce Apple's bundles with Apple's versions).
    pub fn new(mil_component: impl Into<String>, version: impl Into<String>) -> Compiler {
        Compiler {
            mil_component: mil_component.into(),
            version: version.into(),
        }
    }

    fn build_info(&self) -> [(&str, &str); 2] {
        [
            (COMPILER_BUILD_INFO_KEYS[0], self.mil_component.as_str()),
            (COMPILER_BUILD_INFO_KEYS[1], self.version.as_str()),
        ]
    }
}

/// Errors writing or reading a compiled bundle; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a Core ML model: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{path}: {what} is not supported in a compiled bundle")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: {location}: {source}")]
    Program {
        path: PathBuf,
        location: String,
        #[source]
        source: ProgramError,
    },
    #[error("{path}: {source}")]
    Container {
        path: PathBuf,
        #[source]
        source: CoremldataError,
    },
    #[error("{path}: {source}")]
    Text {
        path: PathBuf,
        #[source]
        source: TextError,
    },
    #[error("{path}: {source}")]
    Description {
        path: PathBuf,
        #[source]
        source: DescriptionError,
    },
    #[error("{path}: {source}")]
    Weights {
        path: PathBuf,
        #[source]
        source: WeightsError,
    },
    #[error("{path}: the program references `{reference}`, which is {problem}")]
    Reference {
        path: PathBuf,
        reference: String,
        problem: &'static str,
    },
    #[error("{path}: already exists (refusing to replace it)")]
    DestinationExists { path: PathBuf },
    #[error(transparent)]
    Package(#[from] PackageError),
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T, BundleError> {
    r.map_err(|source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A model to compile.
#[derive(Clone, Debug)]
pub struct Source {
    /// The `model.mlmodel` file (hashed into `analytics/coremldata.bin`).
    pub model: Buffer,
    /// The files the program's blobs reference, by path relative to `@model_path/`
    /// (e.g. `weights/weight.bin`).
    pub files: BTreeMap<String, Buffer>,
    /// Stem of the model file (`model` for a package).
    pub model_name: String,
    /// `generatedClassName`: the stem of what was compiled (`chunk1` for `chunk1.mlpackage`).
    pub class_name: String,
}

/// The files of a compiled bundle, in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled {
    pub model_mil: String,
    pub coremldata: Vec<u8>,
    pub metadata: Vec<u8>,
    pub analytics: Vec<u8>,
    /// Referenced files (`weights/weight.bin`), copied unchanged.
    pub files: BTreeMap<String, Buffer>,
}

/// What a bundle write produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleReport {
    pub path: PathBuf,
    /// Size of `model.mil`.
    pub mil_bytes: u64,
    /// Total size of the referenced files.
    pub weight_bytes: u64,
}

/// Options of the bundle writers.
#[derive(Clone, Debug)]
pub struct BundleOptions {
    pub compiler: Compiler,
    /// Replace an existing destination.
    pub overwrite: bool,
}

impl Default for BundleOptions {
    fn default() -> Self {
        BundleOptions {
            compiler: Compiler::gemma_convert(),
            overwrite: false,
        }
    }
}

/// The dialect and `coremldata.bin` header format of a specification version.
fn profile(spec: i32) -> Option<(Dialect, u32)> {
    match Dialect::for_spec_version(spec)? {
        Dialect::Legacy => Some((Dialect::Legacy, 5)),
        Dialect::Ios18 => Some((Dialect::Ios18, spec as u32)),
    }
}

/// Every blob file name the program references.
fn referenced_files(p: &pb::Program) -> Vec<String> {
    fn value(v: &pb::Value, out: &mut Vec<String>) {
        if let Some(pb::value::Value::BlobFileValue(f)) = &v.value
            && !out.contains(&f.file_name)
        {
            out.push(f.file_name.clone());
        }
    }
    let mut out = Vec::new();
    for v in p.attributes.values() {
        value(v, &mut out);
    }
    for f in p.functions.values() {
        for v in f.attributes.values() {
            value(v, &mut out);
        }
        for b in f.block_specializations.values() {
            for op in &b.operations {
                for a in op.inputs.values() {
                    for b in &a.arguments {
                        if let Some(pb::argument::binding::Binding::Value(v)) = &b.binding {
                            value(v, &mut out);
                        }
                    }
                }
                for v in op.attributes.values() {
                    value(v, &mut out);
                }
            }
        }
    }
    out
}

/// `@model_path/weights/weight.bin` → `weights/weight.bin` (relative, no `..`).
fn relative_reference(r: &str) -> Option<&str> {
    let rel = r.strip_prefix("@model_path/")?;
    let ok = !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    ok.then_some(rel)
}

/// Compile a source model into the files of a bundle.
pub fn compile(src: &Source, compiler: &Compiler) -> Result<Compiled, BundleError> {
    let path = PathBuf::from(format!("{}.mlmodel", src.model_name));
    let model =
        spec::Model::decode(src.model.as_bytes()).map_err(|source| BundleError::Decode {
            path: path.clone(),
            source,
        })?;
    let unsupported = |what: String| BundleError::Unsupported {
        path: path.clone(),
        what,
    };
    let Some((dialect, header_format)) = profile(model.specification_version) else {
        return Err(unsupported(format!(
            "specification version {} (compiled samples pin 7 and 9 only)",
            model.specification_version
        )));
    };
    let Some(model::Type::MlProgram(program)) = &model.r#type else {
        return Err(unsupported("a model that is not an ML Program".into()));
    };
    if model.is_updatable {
        return Err(unsupported("an updatable model".into()));
    }
    let description = model
        .description
        .as_ref()
        .map(Description::from_proto)
        .transpose()
        .map_err(|source| BundleError::Description {
            path: path.clone(),
            source,
        })?
        .unwrap_or_default();
    let mut files = BTreeMap::new();
    for r in referenced_files(program) {
        let Some(rel) = relative_reference(&r) else {
            return Err(BundleError::Reference {
                path,
                reference: r,
                problem: "not a path inside @model_path",
            });
        };
        let Some(bytes) = src.files.get(rel) else {
            return Err(BundleError::Reference {
                path,
                reference: r,
                problem: "not among the source's files",
            });
        };
        files.insert(rel.to_string(), bytes.clone());
    }
    let model_mil =
        mil_text::print(program, &description, compiler, dialect).map_err(|e| match e.kind {
            mil_text::PrintErrorKind::Program(source) => BundleError::Program {
                path: path.clone(),
                location: e.location,
                source,
            },
            mil_text::PrintErrorKind::Text(source) => BundleError::Text {
                path: path.clone(),
                source,
            },
            mil_text::PrintErrorKind::Unsupported(w) => {
                unsupported(format!("{} ({})", w, e.location))
            }
        })?;
    let desc_bytes = coremldata::description_bytes(src.model.as_bytes()).map_err(|source| {
        BundleError::Container {
            path: path.clone(),
            source,
        }
    })?;
    let spec_byte = u8::try_from(model.specification_version)
        .map_err(|_| unsupported("a specification version above 255".into()))?;
    let coremldata = coremldata::encode(
        header_format,
        spec_byte,
        &desc_bytes,
        program.functions.len(),
    );
    let json = metadata::metadata(
        model.specification_version,
        &description,
        program,
        &src.class_name,
    )
    .map_err(|e| unsupported(format!("metadata.json: {}", e.0)))?;
    let mut metadata = nsjson::to_text(&json);
    if dialect == Dialect::Legacy {
        metadata.push('\n');
    }
    Ok(Compiled {
        model_mil,
        coremldata,
        metadata: metadata.into_bytes(),
        analytics: analytics::encode(src.model.as_bytes(), &src.model_name),
        files,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    if let Some(p) = path.parent() {
        io(p, fs::create_dir_all(p))?;
    }
    io(path, fs::write(path, bytes))
}

/// Write compiled files to `dest` (a `.mlmodelc` directory), atomically.
pub fn write_compiled(
    c: &Compiled,
    dest: &Path,
    overwrite: bool,
) -> Result<BundleReport, BundleError> {
    let exists = dest.symlink_metadata().is_ok();
    if exists && !overwrite {
        return Err(BundleError::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    let tmp = io(
        &parent,
        tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempdir_in(&parent),
    )?;
    let t = tmp.path();
    write_file(&t.join(MODEL_MIL), c.model_mil.as_bytes())?;
    write_file(&t.join(COREMLDATA), &c.coremldata)?;
    write_file(&t.join(METADATA), &c.metadata)?;
    write_file(&t.join(ANALYTICS), &c.analytics)?;
    let mut weight_bytes = 0;
    for (rel, bytes) in &c.files {
        write_file(&t.join(rel), bytes.as_bytes())?;
        weight_bytes += bytes.len() as u64;
    }
    if exists {
        let old = io(
            &parent,
            tempfile::Builder::new()
                .prefix(&format!(".{name}.old-"))
                .tempdir_in(&parent),
        )?;
        let aside = old.path().join("old");
        io(dest, fs::rename(dest, &aside))?;
        if let Err(e) = fs::rename(t, dest) {
            let _ = fs::rename(&aside, dest);
            return Err(BundleError::Io {
                path: dest.to_path_buf(),
                source: e,
            });
        }
    } else {
        io(dest, fs::rename(t, dest))?;
    }
    let _ = tmp.keep();
    Ok(BundleReport {
        path: dest.to_path_buf(),
        mil_bytes: c.model_mil.len() as u64,
        weight_bytes,
    })
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The source of a `.mlpackage` on disk: its `model.mlmodel` and every file under its model
/// directory that the program references (memory-mapped).
pub fn package_source(pkg: &Path) -> Result<Source, BundleError> {
    let (_, model_path) = crate::package::open_manifest(pkg)?;
    let model = io(&model_path, fs::read(&model_path))?;
    let dir = model_path.parent().unwrap_or(pkg).to_path_buf();
    let decoded = spec::Model::decode(model.as_slice()).map_err(|source| BundleError::Decode {
        path: model_path.clone(),
        source,
    })?;
    let mut files = BTreeMap::new();
    if let Some(model::Type::MlProgram(p)) = &decoded.r#type {
        for r in referenced_files(p) {
            let Some(rel) = relative_reference(&r) else {
                return Err(BundleError::Reference {
                    path: model_path,
                    reference: r,
                    problem: "not a path inside @model_path",
                });
            };
            let file = dir.join(rel);
            if !file.is_file() {
                return Err(BundleError::Reference {
                    path: model_path,
                    reference: r,
                    problem: "missing from the package",
                });
            }
            files.insert(rel.to_string(), map_file(&file)?);
        }
    }
    Ok(Source {
        model: Buffer::from_vec(model),
        files,
        model_name: stem(&model_path),
        class_name: stem(pkg),
    })
}

fn map_file(path: &Path) -> Result<Buffer, BundleError> {
    let f = io(path, fs::File::open(path))?;
    let len = io(path, f.metadata())?.len();
    if len == 0 {
        return Ok(Buffer::from_vec(Vec::new()));
    }
    // SAFETY: the file is only read; a concurrent writer would be a misuse this tool never makes
    // (the package was written atomically before).
    let map = io(path, unsafe { memmap2::Mmap::map(&f) })?;
    Ok(Buffer::from_owner(std::sync::Arc::new(map)))
}

/// Compile the `.mlpackage` at `pkg` into the bundle `dest`.
pub fn compile_package(
    pkg: &Path,
    dest: &Path,
    opts: &BundleOptions,
) -> Result<BundleReport, BundleError> {
    let src = package_source(pkg)?;
    let c = compile(&src, &opts.compiler)?;
    write_compiled(&c, dest, opts.overwrite)
}

/// Compile a package held in memory into the bundle `dest` (`generatedClassName` = `dest`'s stem).
pub fn write_bundle(
    pkg: &Package,
    dest: &Path,
    opts: &BundleOptions,
) -> Result<BundleReport, BundleError> {
    let (model, weights) = encode_in_memory(pkg)?;
    let mut files = BTreeMap::new();
    if let Some(w) = weights {
        files.insert("weights/weight.bin".to_string(), w);
    }
    let src = Source {
        model: Buffer::from_vec(model),
        files,
        model_name: "model".into(),
        class_name: stem(dest),
    };
    let c = compile(&src, &opts.compiler)?;
    write_compiled(&c, dest, opts.overwrite)
}

/// True if `path` is a compiled bundle (a directory holding `coremldata.bin`).
pub fn is_bundle(path: &Path) -> bool {
    path.join(COREMLDATA).is_file()
}

/// Read a compiled bundle: `coremldata.bin` (description, specification version), `model.mil`
/// (the program; blobs read from the referenced files, memory-mapped). The compiler's `buildInfo`
/// entries and the derived `FlexibleShapeInformation` are dropped, so reading a bundle compiled
/// from a package gives that package's program.
pub fn read_bundle(path: &Path) -> Result<Package, BundleError> {
    let cpath = path.join(COREMLDATA);
    let bytes = io(&cpath, fs::read(&cpath))?;
    let container = coremldata::decode(&bytes).map_err(|source| BundleError::Container {
        path: cpath.clone(),
        source,
    })?;
    let desc = container
        .model_description()
        .map_err(|source| BundleError::Container {
            path: cpath.clone(),
            source,
        })?;
    let description =
        Description::from_proto(&desc).map_err(|source| BundleError::Description {
            path: cpath.clone(),
            source,
        })?;
    let spec_version = i32::from(container.spec_version);
    let mpath = path.join(MODEL_MIL);
    let text = io(&mpath, fs::read_to_string(&mpath))?;
    let mut readers: BTreeMap<String, BlobReader> = BTreeMap::new();
    let mut failure: Option<BundleError> = None;
    let parsed = {
        let mut resolve = |ty: &mil::TensorType, reference: &str, offset: u64| {
            let Some(rel) = relative_reference(reference) else {
                return Err(format!("`{reference}` is not a path inside @model_path"));
            };
            if !readers.contains_key(rel) {
                let file = path.join(rel);
                match BlobReader::open(&file) {
                    Ok(r) => {
                        readers.insert(rel.to_string(), r);
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        failure = Some(BundleError::Package(e));
                        return Err(msg);
                    }
                }
            }
            readers
                .get(rel)
                .ok_or_else(|| "weight file not open".to_string())?
                .read(offset, ty)
                .map_err(|e| e.to_string())
        };
        mil::text::parse_program(&text, &mut resolve)
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(source) => {
            return Err(failure.unwrap_or(BundleError::Text {
                path: mpath,
                source,
            }));
        }
    };
    let mut program = parsed.program;
    strip_compiler_attributes(&mut program);
    let pkg = Package {
        program,
        description,
        spec_version,
    };
    pkg.description
        .check(&pkg.program)
        .map_err(|source| BundleError::Description {
            path: cpath,
            source,
        })?;
    Ok(pkg)
}

/// Drop what the compiler adds to a program: its `buildInfo` entries (the attribute itself when
/// nothing else is left) and functions' `FlexibleShapeInformation`.
fn strip_compiler_attributes(p: &mut mil::Program) {
    if let Some(mil::Value::Dict { entries, .. }) = p.attributes.get_mut("buildInfo") {
        entries.retain(|(k, _)| {
            !k.as_tensor()
                .and_then(|t| t.strings())
                .and_then(|s| s.first())
                .is_some_and(|k| COMPILER_BUILD_INFO_KEYS.contains(&k.as_str()))
        });
        if entries.is_empty() {
            p.attributes.remove("buildInfo");
        }
    }
    for f in p.functions.values_mut() {
        f.attributes.remove("FlexibleShapeInformation");
    }
}

/// Read a model in either form: a compiled bundle (a directory with `coremldata.bin`) or a
/// `.mlpackage`.
pub fn read_model(path: &Path) -> Result<Package, BundleError> {
    if is_bundle(path) {
        read_bundle(path)
    } else {
        Ok(crate::package::read_package(path)?)
    }
}

/// The model of chunk `stem` in a set directory, as the Swift runtime picks it: `stem.mlmodelc`
/// if it holds `coremldata.bin`, else `stem.mlpackage`.
pub fn model_path(dir: &Path, stem: &str) -> PathBuf {
    let compiled = dir.join(format!("{stem}.mlmodelc"));
    if is_bundle(&compiled) {
        compiled
    } else {
        dir.join(format!("{stem}.mlpackage"))
    }
}
