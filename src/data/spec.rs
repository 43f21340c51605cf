//! `[data]`, typed: where rows come from (a [`Reader`]: text, jsonl, parquet or csv files, or
//! a generator) times what a row is (a [`Format`]: documents, records of text or
//! prompt/completion, conversations, or feature rows). Token data states its tokenizer and
//! window once, for every stream of a mixture; the task a run trains follows from the format.
//!
//! The recipe names a reader and a format together with `source` (decoded in
//! [`super::decode`]):
//!
//! | `source`    | reader      | format                                        |
//! |-------------|-------------|-----------------------------------------------|
//! | `text`      | text files  | documents                                     |
//! | `jsonl`     | jsonl lines | records (`text`, or `prompt` + `completion`)  |
//! | `chat`      | jsonl lines | conversations                                 |
//! | `parquet`   | parquet rows| conversations where a file has the messages column, else records |
//! | `synthetic` | a generator | records (`prompt` + `completion`)             |
//! | `csv`       | csv rows    | features and a target                         |
//! | `preference`| jsonl lines, or parquet rows (`.parquet` files) | preference pairs or unpaired rows, TRL's shapes |
//!
//! ```toml
//! [data]
//! source = "jsonl"            # text | jsonl | csv | synthetic | chat | parquet
//! files = ["train.jsonl"]     # the source's own keys ...
//! seq_len = 512
//! eval_fraction = 0.05        # ... and the shared ones
//! ```

use crate::base::{Error, Result};
use serde::{Deserialize, Serialize};

/// The longest `seq_len` (and synthetic `length`) pzt accepts.
pub const MAX_SEQ: usize = 1 << 20;

/// The most synthetic examples pzt generates.
pub const MAX_SYNTHETIC: usize = 1 << 26;

/// The whole `[data]` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataSpec {
    /// The streams of examples: one, or a weighted mixture.
    pub streams: Streams,
    /// The tokenizer and window of token data (every stream's); None for feature rows.
    pub tokens: Option<TokenWindow>,
    /// Fraction of examples held out for evaluation (deterministic from the seed).
    pub eval_fraction: f64,
    /// Where tokenized data is cached (default `<out_dir>/cache`), relative to the recipe.
    pub cache_dir: Option<String>,
    /// Pack training examples into `seq_len + 1`-token windows (language models).
    pub pack: bool,
    /// The eval split's own files, read as the training files (instead of `eval_fraction`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub eval_files: Vec<String>,
}

/// The tokenizer and window of token data, set once in `[data]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TokenWindow {
    pub tokenizer: Tokenizer,
    /// Tokens per training window (an example holds up to `seq_len + 1`).
    pub seq_len: Option<usize>,
}

/// One stream of examples, or several mixed by weight (`[[data.sources]]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Streams {
    One(Box<Stream>),
    Mixture(Vec<Weighted>),
}

/// One stream of a mixture and its weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Weighted {
    pub weight: f64,
    pub stream: Stream,
}

/// Where rows come from and what a row is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stream {
    pub reader: Reader,
    pub format: Format,
}

/// Where rows come from. Files are patterns (globs in the file-name part) relative to the
/// recipe's directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Reader {
    /// Text files, each a document.
    Text { files: Vec<String> },
    /// One JSON object per line.
    Jsonl { files: Vec<String> },
    /// Parquet rows, as the JSON objects of their columns, a row group at a time.
    Parquet { files: Vec<String> },
    /// CSV rows with a header line.
    Csv { files: Vec<String> },
    /// Records generated from the seed.
    Synthetic(Synthetic),
}

/// What a row is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Format {
    /// Plain documents, concatenated (separated by the end token) and cut into windows.
    Documents,
    /// A record's `text`, or its `prompt` + `completion` with the loss on the completion.
    Records(Records),
    /// A conversation rendered with a chat template.
    Chat(Chat),
    /// Parquet: conversations where a file has the messages column, records otherwise.
    ByColumns { records: Records, chat: Chat },
    /// Numeric feature columns and a target.
    Features(Features),
    /// Preference rows in TRL's shapes: pairs (`prompt`, `chosen`, `rejected`) or unpaired
    /// completions with a `label`.
    Preference(Preference),
}

