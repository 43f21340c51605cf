//! QLoRA (`[strategy] quantize`): a base quantized as NF4 is torchao's bit for bit (the
//! references of tests/fixtures/make_quant_fixtures.py), a QLoRA run trains, resumes exactly and
//! exports, and mistakes exit 2.
use crate::common::*;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A LoRA recipe over `model` (a fixture directory) with `strategy` lines added to
/// `[strategy]`, on tiny.txt.
fn recipe(dir: &Path, name: &str, model: &str, strategy: &str, optim: &str) -> PathBuf {
    let f = dir.join(format!("{name}.toml"));
    std::fs::write(
        &f,
        format!(
            "[run]\nname = \"{name}\"\nout_dir = \"{out}\"\n[model]\nhf = \"{m}\"\n[data]\nsource = \"text\"\nfiles = [\"{t}\"]\nseq_len = 32\neval_fraction = 0.0\n[strategy]\nkind = \"lora\"\n{strategy}\n[strategy.lora]\ntargets = [\"q_proj\", \"v_proj\"]\nrank = 4\n[train]\nsteps = 4\nbatch_size = 2\nlog_every = 1\nthreads = 1\n[optim]\n{optim}\n",
            out = dir.join(name).display(),
            m = fixtures().join("hf").join(model).display(),
            t = fixtures().join("tiny.txt").display(),
        ),
    )
    .unwrap();
    f
}

/// A QLoRA (NF4) run of one step whose adapters the learning rate (1e-30) leaves about zero,
/// in `d/q`: its checkpoint.
fn untrained_nf4_run(d: &Path) -> PathBuf {
    let f = recipe(d, "q", "qlora-tiny", "quantize = \"nf4\"", "lr = 1e-30");
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap(), "--set", "train.steps=1"]);
    assert_eq!(code, 0, "{o}{e}");
    d.join("q/checkpoints/step-1")
}

/// torchao's dequantized NF4 weight `key` of the qlora-tiny fixture (`layers.L.P.dequantized`).
fn torchao_weight(key: &str) -> tch::Tensor {
    let all =
        tch::Tensor::read_safetensors(fixtures().join("hf/qlora-tiny/nf4-reference.safetensors"))
            .unwrap();
    all.into_iter().find(|(n, _)| n == key).unwrap().1
}

