//! Decoding `[data]` strictly: `source` names a reader and a format (see [`super::spec`]);
//! each takes its own keys, token data its `tokenizer` and `seq_len`, and every source the
//! shared keys. The keys a part has are asked of serde itself, so that an unknown key's message
//! lists exactly the keys the source takes.

use super::spec::{
    in_stream, Chat, DataSpec, Features, Format, Preference, Reader, Records, Stream, Streams,
    Synthetic, TokenWindow, Weighted,
};
use crate::base::{Error, Result};
use crate::tree::registry::decode_config;
use serde::Deserialize;

/// The keys every source has.
const SHARED: [&str; 4] = ["eval_fraction", "cache_dir", "pack", "eval_files"];
const SOURCES: [&str; 7] = [
    "text",
    "jsonl",
    "csv",
    "synthetic",
    "chat",
    "parquet",
    "preference",
];

fn bad<T>(field: &str, message: String) -> Result<T> {
    Err(Error::ConfigField {
        field: field.into(),
        message,
    })
}

/// The field names of a struct that derives `Deserialize` (asked of serde itself, so that
/// they can never drift from the struct).
fn keys_of<'de, T: Deserialize<'de>>() -> Vec<String> {
    struct Fields(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut f = Fields(None);
    let _ = T::deserialize(&mut f);
    f.0.unwrap_or_default()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The file patterns of a reader.
#[derive(Deserialize, Default)]
#[serde(default)]
struct FileList {
    files: Vec<String>,
}

/// The parts a source is made of: its reader, whether it is token data, and its format.
#[derive(Clone, Copy, PartialEq)]
enum ReaderKind {
    Text,
    Jsonl,
    Parquet,
    Csv,
    Synthetic,
}

#[derive(Clone, Copy, PartialEq)]
enum FormatKind {
    Documents,
    Records,
    Chat,
    ByColumns,
    Features,
    Preference,
}

fn parts_of(name: &str) -> Option<(ReaderKind, FormatKind)> {
    Some(match name {
        "text" => (ReaderKind::Text, FormatKind::Documents),
        "jsonl" => (ReaderKind::Jsonl, FormatKind::Records),
        "chat" => (ReaderKind::Jsonl, FormatKind::Chat),
        "parquet" => (ReaderKind::Parquet, FormatKind::ByColumns),
        "synthetic" => (ReaderKind::Synthetic, FormatKind::Records),
        "csv" => (ReaderKind::Csv, FormatKind::Features),
        "preference" => (ReaderKind::Jsonl, FormatKind::Preference),
        _ => return None,
    })
}

/// The keys of a source, in the order its messages list them: the reader's, the token
/// window's (token data), the format's. A generated stream's records take no keys.
fn keys(reader: ReaderKind, format: FormatKind, window: bool) -> Vec<String> {
    let mut k = match reader {
        ReaderKind::Synthetic => keys_of::<Synthetic>(),
        _ => keys_of::<FileList>(),
    };
    if window && format != FormatKind::Features {
        k.extend(keys_of::<TokenWindow>());
    }
    match (reader, format) {
        (ReaderKind::Synthetic, _) | (_, FormatKind::Documents) => {}
        (_, FormatKind::Records) => k.extend(keys_of::<Records>()),
        (_, FormatKind::Chat) => k.extend(keys_of::<Chat>()),
        (_, FormatKind::ByColumns) => {
            k.extend(keys_of::<Records>());
            k.extend(keys_of::<Chat>());
        }
        (_, FormatKind::Features) => k.extend(keys_of::<Features>()),
        (_, FormatKind::Preference) => k.extend(keys_of::<Preference>()),
    }
    k
}

/// The value of `T` from the keys of `own` that `T` has.
fn part<T: serde::de::DeserializeOwned>(what: &str, own: &toml::Table) -> Result<T> {
    let mine = keys_of::<T>();
    let t: toml::Table = own
        .iter()
        .filter(|(k, _)| mine.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    decode_config(what, &t)
}

/// Decodes the stream `name` names from its keys `own` (without `source`); `window` says
/// whether its own table holds the token window (a single source) or not (a mixture's part).
fn stream_of(name: &str, own: &toml::Table, window: bool) -> Result<Stream> {
    let Some((r, f)) = parts_of(name) else {
        let expected: Vec<String> = SOURCES.iter().map(|k| format!("`{k}`")).collect();
        return bad(
            "source",
            format!(
                "[data]: unknown variant `{name}`, expected one of {}",
                expected.join(", ")
            ),
        );
    };
    let what = format!("[data] (source `{name}`)");
    let allowed = keys(r, f, window);
    if let Some(k) = own.keys().find(|k| !allowed.contains(k)) {
        let mut all = vec!["source".to_string()];
        all.extend(allowed);
        all.extend(SHARED.iter().map(|s| s.to_string()));
        let expected: Vec<String> = all.iter().map(|k| format!("`{k}`")).collect();
        return bad(
            k,
            format!(
                "{what}: unknown field `{k}`, expected one of {}",
                expected.join(", ")
            ),
        );
    }
    let files = || part::<FileList>(&what, own).map(|l| l.files);
    let reader = match r {
        ReaderKind::Text => Reader::Text { files: files()? },
        // Preference rows: parquet files when every pattern names one, else jsonl lines.
        ReaderKind::Jsonl if f == FormatKind::Preference => {
            let files = files()?;
            match files.iter().all(|p| p.ends_with(".parquet")) && !files.is_empty() {
                true => Reader::Parquet { files },
                false => Reader::Jsonl { files },
            }
        }
        ReaderKind::Jsonl => Reader::Jsonl { files: files()? },
        ReaderKind::Parquet => Reader::Parquet { files: files()? },
        ReaderKind::Csv => Reader::Csv { files: files()? },
        ReaderKind::Synthetic => Reader::Synthetic(part(&what, own)?),
    };
    let format = match f {
        FormatKind::Documents => Format::Documents,
        FormatKind::Records if r == ReaderKind::Synthetic => Format::Records(Records::default()),
        FormatKind::Records => Format::Records(part(&what, own)?),
        FormatKind::Chat => Format::Chat(chat_part(&what, own)?),
        FormatKind::ByColumns => Format::ByColumns {
            records: part(&what, own)?,
            chat: chat_part(&what, own)?,
        },
        FormatKind::Features => Format::Features(part(&what, own)?),
        FormatKind::Preference => Format::Preference(part(&what, own)?),
    };
    Ok(Stream { reader, format })
}

/// The chat part of a source: ShareGPT rows hold their turns under `conversations` unless
/// `messages_field` says otherwise.
fn chat_part(what: &str, own: &toml::Table) -> Result<Chat> {
    let mut c: Chat = part(what, own)?;
    if c.format == super::spec::RowShape::Sharegpt && !own.contains_key("messages_field") {
        c.messages_field = "conversations".into();
    }
    Ok(c)
}

/// `eval_files`: the eval split's own files, read as the training files are (one source of
/// files, not a mixture or generator; not with `eval_fraction`).
fn eval_files(shared: &toml::Table, streams: &Streams) -> Result<Vec<String>> {
    let Some(v) = shared.get("eval_files") else {
        return Ok(vec![]);
    };
    let list: Option<Vec<String>> = v
        .as_array()
        .and_then(|a| a.iter().map(|x| x.as_str().map(String::from)).collect());
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return bad(
            "eval_files",
            "[data]: `eval_files` must be a non-empty list of file names".into(),
        );
    };
    if shared.contains_key("eval_fraction") {
        return bad(
            "eval_files",
            "[data]: give either `eval_files` (the eval split's own files) or `eval_fraction` (a share of the files held out), not both".into(),
        );
    }
    match streams {
        Streams::One(s) if !s.reader.files().is_empty() && !matches!(s.format, Format::Features(_)) => Ok(list),
        _ => bad(
            "eval_files",
            "[data]: `eval_files` needs one source of token files (text, jsonl, chat, parquet or preference); a mixture, the synthetic generator and csv rows take `eval_fraction`".into(),
        ),
    }
}

/// A number (integer or float) at `key` of `t`, or `default`.
fn number(t: &toml::Table, key: &str, default: f64) -> Result<f64> {
    match t.get(key) {
        None => Ok(default),
        Some(v) => match v.as_float().or(v.as_integer().map(|i| i as f64)) {
            Some(f) => Ok(f),
            None => bad(
                key,
                format!("[data]: invalid type for `{key}`, expected a number"),
            ),
        },
    }
}

impl DataSpec {
    /// Decodes the `[data]` table: `source` picks the reader and format, which take their own
    /// keys and the shared ones; anything else is an error naming the key.
    pub fn decode(t: &toml::Table) -> Result<DataSpec> {
        let mut own = t.clone();
        let mut shared = toml::Table::new();
        for k in SHARED {
            if let Some(v) = own.remove(k) {
                shared.insert(k.to_string(), v);
            }
        }
        let (streams, tokens) = match own.remove("sources") {
            Some(list) => {
                if own.contains_key("source") {
                    return bad(
                        "source",
                        "[data]: give either `source` or `[[data.sources]]`, not both".into(),
                    );
                }
                let m = decode_mixture(&list, &own)?;
                (m, Some(part::<TokenWindow>("[data]", &own)?))
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
                let s = stream_of(&name, &own, true)?;
                let tokens = match s.format {
                    Format::Features(_) => None,
                    _ => Some(part::<TokenWindow>(
                        &format!("[data] (source `{name}`)"),
                        &own,
                    )?),
                };
                (Streams::One(Box::new(s)), tokens)
            }
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
        let eval_files = eval_files(&shared, &streams)?;
        let spec = DataSpec {
            streams,
            tokens,
            eval_fraction: match eval_files.is_empty() {
                true => number(&shared, "eval_fraction", 0.1)?,
                false => 0.0,
            },
            cache_dir,
            pack,
            eval_files,
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// The weight of a mixture's part `i` (default 1).
fn weight(own: &mut toml::Table, i: usize) -> Result<f64> {
    match own.remove("weight") {
        None => Ok(1.0),
        Some(v) => match v.as_float().or(v.as_integer().map(|i| i as f64)) {
            Some(w) if w.is_finite() && w > 0.0 => Ok(w),
            _ => bad(
                &format!("sources.{i}.weight"),
                format!("[data.sources] {i}: weight must be a positive number, got {v}"),
            ),
        },
    }
}

/// Decodes `[[data.sources]]` (`list`) with the mixture's own `[data]` keys (`top`: only
/// `tokenizer` and `seq_len`, which every source of the mixture shares).
fn decode_mixture(list: &toml::Value, top: &toml::Table) -> Result<Streams> {
    if let Some(k) = top.keys().find(|k| *k != "tokenizer" && *k != "seq_len") {
        return bad(
            k,
            format!("[data] with [[data.sources]]: unknown field `{k}`; a mixture's [data] takes `tokenizer`, `seq_len`, `eval_fraction`, `cache_dir` and `pack`, and each source its own keys"),
        );
    }
    let Some(items) = list.as_array().filter(|a| !a.is_empty()) else {
        return bad(
            "sources",
            "[data]: `sources` must be a non-empty array of tables: [[data.sources]]".into(),
        );
    };
    let mut out = vec![];
    for (i, item) in items.iter().enumerate() {
        let Some(t) = item.as_table() else {
            return bad(
                &format!("sources.{i}"),
                "[data]: each of `sources` is a table".into(),
            );
        };
        let mut own = t.clone();
        let weight = weight(&mut own, i)?;
        if let Some(k) = ["tokenizer", "seq_len"]
            .iter()
            .find(|k| own.contains_key(**k))
        {
            return bad(
                &format!("sources.{i}.{k}"),
                format!("[data.sources] {i}: set `{k}` once in [data]; every source of a mixture shares it"),
            );
        }
        let name = match own.remove("source") {
            Some(toml::Value::String(s)) => s,
            _ => {
                return bad(
                    &format!("sources.{i}.source"),
                    format!("[data.sources] {i}: needs `source = \"text\" | \"jsonl\" | \"chat\" | \"synthetic\"`"),
                )
            }
        };
        if name == "csv" {
            return bad(
                &format!("sources.{i}.source"),
                "[data.sources]: a mixture mixes token sources; csv cannot be mixed".into(),
            );
        }
        let stream = stream_of(&name, &own, false).map_err(|e| in_stream(i, e))?;
        out.push(Weighted { weight, stream });
    }
    Ok(Streams::Mixture(out))
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
        assert!(matches!(
            &d.streams,
            Streams::One(st) if matches!(&st.reader, Reader::Synthetic(s) if s.length == 8)
        ));
        assert_eq!(d.seq_len(), Some(8));
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

    #[test]
    fn a_source_is_a_reader_and_a_format() -> TestResult {
        let d = DataSpec::decode(&table(
            "source = \"chat\"\nfiles = [\"c.jsonl\"]\nseq_len = 64\ntrain_on = \"all\"",
        )?)?;
        let Streams::One(s) = &d.streams else {
            return Err("one stream".into());
        };
        assert!(matches!(s.reader, Reader::Jsonl { .. }));
        assert!(
            matches!(&s.format, Format::Chat(c) if c.train_on == super::super::spec::TrainOn::All)
        );
        assert_eq!(s.name(), "chat");
        let csv = DataSpec::decode(&table(
            "source = \"csv\"\nfiles = [\"r.csv\"]\nfeatures = [\"a\"]\ntarget = \"y\"",
        )?)?;
        assert!(csv.tokens.is_none() && !csv.is_lm());
        let e = DataSpec::decode(&table(
            "source = \"csv\"\nfiles = [\"r.csv\"]\nfeatures = [\"a\"]\ntarget = \"y\"\nseq_len = 4",
        )?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("unknown field `seq_len`"), "{e}");
        Ok(())
    }
}
