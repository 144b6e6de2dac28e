//! The published repository layout: where each file of a chunk set goes in the repository the
//! CoreML-LLM app's downloader fetches (`Sources/CoreMLLLM/ModelDownloader.swift`), which files each
//! downloader entry fetches and where it puts them, which weight files it hard-links on the device
//! instead of fetching, and the per-file `manifest.json` of a published directory.
//!
//! The downloader's file lists are fixed in its code, entry by entry; [`Layout::downloader_files`]
//! is that list, written down here as data:
//!
//! | [`Layout`] | entry (revision) | decode chunks | prefill | side files |
//! |---|---|---|---|---|
//! | [`Layout::E2bFourChunk`] (`swa4`) | `gemma4-e2b` (`n1024`) | `swa/chunk{1..4}.mlmodelc` | `prefill/chunk{1..4}.mlmodelc`, all four fetched without their `weights/weight.bin`, which is hard-linked from `chunk{i}` | `swa/{cos,sin}_{sliding,full}.npy`, the rest at the root |
//! | [`Layout::E2bThreeWay`] (`merged`) | `gemma4-e2b-3way` (`main`, the app's default) | `swa/chunk1`, `swa/chunk2_3way`, `swa/chunk3_3way` | `prefill/chunk{1..4}`: 2 and 3 fetched whole, 1 and 4 without weights, hard-linked from `chunk1` and `chunk3_3way` | as above |
//! | [`Layout::StatefulThreeChunk`] (`stateful3`) | `gemma4-e2b-stateful-linear` (`main`) | `chunk_{1..3}.mlmodelc` at the root | (functions inside the chunks) | all at the root; installed under `gemma4_e2b_stateful_chunks/` |
//!
//! Every `.mlmodelc` is fetched as its five files. The E2B entries also fetch the multimodal
//! encoders and their side files when the app's "include multimodal" setting is on (its default);
//! gemma-convert writes the text decoder only, so those are listed as not provided
//! ([`Fetch::Multimodal`]). Variants without an entry have no [`Layout`] ([`NoLayout`] says why).
//!
//! Architecture invariant: the published manifest, like the set's, is a pure function of the
//! published bytes and the options — entries sorted by path, no timestamps, no absolute paths.

use crate::error::{ContractError, read_json};
use crate::names::{self, RopeTable};
use crate::variant::Variant;
use crate::{LayerKind, MODEL_CONFIG_NAME};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Format tag of a published directory's `manifest.json`.
pub const PUBLISHED_FORMAT: &str = "gemma-convert-published/1";
/// `mode` of the manifest (the per-file mode of the reference's `conversion/build_hf_release.py`).
pub const PER_FILE_MODE: &str = "per-file";

/// The five files of a compiled bundle, as the downloader fetches them (weights first).
pub const BUNDLE_FILES: [&str; 5] = [
    "weights/weight.bin",
    "coremldata.bin",
    "model.mil",
    "metadata.json",
    "analytics/coremldata.bin",
];
/// A bundle's weight file.
pub const WEIGHT_FILE: &str = "weights/weight.bin";

/// A downloader entry a chunk set can be published for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `gemma4-e2b`, the 4-chunk entry: `swa/chunk{1..4}` + `prefill/chunk{1..4}` (weights linked).
    E2bFourChunk,
    /// `gemma4-e2b-3way`, the app's default: `swa/chunk1`, `swa/chunk2_3way`, `swa/chunk3_3way` +
    /// `prefill/chunk{1..4}` (1 and 4 linked from `chunk1` and `chunk3_3way`).
    E2bThreeWay,
    /// `gemma4-e2b-stateful-linear`: `chunk_{1..3}` and the side files at the root.
    StatefulThreeChunk,
}

/// A variant the downloader has no entry for, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("variant `{variant}` has no published layout: {reason}")]
pub struct NoLayout {
    /// The variant name.
    pub variant: &'static str,
    /// Why, and what to do instead.
    pub reason: &'static str,
}

