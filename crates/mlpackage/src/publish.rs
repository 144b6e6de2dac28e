//! Publishing a file set — one output directory plus companion files beside it (e.g. its zip) —
//! so that a command never destroys what it did not write and either finishes or leaves nothing.
//!
//! Nothing here knows what the files are; callers say what "one of ours" looks like.
//!
//! * **Target guard** ([`check_target`]): `OUT` is resolved (symlinks followed) and refused when it is
//!   `/`, or is or contains the home directory or the current directory, or is, contains or lies
//!   inside a protected path (the model directory, the set being rebuilt, the parts being
//!   assembled); when it exists and is not a directory, is a mount point (the set is swapped in by
//!   renaming, which a mount point does not allow), or is non-empty without `force`, or non-empty
//!   with `force` but without the caller's marker ([`Rules::is_ours`]). A companion (`OUT.zip`)
//!   that exists is replaced only with `force`, and only if it is a regular file that is ours.
//!   Every refusal happens before any work.
//! * **Lock** ([`SetLock`]): writers hold an exclusive `flock` on `.<NAME>.lock` beside `OUT` for
//!   the whole run (a second writer fails at once naming the lock and the holder's pid); readers
//!   hold a shared lock on the same file ([`read_lock`]), so a writer never swaps a set that is
//!   being read. The lock file is removed by whoever releases it last.
//! * **Staging**: everything is written into `.<NAME>.partial-pid<PID>-<N>/` beside `OUT` (same
//!   directory, hence the same filesystem): the set in `<NAME>/`, companions as `<NAME><suffix>`.
//!   Dropping an uncommitted [`Publisher`] removes it.
//! * **Swap** ([`Publisher::commit`]): the staged set replaces `OUT` by an atomic exchange
//!   (`renameat2(RENAME_EXCHANGE)` on Linux; elsewhere two renames with the old set moved into the
//!   staging dir first, restored on failure), then each companion the same way; if a companion
//!   fails the set is swapped back, so set and zip are published together or not at all. Removing
//!   the previous set afterwards is best effort: a failure is a warning, not an error.
//! * **Debris**: a later run (holding the lock) removes staging dirs whose pid is no longer alive,
//!   first restoring the previous set if `OUT` is missing (a kill between the two renames of the
//!   fallback swap). Staging dirs of live processes and names left by older versions are reported,
//!   never touched.
//! * **Signals**: the library installs no handlers. [`interrupt_cleanup`] removes every active
//!   staging dir and releases every lock file of this process (waiting for a swap in progress to
//!   finish); the CLI calls it from its SIGINT/SIGTERM handler thread and exits.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why publishing refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The output target is not one this command may write (bad input: nothing was touched).
    #[error("{flag} {path}: {reason}")]
    Refused {
        /// The flag that named the target (`--out`).
        flag: String,
        /// The target as given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another process holds the lock of the target.
    #[error("{path}: {reason}")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it and what to do.
        reason: String,
    },
    /// A filesystem operation failed while staging or swapping.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl PublishError {
    /// True for refusals and lock conflicts (bad input or usage, exit status 2); false for I/O
    /// failures of the environment.
    pub fn is_usage(&self) -> bool {
        !matches!(self, PublishError::Io { .. })
    }
}

type Result<T, E = PublishError> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A companion file published with the set: `OUT<suffix>` (e.g. `.zip`).
pub struct Companion<'a> {
    /// Appended to `OUT`'s path.
    pub suffix: &'a str,
    /// Whether an existing file at `OUT<suffix>` was written by this tool (replaced only then).
    pub is_ours: &'a dyn Fn(&Path) -> bool,
}

/// What a command may write where.
pub struct Rules<'a> {
    /// The flag naming the target, for messages (`--out`).
    pub flag: &'a str,
    /// Replace an existing non-empty target (only if it is ours).
    pub force: bool,
    /// `(what, path)`: the target must not be, contain or lie inside any of these.
    pub protected: Vec<(&'a str, PathBuf)>,
    /// Whether an existing non-empty directory was written by this tool.
    pub is_ours: &'a dyn Fn(&Path) -> bool,
    /// What [`Rules::is_ours`] looks for, for messages (`a manifest.json written by gemma-convert`).
    pub marker: &'a str,
    /// Companion files the caller may write with the set.
    pub companions: Vec<Companion<'a>>,
}

