//! `pzt show MODEL [--depth N] [--json] [--set KEY=VALUE]...`.

use super::common::{tree_of, use_color, Failure};
use std::path::PathBuf;

/// Print the model tree of a recipe.
#[derive(clap::Args)]
pub struct Args {
    /// A recipe, a HuggingFace model directory, or a run checkpoint directory.
    model: PathBuf,
    /// Collapse nodes below this depth (default: show everything).
    #[arg(long)]
    depth: Option<usize>,
    /// Print the tree as JSON.
    #[arg(long)]
    json: bool,
    /// Override a recipe key: KEY.PATH=VALUE.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let tree = tree_of(&a.model, &a.set)?;
    if a.json {
        let j = pzt::recipe::report::tree_json(&tree, "", None);
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    } else {
        print!(
            "{}",
            tree.render_styled(a.depth.unwrap_or(usize::MAX), use_color())
        );
    }
    Ok(())
}
