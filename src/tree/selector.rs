//! The text selector language, used by `[[patch]] select = ...` and `pzt select`.
//!
//! ```text
//! selector := step (( " " | " > " ) step)*
//! step     := term ("[" INDEX "]")?
//! term     := Kind                      a layer kind (starts with an upper-case letter)
//!           | name(.name)*              an exact path (from the root, or below the previous step)
//!           | glob                      a path with `*` (one segment) or `**` (any segments)
//! ```
//!
//! - `Linear`: every instance of a kind (outermost ones: a match's own descendants are not
//!   matched again).
//! - `Attention Linear`: instances of `Linear` inside instances of `Attention` (space =
//!   descendant).
//! - `Attention > input_to_query`: the direct child `input_to_query` of each `Attention`
//!   (`>` = child; the right side can be a name, a kind or `*`).
//! - `blocks.3.attention`: an exact path. `blocks.*.mlp`, `blocks.**.output`: globs over child
//!   names (`*` is one segment, `**` any number of segments).
//! - `Linear[0]`, `Linear[-1]`: the n-th match so far (0-based; negative counts from the end).

use crate::tree::{Node, Selection};

/// A selector syntax error: 1-based column and message.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectorError {
    pub column: usize,
    pub message: String,
}

impl SelectorError {
    /// The selector with a caret under the column.
    pub fn render(&self, selector: &str) -> String {
        format!(
            "error: bad selector: {}\n  | {selector}\n  | {}^\n",
            self.message,
            " ".repeat(self.column - 1)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Kind(String),
    Path(Vec<String>),
    Glob(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Rel {
    Root,
    Descendant,
    Child,
}

#[derive(Debug, Clone, PartialEq)]
struct Step {
    rel: Rel,
    term: Term,
    nth: Option<i64>,
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    steps: Vec<Step>,
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '*')
}

impl Selector {
    /// Parses the text form.
    /// An optional `[n]` / `[-n]` at `chars[*i]`, moving `i` past it.
    fn index(chars: &[char], i: &mut usize) -> Result<Option<i64>, SelectorError> {
        let err = |col: usize, message: String| SelectorError {
            column: col + 1,
            message,
        };
        if *i >= chars.len() || chars[*i] != '[' {
            return Ok(None);
        }
        let open = *i;
        *i += 1;
        let ns = *i;
        if *i < chars.len() && chars[*i] == '-' {
            *i += 1;
        }
        while *i < chars.len() && chars[*i].is_ascii_digit() {
            *i += 1;
        }
        let num: String = chars[ns..*i].iter().collect();
        if *i >= chars.len() || chars[*i] != ']' {
            return Err(err(
                (*i).min(chars.len()),
                format!(
                    "expected `]` to close the index opened at column {}",
                    open + 1
                ),
            ));
        }
        let n = num.parse::<i64>().map_err(|_| {
            err(
                ns,
                format!("`{num}` is not an index; expected `[N]` or `[-N]`"),
            )
        })?;
        *i += 1;
        Ok(Some(n))
    }

    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        let mut steps = vec![];
        let err = |col: usize, m: String| {
            Err(SelectorError {
                column: col + 1,
                message: m,
            })
        };
        let skip_ws = |i: &mut usize| {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
        };
        skip_ws(&mut i);
        if i >= chars.len() {
            return err(0, "empty selector".into());
        }
        let mut rel = Rel::Root;
        loop {
            // term
            let start = i;
            while i < chars.len() && is_word(chars[i]) {
                i += 1;
            }
            if start == i {
                let what = match chars.get(i) {
                    Some(c) => format!("unexpected `{c}`"),
                    None => "the selector ends here".to_string(),
                };
                return err(
                    i.min(chars.len()),
                    format!("{what}; expected a layer kind, a path or a glob"),
                );
            }
            let word: String = chars[start..i].iter().collect();
            let term = Self::term(&word, start)?;
            let nth = Self::index(&chars, &mut i)?;
            steps.push(Step {
                rel: rel.clone(),
                term,
                nth,
            });
            // combinator
            let before = i;
            skip_ws(&mut i);
            if i >= chars.len() {
                break;
            }
            if chars[i] == '>' {
                i += 1;
                skip_ws(&mut i);
                rel = Rel::Child;
            } else if i > before {
                rel = Rel::Descendant;
            } else {
                return err(
                    i,
                    format!(
                        "unexpected `{}`; steps are separated by a space or ` > `",
                        chars[i]
                    ),
                );
            }
            if i >= chars.len() {
                return err(
                    i,
                    "the selector ends after `>`; expected a name, a kind or a glob".into(),
                );
            }
        }
        Ok(Selector { steps })
    }

    fn term(word: &str, start: usize) -> Result<Term, SelectorError> {
        let segs: Vec<String> = word.split('.').map(String::from).collect();
        if let Some(pos) = word.find("..").or(if word.starts_with('.') {
            Some(0)
        } else if word.ends_with('.') {
            Some(word.len() - 1)
        } else {
            None
        }) {
            return Err(SelectorError {
                column: start + pos + 1,
                message: format!("empty path segment in `{word}`"),
            });
        }
        let first = word.chars().next().unwrap_or('a');
        if segs.len() == 1 && first.is_ascii_uppercase() {
            return Ok(Term::Kind(word.to_string()));
        }
        for (k, s) in segs.iter().enumerate() {
            if s.contains('*') && s != "*" && s != "**" {
                let col = start + segs[..k].iter().map(|x| x.len() + 1).sum::<usize>();
                return Err(SelectorError {
                    column: col + 1,
                    message: format!("`{s}`: a glob segment is `*` or `**`"),
                });
            }
        }
        if segs.iter().any(|s| s == "*" || s == "**") {
            Ok(Term::Glob(segs))
        } else {
            Ok(Term::Path(segs))
        }
    }

    /// Evaluates against a tree.
    pub fn select(&self, root: &Node) -> Selection {
        let mut current: Vec<Vec<String>> = vec![vec![]];
        for step in &self.steps {
            let mut next: Vec<Vec<String>> = vec![];
            let mut seen = std::collections::HashSet::new();
            // The bases are never nested in each other: walking each one's subtree visits
            // every node at most once.
            for base in &current {
                let Ok(b) = root.get(base) else { continue };
                b.walk(&mut |rel, n| {
                    let ok = match (&step.rel, &step.term) {
                        (Rel::Root, Term::Kind(k)) => n.kind() == k,
                        (Rel::Descendant, Term::Kind(k)) => !rel.is_empty() && n.kind() == k,
                        (Rel::Child, Term::Kind(k)) => rel.len() == 1 && n.kind() == k,
                        (Rel::Root | Rel::Descendant, Term::Path(segs)) => rel == &segs[..],
                        (Rel::Child, Term::Path(segs)) => segs.len() == 1 && rel == &segs[..],
                        (Rel::Root | Rel::Descendant, Term::Glob(g)) => glob_match(g, rel),
                        (Rel::Child, Term::Glob(g)) => rel.len() == 1 && glob_match(g, rel),
                    };
                    if ok {
                        let mut p = base.clone();
                        p.extend(rel.iter().cloned());
                        if seen.insert(p.clone()) {
                            next.push(p);
                        }
                    }
                });
            }
            // Outermost only, in tree order.
            let sel = Selection::from_paths(root, next);
            let mut paths: Vec<Vec<String>> = sel.path_segments().to_vec();
            if let Some(n) = step.nth {
                let len = paths.len() as i64;
                let i = if n < 0 { len + n } else { n };
                paths = if i >= 0 && i < len {
                    vec![paths[i as usize].clone()]
                } else {
                    vec![]
                };
            }
            current = paths;
        }
        Selection::from_paths(root, current)
    }
}

fn glob_match(pat: &[String], path: &[String]) -> bool {
    // ok[j] after pattern segment i: whether pat[..=i] matches path[..j] (a table, so that
    // many `**` segments stay O(pattern x path) instead of exponential).
    let mut ok = vec![false; path.len() + 1];
    ok[0] = true;
    for p in pat {
        let mut next = vec![false; path.len() + 1];
        for j in 0..=path.len() {
            next[j] = if p == "**" {
                ok[j] || (j > 0 && next[j - 1])
            } else {
                j > 0 && ok[j - 1] && (p == "*" || *p == path[j - 1])
            };
        }
        ok = next;
    }
    ok[path.len()]
}