/// The fields of preference rows and how their conversations are rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Preference {
    /// The prompt: a string, or a list of messages (absent: the beginning chosen and rejected
    /// share).
    pub prompt_field: String,
    /// A pair's preferred completion: a string, or a list of (assistant) messages.
    pub chosen_field: String,
    /// A pair's other completion.
    pub rejected_field: String,
    /// An unpaired row's completion.
    pub completion_field: String,
    /// An unpaired row's label: true for a desirable completion, false for an undesirable one.
    pub label_field: String,
    /// A Jinja template file for conversational rows (relative to the recipe); default: the
    /// tokenizer's.
    pub chat_template: Option<String>,
    /// The field holding a row's tools (a list of JSON schemas) for the template.
    pub tools_field: String,
    /// Variables every rendering gets; a row's `chat_template_kwargs` object goes over them.
    pub template_kwargs: Box<serde_json::Map<String, serde_json::Value>>,
    /// A pair or row longer than `seq_len + 1` tokens: skipped, or truncated (the prompt loses
    /// its first tokens; a completion longer than the window keeps its end).
    pub overflow: Overflow,
}

impl Default for Preference {
    fn default() -> Self {
        Preference {
            prompt_field: "prompt".into(),
            chosen_field: "chosen".into(),
            rejected_field: "rejected".into(),
            completion_field: "completion".into(),
            label_field: "label".into(),
            chat_template: None,
            tools_field: "tools".into(),
            template_kwargs: Box::default(),
            overflow: Overflow::default(),
        }
    }
}

/// The fields of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Records {
    /// The field with plain text.
    pub text_field: String,
    /// The prompt field (loss masked).
    pub prompt_field: String,
    /// The completion field (loss on these tokens).
    pub completion_field: String,
    /// How the prompt is written before tokenizing; `{prompt}` is replaced.
    pub template: String,
    /// A Jinja template over the row's fields that writes the prompt (alpaca's
    /// `{{ instruction }}`, ...), instead of `prompt_field` and `template`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
    /// A Jinja template over the row's fields that writes the completion (default: the
    /// `completion_field`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_template: Option<String>,
}

impl Default for Records {
    fn default() -> Self {
        Records {
            text_field: "text".into(),
            prompt_field: "prompt".into(),
            completion_field: "completion".into(),
            template: "{prompt}".into(),
            prompt_template: None,
            completion_template: None,
        }
    }
}

/// How a conversation is rendered and which of its tokens carry the loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Chat {
    /// The field holding the `[{"role": ..., "content": ...}, ...]` list.
    pub messages_field: String,
    /// A Jinja template file (relative to the recipe); default: the tokenizer's.
    pub chat_template: Option<String>,
    pub train_on: TrainOn,
    pub overflow: Overflow,
    /// The field holding a row's tools (a list of JSON schemas) for the template.
    pub tools_field: String,
    /// Variables every rendering gets (`{ enable_thinking = false }`); a row's
    /// `chat_template_kwargs` object goes over them.
    pub template_kwargs: Box<serde_json::Map<String, serde_json::Value>>,
    /// How a row holds its conversation.
    pub format: RowShape,
}

/// How a row holds its conversation.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RowShape {
    /// `[{"role": ..., "content": ...}, ...]`.
    #[default]
    Messages,
    /// ShareGPT's `[{"from": "human" | "gpt" | ..., "value": ...}, ...]` (axolotl's and
    /// LLaMA-Factory's `sharegpt`), under `conversations` by default.
    Sharegpt,
}

impl Default for Chat {
    fn default() -> Self {
        Chat {
            messages_field: "messages".into(),
            chat_template: None,
            train_on: TrainOn::default(),
            overflow: Overflow::default(),
            tools_field: "tools".into(),
            template_kwargs: Box::default(),
            format: RowShape::default(),
        }
    }
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
    /// The last assistant turn only (a common choice for reasoning data).
    Last,
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

/// Feature rows: numeric columns and a target, for MLP regression or classification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Features {
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

/// The generator of `source = "synthetic"`: prompt/completion records from the seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Synthetic {
    pub generator: Option<Generator>,
    /// How many examples.
    pub num_examples: usize,
    /// Addition: operands have at most this many digits.
    pub max_digits: u32,
    /// Copy and reverse: string length.
    pub length: usize,
}

