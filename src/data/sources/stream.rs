//! Streaming preparation: a source's examples go to a sink one by one, in source order, while
//! the input is read in bounded pieces (a text file at a time, jsonl and chat files 4,096 lines
//! at a time) and each piece is tokenized in parallel (rayon). Memory is bounded by a piece,
//! not by the dataset. A progress bar over the input's bytes shows on a terminal.

use super::{chat, csv, files::expand_files, lm};
use crate::base::{Error, Result};
use crate::data::spec::{
    ChatSource, JsonlSource, Overflow, ParquetSource, Source, SyntheticSource, TextSource,
};
use crate::data::tokenizer::Tokenizer;
use crate::data::{Example, PrepStats};
use rayon::prelude::*;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// A progress bar over the bytes of the input files, on standard error when it is a terminal
/// (hidden otherwise, so logs and tests see nothing).
fn progress(files: &[PathBuf], what: &str) -> indicatif::ProgressBar {
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "preparing {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Where examples go.
pub type Sink<'a> = dyn FnMut(Example) -> Result<()> + 'a;

/// Lines tokenized together.
const LINES: usize = 4096;

/// Reads `path` in pieces of up to [`LINES`] numbered lines (1-based).
fn line_pieces(
    path: &Path,
    mut each: impl FnMut(Vec<(usize, String)>) -> Result<()>,
) -> Result<()> {
    let f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut piece = Vec::with_capacity(LINES);
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::bad_line(path.display(), i + 1, e.to_string()))?;
        piece.push((i + 1, line));
        if piece.len() == LINES {
            each(std::mem::take(&mut piece))?;
        }
    }
    if !piece.is_empty() {
        each(piece)?;
    }
    Ok(())
}

/// Bytes of text tokenized in one call.
const PIECE: usize = 256 << 10;

/// Reads a text file in pieces of about [`PIECE`] bytes, each cut after a line end (whole
/// lines; a line longer than a piece is one piece), and hands them over `group` at a time. A
/// file that is blank as a whole gives nothing.
fn text_pieces(
    path: &Path,
    group: usize,
    mut each: impl FnMut(Vec<String>) -> Result<()>,
) -> Result<()> {
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let (mut pieces, mut cur, mut blank) = (vec![], String::new(), true);
    let mut carry: Vec<u8> = vec![];
    loop {
        // A line, or the first LONG_TEXT bytes of a longer one (a file without newlines is
        // read in bounded pieces), cut at a character boundary.
        let mut bytes = std::mem::take(&mut carry);
        let n = (&mut r)
            .take(crate::data::tokenizer::LONG_TEXT as u64)
            .read_until(b'\n', &mut bytes)
            .map_err(io)?;
        if n == 0 && bytes.is_empty() {
            break;
        }
        if n > 0 && bytes.last() != Some(&b'\n') {
            let keep = utf8_prefix(&bytes);
            carry = bytes.split_off(keep);
        }
        let line = String::from_utf8(bytes).map_err(|_| {
            Error::bad_file(
                path.display(),
                "not UTF-8 text (stream did not contain valid UTF-8)",
            )
        })?;
        blank &= line.trim().is_empty();
        cur.push_str(&line);
        if cur.len() >= PIECE {
            pieces.push(std::mem::take(&mut cur));
            if pieces.len() == group {
                each(std::mem::take(&mut pieces))?;
            }
        }
    }
    if !cur.is_empty() {
        pieces.push(cur);
    }
    if blank {
        return Ok(());
    }
    if !pieces.is_empty() {
        each(pieces)?;
    }
    Ok(())
}

/// The length of the longest prefix of `b` that does not end inside a UTF-8 character (the
/// rest is the start of a character read in full next time).
fn utf8_prefix(b: &[u8]) -> usize {
    let mut end = b.len();
    // A character is at most 4 bytes: look back over at most 3 continuation bytes.
    for back in 1..=4.min(b.len()) {
        let c = b[b.len() - back];
        if c & 0xC0 == 0x80 {
            continue; // a continuation byte
        }
        let len = if c < 0x80 {
            1
        } else if c >= 0xF0 {
            4
        } else if c >= 0xE0 {
            3
        } else {
            2
        };
        if len > back {
            end = b.len() - back;
        }
        break;
    }
    end
}

/// Sends the examples of a piece's lines to `sink` in order, counting what was skipped or cut;
/// returns how many were kept.
fn take_lines(
    out: Vec<Result<chat::Line>>,
    stats: &mut PrepStats,
    sink: &mut Sink<'_>,
) -> Result<usize> {
    let mut kept = 0;
    for line in out {
        match line? {
            chat::Line::Blank => {}
            chat::Line::Skipped => stats.skipped += 1,
            chat::Line::Truncated(e) => {
                stats.truncated += 1;
                kept += 1;
                sink(e)?;
            }
            chat::Line::Example(e) => {
                kept += 1;
                sink(e)?;
            }
        }
    }
    Ok(kept)
}

