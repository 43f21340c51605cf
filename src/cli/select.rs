//! `pzt select MODEL SELECTOR [--set KEY=VALUE]...`.

use super::common::{tree_of, Failure};
use std::path::PathBuf;

/// Print each subtree a selector matches (path and kind), then the count.
#[derive(clap::Args)]
pub struct Args {
    /// A recipe, a HuggingFace model directory, or a run checkpoint directory.
    model: PathBuf,
    /// A selector, e.g. 'Attention Linear', 'blocks.*.mlp', 'Linear[0]'.
    selector: String,
    /// Override a recipe key: KEY.PATH=VALUE.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let sel = pzt::tree::selector::Selector::parse(&a.selector)
        .map_err(|e| Failure::Rendered(e.render(&a.selector)))?;
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
