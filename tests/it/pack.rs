//! Packing: a packed window computes what its documents compute one by one (per-document
//! positions and a mask inside each document), for a pretrained Llama (RoPE, fused attention)
//! and for the `transformer` builder's tree; packed runs train, resume exactly, and
//! `pzt data` reports the packing.
use crate::common::*;
use pzt::data::pack::pack;
use pzt::data::spec::DataSpec;
use pzt::data::Example;
use pzt::prelude::*;
use pzt::recipe::plan::Plan;
use pzt::recipe::Recipe;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn doc(ids: &[i64], prompt: usize) -> Example {
    let mut mask = vec![1u8; ids.len()];
    for m in mask.iter_mut().take(prompt) {
        *m = 0;
    }
    Example::Tokens {
        ids: ids.to_vec(),
        mask,
        prompt_len: 0,
        docs: vec![],
    }
}

fn lm_task(seq: usize) -> Box<dyn pzt::train::task::Task> {
    let t: toml::Table = toml::from_str(&format!(
        "source = \"synthetic\"\ngenerator = \"copy\"\nseq_len = {seq}"
    ))
    .unwrap();
    let spec = DataSpec::decode(&t).unwrap();
    pzt::train::task::for_data(
        &spec,
        &pzt::spec::Objective::default(),
        &pzt::spec::InputRoles::tokens("batch", "seq"),
        0,
        0,
    )
}

fn sums(tree: &Node, task: &dyn pzt::train::task::Task, items: &[&Example]) -> (f64, f64) {
    let b = task.batch(items, tch::Device::Cpu).unwrap();
    let y = tch::no_grad(|| tree.forward(b.x.clone(), &b.side))
        .unwrap()
        .into_tensor()
        .unwrap();
    let (_, s) = task.loss(&pzt::train::head::Output::Logits(y), &b).unwrap();
    (s.loss, s.count)
}

fn model(text: &str) -> Node {
    let d = tmpdir("pack", "model");
    let f = d.join(format!("m{}.toml", text.len()));
    std::fs::write(&f, text).unwrap();
    Plan::build(
        Recipe::load(&f, &[]).unwrap(),
        &pzt::builtin_registry(),
        &Builder::new(4),
    )
    .unwrap()
    .tree
}

#[test]
fn a_packed_window_gives_the_loss_of_its_documents_one_by_one() {
    let docs = vec![
        doc(&[5, 9, 14, 2, 33, 7], 2),
        doc(&[8, 8, 21, 40], 0),
        doc(&[17, 3, 3, 3, 12], 3),
    ];
    let seq = 16;
    let packed = pack(docs.clone(), seq + 1);
    assert_eq!(packed.len(), 1);
    for m in [
        format!("[model]\nhf = \"{}\"\n", fixtures().join("hf/chat-tiny").display()),
        "[model]\nbuilder = \"transformer\"\nvocab_size = 64\nd_model = 16\nnum_layers = 2\nnum_heads = 2\nmlp_hidden = 32\n".to_string(),
    ] {
        let tree = model(&m);
        let task = lm_task(seq);
        let (pl, pc) = sums(&tree, &*task, &[&packed[0]]);
        let (mut l, mut c) = (0.0, 0.0);
        for d in &docs {
            let (a, b) = sums(&tree, &*task, &[d]);
            l += a;
            c += b;
        }
        assert_eq!(pc, c, "{m}: target counts");
        assert!((pl - l).abs() <= 1e-4 * l.abs().max(1.0), "{m}: packed {pl} vs one by one {l}");
        // Without the document mask and positions the result differs (the test can fail).
        let b = task.batch(&[&packed[0]], tch::Device::Cpu).unwrap();
        let y = tch::no_grad(|| tree.forward(b.x.clone(), &SideInputs::new()))
            .unwrap()
            .into_tensor()
            .unwrap();
        let (_, s) = task.loss(&pzt::train::head::Output::Logits(y), &b).unwrap();
        assert!((s.loss - l).abs() > 1e-3, "{m}: the plain forward should differ");
    }
}

fn chat_recipe(dir: &Path, steps: u64) -> PathBuf {
    let f = dir.join("p.toml");
    std::fs::write(
        &f,
        format!(
            "[run]\nname = \"p\"\nout_dir = \"{out}\"\n[model]\nhf = \"{m}\"\n[data]\nsource = \"chat\"\nfiles = [\"{c}\"]\nseq_len = 160\npack = true\n[train]\nsteps = {steps}\nbatch_size = 2\nlog_every = 5\nthreads = 1\n[optim]\nlr = 3e-3\n[checkpoint]\nevery_steps = 10\nkeep_last = 2\n",
            out = dir.join("run").display(),
            m = fixtures().join("hf/chat-tiny").display(),
            c = fixtures().join("chat.jsonl").display(),
        ),
    )
    .unwrap();
    f
}