impl Default for Synthetic {
    fn default() -> Self {
        Synthetic {
            generator: None,
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

/// The task a run trains, chosen by the format of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Next-token prediction over token sequences.
    LanguageModel,
    /// Regression or classification of feature rows.
    Features(CsvTask),
}

fn bad<T>(field: &str, message: String) -> Result<T> {
    Err(Error::ConfigField {
        field: field.into(),
        message,
    })
}

/// An error of stream `k` of a mixture, its field named under `sources.k`.
pub(super) fn in_stream(k: usize, e: Error) -> Error {
    match e {
        Error::ConfigField { field, message } => Error::ConfigField {
            field: format!("sources.{k}.{field}"),
            message,
        },
        other => other,
    }
}

impl Streams {
    /// Every stream (one, or each of a mixture).
    pub fn all(&self) -> Vec<&Stream> {
        match self {
            Streams::One(s) => vec![s],
            Streams::Mixture(m) => m.iter().map(|w| &w.stream).collect(),
        }
    }
}

impl Reader {
    /// The data files (none for a generator).
    pub fn files(&self) -> &[String] {
        match self {
            Reader::Text { files }
            | Reader::Jsonl { files }
            | Reader::Parquet { files }
            | Reader::Csv { files } => files,
            Reader::Synthetic(_) => &[],
        }
    }
}

impl Stream {
    /// The same reader and format over other files.
    pub fn with_files(&self, files: Vec<String>) -> Stream {
        let reader = match &self.reader {
            Reader::Text { .. } => Reader::Text { files },
            Reader::Jsonl { .. } => Reader::Jsonl { files },
            Reader::Parquet { .. } => Reader::Parquet { files },
            Reader::Csv { .. } => Reader::Csv { files },
            Reader::Synthetic(s) => Reader::Synthetic(s.clone()),
        };
        Stream {
            reader,
            format: self.format.clone(),
        }
    }

    /// The `source` name the recipe gives this reader and format.
    pub fn name(&self) -> &'static str {
        match (&self.reader, &self.format) {
            (Reader::Text { .. }, _) => "text",
            (_, Format::Preference(_)) => "preference",
            (Reader::Jsonl { .. }, Format::Chat(_)) => "chat",
            (Reader::Jsonl { .. }, _) => "jsonl",
            (Reader::Parquet { .. }, _) => "parquet",
            (Reader::Csv { .. }, _) => "csv",
            (Reader::Synthetic(_), _) => "synthetic",
        }
    }

    /// The chat template file this stream's conversations are rendered with, if it names one.
    pub fn chat_template(&self) -> Option<&String> {
        match &self.format {
            Format::Chat(c) | Format::ByColumns { chat: c, .. } => c.chat_template.as_ref(),
            Format::Preference(p) => p.chat_template.as_ref(),
            _ => None,
        }
    }

    /// Checks the stream's own values.
    fn validate(&self) -> Result<()> {
        if !matches!(self.reader, Reader::Synthetic(_)) && self.reader.files().is_empty() {
            return bad(
                "files",
                format!("[data]: source `{}` needs `files = [\"...\"]`", self.name()),
            );
        }
        if let Reader::Synthetic(s) = &self.reader {
            s.validate()?;
        }
        match &self.format {
            Format::Features(c) if c.features.is_empty() || c.target.is_none() => bad(
                "features",
                "[data]: csv needs `features = [\"col\", ...]` and `target = \"col\"`".into(),
            ),
            _ => Ok(()),
        }
    }
}

impl Synthetic {
    fn validate(&self) -> Result<()> {
        if self.generator.is_none() {
            return bad("generator", "[data]: source `synthetic` needs `generator = \"addition\" | \"copy\" | \"reverse\"`".into());
        }
        if self.num_examples > MAX_SYNTHETIC {
            return bad(
                "num_examples",
                format!(
                    "[data]: num_examples {} is more than pzt generates ({MAX_SYNTHETIC})",
                    self.num_examples
                ),
            );
        }
        if self.length == 0 || self.length > MAX_SEQ {
            return bad(
                "length",
                format!("[data]: length must be 1 to {MAX_SEQ}, got {}", self.length),
            );
        }
        if self.num_examples < 2 {
            return bad(
                "num_examples",
                "[data]: num_examples must be at least 2".into(),
            );
        }
        if !(1..=9).contains(&self.max_digits) {
            return bad(
                "max_digits",
                format!("[data]: max_digits must be 1..=9, got {}", self.max_digits),
            );
        }
        Ok(())
    }
}

impl DataSpec {
    /// Whether examples are token sequences (everything but feature rows).
    pub fn is_lm(&self) -> bool {
        self.tokens.is_some()
    }

