//! `[strategy]` as rewrites ([`crate::assembly`]): LoRA adapters on the targets (with
//! everything else frozen), `trainable`, `freeze`, then `checkpoint_activations`; and the
//! engine's errors put at the key that wrote the failing rewrite. Selectors that match nothing
//! and targets that are not contracting Linears are errors at their key.

use super::source::{did_you_mean, Diagnostic, Loc};
use super::Recipe;
use crate::assembly::{self, Action, Problem, Rewrite, RewriteError, Select};
use crate::layers::toolshed::LoraConfig;
use crate::models::hf::peft::Adapter;
use crate::spec::strategy::{OneOrMany, StrategyKind};
use crate::tree::{Builder, Node};

/// Where the value of `strategy.<keys...>` is written.
fn value_loc(recipe: &Recipe, keys: &[&str]) -> Option<Loc> {
    let mut node = &recipe.resolved.root;
    for k in std::iter::once(&"strategy").chain(keys) {
        node = &node.as_table()?.get(*k)?.node;
    }
    node.loc.clone()
}

fn err(recipe: &Recipe, keys: &[&str], message: impl Into<String>) -> Diagnostic {
    Diagnostic::new(message)
        .at(value_loc(recipe, keys))
        .key(format!("strategy.{}", keys.join(".")))
}

/// A rewrite of the strategy, with the keys that wrote its selection and its action.
struct Written {
    rewrite: Rewrite,
    select_keys: &'static [&'static str],
    action_keys: &'static [&'static str],
}

fn selectors(v: &OneOrMany) -> Select {
    Select::selectors(v.items())
}

/// The LoRA rewrite: settings from `[strategy.lora]`, then the adapter's, then the defaults.
fn lora_rewrite(recipe: &Recipe) -> Result<Option<Rewrite>, Diagnostic> {
    let (StrategyKind::Lora, Some(l)) = (recipe.strategy.kind, &recipe.strategy.lora) else {
        return Ok(None);
    };
    let adapter = match &l.init_from {
        Some(dir) => Some(
            Adapter::read(&recipe.base_dir().join(dir))
                .map_err(|e| err(recipe, &["lora", "init_from"], e.to_string()))?,
        ),
        None => None,
    };
    let a = adapter.as_ref();
    let d = LoraConfig::default();
    let config = LoraConfig {
        rank: l.rank.or(a.map(|a| a.rank)).unwrap_or(d.rank),
        alpha: l.alpha.or(a.map(|a| a.alpha)).unwrap_or(d.alpha),
        dropout: l.dropout.or(a.map(|a| a.dropout)).unwrap_or(d.dropout),
        dora: l.dora.or(a.map(|a| a.dora)).unwrap_or(d.dora),
    };
    let targets = match (&l.targets, a) {
        (Some(t), _) => t.items(),
        (None, Some(a)) => a.targets.clone(),
        (None, None) => vec![],
    };
    let exclude = a.map(|a| a.exclude.clone()).unwrap_or_default();
    Ok(Some(Rewrite::new(
        Select::Targets { targets, exclude },
        Action::Lora {
            config,
            init: adapter.map(std::sync::Arc::new),
        },
    )))
}

/// The rewrites `[strategy]` stands for, in order.
fn rewrites(recipe: &Recipe) -> Result<Vec<Written>, Diagnostic> {
    let s = &recipe.strategy;
    let mut out = vec![];
    if let Some(rewrite) = lora_rewrite(recipe)? {
        out.push(Written {
            rewrite,
            select_keys: &["lora", "targets"],
            action_keys: &["lora", "targets"],
        });
        let select = s.trainable.as_ref().map_or_else(Select::nothing, selectors);
        out.push(Written {
            rewrite: Rewrite::new(select, Action::TrainOnly { adapters: true }),
            select_keys: &["trainable"],
            action_keys: &["kind"],
        });
    } else if let Some(t) = &s.trainable {
        out.push(Written {
            rewrite: Rewrite::new(selectors(t), Action::TrainOnly { adapters: false }),
            select_keys: &["trainable"],
            action_keys: &["trainable"],
        });
    }
    if let Some(f) = s.quantize {
        let skip = s
            .quantize_skip
            .as_ref()
            .map(|k| k.items())
            .unwrap_or_default();
        out.push(Written {
            rewrite: Rewrite::new(
                Select::selectors(["blocks"]),
                Action::Quantize {
                    format: f.name().to_string(),
                    skip,
                },
            ),
            select_keys: &["quantize"],
            action_keys: &["quantize"],
        });
    }
    for (v, action, keys) in [
        (&s.freeze, Action::Freeze, &["freeze"]),
        (
            &s.checkpoint_activations,
            Action::Checkpoint,
            &["checkpoint_activations"],
        ),
    ] {
        if let Some(v) = v {
            out.push(Written {
                rewrite: Rewrite::new(selectors(v), action),
                select_keys: keys,
                action_keys: keys,
            });
        }
    }
    for w in &mut out {
        w.rewrite = w
            .rewrite
            .clone()
            .written_at("strategy", &w.select_keys.join("."));
    }
    Ok(out)
}