/// How the downloader obtains one file of a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// Downloaded from the repository (a missing file fails the download).
    Download,
    /// Not downloaded: after the download the downloader hard-links the local copy of `from` (a
    /// path of the repository) here, so the two must be byte-identical.
    Hardlink {
        /// The repository path whose downloaded copy is linked.
        from: String,
    },
    /// Downloaded only with the app's multimodal setting on (its default); not written by
    /// gemma-convert (vision / audio encoders and their side files).
    Multimodal,
}

/// One file a downloader entry fetches (or links).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloaderFile {
    /// Path in the repository.
    pub remote: String,
    /// Path in the app's model folder.
    pub local: String,
    /// How it gets there.
    pub fetch: Fetch,
}

/// The multimodal files of the E2B entries (`ModelDownloader.swift`, `multimodalFiles`).
const MULTIMODAL_BUNDLES: [&str; 3] = ["vision", "vision_video", "audio"];
const MULTIMODAL_SIDE: [&str; 5] = [
    "mel_filterbank.bin",
    "audio_config.json",
    "output_proj_weight.npy",
    "output_proj_bias.npy",
    "embed_proj_weight.npy",
];
/// The checkpoint files of `hf_model/` the entries fetch.
const HF_FETCHED: [&str; 3] = ["tokenizer.json", "tokenizer_config.json", "config.json"];
/// Root side files every entry fetches (besides the RoPE tables and `model_config.json`).
const ROOT_SIDE: [&str; 6] = [
    "embed_tokens_q8.bin",
    "embed_tokens_scales.bin",
    "embed_tokens_per_layer_q8.bin",
    "embed_tokens_per_layer_scales.bin",
    names::PER_LAYER_PROJECTION_FILE,
    names::PER_LAYER_NORM_FILE,
];

/// The four RoPE side files (`cos_sliding.npy`, ...).
fn rope_files() -> Vec<String> {
    LayerKind::ALL
        .into_iter()
        .flat_map(|k| RopeTable::BOTH.into_iter().map(move |t| k.rope_file(t)))
        .collect()
}

impl Layout {
    /// The layout a set of `variant` is published in.
    pub fn for_variant(variant: &Variant) -> Result<Layout, NoLayout> {
        let none = |reason| {
            Err(NoLayout {
                variant: variant.name(),
                reason,
            })
        };
        match variant {
            Variant::Swa4 => Ok(Layout::E2bFourChunk),
            Variant::Merged => Ok(Layout::E2bThreeWay),
            Variant::Stateful3 => Ok(Layout::StatefulThreeChunk),
            Variant::Stateful => none(
                "no downloader entry fetches a 4-chunk stateful set (the app's 4-chunk stateful \
                 entries are sideload-only, and its published stateful entry fetches chunk_1..3 \
                 only, so a chunk_4 there would never arrive and Gemma4StatefulEngine would run \
                 chunk_3 as the final chunk); sideload the set's bundles and side files into \
                 Documents/Models/<folder>/gemma4_e2b_stateful_chunks/, or build --variant \
                 stateful3 to publish",
            ),
            Variant::Merged2 | Variant::Merged1 | Variant::Lite => none(
                "the CoreML-LLM runtime has no loader for its chunk names (research layout); \
                 publish swa4, merged or stateful3",
            ),
            Variant::Wfa { .. } | Variant::Flash { .. } => none(
                "no downloader entry is meant for it: the app's 4-chunk entry would load its \
                 chunk1..4 with the swa4 I/O contract (causal_mask_full checked against \
                 context_length); publish swa4, merged or stateful3",
            ),
        }
    }

