//! Streaming preparation: a stream's examples go to a sink one by one, in order, while its
//! reader reads the input in bounded pieces (a text file at a time; jsonl lines, parquet rows
//! and generated records 4,096 at a time) and its format turns each piece's rows into examples
//! in parallel (rayon). Memory is bounded by a piece, not by the dataset. A progress bar over
//! the input's bytes shows on a terminal.

use super::{chat, files::expand_files, lm, preference};
use crate::base::{Error, Result};
use crate::data::chat::ChatTemplate;
use crate::data::spec::{Chat, Format, Overflow, Preference, Reader, Records, Stream};
use crate::data::tokenizer::Tokenizer;
use crate::data::{Example, ExampleKind, PrepStats};
use rayon::prelude::*;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// A progress bar over the bytes of the input files, on standard error when it is a terminal
/// (hidden otherwise, so logs and tests see nothing).
fn progress(files: &[PathBuf], what: &str) -> indicatif::ProgressBar {
    if files.is_empty() {
        return indicatif::ProgressBar::hidden();
    }
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

/// A row as its reader gives it: a jsonl line (parsed with the rest of its piece, in
/// parallel), or a record (a parquet row, a generated example).
enum Row {
    Line(String),
    Record(serde_json::Value),
}

/// Numbered rows of one piece.
type Piece = Vec<(usize, Row)>;

/// What every row of a stream is made with.
struct Making<'a> {
    base: &'a Path,
    seed: u64,
    tok: &'a Tokenizer,
    /// `seq_len + 1`.
    window: usize,
}

/// The format a file's rows are read in (a parquet file's follows its columns).
#[derive(Clone, Copy)]
enum RowFormat<'a> {
    Records(&'a Records),
    Chat(&'a Chat, &'a ChatTemplate),
    Preference(&'a Preference, Option<&'a ChatTemplate>),
}

/// Streams the examples of the token `stream` into `sink`; `seq_len` is the data's window.
pub fn stream(
    stream: &Stream,
    seq_len: usize,
    base: &Path,
    seed: u64,
    tok: &Tokenizer,
    stats: &mut PrepStats,
    sink: &mut Sink<'_>,
) -> Result<()> {
    let files: Vec<PathBuf> = expand_files(stream.reader.files(), base)?;
    let window = seq_len + 1;
    match (&stream.reader, &stream.format) {
        (Reader::Text { .. }, Format::Documents) => stream_text(seq_len, &files, tok, sink),
        (Reader::Csv { .. }, _) | (_, Format::Features(_)) | (_, Format::Documents) => {
            Err(Error::Config(format!(
                "[data]: source `{}` holds no token rows",
                stream.name()
            )))
        }
        _ => {
            let m = Making {
                base,
                seed,
                tok,
                window,
            };
            stream_rows(stream, &files, &m, stats, sink)
        }
    }
}

/// Whether `file` of a stream in `format` holds conversations: a conversation stream's do;
/// a parquet file read in both formats does when it has the messages column.
fn holds_chat(format: &Format, file: &Path) -> Result<bool> {
    match format {
        Format::Chat(_) => Ok(true),
        Format::ByColumns { chat, .. } => super::parquet::has_column(file, &chat.messages_field),
        _ => Ok(false),
    }
}

/// The format rows of a file are read in, given whether it holds conversations and the
/// stream's template (loaded when the first such file comes).
fn row_format<'a>(
    format: &'a Format,
    chat: bool,
    template: Option<&'a ChatTemplate>,
) -> Result<RowFormat<'a>> {
    match (format, template) {
        (Format::Preference(p), t) => Ok(RowFormat::Preference(p, t)),
        (Format::Records(r), _) | (Format::ByColumns { records: r, .. }, _) if !chat => {
            Ok(RowFormat::Records(r))
        }
        (Format::Chat(c) | Format::ByColumns { chat: c, .. }, Some(t)) => Ok(RowFormat::Chat(c, t)),
        _ => Err(Error::Config(
            "[data]: the stream has no conversation format".into(),
        )),
    }
}

