//! Bad input of every kind gets a clear message and exit 2, never a panic, a hang, a C++
//! stack or lost work (the red-team list of the hardening issue). Each case here failed before
//! its fix: a panic, an abort, a hang, exit 0 with garbage, or exit 1.
use crate::common;
use crate::common::{run_pzt, tmpdir};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn hf_dir() -> PathBuf {
    root().join("tests/fixtures/hf/llama-gqa")
}

fn tiny(dir: &Path, steps: u64, extra: &str) -> PathBuf {
    common::tiny::recipe(dir, steps, extra)
}

/// Runs pzt and checks exit 2 with `want` in stderr and no panic or C++ frames.
fn refused(args: &[&str], want: &str) {
    let (code, o, e) = run_pzt(args);
    assert_eq!(code, 2, "{args:?}: {o}{e}");
    assert!(e.contains(want), "{args:?}: wanted `{want}` in:\n{e}");
    for bad in [
        "panicked",
        "RUST_BACKTRACE",
        "frame #",
        "memory allocation of",
    ] {
        assert!(!e.contains(bad), "{args:?}: {e}");
    }
}

#[test]
fn numeric_keys_have_ranges() {
    let d = tmpdir("hardening", "ranges");
    let f = tiny(&d, 2, "");
    let f = f.to_str().unwrap();
    for (set, want) in [
        (
            "optim.weight_decay=nan",
            "weight_decay must be a finite number >= 0",
        ),
        (
            "optim.clip_grad_norm=inf",
            "clip_grad_norm must be a positive finite number",
        ),
        ("optim.eps=-1", "eps must be a positive number"),
        (
            "model.rope_theta=0",
            "`rope_theta` must be a finite number > 0",
        ),
        (
            "model.norm_eps=-1",
            "`norm_eps` must be a finite number >= 0",
        ),
        ("model.dropout=1.5", "dropout must be in [0, 1)"),
        (
            "model.num_layers=1000000000",
            "`num_layers` must be 1 to 4096",
        ),
    ] {
        refused(&["plan", f, "--set", set], want);
    }
    let t = root().join("recipes/tiny-transformer.toml");
    let t = t.to_str().unwrap();
    let head = "model.children.lm_head";
    for (set, want) in [
        (format!("{head}.output_axes={{vocab=-256}}"), "has size -256; sizes are at least 1"),
        (
            format!("{head}.parallel_axes={{embedding=64}}"),
            "axis `embedding` is in both `input_axes` and `parallel_axes`",
        ),
        (
            format!("{head}.output_axes={{vocab=1000000000000}}"),
            "more than pzt accepts",
        ),
        (
            "model.children.final_norm={ type = \"RMSStandardize\", axes = [\"embedding\"], epsilon = -1.0 }".into(),
            "`epsilon` must be a finite number >= 0",
        ),
    ] {
        refused(&["plan", t, "--set", &set], want);
    }
}

#[test]
fn hf_configs_are_checked_before_anything_is_allocated() {
    let d = tmpdir("hardening", "hfcfg");
    let src = root().join("tests/fixtures/hf/llama-gqa");
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let m = d.join("m");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(src.join("model.safetensors"), m.join("model.safetensors")).unwrap();
    let mm = m.to_str().unwrap();
    for (key, value, want) in [
        (
            "num_hidden_layers",
            serde_json::json!(1_000_000_000),
            "`num_hidden_layers` must be 1 to 4096",
        ),
        (
            "model_type",
            serde_json::json!(5),
            "`model_type` = 5 should be a string",
        ),
        (
            "rms_norm_eps",
            serde_json::json!(-1.0),
            "the norm epsilon must be a finite number >= 0",
        ),
        (
            "hidden_size",
            serde_json::json!(-32),
            "`hidden_size` must be at least 1",
        ),
    ] {
        let mut c = base.clone();
        c[key] = value;
        std::fs::write(m.join("config.json"), c.to_string()).unwrap();
        refused(&["logits", mm, "--tokens", "1 2"], want);
    }
    std::fs::write(m.join("config.json"), b"\xff\xfe{").unwrap();
    refused(&["logits", mm, "--tokens", "1 2"], "not UTF-8 text");
    // A sharded checkpoint whose shard is missing.
    std::fs::write(m.join("config.json"), base.to_string()).unwrap();
    std::fs::remove_file(m.join("model.safetensors")).unwrap();
    std::fs::write(
        m.join("model.safetensors.index.json"),
        r#"{"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    refused(
        &["logits", mm, "--tokens", "1 2"],
        "model-00001-of-00002.safetensors",
    );
}

