//! Chunk-set maintenance for CI regeneration:
//! * `compare A B`: file-by-file sha256 comparison (exit 1 when they differ);
//! * `assemble --out SET PART…`: join `--only` parts into the set a full build writes;
//! * `rebuild SET --out NEW`: re-run the build options recorded in `SET/manifest.json` (as data; the
//!   recorded command line is only shown) and check the result is byte-identical.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chunkset::{ChunkSetManifest, compare_sets};
use clap::Args;
use serde_json::json;

use crate::build_cmd;
use crate::exit::{CheckFailed, UsageError};

/// Arguments of `gemma-convert compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// First set.
    pub a: PathBuf,
    /// Second set.
    pub b: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `gemma-convert assemble`.
#[derive(Debug, Args)]
pub struct AssembleArgs {
    /// Output set directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing non-empty output directory.
    #[arg(long)]
    pub force: bool,
    /// Part directories written by `--only`.
    #[arg(required = true)]
    pub parts: Vec<PathBuf>,
}

/// Arguments of `gemma-convert rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The set whose manifest.json holds the command.
    pub set: PathBuf,
    /// Where to write the rebuilt set.
    #[arg(long)]
    pub out: PathBuf,
    /// Use this checkpoint instead of the recorded `--model`.
    #[arg(long)]
    pub model: Option<String>,
    /// Worker threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Replace an existing non-empty output directory.
    #[arg(long)]
    pub force: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn report(a: &std::path::Path, b: &std::path::Path, json_out: bool) -> Result<()> {
    let d = compare_sets(a, b)
        .with_context(|| format!("comparing {} and {}", a.display(), b.display()))?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "a": a, "b": b, "identical": d.is_identical(),
                "same": d.identical.len(), "differ": d.differ, "only_in_a": d.only_in_a, "only_in_b": d.only_in_b,
            }))?
        );
    } else {
        println!("{} files identical", d.identical.len());
        for f in &d.differ {
            println!("differ     {f}");
        }
        for f in &d.only_in_a {
            println!("only in {}: {f}", a.display());
        }
        for f in &d.only_in_b {
            println!("only in {}: {f}", b.display());
        }
    }
    if d.is_identical() {
        Ok(())
    } else {
        Err(CheckFailed(format!(
            "sets differ: {} differing, {} only in {}, {} only in {}",
            d.differ.len(),
            d.only_in_a.len(),
            a.display(),
            d.only_in_b.len(),
            b.display()
        ))
        .into())
    }
}

/// `compare`.
pub fn compare(args: &CompareArgs) -> Result<()> {
    for p in [&args.a, &args.b] {
        if !p.is_dir() {
            return Err(UsageError {
                flag: "SET",
                reason: format!("{}: not a directory", p.display()),
            }
            .into());
        }
    }
    let _a = mlpackage::publish::read_lock(&args.a)?;
    let _b = if same_path(&args.a, &args.b) {
        None
    } else {
        mlpackage::publish::read_lock(&args.b)?
    };
    report(&args.a, &args.b, args.json)
}

/// `assemble`.
pub fn assemble(args: &AssembleArgs) -> Result<()> {
    let out = gemma4_export::build::assemble(&args.parts, &args.out, args.force)?;
    eprintln!(
        "assembled {} parts into {}",
        args.parts.len(),
        out.display()
    );
    Ok(())
}

fn same_path(a: &std::path::Path, b: &std::path::Path) -> bool {
    matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// `rebuild`.
pub fn rebuild(args: &RebuildArgs) -> Result<()> {
    // the set being checked is never the output (it would always compare identical to itself)
    let rules = mlpackage::publish::Rules {
        protected: vec![("the set being rebuilt", args.set.clone())],
        ..gemma4_export::build::publish_rules(args.force, Vec::new())
    };
    mlpackage::publish::check_target(&args.out, &rules)?;
    let m = ChunkSetManifest::read(&args.set).map_err(|e| UsageError {
        flag: "SET",
        reason: e.to_string(),
    })?;
    let mut spec = m.build.spec;
    if let Some(model) = &args.model {
        spec.model = model.clone();
    }
    let threads = build_cmd::cap_threads(args.threads)?;
    let mut opts = build_cmd::options_of(spec, args.out.clone())?;
    opts.threads = threads;
    opts.force = args.force;
    if !args.json {
        eprintln!("rebuilding: {}", opts.command.join(" "));
    }
    build_cmd::execute(&opts, args.json, false)?;
    report(&args.set, &args.out, args.json)
}
