//! Replays the committed fuzz corpus (`tests/fuzz_corpus/<target>/`, see FUZZING.md) through
//! the same library calls as the cargo-fuzz targets in `fuzz/`, on stable: every input must
//! come back as `Ok` or `Err`, never as a panic. (The fuzz crate is not built here; this file
//! lays out the same fixtures on its own.)

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A fresh scratch directory for one target in this process (removed when dropped).
struct Scratch(PathBuf);

impl Scratch {
    fn new(target: &str) -> Scratch {
        let d =
            std::env::temp_dir().join(format!("pzt-fuzz-corpus-{target}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }
    fn copy(&self, from: &str, rel: &str) {
        self.write(rel, &std::fs::read(repo(from)).unwrap());
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` on every file of the target's corpus; fails naming the inputs that panic.
fn replay(target: &str, mut f: impl FnMut(&[u8])) {
    tch::set_num_threads(1);
    let dir = repo("tests/fuzz_corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no corpus", dir.display());
    let mut panicked = vec![];
    for p in &files {
        let data = std::fs::read(p).unwrap();
        if catch_unwind(AssertUnwindSafe(|| f(&data))).is_err() {
            panicked.push(p.display().to_string());
        }
    }
    assert!(panicked.is_empty(), "inputs that panic: {panicked:#?}");
}

#[test]
fn recipe_corpus() {
    let s = Scratch::new("recipe");
    // What a fuzzed recipe may refer to (as in fuzz/src/lib.rs).
    s.copy("configs/models/tiny-transformer.toml", "model.toml");
    s.copy("tests/fixtures/hf/chat-tiny/config.json", "hf/config.json");
    s.copy(
        "tests/fixtures/hf/chat-tiny/tokenizer.json",
        "hf/tokenizer.json",
    );
    s.copy(
        "tests/fixtures/hf/chat-tiny/tokenizer_config.json",
        "hf/tokenizer_config.json",
    );
    s.copy("tests/fixtures/wordlevel-tokenizer.json", "tokenizer.json");
    s.copy("tests/fixtures/tiny.txt", "data.txt");
    s.copy("tests/fixtures/tiny.jsonl", "data.jsonl");
    s.copy("tests/fixtures/chat.jsonl", "chat.jsonl");
    s.copy("recipes/mlp.toml", "ckpt/recipe.toml");
    s.write("ckpt/state.json", b"{}");
    let path = s.path("recipe.toml");
    let registry = pzt::builtin_registry();
    replay("recipe", |data| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        std::fs::write(&path, text).unwrap();
        let sets: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("#set "))
            .map(String::from)
            .collect();
        let recipe = match pzt::recipe::Recipe::load(&path, &sets) {
            Ok(r) => r,
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        };
        let _ = recipe.train_spec(&registry).map(|s| s.recipe_toml);
        match pzt::recipe::plan::Plan::shapes_only(recipe, &registry) {
            Ok(plan) => {
                let _ = plan.render(3, false);
                let _ = plan.to_json();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    });
}

#[test]
fn selector_corpus() {
    let reg = pzt::builtin_registry();
    let r = pzt::recipe::Recipe::load(&repo("recipes/tiny-transformer.toml"), &[]).unwrap();
    let tiny = pzt::recipe::plan::Plan::tree_only(&r, &reg).unwrap();
    let arch = pzt::models::hf::read_config(&repo("tests/fixtures/hf/chat-tiny")).unwrap();
    let llama = arch.build(&pzt::tree::Builder::slots()).unwrap().tree;
    replay("selector", |data| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        match pzt::tree::selector::Selector::parse(text) {
            Err(e) => {
                let _ = e.render(text);
            }
            Ok(sel) => {
                for tree in [&tiny, &llama] {
                    let s = sel.select(tree);
                    let _ = s.count();
                    for (path, node) in s.get() {
                        let _ = (path, node.kind());
                    }
                }
            }
        }
    });
}

#[test]
fn hf_config_corpus() {
    let s = Scratch::new("hf_config");
    let recipe = s.write(
        "recipe.toml",
        b"[model]\nhf = \"model\"\ninput = { axes = { batch = 1, seq = 8 }, dtype = \"int64\" }\n",
    );
    let registry = pzt::builtin_registry();
    replay("hf_config", |data| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let arch = match pzt::models::hf::parse(text, "config.json") {
            Ok(a) => a,
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        };
        // As in the fuzz target (finding 4, FUZZING.md): deep models are not built.
        if arch.decoder.layers.len() > 256 {
            return;
        }
        let Ok(built) = arch.build(&pzt::tree::Builder::slots().dtype(arch.dtype)) else {
            return;
        };
        let _ = pzt::recipe::plan::count_params(&built.tree);
        let _ = pzt::models::hf::names::names(&arch, &built.parts);
        s.write("model/config.json", data);
        if let Ok(r) = pzt::recipe::Recipe::load(&recipe, &[]) {
            if let Ok(plan) = pzt::recipe::plan::Plan::shapes_only(r, &registry) {
                let _ = plan.render(3, false);
            }
        }
    });
}

/// The tiny Llama whose weights the safetensors corpus holds (as in the fuzz target).
const TINY_LLAMA: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "dtype": "float16",
  "hidden_size": 8, "intermediate_size": 8, "num_attention_heads": 2, "num_key_value_heads": 1,
  "head_dim": 4, "num_hidden_layers": 1, "vocab_size": 16, "max_position_embeddings": 32,
  "hidden_act": "silu", "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
  "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false,
  "bos_token_id": 1, "eos_token_id": 2
}"#;

#[test]
fn safetensors_header_corpus() {
    let s = Scratch::new("safetensors_header");
    s.write("config.json", TINY_LLAMA.as_bytes());
    let dir = s.0.clone();
    let mut loaded = 0;
    replay("safetensors_header", |data| {
        s.write("model.safetensors", data);
        match pzt::models::hf::Weights::open(&dir) {
            Ok(w) => {
                let names: Vec<String> = w.names().cloned().collect();
                for n in &names {
                    let _ = w.get(n).map(|t| t.size());
                }
            }
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        }
        if pzt::models::hf::load(&dir, None, tch::Device::Cpu).is_ok() {
            loaded += 1;
        }
    });
    assert!(loaded > 0, "no corpus input is a loadable checkpoint");
}

#[test]
fn state_json_corpus() {
    let s = Scratch::new("state_json");
    let b = pzt::tree::Builder::new(0);
    let tree = pzt::models::mlp::mlp(
        &b.scope("mlp"),
        "features",
        "hidden",
        &[2, 4, 1],
        pzt::layers::misc::Activation::Tanh,
    )
    .unwrap();
    let tensors: Vec<(String, tch::Tensor)> = tree
        .trainable_parameters()
        .iter()
        .map(|p| (p.label().to_string(), p.value()))
        .collect();
    tch::Tensor::write_safetensors(&tensors, s.path("model.safetensors")).unwrap();
    let mut opt = 8u64.to_le_bytes().to_vec();
    opt.extend_from_slice(b"{}      ");
    s.write("optimizer.safetensors", &opt);
    // A loadable state.json holds the whole CPU generator state (~10 KB, more than a corpus
    // file holds), so each input that has `rng_cpu` is replayed a second time with a real one.
    let rng = pzt::run::checkpoint::cpu_rng_hex().unwrap();
    let mut loaded = 0;
    let mut run = |data: &[u8]| {
        s.write("state.json", data);
        let state = match pzt::run::checkpoint::load_model(&s.0, &tree) {
            Ok(st) => st,
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        };
        loaded += 1;
        let _ = pzt::run::checkpoint::set_cpu_rng_hex(&state.rng_cpu);
        let mut cursor = pzt::data::Cursor::new(state.seed, 40, state.cursor);
        let _ = cursor.next_batch(8);
        let _ = serde_json::to_string_pretty(&state);
    };
    replay("state_json", |data| {
        run(data);
        if let Ok(serde_json::Value::Object(mut m)) = serde_json::from_slice(data) {
            if m.contains_key("rng_cpu") {
                m.insert("rng_cpu".into(), rng.clone().into());
                run(&serde_json::to_vec(&m).unwrap());
            }
        }
    });
    assert!(loaded > 0, "no corpus input is a readable state.json");
}

#[test]
fn tokenizer_json_corpus() {
    const TEXT: &str = "The cat sat on the mat. </s> 37+58=95 <|im_start|>user\nhé ✓\n";
    let s = Scratch::new("tokenizer_json");
    let path = s.path("tokenizer.json");
    let mut loaded = 0;
    replay("tokenizer_json", |data| {
        std::fs::write(&path, data).unwrap();
        let tok =
            match pzt::data::tokenizer::Tokenizer::load(&path.display().to_string(), Path::new(""))
            {
                Ok(t) => t,
                Err(e) => {
                    let _ = e.to_string();
                    return;
                }
            };
        loaded += 1;
        let _ = tok.vocab_size();
        let _ = tok.eos_id();
        let _ = tok.token_id("</s>");
        if let Ok(ids) = tok.encode(TEXT) {
            let _ = tok.decode(&ids);
        }
        let _ = tok.encode_with_offsets(TEXT);
        let _ = tok.decode(&[0, 1, 2, 3, 1_000_000, -1]);
    });
    assert!(loaded > 0, "no corpus input is a loadable tokenizer");
}
