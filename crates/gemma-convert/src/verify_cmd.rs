//! `gemma-convert verify SET`: the set against its manifest, its `model_config.json` and the
//! contract, without running anything (`mil_runtime::verify`). Exit 0 when it passes, 1 naming
//! every file (and field) that is wrong, 2 when SET cannot be verified at all (not a directory,
//! no manifest.json of ours, locked by a build).
//!
//! [`check_set`] is the same check at the start of `parity` and `bench` (every path, stateful sets
//! included), under the set's shared lock, followed by the memory check of the buffers the
//! packages declare.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use mil_runtime::chunkset::ModelConfig;
use mil_runtime::verify::{HashPolicy, VerifyError, VerifyOptions, VerifyReport, verify_set};
use serde_json::json;

use crate::exit::{CheckFailed, UsageError};

/// Arguments of `gemma-convert verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The chunk set directory.
    pub set: PathBuf,
    /// Print one JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A usage error for a set that cannot be verified at all.
fn unverifiable(flag: &'static str, e: VerifyError) -> UsageError {
    UsageError {
        flag,
        reason: e.to_string(),
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The report as JSON (`seconds`: wall time of the check).
pub fn report_json(dir: &Path, r: &VerifyReport, seconds: f64) -> serde_json::Value {
    json!({
        "set": dir,
        "pass": r.pass(),
        "findings": r.findings,
        "files": r.files,
        "bytes": r.bytes,
        "hashed_files": r.hashed_files,
        "hashed_bytes": r.hashed_bytes,
        "packages": r.packages,
        "functions": r.functions,
        "seconds": seconds,
    })
}

/// One line: PASS with what was covered, or FAIL with the number of problems.
pub fn summary(dir: &Path, r: &VerifyReport, seconds: f64) -> String {
    if r.pass() {
        format!(
            "verify {}: PASS ({} files, {}; sha256 of {} files, {}; {} packages, {} functions \
             against the contract; {seconds:.2} s)",
            dir.display(),
            r.files,
            mb(r.bytes),
            r.hashed_files,
            mb(r.hashed_bytes),
            r.packages.len(),
            r.functions
        )
    } else {
        format!(
            "verify {}: FAIL ({} problem{})",
            dir.display(),
            r.findings.len(),
            if r.findings.len() == 1 { "" } else { "s" }
        )
    }
}

/// The error of a set that failed, listing every finding: a failed check (exit 1), or for a
/// reader (`flag` = `--chunks`) bad input (exit 2) when a file is missing or unreadable.
fn failure(dir: &Path, r: &VerifyReport, flag: &'static str) -> anyhow::Error {
    let n = r.findings.len();
    let msg = format!(
        "{} fails verify ({n} problem{}, listed above; the first: {})",
        dir.display(),
        if n == 1 { "" } else { "s" },
        r.findings
            .first()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    if r.unusable() && flag == "--chunks" {
        UsageError { flag, reason: msg }.into()
    } else {
        CheckFailed(msg).into()
    }
}

/// Run `verify`.
pub fn run(args: &VerifyArgs) -> Result<()> {
    let _lock = mlpackage::publish::read_lock(&args.set)?;
    let t0 = Instant::now();
    let r = verify_set(&args.set, &VerifyOptions::default()).map_err(|e| unverifiable("SET", e))?;
    let seconds = t0.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(&args.set, &r, seconds))?
        );
    } else {
        for x in &r.findings {
            println!("FAIL {x}");
        }
        println!("{}", summary(&args.set, &r, seconds));
    }
    if r.pass() {
        Ok(())
    } else {
        Err(failure(&args.set, &r, "SET"))
    }
}

