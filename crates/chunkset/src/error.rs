//! Errors of the contract: a file of the set that cannot be read, a field that is missing, unknown
//! or malformed (each naming the file and the field's path, e.g. `chunks[1].kv_slots[0].kind`),
//! hashing and zipping.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Everything that can go wrong reading, writing, hashing or zipping the files of a chunk set.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON (or is truncated).
    #[error("{}: not valid JSON: {msg}", path.display())]
    Syntax { path: PathBuf, msg: String },
    /// A field the contract requires is absent.
    #[error("{}: missing field `{field}`", path.display())]
    MissingField { path: PathBuf, field: String },
    /// A field the contract does not know (written by another tool or version).
    #[error("{}: unknown field `{field}`", path.display())]
    UnknownField { path: PathBuf, field: String },
    /// A field with a value of the wrong type or out of range.
    #[error("{}: field `{field}`: {msg}", path.display())]
    InvalidField {
        path: PathBuf,
        field: String,
        msg: String,
    },
    /// A manifest of another format.
    #[error("{}: format `{found}`, expected `{expected}`", path.display())]
    Format {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    /// A value that cannot be written as JSON.
    #[error("writing {what}: {msg}")]
    Serialize { what: &'static str, msg: String },
    #[error("{}: zip: {msg}", path.display())]
    Zip { path: PathBuf, msg: String },
}

impl ContractError {
    /// True if the file is there but does not follow the contract (not JSON, a field missing,
    /// unknown or malformed, another format): the input is at fault, not the reader.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            ContractError::Syntax { .. }
                | ContractError::MissingField { .. }
                | ContractError::UnknownField { .. }
                | ContractError::InvalidField { .. }
                | ContractError::Format { .. }
        )
    }

    /// The file involved, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ContractError::Io { path, .. }
            | ContractError::Syntax { path, .. }
            | ContractError::MissingField { path, .. }
            | ContractError::UnknownField { path, .. }
            | ContractError::InvalidField { path, .. }
            | ContractError::Format { path, .. }
            | ContractError::Zip { path, .. } => Some(path),
            ContractError::Serialize { .. } => None,
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContractError + '_ {
    move |source| ContractError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Read and parse the JSON file `path` as `T`; problems name the file and the field.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ContractError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    parse_json(path, &text)
}

/// Parse `text` (the content of `path`) as `T`; problems name the file and the field.
pub fn parse_json<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ContractError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        field_error(path, &field, e.into_inner())
    })?;
    de.end().map_err(|e| ContractError::Syntax {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    Ok(value)
}

/// Classify a serde_json error at `field` (`.` = the top level).
fn field_error(path: &Path, field: &str, e: serde_json::Error) -> ContractError {
    use serde_json::error::Category;
    let path = path.to_path_buf();
    if matches!(
        e.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return ContractError::Syntax {
            path,
            msg: e.to_string(),
        };
    }
    let msg = e.to_string();
    // serde's own wording: "missing field `x`", "unknown field `x`, expected ...".
    let named = |prefix: &str| {
        msg.strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(|name| join(field, name))
    };
    if let Some(field) = named("missing field `") {
        ContractError::MissingField { path, field }
    } else if let Some(field) = named("unknown field `") {
        ContractError::UnknownField { path, field }
    } else {
        ContractError::InvalidField {
            path,
            field: field.to_string(),
            msg,
        }
    }
}

/// `parent.name`, unless `parent` already ends with `name` (the path of an unknown field includes it).
fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() || parent == "." {
        name.to_string()
    } else if parent == name || parent.ends_with(&format!(".{name}")) {
        parent.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// Serialise `value` as pretty JSON with a trailing newline, every object's keys in sorted order
/// (serde_json's map order), whatever the order of the Rust fields. Sets written before the typed
/// contract were built through `serde_json::Value`, which sorts keys; this keeps their bytes.
pub fn to_sorted_json<T: serde::Serialize>(
    what: &'static str,
    value: &T,
) -> Result<String, ContractError> {
    let err = |e: serde_json::Error| ContractError::Serialize {
        what,
        msg: e.to_string(),
    };
    let v = serde_json::to_value(value).map_err(err)?;
    let mut s = serde_json::to_string_pretty(&v).map_err(err)?;
    s.push('\n');
    Ok(s)
}

/// `serialize_with` helper: write a field through `serde_json::Value` (keys sorted at every level).
pub fn sorted<T: serde::Serialize, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    serde_json::to_value(value)
        .map_err(serde::ser::Error::custom)?
        .serialize(serializer)
}

/// `deserialize_with` helper for nullable fields that must still be present (`null` or a value):
/// serde would otherwise read an absent `Option` field as `None`.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer)
}
