//! Pretrained-model parity: logits of pzt's trees match HF `transformers` (float32, max abs
//! error 1e-4) on tiny random checkpoints made by tests/fixtures/make_hf_fixtures.py.
use crate::common::pzt;
use pzt::named::NamedTensor;
use pzt::tree::SideInputs;
use std::path::{Path, PathBuf};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(case)
}

pub const CASES: [&str; 30] = [
    "gemma-geglu-exact",
    "llama-gqa",
    "llama3-tied-bias",
    "llama-linear-mqa",
    "mistral-sliding",
    "gemma",
    "gemma2",
    "gemma3",
    "neox-parallel",
    "neox-serial",
    "neox-odd-rotary",
    "qwen2-tied-sliding",
    "qwen3",
    "starcoder2",
    "granite",
    "smollm3",
    "qwen3-yarn",
    "llama-yarn-mscale",
    "gemma3-multimodal",
    "olmo2",
    "phi3",
    "phi4-mini-longrope",
    "glm4",
    "llama-dynamic",
    "qwen3-moe",
    "mixtral",
    "gpt-oss",
    "phi",
    "cohere",
    "gpt-oss-mxfp4",
];

fn reference(case: &str) -> (tch::Tensor, tch::Tensor) {
    let r = tch::Tensor::read_safetensors(fixture(case).join("reference.safetensors")).unwrap();
    let get = |k: &str| r.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
    (get("tokens"), get("logits"))
}

