//! `--model` resolution: a local checkpoint directory, or (feature `hub`) a Hugging Face repo id.
//!
//! * An existing directory is used as is.
//! * `owner/name[@revision]` that is not a directory is a repo id. With the `hub` feature it is
//!   resolved through hf-hub's cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//!   `~/.cache/huggingface/hub`); with `HF_HUB_OFFLINE` set to a true value (`1`, `true`, `yes`,
//!   `on`) only the local cache is read and the network is never touched. Without the feature a
//!   repo id is an error that says so.
//! * Anything else is an error naming the path.
//!
//! Shared by every subcommand that takes `--model` (run, and later build / parity).

use std::path::{Path, PathBuf};

/// Why `--model` could not be resolved (always a bad-input error, exit status 2).
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
        "--model {0}: not a local directory, and this build cannot resolve Hugging Face repo ids (rebuild with `--features hub`)"
    )]
    HubDisabled(String),
    /// Offline and the repo (or revision) is not in the local cache.
    #[cfg(feature = "hub")]
    #[error(
        "--model {repo}: not in the local Hugging Face cache {cache} and HF_HUB_OFFLINE is set ({detail})"
    )]
    NotCached {
        /// Repo id as given.
        repo: String,
        /// Cache directory searched.
        cache: PathBuf,
        /// What hf-hub reported.
        detail: String,
    },
    /// hf-hub failed (network, auth, missing repo).
    #[cfg(feature = "hub")]
    #[error("--model {repo}: Hugging Face hub: {detail}")]
    Hub {
        /// Repo id as given.
        repo: String,
        /// What hf-hub reported.
        detail: String,
    },
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
}

/// Whether `HF_HUB_OFFLINE` asks for offline operation.
#[cfg(feature = "hub")]
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
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

#[cfg(not(feature = "hub"))]
fn resolve_repo(spec: &str, _repo: &RepoId) -> Result<PathBuf, SourceError> {
    Err(SourceError::HubDisabled(spec.to_string()))
}

#[cfg(feature = "hub")]
fn resolve_repo(spec: &str, repo: &RepoId) -> Result<PathBuf, SourceError> {
    let hub = |detail: String| SourceError::Hub {
        repo: spec.to_string(),
        detail,
    };
    let offline = hub_offline();
    // Building the client reads the environment only; it makes no request.
    let client = hf_hub::HFClient::new().map_err(|e| hub(e.to_string()))?;
    let cache = client.cache_dir().to_path_buf();
    let client = hf_hub::HFClientSync::from_inner(client).map_err(|e| hub(e.to_string()))?;
    let handle = client.model(repo.owner.clone(), repo.name.clone());
    let result = handle
        .snapshot_download()
        .maybe_revision(repo.revision.clone())
        .allow_patterns(vec![
            "*.json".to_string(),
            "*.safetensors".to_string(),
            "tokenizer*".to_string(),
        ])
        .local_files_only(offline)
        .send();
    match result {
        Ok(dir) => Ok(dir),
        Err(e) if offline => Err(SourceError::NotCached {
            repo: spec.to_string(),
            cache,
            detail: e.to_string(),
        }),
        Err(e) => Err(hub(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_parse() {
        let r = RepoId::parse("google/gemma-4-E2B-it").unwrap();
        assert_eq!(
            (r.owner.as_str(), r.name.as_str(), r.revision),
            ("google", "gemma-4-E2B-it", None)
        );
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

    #[cfg(not(feature = "hub"))]
    #[test]
    fn repo_ids_need_the_hub_feature() {
        let e = resolve("acme/not-a-dir-here").unwrap_err();
        assert!(matches!(e, SourceError::HubDisabled(_)), "{e}");
        assert!(e.to_string().contains("--features hub"));
    }
}
