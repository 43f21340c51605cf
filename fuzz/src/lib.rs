//! What the fuzz targets share: scratch directories and the repository's fixtures.
//!
//! `tests/process_wide/fuzz_corpus.rs` (the stable replay of the committed corpus) lays out the same files
//! on its own; nothing here is used by the main crate.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
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
