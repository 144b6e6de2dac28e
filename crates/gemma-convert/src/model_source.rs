//! `--model` resolution: a local checkpoint directory, or a Hugging Face repo id.
//!
//! * An existing directory is used as is.
//! * `owner/name[@revision]` that is not a directory is a repo id, resolved through the standard
//!   Hugging Face cache exactly where the Python tools (`huggingface_hub`) keep it, so a model
//!   downloaded by either is found by the other:
//!   * cache `HF_HUB_CACHE`, else `$HF_HOME/hub`, with `HF_HOME` defaulting to
//!     `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`; layout
//!     `models--owner--name/{refs/<revision>, snapshots/<commit>/…, blobs/…}`;
//!   * token `HF_TOKEN`, else the file `HF_TOKEN_PATH`, else `$HF_HOME/token` (what `hf auth login`
//!     writes); gated repos (the Gemma checkpoints are) need it;
//!   * `HF_HUB_OFFLINE` true (`1`, `true`, `yes`, `on`): only the cache is read, the network is never
//!     touched; a repo or revision that is not cached is an error naming the cache;
//!   * `HF_ENDPOINT` replaces `https://huggingface.co`; `HF_HUB_DISABLE_PROGRESS_BARS` turns the
//!     download progress bars off.
//!
//!   Online, the repo's file list is read, and the files a conversion needs (`config.json`,
//!   `generation_config.json`, the safetensors shards and their index, the tokenizer files) that are
//!   not in the snapshot yet are downloaded with a progress bar (hf-hub's blocking client: ureq +
//!   rustls). The snapshot directory is returned.
//!   Without the default `hub` feature, a repo id is an error that says so.
//! * Anything else is an error naming the path.
//!
//! Shared by every subcommand that takes `--model` (build, parity, run).

use std::path::{Path, PathBuf};

/// Why `--model` could not be resolved. Every variant is bad input (exit status 2) except
/// [`SourceError::Network`] (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Neither a directory nor something that looks like a repo id.
    #[error("--model {0}: no such checkpoint directory")]
    NotFound(PathBuf),
    /// A path that exists but is not a directory.
    #[error("--model {0}: not a directory")]
    NotADirectory(PathBuf),
    /// A repo id, but this binary was built without the `hub` feature.
    #[cfg(not(feature = "hub"))]
    #[error(
        "--model {0}: not a local directory nor in the Hugging Face cache, and this build cannot download (rebuild with the default features, or `--features hub`)"
    )]
    HubDisabled(String),
    /// Offline and the repo (or revision) is not in the local cache.
    #[error(
        "--model {repo}: not in the local Hugging Face cache {cache} and HF_HUB_OFFLINE is set ({detail})"
    )]
    NotCached {
        /// Repo id as given.
        repo: String,
        /// Cache directory searched.
        cache: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// The hub refused the request (unknown repo or revision, missing or insufficient token).
    #[cfg(feature = "hub")]
    #[error("--model {repo}: Hugging Face hub: {detail}")]
    Hub {
        /// Repo id as given.
        repo: String,
        /// What the hub reported.
        detail: String,
    },
    /// The hub could not be reached or a download failed.
    #[cfg(feature = "hub")]
    #[error("--model {repo}: downloading from the Hugging Face hub failed: {detail}")]
    Network {
        /// Repo id as given.
        repo: String,
        /// What failed.
        detail: String,
    },
    /// The home directory is unknown and no cache variable is set.
    #[error(
        "--model {0}: cannot locate the Hugging Face cache (set HF_HOME or HF_HUB_CACHE, or HOME)"
    )]
    NoCache(String),
}

impl SourceError {
    /// True for bad input (exit 2), false for a failed download (exit 1).
    pub fn is_bad_input(&self) -> bool {
        #[cfg(feature = "hub")]
        if matches!(self, SourceError::Network { .. }) {
            return false;
        }
        true
    }
}

/// A parsed `owner/name[@revision]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    /// Owner (user or organisation).
    pub owner: String,
    /// Repository name.
    pub name: String,
    /// Revision (branch, tag or commit); `None` = main.
    pub revision: Option<String>,
}

impl RepoId {
    /// Parse `owner/name[@revision]`; `None` if it does not look like a repo id.
    pub fn parse(s: &str) -> Option<RepoId> {
        let (id, revision) = match s.split_once('@') {
            Some((id, rev)) if !rev.is_empty() => (id, Some(rev.to_string())),
            Some(_) => return None,
            None => (s, None),
        };
        let (owner, name) = id.split_once('/')?;
        let ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with('.')
                && !p.starts_with('-')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (ok(owner) && ok(name)).then(|| RepoId {
            owner: owner.into(),
            name: name.into(),
            revision,
        })
    }

