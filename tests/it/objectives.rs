//! The preference objectives (`[objective]`): the loss, the metrics and the gradient norm of a
//! first step equal TRL 1.16.0's on the same model and rows (references made by
//! tests/fixtures/make_objective_fixtures.py), full and LoRA; bad objectives exit 2.
use crate::common::*;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A preference recipe on the tiny chat model: `objective` is the `[objective]` table's body,
/// `strategy` the `[strategy]` section (or empty).
fn recipe(
    dir: &Path,
    name: &str,
    rows: &str,
    batch: usize,
    objective: &str,
    strategy: &str,
) -> PathBuf {
    let f = dir.join(format!("{name}.toml"));
    std::fs::write(
        &f,
        format!(
            "[run]\nname = \"{name}\"\nout_dir = \"{out}\"\n[model]\nhf = \"{m}\"\n[data]\nsource = \"preference\"\nfiles = [\"{rows}\"]\nseq_len = 256\neval_fraction = 0.0\n[objective]\n{objective}\n{strategy}\n[train]\nsteps = 1\nbatch_size = {batch}\nlog_every = 1\nthreads = 1\n[optim]\nlr = 1e-3\n",
            out = dir.join(name).display(),
            m = fixtures().join("hf/chat-tiny").display(),
            rows = fixtures().join("preference").join(rows).display(),
        ),
    )
    .unwrap();
    f
}

/// The first metrics line of a run.
fn first_step(dir: &Path, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(name).join("metrics.jsonl")).unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

