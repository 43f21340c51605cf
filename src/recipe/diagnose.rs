//! Turning library errors about a config (an [`Error::ConfigField`] naming a field) into
//! located diagnostics: the key or value in the recipe, "did you mean", the expected keys.

use super::decode::join;
use super::raw::{RNode, RTable, RVal};
use super::source::{did_you_mean, Diagnostic, Loc};
use crate::base::Error;

/// The backquoted names after "expected" in a serde message (`expected one of `a`, `b``),
/// without the trailing "in `key`" that toml adds.
fn expected_names(message: &str) -> Vec<String> {
    let Some(tail) = message.split("expected ").nth(1) else {
        return vec![];
    };
    let tail = tail
        .split(" in `")
        .next()
        .unwrap_or(tail)
        .split("\nin `")
        .next()
        .unwrap_or(tail);
    tail.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, x)| x.to_string())
        .collect()
}

/// Maps a library error about a config (`ConfigField`) to a located diagnostic.
pub fn config_error(
    e: Error,
    t: &RTable,
    table_loc: Option<Loc>,
    key_path: &[String],
    allowed_extra: &[&str],
) -> Diagnostic {
    match e {
        Error::ConfigField { field, message } => {
            let segs: Vec<String> = field
                .split('.')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            // serde's unknown-field message names the key and the expected ones.
            if let Some(rest) = message.split("unknown field `").nth(1) {
                let key = rest.split('`').next().unwrap_or("").to_string();
                let expected = expected_names(&message);
                let mut all: Vec<&str> = expected.iter().map(|s| s.as_str()).collect();
                all.extend(allowed_extra.iter().copied());
                let mut inner = segs.clone();
                if inner.last() != Some(&key) {
                    inner.push(key.clone());
                }
                let node = RNode {
                    val: RVal::Table(t.clone()),
                    loc: table_loc.clone(),
                };
                let loc = node.loc_of(&inner).or(table_loc);
                let what = message.split(':').next().unwrap_or("layer");
                let mut d = Diagnostic::new(format!("unknown key `{key}` in {what}"))
                    .at(loc)
                    .key(join(&[key_path, &inner[..]].concat()));
                if let Some(s) = did_you_mean(&key, all.iter().copied()) {
                    d = d.label(format!("did you mean `{s}`?"));
                }
                return d.note(format!("expected one of: {}", all.join(", ")));
            }
            let node = RNode {
                val: RVal::Table(t.clone()),
                loc: table_loc.clone(),
            };
            if let Some(rest) = message.split("unknown variant `").nth(1) {
                let word = rest.split('`').next().unwrap_or("").to_string();
                let expected = expected_names(&message);
                let vloc = node.lookup(&segs).and_then(|n| n.loc.clone()).or(table_loc);
                let what = message.split(':').next().unwrap_or("config");
                let field = segs.last().cloned().unwrap_or_default();
                let mut d =
                    Diagnostic::new(format!("{what}: unknown value `{word}` for `{field}`"))
                        .at(vloc)
                        .key(join(&[key_path, &segs[..]].concat()));
                if let Some(s) = did_you_mean(&word, expected.iter().map(|s| s.as_str())) {
                    d = d.label(format!("did you mean `{s}`?"));
                }
                return d.note(format!("expected one of: {}", expected.join(", ")));
            }
            // Point at the value (which may come from a `--set`), else at its key.
            let loc = if segs.is_empty() {
                table_loc
            } else {
                node.lookup(&segs)
                    .and_then(|n| n.loc.clone())
                    .or_else(|| node.loc_of(&segs))
                    .or(table_loc)
            };
            Diagnostic::new(message.trim().to_string())
                .at(loc)
                .key(join(&[key_path, &segs[..]].concat()))
        }
        other => Diagnostic::new(other.to_string())
            .at(table_loc)
            .key(join(key_path)),
    }
}
