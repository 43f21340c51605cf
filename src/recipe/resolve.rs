//! Resolution: read a recipe, deep-merge its `include`s (paths relative to the including file,
//! in order, the including file last so it wins; cycles are errors), then apply `--set`
//! overrides (`key.path=VALUE`, VALUE a TOML value).

use super::raw::{self, RNode, RVal};
use super::source::{Diagnostic, Loc, Sources};
use std::path::{Path, PathBuf};

/// A resolved raw recipe and the sources it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub sources: Sources,
    pub root: RNode,
    /// The recipe file.
    pub path: PathBuf,
}

/// The text of a recipe or include file, or the diagnostic saying why it cannot be read.
fn read_recipe(path: &Path, include_loc: Option<&Loc>) -> Result<String, Diagnostic> {
    crate::base::files::read_small_file(path).map_err(|e| {
        let what = if include_loc.is_some() {
            "include"
        } else {
            "recipe"
        };
        let why = match e {
            crate::Error::BadFile { message, .. } => message,
            other => other.to_string(),
        };
        Diagnostic::new(format!("cannot read {what} `{}`: {why}", path.display()))
            .at(include_loc.cloned())
    })
}

fn load(
    path: &Path,
    text: Option<String>,
    sources: &mut Sources,
    stack: &mut Vec<(PathBuf, String)>,
    include_loc: Option<Loc>,
) -> Result<RNode, Diagnostic> {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if let Some(i) = stack.iter().position(|(p, _)| *p == canon) {
        let mut cycle: Vec<String> = stack[i..].iter().map(|(_, shown)| shown.clone()).collect();
        cycle.push(path.display().to_string());
        return Err(
            Diagnostic::new(format!("include cycle: {}", cycle.join(" -> "))).at(include_loc),
        );
    }
    let text = match text {
        Some(t) => t,
        None => read_recipe(path, include_loc.as_ref())?,
    };
    let file = sources.add(path.display().to_string(), text);
    let mut node = raw::parse(sources, file)?;
    let includes = match &mut node.val {
        RVal::Table(t) => t.shift_remove("include"),
        _ => None,
    };
    let Some(inc) = includes else { return Ok(node) };
    let items: Vec<RNode> = match inc.node.val {
        RVal::Array(a) => a,
        RVal::Str(_) => vec![inc.node.clone()],
        _ => {
            return Err(Diagnostic::new(format!(
                "`include` must be an array of file paths, found {}",
                inc.node.type_name()
            ))
            .at(inc.node.loc.clone())
            .key("include"))
        }
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    stack.push((canon, path.display().to_string()));
    let mut merged: Option<RNode> = None;
    for item in items {
        let rel = match &item.val {
            RVal::Str(s) => s.clone(),
            _ => {
                return Err(Diagnostic::new(format!(
                    "an include must be a file path string, found {}",
                    item.type_name()
                ))
                .at(item.loc.clone())
                .key("include"))
            }
        };
        let sub = load(&dir.join(&rel), None, sources, stack, item.loc.clone())?;
        match &mut merged {
            None => merged = Some(sub),
            Some(m) => raw::merge(m, sub),
        }
    }
    stack.pop();
    match merged {
        None => Ok(node),
        Some(mut m) => {
            raw::merge(&mut m, node);
            Ok(m)
        }
    }
}

/// Applies one `--set key.path=VALUE`.
pub fn apply_set(
    root: &mut RNode,
    sources: &mut Sources,
    arg: &str,
    index: usize,
) -> Result<(), Diagnostic> {
    let file = sources.add(format!("--set #{index}"), arg.to_string());
    let whole = Some(Loc {
        file,
        span: 0..arg.len(),
    });
    let Some(eq) = arg.find('=') else {
        return Err(Diagnostic::new(format!("--set expects KEY=VALUE, got `{arg}`")).at(whole));
    };
    let key = arg[..eq].trim();
    let key_loc = Some(Loc {
        file,
        span: 0..eq.max(1),
    });
    if key.is_empty() || key.split('.').any(|s| s.is_empty()) {
        return Err(
            Diagnostic::new(format!("--set: `{key}` is not a dotted key path")).at(key_loc),
        );
    }
    let value_text = &arg[eq + 1..];
    // Parse `v = VALUE` and shift its spans back onto the argument.
    let doc_text = format!("v = {value_text}");
    let mut tmp = Sources::default();
    let tf = tmp.add("--set", doc_text);
    // A value that is not TOML is the string it spells: `--set run.name=x`.
    let (parsed, prefix) = match raw::parse(&tmp, tf) {
        Ok(p) => (p, 4),
        Err(d) => {
            let quoted = format!("v = {}", toml_quote(value_text));
            let mut tmp2 = Sources::default();
            let tf2 = tmp2.add("--set", quoted);
            if value_text.trim_start().starts_with(['"', '\'', '[', '{']) || value_text.is_empty() {
                return Err(set_syntax_error(d, file, eq, arg));
            }
            match raw::parse(&tmp2, tf2) {
                Ok(p) => (p, usize::MAX),
                Err(_) => return Err(set_syntax_error(d, file, eq, arg)),
            }
        }
    };
    let mut value = match parsed.val {
        RVal::Table(mut t) => match t.shift_remove("v") {
            Some(e) => e.node,
            None => return Err(Diagnostic::new("--set: no value").at(whole)),
        },
        _ => return Err(Diagnostic::new("--set: no value").at(whole)),
    };
    if prefix == 4 {
        relocate(&mut value, file, eq + 1, 4);
    } else {
        value.loc = Some(Loc {
            file,
            span: eq + 1..arg.len().max(eq + 2),
        });
    }
    let path: Vec<String> = key.split('.').map(|s| s.trim().to_string()).collect();
    if path[0] == "include" {
        return Err(Diagnostic::new(
            "--set cannot change `include`: includes are read before --set applies; list them in the recipe",
        )
        .at(key_loc));
    }
    raw::set_path(root, &path, value, key_loc)
}

fn set_syntax_error(d: Diagnostic, file: usize, eq: usize, arg: &str) -> Diagnostic {
    Diagnostic::new(d.message.replace("invalid TOML", "invalid --set value")).at(Some(Loc {
        file,
        span: eq + 1..arg.len().max(eq + 2),
    }))
}

/// `s` as a TOML basic string.
fn toml_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn relocate(n: &mut RNode, file: usize, base: usize, prefix: usize) {
    if let Some(l) = &mut n.loc {
        l.file = file;
        l.span = (l.span.start + base).saturating_sub(prefix)
            ..(l.span.end + base).saturating_sub(prefix);
    }
    match &mut n.val {
        RVal::Array(a) => a.iter_mut().for_each(|x| relocate(x, file, base, prefix)),
        RVal::Table(t) => {
            for e in t.values_mut() {
                if let Some(l) = &mut e.key_loc {
                    l.file = file;
                    l.span = (l.span.start + base).saturating_sub(prefix)
                        ..(l.span.end + base).saturating_sub(prefix);
                }
                relocate(&mut e.node, file, base, prefix);
            }
        }
        _ => {}
    }
}

/// Reads `path` with its includes and applies `sets` in order.
pub fn resolve(path: &Path, sets: &[String]) -> Result<Resolved, (Sources, Diagnostic)> {
    resolve_with(path, None, sets)
}

/// Resolves the recipe `text` as if it were the file `path` (which need not exist: its
/// directory is where relative paths and includes are found), then applies `sets`.
pub fn resolve_text(
    path: &Path,
    text: String,
    sets: &[String],
) -> Result<Resolved, (Sources, Diagnostic)> {
    resolve_with(path, Some(text), sets)
}

fn resolve_with(
    path: &Path,
    text: Option<String>,
    sets: &[String],
) -> Result<Resolved, (Sources, Diagnostic)> {
    let mut sources = Sources::default();
    let mut root = match load(path, text, &mut sources, &mut vec![], None) {
        Ok(r) => r,
        Err(d) => return Err((sources, d)),
    };
    for (i, s) in sets.iter().enumerate() {
        if let Err(d) = apply_set(&mut root, &mut sources, s, i + 1) {
            return Err((sources, d));
        }
    }
    Ok(Resolved {
        sources,
        root,
        path: path.to_path_buf(),
    })
}
