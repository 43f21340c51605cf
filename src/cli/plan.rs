//! `pzt plan MODEL [--set KEY=VALUE]... [--json] [--depth N] [--nproc N]`.

use super::common::{lib_err, use_color, Failure};
use std::path::PathBuf;

/// Resolve a recipe (or an HF directory's or a checkpoint's), build its model (shapes only),
/// check shapes on the declared input, and print the tree, parameter counts and a
/// training-memory estimate.
#[derive(clap::Args)]
pub struct Args {
    /// A recipe, a HuggingFace model directory, a run checkpoint directory, or a run directory
    /// (its newest checkpoint; RUN@best, RUN@latest).
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
    /// Plan for a data-parallel run on N processes (default: WORLD_SIZE when set, else 1).
    #[arg(long, value_name = "N")]
    nproc: Option<u64>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let r = pzt::recipe::of_model::of_model(&a.model, &a.set).map_err(lib_err)?;
    let world = match a.nproc {
        Some(n) if (1..=pzt::train::world::MAX_WORLD as u64).contains(&n) => n as usize,
        Some(n) => {
            return Err(Failure::BadInput(format!(
                "--nproc {n}: give 1 to {} processes",
                pzt::train::world::MAX_WORLD
            )))
        }
        None => std::env::var("WORLD_SIZE")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| (1..=pzt::train::world::MAX_WORLD).contains(n))
            .unwrap_or(1),
    };
    let mut plan =
        pzt::recipe::plan::Plan::shapes_only(r, &pzt::builtin_registry()).map_err(lib_err)?;
    plan.world_size = world;
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
