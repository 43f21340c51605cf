//! `[data]`: the sources and how they become examples.

use super::tokenizer::Tokenizer;
use super::{split, Dataset, Example};
use crate::base::seed::{fnv1a as fnv64, mix};
use crate::base::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where examples come from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Text,
    Jsonl,
    Csv,
    Synthetic,
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

/// What a csv target is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CsvTask {
    Regression,
    Classification,
}

fn d_bytes() -> String {
    "bytes".into()
}
fn d_eval_fraction() -> f64 {
    0.1
}
fn d_text() -> String {
    "text".into()
}
fn d_prompt() -> String {
    "prompt".into()
}
fn d_completion() -> String {
    "completion".into()
}
fn d_template() -> String {
    "{prompt}".into()
}
fn d_num_examples() -> usize {
    20_000
}
fn d_digits() -> u32 {
    2
}
fn d_length() -> usize {
    8
}
fn d_regression() -> CsvTask {
    CsvTask::Regression
}

/// The `[data]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub source: Source,
    /// Files or globs (`*`, `?`), relative to the recipe's directory (text, jsonl, csv).
    #[serde(default)]
    pub files: Vec<String>,
    /// `bytes` or a path to a HuggingFace tokenizer.json (relative to the recipe).
    #[serde(default = "d_bytes")]
    pub tokenizer: String,
    /// Tokens per training window (language models).
    #[serde(default)]
    pub seq_len: Option<usize>,
    /// Fraction of examples held out for evaluation (deterministic from the seed).
    #[serde(default = "d_eval_fraction")]
    pub eval_fraction: f64,
    /// jsonl: the field with plain text.
    #[serde(default = "d_text")]
    pub text_field: String,
    /// jsonl: the prompt field (loss masked).
    #[serde(default = "d_prompt")]
    pub prompt_field: String,
    /// jsonl: the completion field (loss on these tokens).
    #[serde(default = "d_completion")]
    pub completion_field: String,
    /// jsonl: how the prompt is written before tokenizing; `{prompt}` is replaced.
    #[serde(default = "d_template")]
    pub template: String,
    /// csv: feature columns.
    #[serde(default)]
    pub features: Vec<String>,
    /// csv: the target column.
    #[serde(default)]
    pub target: Option<String>,
    /// csv: regression (MSE) or classification (cross-entropy over integer classes).
    #[serde(default = "d_regression")]
    pub task: CsvTask,
    /// synthetic: which generator.
    #[serde(default)]
    pub generator: Option<Generator>,
    /// synthetic: how many examples.
    #[serde(default = "d_num_examples")]
    pub num_examples: usize,
    /// synthetic addition: operands have at most this many digits.
    #[serde(default = "d_digits")]
    pub max_digits: u32,
    /// synthetic copy/reverse: string length.
    #[serde(default = "d_length")]
    pub length: usize,
    /// Where tokenized data is cached (default `<out_dir>/cache`).
    #[serde(default)]
    pub cache_dir: Option<String>,
}

impl DataConfig {
    /// Whether examples are token sequences (everything but csv).
    pub fn is_lm(&self) -> bool {
        self.source != Source::Csv
    }