/// Each objective, full and LoRA (the adapter of tests/fixtures/peft/chat-tiny-lora, not zero,
/// against the model with the adapter off), one step over every row: loss within 1e-5 of TRL's,
/// the metrics within 1e-4, and the gradient norm within 1e-4 relative.
#[test]
fn objectives_equal_trls_losses_metrics_and_gradients() {
    let d = tmpdir("objectives", "trl");
    let text = std::fs::read_to_string(fixtures().join("objective-reference.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    for (k, c) in cases.iter().enumerate() {
        let kind = c["objective"].as_str().unwrap();
        let mut obj = format!("kind = \"{kind}\"\n");
        for (key, v) in c["keys"].as_object().unwrap() {
            obj.push_str(&format!("{key} = {v}\n"));
        }
        let lora = c["strategy"] == "lora";
        if lora && matches!(kind, "dpo" | "ipo" | "kto") {
            obj.push_str("reference = \"base\"\n");
        }
        let strategy = if lora {
            format!(
                "[strategy]\nkind = \"lora\"\nlora = {{ init_from = \"{}\" }}",
                fixtures().join("peft/chat-tiny-lora").display()
            )
        } else {
            String::new()
        };
        let (rows, batch) = match kind {
            "kto" => ("unpaired_chat.jsonl", 2),
            _ => ("conversational.jsonl", 3),
        };
        let name = format!("case{k}");
        let f = recipe(&d, &name, rows, batch, &obj, &strategy);
        let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{c}: {o}{e}");
        let got = first_step(&d, &name);
        let what = format!("{kind} {} {}", c["keys"], c["strategy"]);
        let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol;
        // A full fine-tune's first step compares the model with a copy of itself: pzt's
        // log-ratios are exactly 0, while TRL's reference copy gives outputs within 6e-4 of its
        // model's (the same weights and buffers; TRL builds it apart), so its loss is off ln 2
        // by up to 1e-4 and its rewards are noise, their signs too.
        let noise = !lora && matches!(kind, "dpo" | "ipo" | "kto");
        let tol = if noise { 2e-4 } else { 1e-5 };
        let loss = got["loss"].as_f64().unwrap();
        assert!(
            close(loss, c["loss"].as_f64().unwrap(), tol),
            "{what}: loss {loss} vs {}",
            c["loss"]
        );
        let (gn, want) = (
            got["grad_norm"].as_f64().unwrap(),
            c["grad_norm"].as_f64().unwrap(),
        );
        assert!(
            close(gn, want, if noise { 1e-3 } else { 1e-4 } * want),
            "{what}: grad_norm {gn} vs {want}"
        );
        for (m, v) in c["metrics"].as_object().unwrap() {
            let interesting = m.starts_with("rewards.")
                || m.starts_with("logps.")
                || m.starts_with("log_odds")
                || m == "kl"
                || m == "nll_loss";
            if !interesting || (noise && m == "rewards.accuracies") {
                continue;
            }
            let g = got[m]
                .as_f64()
                .unwrap_or_else(|| panic!("{what}: no `{m}` in {got}"));
            assert!(
                close(g, v.as_f64().unwrap(), if noise { 1e-3 } else { 1e-4 }),
                "{what}: {m} {g} vs {v}"
            );
        }
    }
    assert_eq!(cases.len(), 12);
}

/// Objectives and data that do not go together, and bad objective keys, exit 2 naming them.
#[test]
fn objective_mistakes_exit_2() {
    let d = tmpdir("objectives", "bad");
    let cases = [
        (
            "orpo-gamma",
            "conversational.jsonl",
            "kind = \"orpo\"\ngamma = 1",
            "unknown key `gamma`",
        ),
        (
            "kto-pairs",
            "conversational.jsonl",
            "kind = \"kto\"",
            "trains on unpaired rows",
        ),
        (
            "dpo-unpaired",
            "unpaired_chat.jsonl",
            "kind = \"dpo\"",
            "trains on preference pairs",
        ),
        (
            "lm-pairs",
            "conversational.jsonl",
            "kind = \"lm\"",
            "train with a preference objective",
        ),
        (
            "beta",
            "conversational.jsonl",
            "kind = \"dpo\"\nbeta = 0",
            "`beta` must be positive",
        ),
        (
            "base",
            "conversational.jsonl",
            "kind = \"dpo\"\nreference = \"base\"",
            "has no LoRA adapters",
        ),
        (
            "kind",
            "conversational.jsonl",
            "kind = \"ppo\"",
            "unknown value `ppo` for `kind`",
        ),
    ];
    for (name, rows, obj, want) in cases {
        let f = recipe(&d, name, rows, 2, obj, "");
        let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {o}{e}");
        assert!(e.contains(want), "{name}: {e}");
    }
}

/// A DPO run (a full fine-tune: the reference is a frozen copy of the model as the run
/// started) stopped after 2 steps and resumed ends with the parameters of the run that went
/// straight to 4; `pzt eval` reports the objective's metrics against the same reference, and
/// `--expect` gates on them.
#[test]
fn a_resumed_dpo_run_equals_the_straight_one_and_eval_reports_rewards() {
    let d = tmpdir("objectives", "resume");
    let eval = format!(
        "eval_files = [\"{}\"]",
        fixtures().join("preference/conversational.jsonl").display()
    );
    let make = |name: &str| {
        let f = recipe(
            &d,
            name,
            "conversational.jsonl",
            3,
            "kind = \"dpo\"\nbeta = 0.5",
            "",
        );
        let text = std::fs::read_to_string(&f)
            .unwrap()
            .replace("eval_fraction = 0.0", &eval)
            .replace("lr = 1e-3", "lr = 1e-2");
        std::fs::write(&f, text).unwrap();
        f
    };
    let (straight, resumed) = (make("straight"), make("resumed"));
    let train = |f: &Path, steps: &str| {
        let (code, o, e) = run_pzt(&["train", f.to_str().unwrap(), "--set", steps]);
        assert_eq!(code, 0, "{o}{e}");
    };
    train(&straight, "train.steps=4");
    train(&resumed, "train.steps=2");
    train(&resumed, "train.steps=4");
    let model = |name: &str| {
        std::fs::read(d.join(name).join("checkpoints/step-4/model.safetensors")).unwrap()
    };
    assert!(
        model("straight") == model("resumed"),
        "the parameters differ"
    );
    let (code, o, e) = run_pzt(&[
        "eval",
        straight.to_str().unwrap(),
        "--set",
        "train.steps=4",
        "--json",
        "--expect",
        "eval.rewards.accuracies>=0.6",
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let m = &v["metrics"];
    assert!(m["eval.rewards.margins"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        m["eval.loss"].as_f64().unwrap() < std::f64::consts::LN_2,
        "{v}"
    );
    let (code, _, e) = run_pzt(&[
        "eval",
        straight.to_str().unwrap(),
        "--set",
        "train.steps=4",
        "--expect",
        "eval.rewards.accuracies>1.5",
    ]);
    assert_eq!(code, 3, "{e}");
}

/// The metrics lines of a run.
fn lines(dir: &Path, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(name).join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The losses and rewards of a run's steps (what two runs must share).
fn trace(dir: &Path, name: &str) -> Vec<(f64, f64)> {
    lines(dir, name)
        .iter()
        .map(|l| {
            (
                l["loss"].as_f64().unwrap(),
                l["rewards.margins"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// `reference` as a path: the pretrained directory the LoRA model starts from is the same
/// reference as its adapters off (the same steps, exactly); a DPO checkpoint is another (the
/// first step's rewards are not 0); a directory of another vocabulary and a missing one exit 2.
/// LoRA with activation checkpointing takes the same steps as without; DoRA trains.
#[test]
fn references_from_directories_and_strategies() {
    let d = tmpdir("objectives", "references");
    let lora = "[strategy]\nkind = \"lora\"\nlora = { rank = 4, targets = \"all-linear\" }";
    let run = |name: &str, obj: &str, strategy: &str| {
        let f = recipe(&d, name, "conversational.jsonl", 3, obj, strategy);
        let text = std::fs::read_to_string(&f)
            .unwrap()
            .replace("steps = 1", "steps = 4")
            .replace("lr = 1e-3", "lr = 1e-2");
        std::fs::write(&f, text).unwrap();
        run_pzt(&["train", f.to_str().unwrap()])
    };
    let ok = |r: (i32, String, String)| assert_eq!(r.0, 0, "{}{}", r.1, r.2);
    ok(run("off", "kind = \"dpo\"", lora));
    let hf = fixtures().join("hf/chat-tiny");
    let by_path = format!("kind = \"dpo\"\nreference = \"{}\"", hf.display());
    ok(run("path", &by_path, lora));
    assert_eq!(trace(&d, "off"), trace(&d, "path"));
    let ckpt = d.join("off/checkpoints/step-4");
    ok(run(
        "ckpt",
        &format!("kind = \"dpo\"\nreference = \"{}\"", ckpt.display()),
        lora,
    ));
    assert!(trace(&d, "ckpt")[0].1 < -0.01, "{:?}", trace(&d, "ckpt"));
    let other = fixtures().join("hf/qwen3");
    let r = run(
        "vocab",
        &format!("kind = \"dpo\"\nreference = \"{}\"", other.display()),
        lora,
    );
    assert!(
        r.0 == 2 && r.2.contains("must share the model's tokenizer"),
        "{}",
        r.2
    );
    let r = run("missing", "kind = \"dpo\"\nreference = \"nowhere\"", lora);
    assert!(
        r.0 == 2 && r.2.contains("neither a pzt checkpoint"),
        "{}",
        r.2
    );
    let checkpointed = format!("{lora}\ncheckpoint_activations = \"blocks.*\"");
    ok(run("checkpointed", "kind = \"dpo\"", &checkpointed));
    assert_eq!(trace(&d, "off"), trace(&d, "checkpointed"));
    let dora = lora.replace("rank = 4", "rank = 4, dora = true");
    ok(run("dora", "kind = \"dpo\"", &dora));
    let t = trace(&d, "dora");
    assert!(t.last().unwrap().0 < t[0].0, "{t:?}");
}

/// `precompute_reference = true`: the reference's log-probabilities are computed once, kept in a
/// file beside the prepared data, and the steps equal those of the reference run beside the
/// model; a second run with the same data and reference reads the file (not written again);
/// KTO's mismatched rows cannot be computed ahead (exit 2).
#[test]
fn a_precomputed_reference_gives_the_same_steps_and_is_kept() {
    let d = tmpdir("objectives", "precompute");
    let cache = d.join("cache");
    let run = |name: &str, obj: &str, rows: &str| {
        let f = recipe(&d, name, rows, 3, obj, "");
        let text = std::fs::read_to_string(&f)
            .unwrap()
            .replace("steps = 1", "steps = 4")
            .replace("lr = 1e-3", "lr = 1e-2")
            .replace(
                "eval_fraction = 0.0",
                &format!("eval_fraction = 0.0\ncache_dir = \"{}\"", cache.display()),
            );
        std::fs::write(&f, text).unwrap();
        run_pzt(&["train", f.to_str().unwrap()])
    };
    let ok = |r: (i32, String, String)| assert_eq!(r.0, 0, "{}{}", r.1, r.2);
    ok(run("live", "kind = \"dpo\"", "conversational.jsonl"));
    let pre = "kind = \"dpo\"\nprecompute_reference = true";
    ok(run("pre", pre, "conversational.jsonl"));
    for (a, b) in trace(&d, "live").iter().zip(trace(&d, "pre")) {
        assert!(
            (a.0 - b.0).abs() < 1e-5 && (a.1 - b.1).abs() < 1e-5,
            "{a:?} vs {b:?}"
        );
    }
    let file = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("reference-")
        })
        .expect("the precomputed file");
    let written = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    ok(run("again", pre, "conversational.jsonl"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        written
    );
    assert_eq!(trace(&d, "pre"), trace(&d, "again"));
    let r = run(
        "kto",
        "kind = \"kto\"\nprecompute_reference = true",
        "unpaired_chat.jsonl",
    );
    assert!(
        r.0 == 2 && r.2.contains("cannot be computed ahead"),
        "{}",
        r.2
    );
}

/// The gradient of one step, tensor by tensor: for each LoRA case, one SGD step with learning
/// rate 1 (no momentum, no decay, no clipping) moves each adapter tensor by minus its gradient;
/// the adapter `pzt export --peft` writes then equals the starting one less TRL's gradient,
/// within 1e-6 (absolute) + 1e-4 (relative).
#[test]
fn lora_gradients_equal_trls_tensor_by_tensor() {
    use tch::Tensor;
    let d = tmpdir("objectives", "grads");
    let text = std::fs::read_to_string(fixtures().join("objective-reference.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let grads = Tensor::read_safetensors(fixtures().join("objective-grads.safetensors")).unwrap();
    let start =
        Tensor::read_safetensors(fixtures().join("peft/chat-tiny-lora/adapter_model.safetensors"))
            .unwrap();
    let mut checked = 0;
    for (k, c) in cases.iter().enumerate() {
        if c["strategy"] != "lora" {
            continue;
        }
        let kind = c["objective"].as_str().unwrap();
        let mut obj = format!("kind = \"{kind}\"\n");
        for (key, v) in c["keys"].as_object().unwrap() {
            obj.push_str(&format!("{key} = {v}\n"));
        }
        if matches!(kind, "dpo" | "ipo" | "kto") {
            obj.push_str("reference = \"base\"\n");
        }
        let strategy = format!(
            "[strategy]\nkind = \"lora\"\nlora = {{ init_from = \"{}\" }}",
            fixtures().join("peft/chat-tiny-lora").display()
        );
        let (rows, batch) = match kind {
            "kto" => ("unpaired_chat.jsonl", 2),
            _ => ("conversational.jsonl", 3),
        };
        let name = format!("sgd{k}");
        let f = recipe(&d, &name, rows, batch, &obj, &strategy);
        let text = std::fs::read_to_string(&f)
            .unwrap()
            .replace("lr = 1e-3", "kind = \"sgd\"\nlr = 1.0");
        std::fs::write(&f, text).unwrap();
        let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{o}{e}");
        let out = d.join(format!("{name}-peft"));
        let ckpt = d.join(&name).join("checkpoints/step-1");
        let (code, o, e) = run_pzt(&[
            "export",
            ckpt.to_str().unwrap(),
            "--peft",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{o}{e}");
        let after = Tensor::read_safetensors(out.join("adapter_model.safetensors")).unwrap();
        for (n, a) in &after {
            let s = &start.iter().find(|(m, _)| m == n).unwrap().1;
            let g = &grads
                .iter()
                .find(|(m, _)| *m == format!("{k}:{n}"))
                .unwrap_or_else(|| panic!("{k}:{n}"))
                .1;
            let moved = s - a;
            let err = (&moved - g).abs().max().double_value(&[]);
            let scale = g.abs().max().double_value(&[]);
            assert!(
                err <= 1e-6 + 1e-4 * scale,
                "{kind} {n}: {err} (gradient up to {scale})"
            );
            assert!(scale > 0.0, "{kind} {n}: no gradient");
            checked += 1;
        }
    }
    // Six LoRA cases, 4 adapter tensors each (A and B of q_proj and v_proj, 2 layers: 8).
    assert_eq!(checked, 6 * 8);
}

/// `pzt plan` counts two sequences per pair, and the frozen reference copy of a full
/// fine-tune (none for zero-initialized LoRA adapters, whose reference is the adapters off).
#[test]
fn the_plan_counts_both_sequences_and_the_reference_copy() {
    let d = tmpdir("objectives", "plan");
    let plan = |name: &str, obj: &str, strategy: &str| {
        let f = recipe(&d, name, "conversational.jsonl", 3, obj, strategy);
        let (code, o, e) = run_pzt(&["plan", f.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0, "{e}");
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        v["memory_bytes"].clone()
    };
    let lm = plan("lm", "", "");
    let full = plan("full", "kind = \"dpo\"", "");
    assert_eq!(
        full["activations"].as_i64(),
        lm["activations"].as_i64().map(|a| 2 * a)
    );
    assert_eq!(full["reference"], full["parameters"]);
    let lora = "[strategy]\nkind = \"lora\"\nlora = { rank = 4, targets = \"all-linear\" }";
    assert_eq!(plan("lora", "kind = \"dpo\"", lora)["reference"], 0);
    let pre = plan("pre", "kind = \"dpo\"\nprecompute_reference = true", "");
    assert_eq!(pre["reference"], 0);
}
