//! `gemma-convert compile SET`: compile every `.mlpackage` of a set with Core ML's own compiler
//! (`MLModel.compileModelAtURL`) and add `<name>.mlmodelc` beside it — Apple's bundles, to
//! compare file by file with the ones `--format mlmodelc` writes on any platform.
//!
//! Like every command that writes a set, it publishes through `mlpackage::publish`
//! ([`publish_bundles`]): under the set's exclusive lock (a `parity`, `bench` or `verify` holding
//! the shared lock makes it fail at once, naming the lock), the set is staged beside itself (its
//! files hard-linked, copied where links fail), the bundles are written into the staged copy,
//! `manifest.json` lists them (sizes, sha256: the result passes `verify`), and the staged set
//! replaces the old one in one swap. A failure or an interrupt leaves the set as it was.
//!
//! The Core ML call is macOS only (feature `coreml`) and **never compiled or run on this project's
//! machines** (no Mac); elsewhere the command exits with status 2 and says so. The staging and
//! publishing around it are platform-independent and tested here with a stand-in compiler.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use crate::exit::UsageError;

/// Arguments of `gemma-convert compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// A chunk set directory (every `*.mlpackage` in it is compiled) or one `.mlpackage` of a set.
    pub set: PathBuf,
    /// Replace `.mlmodelc` bundles that already exist.
    #[arg(long)]
    pub force: bool,
}

/// Run `compile`.
#[cfg(not(all(target_vendor = "apple", feature = "coreml")))]
pub fn run(args: &CompileArgs) -> Result<()> {
    Err(UsageError {
        flag: "compile",
        reason: format!(
            "{}: compiling with Core ML's compiler needs macOS and a build with `--features \
             coreml`; on this platform write compiled bundles with `--format mlmodelc` (or both)",
            args.set.display()
        ),
    }
    .into())
}

/// Run `compile`.
#[cfg(all(target_vendor = "apple", feature = "coreml"))]
pub fn run(args: &CompileArgs) -> Result<()> {
    let (set, only) = resolve(&args.set)?;
    let coreml = |pkg: &Path, dest: &Path| -> Result<()> {
        let compiled = mil_runtime::coreml::compile_model(pkg)?;
        copy_dir(&compiled, dest).with_context(|| format!("copying {}", compiled.display()))?;
        let _ = std::fs::remove_dir_all(&compiled);
        Ok(())
    };
    let done = publish_bundles(&set, only.as_deref(), args.force, &coreml)?;
    for b in &done.bundles {
        eprintln!("{}", set.join(b).display());
    }
    for w in &done.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// The set and, for a `.mlpackage` argument, the stem of the one package to compile.
#[cfg_attr(
    not(all(target_vendor = "apple", feature = "coreml")),
    allow(dead_code)
)]
fn resolve(arg: &Path) -> Result<(PathBuf, Option<String>), UsageError> {
    if arg.extension().is_some_and(|e| e == "mlpackage") {
        let stem = arg
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let set = match arg.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok((set, Some(stem)))
    } else {
        Ok((arg.to_path_buf(), None))
    }
}

/// Copy the directory tree `from` to `to`.
#[cfg_attr(
    not(all(target_vendor = "apple", feature = "coreml")),
    allow(dead_code)
)]
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (s, d) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_dir(&s, &d)?;
        } else {
            std::fs::copy(&s, &d)?;
        }
    }
    Ok(())
}

/// Stage the tree `from` at `to`: directories created, files hard-linked (copied where a link
/// fails). The set's files are never modified in place, so the links are safe: the old set is
/// swapped out and its names removed, the staged names keep the data.
fn link_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (s, d) = (e.path(), to.join(e.file_name()));
        let t = e.file_type()?;
        if t.is_dir() {
            link_dir(&s, &d)?;
        } else if t.is_file() {
            if std::fs::hard_link(&s, &d).is_err() {
                std::fs::copy(&s, &d)?;
            }
        } else {
            return Err(std::io::Error::other(format!(
                "{}: not a regular file or directory",
                s.display()
            )));
        }
    }
    Ok(())
}

