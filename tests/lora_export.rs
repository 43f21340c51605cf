//! LoRA and DoRA against peft: adapters read with `init_from` give peft's logits, merging
//! gives `merge_and_unload()`'s, and `pzt export --peft / --hf` write what peft and
//! transformers read (compared with the adapters and logits peft made).
mod common;
use common::finetune::*;
use common::*;
use pzt::prelude::*;
use pzt::recipe::plan::Plan;
use pzt::recipe::Recipe;
use tch::Tensor;

#[test]
fn init_from_peft_adapters_gives_peft_logits_and_merges_like_peft() {
    for case in ["lora", "dora"] {
        let d = tmpdir(&format!("init-{case}"));
        let f = write(
            &d,
            "r.toml",
            &format!(
                "[model]\nhf = \"{}\"\n[strategy]\nkind = \"lora\"\n[strategy.lora]\ninit_from = \"{}\"\n",
                base_dir().display(),
                root().join("tests/fixtures/peft").join(case).display()
            ),
        );
        let r = reference(case);
        let tree = Plan::build(
            Recipe::load(&f, &[]).unwrap(),
            &pzt::builtin_registry(),
            &Builder::new(0),
        )
        .unwrap()
        .tree;
        let x = NamedTensor::wrap(r["tokens"].shallow_clone(), &["batch", "seq"]).unwrap();
        let run = |t: &Node| {
            tch::no_grad(|| t.forward(x.clone(), &SideInputs::new()))
                .unwrap()
                .into_tensor()
                .unwrap()
                .tensor()
                .shallow_clone()
        };
        let d1 = max_abs_diff(&run(&tree), &r["logits"]);
        assert!(d1 <= 1e-4, "{case}: PeftModel logits differ by {d1}");
        let merged = pzt::layers::toolshed::merge_adapters(&tree).unwrap();
        let d2 = max_abs_diff(&run(&merged), &r["merged_logits"]);
        assert!(d2 <= 1e-4, "{case}: merge_and_unload logits differ by {d2}");

        // Export both ways from the recipe: the PEFT adapter holds peft's tensors, the merged
        // model gives peft's merged logits, and both carry the tokenizer.
        let (peft, hf) = (d.join("peft"), d.join("hf"));
        for (flag, out) in [("--peft", &peft), ("--hf", &hf)] {
            let (code, o, e) =
                run_pzt(&["export", f.to_str().unwrap(), flag, out.to_str().unwrap()]);
            assert_eq!(code, 0, "{o}{e}");
            assert!(out.join("tokenizer.json").is_file(), "{flag}: no tokenizer");
        }
        let ours: std::collections::BTreeMap<String, Tensor> =
            Tensor::read_safetensors(peft.join("adapter_model.safetensors"))
                .unwrap()
                .into_iter()
                .collect();
        let theirs = Tensor::read_safetensors(root().join(format!(
            "tests/fixtures/peft/{case}/adapter_model.safetensors"
        )))
        .unwrap();
        assert_eq!(ours.len(), theirs.len(), "{case}: tensor count");
        for (name, t) in &theirs {
            let o = ours
                .get(name)
                .unwrap_or_else(|| panic!("{case}: no {name}"));
            assert_eq!(o.size(), t.size(), "{name}");
            assert!(max_abs_diff(o, t) <= 1e-6, "{name}");
        }
        let ours: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(peft.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        let theirs: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                root().join(format!("tests/fixtures/peft/{case}/adapter_config.json")),
            )
            .unwrap(),
        )
        .unwrap();
        for k in ["r", "use_dora", "peft_type"] {
            assert_eq!(ours[k], theirs[k], "{k}");
        }
        assert_eq!(ours["lora_alpha"].as_f64(), theirs["lora_alpha"].as_f64());
        let set = |v: &serde_json::Value| {
            let mut s: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            s.sort();
            s
        };
        assert_eq!(set(&ours["target_modules"]), set(&theirs["target_modules"]));
        let l = logits_of(&hf, &tokens_of(&r["tokens"]), &d);
        let d3 = max_abs_diff(&l, &r["merged_logits"]);
        assert!(d3 <= 1e-4, "{case}: exported merged model differs by {d3}");
    }
}

#[test]
fn neox_fused_query_key_value_is_a_target_and_merges_but_is_no_peft_module() {
    let d = tmpdir("neox");
    let f = write(
        &d,
        "n.toml",
        &format!(
            "[model]\nhf = \"{}\"\n[strategy]\nkind = \"lora\"\n[strategy.lora]\ntargets = [\"query_key_value\", \"dense_4h_to_h\"]\n",
            root().join("tests/fixtures/hf/neox-parallel").display()
        ),
    );
    let (code, o, e) = run_pzt(&["select", f.to_str().unwrap(), "LowRankAdapter"]);
    assert_eq!(code, 0, "{e}");
    // q, k, v and the MLP's down projection in 2 layers.
    assert!(o.contains("8 matches"), "{o}");
    let (code, _, e) = run_pzt(&[
        "export",
        f.to_str().unwrap(),
        "--peft",
        d.join("p").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(e.contains("fused `query_key_value`"), "{e}");
    assert!(!d.join("p").exists(), "a refused export writes nothing");
    let (code, o, e) = run_pzt(&[
        "export",
        f.to_str().unwrap(),
        "--hf",
        d.join("h").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    // --dtype float64: F64 tensors, and config.json says so.
    let h64 = d.join("h64");
    let (code, o, e) = run_pzt(&[
        "export",
        f.to_str().unwrap(),
        "--hf",
        h64.to_str().unwrap(),
        "--dtype",
        "float64",
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let cfg = std::fs::read_to_string(h64.join("config.json")).unwrap();
    assert!(
        cfg.contains("\"float64\"") && !cfg.contains("\"float32\""),
        "{cfg}"
    );
    let ts = Tensor::read_safetensors(h64.join("model.safetensors")).unwrap();
    assert!(ts.iter().all(|(_, t)| t.kind() == tch::Kind::Double));
    // Onto an existing file: refused, the file untouched.
    let file = d.join("a-file");
    std::fs::write(&file, "keep").unwrap();
    let (code, _, e) = run_pzt(&[
        "export",
        f.to_str().unwrap(),
        "--hf",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("exists and is not a directory"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
}

#[test]
fn eval_without_a_checkpoint_scores_the_peft_adapter_as_loaded() {
    let d = tmpdir("eval-init");
    let adapter = root().join("tests/fixtures/peft/lora");
    let extra = format!(
        "[strategy]\nkind = \"lora\"\n[strategy.lora]\ninit_from = \"{}\"\n",
        adapter.display()
    );
    let with = lora_recipe(&d, &base_dir(), 10, &extra);
    let loss = |f: &std::path::Path| {
        let (code, o, e) = run_pzt(&["eval", f.to_str().unwrap(), "--no-checkpoint", "--json"]);
        assert_eq!(code, 0, "{o}{e}");
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        assert!(v["checkpoint"].is_null());
        v["metrics"]["eval.loss"].as_f64().unwrap()
    };
    let adapted = loss(&with);
    let d2 = tmpdir("eval-base");
    let base = loss(&lora_recipe(&d2, &base_dir(), 10, ""));
    assert!(
        (adapted - base).abs() > 1e-3,
        "the adapter changes the model: {adapted} vs {base}"
    );
    let (code, _, e) = run_pzt(&["eval", with.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(e.contains("--no-checkpoint"), "{e}");
}