/// Every conversation was skipped: what to change (no truncate hint when truncating already).
fn no_conversation_left(skipped: usize, window: usize, overflow: Overflow) -> Error {
    let hint = match overflow {
        Overflow::Skip => "raise seq_len or set overflow = \"truncate\"",
        // Truncated conversations whose assistant turns were all cut off.
        Overflow::Truncate => "raise seq_len: truncated to it, no assistant turn was left to learn",
    };
    seq_error(format!(
        "[data]: no conversation is left: {skipped} skipped (longer than seq_len + 1 = {window} tokens, or without an assistant turn to learn); {hint}"
    ))
}

fn seq_error(message: String) -> Error {
    Error::ConfigField {
        field: "seq_len".into(),
        message,
    }
}

/// Streams the examples of `source` into `sink`; returns the number of classes (csv).
pub fn stream_source(
    source: &Source,
    base: &Path,
    seed: u64,
    tok: Option<&Tokenizer>,
    stats: &mut PrepStats,
    sink: &mut Sink<'_>,
) -> Result<i64> {
    let need_tok = || tok.ok_or_else(|| Error::Config("[data]: no tokenizer".into()));
    let files: Vec<PathBuf> = expand_files(&source.files(), base)?;
    let window = source.seq_len().unwrap_or(0) + 1;
    match source {
        Source::Synthetic(s) => stream_synthetic(s, seed, need_tok()?, window, sink),
        Source::Text(s) => stream_text(s, &files, need_tok()?, sink),
        Source::Jsonl(s) => stream_jsonl(s, &files, need_tok()?, window, stats, sink),
        Source::Chat(s) => stream_chat(s, &files, base, need_tok()?, window, stats, sink),
        Source::Parquet(s) => stream_parquet(s, &files, base, need_tok()?, window, stats, sink),
        Source::Csv(s) => {
            let (rows, classes) = csv::csv(s, &files)?;
            for r in rows {
                sink(r)?;
            }
            Ok(classes)
        }
        Source::Mixture(parts) => {
            for e in super::mixture(parts, base, seed, tok, stats)? {
                sink(e)?;
            }
            Ok(0)
        }
    }
}

/// Generates the synthetic examples in pieces of [`LINES`] and sends them to `sink`, failing
/// when one is longer than the `window` (seq_len + 1).
fn stream_synthetic(
    s: &SyntheticSource,
    seed: u64,
    tok: &Tokenizer,
    window: usize,
    sink: &mut Sink<'_>,
) -> Result<i64> {
    let n = s.num_examples as u64;
    let mut start = 0;
    while start < n {
        let end = (start + LINES as u64).min(n);
        let piece: Vec<Result<Example>> = (start..end)
            .into_par_iter()
            .map(|i| lm::synthetic_one(s, seed, tok, i))
            .collect();
        for e in piece {
            let e = e?;
            if let Example::Tokens { ids, .. } = &e {
                if ids.len() > window {
                    return Err(seq_error(format!(
                        "[data]: the generated examples are up to {} tokens, longer than seq_len + 1 = {window}; set seq_len = {}",
                        ids.len(),
                        ids.len() - 1
                    )));
                }
            }
            sink(e)?;
        }
        start = end;
    }
    Ok(0)
}

/// Tokenizes the text files and sends their `seq_len`-token windows to `sink`, failing when the
/// files are empty or shorter than one window.
fn stream_text(
    s: &TextSource,
    files: &[PathBuf],
    tok: &Tokenizer,
    sink: &mut Sink<'_>,
) -> Result<i64> {
    let seq = s.seq_len.unwrap_or(0);
    let mut w = lm::Windows::new(seq);
    let mut emitted = 0usize;
    let group = 4 * rayon::current_num_threads().max(1);
    let pb = progress(files, "text");
    for f in files {
        // A file is tokenized in pieces cut after a line end, then followed by the end
        // token (none for a blank file).
        let mut any = false;
        text_pieces(f, group, |pieces| {
            let bytes: u64 = pieces.iter().map(|p| p.len() as u64).sum();
            let toks: Vec<Result<Vec<i64>>> = pieces.par_iter().map(|t| tok.encode(t)).collect();
            pb.inc(bytes);
            for t in toks {
                let t = t?;
                any |= !t.is_empty();
                for e in w.push(&t) {
                    emitted += 1;
                    sink(e)?;
                }
            }
            Ok(())
        })?;
        if any {
            for e in w.push(&[tok.eos_id()]) {
                emitted += 1;
                sink(e)?;
            }
        }
    }
    pb.finish_and_clear();
    if w.total == 0 {
        return Err(Error::Config("[data]: the text files are empty".into()));
    }
    if emitted == 0 {
        return Err(seq_error(format!("[data]: seq_len {seq} is longer than the whole dataset ({} tokens); lower seq_len or add data", w.total)));
    }
    Ok(0)
}

