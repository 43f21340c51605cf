//! `pzt train` / `pzt eval`: determinism, exact resume after kill -9, atomic checkpoints, the
//! TensorBoard round trip, faults, and each data source.
use crate::common::{pzt, tmpdir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const LM: &str = r#"
[model]
builder = "transformer"
vocab_size = 256
d_model = 32
num_layers = 1
num_heads = 2
mlp_hidden = 64
dropout = 0.1
input = { axes = { batch = 8, seq = 10 }, dtype = "int64" }

[data]
source = "synthetic"
generator = "addition"
num_examples = 400
seq_len = 10

[train]
steps = STEPS
batch_size = 8
log_every = 5
eval_every = 10
eval_generate = 8
threads = 1

[optim]
lr = 3e-3
schedule = "cosine"
warmup_steps = 5
clip_grad_norm = 1.0
weight_decay = 0.01

[checkpoint]
every_steps = 5
keep_last = 2
"#;

fn lm_recipe(dir: &Path, steps: u64) -> PathBuf {
    let f = dir.join("lm.toml");
    let body = format!(
        "[run]\nname = \"lm\"\nseed = 3\nout_dir = \"{}\"\n{}",
        dir.join("run").display(),
        LM.replace("STEPS", &steps.to_string())
    );
    std::fs::write(&f, body).unwrap();
    f
}

/// metrics.jsonl without the wall-clock fields.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for k in pzt::run::metrics::TIMING_FIELDS {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

fn final_model(run: &Path, step: u64) -> Vec<u8> {
    std::fs::read(run.join(format!("checkpoints/step-{step}/model.safetensors"))).unwrap()
}

#[test]
fn training_is_deterministic() {
    let a = tmpdir("train", "det-a");
    let b = tmpdir("train", "det-b");
    for d in [&a, &b] {
        let o = pzt(&["train", lm_recipe(d, 20).to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let (ma, mb) = (metrics(&a.join("run")), metrics(&b.join("run")));
    assert_eq!(ma, mb);
    assert_eq!(ma.len(), 4);
    assert!(ma[3].get("eval.loss").is_some() && ma[3].get("eval.exact_match").is_some());
    for k in ["step", "loss", "lr", "grad_norm"] {
        assert!(ma[0].get(k).is_some(), "{k}");
    }
    let raw = std::fs::read_to_string(a.join("run/metrics.jsonl")).unwrap();
    assert!(raw.lines().all(|l| l.contains("tokens_per_s")), "{raw}");
    assert_eq!(
        final_model(&a.join("run"), 20),
        final_model(&b.join("run"), 20)
    );
    let state =
        |d: &Path| std::fs::read_to_string(d.join("run/checkpoints/step-20/state.json")).unwrap();
    assert_eq!(
        state(&a),
        state(&b),
        "state.json (RNG states, cursor, metrics) differs"
    );
    // The loss falls.
    let first = ma[0]["loss"].as_f64().unwrap();
    let last = ma[3]["loss"].as_f64().unwrap();
    assert!(last < first, "{first} -> {last}");
}

#[test]
fn exact_resume_after_kill_9() {
    let steps = 300;
    let straight = tmpdir("train", "resume-straight");
    let o = pzt(&["train", lm_recipe(&straight, steps).to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let killed = tmpdir("train", "resume-killed");
    let recipe = lm_recipe(&killed, steps);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pzt"))
        .args(["train", recipe.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ck = killed.join("run/checkpoints");
    let t0 = std::time::Instant::now();
    loop {
        let n = std::fs::read_dir(&ck)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("step-"))
                    .count()
            })
            .unwrap_or(0);
        if n > 0 || t0.elapsed().as_secs() > 60 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let newest =
        pzt::run::checkpoint::latest(&killed.join("run")).expect("a checkpoint before the kill");
    assert!(newest.0 < steps, "the run finished before it was killed");
    let o = pzt(&["train", recipe.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming `lm` from"), "{}", text(&o));
    assert_eq!(
        final_model(&straight.join("run"), steps),
        final_model(&killed.join("run"), steps),
        "final parameters differ"
    );
    assert_eq!(metrics(&straight.join("run")), metrics(&killed.join("run")));
    // keep_last = 2: only the two newest checkpoints remain.
    assert_eq!(pzt::run::checkpoint::list(&killed.join("run")).len(), 2);
}

#[test]
fn partial_checkpoints_are_ignored_and_corrupt_ones_are_errors() {
    let d = tmpdir("train", "atomic");
    let r = lm_recipe(&d, 10);
    assert!(pzt(&["train", r.to_str().unwrap()]).status.success());
    let run = d.join("run");
    // A crash mid-write leaves a temporary directory, never a step-N without state.json.
    let tmp = run.join("checkpoints/.tmp-step-15-999");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("model.safetensors"), b"garbage").unwrap();
    let half = run.join("checkpoints/step-12");
    std::fs::create_dir_all(&half).unwrap();
    assert_eq!(pzt::run::checkpoint::latest(&run).unwrap().0, 10);
    let o = pzt(&["train", r.to_str().unwrap(), "--set", "train.steps=15"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("step 10 of 15"), "{}", text(&o));
    // A corrupt newest checkpoint: exit 2, a clear message, nothing overwritten.
    let newest = run.join("checkpoints/step-15/model.safetensors");
    std::fs::write(&newest, b"not safetensors").unwrap();
    let before = std::fs::read_dir(run.join("checkpoints")).unwrap().count();
    let metrics_before = std::fs::read(run.join("metrics.jsonl")).unwrap();
    let o = pzt(&["train", r.to_str().unwrap(), "--set", "train.steps=20"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("step-15 is damaged: model.safetensors is 15 bytes"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&newest).unwrap(), b"not safetensors");
    assert_eq!(
        std::fs::read_dir(run.join("checkpoints")).unwrap().count(),
        before
    );
    assert_eq!(
        std::fs::read(run.join("metrics.jsonl")).unwrap(),
        metrics_before
    );
    let o = pzt(&["eval", r.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn checkpoint_layout_and_eval() {
    let d = tmpdir("train", "layout");
    let r = lm_recipe(&d, 10);
    let o = pzt(&["train", r.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["steps"], 10);
    let ck = d.join("run/checkpoints/step-10");
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
        "recipe.toml",
    ] {
        assert!(ck.join(f).is_file(), "{f}");
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 10);
    assert_eq!(state["cursor"], 80);
    assert!(state["rng_cpu"].as_str().unwrap().len() > 100);
    // Parameters by their tree labels; optimizer moments by m./v. + label.
    let model = tch::Tensor::read_safetensors(ck.join("model.safetensors")).unwrap();
    assert!(model
        .iter()
        .any(|(k, _)| k == "blocks.0.mlp.delta.mlp.down.weights"));
    let opt = tch::Tensor::read_safetensors(ck.join("optimizer.safetensors")).unwrap();
    assert!(
        opt.iter().any(|(k, _)| k == "m.embed.embeddings")
            && opt.iter().any(|(k, _)| k == "v.embed.embeddings")
    );
    // The resolved recipe reproduces the run's plan on its own.
    let o = pzt(&["plan", ck.join("recipe.toml").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // pzt eval gives the final eval metrics of the run.
    let o = pzt(&["eval", r.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["metrics"]["eval.loss"], summary["eval"]["eval.loss"]);
    let o = pzt(&[
        "eval",
        r.to_str().unwrap(),
        "--checkpoint",
        ck.to_str().unwrap(),
    ]);
    assert!(
        o.status.success() && text(&o).contains("eval.perplexity"),
        "{}",
        text(&o)
    );
}

#[test]
fn tensorboard_events_read_back_with_python() {
    let d = tmpdir("train", "tb");
    let r = lm_recipe(&d, 10);
    assert!(pzt(&["train", r.to_str().unwrap()]).status.success());
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script = r#"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1]); ea.Reload()
for tag in ["train/loss", "eval/loss"]:
    print(tag, " ".join(f"{e.step}:{e.value:.6f}" for e in ea.Scalars(tag)))
"#;
    let out = Command::new(&py)
        .args(["-c", script, d.join("run/tensorboard").to_str().unwrap()])
        .output()
        .expect("the project's .venv python (run `make test`)");
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python tensorboard failed (install it with scripts/bootstrap.sh --dev): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = metrics(&d.join("run"));
    let want: Vec<String> = m
        .iter()
        .filter_map(|l| {
            l.get("loss")
                .map(|v| format!("{}:{:.6}", l["step"], v.as_f64().unwrap() as f32))
        })
        .collect();
    assert!(
        s.contains(&format!("train/loss {}", want.join(" "))),
        "{s}\nwant {want:?}"
    );
    assert!(s.contains("eval/loss 10:"), "{s}");
}

#[test]
fn nan_watchdog_stops_and_keeps_the_last_good_checkpoint() {
    // With keep_last = 1 too: a checkpoint holding NaN is never written, so it never
    // replaces (and prunes) the good one.
    for keep in ["3", "1"] {
        let d = tmpdir("train", &format!("nan-{keep}"));
        let r = lm_recipe(&d, 40);
        let o = pzt(&[
            "train",
            r.to_str().unwrap(),
            "--set",
            "optim.kind=\"sgd\"",
            "--set",
            "optim.lr=1e12",
            "--set",
            "optim.clip_grad_norm=1e30",
            "--set",
            "optim.warmup_steps=0",
            "--set",
            "checkpoint.every_steps=1",
            "--set",
            &format!("checkpoint.keep_last={keep}"),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let t = text(&o);
        assert!(
            (t.contains("NaN watchdog") && (t.contains("the loss is") || t.contains("gradient")))
                || t.contains("not writing checkpoint"),
            "{t}"
        );
        assert!(!t.contains("panicked"), "{t}");
        let (step, path) =
            pzt::run::checkpoint::latest(&d.join("run")).expect("last good checkpoint");
        let model = tch::Tensor::read_safetensors(path.join("model.safetensors")).unwrap();
        assert!(
            model
                .iter()
                .all(|(_, v)| v.isfinite().all().int64_value(&[]) == 1),
            "keep_last {keep}: checkpoint {step} holds non-finite values"
        );
    }
}

#[test]
fn sigterm_checkpoints_and_exits_1() {
    let d = tmpdir("train", "sigterm");
    let r = lm_recipe(&d, 3000);
    let child = Command::new(env!("CARGO_BIN_EXE_pzt"))
        .args(["train", r.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while pzt::run::checkpoint::latest(&d.join("run")).is_none() && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("interrupted at step") && t.contains("checkpoint written to"),
        "{t}"
    );
    let (step, _) = pzt::run::checkpoint::latest(&d.join("run")).unwrap();
    assert!(t.contains(&format!("interrupted at step {step}")), "{t}");
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, body).unwrap();
    f
}

fn small_lm(dir: &Path, data: &str, seq: usize, vocab: usize) -> String {
    format!(
        "[run]\nname = \"x\"\nout_dir = \"{}\"\n[model]\nbuilder = \"transformer\"\nvocab_size = {vocab}\nd_model = 16\nnum_layers = 1\nnum_heads = 2\nmlp_hidden = 32\ninput = {{ axes = {{ batch = 4, seq = {seq} }}, dtype = \"int64\" }}\n[data]\n{data}\nseq_len = {seq}\n[train]\nsteps = 4\nbatch_size = 4\nlog_every = 2\n[optim]\nlr = 1e-3\n",
        dir.join("run").display()
    )
}

#[test]
fn data_faults_are_bad_input() {
    let d = tmpdir("train", "faults");
    let cases = [
        (
            small_lm(&d, "source = \"text\"\nfiles = [\"missing.txt\"]", 8, 256),
            "missing.txt` does not exist",
        ),
        (
            small_lm(&d, "source = \"text\"\nfiles = [\"empty.txt\"]", 8, 256),
            "the text files are empty",
        ),
        (
            small_lm(
                &d,
                &format!(
                    "source = \"text\"\nfiles = [\"{}\"]",
                    fixtures().join("tiny.txt").display()
                ),
                100000,
                256,
            ),
            "seq_len 100000 is longer than the whole dataset",
        ),
        (
            small_lm(&d, "source = \"text\"\nfiles = [\"*.nothing\"]", 8, 256),
            "matches no file",
        ),
        (
            small_lm(
                &d,
                "source = \"synthetic\"\ngenerator = \"adition\"",
                8,
                256,
            ),
            "did you mean `addition`",
        ),
        (
            small_lm(
                &d,
                "source = \"synthetic\"\ngenerator = \"addition\"",
                10,
                100,
            ),
            "vocabulary (100) is smaller than the tokenizer's (256)",
        ),
        (
            small_lm(
                &d,
                "source = \"synthetic\"\ngenerator = \"addition\"",
                8,
                256,
            ),
            "the generated examples are up to 10 tokens, longer than seq_len + 1 = 9; set seq_len = 9",
        ),
    ];
    std::fs::write(d.join("empty.txt"), "").unwrap();
    for (i, (recipe, want)) in cases.iter().enumerate() {
        let f = write(&d, &format!("c{i}.toml"), recipe);
        let o = pzt(&["train", f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "case {i}: {}", text(&o));
        assert!(
            text(&o).contains(want),
            "case {i}: want `{want}`:\n{}",
            text(&o)
        );
        assert!(!text(&o).contains("panicked"));
    }
    // seq_len errors point at the key.
    let f = d.join("c2.toml");
    let o = pzt(&["train", f.to_str().unwrap()]);
    assert!(
        text(&o).contains("c2.toml:") && text(&o).contains("key: data.seq_len"),
        "{}",
        text(&o)
    );
    // No [data]: a clear message.
    let f = write(&d, "nodata.toml", "[model]\ntype = \"Identity\"\n");
    let o = pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("training needs a `[data]` section"),
        "{}",
        text(&o)
    );
}

#[test]
fn each_data_source_trains() {
    let d = tmpdir("train", "sources");
    let fx = fixtures();
    let recipes = vec![
        (
            "text",
            small_lm(
                &d,
                &format!(
                    "source = \"text\"\nfiles = [\"{}\"]",
                    fx.join("tiny.txt").display()
                ),
                16,
                256,
            ),
        ),
        (
            "jsonl",
            small_lm(
                &d,
                &format!(
                    "source = \"jsonl\"\nfiles = [\"{}\"]",
                    fx.join("tiny.jsonl").display()
                ),
                48,
                256,
            ),
        ),
        (
            "hf-tokenizer",
            small_lm(
                &d,
                &format!(
                    "source = \"text\"\nfiles = [\"{}\"]\ntokenizer = \"{}\"",
                    fx.join("tiny.txt").display(),
                    fx.join("wordlevel-tokenizer.json").display()
                ),
                8,
                16,
            ),
        ),
        (
            "copy",
            small_lm(
                &d,
                "source = \"synthetic\"\ngenerator = \"copy\"\nlength = 5\nnum_examples = 100",
                12,
                256,
            ),
        ),
        (
            "reverse",
            small_lm(
                &d,
                "source = \"synthetic\"\ngenerator = \"reverse\"\nlength = 5\nnum_examples = 100",
                12,
                256,
            ),
        ),
    ];
    for (name, body) in recipes {
        let body = body.replace(
            &d.join("run").display().to_string(),
            &d.join(format!("{name}-run")).display().to_string(),
        );
        let f = write(&d, &format!("{name}.toml"), &body);
        let o = pzt(&["train", f.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{name}: {}", text(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(s["final_loss"].as_f64().unwrap().is_finite(), "{name}");
        assert!(
            s["eval"]["eval.perplexity"].as_f64().is_some(),
            "{name}: {s}"
        );
        if name == "jsonl" || name == "copy" {
            assert!(
                s["eval"]["eval.exact_match"].as_f64().is_some(),
                "{name}: {s}"
            );
        }
    }
    // CSV regression (MSE) and classification (cross-entropy, accuracy) with an MLP.
    for (name, task, target, out, extra) in [
        ("reg", "regression", "y", 1, ""),
        ("cls", "classification", "label", 4, ""),
    ] {
        let body = format!(
            "[run]\nname = \"{name}\"\nout_dir = \"{}\"\n[model]\nbuilder = \"mlp\"\nwidths = [2, 16, {out}]\naxis = \"features\"\ninput = {{ axes = {{ batch = 16, features = 2 }} }}\n[data]\nsource = \"csv\"\nfiles = [\"{}\"]\nfeatures = [\"x1\", \"x2\"]\ntarget = \"{target}\"\ntask = \"{task}\"{extra}\n[train]\nsteps = 150\nbatch_size = 16\nlog_every = 50\n[optim]\nlr = 1e-2\n",
            d.join(format!("{name}-run")).display(),
            fx.join(if name == "reg" { "regression.csv" } else { "classes.csv" }).display()
        );
        let f = write(&d, &format!("{name}.toml"), &body);
        let o = pzt(&["train", f.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{name}: {}", text(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if name == "reg" {
            assert!(s["eval"]["eval.loss"].as_f64().unwrap() < 0.1, "{s}");
        } else {
            assert!(s["eval"]["eval.accuracy"].as_f64().unwrap() > 0.8, "{s}");
        }
    }
}

#[test]
fn tokenized_data_is_cached_by_content() {
    let d = tmpdir("train", "cache");
    let data = d.join("corpus.txt");
    std::fs::copy(fixtures().join("tiny.txt"), &data).unwrap();
    let f = write(
        &d,
        "r.toml",
        &small_lm(&d, "source = \"text\"\nfiles = [\"corpus.txt\"]", 16, 256),
    );
    let o = pzt(&[
        "train",
        f.to_str().unwrap(),
        "--set",
        &format!("run.out_dir=\"{}\"", d.join("run1").display()),
    ]);
    assert!(
        o.status.success() && !text(&o).contains("from cache"),
        "{}",
        text(&o)
    );
    let cache = d.join("cache");
    let f2 = write(
        &d,
        "r2.toml",
        &small_lm(
            &d,
            "source = \"text\"\nfiles = [\"corpus.txt\"]\ncache_dir = \"cache\"",
            16,
            256,
        ),
    );
    let o = pzt(&[
        "train",
        f2.to_str().unwrap(),
        "--set",
        &format!("run.out_dir=\"{}\"", d.join("a").display()),
    ]);
    assert!(
        o.status.success() && !text(&o).contains("from cache"),
        "{}",
        text(&o)
    );
    let o = pzt(&[
        "train",
        f2.to_str().unwrap(),
        "--set",
        &format!("run.out_dir=\"{}\"", d.join("b").display()),
    ]);
    assert!(
        text(&o).contains("(tokenized data from cache)"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
    // Changing the content, or the tokenizer, never reuses the stale cache.
    std::fs::write(
        &data,
        "the big dog ran home and the small cat sat on a mat ".repeat(6),
    )
    .unwrap();
    let o = pzt(&[
        "train",
        f2.to_str().unwrap(),
        "--set",
        &format!("run.out_dir=\"{}\"", d.join("c").display()),
    ]);
    assert!(!text(&o).contains("from cache"), "{}", text(&o));
    let o = pzt(&[
        "train",
        f2.to_str().unwrap(),
        "--set",
        &format!("run.out_dir=\"{}\"", d.join("d").display()),
        "--set",
        &format!(
            "data.tokenizer=\"{}\"",
            fixtures().join("wordlevel-tokenizer.json").display()
        ),
        "--set",
        "model.vocab_size=256",
    ]);
    assert!(!text(&o).contains("from cache"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 3);
}

#[test]
fn grad_accum_bf16_and_plain_progress_lines() {
    let d = tmpdir("train", "accum");
    let r = lm_recipe(&d, 6);
    let o = pzt(&[
        "train",
        r.to_str().unwrap(),
        "--set",
        "train.grad_accum=2",
        "--set",
        "train.precision=\"bf16\"",
        "--set",
        "train.log_every=2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    // Not a terminal: plain periodic lines, then the summary.
    assert!(
        t.contains("step      2/6  loss") && t.contains("done: `lm` step 6/6"),
        "{t}"
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("run/checkpoints/step-6/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["cursor"], 6 * 2 * 8);
}

#[test]
fn a_signal_delivered_twice_is_one_stop_request() {
    // `timeout` signals the process, then its process group: the two SIGINTs of one Ctrl-C
    // arrive together and must stop after the step with a checkpoint, not exit at once.
    let d = tmpdir("train", "double-signal");
    let recipe = lm_recipe(&d, 100_000);
    let child = Command::new(env!("CARGO_BIN_EXE_pzt"))
        .args(["train", recipe.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = d.join("run/metrics.jsonl");
    let t0 = std::time::Instant::now();
    while !metrics.is_file() && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for _ in 0..2 {
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("interrupted at step") && !err.contains("stopped again"),
        "{err}"
    );
    assert!(pzt::run::checkpoint::latest(&d.join("run")).is_some());
}

/// `[train] release_memory` changes where freed memory goes, not what is computed: the same
/// losses and parameters, bit for bit, as a run that keeps it; and it is a bool.
#[test]
fn release_memory_gives_the_same_run() {
    use crate::common::dist::{losses, params_diff, quick_sets, quickstart, train};
    let d = tmpdir("train", "release-memory");
    let (keep, give) = (d.join("keep"), d.join("give"));
    let (code, _, err) = train(&quickstart(), &quick_sets(&keep, 4, 8, &[]), &[]);
    assert_eq!(code, 0, "{err}");
    let sets = quick_sets(&give, 4, 8, &["train.release_memory=true"]);
    let (code, _, err) = train(&quickstart(), &sets, &[]);
    assert_eq!(code, 0, "{err}");
    let (a, b) = (losses(&keep), losses(&give));
    assert_eq!(a.len(), 4);
    assert_eq!(a, b);
    assert_eq!(params_diff(&keep, &give, 4), 0.0);
    // The run with it returns freed memory within a second; the other keeps it.
    let kept = |out: &Path| -> serde_json::Value {
        let text = std::fs::read_to_string(out.join("environment.jsonl")).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        line["freed_memory_kept_ms"].clone()
    };
    assert_eq!(kept(&keep), serde_json::json!(-1));
    assert_eq!(kept(&give), serde_json::json!(1000));
    let sets = quick_sets(&d.join("bad"), 4, 8, &["train.release_memory=2"]);
    let (code, _, err) = train(&quickstart(), &sets, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("release_memory"), "{err}");
}
