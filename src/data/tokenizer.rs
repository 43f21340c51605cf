//! Tokenizers: `bytes` (one id per UTF-8 byte, 256 ids) and a HuggingFace `tokenizer.json`,
//! named directly or by its directory. Next to it, `tokenizer_config.json` gives the special
//! tokens (`eos_token`, `bos_token`) and the `chat_template` (or a `chat_template.jinja` file
//! does), as transformers reads them.

use crate::base::files::read_small_file;
use crate::base::{Error, Result};
use std::path::{Path, PathBuf};

/// A token's byte range `[start, end)` in the text it came from.
pub type Span = (usize, usize);

/// What `tokenizer_config.json` (and `chat_template.jinja`) say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerConfig {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// The Jinja chat template.
    pub chat_template: Option<String>,
}

/// A tokenizer.
pub enum Tokenizer {
    /// Ids 0..=255 are the bytes of the UTF-8 text.
    Bytes,
    /// A HuggingFace tokenizer.json.
    Hf {
        path: PathBuf,
        inner: Box<tokenizers::Tokenizer>,
        config: TokenizerConfig,
        /// The special tokens its post-processor puts before and after a text.
        ends: Box<(Vec<i64>, Vec<i64>)>,
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

/// A special token as `tokenizer_config.json` writes it: a string or `{"content": ...}`.
fn token_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(String::from),
        _ => None,
    }
}

/// Reads the tokenizer's directory companions (absent files are no error; bad ones are): the
/// special tokens and chat template of `tokenizer_config.json`, the template of
/// `chat_template.jinja` taking precedence (as in transformers' `from_pretrained`).
pub fn read_config(dir: &Path) -> Result<TokenizerConfig> {
    let mut c = TokenizerConfig::default();
    let cp = dir.join("tokenizer_config.json");
    if cp.exists() {
        let text = read_small_file(&cp)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::bad_file(cp.display(), e.to_string()))?;
        c.bos_token = token_text(v.get("bos_token"));
        c.eos_token = token_text(v.get("eos_token"));
        c.chat_template = match v.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: the one named `default`.
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(String::from),
            _ => None,
        };
    }
    // As transformers: a `chat_template.jinja` file wins over the config's template.
    let jp = dir.join("chat_template.jinja");
    if jp.exists() {
        c.chat_template = Some(read_small_file(&jp)?);
    }
    Ok(c)
}

/// The most bytes of text tokenized in one call: a longer text (a 40 MB line without a newline,
/// a huge parquet cell) is tokenized in pieces of at most this size, cut after whitespace where
/// there is some (else at a character boundary), so that the tokenizer's memory stays bounded
/// (one call over 40 MB took gigabytes); the size of the pieces a text file is read in. Tokens can differ from one call only at the cuts.
pub const LONG_TEXT: usize = 256 << 10;

/// `text` cut into pieces of at most [`LONG_TEXT`] bytes, each with its byte offset.
pub fn long_pieces(text: &str) -> Vec<(usize, &str)> {
    let mut out = vec![];
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        if rest.len() <= LONG_TEXT {
            out.push((at, rest));
            break;
        }
        let mut end = LONG_TEXT;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        // After the last whitespace of the piece, unless that leaves too little.
        if let Some(ws) = rest[..end].rfind(char::is_whitespace) {
            let cut = ws + rest[ws..].chars().next().map_or(1, char::len_utf8);
            if cut > LONG_TEXT / 2 {
                end = cut;
            }
        }
        out.push((at, &rest[..end]));
        at += end;
    }
    out
}

/// The special tokens a tokenizer's post-processor adds before and after a text: those of a
/// probe text, up to its first and after its last token of text (for a vocabulary that cannot
/// encode the probe, those of the empty text, before it).
fn special_ends(t: &tokenizers::Tokenizer) -> (Vec<i64>, Vec<i64>) {
    let Some(e) = ["a", ""].iter().find_map(|p| t.encode(*p, true).ok()) else {
        return (vec![], vec![]);
    };
    let ids = e.get_ids();
    let special = e.get_special_tokens_mask();
    let first = special.iter().position(|&m| m == 0).unwrap_or(ids.len());
    let last = special
        .iter()
        .rposition(|&m| m == 0)
        .map_or(first, |l| l + 1);
    let take = |r: &[u32]| r.iter().map(|&i| i as i64).collect::<Vec<i64>>();
    (take(&ids[..first]), take(&ids[last.max(first)..]))
}

