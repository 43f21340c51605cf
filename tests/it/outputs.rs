//! Nothing a user has is lost to a command's output (the data-loss class of the red-team
//! issue): an output that lands on one of the command's inputs or on another output is refused
//! with exit 2 before anything is written, a FIFO or device is never replaced, a symlink is
//! written through, and two trainers on one run directory cannot both take its lock.
use crate::common;
use crate::common::{run_pzt, tmpdir};
use std::path::{Path, PathBuf};

/// A copy of the llama fixture (weights, config, tokenizer) that the test may damage.
fn model_copy(d: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/llama-gqa");
    let m = d.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), m.join(e.file_name())).unwrap();
    }
    m
}

/// The bytes of every file under `dir`, to check that a refused command changed none.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

fn refused(args: &[&str], want: &str) {
    let (code, o, e) = run_pzt(args);
    assert_eq!(code, 2, "{args:?}: {o}{e}");
    assert!(e.contains(want), "{args:?}: wanted `{want}` in:\n{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn an_output_on_a_model_file_is_refused_and_the_model_kept() {
    let d = tmpdir("outputs", "model");
    let m = model_copy(&d);
    let before = snapshot(&m);
    let ms = m.to_str().unwrap();
    let weights = m.join("model.safetensors");
    let config = m.join("config.json");
    let link = d.join("alias.safetensors");
    std::os::unix::fs::symlink(&weights, &link).unwrap();
    let (w, c, l) = (
        weights.to_str().unwrap(),
        config.to_str().unwrap(),
        link.to_str().unwrap(),
    );
    let page = d.join("page.html");
    let page = page.to_str().unwrap();
    let tokens = ["--tokens", "1 2 3"];
    for (args, want) in [
        (
            vec!["capture", ms, "--select", "Linear", "--out", w],
            "--out",
        ),
        (
            vec!["capture", ms, "--select", "Linear", "--out", l],
            "would be overwritten",
        ),
        (
            vec![
                "capture", ms, "--select", "Linear", "--out", page, "--html", c,
            ],
            "--html",
        ),
        (
            vec![
                "capture", ms, "--select", "Linear", "--out", page, "--html", page,
            ],
            "are the same file",
        ),
        (vec!["logits", ms, "--out", w], "would be overwritten"),
        (vec!["show", ms, "--html", c], "would be overwritten"),
        (
            vec!["select", ms, "Linear", "--html", w],
            "would be overwritten",
        ),
    ] {
        let mut args = args.clone();
        if matches!(args[0], "capture" | "logits") {
            args.extend(tokens);
        }
        refused(&args, want);
    }
    assert!(
        snapshot(&m) == before,
        "a refused command changed the model"
    );
    assert!(!Path::new(page).exists());
}

/// A text file `rows.txt` in `d` and a recipe `text.toml` that prepares it (no model).
fn text_data(d: &Path) -> (PathBuf, PathBuf) {
    let data = d.join("rows.txt");
    std::fs::write(&data, "one line of text\nanother line\n".repeat(20)).unwrap();
    let r = d.join("text.toml");
    std::fs::write(
        &r,
        format!(
            "[run]\nname = \"x\"\nout_dir = \"{}\"\n[data]\nsource = \"text\"\nfiles = [\"rows.txt\"]\ntokenizer = \"bytes\"\nseq_len = 8\n",
            d.join("xrun").display()
        ),
    )
    .unwrap();
    (data, r)
}

#[test]
fn run_files_recipes_and_data_are_not_overwritten() {
    let d = tmpdir("outputs", "run");
    let f = common::tiny::recipe(&d, 2, "");
    let fs = f.to_str().unwrap();
    assert_eq!(run_pzt(&["train", fs]).0, 0);
    let run = d.join("run");
    let metrics = run.join("metrics.jsonl");
    let state = run.join("checkpoints/step-2/state.json");
    let before = (snapshot(&run), std::fs::read(&f).unwrap());
    refused(
        &[
            "report",
            run.to_str().unwrap(),
            "--html",
            metrics.to_str().unwrap(),
        ],
        "would be overwritten",
    );
    refused(
        &[
            "show",
            run.join("checkpoints/step-2").to_str().unwrap(),
            "--html",
            state.to_str().unwrap(),
        ],
        "would be overwritten",
    );
    refused(
        &["train", fs, "--set", "train.steps=4", "--profile", fs],
        "the input",
    );
    refused(
        &[
            "train",
            fs,
            "--set",
            "train.steps=4",
            "--profile",
            metrics.to_str().unwrap(),
        ],
        "would be overwritten",
    );
    assert!(before == (snapshot(&run), std::fs::read(&f).unwrap()));

    // `pzt data --export` onto its own data file.
    let (data, r) = text_data(&d);
    let rows = std::fs::read(&data).unwrap();
    refused(
        &[
            "data",
            r.to_str().unwrap(),
            "--export",
            data.to_str().unwrap(),
        ],
        "would be overwritten",
    );
    refused(
        &["data", r.to_str().unwrap(), "--export", r.to_str().unwrap()],
        "would be overwritten",
    );
    assert_eq!(std::fs::read(&data).unwrap(), rows);
}

#[test]
fn special_files_are_never_replaced_and_symlinks_are_written_through() {
    let d = tmpdir("outputs", "special");
    let (_, r) = text_data(&d);
    let rs = r.to_str().unwrap();
    refused(&["data", rs, "--export", "/dev/full"], "not a regular file");
    let fifo = d.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    refused(
        &["data", rs, "--export", fifo.to_str().unwrap()],
        "not a regular file",
    );
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo_like());
    // A symlink to a regular file: the link stays, the file it points to gets the rows.
    let target = d.join("target.jsonl");
    std::fs::write(&target, "old").unwrap();
    let link = d.join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (code, o, e) = run_pzt(&["data", rs, "--export", link.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let rows = std::fs::read_to_string(&target).unwrap();
    assert!(rows.contains("\"tokens\":["), "{rows}");
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn two_trainers_started_together_do_not_both_take_the_lock() {
    for round in 0..3 {
        let d = tmpdir("outputs", &format!("race{round}"));
        let f = common::tiny::recipe(&d, 6, "");
        let spawn = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_pzt"))
                .args(["train", f.to_str().unwrap()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let codes = [a.status.code(), b.status.code()];
        let err = format!(
            "{}{}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        );
        // Either one ran and the other was refused, or the second came after the first ended
        // (and found the run finished).
        assert!(codes.contains(&Some(0)), "{codes:?} {err}");
        if codes.contains(&Some(2)) {
            assert!(err.contains("is in use by another `pzt train`"), "{err}");
        }
        // Each step is logged once.
        let steps: Vec<u64> = std::fs::read_to_string(d.join("run/metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m.get("loss").is_some())
            .filter_map(|m| m["step"].as_u64())
            .collect();
        assert_eq!(steps, (1..=6).collect::<Vec<_>>(), "{err}");
    }
}

#[test]
fn a_stale_lock_whose_pid_is_alive_is_taken_over() {
    let d = tmpdir("outputs", "stale");
    let f = common::tiny::recipe(&d, 2, "");
    std::fs::create_dir_all(d.join("run")).unwrap();
    // pid 1 is always alive; a lock file nobody holds is stale whatever pid it names.
    std::fs::write(d.join("run/.pzt-lock"), "1").unwrap();
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
}
