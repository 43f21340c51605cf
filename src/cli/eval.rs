//! `pzt eval RECIPE [--checkpoint DIR | --no-checkpoint] [--set KEY=VALUE]... [--json]
//! [--expect 'METRIC>=X']...`.

use super::common::{deterministic_cublas, lib_err, print_metrics, Failure};
use pzt::train::expect::Expectation;
use std::path::PathBuf;

/// Evaluate a checkpoint of a recipe's run on its eval split.
#[derive(clap::Args)]
pub struct Args {
    /// The recipe file.
    recipe: PathBuf,
    /// The checkpoint directory (default: the newest of the run); `best` or `latest` for the
    /// run's best (by keep_best or eval.loss) or newest; a run directory or RUN@best also work.
    #[arg(long, conflicts_with = "no_checkpoint")]
    checkpoint: Option<PathBuf>,
    /// Evaluate the model as the recipe builds it, without a run checkpoint: a pretrained
    /// model, a PEFT adapter from `init_from`, a `[model] checkpoint` (or a seeded init).
    #[arg(long)]
    no_checkpoint: bool,
    /// Override a recipe key: KEY.PATH=VALUE.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the metrics (and the verdicts of --expect) as JSON.
    #[arg(long)]
    json: bool,
    /// A gate for CI: METRIC OP NUMBER, e.g. 'eval.exact_match>=0.9' (OP: >= > <= < == !=).
    /// Exit 3 when one fails. Repeatable.
    #[arg(long = "expect", value_name = "EXPECTATION")]
    expect: Vec<String>,
}

/// `--checkpoint`: `best` or `latest` of the recipe's run, a run directory or RUN@best, or a
/// checkpoint directory.
fn checkpoint_arg(
    given: Option<&std::path::Path>,
    out_dir: &std::path::Path,
) -> Result<Option<PathBuf>, Failure> {
    let resolved = match given {
        Some(c) if !c.exists() && (c == "best" || c == "latest") => {
            pzt::run::model_path::resolve_model(&PathBuf::from(format!(
                "{}@{}",
                out_dir.display(),
                c.display()
            )))
        }
        Some(c) => pzt::run::model_path::resolve_model(c),
        None => return Ok(None),
    };
    resolved.map(Some).map_err(lib_err)
}

pub fn run(a: Args) -> Result<(), Failure> {
    let exps = a
        .expect
        .iter()
        .map(|e| Expectation::parse(e))
        .collect::<Result<Vec<_>, _>>()
        .map_err(lib_err)?;
    let r = pzt::recipe::Recipe::load(&a.recipe, &a.set).map_err(lib_err)?;
    let given = checkpoint_arg(a.checkpoint.as_deref(), &r.run.out_dir)?;
    let dir = if a.no_checkpoint {
        None
    } else {
        Some(pzt::train::checkpoint_to_eval(&r.run.out_dir, given.as_deref()).map_err(lib_err)?)
    };
    let spec = r.eval_spec(&pzt::builtin_registry()).map_err(lib_err)?;
    deterministic_cublas(&spec);
    let m = match &dir {
        Some(d) => pzt::train::eval(spec, d),
        None => pzt::train::eval_as_built(spec),
    }
    .map_err(|e| lib_err(r.locate(e)))?;
    let verdicts = pzt::train::expect::check_all(&exps, &m).map_err(lib_err)?;
    let shown = dir
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "none (the model as the recipe builds it)".into());
    if a.json {
        let mut j = serde_json::Map::new();
        j.insert(
            "checkpoint".into(),
            dir.as_ref()
                .map(|d| serde_json::Value::String(d.display().to_string()))
                .unwrap_or(serde_json::Value::Null),
        );
        j.insert("metrics".into(), serde_json::Value::Object(m));
        if !exps.is_empty() {
            j.insert(
                "expectations".into(),
                verdicts.iter().map(|v| v.to_json()).collect(),
            );
        }
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    } else {
        println!("checkpoint {shown}");
        print_metrics(&m);
        for v in &verdicts {
            println!("  {}", v.line());
        }
    }
    let failed: Vec<String> = verdicts
        .iter()
        .filter(|v| !v.pass)
        .map(|v| {
            format!(
                "{} is {}, expected {} {}",
                v.expectation.metric,
                v.value,
                v.expectation.cmp.symbol(),
                v.expectation.bound
            )
        })
        .collect();
    if !failed.is_empty() {
        return Err(Failure::Expectation(format!(
            "expectation failed: {}",
            failed.join("; ")
        )));
    }
    Ok(())
}