    /// The downloader entry's id (`ModelInfo.id`).
    pub fn entry(self) -> &'static str {
        match self {
            Layout::E2bFourChunk => "gemma4-e2b",
            Layout::E2bThreeWay => "gemma4-e2b-3way",
            Layout::StatefulThreeChunk => "gemma4-e2b-stateful-linear",
        }
    }

    /// The repository revision the entry downloads from (`resolve/<revision>` in its URL).
    pub fn revision(self) -> &'static str {
        match self {
            Layout::E2bFourChunk => "n1024",
            Layout::E2bThreeWay | Layout::StatefulThreeChunk => "main",
        }
    }

    /// The decode chunks (package stems) a set must have, in call order.
    pub fn decode_chunks(self) -> &'static [&'static str] {
        match self {
            Layout::E2bFourChunk => &["chunk1", "chunk2", "chunk3", "chunk4"],
            Layout::E2bThreeWay => &["chunk1", "chunk2_3way", "chunk3_3way"],
            Layout::StatefulThreeChunk => &["chunk_1", "chunk_2", "chunk_3"],
        }
    }

    /// The prefill chunks (package stems) a set must have.
    pub fn prefill_chunks(self) -> &'static [&'static str] {
        match self {
            Layout::E2bFourChunk | Layout::E2bThreeWay => &[
                "prefill_chunk1",
                "prefill_chunk2",
                "prefill_chunk3",
                "prefill_chunk4",
            ],
            Layout::StatefulThreeChunk => &[],
        }
    }

    /// Whether the downloader checks chunk 1's `causal_mask_full` against `context_length`
    /// ([`downloader_context`]) and deletes the install on a mismatch.
    pub fn checks_context(self) -> bool {
        matches!(self, Layout::E2bFourChunk | Layout::E2bThreeWay)
    }

    fn is_e2b(self) -> bool {
        self.checks_context()
    }

    /// Where the app puts a repository path `remote` (relative to its model folder).
    pub fn local_path(self, remote: &str) -> String {
        match self {
            Layout::StatefulThreeChunk => format!("gemma4_e2b_stateful_chunks/{remote}"),
            Layout::E2bFourChunk | Layout::E2bThreeWay => {
                if let Some(rest) = remote.strip_prefix("prefill/") {
                    format!("prefill_{rest}")
                } else if let Some(rest) = remote.strip_prefix("swa/") {
                    rest.to_string()
                } else {
                    remote.to_string()
                }
            }
        }
    }

    /// The repository path of the set's file `path` (relative to the set), or `None` for files
    /// that are not published (`.mlpackage` packages; the set's own `manifest.json`).
    pub fn remote_path(self, path: &str) -> Option<String> {
        let (first, rest) = path.split_once('/').unwrap_or((path, ""));
        if first.ends_with(".mlpackage") || path == crate::MANIFEST_NAME {
            return None;
        }
        if !self.is_e2b() {
            return Some(path.to_string());
        }
        if let Some(stem) = first.strip_suffix(".mlmodelc") {
            if let Some(n) = stem.strip_prefix("prefill_") {
                return Some(format!("prefill/{n}.mlmodelc/{rest}"));
            }
            return Some(format!("swa/{path}"));
        }
        if rope_files().iter().any(|r| r == path) {
            return Some(format!("swa/{path}"));
        }
        Some(path.to_string())
    }

    /// Every file the entry fetches or links, in the downloader's order (`ModelDownloader.swift`:
    /// `buildHuggingFaceFileList`, `buildGemma4StatefulLinearFileList`, `finishDownload`).
    pub fn downloader_files(self) -> Vec<DownloaderFile> {
        let mut out = Vec::new();
        let mut push = |remote: String, fetch: Fetch| {
            out.push(DownloaderFile {
                local: self.local_path(&remote),
                remote,
                fetch,
            })
        };
        let bundle = |dir: &str, stem: &str, file: &str| format!("{dir}{stem}.mlmodelc/{file}");
        let chunk_dir = if self.is_e2b() { "swa/" } else { "" };
        for stem in self.decode_chunks() {
            for f in BUNDLE_FILES {
                push(bundle(chunk_dir, stem, f), Fetch::Download);
            }
        }
        // prefill: (remote stem, the decode chunk whose weights are linked, if any)
        let prefill: &[(&str, Option<&str>)] = match self {
            Layout::E2bFourChunk => &[
                ("chunk1", Some("chunk1")),
                ("chunk2", Some("chunk2")),
                ("chunk3", Some("chunk3")),
                ("chunk4", Some("chunk4")),
            ],
            Layout::E2bThreeWay => &[
                ("chunk1", Some("chunk1")),
                ("chunk2", None),
                ("chunk3", None),
                ("chunk4", Some("chunk3_3way")),
            ],
            Layout::StatefulThreeChunk => &[],
        };
        for (stem, linked) in prefill {
            for f in BUNDLE_FILES {
                let fetch = match linked {
                    Some(decode) if f == WEIGHT_FILE => Fetch::Hardlink {
                        from: bundle("swa/", decode, WEIGHT_FILE),
                    },
                    _ => Fetch::Download,
                };
                push(bundle("prefill/", stem, f), fetch);
            }
        }
        push(MODEL_CONFIG_NAME.to_string(), Fetch::Download);
        for f in HF_FETCHED {
            push(format!("{}/{f}", names::HF_MODEL_DIR), Fetch::Download);
        }
        for f in ROOT_SIDE {
            push(f.to_string(), Fetch::Download);
        }
        let rope_dir = if self.is_e2b() { "swa/" } else { "" };
        for f in rope_files() {
            push(format!("{rope_dir}{f}"), Fetch::Download);
        }
        if self.is_e2b() {
            for stem in MULTIMODAL_BUNDLES {
                for f in BUNDLE_FILES {
                    push(bundle("", stem, f), Fetch::Multimodal);
                }
            }
            for f in MULTIMODAL_SIDE {
                push(f.to_string(), Fetch::Multimodal);
            }
        }
        out
    }

    /// A short description for messages and the README.
    pub fn describe(self) -> &'static str {
        match self {
            Layout::E2bFourChunk => "the 4-chunk E2B layout (swa/, prefill/)",
            Layout::E2bThreeWay => {
                "the 3-way E2B layout (swa/chunk2_3way, swa/chunk3_3way, prefill/)"
            }
            Layout::StatefulThreeChunk => "the 3-chunk stateful layout (chunk_1..3 at the root)",
        }
    }
}

