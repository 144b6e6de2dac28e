//! `Manifest.json` of an `.mlpackage` (coremltools `ModelPackage`).
//!
//! ```text
//! {
//!     "fileFormatVersion": "1.0.0",
//!     "itemInfoEntries": {
//!         "<id>": {"author": "com.apple.CoreML", "description": "CoreML Model Specification",
//!                  "name": "model.mlmodel", "path": "com.apple.CoreML/model.mlmodel"},
//!         "<id>": {"author": "com.apple.CoreML", "description": "CoreML Model Weights",
//!                  "name": "weights", "path": "com.apple.CoreML/weights"}
//!     },
//!     "rootModelIdentifier": "<id of the model.mlmodel item>"
//! }
//! ```
//! * Written exactly as coremltools formats it (nlohmann::json with `setw(4)`): 4-space indent,
//!   `": "` separators, keys sorted at every level, a trailing newline.
//! * Identifiers: coremltools uses random UUID v4s; we derive UUID v5s from the item path in a fixed
//!   namespace ([`item_id`]) so packages are byte-reproducible. Readers only look identifiers up.
//! * Reading validates like `ModelPackageImpl::validate`: `fileFormatVersion` is three
//!   non-negative integers ≤ 1.0.0; every entry has string `path`, `name`, `author`,
//!   `description`; paths are relative and stay inside `Data/`; the root identifier is an entry.

use crate::error::ManifestError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Author of the standard items.
pub const AUTHOR: &str = "com.apple.CoreML";
/// Path (relative to `Data/`) of the model specification item.
pub const MODEL_ITEM_PATH: &str = "com.apple.CoreML/model.mlmodel";
/// Path (relative to `Data/`) of the weights directory item.
pub const WEIGHTS_ITEM_PATH: &str = "com.apple.CoreML/weights";

/// One `itemInfoEntries` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestItem {
    /// Path relative to `Data/` (a file or a directory).
    pub path: String,
    /// Item name (`model.mlmodel`, `weights`).
    pub name: String,
    /// Item author (`com.apple.CoreML`).
    pub author: String,
    /// Item description.
    pub description: String,
}

/// A parsed `Manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `fileFormatVersion` (`1.0.0`).
    pub file_format_version: String,
    /// Items by identifier.
    pub items: BTreeMap<String, ManifestItem>,
    /// Identifier of the item holding `model.mlmodel`.
    pub root: String,
}

/// The reproducible identifier of an item: UUID v5 of its path in the gemma-convert namespace.
pub fn item_id(path: &str) -> String {
    let ns = Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        b"https://github.com/gemma-convert/gemma-convert/mlpackage/Manifest.json",
    );
    Uuid::new_v5(&ns, path.as_bytes()).hyphenated().to_string()
}

fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Manifest {
    /// The manifest of a package with a model specification and a weights directory.
    pub fn standard() -> Manifest {
        let mut items = BTreeMap::new();
        let model = item_id(MODEL_ITEM_PATH);
        items.insert(
            model.clone(),
            ManifestItem {
                path: MODEL_ITEM_PATH.into(),
                name: "model.mlmodel".into(),
                author: AUTHOR.into(),
                description: "CoreML Model Specification".into(),
            },
        );
        items.insert(
            item_id(WEIGHTS_ITEM_PATH),
            ManifestItem {
                path: WEIGHTS_ITEM_PATH.into(),
                name: "weights".into(),
                author: AUTHOR.into(),
                description: "CoreML Model Weights".into(),
            },
        );
        Manifest {
            file_format_version: "1.0.0".into(),
            items,
            root: model,
        }
    }

    /// The root item (the model specification).
    pub fn root_item(&self) -> Option<&ManifestItem> {
        self.items.get(&self.root)
    }

    /// Serialise exactly as coremltools does (sorted keys, 4-space indent, trailing newline).
    pub fn to_json(&self) -> String {
        let mut entries = Map::new();
        for (id, item) in &self.items {
            let mut e = Map::new();
            e.insert("author".into(), Value::String(item.author.clone()));
            e.insert(
                "description".into(),
                Value::String(item.description.clone()),
            );
            e.insert("name".into(), Value::String(item.name.clone()));
            e.insert("path".into(), Value::String(item.path.clone()));
            entries.insert(id.clone(), Value::Object(e));
        }
        let mut top = Map::new();
        top.insert(
            "fileFormatVersion".into(),
            Value::String(self.file_format_version.clone()),
        );
        top.insert("itemInfoEntries".into(), Value::Object(entries));
        top.insert(
            "rootModelIdentifier".into(),
            Value::String(self.root.clone()),
        );
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        // serialising an in-memory Value into a Vec cannot fail
        let _ = serde::Serialize::serialize(&Value::Object(top), &mut ser);
        let mut s = String::from_utf8(out).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parse and validate (schema, version, paths, root); does not touch the file system.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let v: Value = serde_json::from_slice(bytes)?;
        let field = |key: &str, expected| ManifestError::Field {
            key: key.into(),
            expected,
        };
        let top = v
            .as_object()
            .ok_or_else(|| field("(top level)", "an object"))?;
        let version = top
            .get("fileFormatVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| field("fileFormatVersion", "a string"))?;
        let parts: Vec<Option<u64>> = version.split('.').map(|p| p.parse::<u64>().ok()).collect();
        let parts: Option<Vec<u64>> = parts.into_iter().collect();
        match parts {
            Some(p) if p.len() == 3 => {
                if p > vec![1, 0, 0] {
                    return Err(ManifestError::VersionTooNew(version.into()));
                }
            }
            _ => return Err(ManifestError::VersionSyntax(version.into())),
        }
        let entries = top
            .get("itemInfoEntries")
            .and_then(Value::as_object)
            .ok_or_else(|| field("itemInfoEntries", "an object"))?;
        let mut items = BTreeMap::new();
        for (id, e) in entries {
            let e = e
                .as_object()
                .ok_or_else(|| field(&format!("itemInfoEntries.{id}"), "an object"))?;
            let get = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| field(&format!("itemInfoEntries.{id}.{k}"), "a string"))
            };
            let item = ManifestItem {
                path: get("path")?,
                name: get("name")?,
                author: get("author")?,
                description: get("description")?,
            };
            if !is_safe_relative(&item.path) {
                return Err(ManifestError::BadPath {
                    id: id.clone(),
                    path: item.path,
                });
            }
            items.insert(id.clone(), item);
        }
        let root = top
            .get("rootModelIdentifier")
            .and_then(Value::as_str)
            .ok_or_else(|| field("rootModelIdentifier", "a string"))?;
        if !items.contains_key(root) {
            return Err(ManifestError::RootNotFound(root.into()));
        }
        Ok(Manifest {
            file_format_version: version.into(),
            items,
            root: root.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_manifest_formats_like_coremltools() {
        let m = Manifest::standard();
        let json = m.to_json();
        let model = item_id(MODEL_ITEM_PATH);
        let weights = item_id(WEIGHTS_ITEM_PATH);
        let (first, second) = if model < weights {
            (&model, &weights)
        } else {
            (&weights, &model)
        };
        let entry = |id: &str| {
            if id == model {
                "            \"author\": \"com.apple.CoreML\",\n            \"description\": \"CoreML Model Specification\",\n            \"name\": \"model.mlmodel\",\n            \"path\": \"com.apple.CoreML/model.mlmodel\"\n"
            } else {
                "            \"author\": \"com.apple.CoreML\",\n            \"description\": \"CoreML Model Weights\",\n            \"name\": \"weights\",\n            \"path\": \"com.apple.CoreML/weights\"\n"
            }
        };
        let expected = format!(
            "{{\n    \"fileFormatVersion\": \"1.0.0\",\n    \"itemInfoEntries\": {{\n        \"{first}\": {{\n{}        }},\n        \"{second}\": {{\n{}        }}\n    }},\n    \"rootModelIdentifier\": \"{model}\"\n}}\n",
            entry(first),
            entry(second)
        );
        assert_eq!(json, expected);
        assert_eq!(Manifest::parse(json.as_bytes()).unwrap(), m);
    }

    #[test]
    fn ids_are_stable_v5_uuids() {
        let id = item_id(MODEL_ITEM_PATH);
        assert_eq!(id, item_id(MODEL_ITEM_PATH));
        assert_ne!(id, item_id(WEIGHTS_ITEM_PATH));
        let u = Uuid::parse_str(&id).unwrap();
        assert_eq!(u.get_version_num(), 5);
        assert_eq!(id, id.to_lowercase());
    }

    #[test]
    fn parses_a_coremltools_manifest() {
        let text = r#"{
    "fileFormatVersion": "1.0.0",
    "itemInfoEntries": {
        "5147fe8a-2da1-4bc4-be3b-ad295d9d1365": {
            "author": "com.apple.CoreML",
            "description": "CoreML Model Specification",
            "name": "model.mlmodel",
            "path": "com.apple.CoreML/model.mlmodel"
        }
    },
    "rootModelIdentifier": "5147fe8a-2da1-4bc4-be3b-ad295d9d1365"
}
"#;
        let m = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(m.root_item().unwrap().path, MODEL_ITEM_PATH);
    }

    #[test]
    fn rejects_invalid_manifests() {
        let good = Manifest::standard().to_json();
        let bad = |from: &str, to: &str| Manifest::parse(good.replacen(from, to, 1).as_bytes());
        assert!(matches!(
            bad("1.0.0", "1.0"),
            Err(ManifestError::VersionSyntax(_))
        ));
        assert!(matches!(
            bad("1.0.0", "2.0.0"),
            Err(ManifestError::VersionTooNew(_))
        ));
        assert!(matches!(
            bad("1.0.0", "1.x.0"),
            Err(ManifestError::VersionSyntax(_))
        ));
        assert!(matches!(
            bad("com.apple.CoreML/weights", "../weights"),
            Err(ManifestError::BadPath { .. })
        ));
        assert!(matches!(
            bad("com.apple.CoreML/weights", "/etc"),
            Err(ManifestError::BadPath { .. })
        ));
        assert!(matches!(
            bad("\"name\"", "\"nom\""),
            Err(ManifestError::Field { .. })
        ));
        let root = item_id(MODEL_ITEM_PATH);
        let bad_root = good.replace(
            &format!("\"rootModelIdentifier\": \"{root}\""),
            "\"rootModelIdentifier\": \"nope\"",
        );
        assert!(matches!(
            Manifest::parse(bad_root.as_bytes()),
            Err(ManifestError::RootNotFound(_))
        ));
        assert!(matches!(Manifest::parse(b"{"), Err(ManifestError::Json(_))));
        assert!(matches!(
            Manifest::parse(b"[]"),
            Err(ManifestError::Field { .. })
        ));
    }
}
