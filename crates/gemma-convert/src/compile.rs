//! `gemma-convert compile SET`: compile every `.mlpackage` of a set with Core ML's own compiler
//! (`MLModel.compileModelAtURL`) and write `<name>.mlmodelc` beside it — Apple's bundles, to
//! compare file by file with the ones `--format mlmodelc` writes on any platform.
//!
//! macOS only (feature `coreml`). **Never compiled or run on this project's machines** (no Mac);
//! elsewhere the command exits with status 2 and says so.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::exit::UsageError;

/// Arguments of `gemma-convert compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// A chunk set directory (every `*.mlpackage` in it is compiled) or one `.mlpackage`.
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
    use anyhow::Context;
    use std::path::Path;

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

    let p = &args.set;
    let packages: Vec<PathBuf> = if p.extension().is_some_and(|e| e == "mlpackage") {
        vec![p.clone()]
    } else {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading {}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|q| q.extension().is_some_and(|e| e == "mlpackage"))
            .collect();
        v.sort();
        v
    };
    if packages.is_empty() {
        return Err(UsageError {
            flag: "SET",
            reason: format!("{}: no .mlpackage to compile", p.display()),
        }
        .into());
    }
    for pkg in &packages {
        let dest = pkg.with_extension("mlmodelc");
        if dest.exists() && !args.force {
            return Err(UsageError {
                flag: "SET",
                reason: format!("{} exists (use --force to replace it)", dest.display()),
            }
            .into());
        }
    }
    for pkg in &packages {
        let dest = pkg.with_extension("mlmodelc");
        let compiled = mil_runtime::coreml::compile_model(pkg)?;
        let parent = dest.parent().unwrap_or(Path::new("."));
        let staging = tempfile::Builder::new()
            .prefix(".compile-")
            .tempdir_in(parent)
            .with_context(|| format!("staging beside {}", dest.display()))?;
        let staged = staging.path().join("bundle");
        copy_dir(&compiled, &staged).with_context(|| format!("copying {}", compiled.display()))?;
        let _ = std::fs::remove_dir_all(&compiled);
        if dest.exists() {
            std::fs::remove_dir_all(&dest)
                .with_context(|| format!("replacing {}", dest.display()))?;
        }
        std::fs::rename(&staged, &dest).with_context(|| format!("writing {}", dest.display()))?;
        eprintln!("{} → {}", pkg.display(), dest.display());
    }
    Ok(())
}
