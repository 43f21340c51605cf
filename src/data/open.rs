//! Opening a run's data, in one place for training, `pzt data` and loading a model: the
//! tokenizer `[data]` names, where prepared data is kept, and the examples (prepared once,
//! then read from the store). Errors are `[data]`'s, for the recipe to point at their key.

use super::spec::DataSpec;
use super::tokenizer::Tokenizer;
use super::{sources, Dataset};
use crate::base::{Error, Result};
use std::path::{Path, PathBuf};

/// A run's data, opened.
pub struct Opened {
    /// The tokenizer of a language-model source (None for features).
    pub tokenizer: Option<Tokenizer>,
    pub dataset: Dataset,
    /// Whether the examples came from the store (prepared by an earlier run).
    pub cached: bool,
}

impl DataSpec {
    /// Where prepared stores are kept: `cache_dir` (relative to `base`, the recipe's
    /// directory), else `<out_dir>/cache`.
    pub fn cache_path(&self, base: &Path, out_dir: &Path) -> PathBuf {
        match &self.cache_dir {
            Some(c) => base.join(c),
            None => out_dir.join("cache"),
        }
    }

    /// The tokenizer the source names (paths relative to `base`), if any.
    pub fn load_tokenizer(&self, base: &Path) -> Result<Option<Tokenizer>> {
        self.tokenizer()
            .map(|name| Tokenizer::load(name, base))
            .transpose()
    }
}

impl Dataset {
    /// Opens the data of `spec` for a run writing to `out_dir` with `seed`: its tokenizer,
    /// then its examples. A failure is `[data]`'s (the tokenizer's at `data.tokenizer`).
    pub fn open(spec: &DataSpec, base: &Path, out_dir: &Path, seed: u64) -> Result<Opened> {
        let tokenizer = spec.load_tokenizer(base).map_err(|e| {
            Error::ConfigField {
                field: "tokenizer".into(),
                message: e.to_string(),
            }
            .in_section("data")
        })?;
        let (dataset, cached) = Dataset::open_with(spec, base, out_dir, seed, tokenizer.as_ref())?;
        Ok(Opened {
            tokenizer,
            dataset,
            cached,
        })
    }

    /// [`Dataset::open`]'s examples, with a tokenizer already loaded.
    pub fn open_with(
        spec: &DataSpec,
        base: &Path,
        out_dir: &Path,
        seed: u64,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<(Dataset, bool)> {
        let cache = spec.cache_path(base, out_dir);
        sources::load(spec, base, &cache, seed, tokenizer).map_err(|e| e.in_section("data"))
    }
}
