//! The conversation format: a row's messages rendered with the chat template, with the loss on
//! the assistant turns (or everywhere), and overlong conversations skipped or cut.

use crate::base::files::read_small_file;
use crate::base::{Error, Result};
use crate::data::chat::{check_messages, conversation_with, ChatTemplate, Extra};
use crate::data::spec::{Chat, Overflow, RowShape};
use crate::data::tokenizer::Tokenizer;
use crate::data::Example;
use std::path::Path;

/// The template of a chat source: `chat_template` (a file), else the tokenizer's.
pub fn template(cfg: &Chat, base: &Path, tok: &Tokenizer) -> Result<ChatTemplate> {
    template_file(cfg.chat_template.as_ref(), base, tok)
}

/// The template in `file` (relative to `base`), else the tokenizer's.
pub(super) fn template_file(
    file: Option<&String>,
    base: &Path,
    tok: &Tokenizer,
) -> Result<ChatTemplate> {
    let tc = tok.config();
    let source = match file {
        Some(f) => read_small_file(&base.join(f)).map_err(|e| Error::ConfigField {
            field: "chat_template".into(),
            message: format!("[data]: {e}"),
        })?,
        None => tc.chat_template.clone().ok_or_else(|| Error::ConfigField {
            field: "chat_template".into(),
            message: "[data]: the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja next to it); set `chat_template = \"file.jinja\"`".into(),
        })?,
    };
    ChatTemplate::new(&source, &tc).map_err(|e| Error::ConfigField {
        field: "chat_template".into(),
        message: format!("[data]: {e}"),
    })
}

/// What a row gives its template besides the messages: its tools (`tools_field`: a list, or
/// as TRL takes it, a string holding one in JSON) and its `chat_template_kwargs` (an object)
/// over the run's `template_kwargs`.
pub(super) fn row_extra(
    tools_field: &str,
    template_kwargs: &serde_json::Map<String, serde_json::Value>,
    v: &serde_json::Value,
) -> std::result::Result<Extra, String> {
    let bad = |t: &serde_json::Value| format!("`{tools_field}` should be a list of tools, got {t}");
    let tools = match v.get(tools_field) {
        None | Some(serde_json::Value::Null) => None,
        Some(t) if t.is_array() => Some(t.clone()),
        Some(serde_json::Value::String(s)) => match serde_json::from_str::<serde_json::Value>(s) {
            Ok(t) if t.is_array() => Some(t),
            Ok(serde_json::Value::Null) => None,
            _ => return Err(bad(&serde_json::Value::String(s.clone()))),
        },
        Some(t) => return Err(bad(t)),
    };
    let mut kwargs = template_kwargs.clone();
    match v.get("chat_template_kwargs") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(o)) => kwargs.extend(o.clone()),
        Some(o) => {
            return Err(format!(
                "`chat_template_kwargs` should be an object, got {o}"
            ))
        }
    }
    Ok(Extra { tools, kwargs })
}

/// ShareGPT turns (`{"from", "value"}`) as messages, the roles mapped as axolotl and
/// LLaMA-Factory map them: `system`; `human` (or `user`) to `user`; `gpt` (or `assistant`) to
/// `assistant`; `tool` and `observation` to `tool`; `function_call` to an assistant message
/// whose `tool_calls` hold the call (a JSON object `{"name", "arguments"}`, or a list of them).
fn sharegpt_messages(v: &serde_json::Value) -> std::result::Result<serde_json::Value, String> {
    use serde_json::{json, Value};
    let turns = v
        .as_array()
        .ok_or_else(|| "the ShareGPT conversation is not a list of turns".to_string())?;
    let mut out = vec![];
    for (i, t) in turns.iter().enumerate() {
        let from = t.get("from").and_then(|f| f.as_str());
        let value = t.get("value").and_then(|f| f.as_str());
        let (Some(from), Some(value)) = (from, value) else {
            return Err(format!(
                "turn {i} needs a string `from` and a string `value`"
            ));
        };
        let role = match from {
            "system" => "system",
            "human" | "user" => "user",
            "gpt" | "assistant" => "assistant",
            "tool" | "observation" => "tool",
            "function_call" => {
                let call: Value = serde_json::from_str(value).map_err(|e| {
                    format!("turn {i} (`function_call`): its value is not a JSON call: {e}")
                })?;
                let calls = match call {
                    Value::Array(a) => a,
                    one => vec![one],
                };
                let calls: Vec<Value> = calls
                    .into_iter()
                    .map(|c| json!({"type": "function", "function": c}))
                    .collect();
                out.push(json!({"role": "assistant", "content": "", "tool_calls": calls}));
                continue;
            }
            other => {
                return Err(format!(
                    "turn {i}: `from` = {other:?} is not one of system, human, gpt, tool, function_call, observation"
                ))
            }
        };
        out.push(json!({"role": role, "content": value}));
    }
    Ok(Value::Array(out))
}

