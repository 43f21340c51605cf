//! Source files of a recipe (the recipe, its includes, `--set` arguments) and rustc-style
//! diagnostics that point into them: file, line, column, the line itself and a caret.

use std::ops::Range;

/// One source text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// How the file is named in messages (a path, or `--set #1`).
    pub name: String,
    pub text: String,
}

/// A place in a source: file index and byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: usize,
    pub span: Range<usize>,
}

/// All sources of one recipe resolution.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    /// Adds a source and returns its index.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> usize {
        self.files.push(SourceFile {
            name: name.into(),
            text: text.into(),
        });
        self.files.len() - 1
    }

    /// A source by index.
    pub fn file(&self, i: usize) -> Option<&SourceFile> {
        self.files.get(i)
    }

    /// 1-based line and column (in characters) of a byte offset, and the line's text.
    pub fn line_col(&self, loc: &Loc) -> Option<(usize, usize, String)> {
        let f = self.files.get(loc.file)?;
        let start = floor_boundary(&f.text, loc.span.start);
        let before = &f.text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = f.text[line_start..start].chars().count() + 1;
        let line_end = f.text[start..]
            .find('\n')
            .map(|i| start + i)
            .unwrap_or(f.text.len());
        Some((
            line,
            col,
            f.text[line_start..line_end]
                .trim_end_matches('\r')
                .to_string(),
        ))
    }

    /// `name:line:col`.
    pub fn position(&self, loc: &Loc) -> String {
        match (self.files.get(loc.file), self.line_col(loc)) {
            (Some(f), Some((l, c, _))) => format!("{}:{l}:{c}", f.name),
            _ => "<unknown>".into(),
        }
    }
}

/// A message about a recipe, with where it points (boxed, so that results stay small).
#[derive(Debug, Clone)]
pub struct Diagnostic(Box<DiagnosticData>);

impl std::ops::Deref for Diagnostic {
    type Target = DiagnosticData;
    fn deref(&self) -> &DiagnosticData {
        &self.0
    }
}

impl std::ops::DerefMut for Diagnostic {
    fn deref_mut(&mut self) -> &mut DiagnosticData {
        &mut self.0
    }
}

/// The parts of a [`Diagnostic`].
#[derive(Debug, Clone)]
pub struct DiagnosticData {
    pub message: String,
    pub loc: Option<Loc>,
    /// The dotted key path (`model.layers.0.input_axes`).
    pub key_path: Option<String>,
    /// A note next to the caret.
    pub label: Option<String>,
    /// `= ...` lines after the snippet.
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic(Box::new(DiagnosticData {
            message: message.into(),
            loc: None,
            key_path: None,
            label: None,
            notes: vec![],
        }))
    }
    /// Points at a place.
    pub fn at(mut self, loc: Option<Loc>) -> Self {
        self.loc = loc;
        self
    }
    /// Names the key path.
    pub fn key(mut self, path: impl Into<String>) -> Self {
        let p = path.into();
        if !p.is_empty() {
            self.key_path = Some(p);
        }
        self
    }
    /// A label under the caret.
    pub fn label(mut self, l: impl Into<String>) -> Self {
        self.label = Some(l.into());
        self
    }
    /// Adds a note.
    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.notes.push(n.into());
        self
    }

    /// Renders in the rustc style.
    pub fn render(&self, sources: &Sources) -> String {
        let mut out = format!(
            "error: {}\n",
            crate::base::text::clip(&self.message, MAX_MESSAGE)
        );
        if let Some(loc) = &self.loc {
            if let Some((line, col, text)) = sources.line_col(loc) {
                // A long line is shown as a window around the column.
                let (text, col) = window(&text, col);
                let name = sources
                    .file(loc.file)
                    .map(|f| f.name.as_str())
                    .unwrap_or("?");
                let num = line.to_string();
                let pad = " ".repeat(num.len());
                out.push_str(&format!("{pad}--> {name}:{line}:{col}\n"));
                out.push_str(&format!("{pad} |\n"));
                out.push_str(&format!("{num} | {text}\n"));
                let width = {
                    let f = sources
                        .file(loc.file)
                        .map(|f| f.text.as_str())
                        .unwrap_or("");
                    let end = floor_boundary(f, loc.span.end);
                    let start = floor_boundary(f, loc.span.start.min(end));
                    let seg = &f[start..end];
                    let first_line = seg.split('\n').next().unwrap_or("");
                    first_line.chars().count().max(1)
                };
                let caret =
                    "^".repeat(width.min(text.chars().count().saturating_sub(col - 1).max(1)));
                let label = self
                    .label
                    .as_deref()
                    .map(|l| format!(" {l}"))
                    .unwrap_or_default();
                out.push_str(&format!("{pad} | {}{caret}{label}\n", " ".repeat(col - 1)));
                if self.key_path.is_some() || !self.notes.is_empty() {
                    out.push_str(&format!("{pad} |\n"));
                }
                if let Some(k) = &self.key_path {
                    out.push_str(&format!("{pad} = key: {k}\n"));
                }
                for n in &self.notes {
                    out.push_str(&format!("{pad} = {n}\n"));
                }
                return out;
            }
        }
        if let Some(l) = &self.label {
            out.push_str(&format!("  {l}\n"));
        }
        if let Some(k) = &self.key_path {
            out.push_str(&format!("  = key: {k}\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("  = {n}\n"));
        }
        out
    }
}

/// The largest char boundary of `s` at or before byte `i` (a span can land inside a character:
/// an offset into a string value that has escapes in the file is only close).
fn floor_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Levenshtein distance, for "did you mean".
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = if a[i - 1] == b[j - 1] { 0 } else { 1 };
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a small distance.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lw = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lw, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The most characters of a message shown.
const MAX_MESSAGE: usize = 2000;
/// The widest source line quoted whole; longer ones are cut to a window around the column.
const MAX_LINE: usize = 160;

/// `text` cut to at most [`MAX_LINE`] characters around the 1-based column `col` (with `...`
/// where it was cut), and the column in the cut text.
fn window(text: &str, col: usize) -> (String, usize) {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= MAX_LINE {
        return (text.to_string(), col);
    }
    let start = col
        .saturating_sub(1)
        .saturating_sub(MAX_LINE / 3)
        .min(chars.len());
    let end = (start + MAX_LINE).min(chars.len());
    let mut out = String::new();
    let mut new_col = col - start;
    if start > 0 {
        out.push_str("...");
        new_col += 3;
    }
    out.extend(&chars[start..end]);
    if end < chars.len() {
        out.push_str("...");
    }
    (out, new_col)
}