/// The context length the downloader reads from a chunk's `model.mil` to decide whether a cached
/// install is stale: the last dimension of the first `tensor<fp16, [1, 1, 1, N]> causal_mask_full`
/// (whitespace as its regular expression allows), or `None` when there is none (the downloader
/// then keeps the install).
pub fn downloader_context(model_mil: &str) -> Option<usize> {
    const HEAD: &str = "tensor<fp16,";
    let bytes = model_mil.as_bytes();
    let mut from = 0;
    while let Some(i) = model_mil[from..].find(HEAD) {
        let start = from + i + HEAD.len();
        from = from + i + 1;
        if let Some(n) = match_mask(bytes, start) {
            return Some(n);
        }
    }
    None
}

/// `\s*\[\s*1,\s*1,\s*1,\s*(\d+)\s*\]>\s*causal_mask_full` at `i`.
fn match_mask(b: &[u8], mut i: usize) -> Option<usize> {
    let ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let lit = |i: &mut usize, s: &[u8]| -> Option<()> {
        if b.get(*i..*i + s.len())? == s {
            *i += s.len();
            Some(())
        } else {
            None
        }
    };
    ws(&mut i);
    lit(&mut i, b"[")?;
    for _ in 0..3 {
        ws(&mut i);
        lit(&mut i, b"1,")?;
    }
    ws(&mut i);
    let d0 = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let n: usize = std::str::from_utf8(&b[d0..i]).ok()?.parse().ok()?;
    ws(&mut i);
    lit(&mut i, b"]>")?;
    ws(&mut i);
    lit(&mut i, b"causal_mask_full")?;
    Some(n)
}