/// The rewrites `[strategy]` stands for (each knows the key that wrote it).
pub(super) fn strategy_rewrites(recipe: &Recipe) -> Result<Vec<Rewrite>, Diagnostic> {
    Ok(rewrites(recipe)?.into_iter().map(|w| w.rewrite).collect())
}

/// The engine's error at the key of the rewrite that failed.
fn locate(recipe: &Recipe, written: &[Written], e: RewriteError) -> Diagnostic {
    let Some(w) = written.get(e.index) else {
        return Diagnostic::new(e.into_error().to_string());
    };
    let at = |m: String| err(recipe, w.select_keys, m);
    let modules_note = |d: Diagnostic, modules: &[String]| {
        if modules.is_empty() {
            d
        } else {
            d.note(format!(
                "this model's Linear modules: {}",
                modules.join(" ")
            ))
        }
    };
    match e.problem {
        Problem::BadSelector {
            selector, message, ..
        } => at(format!("bad selector `{selector}`: {message}")),
        Problem::MatchesNothing { selector } | Problem::Count { selector, .. } => {
            at(format!("selector `{selector}` matches nothing"))
                .note("run `pzt select RECIPE 'SELECTOR'` to see what a selector matches")
        }
        Problem::NotATarget {
            target,
            message,
            modules,
        } => modules_note(
            at(format!(
                "`{target}` is neither an HF module name nor a selector: {message}"
            )),
            &modules,
        ),
        Problem::TargetMatchesNothing { target, modules } => {
            let mut d = at(format!("target `{target}` matches nothing"));
            if let Some(m) = did_you_mean(&target, modules.iter().map(String::as_str)) {
                d = d.note(format!("did you mean `{m}`?"));
            }
            d.note("targets are HF module names (q_proj, v_proj, ...) for a model loaded from an HF directory, selectors, or \"all-linear\"")
        }
        Problem::NoLinear { target: Some(t) } => at(format!("target `{t}` selects no Linear")),
        Problem::NoLinear { target: None } => at("the targets select no Linear".into()),
        Problem::Adapter(m) => err(recipe, &["lora", "init_from"], m),
        Problem::Failed(e) if matches!(w.rewrite.action, Action::Lora { .. }) => err(
            recipe,
            w.action_keys,
            format!("cannot adapt: {}", e.root_cause()),
        )
        .note(format!("at `{}`", e.layer_path().unwrap_or_default())),
        Problem::Failed(e) => err(recipe, w.action_keys, e.to_string()),
    }
}

/// Applies the recipe's `[strategy]` to `tree` (adapters get their parameters from `builder`,
/// or from `init_from`).
pub fn apply_strategy(tree: Node, recipe: &Recipe, builder: &Builder) -> Result<Node, Diagnostic> {
    if recipe.strategy.is_plain() {
        return Ok(tree);
    }
    let written = rewrites(recipe)?;
    let arch = recipe
        .hf_dir()
        .and_then(|d| crate::models::hf::read_config(&d).ok());
    let mut cx = assembly::Context::new(builder);
    if let Some(a) = &arch {
        cx = cx
            .with_arch(a)
            .map_err(|e| Diagnostic::new(e.to_string()))?;
    }
    let list: Vec<Rewrite> = written.iter().map(|w| w.rewrite.clone()).collect();
    assembly::apply(tree, &list, &cx).map_err(|e| locate(recipe, &written, e))
}