#[test]
fn logits_match_transformers() {
    let mut report = vec![];
    for case in CASES {
        let m = pzt::models::hf::load(&fixture(case), None, tch::Device::Cpu)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let (tokens, want) = reference(case);
        let x = NamedTensor::wrap(tokens, &["batch", "seq"]).unwrap();
        let y = m
            .tree
            .forward(x, &SideInputs::new())
            .unwrap_or_else(|e| panic!("{case}: {e}"))
            .into_tensor()
            .unwrap();
        let got = y
            .with_name_order(&["batch".into(), "seq".into(), "vocab".into()])
            .unwrap();
        let err = (got.tensor() - &want).abs().max().double_value(&[]);
        report.push(format!("{case}: {err:.2e}"));
        assert!(
            err < 1e-4,
            "{case}: max abs error {err}\n{}",
            report.join("\n")
        );
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn generate_picks_transformers_greedy_tokens() {
    let mut checked = 0;
    for case in CASES {
        let r = tch::Tensor::read_safetensors(fixture(case).join("reference.safetensors")).unwrap();
        let Some((_, greedy)) = r.iter().find(|(n, _)| n == "greedy") else {
            continue;
        };
        let want: Vec<i64> = Vec::try_from(greedy.get(0)).unwrap();
        let (tokens, _) = reference(case);
        let prompt: Vec<i64> = Vec::try_from(tokens.get(0).narrow(0, 0, 5)).unwrap();
        let prompt: Vec<String> = prompt.iter().map(|i| i.to_string()).collect();
        for cache in [true, false] {
            let mut args = vec![
                "generate".to_string(),
                fixture(case).display().to_string(),
                "--tokens".into(),
                prompt.join(" "),
                "--max-new-tokens".into(),
                want.len().to_string(),
            ];
            if !cache {
                args.push("--no-cache".into());
            }
            let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
            let o = pzt(&args);
            assert!(
                o.status.success(),
                "{case}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let got: Vec<i64> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(|t| t.parse().unwrap())
                .collect();
            assert_eq!(got, want, "{case} (cache {cache})");
        }
        checked += 1;
    }
    assert!(checked >= 2, "no fixture has a greedy reference");
}

#[test]
fn greedy_with_kv_cache_equals_recomputing() {
    use pzt::layers::kv_cache::with_kv_cache;
    use pzt::models::generate::{generate, logits, LmAxes, Sampling};
    for case in [
        "llama-gqa",
        "mistral-sliding",
        "gemma2",
        "gemma3",
        "neox-parallel",
        "qwen2-tied-sliding",
        "qwen3",
        "starcoder2",
        "granite",
        "smollm3",
        "phi",
        "cohere",
    ] {
        let m = pzt::models::hf::load(&fixture(case), None, tch::Device::Cpu).unwrap();
        let (tokens, _) = reference(case);
        let prompt: Vec<i64> = Vec::try_from(tokens.get(0).narrow(0, 0, 5)).unwrap();
        let ax = LmAxes::default();
        let s = Sampling::default();
        let a = generate(
            &m.tree,
            &prompt,
            10,
            &[],
            &s,
            &ax,
            tch::Device::Cpu,
            true,
            |_| {},
        )
        .unwrap();
        let b = generate(
            &m.tree,
            &prompt,
            10,
            &[],
            &s,
            &ax,
            tch::Device::Cpu,
            false,
            |_| {},
        )
        .unwrap();
        assert_eq!(a, b, "{case}");
        assert_eq!(a.len(), 10);
        // The cached model's logits for the prompt equal the plain model's.
        let cached = with_kv_cache(&m.tree).unwrap();
        assert_eq!(
            pzt::tree::select(&cached)
                .at_instances_of("KVCache")
                .count(),
            2 * m.arch.decoder.layers.len()
        );
        let l1 = logits(&cached, &prompt, &ax, tch::Device::Cpu).unwrap();
        let l2 = logits(&m.tree, &prompt, &ax, tch::Device::Cpu).unwrap();
        assert!((l1 - l2).abs().max().double_value(&[]) < 1e-5, "{case}");
        // Sampling is reproducible from the seed.
        let t = Sampling {
            temperature: 0.8,
            top_k: Some(20),
            top_p: Some(0.9),
            seed: 7,
        };
        let x = generate(
            &m.tree,
            &prompt,
            6,
            &[],
            &t,
            &ax,
            tch::Device::Cpu,
            true,
            |_| {},
        )
        .unwrap();
        let y = generate(
            &m.tree,
            &prompt,
            6,
            &[],
            &t,
            &ax,
            tch::Device::Cpu,
            true,
            |_| {},
        )
        .unwrap();
        assert_eq!(x, y, "{case}");
    }
}

#[test]
fn unsupported_configs_fail_loudly() {
    let dir = std::env::temp_dir().join(format!("pzt-hf-bad-{}", std::process::id()));
    let base = std::fs::read_to_string(fixture("llama-gqa").join("config.json")).unwrap();
    let cases = [
        (
            "\"model_type\": \"llama\"",
            "\"model_type\": \"falcon\"",
            "model_type `falcon` is not supported",
        ),
        (
            "\"rope_type\": \"default\"",
            "\"rope_type\": \"proportional\"",
            "rope_type `proportional` is not supported",
        ),
        (
            "\"hidden_act\": \"silu\"",
            "\"hidden_act\": \"silu\", \"sliding_window_size\": 3",
            "`sliding_window_size` = 3 is not supported",
        ),
        (
            "\"pretraining_tp\": 1",
            "\"pretraining_tp\": 2",
            "`pretraining_tp` = 2 is not supported",
        ),
        (
            "\"rope_type\": \"default\"",
            "\"rope_type\": \"default\", \"partial_rotary_factor\": 0.5",
            "partial_rotary_factor` = 0.5 is not supported",
        ),
        (
            "\"hidden_act\": \"silu\"",
            "\"hidden_act\": \"mish\"",
            "`hidden_act` = \"mish\" is not supported",
        ),
    ];
    for (i, (from, to, want)) in cases.iter().enumerate() {
        assert!(base.contains(from), "{from}");
        let d = dir.join(i.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), base.replace(from, to)).unwrap();
        std::fs::copy(
            fixture("llama-gqa").join("model.safetensors"),
            d.join("model.safetensors"),
        )
        .unwrap();
        let e = pzt::models::hf::load(&d, None, tch::Device::Cpu)
            .err()
            .unwrap_or_else(|| panic!("case {i} loaded"))
            .to_string();
        assert!(e.contains(want), "case {i}: {e}");
    }
    // A tensor of the wrong shape is named with both shapes; a missing one is named.
    let d = dir.join("shape");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("config.json"),
        base.replace("\"intermediate_size\": 48", "\"intermediate_size\": 40"),
    )
    .unwrap();
    std::fs::copy(
        fixture("llama-gqa").join("model.safetensors"),
        d.join("model.safetensors"),
    )
    .unwrap();
    let e = pzt::models::hf::load(&d, None, tch::Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("model.layers.0.mlp.gate_proj.weight")
            && e.contains("[48, 32]")
            && e.contains("[40, 32]"),
        "{e}"
    );
}

fn read_logits(p: &Path) -> tch::Tensor {
    tch::Tensor::read_safetensors(p)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "logits")
        .unwrap()
        .1
}

