//! The bodies of the fuzz targets, shared with the stable replay of the committed corpus
//! (`tests/process_wide/fuzz_corpus.rs` includes this file): each target is a type made once
//! in a scratch directory (`new`) and a `run` on one input, which returns whether the input
//! got past the first parser. Also the scratch directories and the repository's fixtures.
//! Nothing here is used by the main crate.

use std::path::{Path, PathBuf};

/// A path in the repository (this file is compiled in `fuzz/` and, for the corpus replay, at
/// the repository's root).
pub fn repo(rel: &str) -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = if here.ends_with("fuzz") {
        here.join("..")
    } else {
        here.to_path_buf()
    };
    root.join(rel)
}

/// A fresh scratch directory for this process.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pzt-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the scratch directory");
    d
}

/// Copies the repository file `from` to `to` (creating its directory).
pub fn copy(from: &str, to: &Path) {
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p).expect("create a fixture directory");
    }
    std::fs::copy(repo(from), to).unwrap_or_else(|e| panic!("copy {from}: {e}"));
}

/// Writes `text` to `to` (creating its directory).
pub fn write(to: &Path, text: &[u8]) {
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p).expect("create a fixture directory");
    }
    std::fs::write(to, text).expect("write a fixture");
}

/// The files a fuzzed recipe in `dir` can refer to: `include = ["model.toml"]`, `hf = "hf"`,
/// `checkpoint = "ckpt"`, `tokenizer = "tokenizer.json"`, `files = ["data.txt"]`, ...
pub fn recipe_fixtures(dir: &Path) {
    copy(
        "configs/models/tiny-transformer.toml",
        &dir.join("model.toml"),
    );
    copy(
        "tests/fixtures/hf/chat-tiny/config.json",
        &dir.join("hf/config.json"),
    );
    copy(
        "tests/fixtures/hf/chat-tiny/tokenizer.json",
        &dir.join("hf/tokenizer.json"),
    );
    copy(
        "tests/fixtures/hf/chat-tiny/tokenizer_config.json",
        &dir.join("hf/tokenizer_config.json"),
    );
    copy(
        "tests/fixtures/wordlevel-tokenizer.json",
        &dir.join("tokenizer.json"),
    );
    copy("tests/fixtures/tiny.txt", &dir.join("data.txt"));
    copy("tests/fixtures/tiny.jsonl", &dir.join("data.jsonl"));
    copy("tests/fixtures/chat.jsonl", &dir.join("chat.jsonl"));
    copy("recipes/mlp.toml", &dir.join("ckpt/recipe.toml"));
    write(&dir.join("ckpt/state.json"), b"{}");
}

/// `#set KEY=VALUE` comment lines of a fuzzed recipe, passed on as `--set KEY=VALUE`.
pub fn sets_of(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("#set "))
        .map(String::from)
        .collect()
}

/// Plans use one libtorch thread: a fuzzer has one core.
pub fn one_thread() {
    tch::set_num_threads(1);
}

/// A recipe (TOML text, with `#set KEY=VALUE` lines passed as `--set`) through the resolver,
/// the decoder and the planner (`pzt plan`: shapes only, no parameter storage).
pub struct RecipeTarget {
    path: PathBuf,
    registry: pzt::tree::Registry,
}

impl RecipeTarget {
    pub fn new(dir: &Path) -> RecipeTarget {
        recipe_fixtures(dir);
        RecipeTarget {
            path: dir.join("recipe.toml"),
            registry: pzt::builtin_registry(),
        }
    }

