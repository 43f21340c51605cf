//! The inspection commands on every kind of model (recipe, HF directory, checkpoint), `pzt runs`,
//! `pzt eval --expect` and the `--text` / `--prompt` spellings.
use crate::common::tiny::recipe;
use crate::common::tmpdir;
use crate::common::{fixture, page_data, page_params, run_pzt};
use std::path::{Path, PathBuf};

/// A finished 4-step tiny run: (dir, recipe, newest checkpoint).
fn trained(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let d = tmpdir("inspect", name);
    let r = recipe(&d, 4, "");
    let (code, _, err) = run_pzt(&["train", r.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let ck = d.join("run/checkpoints/step-4");
    (d, r, ck)
}

#[test]
fn show_plan_select_take_every_kind_of_model() {
    let (_d, r, ck) = trained("kinds");
    let hf = fixture("hf/chat-tiny");
    for m in [r.to_str().unwrap(), ck.to_str().unwrap(), hf.as_str()] {
        let (code, out, err) = run_pzt(&["show", m, "--depth", "1"]);
        assert_eq!(code, 0, "show {m}: {err}");
        assert!(out.contains("EmbeddingLookup"), "{out}");
        let (code, out, err) = run_pzt(&["plan", m, "--json"]);
        assert_eq!(code, 0, "plan {m}: {err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(j["parameters"]["total"].as_i64().unwrap() > 0);
        assert!(j["output"]["axes"]["vocab"].as_i64().unwrap() > 0, "{j}");
        let (code, out, err) = run_pzt(&["select", m, "EmbeddingLookup"]);
        assert_eq!(code, 0, "select {m}: {err}");
        assert!(out.ends_with("1 match\n"), "{out}");
    }
    // The HF directory's plan checks shapes on one sequence of 8 tokens.
    let (_, out, _) = run_pzt(&["plan", &hf, "--json"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["output"]["axes"]["seq"], 8);
    assert_eq!(j["output"]["axes"]["vocab"], 384);
    // --set reaches the HF directory's recipe and a checkpoint's.
    let (code, out, err) = run_pzt(&["plan", &hf, "--set", "model.input.axes.seq=3", "--json"]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["output"]["axes"]["seq"], 3);
    // A directory that is not a model, and a missing path, are bad input.
    let d = tmpdir("inspect", "notmodel");
    for cmd in ["show", "plan"] {
        let (code, _, err) = run_pzt(&[cmd, d.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("is a directory but not a model"), "{err}");
        let (code, _, err) = run_pzt(&[cmd, d.join("nope.toml").to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("does not exist"), "{err}");
    }
}

#[test]
fn runs_lists_states_steps_and_metrics() {
    let root = tmpdir("inspect", "runs");
    // A finished run.
    let a = root.join("a");
    std::fs::create_dir_all(&a).unwrap();
    let ra = recipe(&a, 4, "");
    assert_eq!(run_pzt(&["train", ra.to_str().unwrap()]).0, 0);
    std::fs::rename(a.join("run"), root.join("done")).unwrap();
    // An interrupted one: 4 of 6 steps (a checkpoint at 4, then the steps raised).
    let b = root.join("b");
    std::fs::create_dir_all(&b).unwrap();
    let rb = recipe(&b, 4, "");
    assert_eq!(run_pzt(&["train", rb.to_str().unwrap()]).0, 0);
    let ck = b.join("run/checkpoints/step-4/recipe.toml");
    let text = std::fs::read_to_string(&ck).unwrap();
    std::fs::write(&ck, text.replace("steps = 4", "steps = 6")).unwrap();
    std::fs::rename(b.join("run"), root.join("half")).unwrap();
    // A running one: its lock is held by a live process (this test).
    std::fs::create_dir_all(root.join("live/checkpoints")).unwrap();
    std::fs::write(root.join("live/.pzt-lock"), std::process::id().to_string()).unwrap();
    let held = std::fs::File::open(root.join("live/.pzt-lock")).unwrap();
    assert_eq!(
        unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );
    // A lock file nobody holds (a killed run's, whose pid may be reused) is not a running run.
    std::fs::create_dir_all(root.join("stale/checkpoints")).unwrap();
    std::fs::write(root.join("stale/.pzt-lock"), "1").unwrap();
    // Not runs: ignored.
    std::fs::create_dir_all(root.join("a/other")).unwrap();

    let (code, out, err) = run_pzt(&["runs", root.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("run"), "{out}");
    let line = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing: {out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        line("done")[1..4],
        ["4/4", "finished", "eval.loss"],
        "{out}"
    );
    assert_eq!(line("half")[1..3], ["4/6", "interrupted"], "{out}");
    assert_eq!(line("live")[1..3], ["0/?", "running"], "{out}");
    assert_ne!(line("stale")[2], "running", "{out}");
    drop(held);

    let (code, out, _) = run_pzt(&["runs", root.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let j: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let done = j
        .iter()
        .find(|r| r["dir"].as_str().unwrap().ends_with("done"))
        .unwrap();
    assert_eq!(done["steps_total"], 4);
    assert_eq!(done["checkpoints"], serde_json::json!([2, 4]));
    // The best eval.loss is the smallest of the evals the run logged, the last is step 4's.
    let evals: Vec<(f64, u64)> = std::fs::read_to_string(root.join("done/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|m| Some((m["eval.loss"].as_f64()?, m["step"].as_u64()?)))
        .collect();
    let best = evals
        .iter()
        .cloned()
        .fold((f64::MAX, 0), |b, e| if e.0 < b.0 { e } else { b });
    assert_eq!(done["best"]["value"].as_f64().unwrap(), best.0);
    assert_eq!(done["best"]["step"].as_u64().unwrap(), best.1);
    assert_eq!(done["last"]["step"], 4);
    assert!(done["bytes"].as_u64().unwrap() > 1000);

    // One run directory is listed alone; an empty directory has none; a file is bad input.
    let (_, out, _) = run_pzt(&["runs", root.join("done").to_str().unwrap()]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, out, _) = run_pzt(&["runs", root.join("a/other").to_str().unwrap()]);
    assert_eq!((code, out.trim().starts_with("no runs")), (0, true));
    let (code, _, err) = run_pzt(&["runs", ra.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn eval_expect_gates_exit_3() {
    let (_d, r, _ck) = trained("expect");
    let r = r.to_str().unwrap();
    let (code, out, err) = run_pzt(&[
        "eval",
        r,
        "--expect",
        "eval.loss>0",
        "--expect",
        "eval.token_accuracy>=0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PASS eval.loss > 0"), "{out}");
    let (code, out, err) = run_pzt(&[
        "eval",
        r,
        "--expect",
        "eval.loss>0",
        "--expect",
        "eval.loss<0.0001",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("FAIL eval.loss < 0.0001"), "{out}");
    assert!(
        err.contains("eval.loss is ") && err.contains("expected < 0.0001"),
        "{err}"
    );
    let (code, out, _) = run_pzt(&["eval", r, "--json", "--expect", "eval.loss<0.0001"]);
    assert_eq!(code, 3);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v = &j["expectations"][0];
    assert_eq!(v["pass"], false);
    assert_eq!(v["metric"], "eval.loss");
    assert_eq!(v["op"], "<");
    assert_eq!(v["value"], j["metrics"]["eval.loss"]);
    // Bad expectations and unknown metrics are bad input (exit 2), before any work.
    for bad in ["eval.loss", "eval.loss>>1", "eval.loss>=x", "eval.nope>1"] {
        let (code, _, err) = run_pzt(&["eval", r, "--expect", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--expect"), "{err}");
    }
}

#[test]
fn text_and_prompt_are_both_accepted() {
    let hf = fixture("hf/chat-tiny");
    let (c1, o1, e1) = run_pzt(&["logits", &hf, "--prompt", "hello"]);
    let (c2, o2, _) = run_pzt(&["logits", &hf, "--text", "hello"]);
    assert_eq!((c1, c2), (0, 0), "{e1}");
    assert_eq!(o1, o2);
    let (c1, o1, e1) = run_pzt(&["generate", &hf, "--text", "hello", "--max-new-tokens", "3"]);
    let (c2, o2, _) = run_pzt(&[
        "generate",
        &hf,
        "--prompt",
        "hello",
        "--max-new-tokens",
        "3",
    ]);
    assert_eq!((c1, c2), (0, 0), "{e1}");
    assert_eq!(o1, o2);
}

#[test]
fn generate_separates_the_prompt_when_the_tokenizer_has_no_decoder() {
    let d = tmpdir("inspect", "nodecoder");
    let src = Path::new(&fixture("hf/chat-tiny")).to_path_buf();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    let tj = d.join("tokenizer.json");
    let mut t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tj).unwrap()).unwrap();
    t["decoder"] = serde_json::Value::Null;
    std::fs::write(&tj, t.to_string()).unwrap();
    let args = [
        "generate",
        d.to_str().unwrap(),
        "--prompt",
        "hello",
        "--max-new-tokens",
        "3",
    ];
    let (code, out, err) = run_pzt(&args);
    assert_eq!(code, 0, "{err}");
    // The new tokens come out space-separated, and the first is not glued to the prompt.
    let rest = out
        .strip_prefix("hello")
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(rest.starts_with(' '), "{out:?}");
    assert_eq!(
        rest.trim_end().split(' ').filter(|w| !w.is_empty()).count(),
        3,
        "{out:?}"
    );
    // With its decoder the continuation follows the prompt as decoded text.
    let (_, out, _) = run_pzt(&[
        "generate",
        &fixture("hf/chat-tiny"),
        "--prompt",
        "hello",
        "--max-new-tokens",
        "3",
    ]);
    assert!(out.starts_with("hello"), "{out:?}");
}

fn kinds(node: &serde_json::Value, out: &mut Vec<String>) {
    out.push(node["kind"].as_str().unwrap().to_string());
    for c in node["children"].as_array().unwrap() {
        kinds(c, out);
    }
}

#[test]
fn model_pages_carry_parameters_sharing_adapters_and_values() {
    let d = tmpdir("inspect", "pages");
    // LoRA after the [strategy] rewrite: adapters are nodes, their factors train, the base is
    // frozen.
    let lora = d.join("lora.html");
    let r = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/lora-finetune.toml");
    let (code, _, err) = run_pzt(&[
        "show",
        r.to_str().unwrap(),
        "--html",
        lora.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let j = page_data(&lora);
    assert_eq!(j["page"], "model");
    let mut ks = vec![];
    kinds(&j["tree"], &mut ks);
    assert_eq!(
        ks.iter().filter(|k| *k == "LowRankAdapter").count(),
        14,
        "7 targets x 2 blocks"
    );
    let mut ps = vec![];
    page_params(&j["tree"], &mut ps);
    let status = |p: &serde_json::Value| p["status"].as_str().unwrap().to_string();
    assert!(ps
        .iter()
        .filter(|p| p["path"].as_str().unwrap().contains("lora_"))
        .all(|p| status(p) == "trainable"));
    assert_eq!(
        ps.iter()
            .find(|p| p["path"] == "embed.embeddings")
            .map(status)
            .as_deref(),
        Some("frozen")
    );
    let t = &j["parameters"];
    assert!(t["frozen"].as_i64().unwrap() > 0 && t["trainable"].as_i64().unwrap() > 0);
    // The quickstart ties its embeddings: the decoder's table is the lookup's, shown once.
    let qs = d.join("qs.html");
    let r = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/quickstart.toml");
    let (code, _, err) = run_pzt(&["show", r.to_str().unwrap(), "--html", qs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let j = page_data(&qs);
    let mut ps = vec![];
    page_params(&j["tree"], &mut ps);
    let head = ps
        .iter()
        .find(|p| p["path"] == "lm_head.embeddings")
        .unwrap();
    assert_eq!(head["shared_with"], "embed.embeddings");
    assert!(
        head["array"].is_null(),
        "a shared parameter's values are embedded once"
    );
    let emb = ps.iter().find(|p| p["path"] == "embed.embeddings").unwrap();
    assert_eq!(emb["axes"], serde_json::json!(["vocab", "embedding"]));
    let arr = &j["arrays"][emb["array"].as_u64().unwrap() as usize];
    assert_eq!(arr["shown"], serde_json::json!([256, 64]));
    // A checkpoint's page shows the checkpoint's values: its statistics are the stored tensor's.
    let (_d2, _r, ck) = trained("pagevalues");
    let page = d.join("ck.html");
    let (code, _, err) = run_pzt(&[
        "show",
        ck.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let j = page_data(&page);
    let mut ps = vec![];
    page_params(&j["tree"], &mut ps);
    let stored = tch::Tensor::read_safetensors(ck.join("model.safetensors")).unwrap();
    let (label, t) = &stored[0];
    let p = ps.iter().find(|p| p["label"] == label.as_str()).unwrap();
    let mean = t
        .to_kind(tch::Kind::Double)
        .mean(tch::Kind::Double)
        .double_value(&[]);
    assert!(
        (p["stats"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12,
        "{p}"
    );
    assert_eq!(p["stats"]["numel"].as_i64().unwrap(), t.numel() as i64);
    // An output file in a missing directory is bad input before anything loads.
    let (code, _, err) = run_pzt(&[
        "show",
        ck.to_str().unwrap(),
        "--html",
        d.join("no/x.html").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn a_bad_key_is_reported_as_such_in_a_layer_with_slots() {
    let d = tmpdir("inspect", "slots");
    let r = d.join("r.toml");
    std::fs::write(
        &r,
        "[model]\ntype = \"Residual\"\n[model.delta]\ntype = \"Identity\"\n",
    )
    .unwrap();
    let (code, _, err) = run_pzt(&["show", r.to_str().unwrap(), "--set", "model.nope=1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown key `nope` in Residual"), "{err}");
    assert!(
        err.contains("layers, delta"),
        "the slot is listed as allowed: {err}"
    );
}
