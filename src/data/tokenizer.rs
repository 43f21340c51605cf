//! Tokenizers: `bytes` (one id per UTF-8 byte, 256 ids) and a HuggingFace `tokenizer.json`.

use crate::base::{Error, Result};
use std::path::{Path, PathBuf};

/// A tokenizer.
pub enum Tokenizer {
    /// Ids 0..=255 are the bytes of the UTF-8 text.
    Bytes,
    /// A HuggingFace tokenizer.json.
    Hf {
        path: PathBuf,
        inner: Box<tokenizers::Tokenizer>,
    },
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tokenizer::Bytes => write!(f, "bytes"),
            Tokenizer::Hf { path, .. } => write!(f, "hf({})", path.display()),
        }
    }
}

impl Tokenizer {
    /// `bytes`, or a path to a tokenizer.json.
    pub fn load(spec: &str, base_dir: &Path) -> Result<Tokenizer> {
        if spec == "bytes" {
            return Ok(Tokenizer::Bytes);
        }
        let path = base_dir.join(spec);
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| {
            Error::Config(format!("cannot load tokenizer `{}`: {e}", path.display()))
        })?;
        Ok(Tokenizer::Hf {
            path,
            inner: Box::new(inner),
        })
    }

    /// The tokenizer.json file (None for the built-in bytes tokenizer).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Tokenizer::Bytes => None,
            Tokenizer::Hf { path, .. } => Some(path),
        }
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> i64 {
        match self {
            Tokenizer::Bytes => 256,
            Tokenizer::Hf { inner, .. } => inner.get_vocab_size(true) as i64,
        }
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        match self {
            Tokenizer::Bytes => Ok(text.bytes().map(|b| b as i64).collect()),
            Tokenizer::Hf { inner, path } => inner
                .encode(text, false)
                .map(|e| e.get_ids().iter().map(|&i| i as i64).collect())
                .map_err(|e| Error::Config(format!("tokenizer `{}` failed: {e}", path.display()))),
        }
    }

    /// Text of token ids (lossy for partial UTF-8).
    pub fn decode(&self, ids: &[i64]) -> String {
        match self {
            Tokenizer::Bytes => {
                let bytes: Vec<u8> = ids
                    .iter()
                    .filter(|&&i| (0..256).contains(&i))
                    .map(|&i| i as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Tokenizer::Hf { inner, .. } => {
                let v: Vec<u32> = ids.iter().filter(|&&i| i >= 0).map(|&i| i as u32).collect();
                inner.decode(&v, false).unwrap_or_default()
            }
        }
    }

    /// An identity string for cache keys: `bytes`, or the tokenizer file's content hash.
    pub fn identity(&self) -> Result<String> {
        match self {
            Tokenizer::Bytes => Ok("bytes".into()),
            Tokenizer::Hf { path, .. } => {
                let data = std::fs::read(path).map_err(|source| Error::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                Ok(format!("hf:{:016x}", crate::base::seed::fnv1a(&data)))
            }
        }
    }

    /// The id that ends an answer or document (`\n` for bytes; `eos` if the tokenizer has one).
    pub fn eos_id(&self) -> i64 {
        match self {
            Tokenizer::Bytes => b'\n' as i64,
            Tokenizer::Hf { inner, .. } => ["</s>", "<|endoftext|>", "<eos>", "[SEP]"]
                .iter()
                .find_map(|t| inner.token_to_id(t))
                .map(|i| i as i64)
                .unwrap_or(0),
        }
    }
}
