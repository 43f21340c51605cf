//! What a `[data]` source says (its files, tokenizer and window) and the checks of its own
//! values, for single sources and each source of a mixture.

use super::spec::{Source, Tokenizer};
use crate::base::{Error, Result};

/// The longest `seq_len` (and synthetic `length`) pzt accepts.
pub const MAX_SEQ: usize = 1 << 20;

/// The most synthetic examples pzt generates.
pub const MAX_SYNTHETIC: usize = 1 << 26;

fn bad<T>(field: &str, message: String) -> Result<T> {
    Err(Error::ConfigField {
        field: field.into(),
        message,
    })
}

impl Source {
    /// Tokens per window (language models).
    pub fn seq_len(&self) -> Option<usize> {
        match self {
            Source::Text(s) => s.seq_len,
            Source::Jsonl(s) => s.seq_len,
            Source::Synthetic(s) => s.seq_len,
            Source::Chat(s) => s.seq_len,
            Source::Parquet(s) => s.seq_len,
            Source::Mixture(m) => m.first().and_then(|w| w.source.seq_len()),
            Source::Csv(_) => None,
        }
    }

    /// The tokenizer (language models).
    pub fn tokenizer(&self) -> Option<&str> {
        match self {
            Source::Text(s) => Some(&s.tokenizer.0),
            Source::Jsonl(s) => Some(&s.tokenizer.0),
            Source::Synthetic(s) => Some(&s.tokenizer.0),
            Source::Chat(s) => Some(&s.tokenizer.0),
            Source::Parquet(s) => Some(&s.tokenizer.0),
            Source::Mixture(m) => m.first().and_then(|w| w.source.tokenizer()),
            Source::Csv(_) => None,
        }
    }

    /// Sets the tokenizer of a language-model source (the model's own, by default).
    pub fn set_tokenizer(&mut self, t: &str) {
        let slot = match self {
            Source::Text(s) => &mut s.tokenizer,
            Source::Jsonl(s) => &mut s.tokenizer,
            Source::Synthetic(s) => &mut s.tokenizer,
            Source::Chat(s) => &mut s.tokenizer,
            Source::Parquet(s) => &mut s.tokenizer,
            Source::Mixture(m) => {
                for w in m {
                    w.source.set_tokenizer(t);
                }
                return;
            }
            Source::Csv(_) => return,
        };
        *slot = Tokenizer(t.to_string());
    }

    /// The data files (none for synthetic data; every source's for a mixture).
    pub fn files(&self) -> Vec<String> {
        match self {
            Source::Text(s) => s.files.clone(),
            Source::Jsonl(s) => s.files.clone(),
            Source::Csv(s) => s.files.clone(),
            Source::Chat(s) => s.files.clone(),
            Source::Parquet(s) => s.files.clone(),
            Source::Synthetic(_) => vec![],
            Source::Mixture(m) => m.iter().flat_map(|w| w.source.files()).collect(),
        }
    }

    /// The source's name (`text`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Source::Text(_) => "text",
            Source::Jsonl(_) => "jsonl",
            Source::Csv(_) => "csv",
            Source::Synthetic(_) => "synthetic",
            Source::Chat(_) => "chat",
            Source::Parquet(_) => "parquet",
            Source::Mixture(_) => "mixture",
        }
    }
}

impl Source {
    /// Checks a source's own values (each of a mixture's).
    pub(super) fn validate(&self) -> Result<()> {
        if let Source::Mixture(m) = self {
            for (i, w) in m.iter().enumerate() {
                w.source.validate().map_err(|e| match e {
                    Error::ConfigField { field, message } => Error::ConfigField {
                        field: format!("sources.{i}.{field}"),
                        message,
                    },
                    other => other,
                })?;
            }
            return Ok(());
        }
        if !matches!(self, Source::Synthetic(_)) && self.files().is_empty() {
            return bad(
                "files",
                format!("[data]: source `{}` needs `files = [\"...\"]`", self.name()),
            );
        }
        if let Source::Synthetic(s) = self {
            if s.generator.is_none() {
                return bad("generator", "[data]: source `synthetic` needs `generator = \"addition\" | \"copy\" | \"reverse\"`".into());
            }
        }
        if let Some(n) = self.seq_len().filter(|&n| n > MAX_SEQ) {
            return bad(
                "seq_len",
                format!("[data]: seq_len {n} is more than pzt accepts ({MAX_SEQ})"),
            );
        }
        if let Source::Synthetic(s) = self {
            if s.num_examples > MAX_SYNTHETIC {
                return bad(
                    "num_examples",
                    format!(
                        "[data]: num_examples {} is more than pzt generates ({MAX_SYNTHETIC})",
                        s.num_examples
                    ),
                );
            }
            if s.length == 0 || s.length > MAX_SEQ {
                return bad(
                    "length",
                    format!("[data]: length must be 1 to {MAX_SEQ}, got {}", s.length),
                );
            }
        }
        if !matches!(self, Source::Csv(_)) && self.seq_len().unwrap_or(0) < 2 {
            return bad(
                "seq_len",
                "[data]: language-model data needs `seq_len` of at least 2".into(),
            );
        }
        match self {
            Source::Csv(c) if c.features.is_empty() || c.target.is_none() => bad(
                "features",
                "[data]: csv needs `features = [\"col\", ...]` and `target = \"col\"`".into(),
            ),
            Source::Synthetic(s) if s.num_examples < 2 => bad(
                "num_examples",
                "[data]: num_examples must be at least 2".into(),
            ),
            Source::Synthetic(s) if !(1..=9).contains(&s.max_digits) => bad(
                "max_digits",
                format!("[data]: max_digits must be 1..=9, got {}", s.max_digits),
            ),
            _ => Ok(()),
        }
    }
}
