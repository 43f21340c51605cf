//! A plain-text rendering of the tree: one line per node with its child name, kind, summary
//! and parameters; nodes deeper than `depth` are collapsed into a count.

use super::Node;
use crate::params::ParamEntry;

fn param_str(name: &str, p: &ParamEntry) -> String {
    let state = match p {
        ParamEntry::Bound(b) if b.trainable() => "",
        ParamEntry::Bound(_) => " frozen",
        ParamEntry::Frozen(_) => " const",
        ParamEntry::Slot(s) if s.quantized == Some("nf4") => " frozen nf4",
        ParamEntry::Slot(s) if s.quantized.is_some() => " frozen int8",
        ParamEntry::Slot(s) if !s.trainable => " frozen",
        ParamEntry::Slot(_) => "",
        ParamEntry::Quantized(q) if q.format() == "nf4" => " frozen nf4",
        ParamEntry::Quantized(_) => " frozen int8",
    };
    format!(
        "{name}: {}{:?}{state}",
        crate::base::dtype::short_name(p.kind()),
        p.shape()
    )
}

impl Node {
    /// Renders the tree as indented text, collapsing below `depth` levels.
    pub fn render(&self, depth: usize) -> String {
        self.render_styled(depth, false)
    }

    /// Like [`render`](Self::render), with ANSI colours (kinds, names, shapes) when `color`.
    pub fn render_styled(&self, depth: usize, color: bool) -> String {
        let mut out = String::new();
        self.render_into(&mut out, "", None, 0, depth, color);
        out
    }

    fn render_into(
        &self,
        out: &mut String,
        indent: &str,
        name: Option<&str>,
        level: usize,
        depth: usize,
        color: bool,
    ) {
        let paint = |code: &str, s: &str| {
            if color {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        let mut line = String::from(indent);
        if let Some(n) = name {
            line.push_str(&paint("33", n));
            line.push_str(": ");
        }
        line.push_str(&paint("1;36", self.kind()));
        let summary = self.layer().summary();
        if !summary.is_empty() {
            line.push_str(&format!("({summary})"));
        }
        if !self.param_entries().is_empty() {
            let ps: Vec<String> = self
                .param_entries()
                .iter()
                .map(|(n, p)| param_str(n, p))
                .collect();
            line.push_str(&paint("2", &format!("  [{}]", ps.join(", "))));
        }
        if !self.state_entries().is_empty() {
            let ss: Vec<&str> = self
                .state_entries()
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            line.push_str(&format!("  state[{}]", ss.join(", ")));
        }
        if !self.children().is_empty() && level >= depth {
            let mut count = 0;
            self.walk(&mut |_, _| count += 1);
            line.push_str(&format!("  {{... {} nodes}}", count - 1));
            out.push_str(&line);
            out.push('\n');
            return;
        }
        out.push_str(&line);
        out.push('\n');
        let child_indent = format!("{indent}  ");
        for (n, c) in self.children() {
            c.render_into(out, &child_indent, Some(n), level + 1, depth, color);
        }
    }
}
