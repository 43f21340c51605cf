//! The typed run spec from the command line: `[data]` keys belong to their source, the model
//! input is stated once (derived from `[train]` and `[data]`, or checked against them), and the
//! plan's memory estimate follows `[optim]`.

use std::path::{Path, PathBuf};

use crate::common::run_pzt as pzt;

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pzt-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    f
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

const LM: &str = "[model]\nbuilder = \"transformer\"\nvocab_size = 256\nd_model = 16\nnum_layers = 1\nnum_heads = 2\nmlp_hidden = 32\n";

fn lm_recipe(input: &str, data: &str, train: &str) -> String {
    format!(
        "{LM}{input}\n[data]\nsource = \"text\"\nfiles = [\"{}\"]\n{data}\n[train]\nsteps = 2\n{train}\n[optim]\nlr = 1e-3\n",
        fixture("tiny.txt")
    )
}

#[test]
fn data_keys_belong_to_their_source() {
    let f = write(
        "wrong-key.toml",
        &lm_recipe(
            "",
            "seq_len = 8\ngenerator = \"addition\"",
            "batch_size = 4",
        ),
    );
    let (code, _, err) = pzt(&["plan", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown key `generator` in [data] (source `text`)"),
        "{err}"
    );
    assert!(err.contains("wrong-key.toml:13:1"), "{err}");
    assert!(
        err.contains(
            "expected one of: source, files, tokenizer, seq_len, eval_fraction, cache_dir"
        ),
        "{err}"
    );
    // The same key is fine where the source reads it.
    let f = write(
        "synthetic.toml",
        &format!("{LM}[data]\nsource = \"synthetic\"\ngenerator = \"addition\"\nseq_len = 12\n[train]\nsteps = 2\nbatch_size = 4\n"),
    );
    let (code, _, err) = pzt(&["plan", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_model_input_is_derived_from_the_training_batch() {
    let f = write(
        "derived.toml",
        &lm_recipe("", "seq_len = 8", "batch_size = 4"),
    );
    let (code, out, err) = pzt(&["plan", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("input       {batch: 4, seq: 8} int64"),
        "{out}"
    );
    assert!(
        out.contains("output      {batch: 4, seq: 8, vocab: 256} float32"),
        "{out}"
    );
    assert!(out.contains("(the training batch)"), "{out}");
    // `[model.input]` without `axes`: the axes are derived, the dtype is kept.
    let f = write(
        "derived-dtype.toml",
        &lm_recipe(
            "input = { dtype = \"int32\" }",
            "seq_len = 8",
            "batch_size = 4",
        ),
    );
    let (code, out, err) = pzt(&["plan", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("input       {batch: 4, seq: 8} int32"),
        "{out}"
    );
    // csv rows: (batch, features).
    let f = write(
        "rows.toml",
        &format!(
            "[model]\nbuilder = \"mlp\"\nwidths = [2, 8, 1]\n[data]\nsource = \"csv\"\nfiles = [\"{}\"]\nfeatures = [\"x1\", \"x2\"]\ntarget = \"y\"\n[train]\nsteps = 2\nbatch_size = 16\n",
            fixture("regression.csv")
        ),
    );
    let (code, out, err) = pzt(&["plan", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("input       {batch: 16, features: 2} float32"),
        "{out}"
    );
    // Without training sections nothing is derived, and `axes` is needed.
    let f = write(
        "no-axes.toml",
        &format!("{LM}input = {{ dtype = \"int64\" }}\n"),
    );
    let (code, _, err) = pzt(&["plan", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`[model.input]` needs `axes"), "{err}");
}

#[test]
fn a_model_input_that_disagrees_with_the_training_batch_names_both_places() {
    let f = write(
        "batch.toml",
        &lm_recipe(
            "input = { axes = { batch = 8, seq = 8 }, dtype = \"int64\" }",
            "seq_len = 8",
            "batch_size = 4",
        ),
    );
    for cmd in ["plan", "train"] {
        let (code, _, err) = pzt(&[cmd, f.to_str().unwrap()]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(
            err.contains("`[model.input]` axis `batch` has size 8, but `[train] batch_size` is 4"),
            "{err}"
        );
        assert!(err.contains("batch.toml:8:"), "{err}");
        assert!(
            err.contains("`train.batch_size` is set at") && err.contains("batch.toml:15:1"),
            "{err}"
        );
    }
    // The training side from --set: the --set is what is pointed at, the recipe line noted.
    let (code, _, err) = pzt(&["plan", f.to_str().unwrap(), "--set", "train.batch_size=2"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`[train] batch_size` is 2, but `[model.input]` axis `batch` has size 8")
            && err.contains("--> --set #1:1:1")
            && err.contains("batch.toml:8:"),
        "{err}"
    );
    let f = write(
        "seq.toml",
        &lm_recipe(
            "input = { axes = { batch = 4, seq = 16 }, dtype = \"int64\" }",
            "seq_len = 8",
            "batch_size = 4",
        ),
    );
    let (code, _, err) = pzt(&["plan", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("axis `seq` has size 16, but `[data] seq_len` is 8")
            && err.contains("`data.seq_len` is set at"),
        "{err}"
    );
}

#[test]
fn the_memory_estimate_follows_the_optimizer() {
    let plan = |optim: &str| {
        let f = write("optim.toml", &format!("{LM}[optim]\nlr = 1e-3\n{optim}\n"));
        let (code, out, err) = pzt(&["plan", f.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0, "{err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        let trainable = j["parameters"]["trainable"].as_i64().unwrap();
        let (_, text, _) = pzt(&["plan", f.to_str().unwrap()]);
        (
            j["memory_bytes"]["optimizer"].as_i64().unwrap(),
            trainable,
            text,
        )
    };
    let (adamw, n, text) = plan("");
    assert_eq!(adamw, 8 * n);
    assert!(text.contains("(AdamW, fp32 optimizer state)"), "{text}");
    let (momentum, n, text) = plan("kind = \"sgd\"\nmomentum = 0.9");
    assert_eq!(momentum, 4 * n);
    assert!(
        text.contains("(SGD with momentum, fp32 optimizer state)"),
        "{text}"
    );
    let (sgd, _, text) = plan("kind = \"sgd\"");
    assert_eq!(sgd, 0);
    assert!(text.contains("(SGD, no optimizer state)"), "{text}");
}

#[test]
fn the_memory_estimate_counts_one_chunk_of_the_loss() {
    // 4 x 8 tokens over a vocabulary of 256: a chunk of `c` tokens keeps at most three
    // `[c, 256]` float32 tensors (its log-softmax and the two gradients of its backward).
    let activations = |chunk: i64| {
        let f = write(
            &format!("chunk-{chunk}.toml"),
            &lm_recipe(
                "",
                "seq_len = 8",
                &format!("batch_size = 4\nloss_chunk_tokens = {chunk}"),
            ),
        );
        let (code, out, err) = pzt(&["plan", f.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0, "{err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        j["memory_bytes"]["activations"].as_i64().unwrap()
    };
    let (four, eight, whole) = (activations(4), activations(8), activations(1_000_000));
    assert_eq!(eight - four, 3 * 4 * 256 * 4);
    // The whole logits: the head's output kept, and three more of its size.
    assert!(whole - four >= 3 * (32 - 4) * 256 * 4, "{whole} {four}");
}
