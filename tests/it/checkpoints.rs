//! Checkpoints are checked before they are used: checksums per file and tensor (`pzt verify`
//! and every command that loads one), the step, the RNG state and the tensor dtypes; and a
//! run killed at random moments resumes to the very parameters of an uninterrupted run.
use crate::common;
use crate::common::{run_pzt, tmpdir};
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Trains the tiny run for `steps` and returns (recipe, run dir).
fn trained(name: &str, steps: u64, extra: &str) -> (PathBuf, PathBuf) {
    let d = tmpdir("checkpoints", name);
    let f = common::tiny::recipe(&d, steps, extra);
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    (f, d.join("run"))
}

/// The byte range of tensor `name`'s data in a safetensors file.
fn tensor_range(file: &Path, name: &str) -> std::ops::Range<usize> {
    let b = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let o = &h[name]["data_offsets"];
    let (s, e) = (
        o[0].as_u64().unwrap() as usize,
        o[1].as_u64().unwrap() as usize,
    );
    8 + n + s..8 + n + e
}

fn flip(file: &Path, at: usize) {
    let mut b = std::fs::read(file).unwrap();
    b[at] ^= 0x10;
    std::fs::write(file, b).unwrap();
}

fn refused(args: &[&str], want: &str) {
    let (code, o, e) = run_pzt(args);
    assert_eq!(code, 2, "{args:?}: {o}{e}");
    assert!(e.contains(want), "{args:?}: wanted `{want}` in:\n{e}");
    assert!(!e.contains("panicked") && !e.contains("frame #"), "{e}");
}

