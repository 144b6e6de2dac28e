//! `mlpackage`: read and write Core ML `.mlpackage` directories holding MIL programs (iOS 18).
//!
//! * [`package`]: [`write_package`] (atomic, deterministic) / [`read_package`] (validating,
//!   zero-copy weights) of a [`Package`] = [`mil::Program`] + [`Description`] + spec version;
//!   [`PackageGroup`] writes packages around one shared, byte-identical `weight.bin`.
//! * [`convert`]: MIL IR ⇄ `CoreML.Specification.MILSpec` protobuf, with coremltools' blob policy
//!   ([`convert::blob_eligible`]) and immediate-value encodings.
//! * [`weights`]: `weight.bin` (blob storage v2) [`weights::BlobWriter`] / [`weights::BlobReader`].
//! * [`description`]: `ModelDescription` (inputs, outputs, states, functions, metadata).
//! * [`manifest`]: `Manifest.json` with name-derived (UUID v5) identifiers.
//! * [`codes`]: MIL `DataType`, blob dtype codes and `ArrayDataType` numbers.
//! * [`compiled`]: compiled bundles (`.mlmodelc`): [`compiled::compile_package`],
//!   [`compiled::write_bundle`], [`compiled::read_bundle`]; [`read_model`] reads either form.
//! * [`publish`]: publishing an output directory (and companions such as its zip) safely: target
//!   guard, exclusive / shared locks, staging beside the target, atomic swap, debris cleanup.
//! * [`coremltools_check`]: run `scripts/validate_mlpackage.py` (coremltools 9.0) on a package.
//!
//! Unknown op types are *not* rejected when reading: that is the `mil` validator's job.
//!
//! Architecture invariant: this crate never interprets ops; it moves programs between memory and
//! disk faithfully (read → write → read gives an equal [`mil::Program`]).

pub mod codes;
pub mod compiled;
pub mod convert;
pub mod coremltools_check;
pub mod description;
pub mod error;
pub mod manifest;
pub mod package;
pub mod publish;
pub mod weights;

pub use compiled::{BundleError, read_model};
pub use description::{
    ArrayFeature, DefaultValue, Description, Feature, FeatureKind, FunctionDescription, Interface,
    Metadata, ShapeFlexibility, StateDtypes,
};
pub use error::{DescriptionError, ManifestError, PackageError, ProgramError, WeightsError};
pub use package::{
    Package, PackageGroup, WriteOptions, WriteReport, encode_in_memory, named_blobs, read_package,
    read_package_from_parts, read_package_spec, referenced_blobs, write_package,
};
pub use weights::{BlobReader, BlobRecord, BlobWriter};