/// One row, as its format makes it an example (or a blank, skipped or cut one).
fn row_line(
    f: RowFormat<'_>,
    tok: &Tokenizer,
    window: usize,
    at: (&Path, usize),
    row: &Row,
) -> Result<chat::Line> {
    let parsed;
    let v = match row {
        Row::Record(v) => v,
        Row::Line(l) if l.trim().is_empty() => return Ok(chat::Line::Blank),
        Row::Line(l) => {
            parsed = serde_json::from_str::<serde_json::Value>(l)
                .map_err(|e| Error::bad_line(at.0.display(), at.1, format!("invalid JSON: {e}")))?;
            &parsed
        }
    };
    match f {
        RowFormat::Chat(c, t) => chat::chat_value(c, t, tok, window, at, v),
        RowFormat::Preference(p, t) => preference::preference_value(p, t, tok, window, at, v),
        RowFormat::Records(r) => {
            let e = lm::record_example(r, tok, at.0, at.1, v)?;
            Ok(match &e {
                Example::Tokens { ids, .. } if ids.len() > window => chat::Line::Skipped,
                _ => chat::Line::Example(e),
            })
        }
    }
}

/// The text columns of a parquet stream (read as text; binary data there is an error).
fn text_columns(format: &Format) -> Vec<&str> {
    let mut out = vec![];
    if let Format::Chat(c) | Format::ByColumns { chat: c, .. } = format {
        out.push(c.messages_field.as_str());
    }
    if let Format::Preference(p) = format {
        out.extend([
            p.prompt_field.as_str(),
            p.chosen_field.as_str(),
            p.rejected_field.as_str(),
            p.completion_field.as_str(),
        ]);
    }
    if let Format::Records(r) | Format::ByColumns { records: r, .. } = format {
        out.extend([
            r.text_field.as_str(),
            r.prompt_field.as_str(),
            r.completion_field.as_str(),
        ]);
    }
    out
}

