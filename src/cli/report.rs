//! `pzt report RUN_DIR... [--html OUT.html]`.

use super::common::{check_outputs, lib_err, Failure};
use std::path::PathBuf;

/// A run as pictures: loss, learning rate, grad norm, throughput and every eval metric over
/// steps, the checkpoints with their metrics (the best marked), the resolved recipe and the
/// environment. Several run directories overlay their curves.
#[derive(clap::Args)]
pub struct Args {
    /// One or more run directories (`runs/NAME`).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Write the report as a self-contained HTML page (without it: a text summary).
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    check_outputs(
        &pzt::base::outputs::Outputs::new()
            .inputs(&a.runs)
            .output_opt("--html", a.html.as_ref()),
    )?;
    let runs = a
        .runs
        .iter()
        .map(|d| pzt::run::listing::read_run(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(lib_err)?;
    match &a.html {
        Some(h) => {
            let data = pzt::viz::report::report_data(&runs);
            let title = data["title"].as_str().unwrap_or("pzt report").to_string();
            pzt::viz::page::write(h, &title, &data).map_err(lib_err)?;
            println!("wrote {}", h.display());
        }
        None => {
            for r in &runs {
                println!(
                    "{}  {}  step {} of {}",
                    r.dir.display(),
                    r.state.name(),
                    r.steps_done,
                    r.steps_total
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "?".into())
                );
                println!(
                    "  metrics   {}",
                    pzt::viz::report::metric_order(std::slice::from_ref(r)).join(", ")
                );
                for (step, _) in &r.checkpoints {
                    let best = if r.best.map(|b| b.step) == Some(*step) {
                        format!("  best {}", r.key_metric.clone().unwrap_or_default())
                    } else {
                        String::new()
                    };
                    println!("  step-{step}{best}");
                }
            }
        }
    }
    Ok(())
}