    /// `owner/name`.
    #[cfg_attr(not(feature = "hub"), allow(dead_code))]
    pub fn id(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The revision asked for (`main` by default).
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The repo's folder in the hub cache: `models--owner--name`.
    pub fn cache_folder(&self) -> String {
        format!("models--{}--{}", self.owner, self.name)
    }
}

/// The Hugging Face settings of the environment, resolved as `huggingface_hub` resolves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEnv {
    /// The hub cache directory (`…/hub`).
    pub cache: PathBuf,
    /// The access token, if any.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`.
    pub offline: bool,
    /// `HF_ENDPOINT` or `https://huggingface.co`.
    pub endpoint: String,
    /// Progress bars on (not `HF_HUB_DISABLE_PROGRESS_BARS`).
    pub progress: bool,
}

fn truthy(v: Option<String>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

impl HubEnv {
    /// Resolve from a variable lookup (`std::env::var` in the binary) and the home directory.
    pub fn resolve(var: impl Fn(&str) -> Option<String>, home: Option<PathBuf>) -> Option<HubEnv> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let hf_home = match var("HF_HOME") {
            Some(h) => Some(PathBuf::from(h)),
            None => match var("XDG_CACHE_HOME") {
                Some(x) => Some(PathBuf::from(x).join("huggingface")),
                None => home.map(|h| h.join(".cache").join("huggingface")),
            },
        };
        let cache = match var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
            Some(c) => PathBuf::from(c),
            None => hf_home.as_ref()?.join("hub"),
        };
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .or_else(|| hf_home.as_ref().map(|h| h.join("token")))?;
                std::fs::read_to_string(path).ok()
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        Some(HubEnv {
            cache,
            token,
            offline: truthy(var("HF_HUB_OFFLINE")),
            endpoint: var("HF_ENDPOINT").map_or_else(
                || "https://huggingface.co".to_string(),
                |e| e.trim_end_matches('/').to_string(),
            ),
            progress: !truthy(var("HF_HUB_DISABLE_PROGRESS_BARS")),
        })
    }

    /// From the process environment.
    pub fn from_env() -> Option<HubEnv> {
        HubEnv::resolve(|k| std::env::var(k).ok(), std::env::home_dir())
    }

    /// The cached snapshot of `repo` at its revision, if there is one holding a `config.json`.
    pub fn cached_snapshot(&self, repo: &RepoId) -> Result<PathBuf, String> {
        let root = self.cache.join(repo.cache_folder());
        if !root.is_dir() {
            return Err(format!("no {}", root.display()));
        }
        let rev = repo.revision();
        let commit = match std::fs::read_to_string(root.join("refs").join(rev)) {
            Ok(c) => c.trim().to_string(),
            Err(_) if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) => {
                rev.to_string()
            }
            Err(_) => return Err(format!("revision `{rev}` is not cached (no refs/{rev})")),
        };
        let snap = root.join("snapshots").join(&commit);
        if !snap.join("config.json").is_file() {
            return Err(format!("snapshot {commit} has no config.json"));
        }
        Ok(snap)
    }
}

/// Whether a repo file is one a conversion reads.
#[cfg_attr(not(feature = "hub"), allow(dead_code))]
pub fn wanted_file(name: &str) -> bool {
    !name.contains('/')
        && (name.ends_with(".safetensors")
            || name == "model.safetensors.index.json"
            || gemma4_export::bundle::side::HF_FILES.contains(&name))
}

/// Resolve `--model` to a local checkpoint directory.
pub fn resolve(spec: &str) -> Result<PathBuf, SourceError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return Err(SourceError::NotADirectory(path.to_path_buf()));
    }
    match RepoId::parse(spec) {
        Some(repo) => resolve_repo(spec, &repo),
        None => Err(SourceError::NotFound(path.to_path_buf())),
    }
}

fn resolve_repo(spec: &str, repo: &RepoId) -> Result<PathBuf, SourceError> {
    let env = HubEnv::from_env().ok_or_else(|| SourceError::NoCache(spec.to_string()))?;
    if env.offline {
        return env
            .cached_snapshot(repo)
            .map_err(|detail| SourceError::NotCached {
                repo: spec.to_string(),
                cache: env.cache.clone(),
                detail,
            });
    }
    fetch(spec, repo, &env)
}