#[test]
fn fifos_and_devices_are_refused_not_read_forever() {
    let d = tmpdir("hardening", "fifo");
    let fifo = d.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    refused(&["plan", fifo.to_str().unwrap()], "not a regular file");
    for inc in [fifo.to_str().unwrap(), "/dev/zero"] {
        let r = d.join("inc.toml");
        let body = std::fs::read_to_string(tiny(&d, 2, "")).unwrap();
        std::fs::write(&r, format!("include = [\"{inc}\"]\n{body}")).unwrap();
        refused(&["plan", r.to_str().unwrap()], "not a regular file");
    }
    refused(&["plan", d.to_str().unwrap()], "is a directory");
    // The inspection commands' inputs and outputs: a FIFO mask, a FIFO metrics.jsonl, a FIFO
    // page or capture file.
    let f = fifo.to_str().unwrap();
    let hf = hf_dir();
    let hf = hf.to_str().unwrap();
    refused(
        &[
            "logits",
            hf,
            "--tokens",
            "1 2",
            "--mask",
            f,
            "--set",
            r#"patch=[{select = "ApplyCausalAttentionMask", action = "replace", with = {type = "ApplyExplicitAttentionMask"}}]"#,
        ],
        "not a regular file",
    );
    refused(&["show", hf, "--html", f], "not a regular file");
    refused(
        &[
            "capture", hf, "--select", "embed", "--tokens", "1", "--out", f,
        ],
        "not a regular file",
    );
    let run = d.join("run");
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    let m = std::ffi::CString::new(run.join("metrics.jsonl").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(m.as_ptr(), 0o600) }, 0);
    refused(&["runs", run.to_str().unwrap()], "not a regular file");
    refused(&["report", run.to_str().unwrap()], "not a regular file");
}

#[test]
fn wide_and_deep_recipes_stay_fast_or_are_refused() {
    let d = tmpdir("hardening", "wide");
    // 20,000 children, each followed by an inserted layer (quadratic before: minutes).
    let mut r = String::from(
        "[run]\nname = \"w\"\n[model]\ntype = \"Sequential\"\ninput = { axes = { batch = 2, x = 4 }, dtype = \"float32\" }\n",
    );
    for i in 0..20_000 {
        r.push_str(&format!("children.c{i} = {{ type = \"Identity\" }}\n"));
    }
    r.push_str("[[patch]]\nselect = \"Identity\"\naction = \"insert_after\"\nwith = { type = \"Identity\" }\n");
    let f = d.join("wide.toml");
    std::fs::write(&f, r).unwrap();
    let (code, o, e) = run_pzt(&["select", f.to_str().unwrap(), "Identity"]);
    assert_eq!(code, 0, "{e}");
    assert!(
        o.contains("40000 matches"),
        "{}",
        &o[o.len().saturating_sub(300)..]
    );
    let (code, _, e) = run_pzt(&["show", f.to_str().unwrap(), "--depth", "1"]);
    assert_eq!(code, 0, "{e}");
    // 2,000 wraps of one node nest 2,000 levels deep: refused at the depth limit.
    let mut w = std::fs::read_to_string(tiny(&d, 2, "")).unwrap();
    for _ in 0..2000 {
        w.push_str("[[patch]]\nselect = \"lm_head\"\naction = \"wrap\"\nwith = { type = \"Sequential\" }\n");
    }
    let f = d.join("deep.toml");
    std::fs::write(&f, w).unwrap();
    refused(
        &["plan", f.to_str().unwrap()],
        "levels deep; pzt accepts at most 256",
    );
}