/// Tokenizes the jsonl lines and sends the examples that fit the `window` to `sink`, counting
/// the others as skipped; fails when every example was too long.
fn stream_jsonl(
    s: &JsonlSource,
    files: &[PathBuf],
    tok: &Tokenizer,
    window: usize,
    stats: &mut PrepStats,
    sink: &mut Sink<'_>,
) -> Result<i64> {
    let (mut kept, mut too_long) = (0usize, 0usize);
    let pb = progress(files, "jsonl");
    for f in files {
        line_pieces(f, |piece| {
            pb.inc(piece.iter().map(|(_, l)| l.len() as u64 + 1).sum());
            let out: Vec<Result<Option<Example>>> = piece
                .par_iter()
                .map(|(i, l)| lm::jsonl_line(s, tok, f, *i, l))
                .collect();
            for e in out {
                let Some(e) = e? else { continue };
                if matches!(&e, Example::Tokens { ids, .. } if ids.len() > window) {
                    too_long += 1;
                    continue;
                }
                kept += 1;
                sink(e)?;
            }
            Ok(())
        })?;
    }
    pb.finish_and_clear();
    stats.skipped += too_long;
    if kept == 0 && too_long > 0 {
        return Err(seq_error(format!("[data]: every example ({too_long}) is longer than seq_len {} + 1 tokens; raise seq_len", window - 1)));
    }
    Ok(0)
}

/// Renders and tokenizes the conversations of the chat files and sends them to `sink`; fails
/// when every conversation was skipped.
fn stream_chat(
    s: &ChatSource,
    files: &[PathBuf],
    base: &Path,
    tok: &Tokenizer,
    window: usize,
    stats: &mut PrepStats,
    sink: &mut Sink<'_>,
) -> Result<i64> {
    let t = chat::template(s, base, tok)?;
    let mut kept = 0usize;
    let pb = progress(files, "chat");
    for f in files {
        line_pieces(f, |piece| {
            pb.inc(piece.iter().map(|(_, l)| l.len() as u64 + 1).sum());
            let out: Vec<Result<chat::Line>> = piece
                .par_iter()
                .map(|(i, l)| chat::chat_line(s, &t, tok, f, *i, l))
                .collect();
            kept += take_lines(out, stats, sink)?;
            Ok(())
        })?;
    }
    pb.finish_and_clear();
    if kept == 0 && stats.skipped > 0 {
        return Err(no_conversation_left(stats.skipped, window, s.overflow));
    }
    Ok(0)
}

/// Reads the parquet files' rows, as conversations where a file has the messages column and as
/// jsonl lines otherwise, and sends their examples to `sink`; fails when every row was skipped.
fn stream_parquet(
    s: &ParquetSource,
    files: &[PathBuf],
    base: &Path,
    tok: &Tokenizer,
    window: usize,
    stats: &mut PrepStats,
    sink: &mut Sink<'_>,
) -> Result<i64> {
    let jsonl = s.as_jsonl();
    let chat_cfg = s.as_chat();
    let mut template = None;
    let mut kept = 0usize;
    let pb = progress(files, "parquet");
    for f in files {
        let is_chat = super::parquet::has_column(f, &s.messages_field)?;
        if is_chat && template.is_none() {
            template = Some(chat::template(&chat_cfg, base, tok)?);
        }
        let text_columns = [
            s.messages_field.as_str(),
            jsonl.text_field.as_str(),
            jsonl.prompt_field.as_str(),
            jsonl.completion_field.as_str(),
        ];
        super::parquet::row_pieces(f, LINES, &text_columns, |piece| {
            let out: Vec<Result<chat::Line>> = piece
                .par_iter()
                .map(|(i, v)| match &template {
                    Some(t) if is_chat => chat::chat_value(&chat_cfg, t, tok, f, *i, v),
                    _ => lm::jsonl_value(&jsonl, tok, f, *i, v).map(|e| {
                        if matches!(&e, Example::Tokens { ids, .. } if ids.len() > window) {
                            chat::Line::Skipped
                        } else {
                            chat::Line::Example(e)
                        }
                    }),
                })
                .collect();
            kept += take_lines(out, stats, sink)?;
            Ok(())
        })?;
        pb.inc(std::fs::metadata(f).map(|m| m.len()).unwrap_or(0));
    }
    pb.finish_and_clear();
    if kept == 0 && stats.skipped > 0 {
        return Err(seq_error(format!(
            "[data]: no row is left: {} skipped (longer than seq_len + 1 = {window} tokens, or nothing to learn); raise seq_len",
            stats.skipped
        )));
    }
    Ok(0)
}
