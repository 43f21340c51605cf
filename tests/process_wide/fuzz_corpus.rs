//! Replays the committed fuzz corpus (`tests/fuzz_corpus/<target>/`, see FUZZING.md) through
//! the cargo-fuzz targets' own bodies (`fuzz/src/lib.rs`, compiled into this test), on stable:
//! every input must come back as `Ok` or `Err`, never as a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod pzt_fuzz;

/// A fresh scratch directory for one target (removed when dropped).
struct Scratch(PathBuf);

impl Scratch {
    fn new(target: &str) -> Scratch {
        Scratch(pzt_fuzz::scratch(&format!("corpus-{target}")))
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
    let t = pzt_fuzz::RecipeTarget::new(&s.0);
    replay("recipe", |data| {
        t.run(data);
    });
}

#[test]
fn selector_corpus() {
    let t = pzt_fuzz::SelectorTarget::new();
    replay("selector", |data| {
        t.run(data);
    });
}

#[test]
fn hf_config_corpus() {
    let s = Scratch::new("hf_config");
    let t = pzt_fuzz::HfConfigTarget::new(&s.0);
    replay("hf_config", |data| {
        t.run(data);
    });
}

#[test]
fn safetensors_header_corpus() {
    let s = Scratch::new("safetensors_header");
    let t = pzt_fuzz::SafetensorsTarget::new(&s.0);
    let mut loaded = 0;
    replay("safetensors_header", |data| loaded += t.run(data) as usize);
    assert!(loaded > 0, "no corpus input is a loadable checkpoint");
}

#[test]
fn state_json_corpus() {
    let s = Scratch::new("state_json");
    let t = pzt_fuzz::StateJsonTarget::new(&s.0);
    // A loadable state.json holds the whole CPU generator state (~10 KB, more than a corpus
    // file holds), so each input that has `rng_cpu` is replayed a second time with a real one.
    let rng = pzt::run::checkpoint::cpu_rng_hex().unwrap();
    let mut loaded = 0;
    replay("state_json", |data| {
        loaded += t.run(data) as usize;
        if let Ok(serde_json::Value::Object(mut m)) = serde_json::from_slice(data) {
            if m.contains_key("rng_cpu") {
                m.insert("rng_cpu".into(), rng.clone().into());
                loaded += t.run(&serde_json::to_vec(&m).unwrap()) as usize;
            }
        }
    });
    assert!(loaded > 0, "no corpus input is a readable state.json");
}

#[test]
fn tokenizer_json_corpus() {
    let s = Scratch::new("tokenizer_json");
    let t = pzt_fuzz::TokenizerTarget::new(&s.0);
    let mut loaded = 0;
    replay("tokenizer_json", |data| loaded += t.run(data) as usize);
    assert!(loaded > 0, "no corpus input is a loadable tokenizer");
}