/// Reads the rows of `reader` (its `files`, or its generator from `seed`) in numbered pieces,
/// each with the file it came from.
fn read_rows(
    reader: &Reader,
    files: &[PathBuf],
    seed: u64,
    columns: &[&str],
    pb: &indicatif::ProgressBar,
    each: &mut dyn FnMut(&Path, Piece) -> Result<()>,
) -> Result<()> {
    match reader {
        Reader::Synthetic(s) => {
            let n = s.num_examples as u64;
            let mut start = 0;
            while start < n {
                let end = (start + LINES as u64).min(n);
                let piece = (start..end)
                    .map(|i| Ok((i as usize, Row::Record(lm::synthetic_record(s, seed, i)?))))
                    .collect::<Result<Vec<_>>>()?;
                each(Path::new("<synthetic>"), piece)?;
                start = end;
            }
        }
        Reader::Parquet { .. } => {
            for f in files {
                super::parquet::row_pieces(f, LINES, columns, |piece| {
                    each(
                        f,
                        piece
                            .into_iter()
                            .map(|(i, v)| (i, Row::Record(v)))
                            .collect(),
                    )
                })?;
                pb.inc(std::fs::metadata(f).map(|m| m.len()).unwrap_or(0));
            }
        }
        _ => {
            for f in files {
                line_pieces(f, |piece| {
                    pb.inc(piece.iter().map(|(_, l)| l.len() as u64 + 1).sum());
                    each(
                        f,
                        piece.into_iter().map(|(i, l)| (i, Row::Line(l))).collect(),
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// Reads the rows of a record or conversation stream, makes each an example in its format,
/// and sends those that fit the `window` to `sink`, counting what was skipped or cut; fails
/// when no row is left.
fn stream_rows(
    stream: &Stream,
    files: &[PathBuf],
    m: &Making<'_>,
    stats: &mut PrepStats,
    sink: &mut Sink<'_>,
) -> Result<()> {
    let (base, seed, tok, window) = (m.base, m.seed, m.tok, m.window);
    let generated = matches!(stream.reader, Reader::Synthetic(_));
    let (mut kept, skipped_before) = (0usize, stats.skipped);
    let (mut template, mut last): (Option<ChatTemplate>, Option<(PathBuf, bool)>) = (None, None);
    let mut kind = None;
    let pb = progress(files, stream.name());
    let columns = text_columns(&stream.format);
    read_rows(
        &stream.reader,
        files,
        seed,
        &columns,
        &pb,
        &mut |f, piece| {
            let chat = match &last {
                Some((p, c)) if p == f => *c,
                _ => holds_chat(&stream.format, f)?,
            };
            last = Some((f.to_path_buf(), chat));
            if template.is_none() {
                template = stream_template(&stream.format, chat, base, tok)?;
            }
            let format = row_format(&stream.format, chat, template.as_ref())?;
            // A generated row longer than the window is an error, not a skip: see below.
            let limit = if generated { usize::MAX } else { window };
            let out: Vec<Result<chat::Line>> = piece
                .par_iter()
                .map(|(i, row)| row_line(format, tok, limit, (f, *i), row))
                .collect();
            if generated {
                too_long_generated(&out, window)?;
            }
            one_kind(&out, &piece, f, &mut kind)?;
            kept += take_lines(out, stats, sink)?;
            Ok(())
        },
    )?;
    pb.finish_and_clear();
    let skipped = stats.skipped - skipped_before;
    if kept > 0 || skipped == 0 {
        return Ok(());
    }
    Err(match (&stream.reader, &stream.format) {
        (Reader::Parquet { .. }, _) => seq_error(format!(
            "[data]: no row is left: {skipped} skipped (longer than seq_len + 1 = {window} tokens, or nothing to learn); raise seq_len"
        )),
        (_, Format::Chat(c)) => no_conversation_left(skipped, window, c.overflow),
        (_, Format::Preference(_)) => seq_error(format!(
            "[data]: no preference row is left: {skipped} skipped (a sequence longer than seq_len + 1 = {window} tokens); raise seq_len or set overflow = \"truncate\""
        )),
        _ => seq_error(format!("[data]: every example ({skipped}) is longer than seq_len {} + 1 tokens; raise seq_len", window - 1)),
    })
}

/// The template rows of a file in `format` are rendered with: a conversation file's (the
/// source's `chat_template`, else the tokenizer's); for preference rows, the one named, else
/// the tokenizer's when it has one (plain rows need none).
fn stream_template(
    format: &Format,
    chat: bool,
    base: &Path,
    tok: &Tokenizer,
) -> Result<Option<ChatTemplate>> {
    match format {
        Format::Chat(c) | Format::ByColumns { chat: c, .. } if chat => {
            Ok(Some(chat::template(c, base, tok)?))
        }
        Format::Preference(p)
            if p.chat_template.is_some() || tok.config().chat_template.is_some() =>
        {
            Ok(Some(chat::template_file(
                p.chat_template.as_ref(),
                base,
                tok,
            )?))
        }
        _ => Ok(None),
    }
}

/// Every example of a stream is of one kind (the first row's): a row of another names its
/// file and line.
fn one_kind(
    out: &[Result<chat::Line>],
    piece: &Piece,
    file: &Path,
    kind: &mut Option<ExampleKind>,
) -> Result<()> {
    for (line, (n, _)) in out.iter().zip(piece) {
        let (Ok(chat::Line::Example(e)) | Ok(chat::Line::Truncated(e))) = line else {
            continue;
        };
        match kind {
            None => *kind = Some(e.kind()),
            Some(k) if *k != e.kind() => {
                return Err(Error::bad_line(
                    file.display(),
                    *n,
                    format!(
                        "the row is one of {}, the rows before it {}; a dataset holds one kind",
                        e.kind().describe(),
                        k.describe()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Generated examples all have about the same length: one longer than the `window` means
/// `seq_len` is too short for the generator, which is bad input rather than a row to skip.
fn too_long_generated(out: &[Result<chat::Line>], window: usize) -> Result<()> {
    for line in out {
        if let Ok(chat::Line::Example(Example::Tokens { ids, .. })) = line {
            if ids.len() > window {
                return Err(seq_error(format!(
                    "[data]: the generated examples are up to {} tokens, longer than seq_len + 1 = {window}; set seq_len = {}",
                    ids.len(),
                    ids.len() - 1
                )));
            }
        }
    }
    Ok(())
}

/// Tokenizes the text files and sends their `seq_len`-token windows to `sink`, failing when the
/// files are empty or shorter than one window.
fn stream_text(seq: usize, files: &[PathBuf], tok: &Tokenizer, sink: &mut Sink<'_>) -> Result<()> {
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
                if !any && !t.is_empty() {
                    // A document starts with what the tokenizer starts a text with (BOS).
                    for e in w.push(tok.special_ends().0) {
                        emitted += 1;
                        sink(e)?;
                    }
                }
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
    Ok(())
}
