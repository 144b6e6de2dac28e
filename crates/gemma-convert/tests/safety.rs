//! Publishing safety, end to end through the binary (issue 9 §1): a command never destroys what it
//! did not write, finishes or leaves nothing (signals, kills, concurrent runs, full disks), and
//! publishes a set and its zip together.
//!
//! `GEMMA_CONVERT_BIN=/path/to/older/gemma-convert` runs these tests against another binary (to
//! show they fail on one without the fixes).

mod setkit;

use setkit::{copy_dir, fixtures, text};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tiny() -> PathBuf {
    fixtures().join("models/tiny-e2b")
}

fn bin() -> Command {
    let exe = std::env::var_os("GEMMA_CONVERT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gemma-convert")));
    let mut c = Command::new(exe);
    c.env_remove("HF_HUB_OFFLINE");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny build of `model` into `out` (ctx 64, quiet) with extra flags.
fn build(model: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut a = vec![
        "--model",
        s(model),
        "--ctx",
        "64",
        "--out",
        s(out),
        "--quiet",
    ];
    a.extend_from_slice(extra);
    run(&a)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every file under `dir` with its bytes, for "nothing was touched" checks.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(snapshot(&p));
        } else {
            v.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    v.sort();
    v
}

/// `--nbits` of the complete set at `dir`: every file its manifest lists is there with the
/// recorded size and sha256, and no other file; `None` when the set is incomplete or mixed.
fn complete_set_nbits(dir: &Path) -> Option<u64> {
    use sha2::Digest;
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).ok()?).ok()?;
    let files = m["files"].as_array()?;
    for f in files {
        let b = std::fs::read(dir.join(f["path"].as_str()?)).ok()?;
        if b.len() as u64 != f["size"].as_u64()?
            || hex(&sha2::Sha256::digest(&b)) != f["sha256"].as_str()?
        {
            return None;
        }
    }
    fn count(d: &Path) -> usize {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() { count(&p) } else { 1 }
            })
            .sum()
    }
    (count(dir) == files.len() + 1).then(|| m["build"]["nbits"].as_u64())?
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn force_never_replaces_the_input_or_a_user_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("work");
    let m = parent.join("model");
    copy_dir(&tiny(), &m);
    let before = snapshot(tmp.path());
    let refused = |out: &Path, extra: &[&str], needle: &str| {
        let mut a = vec!["--force"];
        a.extend_from_slice(extra);
        let o = build(&m, out, &a);
        assert_eq!(o.status.code(), Some(2), "--out {out:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "--out {out:?}: {}", text(&o));
        assert_eq!(snapshot(tmp.path()), before, "--out {out:?} touched files");
    };
    refused(&m, &[], "is the model directory");
    refused(&parent, &[], "contains the model directory");
    refused(&m.join("set"), &[], "lies inside the model directory");
    // through a symlink
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&m, &link).unwrap();
    let before = snapshot(tmp.path());
    let o = build(&m, &link, &["--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(snapshot(tmp.path()), before);
    // a user directory that is not a chunk set
    let user = tmp.path().join("user");
    std::fs::create_dir(&user).unwrap();
    std::fs::write(user.join("thesis.tex"), "years of work").unwrap();
    let before = snapshot(tmp.path());
    let o = build(&m, &user, &["--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("manifest.json"), "{}", text(&o));
    assert_eq!(snapshot(tmp.path()), before);
    // `.` (the current directory) and `/`
    let o = bin()
        .current_dir(&user)
        .args(["--model", s(&m), "--ctx", "64", "--out", ".", "--force"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("current directory"), "{}", text(&o));
    let o = build(&m, Path::new("/"), &["--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // the home directory (and anything containing it)
    for out in [&user, tmp.path()] {
        let o = bin()
            .env("HOME", &user)
            .args(["--model", s(&m), "--ctx", "64", "--out", s(out), "--force"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("home directory"), "{}", text(&o));
    }
    // rebuild, assemble and synth follow the same rules
    let set = tmp.path().join("set");
    assert!(build(&m, &set, &[]).status.success());
    let o = run(&[
        "rebuild",
        s(&set),
        "--out",
        s(&user),
        "--model",
        s(&m),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = run(&["assemble", "--out", s(&m), "--force", s(&set)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = run(&[
        "synth",
        "--config",
        s(&m.join("config.json")),
        "--out",
        s(&user),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        std::fs::read(user.join("thesis.tex")).unwrap(),
        b"years of work"
    );
    let o = run(&[
        "synth",
        "--config",
        s(&m.join("config.json")),
        "--out",
        s(&m),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(m.join("model.safetensors").is_file());
}

#[test]
fn stale_debris_never_blocks_a_build_and_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    assert!(build(&tiny(), &out, &[]).status.success());
    // the aside name older versions used, left by a kill during cleanup
    let legacy = tmp.path().join(".set.old");
    copy_dir(&out, &legacy);
    // staging of a run that was killed (its pid is gone), holding a half-written set
    let dead = (100_000..4_000_000u32)
        .find(|&p| unsafe { libc::kill(p as i32, 0) } != 0)
        .unwrap();
    let debris = tmp.path().join(format!(".set.partial-pid{dead}-0"));
    std::fs::create_dir_all(debris.join("set/chunk1.mlpackage")).unwrap();
    let o = build(&tiny(), &out, &["--force", "--nbits", "8"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!debris.exists(), "dead run's staging removed");
    assert!(
        text(&o).contains(".set.old") && text(&o).contains("older gemma-convert"),
        "the legacy name is reported, not touched: {}",
        text(&o)
    );
    assert_eq!(names(tmp.path()), [".set.old", "set"]);
    // a second --force build also succeeds (idempotent publishing)
    let o = build(&tiny(), &out, &["--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(names(tmp.path()), [".set.old", "set"]);
}

/// A checkpoint big enough that its build takes a while (synth of tiny-pal's layer structure at
/// hidden 384 / intermediate 1536), so signals land mid-build.
fn slow_model(dir: &Path) -> PathBuf {
    let cfg_path = dir.join("slow.json");
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("models/tiny-pal/config.json")).unwrap(),
    )
    .unwrap();
    cfg["hidden_size"] = 384.into();
    cfg["intermediate_size"] = 1536.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let m = dir.join("slow-model");
    let o = run(&["synth", "--config", s(&cfg_path), "--out", s(&m)]);
    assert!(o.status.success(), "{}", text(&o));
    m
}

fn slow_build(m: &Path, out: &Path, nbits: &str) -> Child {
    bin()
        .args([
            "--model",
            s(m),
            "--ctx",
            "256",
            "--nbits",
            nbits,
            "--threads",
            "1",
            "--out",
            s(out),
            "--quiet",
            "--force",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Poll until `cond` holds or the child exits; true if `cond` held while it ran.
fn wait_for(child: &mut Child, cond: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(300) {
        if cond() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("timed out");
}

fn staging_dirs(parent: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".set.partial")
        })
        .collect()
}

#[test]
fn signals_leave_the_old_or_the_new_set_and_no_debris() {
    let tmp = tempfile::tempdir().unwrap();
    let m = slow_model(tmp.path());
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = work.join("set");
    // the old set is built with --nbits 4, the new one with --nbits 8
    assert!(slow_build(&m, &out, "4").wait().unwrap().success());
    assert_eq!(complete_set_nbits(&out), Some(4));
    let has_chunk = |n: &'static str| {
        let work = work.clone();
        move || {
            staging_dirs(&work)
                .iter()
                .any(|d| d.join("set").join(format!("{n}.mlpackage")).exists())
        }
    };
    type Moment = Box<dyn Fn() -> bool>;
    let moments: Vec<(&str, i32, Moment)> = vec![
        (
            "staging created",
            libc::SIGTERM,
            Box::new({
                let w = work.clone();
                move || !staging_dirs(&w).is_empty()
            }),
        ),
        (
            "chunk1 written",
            libc::SIGINT,
            Box::new(has_chunk("chunk1")),
        ),
        (
            "chunk3 written",
            libc::SIGTERM,
            Box::new(has_chunk("chunk3")),
        ),
    ];
    let mut interrupted = 0;
    for (moment, sig, cond) in moments {
        let mut child = slow_build(&m, &out, "8");
        let hit = wait_for(&mut child, cond);
        unsafe { libc::kill(child.id() as i32, sig) };
        let st = child.wait_with_output().unwrap();
        let code = st.status.code();
        let now = complete_set_nbits(&out);
        if hit && code == Some(128 + sig) {
            assert!(
                String::from_utf8_lossy(&st.stderr).contains("interrupted"),
                "{moment}: {}",
                String::from_utf8_lossy(&st.stderr)
            );
            // the old set, or (a signal after the swap) the new one: never a mix
            assert!(
                now == Some(4) || now == Some(8),
                "{moment}: OUT must hold a complete set, not {now:?}"
            );
            if now == Some(4) {
                interrupted += 1;
            }
        } else {
            // it finished first
            assert_eq!(code, Some(0), "{moment}");
            assert_eq!(now, Some(8), "{moment}: OUT must hold the new set");
        }
        if now == Some(8) {
            assert!(slow_build(&m, &out, "4").wait().unwrap().success());
        }
        assert_eq!(names(&work), ["set"], "{moment}: debris left");
    }
    assert!(interrupted > 0, "no signal landed mid-build");
    // SIGKILL cannot be caught: its debris is removed by the next run
    let mut child = slow_build(&m, &out, "8");
    let hit = wait_for(&mut child, has_chunk("chunk2"));
    child.kill().unwrap();
    child.wait().unwrap();
    if hit {
        assert_eq!(
            complete_set_nbits(&out),
            Some(4),
            "OUT must hold the old set"
        );
        assert!(!staging_dirs(&work).is_empty(), "SIGKILL leaves debris");
    }
    let o = slow_build(&m, &out, "8").wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(complete_set_nbits(&out), Some(8));
    assert_eq!(names(&work), ["set"], "debris left after the next run");
}

#[test]
fn a_mount_point_or_the_current_directory_is_refused_before_any_work() {
    // a mount point of this machine (never written: refused up front)
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mp = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|p| {
            // one that holds neither the current nor the home directory (refused for that first)
            let cwd = std::env::current_dir().unwrap();
            let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
            *p != "/"
                && Path::new(p).is_dir()
                && !p.starts_with("/tmp")
                && !cwd.starts_with(p)
                && !home.starts_with(p)
        })
        .expect("a mount point");
    let o = build(&tiny(), Path::new(mp), &["--force"]);
    assert_eq!(o.status.code(), Some(2), "{mp}: {}", text(&o));
    assert!(
        text(&o).contains("mount point") || text(&o).contains("holds no manifest.json"),
        "{mp}: {}",
        text(&o)
    );
    let tmp = tempfile::tempdir().unwrap();
    let o = bin()
        .current_dir(tmp.path())
        .args(["--model", s(&tiny()), "--ctx", "64", "--out", "."])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("current directory"), "{}", text(&o));
    assert!(names(tmp.path()).is_empty());
    assert!(
        names(tmp.path().parent().unwrap())
            .iter()
            .all(|n| !n.contains(".partial")),
        "nothing staged in the parent"
    );
}

#[test]
fn two_writers_into_one_out_exactly_one_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    for round in 0..3 {
        let _ = std::fs::remove_dir_all(&out);
        let spawn = || {
            bin()
                .args([
                    "--model",
                    s(&tiny()),
                    "--ctx",
                    "64",
                    "--out",
                    s(&out),
                    "--quiet",
                ])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let codes = [a.status.code(), b.status.code()];
        assert!(
            codes.contains(&Some(0)) && codes.contains(&Some(2)),
            "round {round}: {codes:?}: {} / {}",
            text(&a),
            text(&b)
        );
        let loser = if a.status.code() == Some(2) { &a } else { &b };
        assert!(
            text(loser).contains(".set.lock") || text(loser).contains("not empty"),
            "{}",
            text(loser)
        );
        assert_eq!(names(tmp.path()), ["set"]);
    }
}

/// Hold `flock(op)` on `lock` (writing `pid` into it) in this test process.
fn hold_lock(lock: &Path, op: i32, pid: Option<u32>) -> std::fs::File {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(lock)
        .unwrap();
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) }, 0);
    if let Some(p) = pid {
        std::fs::write(lock, p.to_string()).unwrap();
    }
    f
}

#[test]
fn locks_keep_writers_apart_and_readers_off_a_set_being_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    assert!(
        build(&tiny(), &out, &["--nbits", "0", "--precision", "fp32"])
            .status
            .success()
    );
    let before = snapshot(&out);
    let lock = tmp.path().join(".set.lock");
    // a writer holds it: another writer and every reader exit 2 naming the lock and the holder
    let held = hold_lock(&lock, libc::LOCK_EX, Some(4242));
    let o = build(&tiny(), &out, &["--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(".set.lock") && text(&o).contains("4242"),
        "{}",
        text(&o)
    );
    for args in [
        vec!["parity", "--model", s(&tiny()), "--chunks", s(&out)],
        vec!["bench", "--chunks", s(&out), "--tokens", "2"],
        vec!["inspect", s(&out)],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(".set.lock"), "{args:?}: {}", text(&o));
    }
    drop(held);
    // a reader holds it: a writer is refused, other readers run
    let held = hold_lock(&lock, libc::LOCK_SH, None);
    let o = build(&tiny(), &out, &["--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(snapshot(&out), before, "a set being read is never replaced");
    let o = run(&["bench", "--chunks", s(&out), "--tokens", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(lock.exists(), "still held by the test");
    drop(held);
    // released: readers and writers clean up the lock file
    let o = run(&["inspect", s(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(build(&tiny(), &out, &["--force"]).status.success());
    assert_eq!(names(tmp.path()), ["set"]);
}

#[test]
fn the_zip_is_published_with_the_set_and_honours_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    let zip = tmp.path().join("set.zip");
    // an existing OUT.zip is not overwritten without --force, nor a zip that is not ours with it
    std::fs::write(&zip, b"not a zip of ours").unwrap();
    let o = build(&tiny(), &out, &["--zip"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("set.zip"), "{}", text(&o));
    let o = build(&tiny(), &out, &["--zip", "--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(std::fs::read(&zip).unwrap(), b"not a zip of ours");
    assert_eq!(names(tmp.path()), ["set.zip"]);
    std::fs::remove_file(&zip).unwrap();
    // set and zip together
    assert!(build(&tiny(), &out, &["--zip"]).status.success());
    let z1 = std::fs::read(&zip).unwrap();
    let o = build(&tiny(), &out, &["--zip", "--nbits", "8"]);
    assert_eq!(o.status.code(), Some(2), "without --force: {}", text(&o));
    assert_eq!(std::fs::read(&zip).unwrap(), z1);
    let o = build(&tiny(), &out, &["--zip", "--nbits", "8", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    let z2 = std::fs::read(&zip).unwrap();
    assert_ne!(z1, z2, "the zip was replaced with the set");
    // a zip target that cannot be written fails before the set is touched: neither is published
    std::fs::remove_file(&zip).unwrap();
    std::fs::create_dir(&zip).unwrap();
    std::fs::write(zip.join("keep"), b"mine").unwrap();
    let before = snapshot(&out);
    let o = build(&tiny(), &out, &["--zip", "--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(snapshot(&out), before);
    assert_eq!(std::fs::read(zip.join("keep")).unwrap(), b"mine");
    assert_eq!(names(tmp.path()), ["set", "set.zip"]);
    // `--out` through a symlink: the set it points to is replaced, the link stays, the zip lies
    // beside the set and the JSON report says where
    std::fs::remove_dir_all(&zip).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&out, &link).unwrap();
    let o = build(
        &tiny(),
        &link,
        &["--zip", "--force", "--json", "--nbits", "8"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        r["zip"].as_str().map(PathBuf::from),
        Some(out.with_extension("zip"))
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(out.join("manifest.json").is_file());
}

/// Run the binary with a file-size limit (writes past it fail with EFBIG, as on a full disk).
fn run_with_fsize_limit(args: &[&str], bytes: u64) -> Output {
    let mut c = bin();
    c.args(args);
    unsafe {
        c.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.output().unwrap()
}

#[test]
fn synth_stages_beside_out_and_never_touches_other_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = fixtures().join("models/tiny-e2b/config.json");
    // `--out X.v2` once staged at `X.partial` and removed it
    let unrelated = tmp.path().join("ckpt.partial");
    std::fs::create_dir(&unrelated).unwrap();
    std::fs::write(unrelated.join("mine"), b"keep").unwrap();
    let out = tmp.path().join("ckpt.v2");
    let o = run(&["synth", "--config", s(&cfg), "--out", s(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(unrelated.join("mine")).unwrap(), b"keep");
    assert_eq!(names(tmp.path()), ["ckpt.partial", "ckpt.v2"]);
    // an existing synth checkpoint is replaced only with --force
    let o = run(&[
        "synth",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--seed",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = run(&[
        "synth",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--seed",
        "1",
        "--force",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // a full disk: the message names the file, nothing is left
    let full = tmp.path().join("full");
    let o = run_with_fsize_limit(&["synth", "--config", s(&cfg), "--out", s(&full)], 4096);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("model-00001-of-00001.safetensors"),
        "{}",
        text(&o)
    );
    assert_eq!(names(tmp.path()), ["ckpt.partial", "ckpt.v2"]);
    // two synths into one OUT: exactly one succeeds
    let o2 = tmp.path().join("twice");
    let spawn = || {
        bin()
            .args(["synth", "--config", s(&cfg), "--out", s(&o2)])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(2)], "{} / {}", text(&a), text(&b));
    assert_eq!(names(tmp.path()), ["ckpt.partial", "ckpt.v2", "twice"]);
}

#[test]
fn a_full_disk_during_a_build_leaves_nothing_and_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    let o = run_with_fsize_limit(
        &[
            "--model",
            s(&tiny()),
            "--ctx",
            "64",
            "--out",
            s(&out),
            "--quiet",
        ],
        64 * 1024,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(".bin") || text(&o).contains(".npy"),
        "{}",
        text(&o)
    );
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
}

#[test]
fn rebuild_refuses_its_own_set_as_out() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set");
    assert!(build(&tiny(), &set, &[]).status.success());
    // corrupt it: a rebuild into itself would overwrite the evidence and report "identical"
    let mc = set.join("model_config.json");
    std::fs::write(&mc, b"{}").unwrap();
    let before = snapshot(&set);
    for out in [set.clone(), set.join("inner")] {
        let o = run(&[
            "rebuild",
            s(&set),
            "--out",
            s(&out),
            "--model",
            s(&tiny()),
            "--force",
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("set being rebuilt"), "{}", text(&o));
        assert_eq!(snapshot(&set), before);
    }
}