#[test]
fn cli_logits_generate_and_export_round_trip() {
    let dir = std::env::temp_dir().join(format!("pzt-hf-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // pzt logits on an HF directory equals the transformers reference.
    for case in [
        "llama-gqa",
        "neox-serial",
        "gemma",
        "qwen2-tied-sliding",
        "qwen3",
        "starcoder2",
        "granite",
        "qwen3-moe",
        "mixtral",
        "gpt-oss",
    ] {
        let (tokens, want) = reference(case);
        let ids: Vec<i64> = Vec::try_from(tokens.get(0)).unwrap();
        let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let out = dir.join(format!("{case}.safetensors"));
        let o = pzt(&[
            "logits",
            fixture(case).to_str().unwrap(),
            "--tokens",
            &ids.join(" "),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = read_logits(&out);
        assert_eq!(got.size(), want.size());
        assert!((got - &want).abs().max().double_value(&[]) < 1e-4, "{case}");
        // Export and reload: the same logits (the exported directory also loads in
        // transformers with identical logits; checked with the fixture virtualenv).
        let ex = dir.join(format!("{case}-export"));
        let o = pzt(&[
            "export",
            fixture(case).to_str().unwrap(),
            "--hf",
            ex.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // The family's own layout: experts one by one (Qwen3-MoE, Mixtral), or together and
        // interleaved (gpt-oss), as transformers writes them.
        let names = |d: &Path| -> Vec<(String, Vec<i64>)> {
            let mut v: Vec<(String, Vec<i64>)> =
                tch::Tensor::read_safetensors(d.join("model.safetensors"))
                    .unwrap()
                    .into_iter()
                    .map(|(n, t)| (n, t.size()))
                    .collect();
            v.sort();
            v
        };
        if ["qwen3-moe", "mixtral", "gpt-oss"].contains(&case) {
            assert_eq!(names(&ex), names(&fixture(case)), "{case}");
        }
        let out2 = dir.join(format!("{case}-2.safetensors"));
        assert!(pzt(&[
            "logits",
            ex.to_str().unwrap(),
            "--tokens",
            &ids.join(" "),
            "--out",
            out2.to_str().unwrap()
        ])
        .status
        .success());
        assert!(
            (read_logits(&out2) - &want).abs().max().double_value(&[]) < 1e-4,
            "{case} export"
        );
    }
    // Top-5 printing, generation and bad input.
    let o = pzt(&[
        "logits",
        fixture("gemma2").to_str().unwrap(),
        "--tokens",
        "1 2 3",
    ]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);
    let o = pzt(&[
        "generate",
        fixture("gemma2").to_str().unwrap(),
        "--tokens",
        "5 6 7",
        "--max-new-tokens",
        "6",
    ]);
    let cached = String::from_utf8_lossy(&o.stdout).into_owned();
    let o2 = pzt(&[
        "generate",
        fixture("gemma2").to_str().unwrap(),
        "--tokens",
        "5 6 7",
        "--max-new-tokens",
        "6",
        "--no-cache",
    ]);
    assert_eq!(cached, String::from_utf8_lossy(&o2.stdout));
    assert_eq!(cached.split_whitespace().count(), 6);
    for args in [
        vec![
            "logits",
            fixture("gemma2").to_str().unwrap(),
            "--tokens",
            "1 999",
        ],
        vec!["logits", "/nonexistent", "--tokens", "1"],
        vec![
            "generate",
            fixture("gemma2").to_str().unwrap(),
            "--prompt",
            "hi",
        ],
    ] {
        let o = pzt(&args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn fine_tune_a_pretrained_model_from_a_recipe_then_export() {
    let dir = std::env::temp_dir().join(format!("pzt-hf-ft-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let recipe = dir.join("ft.toml");
    std::fs::write(&recipe, format!(
        "[run]\nname = \"ft\"\nout_dir = \"{}\"\n[model]\nhf = \"{}\"\ninput = {{ axes = {{ batch = 4, seq = 8 }}, dtype = \"int64\" }}\n[data]\nsource = \"text\"\nfiles = [\"{}\"]\ntokenizer = \"{}\"\nseq_len = 8\n[train]\nsteps = 5\nbatch_size = 4\n[optim]\nlr = 1e-2\n",
        dir.join("run").display(), fixture("llama-gqa").display(), fx.join("tiny.txt").display(), fx.join("wordlevel-tokenizer.json").display()
    )).unwrap();
    let o = pzt(&["plan", recipe.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("21,664 total"));
    let o = pzt(&["train", recipe.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ck = dir.join("run/checkpoints/step-5");
    let a = dir.join("a.safetensors");
    assert!(pzt(&[
        "logits",
        ck.to_str().unwrap(),
        "--tokens",
        "2 3 4 5",
        "--out",
        a.to_str().unwrap()
    ])
    .status
    .success());
    let ex = dir.join("export");
    let o = pzt(&["export", ck.to_str().unwrap(), "--hf", ex.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = dir.join("b.safetensors");
    assert!(pzt(&[
        "logits",
        ex.to_str().unwrap(),
        "--tokens",
        "2 3 4 5",
        "--out",
        b.to_str().unwrap()
    ])
    .status
    .success());
    let (la, lb) = (read_logits(&a), read_logits(&b));
    assert!((&la - &lb).abs().max().double_value(&[]) < 1e-5);
    // Training changed the model.
    let base = dir.join("base.safetensors");
    assert!(pzt(&[
        "logits",
        fixture("llama-gqa").to_str().unwrap(),
        "--tokens",
        "2 3 4 5",
        "--out",
        base.to_str().unwrap()
    ])
    .status
    .success());
    assert!((la - read_logits(&base)).abs().max().double_value(&[]) > 1e-3);
    // A patched model cannot be written in the HF layout: refused, not silently dropped.
    let patched = dir.join("patched.toml");
    let text = std::fs::read_to_string(&recipe)
        .unwrap()
        .replace("[data]", "[[patch]]\nselect = \"lm_head\"\naction = \"wrap\"\nwith = { type = \"Sequential\", layers = [{ type = \"TanhSoftCap\", cap = 5.0 }] }\n\n[data]")
        .replace(&dir.join("run").display().to_string(), &dir.join("run2").display().to_string());
    std::fs::write(&patched, text).unwrap();
    assert!(pzt(&["train", patched.to_str().unwrap()]).status.success());
    let o = pzt(&[
        "export",
        dir.join("run2/checkpoints/step-5").to_str().unwrap(),
        "--hf",
        dir.join("export2").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("structure differs"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Exporting over a non-empty directory is refused.
    assert_eq!(
        pzt(&["export", ck.to_str().unwrap(), "--hf", ex.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn sharded_checkpoints_load() {
    let dir = std::env::temp_dir().join(format!("pzt-hf-shards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("llama-gqa").join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let all =
        tch::Tensor::read_safetensors(fixture("llama-gqa").join("model.safetensors")).unwrap();
    let (a, b): (Vec<_>, Vec<_>) = all.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let mut map = serde_json::Map::new();
    for (name, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let ts: Vec<(String, tch::Tensor)> = part.into_iter().map(|(_, t)| t).collect();
        for (k, _) in &ts {
            map.insert(k.clone(), serde_json::Value::String(name.into()));
        }
        tch::Tensor::write_safetensors(&ts, dir.join(name)).unwrap();
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({ "metadata": {}, "weight_map": map }).to_string(),
    )
    .unwrap();
    let m = pzt::models::hf::load(&dir, None, tch::Device::Cpu).unwrap();
    let (tokens, want) = reference("llama-gqa");
    let ids: Vec<i64> = Vec::try_from(tokens.get(0)).unwrap();
    let got = pzt::models::generate::logits(&m.tree, &ids, &Default::default(), tch::Device::Cpu)
        .unwrap();
    assert!((got - want.get(0)).abs().max().double_value(&[]) < 1e-4);
    // Converted on request.
    let m = pzt::models::hf::load(&dir, Some(tch::Kind::BFloat16), tch::Device::Cpu).unwrap();
    assert!(m
        .tree
        .parameters()
        .iter()
        .all(|p| p.kind() == tch::Kind::BFloat16));
}

#[test]
fn generation_stops_at_eos() {
    use pzt::models::generate::{generate, Sampling};
    let m = pzt::models::hf::load(&fixture("llama-gqa"), None, tch::Device::Cpu).unwrap();
    let s = Sampling::default();
    let free = generate(
        &m.tree,
        &[3, 4, 5],
        6,
        &[],
        &s,
        &Default::default(),
        tch::Device::Cpu,
        true,
        |_| {},
    )
    .unwrap();
    let stopped = generate(
        &m.tree,
        &[3, 4, 5],
        6,
        &[free[1]],
        &s,
        &Default::default(),
        tch::Device::Cpu,
        true,
        |_| {},
    )
    .unwrap();
    let first = free.iter().position(|t| *t == free[1]).unwrap();
    assert_eq!(stopped, free[..=first].to_vec());
    // Streaming: every token is emitted as it is picked.
    let mut seen = vec![];
    let out = generate(
        &m.tree,
        &[3, 4, 5],
        4,
        &[],
        &s,
        &Default::default(),
        tch::Device::Cpu,
        true,
        |t| seen.push(t),
    )
    .unwrap();
    assert_eq!(seen, out);
}

#[test]
fn logits_of_a_recipe_and_text_input() {
    let o = pzt(&[
        "logits",
        "recipes/quickstart.toml",
        "--text",
        "12+34=",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8_lossy(&o.stdout);
    assert_eq!(s.lines().count(), 6, "{s}");
    assert!(s.lines().next().unwrap().contains("\"1\""), "{s}");
}

#[test]
fn older_config_layouts_load() {
    // GPT-NeoX with rotary_pct / rotary_emb_base and Gemma 3 with rope_theta +
    // rope_local_base_freq + sliding_window_pattern: the same numbers as the newer layout.
    let dir = std::env::temp_dir().join(format!("pzt-hf-old-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for case in ["neox-serial", "gemma3"] {
        let d = dir.join(case);
        std::fs::create_dir_all(&d).unwrap();
        let mut c: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(case).join("config.json")).unwrap(),
        )
        .unwrap();
        let m = c.as_object_mut().unwrap();
        let rp = m.remove("rope_parameters").unwrap();
        let dt = m.remove("dtype").unwrap();
        m.insert("torch_dtype".into(), dt);
        if case == "neox-serial" {
            m.insert("rotary_pct".into(), rp["partial_rotary_factor"].clone());
            m.insert("rotary_emb_base".into(), rp["rope_theta"].clone());
        } else {
            m.insert(
                "rope_theta".into(),
                rp["full_attention"]["rope_theta"].clone(),
            );
            m.insert(
                "rope_local_base_freq".into(),
                rp["sliding_attention"]["rope_theta"].clone(),
            );
            // 3 layers: sliding, full, sliding is not expressible as a pattern; keep layer_types.
        }
        std::fs::write(
            d.join("config.json"),
            serde_json::to_string_pretty(&c).unwrap(),
        )
        .unwrap();
        std::fs::copy(
            fixture(case).join("model.safetensors"),
            d.join("model.safetensors"),
        )
        .unwrap();
        let model = pzt::models::hf::load(&d, None, tch::Device::Cpu)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let (tokens, want) = reference(case);
        let ids: Vec<i64> = Vec::try_from(tokens.get(0)).unwrap();
        let got =
            pzt::models::generate::logits(&model.tree, &ids, &Default::default(), tch::Device::Cpu)
                .unwrap();
        assert!(
            (got - want.get(0)).abs().max().double_value(&[]) < 1e-4,
            "{case}"
        );
    }
}

/// The `loss` of each logged step of a run.
fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["loss"].as_f64())
        .collect()
}

#[test]
fn newer_families_fine_tune_fully_and_with_lora() {
    let dir = std::env::temp_dir().join(format!("pzt-hf-families-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for case in [
        "qwen2-tied-sliding",
        "qwen3",
        "starcoder2",
        "granite",
        "smollm3",
        "olmo2",
        "phi3",
        "glm4",
        "qwen3-moe",
        "mixtral",
        "gpt-oss",
        "phi",
        "cohere",
    ] {
        for (kind, strategy, lr) in [
            ("full", "", "1e-2"),
            (
                "lora",
                "[strategy]\nkind = \"lora\"\n[strategy.lora]\ntargets = TARGETS\nrank = 4\nalpha = 8.0\n",
                "1e-1",
            ),
        ] {
            // Phi-3 fuses its query, key and value projections into one module.
            let targets = match case {
                "phi3" => "[\"qkv_proj\"]",
                // Phi-2 names its attention output `dense`, Cohere `o_proj`.
                "phi" => "[\"q_proj\", \"dense\"]",
                "cohere" => "[\"k_proj\", \"o_proj\"]",
                _ => "[\"q_proj\", \"v_proj\"]",
            };
            let strategy = strategy.replace("TARGETS", targets);
            let run = dir.join(format!("{case}-{kind}"));
            let recipe = dir.join(format!("{case}-{kind}.toml"));
            std::fs::write(&recipe, format!(
                "[run]\nname = \"ft\"\nout_dir = \"{}\"\n[model]\nhf = \"{}\"\n{strategy}[data]\nsource = \"text\"\nfiles = [\"{}\"]\ntokenizer = \"{}\"\nseq_len = 8\neval_fraction = 0.0\n[train]\nsteps = 40\nbatch_size = 4\nlog_every = 1\n[optim]\nlr = {lr}\n",
                run.display(), fixture(case).display(), fx.join("tiny.txt").display(), fx.join("wordlevel-tokenizer.json").display()
            )).unwrap();
            let o = pzt(&["train", recipe.to_str().unwrap()]);
            assert!(o.status.success(), "{case} {kind}: {}", String::from_utf8_lossy(&o.stderr));
            let l = losses(&run);
            let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
            let (first, last) = (mean(&l[..5]), mean(&l[l.len() - 5..]));
            assert!(last < first * 0.95, "{case} {kind}: loss {first} -> {last}");
            eprintln!("{case} {kind}: loss {first:.3} -> {last:.3}");
            // A mixture of experts logs its routers' load-balancing loss.
            let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
            let moe = ["qwen3-moe", "mixtral", "gpt-oss"].contains(&case);
            assert_eq!(metrics.contains("\"aux_loss\""), moe, "{case}: {metrics}");
            if kind == "lora" {
                // The adapter names the family's modules as peft does.
                let out = dir.join(format!("{case}-adapter"));
                let ck = run.join("checkpoints/step-40");
                let o = pzt(&["export", ck.to_str().unwrap(), "--peft", out.to_str().unwrap()]);
                assert!(o.status.success(), "{case}: {}", String::from_utf8_lossy(&o.stderr));
                let cfg = std::fs::read_to_string(out.join("adapter_config.json")).unwrap();
                let want: &[&str] = match case {
                    "phi3" => &["qkv_proj"],
                    "phi" => &["q_proj", "dense"],
                    "cohere" => &["k_proj", "o_proj"],
                    _ => &["q_proj", "v_proj"],
                };
                assert!(want.iter().all(|m| cfg.contains(m)), "{cfg}");
            }
        }
    }
}

#[test]
fn a_multimodal_gemma3_loads_its_language_model() {
    let dir = std::env::temp_dir().join(format!("pzt-hf-mm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mm = fixture("gemma3-multimodal");
    // The commands say that the vision tower is not used.
    let o = pzt(&["logits", mm.to_str().unwrap(), "--tokens", "1 2 3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("vision tower and projector (34 tensors) are not used"),
        "{err}"
    );
    // `export --hf` writes the language model as a text-only Gemma 3, with the same logits.
    let ex = dir.join("text");
    let o = pzt(&["export", mm.to_str().unwrap(), "--hf", ex.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg = std::fs::read_to_string(ex.join("config.json")).unwrap();
    assert!(
        cfg.contains("\"gemma3_text\"") && cfg.contains("Gemma3ForCausalLM"),
        "{cfg}"
    );
    let m = pzt::models::hf::load(&ex, None, tch::Device::Cpu).unwrap();
    assert!(!m.arch.multimodal && m.notes.is_empty());
    let (tokens, want) = reference("gemma3-multimodal");
    let x = NamedTensor::wrap(tokens, &["batch", "seq"]).unwrap();
    let y = m
        .tree
        .forward(x, &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    let got = y
        .with_name_order(&["batch".into(), "seq".into(), "vocab".into()])
        .unwrap();
    assert!((got.tensor() - &want).abs().max().double_value(&[]) < 1e-4);
    // A LoRA run on it trains; its adapter cannot be written for peft yet, and says so.
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let recipe = dir.join("lora.toml");
    std::fs::write(&recipe, format!(
        "[run]\nname = \"mm\"\nout_dir = \"{}\"\n[model]\nhf = \"{}\"\n[strategy]\nkind = \"lora\"\n[strategy.lora]\ntargets = [\"q_proj\", \"v_proj\"]\n[data]\nsource = \"text\"\nfiles = [\"{}\"]\ntokenizer = \"{}\"\nseq_len = 8\n[train]\nsteps = 2\nbatch_size = 2\n[optim]\nlr = 1e-2\n",
        dir.join("run").display(), mm.display(), fx.join("tiny.txt").display(), fx.join("wordlevel-tokenizer.json").display()
    )).unwrap();
    let o = pzt(&["train", recipe.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ck = dir.join("run/checkpoints/step-2");
    let o = pzt(&[
        "export",
        ck.to_str().unwrap(),
        "--peft",
        dir.join("adapter").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("multimodal"));
}

#[test]
fn moe_load_balancing_loss_matches_transformers() {
    use pzt::layers::moe::{collect_router_logits, load_balancing_loss};
    for case in ["qwen3-moe", "mixtral", "gpt-oss"] {
        let m = pzt::models::hf::load(&fixture(case), None, tch::Device::Cpu).unwrap();
        let r = tch::Tensor::read_safetensors(fixture(case).join("reference.safetensors")).unwrap();
        let get = |k: &str| r.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
        let x = NamedTensor::wrap(get("tokens"), &["batch", "seq"]).unwrap();
        let (y, routers) = collect_router_logits(|| m.tree.forward(x, &SideInputs::new()));
        y.unwrap();
        // Two routers each: Qwen3-MoE's fixture has three layers, the middle one dense
        // (`mlp_only_layers`); the others have two.
        assert_eq!(routers.len(), 2, "{case}");
        let got = load_balancing_loss(&routers, None)
            .unwrap()
            .unwrap()
            .double_value(&[]);
        let want = get("aux_loss").double_value(&[0]);
        eprintln!("{case}: aux_loss {got} vs transformers {want}");
        assert!((got - want).abs() < 1e-5, "{case}: {got} vs {want}");
        // Padding left out: a mask of ones gives the same loss.
        let ones = NamedTensor::wrap(
            tch::Tensor::ones([1, 12], (tch::Kind::Float, tch::Device::Cpu)),
            &["batch", "seq"],
        )
        .unwrap();
        let masked = load_balancing_loss(&routers, Some(&ones))
            .unwrap()
            .unwrap()
            .double_value(&[]);
        assert!((masked - got).abs() < 1e-6);
    }
}

#[test]
fn moe_settings_pzt_cannot_honour_are_refused() {
    let dir = std::env::temp_dir().join(format!("pzt-hf-moe-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cases = [
        (
            "mixtral",
            "\"router_jitter_noise\": 0.0",
            "\"router_jitter_noise\": 0.1",
            "router jitter",
        ),
        (
            "mixtral",
            "\"num_experts_per_tok\": 2",
            "\"num_experts_per_tok\": 5",
            "`num_experts_per_tok` = 5 must be 1 to the number of experts (4)",
        ),
        (
            "gpt-oss",
            "\"swiglu_limit\": 0.5",
            "\"swiglu_limit\": 0.5, \"quantization_config\": {\"quant_method\": \"bitsandbytes\"}",
            "`quantization_config.quant_method` = \"bitsandbytes\" is not supported",
        ),
        (
            "qwen3-moe",
            "\"mlp_only_layers\": [\n    1\n  ]",
            "\"mlp_only_layers\": \"1\"",
            "`mlp_only_layers` = \"1\" should be a list",
        ),
        // Eight experts asked for, four in the checkpoint.
        (
            "qwen3-moe",
            "\"num_local_experts\": 4",
            "\"num_local_experts\": 8",
            "`model.layers.0.mlp.gate.weight` has shape [4, 32], expected [8, 32]",
        ),
    ];
    for (i, (case, from, to, want)) in cases.iter().enumerate() {
        let base = std::fs::read_to_string(fixture(case).join("config.json")).unwrap();
        assert!(base.contains(from), "{case}: {from}");
        let d = dir.join(i.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), base.replace(from, to)).unwrap();
        std::fs::copy(
            fixture(case).join("model.safetensors"),
            d.join("model.safetensors"),
        )
        .unwrap();
        let o = pzt(&["logits", d.to_str().unwrap(), "--tokens", "1 2"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains(want), "case {i}: {err}");
    }
    // A router inside a checkpointed segment cannot get its load-balancing loss.
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let recipe = dir.join("ckpt.toml");
    let write = |extra: &str| {
        std::fs::write(&recipe, format!(
            "[run]\nname = \"ck\"\nout_dir = \"{}\"\n[model]\nhf = \"{}\"\n[strategy]\nkind = \"full\"\ncheckpoint_activations = \"blocks.*\"\n[data]\nsource = \"text\"\nfiles = [\"{}\"]\ntokenizer = \"{}\"\nseq_len = 8\neval_fraction = 0.0\n[train]\nsteps = 2\nbatch_size = 2\n{extra}[optim]\nlr = 1e-3\n",
            dir.join("ck-run").display(), fixture("mixtral").display(), fx.join("tiny.txt").display(), fx.join("wordlevel-tokenizer.json").display()
        )).unwrap();
    };
    write("");
    let o = pzt(&["train", recipe.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("inside an activation-checkpointed segment"),
        "{err}"
    );
    // With the loss off it trains.
    write("router_aux_loss_coef = 0.0\n");
    let o = pzt(&["train", recipe.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn phi2_residual_dropout_is_applied_in_training_only() {
    // microsoft/phi-2 says `resid_pdrop = 0.1`: dropout at the end of both branches.
    let d = std::env::temp_dir().join(format!("pzt-hf-phi-drop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let cfg = std::fs::read_to_string(fixture("phi").join("config.json")).unwrap();
    assert!(cfg.contains("\"resid_pdrop\": 0.0"));
    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"resid_pdrop\": 0.0", "\"resid_pdrop\": 0.1"),
    )
    .unwrap();
    std::fs::copy(
        fixture("phi").join("model.safetensors"),
        d.join("model.safetensors"),
    )
    .unwrap();
    let m = pzt::models::hf::load(&d, None, tch::Device::Cpu).unwrap();
    let mut drops = 0;
    m.tree
        .walk(&mut |_, n| drops += usize::from(n.kind() == "Dropout"));
    assert_eq!(drops, 4, "two branches in each of two layers");
    // Without a random stream (evaluation) the logits are transformers'.
    let (tokens, want) = reference("phi");
    let x = NamedTensor::wrap(tokens, &["batch", "seq"]).unwrap();
    let y = m
        .tree
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    let y = y
        .with_name_order(&["batch".into(), "seq".into(), "vocab".into()])
        .unwrap();
    assert!((y.tensor() - &want).abs().max().double_value(&[]) < 1e-4);
    // With one (training) the output changes.
    let side = SideInputs::new().with(
        "random_stream",
        pzt::tree::SideValue::Stream(pzt::params::RandomStream::new(3)),
    );
    let z = m.tree.forward(x, &side).unwrap().into_tensor().unwrap();
    let z = z
        .with_name_order(&["batch".into(), "seq".into(), "vocab".into()])
        .unwrap();
    assert!((z.tensor() - y.tensor()).abs().max().double_value(&[]) > 1e-3);
}

#[test]
fn an_mxfp4_gpt_oss_is_dequantized_on_load_and_exported_in_bf16_layout() {
    // The fixture's experts are in MXFP4, as openai ships gpt-oss; its reference logits are
    // transformers' on that checkpoint (logits_match_transformers checks pzt's).
    let case = fixture("gpt-oss-mxfp4");
    let o = pzt(&["logits", case.to_str().unwrap(), "--tokens", "1 2 3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("4 MXFP4 tensors dequantized to float32"),
        "{err}"
    );
    let dir = std::env::temp_dir().join(format!("pzt-hf-mxfp4-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = pzt(&[
        "export",
        case.to_str().unwrap(),
        "--hf",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(!cfg.contains("quantization_config"), "{cfg}");
    let names: Vec<String> = tch::Tensor::read_safetensors(dir.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"model.layers.0.mlp.experts.gate_up_proj".to_string()));
    assert!(!names
        .iter()
        .any(|n| n.ends_with("_blocks") || n.ends_with("_scales")));
    let (tokens, want) = reference("gpt-oss-mxfp4");
    let m = pzt::models::hf::load(&dir, None, tch::Device::Cpu).unwrap();
    let x = NamedTensor::wrap(tokens, &["batch", "seq"]).unwrap();
    let y = m
        .tree
        .forward(x, &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    let y = y
        .with_name_order(&["batch".into(), "seq".into(), "vocab".into()])
        .unwrap();
    assert!((y.tensor() - &want).abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn one_expert_is_reached_by_a_selector_captured_and_knocked_out() {
    let dir = std::env::temp_dir().join(format!("pzt-hf-expert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = fixture("mixtral");
    let model = model.to_str().unwrap();
    // `Experts > 2` reaches expert 2 of every layer.
    let o = pzt(&["select", model, "Experts > 2"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("blocks.1.mlp.delta.mlp.experts.2  Expert"),
        "{out}"
    );
    // Its capture holds what it computed for the tokens routed to it: one token here goes to
    // two of the four experts, so two captures are empty.
    let cap = dir.join("experts.safetensors");
    let o = pzt(&[
        "capture",
        model,
        "--select",
        "blocks.0.**.experts.*",
        "--tokens",
        "1",
        "--out",
        cap.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (arrays, _) = pzt::run::checkpoint::arrays::read(&cap).unwrap();
    assert_eq!(arrays.len(), 4);
    let tokens: Vec<i64> = arrays
        .iter()
        .map(|(_, a)| a.size_of("expert_tokens").unwrap())
        .collect();
    assert_eq!(tokens.iter().sum::<i64>(), 2, "{tokens:?}");
    // Knocked out by a patch (its output scaled by 0), it changes the logits.
    let recipe = dir.join("ko.toml");
    std::fs::write(&recipe, format!(
        "[model]\nhf = \"{model}\"\n\n[[patch]]\nselect = \"blocks.0.mlp.delta.mlp.experts.{}\"\naction = \"replace\"\nwith = {{ type = \"Rescale\", by = 0.0 }}\n",
        tokens.iter().position(|&n| n == 1).unwrap()
    )).unwrap();
    let logits = |m: &str| {
        let o = pzt(&["logits", m, "--tokens", "1"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_ne!(logits(recipe.to_str().unwrap()), logits(model));
}