/// The base of a QLoRA run, exported merged while its adapters are still (about) zero (AdamW at
/// a learning rate too small to move them: about 1e-30), holds torchao's NF4 weights: every
/// value bit for bit, but those at NF4's zero level, which the adapters' 1e-30 moves off 0.
#[test]
fn an_nf4_base_is_torchaos_bit_for_bit() {
    use tch::Tensor;
    let d = tmpdir("qlora", "torchao");
    let ckpt = untrained_nf4_run(&d);
    let out = d.join("merged");
    let (code, o, e) = run_pzt(&[
        "export",
        ckpt.to_str().unwrap(),
        "--hf",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let got = Tensor::read_safetensors(out.join("model.safetensors")).unwrap();
    // Every projection of both layers: q and k (which RoPE reads) are quantized in the
    // checkpoint's row order too.
    let mut pairs = vec![];
    for layer in 0..2 {
        for (module, proj) in [
            ("self_attn", "q_proj"),
            ("self_attn", "k_proj"),
            ("self_attn", "v_proj"),
            ("self_attn", "o_proj"),
            ("mlp", "gate_proj"),
            ("mlp", "up_proj"),
            ("mlp", "down_proj"),
        ] {
            pairs.push((
                format!("model.layers.{layer}.{module}.{proj}.weight"),
                format!("layers.{layer}.{proj}.dequantized"),
            ));
        }
    }
    for (name, key) in &pairs {
        let g = &got.iter().find(|(n, _)| n == name).unwrap().1;
        let w = &torchao_weight(key);
        // Equal but for the adapters' product, some 1e-30 (NF4's zero level shows it).
        let diff = (g - w).abs().max().double_value(&[]);
        assert!(diff < 1e-20, "{name} differs from torchao's NF4 by {diff}");
        let at_zero = w.eq(0.0).logical_and(&g.abs().lt(1e-20));
        let ok = g.eq_tensor(w).logical_or(&at_zero);
        assert!(bool::try_from(ok.all()).unwrap(), "{name}");
    }
}

/// A QLoRA run (NF4 and int8) trains, and one stopped after 2 steps and resumed ends with the
/// adapters of the run that went straight to 4.
#[test]
fn a_qlora_run_trains_and_resumes_exactly() {
    let d = tmpdir("qlora", "resume");
    for format in ["nf4", "int8"] {
        let q = format!("quantize = \"{format}\"");
        let (a, b) = (format!("{format}-straight"), format!("{format}-resumed"));
        let fa = recipe(&d, &a, "qlora-tiny", &q, "lr = 1e-2");
        let fb = recipe(&d, &b, "qlora-tiny", &q, "lr = 1e-2");
        let run = |f: &Path, steps: &str| {
            let (code, o, e) = run_pzt(&["train", f.to_str().unwrap(), "--set", steps]);
            assert_eq!(code, 0, "{o}{e}");
        };
        run(&fa, "train.steps=4");
        run(&fb, "train.steps=2");
        run(&fb, "train.steps=4");
        let model = |n: &str| {
            std::fs::read(d.join(n).join("checkpoints/step-4/model.safetensors")).unwrap()
        };
        assert!(model(&a) == model(&b), "{format}: the adapters differ");
        let losses: Vec<f64> = std::fs::read_to_string(d.join(&a).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        assert!(losses[3] < losses[0], "{format}: {losses:?}");
    }
}

/// `quantize` without LoRA, `quantize_skip` without `quantize`, and an NF4 layer whose size is
/// not made of NF4's blocks (the tiny chat model's) exit 2 saying what to change; int8 has no
/// such blocks.
#[test]
fn quantize_mistakes_exit_2() {
    let d = tmpdir("qlora", "bad");
    let f = recipe(&d, "small", "chat-tiny", "quantize = \"nf4\"", "lr = 1e-3");
    let (code, _, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert!(
        code == 2 && e.contains("quantize_skip") && e.contains("64 x 256"),
        "{e}"
    );
    let f = recipe(&d, "int8", "chat-tiny", "quantize = \"int8\"", "lr = 1e-3");
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    let f = recipe(
        &d,
        "skip",
        "qlora-tiny",
        "quantize_skip = \"blocks.0\"",
        "lr = 1e-3",
    );
    let (code, _, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert!(code == 2 && e.contains("`quantize_skip` needs"), "{e}");
    let f = recipe(&d, "full", "qlora-tiny", "quantize = \"int8\"", "lr = 1e-3");
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("kind = \"lora\"", "kind = \"full\"");
    let text = text.replace(
        "[strategy.lora]\ntargets = [\"q_proj\", \"v_proj\"]\nrank = 4\n",
        "",
    );
    std::fs::write(&f, text).unwrap();
    let (code, _, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert!(code == 2 && e.contains("needs kind = \"lora\""), "{e}");
}

/// `pzt plan` counts a quantized base in its quantized bytes, and shows the format; DoRA over
/// an NF4 base trains.
#[test]
fn the_plan_counts_quantized_bytes_and_dora_trains_on_nf4() {
    let d = tmpdir("qlora", "plan");
    let bytes = |name: &str, q: &str| {
        let f = recipe(&d, name, "qlora-tiny", q, "lr = 1e-3");
        let (code, o, e) = run_pzt(&["plan", f.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0, "{e}");
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        v["memory_bytes"]["parameters"].as_i64().unwrap()
    };
    let (plain, nf4, int8) = (
        bytes("plain", ""),
        bytes("nf4", "quantize = \"nf4\""),
        bytes("int8", "quantize = \"int8\""),
    );
    // The blocks' projections: per layer 4 of 128 x 128 and 3 of 128 x 256 float32 values.
    // NF4 keeps each as half a byte a value, an int8 scaler per 64 and a float32 factor per
    // 256 scalers, and the scalers' mean.
    let nf4_of = |n: i64| n / 2 + n / 64 + (n / 64 / 256) * 4 + 4;
    let sizes = [16_384i64, 16_384, 16_384, 16_384, 32_768, 32_768, 32_768];
    let (f32_bytes, nf4_bytes): (i64, i64) = sizes
        .iter()
        .map(|&n| (2 * n * 4, 2 * nf4_of(n)))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(plain - nf4, f32_bytes - nf4_bytes);
    assert!(int8 < plain && int8 > nf4, "{plain} {int8} {nf4}");
    let f = recipe(&d, "show", "qlora-tiny", "quantize = \"nf4\"", "lr = 1e-3");
    let (code, o, e) = run_pzt(&["show", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("frozen nf4]"), "{o}");
    let f = recipe(&d, "dora", "qlora-tiny", "quantize = \"nf4\"", "lr = 1e-2");
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("rank = 4", "rank = 4\ndora = true");
    std::fs::write(&f, text).unwrap();
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
}

/// A preference objective trains on a quantized base: DPO with LoRA on NF4, the reference the
/// adapters off (so the first step's loss is ln 2).
#[test]
fn dpo_trains_on_an_nf4_base() {
    let d = tmpdir("qlora", "dpo");
    let f = d.join("dpo.toml");
    std::fs::write(
        &f,
        format!(
            "[run]\nname = \"dpo\"\nout_dir = \"{out}\"\n[model]\nhf = \"{m}\"\n[data]\nsource = \"preference\"\nfiles = [\"{rows}\"]\nseq_len = 64\neval_fraction = 0.0\n[objective]\nkind = \"dpo\"\n[strategy]\nkind = \"lora\"\nquantize = \"nf4\"\n[strategy.lora]\ntargets = [\"q_proj\", \"v_proj\"]\nrank = 4\n[train]\nsteps = 4\nbatch_size = 2\nlog_every = 1\nthreads = 1\n[optim]\nlr = 1e-2\n",
            out = d.join("run").display(),
            m = fixtures().join("hf/qlora-tiny").display(),
            rows = fixtures().join("preference/plain.jsonl").display(),
        ),
    )
    .unwrap();
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    let losses: Vec<f64> = std::fs::read_to_string(d.join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(
        (losses[0] - std::f64::consts::LN_2).abs() < 1e-6,
        "{losses:?}"
    );
    assert!(losses[3] < losses[0], "{losses:?}");
}

/// `pzt show --html` of a QLoRA checkpoint marks each quantized weight with its format, and its
/// statistics are those of the dequantized values: the v projection's equal torchao's.
#[test]
fn show_gives_the_format_and_statistics_of_the_dequantized_values() {
    let d = tmpdir("qlora", "show-html");
    let ckpt = untrained_nf4_run(&d);
    let page = d.join("q.html");
    let (code, _, e) = run_pzt(&[
        "show",
        ckpt.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{e}");
    let j = page_data(&page);
    let mut all = vec![];
    page_params(&j["tree"], &mut all);
    let quantized: Vec<_> = all.iter().filter(|p| p["quantized"] == "nf4").collect();
    // Seven projections in each of the two layers; the embeddings and the head are not.
    assert_eq!(quantized.len(), 14, "{quantized:?}");
    let v = quantized
        .iter()
        .find(|p| {
            p["label"].as_str().unwrap().contains("blocks.0")
                && p["path"].as_str().unwrap().contains("input_to_value")
        })
        .unwrap();
    let want = torchao_weight("layers.0.v_proj.dequantized");
    let mean = want.mean(tch::Kind::Double).double_value(&[]);
    let max = want.max().double_value(&[]);
    assert!(
        (v["stats"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9,
        "{v}"
    );
    assert_eq!(v["stats"]["max"].as_f64().unwrap(), max, "{v}");
}

/// A QLoRA run exported merged (`--hf`, float32 and bfloat16) is a model directory whose
/// logits are the checkpoint's: the dequantized base with the adapters merged in.
#[test]
fn an_exported_qlora_run_gives_the_checkpoints_logits() {
    use crate::common::finetune::logits_of;
    let d = tmpdir("qlora", "export-logits");
    for format in ["nf4", "int8"] {
        let name = format!("q-{format}");
        let f = recipe(
            &d,
            &name,
            "qlora-tiny",
            &format!("quantize = \"{format}\""),
            "lr = 1e-2",
        );
        let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{o}{e}");
        let ckpt = d.join(format!("{name}/checkpoints/step-4"));
        let tokens = "1 5 9 13 17 21 25 29";
        let want = logits_of(&ckpt, tokens, &d);
        for (dtype, tol) in [("float32", 1e-4), ("bfloat16", 0.25)] {
            let out = d.join(format!("{name}-{dtype}"));
            let (code, o, e) = run_pzt(&[
                "export",
                ckpt.to_str().unwrap(),
                "--hf",
                out.to_str().unwrap(),
                "--dtype",
                dtype,
            ]);
            assert_eq!(code, 0, "{o}{e}");
            let got = logits_of(&out, tokens, &d).to_kind(tch::Kind::Float);
            let diff = max_abs_diff(&got, &want);
            assert!(diff < tol, "{format} {dtype}: logits differ by {diff}");
        }
        // The checkpoint is not the unquantized base.
        let base = logits_of(&fixtures().join("hf/qlora-tiny"), tokens, &d);
        assert!(max_abs_diff(&base, &want) > 1e-3, "{format}");
    }
}
