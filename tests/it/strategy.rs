//! Fine-tuning strategies from recipes and the command line: adapter-only checkpoints and
//! their base, exact resume, `[model] checkpoint`, freezing, patch actions, activation
//! checkpointing, and the errors of `[strategy]`.
use crate::common::finetune::*;
use crate::common::tmpdir;
use crate::common::*;
use std::path::Path;
use tch::Tensor;

#[test]
fn a_lora_run_saves_only_adapters_and_serves_logits_generate_eval_and_continuation() {
    let d = tmpdir("finetune", "run");
    let f = lora_recipe(&d, &base_dir(), 20, LORA);
    let (code, o, e) = run_pzt(&["plan", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    assert!(o.contains("trainable") && o.contains("frozen"), "{o}");
    let (code, o, e) = run_pzt(&["show", f.to_str().unwrap(), "--depth", "9"]);
    assert_eq!(code, 0, "{e}");
    assert!(
        o.contains("LowRankAdapter(rank 4, alpha 8, dropout 0.1)"),
        "{o}"
    );
    assert!(o.contains("lora_b: Linear({lowrank: 4}"), "{o}");
    assert!(o.contains("frozen]"), "frozen parameters are marked: {o}");

    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    let ck = d.join("run/checkpoints/step-20");
    let saved = Tensor::read_safetensors(ck.join("model.safetensors")).unwrap();
    // q, v, down in 2 layers, A and B each.
    assert_eq!(saved.len(), 12);
    assert!(saved.iter().all(|(n, _)| n.contains(".lora_")), "{saved:?}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["base"]["parameters"], 21);
    assert!(state["base"]["model"]
        .as_str()
        .unwrap()
        .ends_with("llama-lora-base"));

    // The adapters trained: the checkpoint's logits are not the base model's.
    let toks = "5 6 13 7 14 8";
    let tuned = logits_of(&ck, toks, &d);
    let base = logits_of(&base_dir(), toks, &d);
    assert!(max_abs_diff(&tuned, &base) > 1e-3);
    let (code, o, e) = run_pzt(&[
        "generate",
        ck.to_str().unwrap(),
        "--prompt",
        "12+3=",
        "--max-new-tokens",
        "3",
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let (code, o, e) = run_pzt(&["eval", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    assert!(o.contains("eval.loss"), "{o}");

    // A new run from this checkpoint starts from its (merged) weights.
    let g = write(
        &d,
        "cont.toml",
        &format!("[model]\ncheckpoint = \"{}\"\n", ck.display()),
    );
    let cont = logits_of(&g, toks, &d);
    assert!(max_abs_diff(&cont, &tuned) <= 1e-4);
    let (code, o, _) = run_pzt(&["plan", g.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(o.contains(" 0 frozen"), "everything trains again: {o}");
}

#[test]
fn a_lora_run_resumes_exactly_after_kill_9() {
    let steps = 200;
    let straight = tmpdir("finetune", "resume-a");
    let (code, o, e) = run_pzt(&[
        "train",
        lora_recipe(&straight, &base_dir(), steps, LORA)
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let killed = tmpdir("finetune", "resume-b");
    let f = lora_recipe(&killed, &base_dir(), steps, LORA);
    let mut child = spawn_train(&f);
    let run = killed.join("run");
    wait_for(|| pzt::run::checkpoint::latest(&run).is_some());
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let newest = pzt::run::checkpoint::latest(&run).expect("a checkpoint before the kill");
    assert!(newest.0 < steps, "the run finished before it was killed");
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    assert!(o.contains("resuming"), "{o}");
    let read = |d: &Path| {
        std::fs::read(d.join(format!("run/checkpoints/step-{steps}/model.safetensors"))).unwrap()
    };
    assert_eq!(read(&straight), read(&killed), "final adapters differ");
}

#[test]
fn a_changed_base_model_is_an_error_everywhere() {
    let d = tmpdir("finetune", "base");
    let base = d.join("base");
    std::fs::create_dir_all(&base).unwrap();
    for e in std::fs::read_dir(base_dir()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), base.join(e.file_name())).unwrap();
    }
    let f = lora_recipe(&d, &base, 10, LORA);
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    let ck = d.join("run/checkpoints/step-10");
    let more = f.to_str().unwrap().to_string();
    // Change the base's config.json (rope_theta, then the norm epsilon): another function.
    let cp = base.join("config.json");
    let config = std::fs::read_to_string(&cp).unwrap();
    let j: serde_json::Value = serde_json::from_str(&config).unwrap();
    for key in ["rope_theta", "rms_norm_eps"] {
        let mut edited = j.clone();
        match key {
            "rope_theta" => edited["rope_parameters"]["rope_theta"] = serde_json::json!(1234.0),
            _ => edited[key] = serde_json::json!(0.1),
        }
        std::fs::write(&cp, edited.to_string()).unwrap();
        for args in [
            vec!["logits", ck.to_str().unwrap(), "--tokens", "1 2 3"],
            vec!["eval", &more],
            vec!["train", &more, "--set", "train.steps=20"],
        ] {
            let (code, o, e) = run_pzt(&args);
            assert_eq!(code, 2, "{key}: {args:?}: {o}{e}");
            assert!(e.contains("configuration of"), "{key} {args:?}: {e}");
        }
    }
    std::fs::write(&cp, config).unwrap();
    // Change one base weight.
    let mp = base.join("model.safetensors");
    let mut ts = Tensor::read_safetensors(&mp).unwrap();
    ts[0].1 = &ts[0].1 + 0.01;
    Tensor::write_safetensors(&ts, &mp).unwrap();
    for args in [
        vec!["logits", ck.to_str().unwrap(), "--tokens", "1 2 3"],
        vec!["eval", &more],
        vec![
            "export",
            ck.to_str().unwrap(),
            "--peft",
            d.join("out").to_str().unwrap(),
        ],
        vec!["train", &more, "--set", "train.steps=20"],
    ] {
        let (code, o, e) = run_pzt(&args);
        assert_eq!(code, 2, "{args:?}: {o}{e}");
        assert!(
            e.contains("changed since this checkpoint was trained") && e.contains("state.json"),
            "{args:?}: {e}"
        );
    }
}

#[test]
fn full_runs_with_freeze_keep_frozen_weights_and_trainable_limits_training() {
    let d = tmpdir("finetune", "freeze");
    let f = lora_recipe(
        &d,
        &base_dir(),
        10,
        "[strategy]\nfreeze = [\"embed\", \"blocks.0\"]\n",
    );
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    let out = d.join("hf");
    let (code, o, e) = run_pzt(&[
        "export",
        d.join("run/checkpoints/step-10").to_str().unwrap(),
        "--hf",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let get = |dir: &Path| -> std::collections::BTreeMap<String, Tensor> {
        Tensor::read_safetensors(dir.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .collect()
    };
    let (before, after) = (get(&base_dir()), get(&out));
    for (name, t) in &before {
        let same = max_abs_diff(t, &after[name]) == 0.0;
        let frozen = name.starts_with("model.embed_tokens") || name.starts_with("model.layers.0.");
        assert_eq!(same, frozen, "{name}: frozen {frozen} but unchanged {same}");
    }
    let saved =
        Tensor::read_safetensors(d.join("run/checkpoints/step-10/model.safetensors")).unwrap();
    assert!(saved
        .iter()
        .all(|(n, _)| !n.starts_with("embed") && !n.starts_with("blocks.0.")));

    // `trainable` with a full run: only the final norm trains.
    let g = lora_recipe(
        &d,
        &base_dir(),
        10,
        "[strategy]\ntrainable = \"final_norm\"\n",
    );
    let (code, o, _) = run_pzt(&["plan", g.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}");
    assert!(o.contains(" 32 trainable"), "{o}");
}

#[test]
fn patch_actions_apply_the_toolshed() {
    let d = tmpdir("finetune", "patch");
    let f = lora_recipe(
        &d,
        &base_dir(),
        10,
        r#"
[[patch]]
select = "blocks.*"
action = "freeze"

[[patch]]
select = "blocks.1.attention"
action = "lora"
with = { rank = 2, alpha = 4.0, dora = true }

[[patch]]
select = "blocks.*"
action = "checkpoint"
"#,
    );
    let (code, o, e) = run_pzt(&["show", f.to_str().unwrap(), "--depth", "4"]);
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(o.matches("Checkpointed").count(), 2, "{o}");
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    let saved =
        Tensor::read_safetensors(d.join("run/checkpoints/step-10/model.safetensors")).unwrap();
    assert!(saved.iter().any(|(n, _)| n.ends_with("magnitude")));
    assert!(saved.iter().all(|(n, _)| !n.starts_with("blocks.0.")));
}

#[test]
fn strategy_mistakes_exit_2_at_their_key() {
    let d = tmpdir("finetune", "errors");
    for (extra, expect) in [
        (
            "[strategy]\nkind = \"lora\"\n[strategy.lora]\nrank = 4\nrnak = 2\n",
            "rnak",
        ),
        ("[strategy]\nkind = \"lora\"\n", "[strategy.lora]"),
        (
            "[strategy]\nkind = \"lora\"\n[strategy.lora]\nrank = 4\n",
            "`targets` is required",
        ),
        (
            "[strategy]\nkind = \"lora\"\n[strategy.lora]\ntargets = [\"qq_proj\"]\n",
            "matches nothing",
        ),
        (
            "[strategy]\nkind = \"lora\"\n[strategy.lora]\ntargets = \"final_norm.scale\"\n",
            "contracting",
        ),
        (
            "[strategy]\nkind = \"lora\"\n[strategy.lora]\ntargets = \"final_norm\"\n",
            "selects no Linear",
        ),
        (
            "[strategy]\nkind = \"lora\"\n[strategy.lora]\ntargets = \"q_proj\"\nrank = 0\n",
            "rank must be in 1..=65536, got 0",
        ),
        // Both routes to a LoRA rewrite check the same bounds.
        (
            "[strategy]\nkind = \"lora\"\n[strategy.lora]\ntargets = \"q_proj\"\nrank = 70000\n",
            "rank must be in 1..=65536, got 70000",
        ),
        (
            "[[patch]]\nselect = \"blocks.0\"\naction = \"lora\"\nwith = { rank = 70000 }\n",
            "rank must be in 1..=65536, got 70000",
        ),
        (
            "[strategy]\nkind = \"lora\"\n[strategy.lora]\ninit_from = \"nowhere\"\n",
            "adapter_config.json",
        ),
        (
            "[strategy]\nfreeze = [\"embed\", \"blocks.7\"]\n",
            "`blocks.7` matches nothing",
        ),
        (
            "[strategy]\ncheckpoint_activations = \"\"\n",
            "empty selector",
        ),
        ("[strategy]\nkind = \"partial\"\n", "kind"),
    ] {
        let f = lora_recipe(&d, &base_dir(), 10, extra);
        let (code, o, e) = run_pzt(&["plan", f.to_str().unwrap()]);
        assert_eq!(code, 2, "{extra}: {o}{e}");
        assert!(e.contains(expect), "{extra}: {e}");
        assert!(e.contains("-->"), "{extra}: no location: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
}

#[test]
fn activation_checkpointing_trains_like_the_plain_run_in_fp32_and_bf16_and_generates_alike() {
    let last_loss = |dir: &Path| -> f64 {
        let text = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
        let line = text.lines().rev().find(|l| l.contains("\"loss\"")).unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["loss"].as_f64().unwrap()
    };
    for precision in ["fp32", "bf16"] {
        let mut losses = vec![];
        for ck in ["", "checkpoint_activations = \"blocks.*\"\n"] {
            let d = tmpdir("finetune", &format!("ck-{precision}-{}", ck.len()));
            let strategy = LORA.replace("kind = \"lora\"\n", &format!("kind = \"lora\"\n{ck}"));
            let f = lora_recipe(&d, &base_dir(), 20, &strategy);
            let (code, o, e) = run_pzt(&[
                "train",
                f.to_str().unwrap(),
                "--set",
                &format!("train.precision=\"{precision}\""),
            ]);
            assert_eq!(code, 0, "{o}{e}");
            losses.push(last_loss(&d));
            if !ck.is_empty() {
                let (code, o, _) = run_pzt(&["show", f.to_str().unwrap(), "--depth", "3"]);
                assert_eq!(code, 0);
                assert_eq!(o.matches("Checkpointed").count(), 2, "{o}");
                // Generation (no grad, KV cache) through the checkpointed blocks.
                let ck_dir = d.join("run/checkpoints/step-20");
                let (code, a, e) = run_pzt(&[
                    "generate",
                    ck_dir.to_str().unwrap(),
                    "--prompt",
                    "ab=",
                    "--max-new-tokens",
                    "4",
                ]);
                assert_eq!(code, 0, "{e}");
                // The same checkpoint with the plain recipe: the same completion.
                let plain = d.join("plain-ck");
                std::fs::create_dir_all(&plain).unwrap();
                for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
                    std::fs::copy(ck_dir.join(f), plain.join(f)).unwrap();
                }
                let recipe = std::fs::read_to_string(ck_dir.join("recipe.toml")).unwrap();
                assert!(recipe.contains("checkpoint_activations"));
                let recipe: String = recipe
                    .lines()
                    .filter(|l| !l.starts_with("checkpoint_activations"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(plain.join("recipe.toml"), recipe).unwrap();
                let (code, b, e) = run_pzt(&[
                    "generate",
                    plain.to_str().unwrap(),
                    "--prompt",
                    "ab=",
                    "--max-new-tokens",
                    "4",
                ]);
                assert_eq!(code, 0, "{e}");
                assert_eq!(a, b);
            }
        }
        let tol = if precision == "bf16" { 1e-2 } else { 1e-4 };
        assert!(
            (losses[0] - losses[1]).abs() <= tol,
            "{precision}: {losses:?}"
        );
    }
}

#[test]
fn one_train_per_run_directory_and_crash_debris_is_cleaned() {
    let d = tmpdir("finetune", "lock");
    let f = lora_recipe(&d, &base_dir(), 3000, LORA);
    let mut child = spawn_train(&f);
    let lock = d.join("run/.pzt-lock");
    wait_for(|| lock.exists());
    let (code, _, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("is in use by another `pzt train`"), "{e}");
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(lock.exists(), "a killed run leaves its lock");
    // Debris of crashed runs: a temporary checkpoint and a checkpoint without state.json.
    let ck = d.join("run/checkpoints");
    std::fs::create_dir_all(ck.join(".tmp-step-7-99999")).unwrap();
    std::fs::create_dir_all(ck.join("step-999999")).unwrap();
    // The stale lock is taken over, and the debris removed.
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap(), "--set", "train.steps=20"]);
    assert!(code == 0 || e.contains("past [train] steps"), "{o}{e}");
    assert!(!ck.join(".tmp-step-7-99999").exists());
    assert!(!ck.join("step-999999").exists());
    assert!(!lock.exists(), "the lock is released at the end");
}
