//! `pzt runs [DIR] [--json]`.

use super::common::{lib_err, Failure};
use pzt::run::listing::{AtStep, RunInfo};
use std::path::PathBuf;

/// List the runs in a directory (default `runs/`): name, steps done of total, state
/// (finished, interrupted, running), the best and last eval of the ranking metric, size.
#[derive(clap::Args)]
pub struct Args {
    /// A directory of run directories, or one run directory.
    #[arg(default_value = "runs")]
    dir: PathBuf,
    /// Print the runs as JSON.
    #[arg(long)]
    json: bool,
}

fn at(a: Option<AtStep>) -> String {
    a.map(|a| format!("{:.4} @{}", a.value, a.step))
        .unwrap_or_else(|| "-".into())
}

fn row(r: &RunInfo) -> [String; 7] {
    let dir = r
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| r.dir.display().to_string());
    let steps = match r.steps_total {
        Some(t) => format!("{}/{t}", r.steps_done),
        None => format!("{}/?", r.steps_done),
    };
    [
        dir,
        steps,
        r.state.name().into(),
        r.key_metric.clone().unwrap_or_else(|| "-".into()),
        at(r.best),
        at(r.last),
        pzt::base::text::human_bytes(i64::try_from(r.bytes).unwrap_or(i64::MAX)),
    ]
}

pub fn run(a: Args) -> Result<(), Failure> {
    let listed = pzt::run::listing::list_runs(&a.dir).map_err(lib_err)?;
    // One run named by itself that cannot be read is an error, not an empty listing.
    if let [(dir, Err(e))] = listed.as_slice() {
        if dir == &a.dir {
            return Err(Failure::BadInput(format!("{}: {e}", dir.display())));
        }
    }
    let mut runs = vec![];
    for (dir, r) in listed {
        match r {
            Ok(r) => runs.push(r),
            Err(e) => eprintln!("warning: {}: cannot be read: {e}", dir.display()),
        }
    }
    if a.json {
        let j: Vec<serde_json::Value> = runs.iter().map(RunInfo::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
        return Ok(());
    }
    if runs.is_empty() {
        println!("no runs in {}", a.dir.display());
        return Ok(());
    }
    let head = ["run", "steps", "state", "metric", "best", "last", "size"].map(String::from);
    let rows: Vec<[String; 7]> = std::iter::once(head).chain(runs.iter().map(row)).collect();
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}
