//! `chunkset`: the contract between the writer of a chunk set (`gemma4-export`) and its runtime
//! (`mil-runtime`), in one place.
//!
//! * [`kinds`]: [`LayerKind`] (sliding / full), [`CachePolicy`], [`Precision`], [`PackageFormat`],
//!   [`OutputFormat`].
//! * [`variant`]: [`Variant`], how the decoder is cut and its KV kept, and which runtime loads it
//!   ([`RuntimeSupport`]).
//! * [`forms`]: [`GraphForms`] (op forms: the reference pipeline's or leaner) and [`Taps`] (optional
//!   outputs: EAGLE-3 hidden states, verify logits).
//! * [`function`]: [`FunctionKind`] and the MIL function names (`decode_q1`, `verify_qK`, `main`),
//!   [`Functions`], the set of functions a build writes.
//! * [`compression`]: [`Compression`] (dense or LUT palettization with a valid [`NBits`]).
//! * [`chunk`]: [`ChunkSpec`], [`KvSlot`], [`PrefillKv`].
//! * [`io`]: the I/O contract of every function ([`IoContract`]: names, shapes, dtypes, order).
//! * [`names`]: every input, output and side-file name both sides use.
//! * [`model_config`]: `model_config.json` ([`ModelConfig`]).
//! * [`manifest`]: `manifest.json` ([`ChunkSetManifest`], [`BuildSpec`]: the build options as data).
//! * [`files`]: sha256 of files and trees, set comparison, the reproducible zip.
//! * [`published`]: the repository layout the CoreML-LLM app's downloader fetches ([`Layout`]) and
//!   the per-file `manifest.json` of a published directory ([`PublishedManifest`]).
//! * [`error`]: [`ContractError`]: every read problem names the file and the field.
//!
//! Architecture invariant: the writer serialises these types and the runtime deserialises them; no
//! other code writes or walks the JSON of a set. Reading is strict (`deny_unknown_fields`, and
//! nullable fields must be present), so a set from another tool or version fails with the field named
//! rather than being half-understood. Writing keeps the byte layout of every earlier set: pretty JSON,
//! keys of `model_config.json` and of the manifest's `build` / `uncompressed_weights` objects sorted.

pub mod chunk;
pub mod compression;
pub mod error;
pub mod files;
pub mod forms;
pub mod function;
pub mod io;
pub mod kinds;
pub mod manifest;
pub mod model_config;
pub mod names;
pub mod published;
pub mod variant;

pub use chunk::{ChunkSpec, KvSlot, LayerStack, PrefillKv};
pub use compression::{BadNBits, Compression, DEFAULT_GROUP_SIZE, LutConfig, NBits};
pub use error::ContractError;
pub use files::{
    HashingWriter, SetDiff, compare_sets, hash_tree, hash_tree_known, list_files, sha256_file,
    write_zip,
};
pub use forms::{FormsError, GqaForm, GraphForms, LayoutForm, SoftmaxForm, Taps, eagle3_layers};
pub use function::{
    DECODE_FN, ENGINE_BATCHES, FunctionKind, Functions, FunctionsError, INFER_FN, PREFILL_B_PREFIX,
    PREFILL_FN, VERIFY_FN,
};
pub use io::{IoContract, IoDType, IoTensor, KindIo};
pub use kinds::{CacheKind, CachePolicy, LayerKind, OutputFormat, PackageFormat, Precision};
pub use manifest::{
    BuildFacts, BuildSpec, ChunkRange, ChunkSetManifest, FileEntry, MANIFEST_FORMAT, MANIFEST_NAME,
    SharedWeights,
};
pub use model_config::{ChunkEntry, MODEL_CONFIG_NAME, ModelConfig, PrefillChunkEntry};
pub use published::{Layout, NoLayout, PUBLISHED_FORMAT, PublishedManifest};
pub use variant::{HOST_LOOP, RuntimeSupport, UnknownVariant, Variant};