/// Without network code, a snapshot already in the cache still resolves.
#[cfg(not(feature = "hub"))]
fn fetch(spec: &str, repo: &RepoId, env: &HubEnv) -> Result<PathBuf, SourceError> {
    env.cached_snapshot(repo)
        .map_err(|_| SourceError::HubDisabled(spec.to_string()))
}

#[cfg(feature = "hub")]
fn fetch(spec: &str, repo: &RepoId, env: &HubEnv) -> Result<PathBuf, SourceError> {
    download(spec, repo, env)
}

/// Map an hf-hub error: HTTP 401 / 403 / 404 are about the input, the rest is the network.
#[cfg(feature = "hub")]
fn hub_error(spec: &str, e: hf_hub::api::sync::ApiError) -> SourceError {
    let detail = e.to_string();
    let status = match &e {
        hf_hub::api::sync::ApiError::RequestError(r) => match r.as_ref() {
            ureq::Error::Status(code, _) => Some(*code),
            _ => None,
        },
        _ => None,
    };
    match status {
        Some(401 | 403) => SourceError::Hub {
            repo: spec.to_string(),
            detail: format!(
                "{detail} (gated or private: accept the licence on the model page, then set HF_TOKEN or run `hf auth login`)"
            ),
        },
        Some(404) => SourceError::Hub {
            repo: spec.to_string(),
            detail: format!("{detail} (no such repo, revision or file)"),
        },
        _ => SourceError::Network {
            repo: spec.to_string(),
            detail,
        },
    }
}

