//! The `pzt` binary: version report, the demo, bad input (exit code 2, no panic), the
//! generated reference (docs/cli.md) and the conveniences: help examples, shell completions,
//! `pzt init`, run directories and RUN@best as models, the interactive chat.
use crate::common;
use crate::common::pzt;
use std::process::Command;

#[test]
fn version_reports_pzt_libtorch_and_devices() {
    let out = pzt(&["--version"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains(&format!("pzt {}", env!("CARGO_PKG_VERSION"))),
        "{s}"
    );
    assert!(s.contains("libtorch 2.11.0"), "{s}");
    assert!(s.contains("devices: cpu"), "{s}");
    assert!(s.contains("default device: "), "{s}");
}

#[test]
fn demo_xor_trains() {
    let out = pzt(&["demo", "xor", "--device", "cpu", "--show"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{s}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        s.contains("on cpu") && s.contains("reached loss < 0.001"),
        "{s}"
    );
    assert!(
        s.contains("Affine") && s.contains("Elementwise(tanh)"),
        "{s}"
    );
}

#[test]
fn bad_input_exits_2_without_a_panic() {
    for args in [
        &["demo", "xor", "--device", "tpu"][..],
        &["demo", "xor", "--max-steps", "many"],
        &["frobnicate"],
    ] {
        let out = pzt(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
        assert!(err.contains("error"), "{err}");
    }
    // A run that cannot reach its target is a failed run: exit 1.
    let out = pzt(&["demo", "xor", "--max-steps", "3", "--device", "cpu"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn absurd_run_settings_exit_2_before_anything_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let recipe = root.join("recipes/quickstart.toml");
    for (set, want) in [
        ("train.threads=0", "threads must be 1 to 1024"),
        ("train.threads=-3", "threads must be 1 to 1024"),
        ("train.threads=100000", "threads must be 1 to 1024"),
        ("train.batch_size=1000000000000", "more than pzt accepts"),
        ("run.name=\"..\"", "one path component"),
        ("run.name=\".\"", "one path component"),
        ("run.out_dir=\"\"", "not a run directory"),
        ("run.out_dir=\".\"", "not a run directory"),
        ("data.num_examples=1000000000000", "more than pzt generates"),
        ("data.seq_len=1000000000000", "more than pzt accepts"),
        ("data.length=0", "length must be 1 to"),
    ] {
        let (code, o, e) = common::run_pzt(&["train", recipe.to_str().unwrap(), "--set", set]);
        assert_eq!(code, 2, "{set}: {o}{e}");
        assert!(e.contains(want), "{set}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    let hf = root.join("tests/fixtures/hf/gemma2");
    for t in ["nan", "inf"] {
        let (code, _, e) = common::run_pzt(&[
            "generate",
            hf.to_str().unwrap(),
            "--tokens",
            "1 2",
            "--temperature",
            t,
        ]);
        assert_eq!(code, 2, "{e}");
        assert!(e.contains("--temperature must be a finite number"), "{e}");
    }
}

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn docs_cli_md_is_the_generated_reference_and_every_flag_is_described() {
    let out = pzt(&["cli-reference"]);
    assert!(out.status.success());
    let now = String::from_utf8_lossy(&out.stdout).into_owned();
    let page = std::fs::read_to_string(root().join("docs/cli.md")).unwrap_or_default();
    assert!(
        page == now,
        "docs/cli.md is stale: run `./target/release/pzt cli-reference > docs/cli.md`"
    );
    assert!(!now.contains("(no description)"), "a flag has no help text");
    // Every command's --help ends with an example.
    let commands: Vec<String> = now
        .lines()
        .filter_map(|l| l.strip_prefix("## `pzt "))
        .map(|l| l.trim_end_matches('`').to_string())
        .collect();
    assert!(commands.len() >= 18, "{commands:?}");
    for c in &commands {
        let mut args: Vec<&str> = c.split(' ').collect();
        args.push("--help");
        let out = pzt(&args);
        let help = String::from_utf8_lossy(&out.stdout);
        let last = help.trim_end().lines().rev().take(3).collect::<Vec<_>>();
        assert!(
            help.contains("Example:") && last.iter().any(|l| l.trim_start().starts_with("pzt ")),
            "pzt {c} --help does not end with an example:\n{help}"
        );
    }
}

#[test]
fn completions_are_written_for_each_shell() {
    for (shell, want) in [
        ("bash", "_pzt()"),
        ("zsh", "#compdef pzt"),
        ("fish", "complete -c pzt"),
    ] {
        let out = pzt(&["completions", shell]);
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(s.contains(want) && s.contains("generate"), "{shell}: {s}");
        assert!(
            !s.contains("cli-reference"),
            "{shell}: a hidden command is offered"
        );
    }
    assert_eq!(pzt(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn init_writes_a_starter_recipe_that_plans_and_trains() {
    let d = common::tmpdir("cli", "init");
    let fx = root().join("tests/fixtures");
    let model = fx.join("hf/chat-tiny");
    for (data, strategy, want) in [
        ("chat.jsonl", "lora", "source = \"chat\""),
        ("tiny.jsonl", "dora", "dora = true"),
        ("tiny.txt", "full", "source = \"text\""),
        ("chat.parquet", "lora", "source = \"parquet\""),
    ] {
        let out = d.join(format!("{data}.toml"));
        let o = pzt(&[
            "init",
            out.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--data",
            fx.join(data).to_str().unwrap(),
            "--strategy",
            strategy,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains(want), "{data}: {text}");
        let o = pzt(&["plan", out.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "{data}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The chat one trains (a few steps, short sequences for the fixture).
    let chat = d.join("chat.jsonl.toml");
    let run = format!("run.out_dir=\"{}\"", d.join("run").display());
    let o = pzt(&[
        "train",
        chat.to_str().unwrap(),
        "--set",
        "train.steps=2",
        "--set",
        "data.seq_len=96",
        "--set",
        &run,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // An existing recipe is not overwritten; a model that is not an HF directory is refused.
    let before = std::fs::read(&chat).unwrap();
    let args = |m: &str| {
        vec![
            "init".to_string(),
            chat.display().to_string(),
            "--model".into(),
            m.to_string(),
            "--data".into(),
            fx.join("chat.jsonl").display().to_string(),
        ]
    };
    let a = args(model.to_str().unwrap());
    let o = pzt(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(&chat).unwrap(), before);
    let fresh = d.join("x.toml");
    let mut a = args(fx.to_str().unwrap());
    a[1] = fresh.display().to_string();
    let o = pzt(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2));
    assert!(!fresh.exists());
}

#[test]
fn a_run_directory_and_run_at_best_or_latest_name_checkpoints() {
    let d = common::tmpdir("cli", "runat");
    let f = common::tiny::recipe(&d, 6, "");
    let fs = f.to_str().unwrap();
    let o = pzt(&["train", fs]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = d.join("run");
    let rs = run.to_str().unwrap();
    // The best eval.loss of the run, from its metrics.
    let evals: Vec<(f64, u64)> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| Some((m["eval.loss"].as_f64()?, m["step"].as_u64()?)))
        .collect();
    let best = evals
        .iter()
        .cloned()
        .fold((f64::MAX, 0), |b, e| if e.0 < b.0 { e } else { b });
    let logits = |m: &str| {
        let o = pzt(&["logits", m, "--tokens", "1 2 3"]);
        assert!(
            o.status.success(),
            "{m}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let step = |s: u64| logits(run.join(format!("checkpoints/step-{s}")).to_str().unwrap());
    assert_eq!(logits(rs), step(6));
    assert_eq!(logits(&format!("{rs}@latest")), step(6));
    // keep_last = 2 keeps steps 4 and 6: the best is one of them or was not kept.
    let at_best = pzt(&["logits", &format!("{rs}@best"), "--tokens", "1 2 3"]);
    if best.1 >= 4 {
        assert_eq!(String::from_utf8_lossy(&at_best.stdout), step(best.1));
    } else {
        assert_eq!(at_best.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&at_best.stderr).contains("keep_best"));
    }
    let o = pzt(&["eval", fs, "--checkpoint", "latest"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("step-6"));
    let o = pzt(&["logits", &format!("{}@best", d.display()), "--tokens", "1"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn generate_chat_answers_once_or_interactively_with_history() {
    let model = root().join("tests/fixtures/hf/chat-tiny");
    let m = model.to_str().unwrap();
    let o = pzt(&[
        "generate",
        m,
        "--chat",
        "--prompt",
        "hi",
        "--max-new-tokens",
        "4",
    ]);
    assert!(o.status.success());
    let once = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        !once.contains("<|im_start|>"),
        "the templated prompt was printed: {once}"
    );
    // Two messages on standard input: two answers, the second after the first in the history.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pzt"))
        .args([
            "generate",
            m,
            "--chat",
            "--max-new-tokens",
            "4",
            "--system",
            "be brief",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hi\nmore\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    assert_eq!(s.lines().count(), 2, "{s}");
    // --chat with token ids is refused, not answered as an empty message.
    let o = pzt(&["generate", m, "--chat", "--tokens", "1 2"]);
    assert_eq!(o.status.code(), Some(2));
}
