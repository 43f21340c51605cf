//! `[data]`, typed: one variant per source, each with only the keys that source reads, plus
//! the keys every source has (`eval_fraction`, `cache_dir`).
//!
//! ```toml
//! [data]
//! source = "jsonl"            # text | jsonl | csv | synthetic | chat
//! files = ["train.jsonl"]     # the source's own keys ...
//! seq_len = 512
//! eval_fraction = 0.05        # ... and the shared ones
//! ```

use super::spec_keys::decode_source;
use crate::base::{Error, Result};
use serde::{Deserialize, Serialize};

/// The whole `[data]` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataSpec {
    pub source: Source,
    /// Fraction of examples held out for evaluation (deterministic from the seed).
    pub eval_fraction: f64,
    /// Where tokenized data is cached (default `<out_dir>/cache`), relative to the recipe.
    pub cache_dir: Option<String>,
    /// Pack training examples into `seq_len + 1`-token windows (language models).
    pub pack: bool,
}

/// Where examples come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Source {
    Text(TextSource),
    Jsonl(JsonlSource),
    Csv(CsvSource),
    Synthetic(SyntheticSource),
    Chat(ChatSource),
    Parquet(ParquetSource),
    /// `[[data.sources]]`: several sources mixed by weight.
    Mixture(Vec<Weighted>),
}

/// `source = "parquet"`: rows of parquet files, read a row group at a time. A file with the
/// `messages_field` column holds conversations (as `chat`); otherwise rows are read as jsonl
/// lines are (`text_field`, or `prompt_field` + `completion_field`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParquetSource {
    pub files: Vec<String>,
    pub tokenizer: Tokenizer,
    pub seq_len: Option<usize>,
    pub text_field: String,
    pub prompt_field: String,
    pub completion_field: String,
    pub template: String,
    pub messages_field: String,
    pub chat_template: Option<String>,
    pub train_on: TrainOn,
    pub overflow: Overflow,
}

impl Default for ParquetSource {
    fn default() -> Self {
        let j = JsonlSource::default();
        let c = ChatSource::default();
        ParquetSource {
            files: vec![],
            tokenizer: Tokenizer::default(),
            seq_len: None,
            text_field: j.text_field,
            prompt_field: j.prompt_field,
            completion_field: j.completion_field,
            template: j.template,
            messages_field: c.messages_field,
            chat_template: None,
            train_on: c.train_on,
            overflow: c.overflow,
        }
    }
}

impl ParquetSource {
    /// Its rows read as jsonl records.
    pub fn as_jsonl(&self) -> JsonlSource {
        JsonlSource {
            files: self.files.clone(),
            tokenizer: self.tokenizer.clone(),
            seq_len: self.seq_len,
            text_field: self.text_field.clone(),
            prompt_field: self.prompt_field.clone(),
            completion_field: self.completion_field.clone(),
            template: self.template.clone(),
        }
    }
    /// Its rows read as conversations.
    pub fn as_chat(&self) -> ChatSource {
        ChatSource {
            files: self.files.clone(),
            tokenizer: self.tokenizer.clone(),
            seq_len: self.seq_len,
            messages_field: self.messages_field.clone(),
            chat_template: self.chat_template.clone(),
            train_on: self.train_on,
            overflow: self.overflow,
        }
    }
}

/// One source of a mixture and its weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Weighted {
    pub weight: f64,
    pub source: Source,
}

/// Which tokens of a conversation carry the loss.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TrainOn {
    /// Each assistant message's content and the end-of-turn tokens after it.
    #[default]
    Assistant,
    /// Every token.
    All,
}

/// What to do with an example longer than `seq_len + 1` tokens.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Leave it out (and count it).
    #[default]
    Skip,
    /// Keep its first `seq_len + 1` tokens (and count it).
    Truncate,
}

/// `source = "chat"`: one conversation per jsonl line, rendered with a chat template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatSource {
    pub files: Vec<String>,
    pub tokenizer: Tokenizer,
    pub seq_len: Option<usize>,
    /// The field holding the `[{"role": ..., "content": ...}, ...]` list.
    pub messages_field: String,
    /// A Jinja template file (relative to the recipe); default: the tokenizer's.
    pub chat_template: Option<String>,
    pub train_on: TrainOn,
    pub overflow: Overflow,
}