/// A checked output target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Absolute path, symlinks resolved (it or its nearest existing ancestor).
    pub path: PathBuf,
    /// Its parent directory (exists after [`Publisher::begin`]).
    pub parent: PathBuf,
    /// Its file name.
    pub name: OsString,
}

impl Target {
    /// `OUT<suffix>` beside the target.
    pub fn companion(&self, suffix: &str) -> PathBuf {
        let mut n = self.name.clone();
        n.push(suffix);
        self.parent.join(n)
    }

    fn name_str(&self) -> String {
        self.name.to_string_lossy().into_owned()
    }

    /// The lock file of this target.
    pub fn lock_path(&self) -> PathBuf {
        self.parent.join(format!(".{}.lock", self.name_str()))
    }

    fn staging_prefix(&self) -> String {
        format!(".{}.partial-pid", self.name_str())
    }
}

/// Resolve `p` to an absolute path with symlinks resolved: its longest existing prefix is
/// canonicalized and the rest (plain names only) appended.
fn resolve(p: &Path) -> std::io::Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    let mut base = abs.clone();
    let mut rest: Vec<OsString> = Vec::new();
    loop {
        if base.symlink_metadata().is_ok() {
            let mut r = fs::canonicalize(&base)?;
            for c in rest.iter().rev() {
                r.push(c);
            }
            return Ok(r);
        }
        let name = match base.components().next_back() {
            Some(Component::Normal(n)) => n.to_os_string(),
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "path does not name a file or directory",
                ));
            }
        };
        rest.push(name);
        if !base.pop() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no existing ancestor",
            ));
        }
    }
}

/// Whether `dir` is a mount point (its device differs from its parent's, or it is its own parent).
fn is_mount_point(dir: &Path) -> bool {
    let (Ok(m), Some(parent)) = (fs::metadata(dir), dir.parent()) else {
        return true;
    };
    match fs::metadata(parent) {
        Ok(p) => p.dev() != m.dev() || p.ino() == m.ino(),
        Err(_) => false,
    }
}