#[test]
fn a_flipped_byte_is_found_naming_the_file_and_tensor() {
    let (f, run) = trained("flip", 4, "");
    let f = f.to_str().unwrap();
    let (code, o, e) = run_pzt(&["verify", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(o.matches("ok ").count(), 2, "{o}");
    let ck = run.join("checkpoints/step-4");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("manifest.json")).unwrap()).unwrap();
    let names: Vec<String> = manifest["files"]["model.safetensors"]["tensors"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(names.len() > 5, "{manifest}");
    let victim = &names[names.len() / 2];
    let mp = ck.join("model.safetensors");
    let r = tensor_range(&mp, victim);
    flip(&mp, r.start + (r.end - r.start) / 2);
    let want = format!("model.safetensors: tensor `{victim}` is damaged");
    let cks = ck.to_str().unwrap();
    refused(&["verify", cks], &want);
    refused(
        &["verify", run.to_str().unwrap()],
        "1 of 2 checkpoints damaged",
    );
    refused(&["eval", f, "--checkpoint", cks], &want);
    refused(&["logits", cks, "--tokens", "1 2 3"], &want);
    refused(&["train", f, "--set", "train.steps=6"], &want);
    // The header, the state and a truncated optimizer file are found too.
    flip(&mp, r.start + (r.end - r.start) / 2);
    flip(&mp, 8);
    refused(
        &["verify", cks],
        "model.safetensors: the safetensors header is damaged",
    );
    flip(&mp, 8);
    let sp = ck.join("state.json");
    let mut state = std::fs::read_to_string(&sp).unwrap();
    state = state.replacen("\"cursor\": ", "\"cursor\": 1", 1);
    std::fs::write(&sp, state).unwrap();
    refused(&["verify", cks], "state.json is");
    let old = run.join("checkpoints/step-2");
    let op = old.join("optimizer.safetensors");
    let b = std::fs::read(&op).unwrap();
    std::fs::write(&op, &b[..b.len() - 7]).unwrap();
    refused(
        &["verify", old.to_str().unwrap()],
        "optimizer.safetensors is",
    );
    refused(
        &["verify", run.join("nothing").to_str().unwrap()],
        "no such checkpoint",
    );
}

/// Rewrites one tensor file of a checkpoint with `edit` applied to its tensors.
fn edit_tensors(file: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let mut ts = Tensor::read_safetensors(file).unwrap();
    edit(&mut ts);
    Tensor::write_safetensors(&ts, file).unwrap();
}

#[test]
fn a_resume_checks_step_rng_and_tensor_dtypes() {
    let (f, run) = trained("resume", 4, "");
    let f = f.to_str().unwrap();
    let ck = run.join("checkpoints/step-4");
    // Without a manifest (an older checkpoint) the contents are still checked.
    std::fs::remove_file(ck.join("manifest.json")).unwrap();
    let (code, o, e) = run_pzt(&["verify", ck.to_str().unwrap()]);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("no manifest.json"), "{o}");
    let keep = tmpdir("checkpoints", "resume-keep");
    for file in ["state.json", "model.safetensors", "optimizer.safetensors"] {
        std::fs::copy(ck.join(file), keep.join(file)).unwrap();
    }
    let restore = || {
        for file in ["state.json", "model.safetensors", "optimizer.safetensors"] {
            std::fs::copy(keep.join(file), ck.join(file)).unwrap();
        }
    };
    let more = ["train", f, "--set", "train.steps=6"];
    let sp = ck.join("state.json");
    let state = std::fs::read_to_string(&sp).unwrap();
    std::fs::write(&sp, state.replacen("\"step\": 4", "\"step\": 2", 1)).unwrap();
    refused(&more, "state.json says step 2, the directory step 4");
    let mut v: serde_json::Value = serde_json::from_str(&state).unwrap();
    let rng = v["rng_cpu"].as_str().unwrap().to_string();
    v["rng_cpu"] = serde_json::json!(rng[..100]);
    std::fs::write(&sp, v.to_string()).unwrap();
    refused(&more, "rng_cpu is not a generator state");
    restore();
    edit_tensors(&ck.join("optimizer.safetensors"), |ts| {
        ts[0].1 = ts[0].1.to_kind(tch::Kind::Double)
    });
    refused(&more, "pzt keeps optimizer state in float32");
    restore();
    edit_tensors(&ck.join("optimizer.safetensors"), |ts| {
        let _ = ts.remove(0);
    });
    refused(&more, "is missing");
    restore();
    edit_tensors(&ck.join("model.safetensors"), |ts| {
        ts[0].1 = ts[0].1.to_kind(tch::Kind::Int64)
    });
    refused(&more, "is Int64, not a floating-point tensor");
    restore();
    let (code, o, e) = run_pzt(&more);
    assert_eq!(code, 0, "{o}{e}");
}

#[test]
fn random_kills_resume_to_the_uninterrupted_parameters_without_debris() {
    let steps = 100;
    let extra = "";
    let set = ["--set", "checkpoint.every_steps=1"];
    let straight = tmpdir("checkpoints", "kill-straight");
    let f = common::tiny::recipe(&straight, steps, extra);
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap(), set[0], set[1]]);
    assert_eq!(code, 0, "{o}{e}");
    let killed = tmpdir("checkpoints", "kill-killed");
    let f = common::tiny::recipe(&killed, steps, extra);
    let run = killed.join("run");
    let latest = || pzt::run::checkpoint::latest(&run).map_or(0, |(s, _)| s);
    // Each run is killed at a pseudo-random moment (0-40 ms) after it has written one new
    // checkpoint: every run gets further, and the kills land anywhere in the steps and the
    // checkpoint writes that follow.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kills = 0;
    for _ in 0..20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let before = latest();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pzt"))
            .args(["train", f.to_str().unwrap(), set[0], set[1]])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while latest() <= before
            && child.try_wait().unwrap().is_none()
            && t0.elapsed().as_secs() < 60
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(x % 40));
        let running = child.try_wait().unwrap().is_none();
        if running {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            kills += 1;
        }
        let _ = child.wait();
        if !running {
            break; // the run finished
        }
    }
    assert!(
        kills >= 15,
        "only {kills} runs were still going when killed"
    );
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap(), set[0], set[1]]);
    assert_eq!(code, 0, "{o}{e}");
    let model = |d: &Path| {
        std::fs::read(d.join(format!("run/checkpoints/step-{steps}/model.safetensors"))).unwrap()
    };
    assert_eq!(model(&straight), model(&killed), "the parameters differ");
    let left: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| n.starts_with("step-")) && left.len() == 2,
        "debris: {left:?}"
    );
    assert!(!run.join(".pzt-lock").exists());
    let (code, o, e) = run_pzt(&["verify", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
}

#[test]
fn a_resume_on_changed_data_is_refused_naming_what_changed() {
    let (f, run) = trained("data-change", 2, "");
    let fs = f.to_str().unwrap();
    let before = std::fs::read(run.join("metrics.jsonl")).unwrap();
    refused(
        &[
            "train",
            fs,
            "--set",
            "train.steps=4",
            "--set",
            "data.eval_fraction=0.2",
        ],
        "`eval_fraction` 0.1 -> 0.2",
    );
    refused(
        &[
            "train",
            fs,
            "--set",
            "train.steps=4",
            "--set",
            "data.num_examples=300",
        ],
        "was trained on other data",
    );
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), before);
    // Where the prepared data is kept is not the data: that resumes.
    let (code, o, e) = run_pzt(&[
        "train",
        fs,
        "--set",
        "train.steps=4",
        "--set",
        "data.cache_dir=\"elsewhere\"",
    ]);
    assert_eq!(code, 0, "{o}{e}");
}

