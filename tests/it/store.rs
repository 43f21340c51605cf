//! The prepared-data store is checked before it is used: a tampered file (against the
//! manifest's checksums), a FIFO or an extra file makes the data be prepared again; token ids
//! outside the model's vocabulary are refused before training; a failed, interrupted or
//! crashed preparation leaves no temporary directory; an unusable cache directory is an error;
//! a huge line without newlines is prepared in the memory of ordinary lines.
use crate::common;
use crate::common::{run_pzt, tmpdir};
use std::path::{Path, PathBuf};

/// The one store directory under `cache`.
fn store_of(cache: &Path) -> PathBuf {
    std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("data-")
        })
        .expect("a store")
}

fn prepared(recipe: &Path) -> String {
    let (code, o, e) = run_pzt(&["data", recipe.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    o.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_tampered_store_is_prepared_again() {
    let d = tmpdir("store", "tamper");
    let f = common::tiny::recipe(&d, 2, "");
    assert!(prepared(&f).contains("prepared"));
    assert!(prepared(&f).contains("from the cache"));
    let store = store_of(&d.join("run/cache"));
    let ids = store.join("all.ids");
    let original = std::fs::read(&ids).unwrap();
    // One id changed, same length: only the checksum tells.
    let mut b = original.clone();
    b[10] ^= 1;
    std::fs::write(&ids, &b).unwrap();
    assert!(
        prepared(&f).contains("prepared"),
        "a tampered store was used"
    );
    assert_eq!(std::fs::read(&ids).unwrap(), original);
    // An extra file, and a FIFO in place of a file: prepared again, no hang.
    std::fs::write(store.join("extra"), "x").unwrap();
    assert!(prepared(&f).contains("prepared"));
    std::fs::remove_file(&ids).unwrap();
    let c = std::ffi::CString::new(ids.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(prepared(&f).contains("prepared"));
    assert_eq!(std::fs::read(&ids).unwrap(), original);
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused_before_training() {
    let d = tmpdir("store", "oov");
    let f = common::tiny::recipe(&d, 2, "");
    prepared(&f);
    let store = store_of(&d.join("run/cache"));
    // A consistent store (checksums updated) whose ids exceed the model's 256 tokens.
    let ids = store.join("all.ids");
    let mut b = std::fs::read(&ids).unwrap();
    b[0..2].copy_from_slice(&300u16.to_le_bytes());
    std::fs::write(&ids, &b).unwrap();
    let mp = store.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mp).unwrap()).unwrap();
    m["checksums"]["all.ids"] = serde_json::json!(format!("{:08x}", crc32c::crc32c(&b)));
    std::fs::write(&mp, m.to_string()).unwrap();
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{o}{e}");
    assert!(
        e.contains("token id 300, outside the model's vocabulary (0..256)"),
        "{e}"
    );
    assert!(!d.join("run/checkpoints/step-2").exists());
}

#[test]
fn orphaned_temporary_stores_are_removed_and_an_unusable_cache_is_an_error() {
    let d = tmpdir("store", "orphans");
    let f = common::tiny::recipe(&d, 2, "");
    let cache = d.join("run/cache");
    // What a killed preparation left (a pid that no longer exists) and a live one's.
    let dead = cache.join(".tmp-data-abc-999999999");
    let live = cache.join(format!(".tmp-data-abc-{}", std::process::id()));
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    prepared(&f);
    assert!(!dead.exists(), "an orphan was left");
    assert!(live.exists(), "a live preparation's directory was removed");
    let names: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // A cache_dir that is a file: an error naming it, not a silent in-memory run.
    let g = common::tiny::recipe(&tmpdir("store", "badcache"), 2, "");
    let text = std::fs::read_to_string(&g).unwrap();
    let blocker = g.parent().unwrap().join("blocker");
    std::fs::write(&blocker, "").unwrap();
    std::fs::write(
        &g,
        text.replace(
            "[train]",
            &format!("cache_dir = \"{}/sub\"\n[train]", blocker.display()),
        ),
    )
    .unwrap();
    let (code, o, e) = run_pzt(&["data", g.to_str().unwrap()]);
    assert_eq!(code, 2, "{o}{e}");
    assert!(e.contains("cannot keep the prepared data in"), "{e}");
}

#[test]
fn ctrl_c_while_preparing_stops_at_once_and_leaves_nothing() {
    let d = tmpdir("store", "sigint");
    // Enough text that preparing takes a while (a million short lines).
    let text: String = (0..1_000_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(d.join("big.txt"), text).unwrap();
    let f = d.join("r.toml");
    std::fs::write(
        &f,
        format!(
            r#"[run]
name = "big"
out_dir = "{}"
[model]
builder = "transformer"
vocab_size = 256
d_model = 8
num_layers = 1
num_heads = 1
mlp_hidden = 8
[data]
source = "text"
files = ["big.txt"]
tokenizer = "bytes"
seq_len = 8
[train]
steps = 2
batch_size = 2
[optim]
lr = 1e-3
"#,
            d.join("run").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pzt"))
        .args(["train", f.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cache = d.join("run/cache");
    common::finetune::wait_for(|| std::fs::read_dir(&cache).is_ok_and(|mut r| r.next().is_some()));
    let t0 = std::time::Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("stopped while preparing the data"), "{e}");
    assert!(t0.elapsed().as_secs() < 10, "{:?}", t0.elapsed());
    let left: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Runs `pzt ARGS` and returns its exit code and peak resident memory in KiB (reaped with
/// `wait4`, which reports the child's own peak).
#[allow(clippy::zombie_processes)]
fn peak_kib(args: &[&str]) -> (i32, i64) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pzt"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, child.id() as i32);
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

#[test]
fn one_huge_line_takes_the_memory_of_ordinary_lines() {
    let d = tmpdir("store", "longline");
    // 12 MB of words: once as lines, once as one line, once separated by \r only.
    let words = ["alpha", "beta", "gamma", "delta", "eps"];
    let all: Vec<&str> = (0..2_000_000).map(|i| words[(i * 7 + i / 3) % 5]).collect();
    let lines: String = all.chunks(12).map(|c| c.join(" ") + "\n").collect();
    std::fs::write(d.join("lines.txt"), &lines).unwrap();
    std::fs::write(d.join("one.txt"), all.join(" ")).unwrap();
    std::fs::write(d.join("cr.txt"), all.join("\r")).unwrap();
    let tok = common::fixture("hf/chat-tiny/tokenizer.json");
    let peak = |file: &str| {
        let f = d.join(format!("{file}.toml"));
        std::fs::write(
            &f,
            format!(
                "[run]\nname = \"x\"\nout_dir = \"{}\"\n[data]\nsource = \"text\"\nfiles = [\"{file}\"]\ntokenizer = \"{tok}\"\nseq_len = 64\n",
                d.join(format!("run-{file}")).display()
            ),
        )
        .unwrap();
        let (code, kib) = peak_kib(&["data", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{file}");
        kib
    };
    let base = peak("lines.txt");
    for f in ["one.txt", "cr.txt"] {
        let p = peak(f);
        assert!(
            p < base + base / 4 + 64 * 1024,
            "{f}: {p} KiB against {base} KiB for the same text in lines"
        );
    }
}

#[test]
fn a_write_failure_while_preparing_chat_data_leaves_no_temporary_store() {
    use std::os::unix::process::CommandExt;
    let d = tmpdir("store", "fsize");
    let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let f = d.join("chat.toml");
    std::fs::write(
        &f,
        format!(
            "[run]\nname = \"c\"\nout_dir = \"{}\"\n[model]\nhf = \"{}\"\n[data]\nsource = \"chat\"\nfiles = [\"{}\"]\nseq_len = 96\n",
            d.join("run").display(),
            fx.join("hf/chat-tiny").display(),
            fx.join("chat.jsonl").display(),
        ),
    )
    .unwrap();
    // Files may grow to 1 KiB only (as a full disk would stop them): the store's files fail.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pzt"));
    cmd.args(["data", f.to_str().unwrap()]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains(".tmp-data-") || e.contains("data-"),
        "names the file: {e}"
    );
    assert!(!e.contains("os error"), "{e}");
    let left: Vec<String> = std::fs::read_dir(d.join("run/cache"))
        .map(|r| {
            r.filter_map(|x| x.ok())
                .map(|x| x.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