    pub fn run(&self, data: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(data) else {
            return false;
        };
        std::fs::write(&self.path, text).expect("write the recipe");
        let recipe = match pzt::recipe::Recipe::load(&self.path, &sets_of(text)) {
            Ok(r) => r,
            Err(e) => {
                let _ = e.to_string();
                return false;
            }
        };
        let _ = recipe.train_spec(&self.registry).map(|s| s.recipe_toml);
        match pzt::recipe::plan::Plan::shapes_only(recipe, &self.registry) {
            Ok(plan) => {
                let _ = plan.render(3, false);
                let _ = plan.to_json();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        true
    }
}

/// A selector parsed and applied to two trees (a recipe's tiny transformer, an HF Llama).
pub struct SelectorTarget {
    trees: Vec<pzt::tree::Node>,
}

impl SelectorTarget {
    pub fn new() -> SelectorTarget {
        let reg = pzt::builtin_registry();
        let r = pzt::recipe::Recipe::load(&repo("recipes/tiny-transformer.toml"), &[])
            .expect("tiny-transformer recipe");
        let tiny = pzt::recipe::plan::Plan::tree_only(&r, &reg).expect("tiny-transformer tree");
        let arch = pzt::models::hf::read_config(&repo("tests/fixtures/hf/chat-tiny"))
            .expect("chat-tiny config");
        let llama = arch
            .build(&pzt::tree::Builder::slots())
            .expect("chat-tiny tree")
            .tree;
        SelectorTarget {
            trees: vec![tiny, llama],
        }
    }

    pub fn run(&self, data: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(data) else {
            return false;
        };
        match pzt::tree::selector::Selector::parse(text) {
            Err(e) => {
                let _ = e.render(text);
                false
            }
            Ok(sel) => {
                for tree in &self.trees {
                    let s = sel.select(tree);
                    let _ = s.count();
                    for (path, node) in s.get() {
                        let _ = (path, node.kind());
                    }
                }
                true
            }
        }
    }
}

impl Default for SelectorTarget {
    fn default() -> Self {
        SelectorTarget::new()
    }
}

/// A HuggingFace `config.json`: parsed into an architecture, its slots-only tree built (no
/// parameter storage), the checkpoint names mapped, then planned as `pzt plan` plans a recipe
/// with `[model] hf = DIR` (shape inference on the meta device).
pub struct HfConfigTarget {
    config: PathBuf,
    recipe: PathBuf,
    registry: pzt::tree::Registry,
}

impl HfConfigTarget {
    pub fn new(dir: &Path) -> HfConfigTarget {
        let recipe = dir.join("recipe.toml");
        write(
            &recipe,
            b"[model]\nhf = \"model\"\ninput = { axes = { batch = 1, seq = 8 }, dtype = \"int64\" }\n",
        );
        HfConfigTarget {
            config: dir.join("model/config.json"),
            recipe,
            registry: pzt::builtin_registry(),
        }
    }

    pub fn run(&self, data: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(data) else {
            return false;
        };
        let arch = match pzt::models::hf::parse(text, "config.json") {
            Ok(a) => a,
            Err(e) => {
                let _ = e.to_string();
                return false;
            }
        };
        // Finding 4 (FUZZING.md): planning takes about 1 ms per layer in release (minutes
        // for the accepted maximum, 4096), so deep models are not built: fuzzing goes on.
        if arch.decoder.layers.len() > 256 {
            return true;
        }
        let Ok(built) = arch.build(&pzt::tree::Builder::slots().dtype(arch.dtype)) else {
            return true;
        };
        let _ = pzt::assembly::memory::count_params(&built.tree);
        let _ = pzt::models::hf::names::names(&arch, &built.parts);
        write(&self.config, data);
        if let Ok(r) = pzt::recipe::Recipe::load(&self.recipe, &[]) {
            if let Ok(plan) = pzt::recipe::plan::Plan::shapes_only(r, &self.registry) {
                let _ = plan.render(3, false);
            }
        }
        true
    }
}

/// A Llama small enough that a valid checkpoint of it fits the fuzzer's input size.
pub const TINY_LLAMA: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "dtype": "float16",
  "hidden_size": 8, "intermediate_size": 8, "num_attention_heads": 2, "num_key_value_heads": 1,
  "head_dim": 4, "num_hidden_layers": 1, "vocab_size": 16, "max_position_embeddings": 32,
  "hidden_act": "silu", "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
  "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false,
  "bos_token_id": 1, "eos_token_id": 2
}"#;

/// `model.safetensors` of [`TINY_LLAMA`]: its header read, every tensor mapped, then loaded;
/// `run` is true when the model loaded.
pub struct SafetensorsTarget {
    dir: PathBuf,
}

impl SafetensorsTarget {
    pub fn new(dir: &Path) -> SafetensorsTarget {
        write(&dir.join("config.json"), TINY_LLAMA.as_bytes());
        SafetensorsTarget {
            dir: dir.to_path_buf(),
        }
    }