impl Default for ChatSource {
    fn default() -> Self {
        ChatSource {
            files: vec![],
            tokenizer: Tokenizer::default(),
            seq_len: None,
            messages_field: "messages".into(),
            chat_template: None,
            train_on: TrainOn::default(),
            overflow: Overflow::default(),
        }
    }
}

/// `source = "text"`: files concatenated (documents separated by the end token) and cut into
/// windows of `seq_len + 1` tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextSource {
    /// Files or globs (`*`, `?`), relative to the recipe's directory.
    pub files: Vec<String>,
    pub tokenizer: Tokenizer,
    /// Tokens per training window.
    pub seq_len: Option<usize>,
}

/// `source = "jsonl"`: one example per line, `text`, or `prompt` + `completion` with the loss
/// masked on the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JsonlSource {
    pub files: Vec<String>,
    pub tokenizer: Tokenizer,
    pub seq_len: Option<usize>,
    /// The field with plain text.
    pub text_field: String,
    /// The prompt field (loss masked).
    pub prompt_field: String,
    /// The completion field (loss on these tokens).
    pub completion_field: String,
    /// How the prompt is written before tokenizing; `{prompt}` is replaced.
    pub template: String,
}

impl Default for JsonlSource {
    fn default() -> Self {
        JsonlSource {
            files: vec![],
            tokenizer: Tokenizer::default(),
            seq_len: None,
            text_field: "text".into(),
            prompt_field: "prompt".into(),
            completion_field: "completion".into(),
            template: "{prompt}".into(),
        }
    }
}

/// What a csv target is.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CsvTask {
    /// Mean squared error on a number.
    #[default]
    Regression,
    /// Cross-entropy over integer classes.
    Classification,
}

/// `source = "csv"`: numeric feature rows and a target, for MLP regression or classification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CsvSource {
    pub files: Vec<String>,
    /// Feature columns.
    pub features: Vec<String>,
    /// The target column.
    pub target: Option<String>,
    pub task: CsvTask,
}

/// Built-in generators for `source = "synthetic"`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Generator {
    /// `37+58=` -> `95\n`.
    Addition,
    /// `k3f9=` -> `k3f9\n`.
    Copy,
    /// `k3f9=` -> `9f3k\n`.
    Reverse,
}

/// `source = "synthetic"`: examples generated from the seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticSource {
    pub generator: Option<Generator>,
    pub tokenizer: Tokenizer,
    pub seq_len: Option<usize>,
    /// How many examples.
    pub num_examples: usize,
    /// Addition: operands have at most this many digits.
    pub max_digits: u32,
    /// Copy and reverse: string length.
    pub length: usize,
}

impl Default for SyntheticSource {
    fn default() -> Self {
        SyntheticSource {
            generator: None,
            tokenizer: Tokenizer::default(),
            seq_len: None,
            num_examples: 20_000,
            max_digits: 2,
            length: 8,
        }
    }
}

/// `tokenizer`: `bytes`, or a HuggingFace tokenizer.json or a directory holding one (relative
/// to the recipe). Default: the `[model] hf` directory's, else `bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tokenizer(pub String);

impl Default for Tokenizer {
    fn default() -> Self {
        Tokenizer("bytes".into())
    }
}

/// The keys every source has.
pub(super) const SHARED: [&str; 3] = ["eval_fraction", "cache_dir", "pack"];
const SOURCES: [&str; 6] = ["text", "jsonl", "csv", "synthetic", "chat", "parquet"];

fn bad<T>(field: &str, message: String) -> Result<T> {
    Err(Error::ConfigField {
        field: field.into(),
        message,
    })
}

/// Decodes one source named `name` from its keys (without `source`).
pub(super) fn source_of(name: &str, own: &toml::Table) -> Result<Source> {
    Ok(match name {
        "text" => Source::Text(decode_source("text", own)?),
        "jsonl" => Source::Jsonl(decode_source("jsonl", own)?),
        "csv" => Source::Csv(decode_source("csv", own)?),
        "synthetic" => Source::Synthetic(decode_source("synthetic", own)?),
        "chat" => Source::Chat(decode_source("chat", own)?),
        "parquet" => Source::Parquet(decode_source("parquet", own)?),
        other => {
            let expected: Vec<String> = SOURCES.iter().map(|k| format!("`{k}`")).collect();
            return bad(
                "source",
                format!(
                    "[data]: unknown variant `{other}`, expected one of {}",
                    expected.join(", ")
                ),
            );
        }
    })
}

