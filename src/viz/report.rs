//! A run report as the page's JSON (`pzt report`): per run its metric series over steps (loss,
//! learning rate, grad norm, throughput and every eval metric), its checkpoints with the eval
//! metrics logged at their steps (and which one is best by the run's ranking metric), the
//! resolved recipe, the throughput and the environments it ran in. Several runs overlay.

use crate::train::runs::RunInfo;
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;

/// The order plots come in: these first, then the eval metrics, then the rest.
const FIRST: [&str; 4] = ["loss", "eval.loss", "lr", "grad_norm"];

fn series(r: &RunInfo) -> BTreeMap<String, Vec<[f64; 2]>> {
    let mut out: BTreeMap<String, Vec<[f64; 2]>> = BTreeMap::new();
    for m in &r.metrics {
        let Some(step) = m.get("step").and_then(Json::as_f64) else {
            continue;
        };
        for (k, v) in m {
            if k == "step" {
                continue;
            }
            if let Some(x) = v.as_f64().filter(|x| x.is_finite()) {
                out.entry(k.clone()).or_default().push([step, x]);
            }
        }
    }
    out
}

fn eval_at(r: &RunInfo, step: u64) -> Map<String, Json> {
    r.metrics
        .iter()
        .filter(|m| m.get("step").and_then(Json::as_u64) == Some(step))
        .flat_map(|m| m.iter().filter(|(k, _)| k.starts_with("eval.")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn run_json(r: &RunInfo) -> Json {
    let s = series(r);
    let best_step = r.best.map(|b| b.step);
    let checkpoints: Vec<Json> = r
        .checkpoints
        .iter()
        .map(|(step, dir)| {
            json!({
                "step": step,
                "dir": dir.display().to_string(),
                "metrics": eval_at(r, *step),
                "best": best_step == Some(*step),
            })
        })
        .collect();
    let recipe = r
        .checkpoints
        .last()
        .and_then(|(_, d)| crate::base::files::read_small_file(&d.join("recipe.toml")).ok());
    let tps: Vec<f64> = s
        .get("tokens_per_s")
        .map(|v| v.iter().map(|p| p[1]).collect())
        .unwrap_or_default();
    let throughput = if tps.is_empty() {
        Json::Null
    } else {
        json!({
            "mean_tokens_per_s": tps.iter().sum::<f64>() / tps.len() as f64,
            "last_tokens_per_s": tps.last(),
        })
    };
    json!({
        "name": r.name,
        "dir": r.dir.display().to_string(),
        "state": r.state.name(),
        "steps_done": r.steps_done,
        "steps_total": r.steps_total,
        "metric": r.key_metric,
        "best": r.best.map(|b| json!({ "value": b.value, "step": b.step })),
        "last": r.last.map(|b| json!({ "value": b.value, "step": b.step })),
        "series": s,
        "checkpoints": checkpoints,
        "recipe": recipe,
        "throughput": throughput,
        "environment": r.environment,
        "bytes": r.bytes,
    })
}

/// The metric names of `runs`, in plotting order.
pub fn metric_order(runs: &[RunInfo]) -> Vec<String> {
    let mut all: Vec<String> = runs
        .iter()
        .flat_map(|r| series(r).into_keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let rank = |k: &str| match FIRST.iter().position(|f| *f == k) {
        Some(i) => (0, i),
        None if k.starts_with("eval.") => (1, 0),
        None => (2, 0),
    };
    all.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    all
}

/// The report page data for `runs`.
pub fn report_data(runs: &[RunInfo]) -> Json {
    json!({
        "page": "report",
        "title": format!("pzt report · {}", runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")),
        "metrics": metric_order(runs),
        "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
        "viewer": { "pzt": env!("CARGO_PKG_VERSION"), "libtorch": crate::backend::torch_version() },
    })
}
