//! `pzt eval RECIPE [--checkpoint DIR] [--set KEY=VALUE]... [--json]`.

use super::common::{deterministic_cublas, lib_err, print_metrics, Failure};
use std::path::PathBuf;

/// Evaluate a checkpoint of a recipe's run on its eval split.
#[derive(clap::Args)]
pub struct Args {
    /// The recipe file.
    recipe: PathBuf,
    /// The checkpoint directory (default: the newest of the run).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Override a recipe key: KEY.PATH=VALUE.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the metrics as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let r = pzt::recipe::Recipe::load(&a.recipe, &a.set).map_err(lib_err)?;
    let dir =
        pzt::train::checkpoint_to_eval(&r.run.out_dir, a.checkpoint.as_deref()).map_err(lib_err)?;
    let spec = r.eval_spec(&pzt::builtin_registry()).map_err(lib_err)?;
    deterministic_cublas(&spec);
    let m = pzt::train::eval(spec, &dir).map_err(|e| lib_err(r.locate(e)))?;
    if a.json {
        let mut j = serde_json::Map::new();
        j.insert(
            "checkpoint".into(),
            serde_json::Value::String(dir.display().to_string()),
        );
        j.insert("metrics".into(), serde_json::Value::Object(m));
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    } else {
        println!("checkpoint {}", dir.display());
        print_metrics(&m);
    }
    Ok(())
}