#[test]
fn packed_runs_report_their_packing_train_and_resume_exactly() {
    let d = tmpdir("pack", "run");
    let f = chat_recipe(&d, 60);
    let (code, o, e) = run_pzt(&["data", f.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{o}{e}");
    let st: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert!(
        st["documents"].as_u64().unwrap() > st["train_examples"].as_u64().unwrap(),
        "{st}"
    );
    assert!(st["packed_fill"].as_f64().unwrap() > 0.6, "{st}");
    // --export writes the examples unpacked.
    let x = d.join("x.jsonl");
    let (code, _, e) = run_pzt(&["data", f.to_str().unwrap(), "--export", x.to_str().unwrap()]);
    assert_eq!(code, 0, "{e}");
    let n = std::fs::read_to_string(&x).unwrap().lines().count() as u64;
    assert!(
        n > st["train_examples"].as_u64().unwrap(),
        "{n} documents exported"
    );

    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    let straight = std::fs::read(d.join("run/checkpoints/step-60/model.safetensors")).unwrap();
    // Resume from step 30 (delete the later checkpoints) and compare.
    let d2 = tmpdir("pack", "run2");
    let g = chat_recipe(&d2, 60);
    let (code, _, e) = run_pzt(&["train", g.to_str().unwrap(), "--set", "train.steps=30"]);
    assert_eq!(code, 0, "{e}");
    let (code, o, e) = run_pzt(&["train", g.to_str().unwrap()]);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("resuming"), "{o}");
    let resumed = std::fs::read(d2.join("run/checkpoints/step-60/model.safetensors")).unwrap();
    assert_eq!(straight, resumed);
}

#[test]
fn mixtures_draw_each_source_by_weight_and_check_their_keys() {
    let d = tmpdir("pack", "mix");
    let body = |extra: &str| {
        format!(
            "[run]\nname = \"m\"\nout_dir = \"{out}\"\n[model]\nhf = \"{m}\"\n[data]\nseq_len = 96\n[[data.sources]]\nsource = \"chat\"\nfiles = [\"{c}\"]\n[[data.sources]]\nsource = \"synthetic\"\ngenerator = \"copy\"\nlength = 5\nnum_examples = 40\nweight = 3.0\n{extra}[train]\nsteps = 6\nbatch_size = 4\nthreads = 1\n[optim]\nlr = 1e-3\n",
            out = d.join("run").display(),
            m = fixtures().join("hf/chat-tiny").display(),
            c = fixtures().join("chat.jsonl").display(),
        )
    };
    let f = d.join("m.toml");
    std::fs::write(&f, body("")).unwrap();
    let (code, o, e) = run_pzt(&["data", f.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{o}{e}");
    let st: serde_json::Value = serde_json::from_str(&o).unwrap();
    // 100 examples in all (60 conversations, 40 generated), drawn 1 : 3.
    assert_eq!(st["mixture"], serde_json::json!([25, 75]), "{st}");
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    // The same recipe prepares the same data (and so resumes it the same way).
    let again = d.join("again.json");
    let (code, _, _) = run_pzt(&[
        "data",
        f.to_str().unwrap(),
        "--export",
        again.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let g = d.join("g.toml");
    std::fs::write(
        &g,
        body("")
            .replace("name = \"m\"", "name = \"m2\"")
            .replace("/run\"", "/run2\""),
    )
    .unwrap();
    let again2 = d.join("again2.json");
    let (code, _, _) = run_pzt(&[
        "data",
        g.to_str().unwrap(),
        "--export",
        again2.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&again2).unwrap()
    );
    // A source may not set the shared keys, and weights are positive.
    for (bad, want) in [
        (
            body("").replace("length = 5\n", "length = 5\nseq_len = 12\n"),
            "set `seq_len` once in [data]",
        ),
        (
            body("").replace("weight = 3.0", "weight = -1"),
            "weight must be a positive number",
        ),
        (
            body("").replace("source = \"synthetic\"", "source = \"csv\""),
            "csv cannot be mixed",
        ),
    ] {
        std::fs::write(&f, bad).unwrap();
        let (code, _, e) = run_pzt(&["data", f.to_str().unwrap()]);
        assert_eq!(code, 2, "{e}");
        assert!(e.contains(want), "{e}");
    }
}