/// How the downloader obtains a published file (`fetch` in the manifest).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FetchKind {
    /// Downloaded.
    Download,
    /// Hard-linked on the device from the file named by `link_from` (not downloaded).
    Hardlink,
    /// Not fetched by the entry (published for completeness, e.g. `hf_model/generation_config.json`).
    None,
}

/// One published file. `path`, `url`, `size_bytes` and `sha256` are the fields of the reference's
/// per-file release manifest (`build_hf_release.py`); the rest say what the downloader does with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedFile {
    /// Path in the repository, `/`-separated.
    pub path: String,
    /// `https://huggingface.co/<repo>/resolve/<revision>/<path>`, when a repository was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub size_bytes: u64,
    pub sha256: String,
    pub fetch: FetchKind,
    /// Where the app puts it (when fetched or linked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
    /// For `hardlink`: the repository path of the byte-identical file whose downloaded copy the
    /// app links here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_from: Option<String>,
}

/// The set a directory was published from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedSource {
    /// The variant name.
    pub variant: String,
    /// The command line that rebuilds the set (from its manifest).
    pub command: Vec<String>,
    /// The gemma-convert version that built it.
    pub tool_version: String,
    /// sha256 of the set's `manifest.json` (which records every file's hash and the build options).
    pub manifest_sha256: String,
}

/// `manifest.json` of a published directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedManifest {
    /// [`PUBLISHED_FORMAT`].
    pub format: String,
    /// [`crate::manifest::TOOL`].
    pub tool: String,
    pub tool_version: String,
    /// [`PER_FILE_MODE`].
    pub mode: String,
    pub layout: Layout,
    /// The downloader entry (`ModelInfo.id`) whose file list this layout serves.
    pub downloader_entry: String,
    /// The revision that entry downloads from.
    pub revision: String,
    /// The repository named with `--hf-repo`, when given (the files then carry `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    pub source: PublishedSource,
    /// Sum of `size_bytes` of every file.
    pub total_size: u64,
    /// Files the entry fetches that gemma-convert does not write (the multimodal encoders and
    /// their side files: a release repository carries them from elsewhere, or the app's users turn
    /// multimodal off), sorted.
    pub not_provided: Vec<String>,
    /// Every published file except this manifest, sorted by path.
    pub files: Vec<PublishedFile>,
}

impl PublishedManifest {
    /// Name of the file in the published directory.
    pub const NAME: &'static str = crate::MANIFEST_NAME;

    /// The file's bytes: pretty JSON with a trailing newline.
    pub fn to_json(&self) -> Result<String, ContractError> {
        let mut s = serde_json::to_string_pretty(self).map_err(|e| ContractError::Serialize {
            what: "published manifest.json",
            msg: e.to_string(),
        })?;
        s.push('\n');
        Ok(s)
    }