    /// The task the rows call for.
    pub fn task_kind(&self) -> TaskKind {
        match self.features() {
            Some(f) => TaskKind::Features(f.task),
            None => TaskKind::LanguageModel,
        }
    }

    /// The feature columns and target of feature rows.
    pub fn features(&self) -> Option<&Features> {
        match &self.streams {
            Streams::One(s) => match &s.format {
                Format::Features(f) => Some(f),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the rows are preference rows (pairs or unpaired completions).
    pub fn is_preference(&self) -> bool {
        self.streams
            .all()
            .iter()
            .any(|s| matches!(s.format, Format::Preference(_)))
    }

    /// Tokens per window (language models).
    pub fn seq_len(&self) -> Option<usize> {
        self.tokens.as_ref().and_then(|t| t.seq_len)
    }

    /// The tokenizer (language models).
    pub fn tokenizer(&self) -> Option<&str> {
        self.tokens.as_ref().map(|t| t.tokenizer.0.as_str())
    }

    /// Sets the tokenizer of token data (the model's own, by default).
    pub fn set_tokenizer(&mut self, t: &str) {
        if let Some(w) = self.tokens.as_mut() {
            w.tokenizer = Tokenizer(t.to_string());
        }
    }

    /// The data files (every stream's).
    pub fn files(&self) -> Vec<String> {
        let all = self.streams.all();
        all.iter()
            .flat_map(|s| s.reader.files().iter().cloned())
            .chain(self.eval_files.iter().cloned())
            .collect()
    }

    /// The source's name (`text`, ..., `mixture`).
    pub fn source_name(&self) -> &'static str {
        match &self.streams {
            Streams::One(s) => s.name(),
            Streams::Mixture(_) => "mixture",
        }
    }

    /// The chat template file the (first) conversation stream names, if any.
    pub fn chat_template(&self) -> Option<&String> {
        self.streams
            .all()
            .into_iter()
            .find_map(|s| s.chat_template())
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
        if self.is_preference() {
            self.validate_preference()?;
        }
        match &self.streams {
            Streams::One(s) => s.validate()?,
            Streams::Mixture(m) => {
                for (k, w) in m.iter().enumerate() {
                    w.stream.validate().map_err(|e| in_stream(k, e))?;
                }
            }
        }
        if let Some(n) = self.seq_len().filter(|&n| n > MAX_SEQ) {
            return bad(
                "seq_len",
                format!("[data]: seq_len {n} is more than pzt accepts ({MAX_SEQ})"),
            );
        }
        if self.is_lm() && self.seq_len().unwrap_or(0) < 2 {
            return bad(
                "seq_len",
                "[data]: language-model data needs `seq_len` of at least 2".into(),
            );
        }
        Ok(())
    }

    /// Preference rows are not packed, and a mixture holding them holds nothing else.
    fn validate_preference(&self) -> Result<()> {
        if self.pack {
            return bad(
                "pack",
                "[data]: preference rows are not packed (each pair is its own sequences); remove `pack`".into(),
            );
        }
        let all = self.streams.all();
        if all
            .iter()
            .any(|s| !matches!(s.format, Format::Preference(_)))
        {
            return bad(
                "sources",
                "[data.sources]: a mixture of preference rows mixes only `preference` sources"
                    .into(),
            );
        }
        Ok(())
    }
}