    /// Checks the combination of keys; `field` names the offending key.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(Error::ConfigField {
                field: field.into(),
                message,
            })
        };
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return bad(
                "eval_fraction",
                format!(
                    "[data]: eval_fraction must be in [0, 1), got {}",
                    self.eval_fraction
                ),
            );
        }
        match self.source {
            Source::Text | Source::Jsonl | Source::Csv if self.files.is_empty() => {
                return bad("files", format!("[data]: source `{:?}` needs `files = [\"...\"]`", self.source).to_lowercase())
            }
            Source::Synthetic if self.generator.is_none() => {
                return bad("generator", "[data]: source `synthetic` needs `generator = \"addition\" | \"copy\" | \"reverse\"`".into())
            }
            _ => {}
        }
        if self.is_lm() && self.seq_len.unwrap_or(0) < 2 {
            return bad(
                "seq_len",
                "[data]: language-model data needs `seq_len` of at least 2".into(),
            );
        }
        if self.source == Source::Csv && (self.features.is_empty() || self.target.is_none()) {
            return bad(
                "features",
                "[data]: csv needs `features = [\"col\", ...]` and `target = \"col\"`".into(),
            );
        }
        if self.source == Source::Synthetic && self.num_examples < 2 {
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

fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&pat[1..], s) || (!s.is_empty() && glob_match(pat, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&pat[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// Expands file patterns (globs in the file-name part) relative to `base`, sorted.
pub fn expand_files(patterns: &[String], base: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for p in patterns {
        let full = base.join(p);
        let name = full
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains('*') || name.contains('?') {
            let dir = full.parent().map(Path::to_path_buf).unwrap_or_default();
            let rd = std::fs::read_dir(&dir).map_err(|e| {
                Error::Config(format!(
                    "[data] files: pattern `{p}`: cannot read the directory {}: {e}",
                    dir.display()
                ))
            })?;
            let mut found: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.file_name()
                            .map(|n| glob_match(name.as_bytes(), n.to_string_lossy().as_bytes()))
                            .unwrap_or(false)
                })
                .collect();
            if found.is_empty() {
                return Err(Error::Config(format!(
                    "[data] files: pattern `{p}` matches no file in {}",
                    dir.display()
                )));
            }
            found.sort();
            out.extend(found);
        } else {
            if !full.is_file() {
                return Err(Error::Config(format!(
                    "[data] files: `{}` does not exist or is not a file",
                    full.display()
                )));
            }
            out.push(full);
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

fn synthetic(cfg: &DataConfig, seed: u64, tok: &Tokenizer) -> Result<Vec<Example>> {
    let gen = cfg
        .generator
        .ok_or_else(|| Error::Config("[data]: no generator".into()))?;
    let mut out = Vec::with_capacity(cfg.num_examples);
    let base = mix(seed, 0xDA7A);
    for i in 0..cfg.num_examples as u64 {
        let r = |k: u64| mix(base, i * 16 + k);
        let (prompt, completion) = match gen {
            Generator::Addition => {
                let m = 10u64.pow(cfg.max_digits);
                let (a, b) = (r(0) % m, r(1) % m);
                (format!("{a}+{b}="), format!("{}", a + b))
            }
            Generator::Copy | Generator::Reverse => {
                let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
                let s: String = (0..cfg.length)
                    .map(|k| alphabet[(r(k as u64) % alphabet.len() as u64) as usize] as char)
                    .collect();
                let c = if gen == Generator::Copy {
                    s.clone()
                } else {
                    s.chars().rev().collect()
                };
                (format!("{s}="), c)
            }
        };
        out.push(prompt_completion(tok, &prompt, &completion)?);
    }
    Ok(out)
}

fn prompt_completion(tok: &Tokenizer, prompt: &str, completion: &str) -> Result<Example> {
    let p = tok.encode(prompt)?;
    let mut c = tok.encode(completion)?;
    c.push(tok.eos_id());
    let mut mask = vec![0u8; p.len()];
    mask.extend(std::iter::repeat_n(1u8, c.len()));
    let prompt_len = p.len();
    let mut ids = p;
    ids.extend(c);
    Ok(Example::Tokens {
        ids,
        mask,
        prompt_len,
    })
}

fn text_windows(cfg: &DataConfig, files: &[PathBuf], tok: &Tokenizer) -> Result<Vec<Example>> {
    let seq = cfg.seq_len.unwrap_or(0);
    let mut stream: Vec<i64> = vec![];
    for f in files {
        let t = read(f)?;
        if t.trim().is_empty() {
            continue;
        }
        stream.extend(tok.encode(&t)?);
        stream.push(tok.eos_id());
    }
    if stream.is_empty() {
        return Err(Error::Config("[data]: the text files are empty".into()));
    }
    if stream.len() < seq + 1 {
        return Err(Error::ConfigField {
            field: "seq_len".into(),
            message: format!("[data]: seq_len {seq} is longer than the whole dataset ({} tokens); lower seq_len or add data", stream.len()),
        });
    }
    Ok(stream
        .windows(seq + 1)
        .step_by(seq)
        .map(|w| Example::Tokens {
            ids: w.to_vec(),
            mask: vec![1; w.len()],
            prompt_len: 0,
        })
        .collect())
}

fn jsonl(cfg: &DataConfig, files: &[PathBuf], tok: &Tokenizer) -> Result<Vec<Example>> {
    let seq = cfg.seq_len.unwrap_or(0);
    let mut out = vec![];
    let mut too_long = 0usize;
    for f in files {
        for (i, line) in read(f)?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let where_ = format!("{}:{}", f.display(), i + 1);
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::Config(format!("{where_}: invalid JSON: {e}")))?;
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
            let ex = if let (Some(p), Some(c)) =
                (field(&cfg.prompt_field), field(&cfg.completion_field))
            {
                prompt_completion(tok, &cfg.template.replace("{prompt}", &p), &c)?
            } else if let Some(t) = field(&cfg.text_field) {
                let mut ids = tok.encode(&t)?;
                ids.push(tok.eos_id());
                let n = ids.len();
                Example::Tokens {
                    ids,
                    mask: vec![1; n],
                    prompt_len: 0,
                }
            } else {
                return Err(Error::Config(format!(
                    "{where_}: expected a string field `{}`, or `{}` and `{}`",
                    cfg.text_field, cfg.prompt_field, cfg.completion_field
                )));
            };
            if let Example::Tokens { ids, .. } = &ex {
                if ids.len() > seq + 1 {
                    too_long += 1;
                    continue;
                }
            }
            out.push(ex);
        }
    }
    if out.is_empty() && too_long > 0 {
        return Err(Error::ConfigField {
            field: "seq_len".into(),
            message: format!("[data]: every example ({too_long}) is longer than seq_len {seq} + 1 tokens; raise seq_len"),
        });
    }
    Ok(out)
}

fn csv(cfg: &DataConfig, files: &[PathBuf]) -> Result<(Vec<Example>, i64)> {
    let target = cfg.target.clone().unwrap_or_default();
    let mut out = vec![];
    let mut max_class = -1i64;
    for f in files {
        let text = read(f)?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            continue;
        };
        let cols: Vec<&str> = header.split(',').map(|s| s.trim()).collect();
        let idx = |name: &str| {
            cols.iter().position(|c| *c == name).ok_or_else(|| {
                Error::Config(format!(
                    "{}: no column `{name}` (columns: {})",
                    f.display(),
                    cols.join(", ")
                ))
            })
        };
        let fi: Vec<usize> = cfg.features.iter().map(|c| idx(c)).collect::<Result<_>>()?;
        let ti = idx(&target)?;
        for (ln, line) in lines {
            let vals: Vec<&str> = line.split(',').map(|s| s.trim()).collect();
            let num = |i: usize| -> Result<f32> {
                vals.get(i)
                    .and_then(|v| v.parse::<f32>().ok())
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "{}:{}: column `{}` is not a finite number",
                            f.display(),
                            ln + 1,
                            cols.get(i).copied().unwrap_or("?")
                        ))
                    })
            };
            let x: Vec<f32> = fi.iter().map(|&i| num(i)).collect::<Result<_>>()?;
            let y = num(ti)?;
            if cfg.task == CsvTask::Classification {
                if y < 0.0 || y.fract() != 0.0 {
                    return Err(Error::Config(format!(
                        "{}:{}: class `{y}` must be a non-negative integer",
                        f.display(),
                        ln + 1
                    )));
                }
                max_class = max_class.max(y as i64);
            }
            out.push(Example::Row { x, y });
        }
    }
    Ok((out, max_class + 1))
}