impl Tokenizer {
    /// `bytes`, or a tokenizer.json (or a directory holding one), relative to `base_dir`.
    pub fn load(spec: &str, base_dir: &Path) -> Result<Tokenizer> {
        if spec == "bytes" {
            return Ok(Tokenizer::Bytes);
        }
        let given = base_dir.join(spec);
        let path = if given.is_dir() {
            given.join("tokenizer.json")
        } else {
            given
        };
        // A regular file of bounded size (a FIFO or device is refused, not read forever).
        let text = read_small_file(&path).map_err(|e| {
            let why = match e {
                Error::BadFile { message, .. } => message,
                other => other.to_string(),
            };
            Error::Config(format!("cannot load tokenizer `{}`: {why}", path.display()))
        })?;
        // The tokenizers crate panics on some malformed JSON (inside `decoder`): check the
        // JSON first.
        serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| {
            Error::Config(format!(
                "cannot load tokenizer `{}`: not valid JSON: {e}",
                path.display()
            ))
        })?;
        let inner = text.parse::<tokenizers::Tokenizer>().map_err(|e| {
            Error::Config(format!("cannot load tokenizer `{}`: {e}", path.display()))
        })?;
        let config = read_config(path.parent().unwrap_or(Path::new(".")))?;
        let ends = Box::new(special_ends(&inner));
        Ok(Tokenizer::Hf {
            path,
            inner: Box::new(inner),
            config,
            ends,
        })
    }

    /// The tokenizer.json file (None for the built-in bytes tokenizer).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Tokenizer::Bytes => None,
            Tokenizer::Hf { path, .. } => Some(path),
        }
    }

    /// The special tokens and chat template (empty for bytes).
    pub fn config(&self) -> TokenizerConfig {
        match self {
            Tokenizer::Bytes => TokenizerConfig::default(),
            Tokenizer::Hf { config, .. } => config.clone(),
        }
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> i64 {
        match self {
            Tokenizer::Bytes => 256,
            Tokenizer::Hf { inner, .. } => inner.get_vocab_size(true) as i64,
        }
    }

    /// Token ids of `text` (no special tokens added; special tokens written in the text are
    /// recognized).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        if text.len() > LONG_TEXT {
            let mut ids = vec![];
            for (_, piece) in long_pieces(text) {
                ids.extend(self.encode(piece)?);
            }
            return Ok(ids);
        }
        match self {
            Tokenizer::Bytes => Ok(text.bytes().map(|b| b as i64).collect()),
            Tokenizer::Hf { inner, path, .. } => inner
                .encode_fast(text, false)
                .map(|e| e.get_ids().iter().map(|&i| i as i64).collect())
                .map_err(|e| Error::Config(format!("tokenizer `{}` failed: {e}", path.display()))),
        }
    }

    /// Token ids of `text` as transformers' `tokenizer(text)` gives them: with the special
    /// tokens the tokenizer.json's post-processor adds around a text (Llama's BOS, BERT's
    /// `[CLS]` and `[SEP]`). As in transformers 5, a tokenizer_config.json's `add_bos_token`
    /// and `add_eos_token` do not change a tokenizer.json's post-processor.
    pub fn encode_special(&self, text: &str) -> Result<Vec<i64>> {
        let (before, after) = self.special_ends();
        let mut ids = before.to_vec();
        ids.extend(self.encode(text)?);
        ids.extend_from_slice(after);
        Ok(ids)
    }

    /// The special tokens [`Self::encode_special`] puts before and after a text.
    pub fn special_ends(&self) -> (&[i64], &[i64]) {
        match self {
            Tokenizer::Bytes => (&[], &[]),
            Tokenizer::Hf { ends, .. } => (&ends.0, &ends.1),
        }
    }

    /// Token ids of `text` with the byte span of each in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<i64>, Vec<Span>)> {
        if text.len() > LONG_TEXT {
            let (mut ids, mut spans) = (vec![], vec![]);
            for (at, piece) in long_pieces(text) {
                let (i, s) = self.encode_with_offsets(piece)?;
                ids.extend(i);
                spans.extend(s.into_iter().map(|(a, b)| (a + at, b + at)));
            }
            return Ok((ids, spans));
        }
        match self {
            Tokenizer::Bytes => Ok((
                text.bytes().map(|b| b as i64).collect(),
                (0..text.len()).map(|i| (i, i + 1)).collect(),
            )),
            Tokenizer::Hf { inner, path, .. } => {
                let e = inner.encode(text, false).map_err(|e| {
                    Error::Config(format!("tokenizer `{}` failed: {e}", path.display()))
                })?;
                Ok((
                    e.get_ids().iter().map(|&i| i as i64).collect(),
                    e.get_offsets().to_vec(),
                ))
            }
        }
    }

    /// Whether decoding joins tokens back into text (a byte tokenizer, or a tokenizer.json
    /// with a `decoder`); without a decoder, decoded tokens are separated by spaces.
    pub fn has_decoder(&self) -> bool {
        match self {
            Tokenizer::Bytes => true,
            Tokenizer::Hf { inner, .. } => inner.get_decoder().is_some(),
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

    /// An identity string for cache keys: `bytes`, or the content hash of the tokenizer file
    /// and its config.
    pub fn identity(&self) -> Result<String> {
        match self {
            Tokenizer::Bytes => Ok("bytes".into()),
            Tokenizer::Hf { path, config, .. } => {
                let data = std::fs::read(path).map_err(|source| Error::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                let h = crate::base::seed::mix(
                    crate::base::seed::fnv1a(&data),
                    crate::base::seed::fnv1a(format!("{config:?}").as_bytes()),
                );
                Ok(format!("hf:{h:016x}"))
            }
        }
    }

    /// The id of a token, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        match self {
            Tokenizer::Bytes => None,
            Tokenizer::Hf { inner, .. } => inner.token_to_id(token).map(|i| i as i64),
        }
    }

    /// The id that ends an answer or document: `\n` for bytes; the configured `eos_token`, or
    /// a conventional end token the vocabulary has.
    pub fn eos_id(&self) -> i64 {
        match self {
            Tokenizer::Bytes => b'\n' as i64,
            Tokenizer::Hf { inner, config, .. } => config
                .eos_token
                .as_deref()
                .and_then(|t| inner.token_to_id(t))
                .or_else(|| {
                    ["</s>", "<|endoftext|>", "<eos>", "[SEP]"]
                        .iter()
                        .find_map(|t| inner.token_to_id(t))
                })
                .map(|i| i as i64)
                .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_template_file_wins_over_the_config_as_in_transformers() -> Result<()> {
        let d = std::env::temp_dir().join(format!("pzt-tok-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).map_err(|e| Error::Config(e.to_string()))?;
        let w = |name: &str, text: &str| {
            std::fs::write(d.join(name), text).map_err(|e| Error::Config(e.to_string()))
        };
        w(
            "tokenizer_config.json",
            r#"{"chat_template": "from config"}"#,
        )?;
        assert_eq!(
            read_config(&d)?.chat_template.as_deref(),
            Some("from config")
        );
        w("chat_template.jinja", "from file")?;
        assert_eq!(read_config(&d)?.chat_template.as_deref(), Some("from file"));
        let _ = std::fs::remove_dir_all(&d);
        Ok(())
    }

    #[test]
    fn long_texts_are_cut_after_whitespace_within_the_limit() {
        let text = "word ".repeat(LONG_TEXT / 2);
        let pieces = long_pieces(&text);
        assert!(pieces.len() >= 3);
        let mut at = 0;
        for (start, p) in &pieces {
            assert_eq!(*start, at);
            assert!(p.len() <= LONG_TEXT);
            at += p.len();
        }
        assert_eq!(at, text.len());
        assert!(pieces[..pieces.len() - 1]
            .iter()
            .all(|(_, p)| p.ends_with(' ')));
        // No whitespace: cut at character boundaries.
        let wide = "é".repeat(LONG_TEXT);
        assert!(long_pieces(&wide).iter().all(|(_, p)| p.len() <= LONG_TEXT));
    }
}