/// Check `out` against `rules` (see the module doc); nothing is touched.
pub fn check_target(out: &Path, rules: &Rules<'_>) -> Result<Target> {
    let refuse = |reason: String| PublishError::Refused {
        flag: rules.flag.to_string(),
        path: out.to_path_buf(),
        reason,
    };
    if let Ok(m) = out.symlink_metadata()
        && m.file_type().is_symlink()
        && fs::metadata(out).is_err()
    {
        return Err(refuse("is a dangling symbolic link".into()));
    }
    let path = resolve(out).map_err(|e| refuse(format!("cannot be resolved: {e}")))?;
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(refuse("is the root directory".into()));
    };
    let target = Target {
        parent: parent.to_path_buf(),
        name: name.to_os_string(),
        path: path.clone(),
    };
    let here = |what: &str, p: Option<PathBuf>| -> Result<()> {
        let Some(p) = p.and_then(|p| fs::canonicalize(p).ok()) else {
            return Ok(());
        };
        if p == path {
            Err(refuse(format!("is {what} ({})", p.display())))
        } else if p.starts_with(&path) {
            Err(refuse(format!("contains {what} ({})", p.display())))
        } else {
            Ok(())
        }
    };
    here(
        "your home directory",
        std::env::var_os("HOME").map(PathBuf::from),
    )?;
    here("the current directory", std::env::current_dir().ok())?;
    for (what, p) in &rules.protected {
        let Ok(p) = fs::canonicalize(p) else { continue };
        if p == path {
            return Err(refuse(format!("is {what} ({})", p.display())));
        }
        if p.starts_with(&path) {
            return Err(refuse(format!("contains {what} ({})", p.display())));
        }
        if path.starts_with(&p) {
            return Err(refuse(format!("lies inside {what} ({})", p.display())));
        }
    }
    if let Ok(m) = fs::symlink_metadata(&path) {
        if !m.is_dir() {
            return Err(refuse("exists and is not a directory".into()));
        }
        if is_mount_point(&path) {
            return Err(refuse(
                "is a mount point: the output is swapped in by renaming, which a mount point does \
                 not allow; write to a new directory inside it"
                    .into(),
            ));
        }
        let non_empty = fs::read_dir(&path).map_err(io(&path))?.next().is_some();
        if non_empty && !rules.force {
            return Err(refuse(
                "directory exists and is not empty (use --force to replace it)".into(),
            ));
        }
        if non_empty && !(rules.is_ours)(&path) {
            return Err(refuse(format!(
                "directory is not empty and holds no {}: --force only replaces output of this tool",
                rules.marker
            )));
        }
    } else {
        // the nearest existing ancestor must be a directory
        let mut a = target.parent.clone();
        while fs::symlink_metadata(&a).is_err() && a.pop() {}
        if !a.is_dir() {
            return Err(refuse(format!("parent {} is not a directory", a.display())));
        }
    }
    for c in &rules.companions {
        let p = target.companion(c.suffix);
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        let refuse_c = |reason: String| PublishError::Refused {
            flag: rules.flag.to_string(),
            path: p.clone(),
            reason,
        };
        if !m.is_file() {
            return Err(refuse_c("exists and is not a regular file".into()));
        }
        if !rules.force {
            return Err(refuse_c("exists (use --force to replace it)".into()));
        }
        if !(c.is_ours)(&p) {
            return Err(refuse_c(
                "exists and was not written by this tool for this output: not replacing it".into(),
            ));
        }
    }
    Ok(target)
}

/// Whether process `pid` is alive.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

// ---------------------------------------------------------------------------------------------
// Locks

/// An `flock` on `.<NAME>.lock` beside a target; released (and the file removed when no one else
/// holds it) on drop.
#[derive(Debug)]
pub struct SetLock {
    file: File,
    path: PathBuf,
    exclusive: bool,
    id: u64,
}