    pub fn run(&self, data: &[u8]) -> bool {
        let d = &self.dir;
        std::fs::write(d.join("model.safetensors"), data).expect("write model.safetensors");
        match pzt::models::hf::Weights::open(d) {
            Ok(w) => {
                let names: Vec<String> = w.names().cloned().collect();
                for n in &names {
                    let _ = w.get(n).map(|t| t.size());
                }
            }
            Err(e) => {
                let _ = e.to_string();
                return false;
            }
        }
        pzt::models::hf::load(d, None, tch::Device::Cpu)
            .map(|m| m.tree.num_params())
            .is_ok()
    }
}

/// A checkpoint's `state.json` beside a small MLP's parameters and an empty optimizer state:
/// loaded (checksums, step, RNG state, base), the RNG state set, the data cursor advanced.
pub struct StateJsonTarget {
    dir: PathBuf,
    tree: pzt::tree::Node,
}

impl StateJsonTarget {
    pub fn new(dir: &Path) -> StateJsonTarget {
        let b = pzt::tree::Builder::new(0);
        let tree = pzt::models::mlp::mlp(
            &b.scope("mlp"),
            "features",
            "hidden",
            &[2, 4, 1],
            pzt::layers::misc::Activation::Tanh,
        )
        .expect("mlp");
        let tensors: Vec<(String, tch::Tensor)> = tree
            .trainable_parameters()
            .iter()
            .map(|p| (p.label().to_string(), p.value()))
            .collect();
        std::fs::create_dir_all(dir).expect("create the scratch directory");
        tch::Tensor::write_safetensors(&tensors, dir.join("model.safetensors"))
            .expect("write model.safetensors");
        // An empty optimizer state, as a checkpoint of a stateless optimizer has.
        let mut opt = 8u64.to_le_bytes().to_vec();
        opt.extend_from_slice(b"{}      ");
        write(&dir.join("optimizer.safetensors"), &opt);
        StateJsonTarget {
            dir: dir.to_path_buf(),
            tree,
        }
    }

    /// True when the state loaded.
    pub fn run(&self, data: &[u8]) -> bool {
        std::fs::write(self.dir.join("state.json"), data).expect("write state.json");
        let state = match pzt::run::checkpoint::load_model(&self.dir, &self.tree) {
            Ok(s) => s,
            Err(e) => {
                let _ = e.to_string();
                return false;
            }
        };
        let _ = pzt::run::checkpoint::set_cpu_rng_hex(&state.rng_cpu);
        let mut cursor = pzt::data::Cursor::new(state.seed, 40, state.cursor);
        let _ = cursor.next_batch(8);
        let _ = serde_json::to_string_pretty(&state);
        true
    }
}

/// A `tokenizer.json`: loaded, then used to encode and decode a text with special tokens;
/// `run` is true when it loaded.
pub struct TokenizerTarget {
    path: PathBuf,
}

/// What the tokenizer target encodes.
const TEXT: &str = "The cat sat on the mat. </s> 37+58=95 <|im_start|>user\nhé ✓\n";

impl TokenizerTarget {
    pub fn new(dir: &Path) -> TokenizerTarget {
        TokenizerTarget {
            path: dir.join("tokenizer.json"),
        }
    }

    pub fn run(&self, data: &[u8]) -> bool {
        write(&self.path, data);
        let tok = match pzt::data::tokenizer::Tokenizer::load(
            &self.path.display().to_string(),
            Path::new(""),
        ) {
            Ok(t) => t,
            Err(e) => {
                let _ = e.to_string();
                return false;
            }
        };
        let _ = tok.vocab_size();
        let _ = tok.eos_id();
        let _ = tok.token_id("</s>");
        if let Ok(ids) = tok.encode(TEXT) {
            let _ = tok.decode(&ids);
        }
        let _ = tok.encode_with_offsets(TEXT);
        let _ = tok.decode(&[0, 1, 2, 3, 1_000_000, -1]);
        true
    }
}