#[test]
fn a_diverged_run_is_listed_as_such_and_not_resumed_into_the_same_nan() {
    let d = tmpdir("checkpoints", "diverged");
    let f = common::tiny::recipe(&d, 40, "");
    let fs = f.to_str().unwrap();
    let blow = [
        "--set",
        "optim.kind=\"sgd\"",
        "--set",
        "optim.lr=1e12",
        "--set",
        "optim.clip_grad_norm=1e30",
        "--set",
        "checkpoint.every_steps=1",
    ];
    let mut args = vec!["train", fs];
    args.extend(blow);
    let (code, o, e) = run_pzt(&args);
    assert_eq!(code, 1, "{o}{e}");
    assert!(e.contains("NaN watchdog"), "{e}");
    let (_, listing, _) = run_pzt(&["runs", d.join("run").to_str().unwrap()]);
    assert!(listing.contains("diverged"), "{listing}");
    // The same command again: refused before any step, naming the way out.
    let (code, o, e) = run_pzt(&args);
    assert_eq!(code, 2, "{o}{e}");
    assert!(e.contains("would repeat it bit for bit"), "{e}");
    // A changed recipe is not refused (it resumes; here from weights already blown up, so the
    // watchdog may stop it again, with a new record).
    args.extend(["--set", "optim.clip_grad_norm=1"]);
    let (code, o, e) = run_pzt(&args);
    assert_ne!(code, 2, "{o}{e}");
    assert!(!e.contains("would repeat"), "{e}");
}

#[test]
fn a_model_with_nothing_trainable_is_refused_before_any_step() {
    let d = tmpdir("checkpoints", "frozen");
    let f = common::tiny::recipe(&d, 2, "[strategy]\nfreeze = [\"*\"]\n");
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{o}{e}");
    assert!(e.contains("nothing is trainable"), "{e}");
    assert!(!d.join("run/checkpoints/step-2").exists());
}

