//! The conversation format: a row's messages rendered with the chat template, with the loss on
//! the assistant turns (or everywhere), and overlong conversations skipped or cut.

use crate::base::files::read_small_file;
use crate::base::{Error, Result};
use crate::data::chat::{check_messages, conversation, ChatTemplate};
use crate::data::spec::{Chat, Overflow, TrainOn};
use crate::data::tokenizer::Tokenizer;
use crate::data::Example;
use std::path::Path;

/// The template of a chat source: `chat_template` (a file), else the tokenizer's.
pub fn template(cfg: &Chat, base: &Path, tok: &Tokenizer) -> Result<ChatTemplate> {
    let tc = tok.config();
    let source = match &cfg.chat_template {
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
    let msgs = check_messages(msgs).map_err(bad)?;
    let r =
        conversation(t, tok, msgs, cfg.train_on == TrainOn::All).map_err(|e| bad(e.to_string()))?;
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
