//! Tidy: the crate dependency table of `docs/ARCHITECTURE.md` is the law. Every crate under `crates/`
//! has a row, and no crate's `[dependencies]` (build and target-specific ones included; dev-dependencies
//! are for tests) names one of ours that its row's `uses (ours)` column does not allow (`all` allows
//! every one, `—` none).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What a crate's row allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    All,
    Only(BTreeSet<String>),
}

/// The code-map rows of ARCHITECTURE.md: `| `crates/<name>` | owns | uses (ours) |`.
fn table(doc: &str) -> BTreeMap<String, Allowed> {
    let mut rows = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let Some(name) = cells
            .first()
            .and_then(|c| c.strip_prefix("`crates/"))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue;
        };
        let Some(uses) = cells.last() else { continue };
        let allowed = if *uses == "all" {
            Allowed::All
        } else {
            Allowed::Only(
                uses.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect(),
            )
        };
        rows.insert(name.to_string(), allowed);
    }
    rows
}

/// The package name and the normal, build and target dependencies of a Cargo.toml.
fn manifest(toml: &str) -> (String, BTreeSet<String>) {
    let mut name = String::new();
    let mut deps = BTreeSet::new();
    let mut section = String::new();
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if section == "package" && key == "name" {
            name = value.trim().trim_matches('"').to_string();
        }
        let is_deps = section == "dependencies"
            || section == "build-dependencies"
            || (section.starts_with("target.") && section.ends_with(".dependencies"));
        if is_deps && !key.starts_with('#') {
            // `name.workspace = true` or `name = ...`
            deps.insert(key.split('.').next().unwrap_or(key).trim().to_string());
        }
    }
    (name, deps)
}

/// Every violation: crates without a row, rows without a crate, dependencies the table does not allow.
fn violations(
    rows: &BTreeMap<String, Allowed>,
    crates: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut v = Vec::new();
    for name in crates.keys().filter(|c| !rows.contains_key(*c)) {
        v.push(format!(
            "crate {name} has no row in the ARCHITECTURE.md table"
        ));
    }
    for name in rows.keys().filter(|r| !crates.contains_key(*r)) {
        v.push(format!(
            "the table lists {name}, which is not a crate under crates/"
        ));
    }
    for (name, deps) in crates {
        let Some(Allowed::Only(allowed)) = rows.get(name) else {
            continue;
        };
        for d in deps
            .iter()
            .filter(|d| crates.contains_key(*d) && !allowed.contains(*d))
        {
            v.push(format!(
                "{name} depends on {d}, which its row does not allow ({allowed:?})"
            ));
        }
    }
    v
}

#[test]
fn crate_dependencies_follow_the_architecture_table() {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let rows = table(&doc);
    let mut crates = BTreeMap::new();
    for e in std::fs::read_dir(root().join("crates")).unwrap() {
        let p = e.unwrap().path().join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&p) {
            let (name, deps) = manifest(&text);
            assert!(!name.is_empty(), "{}: no package name", p.display());
            crates.insert(name, deps);
        }
    }
    assert!(crates.len() >= 9, "found only {:?}", crates.keys());
    // the table is read as intended
    assert_eq!(rows.get("gemma-convert"), Some(&Allowed::All));
    assert_eq!(rows.get("mil"), Some(&Allowed::Only(BTreeSet::new())));
    let v = violations(&rows, &crates);
    assert!(v.is_empty(), "{}", v.join("\n"));
}

#[test]
fn a_dependency_the_table_does_not_allow_is_reported() {
    let doc = "| crate | owns | uses (ours) |\n|---|---|---|\n\
               | `crates/low` | x | — |\n| `crates/mid` | y | `low` |\n| `crates/top` | z | all |\n";
    let rows = table(doc);
    let toml = |name: &str, deps: &str| manifest(&format!("[package]\nname = \"{name}\"\n{deps}"));
    let crates: BTreeMap<_, _> = [
        toml(
            "low",
            "[dependencies]\nserde.workspace = true\n[dev-dependencies]\nmid.workspace = true\n",
        ),
        toml("mid", "[dependencies]\nlow.workspace = true\n"),
        toml(
            "top",
            "[dependencies]\nmid = { path = \"../mid\" }\nlow.workspace = true\n",
        ),
    ]
    .into_iter()
    .collect();
    assert!(
        violations(&rows, &crates).is_empty(),
        "dev-dependencies and `all` are allowed"
    );
    let mut bad = crates.clone();
    bad.insert(
        "low".into(),
        toml("low", "[target.'cfg(unix)'.dependencies]\nmid = \"1\"\n").1,
    );
    bad.insert("extra".into(), BTreeSet::new());
    let v = violations(&rows, &bad);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].contains("extra has no row"), "{v:?}");
    assert!(v[1].contains("low depends on mid"), "{v:?}");
}