/// What one row gives.
pub(super) enum Line {
    Blank,
    Example(Example),
    /// Longer than the window (`overflow = "skip"`), or nothing to learn.
    Skipped,
    /// Cut to the window (`overflow = "truncate"`).
    Truncated(Example),
}

/// One conversation record (a line's object, or a parquet row), cut to `limit` tokens
/// (`seq_len + 1`).
pub(super) fn chat_value(
    cfg: &Chat,
    t: &ChatTemplate,
    tok: &Tokenizer,
    limit: usize,
    (file, line_no): (&Path, usize),
    v: &serde_json::Value,
) -> Result<Line> {
    let bad = |m: String| Error::bad_line(file.display(), line_no, m);
    let msgs = v
        .get(&cfg.messages_field)
        .ok_or_else(|| bad(format!("no `{}` field", cfg.messages_field)))?;
    let converted;
    let msgs = match cfg.format {
        RowShape::Messages => msgs,
        RowShape::Sharegpt => {
            converted = sharegpt_messages(msgs).map_err(bad)?;
            &converted
        }
    };
    let msgs = check_messages(msgs).map_err(bad)?;
    let extra = row_extra(&cfg.tools_field, &cfg.template_kwargs, v).map_err(bad)?;
    let r =
        conversation_with(t, tok, msgs, cfg.train_on, &extra).map_err(|e| bad(e.to_string()))?;
    let (mut ids, mut mask) = (r.ids, r.mask);
    let mut cut = false;
    if ids.len() > limit {
        match cfg.overflow {
            Overflow::Skip => return Ok(Line::Skipped),
            Overflow::Truncate => {
                ids.truncate(limit);
                mask.truncate(limit);
                cut = true;
            }
        }
    }
    if !mask.contains(&1) {
        // Nothing to learn from (no assistant turn, or it was cut off).
        return Ok(Line::Skipped);
    }
    let e = Example::Tokens {
        prompt_len: r.prompt_len.min(ids.len()),
        docs: vec![],
        ids,
        mask,
    };
    Ok(if cut {
        Line::Truncated(e)
    } else {
        Line::Example(e)
    })
}

#[cfg(test)]
mod sharegpt_tests {
    use super::sharegpt_messages;
    use serde_json::json;

    #[test]
    fn function_calls_and_observations_become_tool_calls_and_tool_messages() {
        let turns = json!([
            {"from": "human", "value": "Add 2 and 3."},
            {"from": "function_call", "value": "{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": 3}}"},
            {"from": "observation", "value": "5"},
            {"from": "gpt", "value": "5."}
        ]);
        let m = sharegpt_messages(&turns).unwrap_or_default();
        assert_eq!(
            m,
            json!([
                {"role": "user", "content": "Add 2 and 3."},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}]},
                {"role": "tool", "content": "5"},
                {"role": "assistant", "content": "5."}
            ])
        );
        let bad = sharegpt_messages(&json!([{"from": "function_call", "value": "add(2, 3)"}]));
        assert!(bad.is_err_and(|e| e.contains("not a JSON call")));
        let bad = sharegpt_messages(&json!([{"from": "gpt"}]));
        assert!(bad.is_err_and(|e| e.contains("turn 0 needs a string `from` and a string `value`")));
    }
}
