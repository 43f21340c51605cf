//! The crate's architecture, checked on every `make test`: the library's top-level modules use
//! only the modules before them in one order (README, "Architecture"), no function is over
//! 100 lines, and the library neither parses command lines nor sets environment variables.
//!
//! A reference from module `a` to module `b` is `crate::b` anywhere in a file of `a` (a `use`,
//! a path in code, or one name of `use crate::{b, ...}`), comments excluded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each library module may use only the modules before it.
const ORDER: [&str; 17] = [
    "base", "backend", "named", "params", "tree", "layers", "models", "run", "assembly", "data",
    "spec", "recipe", "train", "viz", "loader", "probe", "demo",
];

/// The binary's modules: the top, allowed to use the whole library.
const BINARY: [&str; 2] = ["main", "cli"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/layers/attention/mod.rs` -> `layers`).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let head = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    head.trim_end_matches(".rs").to_string()
}

/// The text without `//` comments (doc comments included), line structure kept.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every module named after `crate::` in `code`, with its line.
fn references(code: &str) -> Vec<(String, usize)> {
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = vec![];
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        from = at + "crate::".len();
        if code[..at]
            .chars()
            .last()
            .is_some_and(|c| is_ident(c) || c == '$')
        {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::X, b}`: the first segment of each part, over any lines.
            let inner = group.split('}').next().unwrap_or("");
            for part in inner.split(',') {
                let name: String = part.trim().chars().take_while(|c| is_ident(*c)).collect();
                if !name.is_empty() {
                    out.push((name, line_of(at)));
                }
            }
            continue;
        }
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        let after = &rest[name.len()..];
        if after.starts_with("::") || after.starts_with(';') {
            out.push((name, line_of(at)));
        }
    }
    out
}

#[test]
fn modules_use_only_modules_before_them() {
    let mut files = vec![];
    rust_files(&src(), &mut files);
    let rank: BTreeMap<&str, usize> = ORDER.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut wrong = vec![];
    for f in &files {
        let m = module_of(f);
        if m == "lib" || BINARY.contains(&m.as_str()) {
            continue;
        }
        let Some(&mine) = rank.get(m.as_str()) else {
            wrong.push(format!(
                "{}: module `{m}` is not in the architecture order; place it in ORDER (tests/it/architecture.rs) and the README",
                f.display()
            ));
            continue;
        };
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        for (to, line) in references(&code) {
            match rank.get(to.as_str()) {
                Some(&theirs) if theirs >= mine && to != m => wrong.push(format!(
                    "{}:{line}: `{m}` uses `{to}`, which comes after it",
                    f.display()
                )),
                _ => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the order:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_module_is_placed_and_exists() {
    let mut tops: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            module_of(&p)
        })
        .filter(|m| m != "lib" && !BINARY.contains(&m.as_str()))
        .collect();
    tops.sort();
    let mut order: Vec<String> = ORDER.iter().map(|s| s.to_string()).collect();
    order.sort();
    assert_eq!(tops, order, "src/ and the architecture order disagree");
}

/// The most lines a function may have: about 80 is the aim, 100 the limit (a file holds one
/// concept, however long; a function holds one step).
const MAX_FN_LINES: usize = 100;

/// The code with string and char literals and comments blanked (line structure kept), so that
/// braces can be counted.
fn blank_literals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let at = |j: usize| c.get(j).copied();
        if c[i] == '/' && at(i + 1) == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && at(i + 1) == Some('*') {
            i += 2;
            while i < c.len() && !(c[i] == '*' && at(i + 1) == Some('/')) {
                if c[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if c[i] == 'r'
            && (at(i + 1) == Some('"') || at(i + 1) == Some('#'))
            && !c.get(i.wrapping_sub(1)).is_some_and(|p| is_ident(*p))
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while j < c.len() && !c[j..].starts_with(&close) {
                if c[j] == '\n' {
                    out.push('\n');
                }
                j += 1;
            }
            i = j + close.len();
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\n' {
                    out.push('\n');
                }
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c[i] == '\''
            && (at(i + 2) == Some('\'') || (at(i + 1) == Some('\\') && at(i + 3) == Some('\'')))
        {
            // A char literal ('{', '\n'); lifetimes ('a) pass through.
            i += if at(i + 1) == Some('\\') { 4 } else { 3 };
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// `(line, name, lines)` of every function in `text`.
fn functions(text: &str) -> Vec<(usize, String, usize)> {
    let code = blank_literals(text);
    let lines: Vec<&str> = code.lines().collect();
    let mut out = vec![];
    for (i, l) in lines.iter().enumerate() {
        let Some(at) = l.find("fn ") else { continue };
        let before = l[..at].trim();
        let words_ok = before.split_whitespace().all(|w| {
            ["pub", "const", "async", "unsafe", "extern"].contains(&w)
                || w.starts_with("pub(")
                || w.starts_with('"')
        });
        if !words_ok || (at > 0 && is_ident(l.as_bytes()[at - 1] as char)) {
            continue;
        }
        let name: String = l[at + 3..].chars().take_while(|c| is_ident(*c)).collect();
        if name.is_empty() {
            continue;
        }
        let (mut depth, mut started) = (0i64, false);
        for (j, m) in lines.iter().enumerate().skip(i) {
            if !started && m.contains(';') && !m.contains('{') {
                break;
            }
            for ch in m.chars() {
                match ch {
                    '{' => {
                        depth += 1;
                        started = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if started && depth == 0 {
                out.push((i + 1, name.clone(), j - i + 1));
                break;
            }
        }
    }
    out
}

#[test]
fn no_function_is_over_100_lines() {
    let mut files = vec![];
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            functions(&text)
                .into_iter()
                .filter(|(_, _, n)| *n > MAX_FN_LINES)
                .map(|(line, name, n)| format!("{}:{line} {name} ({n} lines)", f.display()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines: {}",
        long.join(", ")
    );
}

#[test]
fn the_function_finder_measures_bodies_not_literals() {
    let text = "pub fn a() {\n    let s = \"}}{\";\n    let c = '}';\n    // }\n}\nfn b<'x>(v: &'x str) -> &'x str {\n    v\n}\npub(crate) fn c();\n";
    let found = functions(text);
    let got: Vec<(&str, usize)> = found.iter().map(|(_, n, l)| (n.as_str(), *l)).collect();
    assert_eq!(got, [("a", 5), ("b", 3)]);
}

#[test]
fn the_library_parses_no_command_line_and_sets_no_environment() {
    let mut files = vec![];
    rust_files(&src(), &mut files);
    for f in files {
        if BINARY.contains(&module_of(&f).as_str()) {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(&f).unwrap());
        for bad in ["clap::", "set_var(", "remove_var("] {
            assert!(
                !code.contains(bad),
                "{}: the library uses `{bad}`",
                f.display()
            );
        }
    }
}

#[test]
fn the_reference_finder_sees_every_form() {
    let code = "use crate::tree::Node;\nuse crate::{\n    base::Error,\n    named,\n};\nlet x = crate::layers::misc::f();\n$crate::toml\ncrate::Result\n";
    let found: Vec<(String, usize)> = references(code);
    let names: Vec<&str> = found.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["tree", "base", "named", "layers"]);
    assert_eq!(found[3].1, 6);
    assert_eq!(module_of(&src().join("layers/attention/mod.rs")), "layers");
}