    /// Read `dir/manifest.json` of a published directory (this format only).
    pub fn read(dir: &Path) -> Result<PublishedManifest, ContractError> {
        let path = dir.join(Self::NAME);
        #[derive(Deserialize)]
        struct Tag {
            format: Option<String>,
        }
        let tag: Tag = read_json(&path)?;
        if tag.format.as_deref() != Some(PUBLISHED_FORMAT) {
            return Err(ContractError::Format {
                path,
                found: tag.format.unwrap_or_default(),
                expected: PUBLISHED_FORMAT,
            });
        }
        read_json(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_paths_map_to_the_downloader_remote_paths() {
        let l = Layout::E2bThreeWay;
        assert_eq!(
            l.remote_path("chunk2_3way.mlmodelc/weights/weight.bin")
                .as_deref(),
            Some("swa/chunk2_3way.mlmodelc/weights/weight.bin")
        );
        assert_eq!(
            l.remote_path("prefill_chunk4.mlmodelc/model.mil")
                .as_deref(),
            Some("prefill/chunk4.mlmodelc/model.mil")
        );
        assert_eq!(
            l.remote_path("cos_full.npy").as_deref(),
            Some("swa/cos_full.npy")
        );
        assert_eq!(
            l.remote_path("hf_model/config.json").as_deref(),
            Some("hf_model/config.json")
        );
        assert_eq!(l.remote_path("chunk1.mlpackage/Manifest.json"), None);
        assert_eq!(l.remote_path("manifest.json"), None);
        let s = Layout::StatefulThreeChunk;
        assert_eq!(
            s.remote_path("cos_full.npy").as_deref(),
            Some("cos_full.npy")
        );
        assert_eq!(
            s.local_path("chunk_1.mlmodelc/model.mil"),
            "gemma4_e2b_stateful_chunks/chunk_1.mlmodelc/model.mil"
        );
        assert_eq!(
            l.local_path("prefill/chunk1.mlmodelc/coremldata.bin"),
            "prefill_chunk1.mlmodelc/coremldata.bin"
        );
        assert_eq!(l.local_path("swa/sin_sliding.npy"), "sin_sliding.npy");
    }

    #[test]
    fn downloader_lists_link_what_the_app_links() {
        let links = |l: Layout| -> Vec<(String, String)> {
            l.downloader_files()
                .into_iter()
                .filter_map(|f| match f.fetch {
                    Fetch::Hardlink { from } => Some((f.remote, from)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            links(Layout::E2bThreeWay),
            [
                (
                    "prefill/chunk1.mlmodelc/weights/weight.bin".to_string(),
                    "swa/chunk1.mlmodelc/weights/weight.bin".to_string()
                ),
                (
                    "prefill/chunk4.mlmodelc/weights/weight.bin".to_string(),
                    "swa/chunk3_3way.mlmodelc/weights/weight.bin".to_string()
                )
            ]
        );
        assert_eq!(links(Layout::E2bFourChunk).len(), 4);
        assert!(links(Layout::StatefulThreeChunk).is_empty());
        // 5 files per bundle: 3 decode + 4 prefill; 11 side files + 4 RoPE tables; multimodal
        assert_eq!(Layout::E2bThreeWay.downloader_files().len(), 35 + 14 + 20);
        assert_eq!(Layout::StatefulThreeChunk.downloader_files().len(), 15 + 14);
    }

    #[test]
    fn the_downloader_context_check() {
        let mil = "func decode_q1<ios18>(tensor<fp16, [1, 1, 128]> hidden_states, \
                   tensor<fp16, [1, 1, 1, 2048]> causal_mask_full, tensor<fp16, [1, 1, 1, 512]> \
                   causal_mask_sliding)";
        assert_eq!(downloader_context(mil), Some(2048));
        assert_eq!(
            downloader_context("tensor<fp16,[ 1,1, 1,  64 ]>  causal_mask_full"),
            Some(64)
        );
        // fp32 masks, other names and other shapes are not what the downloader looks for
        assert_eq!(
            downloader_context("tensor<fp32, [1, 1, 1, 64]> causal_mask_full"),
            None
        );
        assert_eq!(
            downloader_context("tensor<fp16, [1, 1, 1, 64]> causal_mask_sliding"),
            None
        );
        assert_eq!(
            downloader_context("tensor<fp16, [1, 1, 8, 64]> causal_mask_full"),
            None
        );
    }

    #[test]
    fn every_variant_has_a_layout_or_says_why_not() {
        for name in crate::variant::VARIANT_NAMES {
            let v = Variant::parse(name, None, None).unwrap();
            match Layout::for_variant(&v) {
                Ok(l) => assert!(["swa4", "merged", "stateful3"].contains(&name), "{l:?}"),
                Err(e) => assert!(e.to_string().contains(name), "{e}"),
            }
        }
    }
}
