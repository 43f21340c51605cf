//! `pzt plan MODEL [--set KEY=VALUE]... [--json] [--depth N]`.

use super::common::{lib_err, use_color, Failure};
use std::path::PathBuf;

/// Resolve a recipe (or an HF directory's or a checkpoint's), build its model (shapes only),
/// check shapes on the declared input, and print the tree, parameter counts and a
/// training-memory estimate.
#[derive(clap::Args)]
pub struct Args {
    /// A recipe, a HuggingFace model directory, or a run checkpoint directory.
    model: PathBuf,
    /// Override a recipe key: KEY.PATH=VALUE, VALUE a TOML value (strings quoted).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// Collapse the tree below this depth (default 3).
    #[arg(long, default_value_t = 3)]
    depth: usize,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let r = pzt::loader::recipe_of(&a.model, &a.set).map_err(lib_err)?;
    let plan =
        pzt::recipe::plan::Plan::shapes_only(r, &pzt::builtin_registry()).map_err(lib_err)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan.to_json()).unwrap_or_default()
        );
    } else {
        print!("{}", plan.render(a.depth, use_color()));
    }
    Ok(())
}
