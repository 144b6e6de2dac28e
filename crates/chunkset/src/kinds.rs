//! The small vocabularies of the contract: attention kinds, cache policies, precision, package
//! formats.

use serde::{Deserialize, Serialize};

/// Attention kind of a decoder layer (and of the KV cache slot it owns). Sliding sorts first.
///
/// The writer maps `gemma4::config::LayerType` to this at its boundary (`gemma4` does not depend on
/// the contract).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// Local attention over the last `sliding_window` positions.
    Sliding,
    /// Global causal attention over the whole context.
    Full,
}

impl LayerKind {
    /// Both kinds, sliding first (the order of every per-kind list of the contract).
    pub const ALL: [LayerKind; 2] = [LayerKind::Sliding, LayerKind::Full];

    /// The infix of per-kind names (`K_sliding_in`, `causal_mask_full`, `cos_sliding.npy`).
    pub fn label(self) -> &'static str {
        match self {
            LayerKind::Sliding => "sliding",
            LayerKind::Full => "full",
        }
    }

    /// The `layer_types` spelling of `model_config.json` (and of HF configs).
    pub fn attention_type(self) -> &'static str {
        match self {
            LayerKind::Sliding => "sliding_attention",
            LayerKind::Full => "full_attention",
        }
    }

    /// The kind with this `layer_types` spelling.
    pub fn from_attention_type(s: &str) -> Option<LayerKind> {
        LayerKind::ALL.into_iter().find(|k| k.attention_type() == s)
    }
}

/// The name of a cache policy, as `model_config.json` writes it (`sliding_cache_policy`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheKind {
    ShiftRegister,
    Positional,
    Ring,
}

/// How one attention kind stores its KV.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CachePolicy {
    /// A shift register of `len` positions: every step drops slot 0 and appends the new entry at
    /// `len − 1`; valid entries are right-aligned; the mask is right-aligned too.
    ShiftRegister { len: usize },
    /// `len` absolute positions; the new entry is blended in at `update_mask`'s one-hot slot.
    Positional { len: usize },
    /// A ring of `len` slots in a Core ML state (stateful variants, sliding layers): position `p`
    /// is written in place at slot `p mod len`; the mask is left-aligned (the first `p + 1` slots
    /// before the ring has wrapped, all after).
    Ring { len: usize },
}

impl CachePolicy {
    /// The policy of `kind` with `len` positions.
    pub fn new(kind: CacheKind, len: usize) -> CachePolicy {
        match kind {
            CacheKind::ShiftRegister => CachePolicy::ShiftRegister { len },
            CacheKind::Positional => CachePolicy::Positional { len },
            CacheKind::Ring => CachePolicy::Ring { len },
        }
    }

    /// Number of positions kept.
    pub fn len(&self) -> usize {
        match *self {
            CachePolicy::ShiftRegister { len }
            | CachePolicy::Positional { len }
            | CachePolicy::Ring { len } => len,
        }
    }

    /// True if the cache has no positions (never for valid plans).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The policy's name.
    pub fn kind(&self) -> CacheKind {
        match self {
            CachePolicy::ShiftRegister { .. } => CacheKind::ShiftRegister,
            CachePolicy::Positional { .. } => CacheKind::Positional,
            CachePolicy::Ring { .. } => CacheKind::Ring,
        }
    }

    /// True for a positional cache (written through `update_mask` / `update_indicator`).
    pub fn is_positional(&self) -> bool {
        self.kind() == CacheKind::Positional
    }
}

/// Compute and I/O precision of a set's graphs.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// fp16 weights, activations and I/O (the Neural Engine's precision).
    #[default]
    Fp16,
    /// fp32 everywhere (not for the Neural Engine; for exact parity checks).
    Fp32,
}

impl Precision {
    /// `fp32` for true.
    pub fn from_fp32(fp32: bool) -> Precision {
        if fp32 {
            Precision::Fp32
        } else {
            Precision::Fp16
        }
    }

    /// True for fp32.
    pub fn is_fp32(self) -> bool {
        self == Precision::Fp32
    }

    /// `fp16` or `fp32`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp16 => "fp16",
            Precision::Fp32 => "fp32",
        }
    }
}

/// How a chunk's program is stored on disk: a `.mlpackage` directory or a compiled `.mlmodelc`
/// bundle (what the Swift runtime loads); every reader and writer names package files through
/// [`PackageFormat::file_name`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageFormat {
    #[default]
    Mlpackage,
    Mlmodelc,
}

impl PackageFormat {
    /// The file extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            PackageFormat::Mlpackage => "mlpackage",
            PackageFormat::Mlmodelc => "mlmodelc",
        }
    }

    /// `<stem>.<extension>`, e.g. `chunk1.mlpackage`.
    pub fn file_name(self, stem: &str) -> String {
        format!("{stem}.{}", self.extension())
    }
}

/// Which forms a build writes for every chunk (`--format`): packages (default), compiled bundles,
/// or both side by side.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Mlpackage,
    Mlmodelc,
    Both,
}

impl OutputFormat {
    /// `mlpackage`, `mlmodelc` or `both`.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Mlpackage => "mlpackage",
            OutputFormat::Mlmodelc => "mlmodelc",
            OutputFormat::Both => "both",
        }
    }

    /// The forms written, packages first.
    pub fn formats(self) -> Vec<PackageFormat> {
        match self {
            OutputFormat::Mlpackage => vec![PackageFormat::Mlpackage],
            OutputFormat::Mlmodelc => vec![PackageFormat::Mlmodelc],
            OutputFormat::Both => vec![PackageFormat::Mlpackage, PackageFormat::Mlmodelc],
        }
    }

    /// True for the default (what a manifest leaves out).
    pub fn is_default(&self) -> bool {
        *self == OutputFormat::Mlpackage
    }
}

impl std::str::FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<OutputFormat, String> {
        match s {
            "mlpackage" => Ok(OutputFormat::Mlpackage),
            "mlmodelc" => Ok(OutputFormat::Mlmodelc),
            "both" => Ok(OutputFormat::Both),
            other => Err(format!("`{other}` is not one of mlpackage, mlmodelc, both")),
        }
    }
}
