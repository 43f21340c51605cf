//! `source = "chat"`: one conversation per jsonl line, rendered with the chat template, with
//! the loss on the assistant turns (or everywhere), and overlong conversations skipped or cut.

use super::files::read;
use crate::base::files::read_small_file;
use crate::base::{Error, Result};
use crate::data::chat::{check_messages, conversation, ChatTemplate};
use crate::data::spec::{ChatSource, Overflow, TrainOn};
use crate::data::tokenizer::Tokenizer;
use crate::data::{Example, PrepStats};
use std::path::{Path, PathBuf};

/// The template of a chat source: `chat_template` (a file), else the tokenizer's.
pub fn template(cfg: &ChatSource, base: &Path, tok: &Tokenizer) -> Result<ChatTemplate> {
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

/// The examples of the chat files, and what overflow handling dropped or cut.
pub(super) fn chat(
    cfg: &ChatSource,
    files: &[PathBuf],
    base: &Path,
    tok: &Tokenizer,
) -> Result<(Vec<Example>, PrepStats)> {
    let t = template(cfg, base, tok)?;
    let limit = cfg.seq_len.unwrap_or(0) + 1;
    let mut out = vec![];
    let mut stats = PrepStats::default();
    for f in files {
        for (i, line) in read(f)?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |m: String| Error::bad_line(f.display(), i + 1, m);
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
            let msgs = v
                .get(&cfg.messages_field)
                .ok_or_else(|| bad(format!("no `{}` field", cfg.messages_field)))?;
            let msgs = check_messages(msgs).map_err(bad)?;
            let r = conversation(&t, tok, msgs, cfg.train_on == TrainOn::All)
                .map_err(|e| bad(e.to_string()))?;
            let (mut ids, mut mask) = (r.ids, r.mask);
            if ids.len() > limit {
                match cfg.overflow {
                    Overflow::Skip => {
                        stats.skipped += 1;
                        continue;
                    }
                    Overflow::Truncate => {
                        stats.truncated += 1;
                        ids.truncate(limit);
                        mask.truncate(limit);
                    }
                }
            }
            if !mask.contains(&1) {
                // Nothing to learn from (no assistant turn, or it was cut off).
                stats.skipped += 1;
                continue;
            }
            out.push(Example::Tokens {
                prompt_len: r.prompt_len.min(ids.len()),
                docs: vec![],
                ids,
                mask,
            });
        }
    }
    if out.is_empty() && stats.skipped > 0 {
        return Err(Error::ConfigField {
            field: "seq_len".into(),
            message: format!(
                "[data]: no conversation is left: {} skipped (longer than seq_len + 1 = {limit} tokens, or without an assistant turn to learn); raise seq_len or set overflow = \"truncate\"",
                stats.skipped
            ),
        });
    }
    Ok((out, stats))
}