/// The cache key of a dataset: source settings, file names and content hashes, tokenizer.
pub fn cache_key(
    cfg: &DataConfig,
    files: &[PathBuf],
    tok: &Tokenizer,
    seed: u64,
) -> Result<String> {
    let mut h = fnv64(serde_json::to_string(cfg).unwrap_or_default().as_bytes());
    h = mix(h, seed);
    h = mix(h, fnv64(tok.identity()?.as_bytes()));
    for f in files {
        let data = std::fs::read(f).map_err(|source| Error::Io {
            path: f.display().to_string(),
            source,
        })?;
        h = mix(h, fnv64(f.to_string_lossy().as_bytes()));
        h = mix(h, fnv64(&data));
    }
    Ok(format!("{h:016x}"))
}

/// Loads (from the cache when possible) and splits the dataset. `base` is the recipe's
/// directory; `cache_dir` where caches live. Returns the dataset and whether it came from the
/// cache.
pub fn load(
    cfg: &DataConfig,
    base: &Path,
    cache_dir: &Path,
    seed: u64,
    tok: &Tokenizer,
) -> Result<(Dataset, bool)> {
    cfg.validate()?;
    let files = if cfg.source == Source::Synthetic {
        vec![]
    } else {
        expand_files(&cfg.files, base)?
    };
    let key = cache_key(cfg, &files, tok, seed)?;
    let cache_file = cache_dir.join(format!("data-{key}.json"));
    if let Ok(text) = std::fs::read_to_string(&cache_file) {
        if let Ok(ds) = serde_json::from_str::<Dataset>(&text) {
            return Ok((ds, true));
        }
    }
    let (examples, num_classes) = match cfg.source {
        Source::Synthetic => (synthetic(cfg, seed, tok)?, 0),
        Source::Text => (text_windows(cfg, &files, tok)?, 0),
        Source::Jsonl => (jsonl(cfg, &files, tok)?, 0),
        Source::Csv => csv(cfg, &files)?,
    };
    if examples.is_empty() {
        return Err(Error::Config("[data]: the dataset is empty".into()));
    }
    let num_features = if cfg.source == Source::Csv {
        cfg.features.len() as i64
    } else {
        0
    };
    let (train, eval) = split(examples, cfg.eval_fraction, seed)?;
    let ds = Dataset {
        train,
        eval,
        num_classes,
        num_features,
    };
    // Best effort: a cache that cannot be written only costs time next run.
    if std::fs::create_dir_all(cache_dir).is_ok() {
        let tmp = cache_file.with_extension("json.tmp");
        if let Ok(text) = serde_json::to_string(&ds) {
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, &cache_file);
            }
        }
    }
    Ok((ds, false))
}
