//! A run report as the page's JSON (`pzt report`): per run its headline (the final and the best
//! value of the training loss and of every eval metric, each with its step), its metric series
//! over steps (loss, learning rate, grad norm, throughput and every eval metric), its checkpoints
//! with the eval
//! metrics logged at their steps (and which one is best by the run's ranking metric), the
//! resolved recipe, the throughput and the environments it ran in. Several runs overlay.

use crate::run::listing::RunInfo;
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

/// The headline of a run whose checkpoints are ranked by `key` (larger is better when
/// `key_max`): for the training loss and every eval metric of `s`, its last logged value and its
/// best one (the first step that reached it), each with its step. Besides the key metric,
/// accuracies and exact matches are better larger, losses and perplexities smaller.
fn headline(key: Option<&str>, key_max: bool, s: &BTreeMap<String, Vec<[f64; 2]>>) -> Vec<Json> {
    let mut names: Vec<&String> = s
        .keys()
        .filter(|k| *k == "loss" || k.starts_with("eval."))
        .collect();
    names.sort_by_key(|k| (k.as_str() != "loss", k.as_str() != "eval.loss", k.as_str()));
    names
        .into_iter()
        .filter_map(|k| {
            let pts = s.get(k)?;
            let last = pts.last()?;
            let max = if key == Some(k.as_str()) {
                key_max
            } else {
                k.contains("accuracy") || k.contains("exact")
            };
            let best = pts.iter().fold(last, |b, p| {
                let better = if max { p[1] > b[1] } else { p[1] < b[1] };
                if better || (p[1] == b[1] && p[0] < b[0]) {
                    p
                } else {
                    b
                }
            });
            Some(json!({
                "metric": k,
                "maximize": max,
                "key": key == Some(k.as_str()),
                "final": { "value": last[1], "step": last[0] },
                "best": { "value": best[1], "step": best[0] },
            }))
        })
        .collect()
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
        "headline": headline(r.key_metric.as_deref(), r.maximize, &s),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headline_has_the_final_and_best_of_loss_and_evals() {
        let mut s: BTreeMap<String, Vec<[f64; 2]>> = BTreeMap::new();
        s.insert("lr".into(), vec![[1.0, 0.1]]);
        s.insert("loss".into(), vec![[1.0, 3.0], [2.0, 1.0], [3.0, 2.0]]);
        s.insert("eval.loss".into(), vec![[2.0, 2.0], [3.0, 2.5]]);
        s.insert("eval.token_accuracy".into(), vec![[2.0, 0.5], [3.0, 0.25]]);
        let h = headline(Some("eval.loss"), false, &s);
        let names: Vec<&str> = h.iter().filter_map(|m| m["metric"].as_str()).collect();
        assert_eq!(names, ["loss", "eval.loss", "eval.token_accuracy"]);
        assert_eq!(h[0]["final"], json!({ "value": 2.0, "step": 3.0 }));
        assert_eq!(h[0]["best"], json!({ "value": 1.0, "step": 2.0 }));
        assert_eq!(
            (h[1]["key"].as_bool(), h[0]["key"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(h[1]["best"]["value"], json!(2.0));
        // Accuracies are better when larger.
        assert_eq!(h[2]["maximize"], json!(true));
        assert_eq!(h[2]["best"], json!({ "value": 0.5, "step": 2.0 }));
        // A run ranked by the largest eval.loss (best_mode = "max") says so in its headline.
        let h = headline(Some("eval.loss"), true, &s);
        assert_eq!(h[1]["best"]["value"], json!(2.5));
    }
}
