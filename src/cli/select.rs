//! `pzt select MODEL SELECTOR [--html OUT.html] [--set KEY=VALUE]...`.

use super::common::{tree_of, Failure};
use std::path::PathBuf;

/// Print each subtree a selector matches (path and kind), then the count; or write the model
/// page with the matches highlighted.
#[derive(clap::Args)]
pub struct Args {
    /// A recipe, a HuggingFace model directory, a run checkpoint directory, or a run directory
    /// (its newest checkpoint; RUN@best, RUN@latest).
    model: PathBuf,
    /// A selector, e.g. 'Attention Linear', 'blocks.*.mlp', 'Linear[0]'.
    selector: String,
    /// Write the model as an HTML page with the matches highlighted (Penzai's show_selection).
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
    /// Override a recipe key: KEY.PATH=VALUE.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let sel = pzt::tree::selector::Selector::parse(&a.selector)
        .map_err(|e| Failure::Rendered(e.render(&a.selector)))?;
    if let Some(out) = &a.html {
        return super::show::write_page(&a.model, &a.set, out, Some(&sel), &a.selector);
    }
    let tree = tree_of(&a.model, &a.set)?;
    let s = sel.select(&tree);
    for (path, node) in s.get() {
        let p = if path.is_empty() {
            "<root>".to_string()
        } else {
            path
        };
        println!("{p}  {}", node.kind());
    }
    let n = s.count();
    println!("{n} match{}", if n == 1 { "" } else { "es" });
    Ok(())
}
