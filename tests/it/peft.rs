//! LoRA and DoRA against peft: adapters read with `init_from` give peft's logits, merging
//! gives `merge_and_unload()`'s, and `pzt export --peft / --hf` write what peft and
//! transformers read (compared with the adapters and logits peft made).
use crate::common::finetune::*;
use crate::common::tmpdir;
use crate::common::*;
use pzt::prelude::*;
use pzt::recipe::plan::Plan;
use pzt::recipe::Recipe;
use tch::Tensor;

#[test]
fn init_from_peft_adapters_gives_peft_logits_and_merges_like_peft() {
    for case in ["lora", "dora"] {
        let d = tmpdir("finetune", &format!("init-{case}"));
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
    let d = tmpdir("finetune", "neox");
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
    let d = tmpdir("finetune", "eval-init");
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
    let d2 = tmpdir("finetune", "eval-base");
    let base = loss(&lora_recipe(&d2, &base_dir(), 10, ""));
    assert!(
        (adapted - base).abs() > 1e-3,
        "the adapter changes the model: {adapted} vs {base}"
    );
    let (code, _, e) = run_pzt(&["eval", with.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(e.contains("--no-checkpoint"), "{e}");
}

/// A copy of the lora fixture adapter in `dir`, its config and tensors edited.
fn edited_adapter(
    dir: &std::path::Path,
    config: impl FnOnce(&mut serde_json::Value),
    tensors: impl FnOnce(&mut Vec<(String, Tensor)>),
) -> std::path::PathBuf {
    let src = root().join("tests/fixtures/peft/lora");
    std::fs::create_dir_all(dir).unwrap();
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    config(&mut c);
    std::fs::write(dir.join("adapter_config.json"), c.to_string()).unwrap();
    let mut ts = Tensor::read_safetensors(src.join("adapter_model.safetensors")).unwrap();
    tensors(&mut ts);
    Tensor::write_safetensors(&ts, dir.join("adapter_model.safetensors")).unwrap();
    dir.to_path_buf()
}

fn init_recipe(d: &std::path::Path, adapter: &std::path::Path) -> std::path::PathBuf {
    write(
        d,
        &format!(
            "{}.toml",
            adapter.file_name().unwrap().to_string_lossy()
        ),
        &format!(
            "[model]\nhf = \"{}\"\n[strategy]\nkind = \"lora\"\n[strategy.lora]\ninit_from = \"{}\"\n",
            base_dir().display(),
            adapter.display()
        ),
    )
}

fn logits_of_recipe(f: &std::path::Path, x: &NamedTensor) -> Tensor {
    let tree = Plan::build(
        Recipe::load(f, &[]).unwrap(),
        &pzt::builtin_registry(),
        &Builder::new(0),
    )
    .unwrap()
    .tree;
    tch::no_grad(|| tree.forward(x.clone(), &SideInputs::new()))
        .unwrap()
        .into_tensor()
        .unwrap()
        .tensor()
        .shallow_clone()
}

#[test]
fn peft_adapters_are_read_as_peft_reads_them_or_refused() {
    let d = tmpdir("finetune", "peft-edges");
    let r = reference("lora");
    let x = NamedTensor::wrap(r["tokens"].shallow_clone(), &["batch", "seq"]).unwrap();
    // No `lora_alpha`: peft's default, 8 (the fixture's value), gives the same logits.
    let a = edited_adapter(
        &d.join("no-alpha"),
        |c| {
            c.as_object_mut().unwrap().remove("lora_alpha");
        },
        |_| {},
    );
    let got = logits_of_recipe(&init_recipe(&d, &a), &x);
    assert!(max_abs_diff(&got, &r["logits"]) <= 1e-4);
    // `exclude_modules`: the excluded module gets no adapter (peft writes no tensors for it),
    // which computes what the adapter with that module's update zeroed computes.
    let q0 = "base_model.model.model.layers.0.self_attn.q_proj";
    let ex = edited_adapter(
        &d.join("exclude"),
        |c| c["exclude_modules"] = serde_json::json!(["model.layers.0.self_attn.q_proj"]),
        |ts| ts.retain(|(k, _)| !k.starts_with(q0)),
    );
    let zero = edited_adapter(
        &d.join("zeroed"),
        |_| {},
        |ts| {
            for (k, t) in ts.iter_mut() {
                if k.starts_with(q0) && k.contains("lora_B") {
                    *t = t.zeros_like();
                }
            }
        },
    );
    let fe = init_recipe(&d, &ex);
    let (code, o, e) = run_pzt(&["select", fe.to_str().unwrap(), "LowRankAdapter"]);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("7 matches"), "{o}");
    let (le, lz) = (
        logits_of_recipe(&fe, &x),
        logits_of_recipe(&init_recipe(&d, &zero), &x),
    );
    assert!(max_abs_diff(&le, &lz) <= 1e-6);
    assert!(
        max_abs_diff(&le, &r["logits"]) > 1e-4,
        "the exclusion changed nothing"
    );
    // Tensors of the right size in another layout, dtype or with NaN: refused naming them.
    let k = format!("{q0}.lora_A.weight");
    type Edit = Box<dyn Fn(&Tensor) -> Tensor>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "transposed",
            Box::new(|t: &Tensor| t.tr().contiguous()),
            "peft stores it as [4, 32]",
        ),
        (
            "three-d",
            Box::new(|t: &Tensor| t.reshape([4, 4, 8])),
            "peft stores it as [4, 32]",
        ),
        (
            "nan",
            Box::new(|t: &Tensor| t.fill(f64::NAN)),
            "NaN or infinite",
        ),
        (
            "int",
            Box::new(|t: &Tensor| t.to_kind(tch::Kind::Int64)),
            "floating point",
        ),
    ];
    for (name, edit, want) in cases {
        let a = edited_adapter(
            &d.join(name),
            |_| {},
            |ts| {
                for (key, t) in ts.iter_mut() {
                    if *key == k {
                        *t = edit(t);
                    }
                }
            },
        );
        let f = init_recipe(&d, &a);
        let (code, o, e) = run_pzt(&["plan", f.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {o}{e}");
        assert!(e.contains(want) && e.contains(&k), "{name}: {e}");
    }
}