fn flock(f: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a valid open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The file at `path` is still the one open as `f` (not unlinked or replaced by a releaser).
fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl SetLock {
    fn acquire(path: &Path, exclusive: bool) -> Result<Option<SetLock>> {
        for _ in 0..32 {
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
            {
                Ok(f) => f,
                // a reader in a read-only place: lock an existing file, or none (no writer can
                // be working there)
                Err(_) if !exclusive => match File::open(path) {
                    Ok(f) => f,
                    Err(_) => return Ok(None),
                },
                Err(e) => return Err(io(path)(e)),
            };
            let op = if exclusive {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            } | libc::LOCK_NB;
            if let Err(e) = flock(&file, op) {
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    let mut holder = String::new();
                    let _ = (&file).read_to_string(&mut holder);
                    let who = match holder.trim().parse::<u32>() {
                        Ok(pid) => format!("another gemma-convert (pid {pid}) is writing it"),
                        Err(_) => "another gemma-convert is reading or writing it".into(),
                    };
                    return Err(PublishError::Locked {
                        path: path.to_path_buf(),
                        reason: format!(
                            "locked: {who}; try again when it has finished{}",
                            if exclusive {
                                ""
                            } else {
                                " (a set is never read while it is being replaced)"
                            }
                        ),
                    });
                }
                return Err(io(path)(e));
            }
            if !same_file(&file, path) {
                continue; // released and removed meanwhile: lock the new file
            }
            if exclusive {
                let mut f = &file;
                let _ = file.set_len(0);
                let _ = write!(f, "{}", std::process::id());
            }
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut a) = ACTIVE.lock() {
                a.push(Active {
                    id,
                    staging: None,
                    lock: Some((path.to_path_buf(), file.as_raw_fd(), exclusive)),
                });
            }
            return Ok(Some(SetLock {
                file,
                path: path.to_path_buf(),
                exclusive,
                id,
            }));
        }
        Err(PublishError::Locked {
            path: path.to_path_buf(),
            reason: "the lock file keeps being replaced; try again".into(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Remove the lock file if this descriptor may (exclusive holder, or a shared holder that can
/// take it exclusively, i.e. the last one).
fn release_lock_file(fd: libc::c_int, path: &Path, exclusive: bool) {
    // SAFETY: flock on a descriptor owned by a live SetLock (the registry entry is removed before
    // the descriptor is closed).
    let may = exclusive || unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !may {
        return;
    }
    // same file check through the descriptor
    // SAFETY: fstat on a valid descriptor into a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return;
    }
    if let Ok(m) = fs::metadata(path)
        && m.dev() == st.st_dev as u64
        && m.ino() == st.st_ino as u64
    {
        let _ = fs::remove_file(path);
    }
}

impl Drop for SetLock {
    fn drop(&mut self) {
        if let Ok(mut a) = ACTIVE.lock() {
            a.retain(|e| e.id != self.id);
        }
        release_lock_file(self.file.as_raw_fd(), &self.path, self.exclusive);
    }
}

/// Take a shared (reader's) lock on the set at `set`: fails with [`PublishError::Locked`] while a
/// writer builds or replaces it. `Ok(None)` when the set's directory cannot hold a lock file
/// (read-only place: then no writer can be replacing it either) or `set` does not resolve.
pub fn read_lock(set: &Path) -> Result<Option<SetLock>> {
    let Ok(path) = fs::canonicalize(set) else {
        return Ok(None);
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(None);
    };
    let t = Target {
        parent: parent.to_path_buf(),
        name: name.to_os_string(),
        path: path.clone(),
    };
    SetLock::acquire(&t.lock_path(), false)
}

// ---------------------------------------------------------------------------------------------
// Registry of what this process holds, for interrupt_cleanup

struct Active {
    id: u64,
    staging: Option<PathBuf>,
    lock: Option<(PathBuf, libc::c_int, bool)>,
}

static ACTIVE: Mutex<Vec<Active>> = Mutex::new(Vec::new());
/// Held while sets are swapped; [`interrupt_cleanup`] takes it for good.
static SWAP: Mutex<()> = Mutex::new(());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Remove every staging directory of this process and release its lock files, after any swap in
/// progress has finished; returns the staging directories removed. For a signal handler thread
/// that exits the process right after: no publish can start afterwards.
pub fn interrupt_cleanup() -> Vec<PathBuf> {
    let guard = SWAP.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::forget(guard);
    let mut removed = Vec::new();
    let active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
    for a in active.iter() {
        if let Some(s) = &a.staging {
            // worker threads may still be writing into it: retry until it is gone
            for _ in 0..50 {
                let _ = fs::remove_dir_all(s);
                if fs::symlink_metadata(s).is_err() {
                    break;
                }
            }
            removed.push(s.clone());
        }
    }
    for a in active.iter() {
        if let Some((path, fd, exclusive)) = &a.lock {
            release_lock_file(*fd, path, *exclusive);
        }
    }
    std::mem::forget(active);
    removed
}

// ---------------------------------------------------------------------------------------------
// Publisher

/// How an entry was moved into place (to undo it).
enum Swapped {
    /// Nothing was at the destination.
    Fresh,
    /// Exchanged atomically: the staged path now holds the previous entry.
    Exchanged,
    /// The previous entry was moved to this path first.
    MovedAside(PathBuf),
}

/// The result of a commit.
#[derive(Debug, Default)]
pub struct Published {
    /// Things the user should know (previous set not removed, debris restored or left).
    pub warnings: Vec<String>,
}

/// One publishing run: the target, its lock and the staging directory (see the module doc).
pub struct Publisher {
    target: Target,
    staging: PathBuf,
    dir: PathBuf,
    companions: Vec<String>,
    notes: Vec<String>,
    committed: bool,
    id: u64,
    remove_dir: fn(&Path) -> std::io::Result<()>,
    swap_companion: fn(&Path, &Path, &Path, &str) -> Result<Swapped>,
    // dropped last: the lock outlives the staging directory
    _lock: SetLock,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Publisher {
    /// Check the target, take its exclusive lock, clean debris of dead runs and create the staging
    /// directory.
    pub fn begin(out: &Path, rules: &Rules<'_>) -> Result<Publisher> {
        let target = check_target(out, rules)?;
        fs::create_dir_all(&target.parent).map_err(io(&target.parent))?;
        let lock =
            SetLock::acquire(&target.lock_path(), true)?.ok_or_else(|| PublishError::Locked {
                path: target.lock_path(),
                reason: "cannot create the lock file".into(),
            })?;
        // the target may have changed before the lock was ours
        let target = check_target(out, rules)?;
        let notes = clean_debris(&target);
        let staging = target.parent.join(format!(
            "{}{}-{}",
            target.staging_prefix(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        if fs::symlink_metadata(&staging).is_ok() {
            fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        let dir = staging.join(&target.name);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut a) = ACTIVE.lock() {
            a.push(Active {
                id,
                staging: Some(staging.clone()),
                lock: None,
            });
        }
        let p = Publisher {
            target,
            staging,
            dir,
            companions: rules.companions.iter().map(|c| c.suffix.into()).collect(),
            notes,
            committed: false,
            id,
            remove_dir: |p| fs::remove_dir_all(p),
            swap_companion: swap_in,
            _lock: lock,
        };
        fs::create_dir_all(&p.dir).map_err(io(&p.dir))?;
        Ok(p)
    }

    /// The staged output directory: write the set here.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The checked target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Where to write companion `suffix` (declared in [`Rules::companions`]) before committing.
    pub fn companion(&self, suffix: &str) -> PathBuf {
        let mut n = self.target.name.clone();
        n.push(suffix);
        self.staging.join(n)
    }

    /// Notes from the start (debris removed or left).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Swap the staged set (and every companion written) into place; see the module doc.
    pub fn commit(mut self) -> Result<Published> {
        let mut warnings = std::mem::take(&mut self.notes);
        {
            let _g = SWAP.lock().unwrap_or_else(|p| p.into_inner());
            // what is in place must still be what was checked: a directory (or nothing) for the
            // set, regular files (or nothing) for the companions
            let refuse = |path: &Path, reason: &str| PublishError::Refused {
                flag: "--out".into(),
                path: path.to_path_buf(),
                reason: format!("{reason} (changed while this run was writing; nothing replaced)"),
            };
            if fs::symlink_metadata(&self.target.path).is_ok_and(|m| !m.is_dir()) {
                return Err(refuse(&self.target.path, "is no longer a directory"));
            }
            let mut pending = Vec::new();
            for s in &self.companions {
                let staged = self.companion(s);
                if fs::symlink_metadata(&staged).is_err() {
                    continue;
                }
                let dest = self.target.companion(s);
                if fs::symlink_metadata(&dest).is_ok_and(|m| !m.is_file()) {
                    return Err(refuse(&dest, "is no longer a regular file"));
                }
                pending.push((staged, dest));
            }
            let set = swap_in(&self.dir, &self.target.path, &self.staging, "previous")?;
            let mut done: Vec<(PathBuf, PathBuf, Swapped)> = Vec::new();
            for (i, (staged, dest)) in pending.into_iter().enumerate() {
                match (self.swap_companion)(&staged, &dest, &self.staging, &format!("previous-{i}"))
                {
                    Ok(how) => done.push((staged, dest, how)),
                    Err(e) => {
                        for (staged, dest, how) in done.into_iter().rev() {
                            undo(&staged, &dest, how);
                        }
                        undo(&self.dir, &self.target.path, set);
                        return Err(e);
                    }
                }
            }
            self.committed = true;
        }
        if let Err(e) = (self.remove_dir)(&self.staging) {
            warnings.push(format!(
                "published {}, but the previous output could not be removed from {}: {e} \
                 (the next run removes it)",
                self.target.path.display(),
                self.staging.display()
            ));
        }
        Ok(Published { warnings })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.staging).is_ok() && !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
        if let Ok(mut a) = ACTIVE.lock() {
            a.retain(|e| e.id != self.id);
        }
    }
}

/// Atomically exchange two existing paths (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths relative to the current directory.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Put `staged` at `dest`; a previous `dest` ends up inside `staging` (under `aside` when the
/// exchange is not available).
fn swap_in(staged: &Path, dest: &Path, staging: &Path, aside: &str) -> Result<Swapped> {
    if fs::symlink_metadata(dest).is_err() {
        fs::rename(staged, dest).map_err(io(dest))?;
        return Ok(Swapped::Fresh);
    }
    if exchange(staged, dest).is_ok() {
        return Ok(Swapped::Exchanged);
    }
    let aside = staging.join(aside);
    fs::rename(dest, &aside).map_err(io(dest))?;
    if let Err(e) = fs::rename(staged, dest) {
        let _ = fs::rename(&aside, dest);
        return Err(io(dest)(e));
    }
    Ok(Swapped::MovedAside(aside))
}

/// Undo [`swap_in`] (best effort: only reached when a later swap of the same commit failed).
fn undo(staged: &Path, dest: &Path, how: Swapped) {
    match how {
        Swapped::Fresh => {
            let _ = fs::rename(dest, staged);
        }
        Swapped::Exchanged => {
            let _ = exchange(staged, dest);
        }
        Swapped::MovedAside(aside) => {
            if fs::rename(dest, staged).is_ok() {
                let _ = fs::rename(&aside, dest);
            }
        }
    }
}

/// Remove staging directories of dead runs beside `target` (restoring a previous set a kill left
/// aside); report what was done and what was left.
fn clean_debris(target: &Target) -> Vec<String> {
    let mut notes = Vec::new();
    let Ok(rd) = fs::read_dir(&target.parent) else {
        return notes;
    };
    let ours = target.staging_prefix();
    // names older versions used: `.<NAME>.partial-<random>` staging and `.<NAME>.old` aside
    let legacy = format!(".{}.partial-", target.name_str());
    let legacy_old = format!(".{}.old", target.name_str());
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if let Some(rest) = name.strip_prefix(&ours) {
            let pid = rest.split('-').next().and_then(|s| s.parse::<u32>().ok());
            let Some(pid) = pid else { continue };
            if pid != std::process::id() && pid_alive(pid) {
                notes.push(format!(
                    "left {}: it belongs to running process {pid}",
                    p.display()
                ));
                continue;
            }
            if fs::symlink_metadata(&target.path).is_err()
                && let Some(prev) = [p.join("previous"), p.join(&target.name)]
                    .into_iter()
                    .find(|c| c.is_dir())
                && fs::rename(&prev, &target.path).is_ok()
            {
                notes.push(format!(
                    "restored {} from {} (left by an interrupted run, pid {pid})",
                    target.path.display(),
                    prev.display()
                ));
            }
            match fs::remove_dir_all(&p) {
                Ok(()) => notes.push(format!(
                    "removed {} (left by an interrupted run, pid {pid})",
                    p.display()
                )),
                Err(err) => notes.push(format!("could not remove {}: {err}", p.display())),
            }
        } else if name.starts_with(&legacy) || name == legacy_old {
            notes.push(format!(
                "left {}: written by an older gemma-convert; remove it by hand",
                p.display()
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(p: &Path) -> bool {
        p.join("stamp").is_file()
    }

    fn rules(force: bool) -> Rules<'static> {
        Rules {
            flag: "--out",
            force,
            protected: Vec::new(),
            is_ours: &ours,
            marker: "stamp",
            companions: vec![Companion {
                suffix: ".zip",
                is_ours: &|p: &Path| fs::read(p).map(|b| b.starts_with(b"zip")).unwrap_or(false),
            }],
        }
    }

    fn write_set(dir: &Path, tag: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("stamp"), tag).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn publish_replaces_an_old_set_with_its_zip_and_leaves_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        write_set(&out, "old");
        fs::write(tmp.path().join("set.zip"), "zip-old").unwrap();
        let p = Publisher::begin(&out, &rules(true)).unwrap();
        assert!(tmp.path().join(".set.lock").is_file());
        write_set(p.dir(), "new");
        fs::write(p.companion(".zip"), "zip-new").unwrap();
        let r = p.commit().unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(fs::read_to_string(out.join("stamp")).unwrap(), "new");
        assert_eq!(
            fs::read_to_string(tmp.path().join("set.zip")).unwrap(),
            "zip-new"
        );
        assert_eq!(names(tmp.path()), ["set", "set.zip"]);
    }

    #[test]
    fn a_failed_companion_swap_publishes_neither() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        write_set(&out, "old");
        fs::write(tmp.path().join("set.zip"), "zip-old").unwrap();
        // the swap of the zip fails after the set was swapped: the set is swapped back
        let mut p = Publisher::begin(&out, &rules(true)).unwrap();
        p.swap_companion = |_, d, _, _| Err(io(d)(std::io::Error::other("injected")));
        write_set(p.dir(), "new");
        fs::write(p.companion(".zip"), "zip-new").unwrap();
        let e = p.commit().err().unwrap();
        assert!(e.to_string().contains("injected"), "{e}");
        assert_eq!(fs::read_to_string(out.join("stamp")).unwrap(), "old");
        assert_eq!(
            fs::read_to_string(tmp.path().join("set.zip")).unwrap(),
            "zip-old"
        );
        assert_eq!(names(tmp.path()), ["set", "set.zip"]);
        // a user directory appears where the zip goes while the run writes: nothing is replaced
        fs::remove_file(tmp.path().join("set.zip")).unwrap();
        let p = Publisher::begin(&out, &rules(true)).unwrap();
        write_set(p.dir(), "new");
        fs::write(p.companion(".zip"), "zip-new").unwrap();
        fs::create_dir(tmp.path().join("set.zip")).unwrap();
        fs::write(tmp.path().join("set.zip/x"), "user").unwrap();
        let e = p.commit().err().unwrap();
        assert!(e.to_string().contains("no longer a regular file"), "{e}");
        assert_eq!(fs::read_to_string(out.join("stamp")).unwrap(), "old");
        assert_eq!(
            fs::read_to_string(tmp.path().join("set.zip/x")).unwrap(),
            "user"
        );
        assert_eq!(names(tmp.path()), ["set", "set.zip"]);
    }

    #[test]
    fn an_uncommitted_publisher_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        {
            let p = Publisher::begin(&out, &rules(false)).unwrap();
            write_set(p.dir(), "new");
        }
        assert_eq!(names(tmp.path()), Vec::<String>::new());
    }

    #[test]
    fn removal_failure_after_the_swap_is_a_warning_and_the_next_run_cleans_it() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        write_set(&out, "old");
        let mut p = Publisher::begin(&out, &rules(true)).unwrap();
        p.remove_dir = |_| Err(std::io::Error::other("injected"));
        write_set(p.dir(), "new");
        let staging = p.staging.clone();
        // pretend the staging belongs to a dead process for the next run
        let r = p.commit().unwrap();
        assert_eq!(fs::read_to_string(out.join("stamp")).unwrap(), "new");
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("injected"), "{:?}", r.warnings);
        assert!(staging.is_dir(), "the old set is still there");
        // our own pid's debris is cleaned by the next run of this process too
        let p = Publisher::begin(&out, &rules(true)).unwrap();
        assert!(
            p.notes().iter().any(|n| n.contains("removed")),
            "{:?}",
            p.notes()
        );
        assert!(!staging.exists());
        drop(p);
        assert_eq!(names(tmp.path()), ["set"]);
    }

    #[test]
    fn dead_debris_is_removed_and_a_missing_set_restored() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        // a pid that does not exist
        let dead = (100_000..4_000_000u32).find(|&p| !pid_alive(p)).unwrap();
        let debris = tmp.path().join(format!(".set.partial-pid{dead}-0"));
        write_set(&debris.join("previous"), "old");
        write_set(&debris.join("set"), "half");
        let p = Publisher::begin(&out, &rules(true)).unwrap();
        assert!(!debris.exists());
        assert_eq!(fs::read_to_string(out.join("stamp")).unwrap(), "old");
        drop(p);
        // a live process's staging is left alone; legacy names are reported, never touched
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let live = tmp.path().join(format!(".set.partial-pid{}-0", child.id()));
        write_set(&live, "busy");
        let legacy = tmp.path().join(".set.partial-abc123.old");
        write_set(&legacy, "old");
        let p = Publisher::begin(&out, &rules(true)).unwrap();
        assert!(legacy.exists());
        assert!(live.exists());
        assert!(p.notes().iter().any(|n| n.contains("older gemma-convert")));
        assert!(p.notes().iter().any(|n| n.contains("running process")));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_second_writer_and_readers_are_refused_while_a_writer_holds_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        let p = Publisher::begin(&out, &rules(false)).unwrap();
        let e = Publisher::begin(&out, &rules(false)).err().unwrap();
        assert!(
            matches!(&e, PublishError::Locked { .. }) && e.to_string().contains(".set.lock"),
            "{e}"
        );
        assert!(
            e.to_string().contains(&std::process::id().to_string()),
            "{e}"
        );
        write_set(p.dir(), "new");
        p.commit().unwrap();
        let r1 = read_lock(&out).unwrap().unwrap();
        let r2 = read_lock(&out).unwrap().unwrap();
        let e = Publisher::begin(&out, &rules(true)).err().unwrap();
        assert!(matches!(e, PublishError::Locked { .. }), "{e}");
        drop(r1);
        assert!(tmp.path().join(".set.lock").exists(), "r2 still holds it");
        drop(r2);
        assert_eq!(names(tmp.path()), ["set"]);
    }

    #[test]
    fn the_target_guard() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("model");
        fs::create_dir_all(model.join("sub")).unwrap();
        fs::write(model.join("config.json"), "{}").unwrap();
        let mut r = rules(true);
        r.protected = vec![("the model directory", model.clone())];
        let refused = |p: &Path, r: &Rules<'_>, needle: &str| {
            let e = check_target(p, r)
                .err()
                .unwrap_or_else(|| panic!("{p:?} accepted"));
            assert!(e.to_string().contains(needle), "{p:?}: {e}");
            assert!(e.is_usage());
        };
        refused(&model, &r, "is the model directory");
        refused(tmp.path(), &r, "contains the model directory");
        refused(
            &model.join("sub/out"),
            &r,
            "lies inside the model directory",
        );
        refused(Path::new("/"), &r, "root");
        refused(Path::new("."), &r, "current directory");
        // symlinks are resolved
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&model, &link).unwrap();
        refused(&link, &r, "is the model directory");
        // a user directory
        let user = tmp.path().join("user");
        write_set(&user, "x");
        fs::remove_file(user.join("stamp")).unwrap();
        fs::write(user.join("notes.txt"), "mine").unwrap();
        refused(&user, &r, "holds no stamp");
        refused(&user, &rules(false), "--force");
        // a file, and a file as parent
        fs::write(tmp.path().join("f"), "x").unwrap();
        refused(&tmp.path().join("f"), &r, "not a directory");
        refused(&tmp.path().join("f/out"), &r, "parent");
        // a zip that is not ours
        fs::write(tmp.path().join("new.zip"), "user data").unwrap();
        refused(&tmp.path().join("new"), &r, "not written by this tool");
        refused(&tmp.path().join("new"), &rules(false), "--force");
        // accepted: fresh, empty, ours
        assert!(check_target(&tmp.path().join("fresh/deep"), &r).is_ok());
        let ok = tmp.path().join("ours");
        write_set(&ok, "x");
        assert!(check_target(&ok, &r).is_ok());
        // a mount point
        if let Some(m) = ["/proc", "/sys", "/dev"]
            .into_iter()
            .map(Path::new)
            .find(|p| is_mount_point(p))
        {
            refused(m, &r, "mount point");
        }
    }
}