/// What [`publish_bundles`] wrote.
#[cfg_attr(
    not(all(target_vendor = "apple", feature = "coreml")),
    allow(dead_code)
)]
#[derive(Debug)]
pub struct Compiled {
    /// The bundles added or replaced, relative to the set.
    pub bundles: Vec<String>,
    /// Warnings of the swap (previous set not removed, debris of earlier runs).
    pub warnings: Vec<String>,
}

/// Compile the packages of the set at `set` (all, or only `only`) with `compile(package,
/// bundle_dir)` into `<stem>.mlmodelc` and publish the set with them (see the module doc).
/// Existing bundles are replaced only with `force`. Bad input (not a set of ours, no package,
/// an existing bundle without `force`, a held lock) is refused before anything is written.
#[cfg_attr(
    not(all(target_vendor = "apple", feature = "coreml")),
    allow(dead_code)
)]
pub fn publish_bundles(
    set: &Path,
    only: Option<&str>,
    force: bool,
    compile: &dyn Fn(&Path, &Path) -> Result<()>,
) -> Result<Compiled> {
    let not_a_set = |reason: String| UsageError {
        flag: "SET",
        reason,
    };
    chunkset::ChunkSetManifest::read(set).map_err(|e| {
        not_a_set(format!(
            "{e} (compile adds bundles to a chunk set written by gemma-convert)"
        ))
    })?;
    let mut stems: Vec<String> = std::fs::read_dir(set)
        .with_context(|| format!("reading {}", set.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".mlpackage")
                .map(str::to_string)
        })
        .filter(|stem| only.is_none_or(|o| o == stem))
        .collect();
    stems.sort();
    if stems.is_empty() {
        return Err(not_a_set(match only {
            Some(o) => format!("{}: no {o}.mlpackage in the set", set.display()),
            None => format!("{}: no .mlpackage to compile", set.display()),
        })
        .into());
    }
    let bundles: Vec<String> = stems.iter().map(|s| format!("{s}.mlmodelc")).collect();
    let existing = |bundles: &[String]| -> Result<(), UsageError> {
        match bundles.iter().find(|b| set.join(b).exists()) {
            Some(b) if !force => Err(not_a_set(format!(
                "{} exists (use --force to replace it)",
                set.join(b).display()
            ))),
            _ => Ok(()),
        }
    };
    existing(&bundles)?;
    let rules = mlpackage::publish::Rules {
        flag: "SET",
        // the set is replaced by itself plus the bundles
        force: true,
        protected: Vec::new(),
        is_ours: &gemma4_export::build::is_our_output,
        marker: "manifest.json written by gemma-convert",
        companions: Vec::new(),
    };
    let publisher = mlpackage::publish::Publisher::begin(set, &rules)?;
    // what was checked before the lock was ours may have changed
    existing(&bundles)?;
    let mut manifest =
        chunkset::ChunkSetManifest::read(set).map_err(|e| not_a_set(e.to_string()))?;
    let staged = publisher.dir().to_path_buf();
    for e in std::fs::read_dir(set).with_context(|| format!("reading {}", set.display()))? {
        let e = e.with_context(|| format!("reading {}", set.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == chunkset::MANIFEST_NAME || bundles.contains(&name) {
            continue; // rewritten / replaced below
        }
        let (s, d) = (e.path(), staged.join(&name));
        let t = e.file_type()?;
        let r = if t.is_dir() {
            link_dir(&s, &d)
        } else if t.is_file() {
            std::fs::hard_link(&s, &d).or_else(|_| std::fs::copy(&s, &d).map(|_| ()))
        } else {
            Err(std::io::Error::other("not a regular file or directory"))
        };
        r.with_context(|| format!("staging {}", s.display()))?;
    }
    for (stem, bundle) in stems.iter().zip(&bundles) {
        let pkg = staged.join(format!("{stem}.mlpackage"));
        compile(&pkg, &staged.join(bundle)).with_context(|| {
            format!(
                "compiling {}",
                set.join(format!("{stem}.mlpackage")).display()
            )
        })?;
    }
    manifest.files = chunkset::hash_tree(&staged)?;
    std::fs::write(staged.join(chunkset::MANIFEST_NAME), manifest.to_json()?)
        .with_context(|| format!("writing {}", staged.join(chunkset::MANIFEST_NAME).display()))?;
    let published = publisher.commit()?;
    Ok(Compiled {
        bundles,
        warnings: published.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A tiny swa4 set built by the CLI's build command.
    fn tiny_set(out: &Path) {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/tiny-e2b");
        let cli = crate::Cli::try_parse_from([
            "gemma-convert",
            "--model",
            model.to_str().unwrap(),
            "--ctx",
            "32",
            "--nbits",
            "0",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ])
        .unwrap();
        crate::build_cmd::run(&cli.build).unwrap();
    }

    /// A stand-in for Core ML's compiler: this project's bundle writer.
    fn ours(pkg: &Path, dest: &Path) -> Result<()> {
        mlpackage::compiled::compile_package(pkg, dest, &Default::default())?;
        Ok(())
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn verify_pass(set: &Path) -> bool {
        mil_runtime::verify::verify_set(set, &Default::default())
            .unwrap()
            .pass()
    }

    #[test]
    fn compile_publishes_the_set_with_its_bundles_under_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let set = tmp.path().join("set");
        tiny_set(&set);
        let before = chunkset::hash_tree(&set).unwrap();

        // a reader holds the shared lock: refused at once, nothing written
        let reader = mlpackage::publish::read_lock(&set).unwrap();
        let e = publish_bundles(&set, None, false, &ours).unwrap_err();
        assert!(format!("{e:#}").contains(".set.lock"), "{e:#}");
        drop(reader);
        assert_eq!(chunkset::hash_tree(&set).unwrap(), before);

        // a compiler failing on the second package: the set is as it was, no debris
        let calls = std::cell::Cell::new(0);
        let failing = |pkg: &Path, dest: &Path| -> Result<()> {
            calls.set(calls.get() + 1);
            if calls.get() == 2 {
                anyhow::bail!("compiler crashed");
            }
            ours(pkg, dest)
        };
        let e = publish_bundles(&set, None, false, &failing).unwrap_err();
        assert!(format!("{e:#}").contains("compiler crashed"), "{e:#}");
        assert_eq!(chunkset::hash_tree(&set).unwrap(), before);
        assert_eq!(entries(tmp.path()), ["set"]);

        // done: every package has its bundle, the manifest lists them, the set verifies
        let done = publish_bundles(&set, None, false, &ours).unwrap();
        assert_eq!(
            done.bundles,
            [
                "chunk1.mlmodelc",
                "chunk2.mlmodelc",
                "chunk3.mlmodelc",
                "chunk4.mlmodelc"
            ]
        );
        for b in &done.bundles {
            assert!(set.join(b).join("coremldata.bin").is_file(), "{b}");
        }
        let after = chunkset::hash_tree(&set).unwrap();
        for f in &before {
            assert!(after.contains(f), "{} changed", f.path);
        }
        let m = chunkset::ChunkSetManifest::read(&set).unwrap();
        assert_eq!(m.files, after);
        assert!(verify_pass(&set));
        assert_eq!(
            entries(tmp.path()),
            ["set"],
            "no staging debris, no lock file"
        );

        // again: refused without --force (nothing touched), replaced with it
        let e = publish_bundles(&set, Some("chunk2"), false, &ours).unwrap_err();
        assert!(format!("{e:#}").contains("--force"), "{e:#}");
        assert_eq!(chunkset::hash_tree(&set).unwrap(), after);
        let done = publish_bundles(&set, Some("chunk2"), true, &ours).unwrap();
        assert_eq!(done.bundles, ["chunk2.mlmodelc"]);
        assert_eq!(chunkset::hash_tree(&set).unwrap(), after);
        assert!(verify_pass(&set));

        // not a set of ours
        let e = publish_bundles(tmp.path(), None, false, &ours).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
    }
}