#[test]
fn long_lines_are_cut_in_messages() {
    let d = tmpdir("hardening", "long");
    let f = tiny(&d, 2, "");
    let long = format!("x{}", "y".repeat(5_000_000));
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("kind = \"adamw\"", &format!("kind = \"{long}\""));
    std::fs::write(&f, text).unwrap();
    let (code, _, e) = run_pzt(&["plan", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{}", &e[..e.len().min(500)]);
    assert!(e.len() < 20_000, "{} bytes of stderr", e.len());
    assert!(e.contains("more bytes") || e.contains("..."), "{e}");
}

#[test]
fn bad_commands_exit_2() {
    let d = tmpdir("hardening", "cmds");
    // logits of a model that takes no tokens.
    refused(
        &[
            "logits",
            root().join("recipes/mlp.toml").to_str().unwrap(),
            "--tokens",
            "1 2",
        ],
        "not a language model",
    );
    // A binary data file.
    std::fs::write(d.join("bin.txt"), [0xffu8, 0xfe, 0x00, 0x81, 0x92]).unwrap();
    let text = std::fs::read_to_string(tiny(&d, 2, "")).unwrap().replace(
        "source = \"synthetic\"\ngenerator = \"addition\"\nmax_digits = 2\nnum_examples = 200\n",
        "source = \"text\"\nfiles = [\"*.txt\"]\n",
    );
    let f = d.join("bin.toml");
    std::fs::write(&f, text).unwrap();
    // A bare glob beside a recipe given without a directory part.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pzt"))
        .args(["train", "bin.toml"])
        .current_dir(&d)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains("bin.txt: not UTF-8 text"), "{e}");
    // A NUL in a run name.
    refused(
        &[
            "plan",
            tiny(&d, 2, "").to_str().unwrap(),
            "--set",
            "run.name=\"a\\u0000b\"",
        ],
        "one path component",
    );
    // Parameters that cannot fit in memory are refused before they are allocated.
    refused(
        &[
            "train",
            tiny(&d, 2, "").to_str().unwrap(),
            "--set",
            "model.vocab_size=10000000000",
        ],
        "and this machine has",
    );
    // Generating without end.
    refused(
        &[
            "generate",
            hf_dir().to_str().unwrap(),
            "--tokens",
            "1 2",
            "--max-new-tokens",
            "1000000000000",
        ],
        "--max-new-tokens 1000000000000 is more than pzt generates",
    );
    // A device (here the always-full /dev/full) is not a file to write: refused before work.
    let hf = root().join("tests/fixtures/hf/llama-gqa");
    refused(
        &[
            "logits",
            hf.to_str().unwrap(),
            "--tokens",
            "1 2",
            "--out",
            "/dev/full",
        ],
        "is not a regular file",
    );
}

#[test]
fn a_finished_run_adds_no_event_file_and_no_empty_eval_line() {
    let d = tmpdir("hardening", "finished");
    let f = tiny(&d, 2, "");
    let f = f.to_str().unwrap();
    let set = "data.eval_fraction=0.0";
    let (code, o, e) = run_pzt(&["train", f, "--set", set]);
    assert_eq!(code, 0, "{o}{e}");
    assert!(
        !o.contains("step      2/2  \n") && !e.contains("step      2/2  \n"),
        "{o}{e}"
    );
    let metrics = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    assert!(!metrics.contains("eval."), "{metrics}");
    let events = || {
        std::fs::read_dir(d.join("run/tensorboard"))
            .unwrap()
            .count()
    };
    let before = events();
    let (code, o, e) = run_pzt(&["train", f, "--set", set]);
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(events(), before, "a finished run wrote another event file");
}

#[test]
fn csv_labels_and_rows_are_checked_at_load() {
    let d = tmpdir("hardening", "csv");
    let recipe = |csv: &str, classes: i64| {
        std::fs::write(d.join("c.csv"), csv).unwrap();
        let body = format!(
            "[run]\nname = \"c\"\nout_dir = \"{}\"\n[model]\nbuilder = \"mlp\"\nwidths = [2, 8, {classes}]\naxis = \"features\"\ninput = {{ axes = {{ batch = 2, features = 2 }} }}\n[data]\nsource = \"csv\"\nfiles = [\"c.csv\"]\nfeatures = [\"x1\", \"x2\"]\ntarget = \"label\"\ntask = \"classification\"\n[train]\nsteps = 2\nbatch_size = 2\n[optim]\nlr = 1e-2\n",
            d.join("run").display()
        );
        let f = d.join("c.toml");
        std::fs::write(&f, body).unwrap();
        f
    };
    let rows = "x1,x2,label\n0.1,0.2,0\n0.3,0.4,1\n0.5,0.6,2\n0.7,0.8,1\n";
    let f = recipe(&rows.replace(",2\n", ",5\n"), 3);
    refused(
        &["train", f.to_str().unwrap()],
        "the largest class label in the data is 5, but the model outputs 3 classes",
    );
    let f = recipe(&rows.replace(",2\n", ",1e30\n"), 3);
    refused(
        &["train", f.to_str().unwrap()],
        "must be an integer from 0 to 16777215",
    );
    let f = recipe(&rows.replace("0.3,0.4,1", "0.3,0.4,1,9"), 3);
    refused(
        &["train", f.to_str().unwrap()],
        "c.csv:3: the row has 4 values, the header 3 columns",
    );
    let f = recipe(rows, 3);
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
}

#[test]
fn messages_say_what_is_wrong_in_plain_words() {
    let lora = root().join("recipes/lora-chat.toml");
    let l = lora.to_str().unwrap();
    for (set, want, never) in [
        (
            "strategy.lora.targets=3",
            "expected a string or a list of strings",
            "untagged enum",
        ),
        (
            "train.precision={}",
            "expected a string, not a table, list or number: `fp32` or `bf16`",
            "wanted exactly 1 element",
        ),
        ("data.overflow=1", "`skip` or `truncate`", "unit variant"),
    ] {
        let (code, _, e) = run_pzt(&["plan", l, "--set", set]);
        assert_eq!(code, 2, "{set}: {e}");
        assert!(e.contains(want) && !e.contains(never), "{set}: {e}");
    }
    // A checkpoint of another model: said so, not "unreadable".
    let d = tmpdir("hardening", "other-model");
    let f = tiny(&d, 2, "");
    assert_eq!(run_pzt(&["train", f.to_str().unwrap()]).0, 0);
    let ck = d.join("run/checkpoints/step-2");
    let (code, _, e) = run_pzt(&[
        "eval",
        f.to_str().unwrap(),
        "--set",
        "model.d_model=32",
        "--checkpoint",
        ck.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{e}");
    assert!(
        e.contains("was trained with another model") || e.contains("has shape"),
        "{e}"
    );
    let (code, _, e) = run_pzt(&[
        "eval",
        f.to_str().unwrap(),
        "--set",
        "model.num_layers=2",
        "--checkpoint",
        ck.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{e}");
    assert!(
        e.contains("was trained with another model or [strategy]"),
        "{e}"
    );
    assert!(!e.contains("unreadable"), "{e}");
    // A [strategy] change on resume: said so, not "the base model changed".
    let (code, _, e) = run_pzt(&[
        "train",
        f.to_str().unwrap(),
        "--set",
        "train.steps=4",
        "--set",
        "strategy.freeze=[\"embed\"]",
    ]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("[strategy]") && !e.contains("base model"), "{e}");
}

#[test]
fn the_truncate_hint_is_not_given_when_truncating_already() {
    let d = tmpdir("hardening", "truncate-hint");
    let f = d.join("chat.toml");
    std::fs::write(
        &f,
        format!(
            "[run]\nname = \"c\"\nout_dir = \"{}\"\n[model]\nhf = \"{}\"\n[data]\nsource = \"chat\"\nfiles = [\"{}\"]\nseq_len = 4\noverflow = \"truncate\"\n",
            d.join("run").display(),
            root().join("tests/fixtures/hf/chat-tiny").display(),
            root().join("tests/fixtures/chat.jsonl").display(),
        ),
    )
    .unwrap();
    let (code, _, e) = run_pzt(&["data", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{e}");
    assert!(
        e.contains("raise seq_len") && !e.contains("set overflow"),
        "{e}"
    );
}

#[test]
fn newcomer_mistakes_get_pointed_answers() {
    let d = tmpdir("hardening", "newcomer");
    let fx = root().join("tests/fixtures");
    // A typo in `[model] hf` with chat data: the directory is named, not the chat template.
    let f = d.join("typo.toml");
    std::fs::write(
        &f,
        format!(
            "[run]\nname = \"t\"\nout_dir = \"{}\"\n[model]\nhf = \"{}\"\n[data]\nsource = \"chat\"\nfiles = [\"{}\"]\nseq_len = 96\n[train]\nsteps = 2\nbatch_size = 2\n[optim]\nlr = 1e-3\n",
            d.join("run").display(),
            fx.join("hf/chat-tinyy").display(),
            fx.join("chat.jsonl").display(),
        ),
    )
    .unwrap();
    for cmd in ["train", "data", "plan"] {
        let (code, _, e) = run_pzt(&[cmd, f.to_str().unwrap()]);
        assert_eq!(code, 2, "{cmd}: {e}");
        assert!(
            e.contains("chat-tinyy")
                && e.contains("does not exist")
                && !e.contains("chat_template"),
            "{cmd}: {e}"
        );
    }
    // A LoRA target with a typo: "did you mean".
    let lora = root().join("recipes/lora-chat.toml");
    let (code, _, e) = run_pzt(&[
        "plan",
        lora.to_str().unwrap(),
        "--set",
        "strategy.lora.targets=[\"qproj\"]",
    ]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("did you mean `q_proj`?"), "{e}");
    // A finished run: past its steps, and --profile with nothing to profile.
    let g = tiny(&d, 4, "");
    let gs = g.to_str().unwrap();
    assert_eq!(run_pzt(&["train", gs]).0, 0);
    let (code, _, e) = run_pzt(&["train", gs, "--set", "train.steps=2"]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("run.name=\"t-2\""), "{e}");
    let trace = d.join("trace.json");
    let (code, _, e) = run_pzt(&["train", gs, "--profile", trace.to_str().unwrap()]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("is finished") && !trace.exists(), "{e}");
    // export --peft of a run that trained more than its adapters.
    let run = d.join("peft-run");
    let (code, _, e) = run_pzt(&[
        "train",
        lora.to_str().unwrap(),
        "--set",
        &format!("run.out_dir=\"{}\"", run.display()),
        "--set",
        "train.steps=2",
        "--set",
        "strategy.lora.targets=[\"q_proj\"]",
        "--set",
        "strategy.trainable=[\"lm_head\"]",
    ]);
    assert_eq!(code, 0, "{e}");
    let out = d.join("adapter");
    let (code, _, e) = run_pzt(&[
        "export",
        run.join("checkpoints/step-2").to_str().unwrap(),
        "--peft",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("cannot hold") && e.contains("--hf"), "{e}");
}