#[test]
fn a_closed_stdout_does_not_kill_the_trainer() {
    let d = tmpdir("checkpoints", "sigpipe");
    let f = common::tiny::recipe(&d, 6, "");
    // `pzt train | head -1`: the reader goes away after one line.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pzt"))
        .args(["train", f.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.join("run/checkpoints/step-6/state.json").is_file());
    assert!(!d.join("run/.pzt-lock").exists(), "the lock is released");
}

#[test]
fn runs_lists_the_others_when_one_run_cannot_be_read() {
    let (_, run) = trained("odd-list", 2, "");
    let root = run.parent().unwrap().join("all");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::rename(&run, root.join("good")).unwrap();
    // A run directory whose metrics file is a directory.
    std::fs::create_dir_all(root.join("odd/checkpoints")).unwrap();
    std::fs::create_dir_all(root.join("odd/metrics.jsonl")).unwrap();
    let (code, o, e) = run_pzt(&["runs", root.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    assert!(o.contains("good"), "{o}");
    assert!(e.contains("odd") && e.contains("cannot be read"), "{e}");
}

/// `[model]` of a recipe file replaced by `model`.
fn with_model(recipe: &Path, model: &str) -> String {
    let s = std::fs::read_to_string(recipe).unwrap();
    let (i, j) = (s.find("[model]").unwrap(), s.find("[data]").unwrap());
    format!("{}[model]\n{model}\n{}", &s[..i], &s[j..])
}

/// Trains run B (`runB` beside A's recipe, A's recipe otherwise) from A's checkpoint `ck_a`
/// (`[model] checkpoint = ...`); returns B's recipe.
fn trained_from(fa: &Path, run_a: &Path, ck_a: &Path) -> PathBuf {
    let d = fa.parent().unwrap();
    let fb = d.join("b.toml");
    let b = std::fs::read_to_string(fa).unwrap().replace(
        &run_a.display().to_string(),
        &d.join("runB").display().to_string(),
    );
    std::fs::write(&fb, b).unwrap();
    std::fs::write(
        &fb,
        with_model(&fb, &format!("checkpoint = \"{}\"", ck_a.display())),
    )
    .unwrap();
    let (code, o, e) = run_pzt(&["train", fb.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    fb
}

#[test]
fn a_checkpoint_chain_that_loops_is_refused_not_a_stack_overflow() {
    let (fa, run_a) = trained("loop", 2, "");
    let d = fa.parent().unwrap();
    let ck_a = run_a.join("checkpoints/step-2");
    // Run B starts from A's checkpoint.
    let fb = trained_from(&fa, &run_a, &ck_a);
    // A's checkpoint edited to start from B's: a loop.
    let ck_b = d.join("runB/checkpoints/step-2");
    let ra = ck_a.join("recipe.toml");
    std::fs::write(
        &ra,
        with_model(&ra, &format!("checkpoint = \"{}\"", ck_b.display())),
    )
    .unwrap();
    let fbs = fb.to_str().unwrap();
    let cks = ck_b.to_str().unwrap();
    for args in [
        vec!["plan", fbs],
        vec!["show", fbs],
        vec!["eval", fbs],
        vec!["generate", cks, "--tokens", "1 2"],
        vec!["export", cks, "--hf", "/nonexistent/out"],
    ] {
        refused(&args, "loops");
    }
}

#[test]
fn keep_last_spares_a_checkpoint_another_run_starts_from() {
    let (fa, run_a) = trained("pinned", 2, "");
    let d = fa.parent().unwrap();
    let ck_a = run_a.join("checkpoints/step-2");
    let fb = trained_from(&fa, &run_a, &ck_a);
    // A goes on with keep_last = 1: its step-2 would be pruned, but B is built from it.
    let fas = fa.to_str().unwrap();
    let more = ["--set", "train.steps=6", "--set", "checkpoint.keep_last=1"];
    let (code, o, e) = run_pzt(&[&["train", fas][..], &more].concat());
    assert_eq!(code, 0, "{o}{e}");
    assert!(ck_a.join("state.json").is_file(), "B's start was pruned");
    assert!(!run_a.join("checkpoints/step-4").exists());
    let (code, o, e) = run_pzt(&["eval", fb.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    // Once B is gone, A's policy applies again.
    std::fs::remove_dir_all(d.join("runB")).unwrap();
    let more = ["--set", "train.steps=8", "--set", "checkpoint.keep_last=1"];
    let (code, o, e) = run_pzt(&[&["train", fas][..], &more].concat());
    assert_eq!(code, 0, "{o}{e}");
    assert!(!ck_a.exists());
}