/// Check the set at `dir` before `publish` copies it (its shared lock already held): the set must
/// pass [`verify_set`] — sizes and structure of everything, sha256 of the files up to 1 MB (every
/// file `publish` copies has its sha256 compared while it is copied). A set that fails is not
/// publishable input: exit 2, every finding listed on stderr.
pub fn check_publishable(dir: &Path) -> Result<()> {
    let opts = VerifyOptions {
        hashes: HashPolicy::UpTo(1 << 20),
        ..VerifyOptions::default()
    };
    let r = verify_set(dir, &opts).map_err(|e| unverifiable("SET", e))?;
    if r.pass() {
        return Ok(());
    }
    for x in &r.findings {
        eprintln!("FAIL {x}");
    }
    let n = r.findings.len();
    Err(UsageError {
        flag: "SET",
        reason: format!(
            "{} fails verify: it changed after it was built or is damaged ({n} problem{}, listed \
             above; the first: {})",
            dir.display(),
            if n == 1 { "" } else { "s" },
            r.findings
                .first()
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
    }
    .into())
}

/// A set that passed [`check_set`]: its shared lock (held while it is used), its config and the
/// verify report.
pub struct CheckedSet {
    /// Held (never read) while the set is used; released on drop.
    _lock: Option<mlpackage::publish::SetLock>,
    pub config: ModelConfig,
    pub report: VerifyReport,
    pub seconds: f64,
}

/// What `parity` and `bench` hash (every file: sha256 of a whole E2B INT4 set costs a few seconds,
/// see the README).
pub const READER_HASHES: HashPolicy = HashPolicy::All;

/// Check the set at `dir` before `parity` / `bench` read it: a usage error when it is not a set;
/// its shared lock; [`verify_set`] (findings: exit 1, or 2 when a file is missing or unreadable;
/// with `json`, a `{"pass": false, "verify": …}` report is printed on stdout first); then the
/// buffers its packages declare against this machine's memory (no command aborts on an
/// allocation).
pub fn check_set(dir: &Path, json: bool) -> Result<CheckedSet> {
    let bad = |reason: String| UsageError {
        flag: "--chunks",
        reason,
    };
    if !dir.join(chunkset::MODEL_CONFIG_NAME).is_file() {
        return Err(bad(format!(
            "{}: no model_config.json (not a chunk set)",
            dir.display()
        ))
        .into());
    }
    let lock = mlpackage::publish::read_lock(dir)?;
    let t0 = Instant::now();
    let opts = VerifyOptions {
        hashes: READER_HASHES,
        ..VerifyOptions::default()
    };
    let report = verify_set(dir, &opts).map_err(|e| unverifiable("--chunks", e))?;
    let seconds = t0.elapsed().as_secs_f64();
    if !report.pass() {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "chunks": dir,
                    "pass": false,
                    "verify": report_json(dir, &report, seconds),
                }))?
            );
        } else {
            for x in &report.findings {
                println!("FAIL {x}");
            }
            println!("{}", summary(dir, &report, seconds));
        }
        return Err(failure(dir, &report, "--chunks"));
    }
    // verify read the config: it follows the contract
    let config = ModelConfig::read(dir)?;
    check_memory(dir, &config, &report)?;
    Ok(CheckedSet {
        _lock: lock,
        config,
        report,
        seconds,
    })
}

/// Physical memory (Linux `MemTotal`; 64 GiB where unknown).
fn memory_bytes() -> u128 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            l.split_whitespace().nth(1)?.parse::<u128>().ok()
        })
        .map_or(64 << 30, |kb| kb * 1024)
}

/// Refuse a set whose declared buffers (as f32) exceed this machine's memory: one buffer, or the
/// largest function of every chunk the runtime loads together.
fn check_memory(dir: &Path, config: &ModelConfig, r: &VerifyReport) -> Result<(), UsageError> {
    let mem = memory_bytes();
    let bad = |reason: String| UsageError {
        flag: "--chunks",
        reason,
    };
    for b in &r.buffers {
        if 4 * b.elements > mem {
            return Err(bad(format!(
                "{}: `{}` of {} has shape {:?}: {} GB, more than this machine's memory",
                dir.join(&b.package).display(),
                b.name,
                b.function,
                b.shape,
                4 * b.elements / 1_000_000_000
            )));
        }
    }
    let mut total: u128 = 0;
    // prefill chunks are loaded beside the decode chunks
    let stems = config
        .chunks
        .iter()
        .map(|c| c.name.as_str())
        .chain(config.prefill_chunks().iter().map(|p| p.name.as_str()));
    for stem in stems {
        let loaded = mlpackage::compiled::model_path(dir, stem);
        let rel = loaded
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut per_fn: std::collections::BTreeMap<&str, u128> = Default::default();
        for b in r.buffers.iter().filter(|b| b.package == rel) {
            *per_fn.entry(&b.function).or_default() += 4 * b.elements;
        }
        total += per_fn.values().copied().max().unwrap_or(0);
    }
    if total > mem {
        return Err(bad(format!(
            "{}: the chunks' inputs, outputs and states need {} GB, more than this machine's memory",
            dir.display(),
            total / 1_000_000_000
        )));
    }
    Ok(())
}