impl DataSpec {
    /// Decodes the `[data]` table: `source` picks the variant, which takes its own keys and
    /// the shared ones; anything else is an error naming the key.
    pub fn decode(t: &toml::Table) -> Result<DataSpec> {
        let mut own = t.clone();
        let mut shared = toml::Table::new();
        for k in SHARED {
            if let Some(v) = own.remove(k) {
                shared.insert(k.to_string(), v);
            }
        }
        let source = match own.remove("sources") {
            Some(list) => {
                if own.contains_key("source") {
                    return bad(
                        "source",
                        "[data]: give either `source` or `[[data.sources]]`, not both".into(),
                    );
                }
                super::spec_keys::decode_mixture(&list, &own)?
            }
            None => {
                let name = match own.remove("source") {
                    Some(toml::Value::String(s)) => s,
                    Some(_) => return bad("source", "[data]: `source` must be a string".into()),
                    None => {
                        return bad(
                            "",
                            "[data]: missing field `source` (or `[[data.sources]]`)".into(),
                        )
                    }
                };
                source_of(&name, &own)?
            }
        };
        let eval_fraction = match shared.get("eval_fraction") {
            None => 0.1,
            Some(v) => match v.as_float().or(v.as_integer().map(|i| i as f64)) {
                Some(f) => f,
                None => {
                    return bad(
                        "eval_fraction",
                        "[data]: invalid type for `eval_fraction`, expected a number".into(),
                    )
                }
            },
        };
        let cache_dir = match shared.get("cache_dir") {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return bad(
                    "cache_dir",
                    "[data]: invalid type for `cache_dir`, expected a string".into(),
                )
            }
        };
        let pack = match shared.get("pack") {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(_) => {
                return bad(
                    "pack",
                    "[data]: invalid type for `pack`, expected true or false".into(),
                )
            }
        };
        let spec = DataSpec {
            source,
            eval_fraction,
            cache_dir,
            pack,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Whether examples are token sequences (everything but csv).
    pub fn is_lm(&self) -> bool {
        !matches!(self.source, Source::Csv(_))
    }

    /// Tokens per window (language models).
    pub fn seq_len(&self) -> Option<usize> {
        self.source.seq_len()
    }

    /// The tokenizer (language models).
    pub fn tokenizer(&self) -> Option<&str> {
        self.source.tokenizer()
    }

    /// Sets the tokenizer of a language-model source (the model's own, by default).
    pub fn set_tokenizer(&mut self, t: &str) {
        self.source.set_tokenizer(t)
    }

    /// The data files (none for synthetic data; every source's for a mixture).
    pub fn files(&self) -> Vec<String> {
        self.source.files()
    }

    /// The source's name (`text`, ...).
    pub fn source_name(&self) -> &'static str {
        self.source.name()
    }

    /// Checks the values; `field` names the offending key.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return bad(
                "eval_fraction",
                format!(
                    "[data]: eval_fraction must be in [0, 1), got {}",
                    self.eval_fraction
                ),
            );
        }
        if self.pack && !self.is_lm() {
            return bad(
                "pack",
                "[data]: `pack` packs token examples; csv rows cannot be packed".into(),
            );
        }
        self.source.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn table(s: &str) -> std::result::Result<toml::Table, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn each_source_takes_only_its_keys() -> TestResult {
        let d = DataSpec::decode(&table(
            "source = \"synthetic\"\ngenerator = \"copy\"\nseq_len = 8\neval_fraction = 0.2",
        )?)?;
        assert!(matches!(d.source, Source::Synthetic(ref s) if s.length == 8));
        assert_eq!(d.eval_fraction, 0.2);
        let e = DataSpec::decode(&table(
            "source = \"text\"\nfiles = [\"a.txt\"]\nseq_len = 8\ngenerator = \"copy\"",
        )?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.contains("unknown field `generator`") && e.contains("`eval_fraction`"),
            "{e}"
        );
        let e = DataSpec::decode(&table("source = \"txt\"")?)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown variant `txt`"), "{e}");
        Ok(())
    }
}