#[cfg(feature = "hub")]
fn download(spec: &str, repo: &RepoId, env: &HubEnv) -> Result<PathBuf, SourceError> {
    use hf_hub::{Cache, Repo, RepoType};
    let hub_repo = Repo::with_revision(repo.id(), RepoType::Model, repo.revision().to_string());
    let api = hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(env.cache.clone()))
        .with_endpoint(env.endpoint.clone())
        .with_token(env.token.clone())
        .with_progress(env.progress)
        .build()
        .map_err(|e| hub_error(spec, e))?;
    let api_repo = api.repo(hub_repo.clone());
    let info = api_repo.info().map_err(|e| hub_error(spec, e))?;
    let snap = env
        .cache
        .join(repo.cache_folder())
        .join("snapshots")
        .join(&info.sha);
    let files: Vec<String> = info
        .siblings
        .iter()
        .map(|s| s.rfilename.clone())
        .filter(|f| wanted_file(f))
        .collect();
    if !files.iter().any(|f| f == "config.json") {
        return Err(SourceError::Hub {
            repo: spec.to_string(),
            detail: "the repo has no config.json".into(),
        });
    }
    for f in &files {
        if !snap.join(f).is_file() {
            api_repo.download(f).map_err(|e| hub_error(spec, e))?;
        }
    }
    // the revision name now points at the commit whose files are all in the snapshot
    Cache::new(env.cache.clone())
        .repo(hub_repo)
        .create_ref(&info.sha)
        .map_err(|e| SourceError::Network {
            repo: spec.to_string(),
            detail: format!("writing refs/{}: {e}", repo.revision()),
        })?;
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn repo_ids_parse() {
        let r = RepoId::parse("google/gemma-4-E2B-it").unwrap();
        assert_eq!(
            (r.owner.as_str(), r.name.as_str(), r.revision.as_deref()),
            ("google", "gemma-4-E2B-it", None)
        );
        assert_eq!(r.cache_folder(), "models--google--gemma-4-E2B-it");
        assert_eq!(r.revision(), "main");
        let r = RepoId::parse("acme/tiny@v1.0").unwrap();
        assert_eq!(r.revision.as_deref(), Some("v1.0"));
        for bad in [
            "",
            "tiny",
            "/abs/path",
            "./rel/dir",
            "a/b/c",
            "a/",
            "a/b@",
            "../x",
        ] {
            assert!(RepoId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn missing_paths_are_named() {
        let e = resolve("/definitely/not/here").unwrap_err();
        assert!(matches!(e, SourceError::NotFound(_)));
        assert!(e.to_string().contains("/definitely/not/here"));
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = resolve(f.path().to_str().unwrap()).unwrap_err();
        assert!(matches!(e, SourceError::NotADirectory(_)));
    }

    fn env_of(vars: &[(&str, &str)], home: Option<&str>) -> Option<HubEnv> {
        let m: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubEnv::resolve(|k| m.get(k).cloned(), home.map(PathBuf::from))
    }

    #[test]
    fn environment_resolves_like_huggingface_hub() {
        // defaults
        let e = env_of(&[], Some("/home/u")).unwrap();
        assert_eq!(e.cache, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(e.endpoint, "https://huggingface.co");
        assert!(!e.offline && e.progress && e.token.is_none());
        // XDG_CACHE_HOME, then HF_HOME, then HF_HUB_CACHE take over in that order
        let e = env_of(&[("XDG_CACHE_HOME", "/x")], Some("/home/u")).unwrap();
        assert_eq!(e.cache, PathBuf::from("/x/huggingface/hub"));
        let e = env_of(&[("XDG_CACHE_HOME", "/x"), ("HF_HOME", "/h")], None).unwrap();
        assert_eq!(e.cache, PathBuf::from("/h/hub"));
        let e = env_of(&[("HF_HOME", "/h"), ("HF_HUB_CACHE", "/c")], None).unwrap();
        assert_eq!(e.cache, PathBuf::from("/c"));
        // no home and nothing set: no cache
        assert!(env_of(&[], None).is_none());
        // offline / progress flags as huggingface_hub parses booleans
        for (v, want) in [
            ("1", true),
            ("ON", true),
            ("yes", true),
            ("0", false),
            ("", false),
        ] {
            assert_eq!(
                env_of(&[("HF_HUB_OFFLINE", v)], Some("/h"))
                    .unwrap()
                    .offline,
                want,
                "{v:?}"
            );
        }
        assert!(
            !env_of(&[("HF_HUB_DISABLE_PROGRESS_BARS", "1")], Some("/h"))
                .unwrap()
                .progress
        );
        let e = env_of(&[("HF_ENDPOINT", "https://mirror.example/")], Some("/h")).unwrap();
        assert_eq!(e.endpoint, "https://mirror.example");
    }

    #[test]
    fn tokens_come_from_hf_token_then_the_token_file() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().to_str().unwrap();
        std::fs::write(tmp.path().join("token"), "hf_file\n").unwrap();
        let other = tmp.path().join("other-token");
        std::fs::write(&other, "  hf_path  ").unwrap();
        let tok = |vars: &[(&str, &str)]| env_of(vars, None).unwrap().token;
        assert_eq!(tok(&[("HF_HOME", home)]).as_deref(), Some("hf_file"));
        assert_eq!(
            tok(&[
                ("HF_HOME", home),
                ("HF_TOKEN_PATH", other.to_str().unwrap())
            ])
            .as_deref(),
            Some("hf_path")
        );
        assert_eq!(
            tok(&[("HF_HOME", home), ("HF_TOKEN", "hf_env")]).as_deref(),
            Some("hf_env")
        );
        std::fs::write(tmp.path().join("token"), "\n").unwrap();
        assert_eq!(tok(&[("HF_HOME", home)]), None);
    }

    #[test]
    fn cached_snapshots_by_ref_or_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env_of(&[("HF_HUB_CACHE", tmp.path().to_str().unwrap())], None).unwrap();
        let repo = RepoId::parse("acme/tiny").unwrap();
        assert!(env.cached_snapshot(&repo).is_err());
        let hash = "0123456789abcdef0123456789abcdef01234567";
        let root = tmp.path().join("models--acme--tiny");
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs/main"), format!("{hash}\n")).unwrap();
        let snap = root.join("snapshots").join(hash);
        std::fs::create_dir_all(&snap).unwrap();
        let e = env.cached_snapshot(&repo).unwrap_err();
        assert!(e.contains("config.json"), "{e}");
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        assert_eq!(env.cached_snapshot(&repo).unwrap(), snap);
        let by_commit = RepoId::parse(&format!("acme/tiny@{hash}")).unwrap();
        assert_eq!(env.cached_snapshot(&by_commit).unwrap(), snap);
        let e = env
            .cached_snapshot(&RepoId::parse("acme/tiny@v9").unwrap())
            .unwrap_err();
        assert!(e.contains("v9"), "{e}");
    }

    #[test]
    fn the_files_a_conversion_reads() {
        for f in [
            "config.json",
            "model.safetensors",
            "model-00001-of-00004.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ] {
            assert!(wanted_file(f), "{f}");
        }
        for f in [
            "README.md",
            "onnx/model.safetensors",
            "pytorch_model.bin",
            ".gitattributes",
        ] {
            assert!(!wanted_file(f), "{f}");
        }
    }

    #[cfg(not(feature = "hub"))]
    #[test]
    fn repo_ids_need_the_hub_feature() {
        let e = resolve("acme/not-a-dir-here").unwrap_err();
        assert!(matches!(e, SourceError::HubDisabled(_)), "{e}");
        assert!(e.to_string().contains("--features hub"));
    }
}
