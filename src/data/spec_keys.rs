//! Decoding one `[data]` source strictly: the keys a source struct has are asked of serde
//! itself, so that an unknown key's message lists the source's keys and the shared ones.

use super::spec::{Source, Weighted, SHARED};
use crate::base::{Error, Result};
use crate::tree::registry::decode_config;
use serde::Deserialize;

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

pub(super) fn decode_source<T: serde::de::DeserializeOwned>(
    name: &str,
    own: &toml::Table,
) -> Result<T> {
    let what = format!("[data] (source `{name}`)");
    if let Some(k) = own.keys().find(|k| !keys_of::<T>().contains(k)) {
        // serde's message would list only the source's keys; list the shared ones too.
        let mut all = vec!["source".to_string()];
        all.extend(keys_of::<T>());
        all.extend(SHARED.iter().map(|s| s.to_string()));
        let expected: Vec<String> = all.iter().map(|k| format!("`{k}`")).collect();
        return Err(Error::ConfigField {
            field: k.clone(),
            message: format!(
                "{what}: unknown field `{k}`, expected one of {}",
                expected.join(", ")
            ),
        });
    }
    decode_config(&what, own)
}

/// Decodes `[[data.sources]]` (`list`) with the mixture's own `[data]` keys (`top`: only
/// `tokenizer` and `seq_len`, which every source of the mixture shares).
pub(super) fn decode_mixture(list: &toml::Value, top: &toml::Table) -> Result<Source> {
    let bad = |field: String, message: String| Err(Error::ConfigField { field, message });
    if let Some(k) = top.keys().find(|k| *k != "tokenizer" && *k != "seq_len") {
        return bad(
            k.clone(),
            format!("[data] with [[data.sources]]: unknown field `{k}`; a mixture's [data] takes `tokenizer`, `seq_len`, `eval_fraction`, `cache_dir` and `pack`, and each source its own keys"),
        );
    }
    let Some(items) = list.as_array().filter(|a| !a.is_empty()) else {
        return bad(
            "sources".into(),
            "[data]: `sources` must be a non-empty array of tables: [[data.sources]]".into(),
        );
    };
    let mut out = vec![];
    for (i, item) in items.iter().enumerate() {
        let Some(t) = item.as_table() else {
            return bad(
                format!("sources.{i}"),
                "[data]: each of `sources` is a table".into(),
            );
        };
        let mut own = t.clone();
        let weight = match own.remove("weight") {
            None => 1.0,
            Some(v) => match v.as_float().or(v.as_integer().map(|i| i as f64)) {
                Some(w) if w.is_finite() && w > 0.0 => w,
                _ => {
                    return bad(
                        format!("sources.{i}.weight"),
                        format!("[data.sources] {i}: weight must be a positive number, got {v}"),
                    )
                }
            },
        };
        for k in ["tokenizer", "seq_len"] {
            if own.contains_key(k) {
                return bad(
                    format!("sources.{i}.{k}"),
                    format!("[data.sources] {i}: set `{k}` once in [data]; every source of a mixture shares it"),
                );
            }
            if let Some(v) = top.get(k) {
                own.insert(k.to_string(), v.clone());
            }
        }
        let name = match own.remove("source") {
            Some(toml::Value::String(s)) => s,
            _ => {
                return bad(
                    format!("sources.{i}.source"),
                    format!("[data.sources] {i}: needs `source = \"text\" | \"jsonl\" | \"chat\" | \"synthetic\"`"),
                )
            }
        };
        if name == "csv" {
            return bad(
                format!("sources.{i}.source"),
                "[data.sources]: a mixture mixes token sources; csv cannot be mixed".into(),
            );
        }
        let source = super::spec::source_of(&name, &own).map_err(|e| match e {
            Error::ConfigField { field, message } => Error::ConfigField {
                field: format!("sources.{i}.{field}"),
                message,
            },
            other => other,
        })?;
        out.push(Weighted { weight, source });
    }
    Ok(Source::Mixture(out))
}
