//! Validate a package with coremltools 9.0 (`scripts/validate_mlpackage.py`).
//!
//! The Python interpreter is looked up in this order:
//! 1. the environment variable `GEMMA_CONVERT_PYTHON`;
//! 2. `<workspace>/.venv/bin/python` (created by `scripts/setup-python.sh`).
//!
//! A candidate "works" if it runs and imports coremltools 9.0. If none works, the error tells the
//! user to run `scripts/setup-python.sh`. The check itself (manifest, proto, description ↔ program,
//! weight.bin walk and BlobReader read-back, pymil rebuild with type inference, optional constexpr
//! materialisation) is done by the script; a non-zero exit is [`CheckError::Failed`] with its output.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable naming the Python interpreter to use.
pub const PYTHON_ENV: &str = "GEMMA_CONVERT_PYTHON";

/// Errors of [`check_package`].
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No interpreter with coremltools 9.0 was found.
    #[error(
        "no Python with coremltools 9.0 found (tried: {}); run scripts/setup-python.sh to create \
         <workspace>/.venv, or set {PYTHON_ENV} to a Python that has coremltools==9.0",
        tried.iter().map(|(p, why)| format!("{} ({why})", p.display())).collect::<Vec<_>>().join(", ")
    )]
    PythonNotFound {
        /// Each candidate with the reason it was rejected.
        tried: Vec<(PathBuf, String)>,
    },
    /// The validator script is missing.
    #[error("validator script {} not found", .0.display())]
    ScriptMissing(PathBuf),
    /// The interpreter could not be started.
    #[error("cannot run {}: {source}", python.display())]
    Spawn {
        /// The interpreter.
        python: PathBuf,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// The validator reported failures.
    #[error("coremltools validation of {} failed ({status}):\n{stdout}{stderr}", package.display())]
    Failed {
        /// The package checked.
        package: PathBuf,
        /// Exit status.
        status: String,
        /// The validator's report (each problem on a `FAIL:` line).
        stdout: String,
        /// Python's stderr.
        stderr: String,
    },
}

/// Options of [`check_package`].
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Also decompress every `constexpr_*` op (`--materialize`).
    pub materialize: bool,
    /// Accept fp32 states (`--allow-fp32-states`): verification builds that Core ML would not
    /// load (its states are fp16 only); without it an fp32 state is a failure.
    pub allow_fp32_states: bool,
    /// The package whose weight file this one shares (`--shared-with`): blob records only that
    /// package's program references are accepted (the weight files must be byte-identical).
    pub shared_with: Option<PathBuf>,
}

/// A passed validation.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The interpreter used.
    pub python: PathBuf,
    /// The validator's summary output.
    pub stdout: String,
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn probe(python: &Path) -> Result<(), String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import coremltools, sys; sys.stdout.write(coremltools.__version__)",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err("cannot import coremltools".into());
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if version == "9.0" {
        Ok(())
    } else {
        Err(format!("coremltools {version}, need 9.0"))
    }
}

/// Find a Python interpreter with coremltools 9.0 (see the module docs for the order).
pub fn find_python() -> Result<PathBuf, CheckError> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(workspace_root().join(".venv/bin/python"));
    find_python_among(&candidates)
}

/// The first of `candidates` that runs and imports coremltools 9.0.
pub fn find_python_among(candidates: &[PathBuf]) -> Result<PathBuf, CheckError> {
    let mut tried = Vec::new();
    for c in candidates {
        match probe(c) {
            Ok(()) => return Ok(c.clone()),
            Err(why) => tried.push((c.clone(), why)),
        }
    }
    Err(CheckError::PythonNotFound { tried })
}

/// Run `scripts/validate_mlpackage.py` on a package.
pub fn check_package(package: &Path, options: &CheckOptions) -> Result<CheckReport, CheckError> {
    let python = find_python()?;
    let script = workspace_root().join("scripts/validate_mlpackage.py");
    if !script.is_file() {
        return Err(CheckError::ScriptMissing(script));
    }
    let mut cmd = Command::new(&python);
    cmd.arg(&script).arg(package);
    if options.materialize {
        cmd.arg("--materialize");
    }
    if options.allow_fp32_states {
        cmd.arg("--allow-fp32-states");
    }
    if let Some(twin) = &options.shared_with {
        cmd.arg("--shared-with").arg(twin);
    }
    let out = cmd.output().map_err(|source| CheckError::Spawn {
        python: python.clone(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(CheckError::Failed {
            package: package.to_path_buf(),
            status: out.status.to_string(),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(CheckReport { python, stdout })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_python_points_at_the_setup_script() {
        let e = find_python_among(&[PathBuf::from("/nonexistent/bin/python")]).unwrap_err();
        assert!(matches!(&e, CheckError::PythonNotFound { tried } if tried.len() == 1));
        let msg = e.to_string();
        assert!(msg.contains("scripts/setup-python.sh"), "{msg}");
        assert!(msg.contains(PYTHON_ENV), "{msg}");
        assert!(msg.contains("/nonexistent/bin/python"), "{msg}");
    }

    #[test]
    fn a_python_without_coremltools_is_skipped() {
        // `true` runs but prints no version: not a usable interpreter
        let e = find_python_among(&[PathBuf::from("/bin/true")]).unwrap_err();
        assert!(
            matches!(&e, CheckError::PythonNotFound { tried } if tried[0].1.contains("coremltools"))
        );
    }
}
