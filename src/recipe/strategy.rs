//! Applying `[strategy]` to the built (and patched) tree: LoRA adapters on the targets (with
//! everything else frozen), `trainable`, `freeze`, then `checkpoint_activations`. Each is a
//! toolshed function over a selection ([`crate::layers::toolshed`]), so `pzt show` displays the
//! rewritten tree and selectors can target it. Selectors that match nothing and targets that
//! are not contracting Linears are errors at their key.

use super::model::ModelBuilder;
use super::source::{Diagnostic, Loc};
use super::Recipe;
use crate::layers::linear::Linear;
use crate::layers::toolshed::{self, freeze::freeze_where, LoraConfig};
use crate::models::hf::peft::{module_matches, target_modules, Adapter};
use crate::spec::strategy::{OneOrMany, StrategyKind};
use crate::tree::selector::Selector;
use crate::tree::{Node, Selection};
use std::collections::BTreeSet;

/// Where the value of `strategy.<keys...>` is written.
fn value_loc(recipe: &Recipe, keys: &[&str]) -> Option<Loc> {
    let mut node = &recipe.resolved.root;
    for k in std::iter::once(&"strategy").chain(keys) {
        node = &node.as_table()?.get(*k)?.node;
    }
    node.loc.clone()
}

struct Ctx<'a> {
    recipe: &'a Recipe,
    /// `(HF module, weight label)` of a model loaded from an HF directory.
    modules: Option<Vec<(String, String)>>,
}

impl Ctx<'_> {
    fn err(&self, keys: &[&str], message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(message)
            .at(value_loc(self.recipe, keys))
            .key(format!("strategy.{}", keys.join(".")))
    }

    /// The union of what the selectors of `strategy.<keys>` select (each must match).
    fn selection(
        &self,
        tree: &Node,
        v: &OneOrMany,
        keys: &[&str],
    ) -> Result<Selection, Diagnostic> {
        let mut paths: Vec<Vec<String>> = vec![];
        for s in v.items() {
            let sel = Selector::parse(&s)
                .map_err(|e| self.err(keys, format!("bad selector `{s}`: {}", e.message)))?;
            let found = sel.select(tree);
            if found.count() == 0 {
                return Err(self
                    .err(keys, format!("selector `{s}` matches nothing"))
                    .note("run `pzt select RECIPE 'SELECTOR'` to see what a selector matches"));
            }
            for p in found.path_segments() {
                if !paths.contains(p) {
                    paths.push(p.clone());
                }
            }
        }
        Ok(Selection::from_paths(tree, paths))
    }

    /// The tree paths of the Linears that `targets` name.
    fn targets(
        &self,
        tree: &Node,
        targets: &[String],
        exclude: &[String],
    ) -> Result<Selection, Diagnostic> {
        let keys = ["lora", "targets"];
        let mut linears: Vec<(Vec<String>, String)> = vec![];
        tree.walk(&mut |path, n| {
            if n.layer_as::<Linear>().is_some() {
                if let Ok(e) = n.param_entry("weights") {
                    linears.push((path.to_vec(), e.label().to_string()));
                }
            }
        });
        let mut paths: Vec<Vec<String>> = vec![];
        let add = |p: &Vec<String>, paths: &mut Vec<Vec<String>>| {
            if !paths.contains(p) {
                paths.push(p.clone());
            }
        };
        for t in targets {
            if t == "all-linear" {
                // Every contracting Linear but the output head (peft's `all-linear`).
                let head: BTreeSet<&str> = self
                    .modules
                    .iter()
                    .flatten()
                    .filter(|(m, _)| m == "lm_head" || m == "embed_out")
                    .map(|(_, l)| l.as_str())
                    .collect();
                for (p, label) in &linears {
                    let contracting = tree
                        .get(p)
                        .ok()
                        .and_then(|n| n.layer_as::<Linear>())
                        .is_some_and(|l| !l.input_axes.is_empty() && !l.output_axes.is_empty());
                    let is_head = head.contains(label.as_str())
                        || p.first().map(String::as_str) == Some("lm_head");
                    if contracting && !is_head {
                        add(p, &mut paths);
                    }
                }
                continue;
            }
            if let Some(mods) = &self.modules {
                let labels: Vec<&String> = mods
                    .iter()
                    .filter(|(m, _)| module_matches(m, t))
                    .map(|(_, l)| l)
                    .collect();
                if !labels.is_empty() {
                    for (p, label) in &linears {
                        if labels.contains(&label) {
                            add(p, &mut paths);
                        }
                    }
                    continue;
                }
            }
            let sel = Selector::parse(t).map_err(|e| {
                let mut d = self.err(
                    &keys,
                    format!(
                        "`{t}` is neither an HF module name nor a selector: {}",
                        e.message
                    ),
                );
                if let Some(mods) = &self.modules {
                    let short: BTreeSet<&str> = mods
                        .iter()
                        .filter_map(|(m, _)| m.rsplit('.').next())
                        .collect();
                    d = d.note(format!(
                        "this model's Linear modules: {}",
                        short.into_iter().collect::<Vec<_>>().join(" ")
                    ));
                }
                d
            })?;
            let found = sel.select(tree);
            if found.count() == 0 {
                let mut d = self.err(&keys, format!("target `{t}` matches nothing"));
                if let Some(mods) = &self.modules {
                    let short: BTreeSet<&str> = mods
                        .iter()
                        .filter_map(|(m, _)| m.rsplit('.').next())
                        .collect();
                    if let Some(m) = super::source::did_you_mean(t, short.iter().copied()) {
                        d = d.note(format!("did you mean `{m}`?"));
                    }
                }
                return Err(d.note(
                    "targets are HF module names (q_proj, v_proj, ...) for a model loaded from an HF directory, selectors, or \"all-linear\"",
                ));
            }
            // Penzai's loraify adapts the Linears within the selection.
            let within = toolshed::linears_within(&found);
            if within.count() == 0 {
                return Err(self.err(&keys, format!("target `{t}` selects no Linear")));
            }
            for p in within.path_segments() {
                add(p, &mut paths);
            }
        }
        // peft's `exclude_modules`: Linears whose HF module an exclusion names stay plain.
        if let (false, Some(mods)) = (exclude.is_empty(), &self.modules) {
            let excluded: BTreeSet<&String> = mods
                .iter()
                .filter(|(m, _)| exclude.iter().any(|x| module_matches(m, x)))
                .map(|(_, l)| l)
                .collect();
            paths.retain(|p| {
                !linears
                    .iter()
                    .any(|(lp, label)| lp == p && excluded.contains(label))
            });
        }
        Ok(Selection::from_paths(tree, paths))
    }
}

/// Applies the recipe's `[strategy]` to `tree` (adapters get their parameters from `mb`'s
/// builder, or from `init_from`).
pub fn apply_strategy(
    tree: Node,
    recipe: &Recipe,
    mb: &ModelBuilder<'_>,
) -> Result<Node, Diagnostic> {
    let s = &recipe.strategy;
    if s.is_plain() {
        return Ok(tree);
    }
    let arch = recipe
        .hf_dir()
        .and_then(|d| crate::models::hf::read_config(&d).ok());
    let modules = match &arch {
        Some(a) => Some(target_modules(a).map_err(|e| Diagnostic::new(e.to_string()))?),
        None => None,
    };
    let cx = Ctx { recipe, modules };
    let mut tree = tree;
    if let (StrategyKind::Lora, Some(l)) = (s.kind, &s.lora) {
        let adapter = match &l.init_from {
            Some(dir) => Some(
                Adapter::read(&recipe.base_dir().join(dir))
                    .map_err(|e| cx.err(&["lora", "init_from"], e.to_string()))?,
            ),
            None => None,
        };
        let cfg = LoraConfig {
            rank: l.rank.or(adapter.as_ref().map(|a| a.rank)).unwrap_or(8),
            alpha: l.alpha.or(adapter.as_ref().map(|a| a.alpha)).unwrap_or(8.0),
            dropout: l
                .dropout
                .or(adapter.as_ref().map(|a| a.dropout))
                .unwrap_or(0.0),
            dora: l.dora.or(adapter.as_ref().map(|a| a.dora)).unwrap_or(false),
        };
        let targets = match (&l.targets, &adapter) {
            (Some(t), _) => t.items(),
            (None, Some(a)) => a.targets.clone(),
            (None, None) => vec![],
        };
        let exclude = adapter
            .as_ref()
            .map(|a| a.exclude.clone())
            .unwrap_or_default();
        let selection = cx.targets(&tree, &targets, &exclude)?;
        tree = toolshed::loraify(&selection, &cfg, mb.builder).map_err(|e| {
            cx.err(
                &["lora", "targets"],
                format!("cannot adapt: {}", e.root_cause()),
            )
            .note(format!("at `{}`", e.layer_path().unwrap_or_default()))
        })?;
        if let Some(a) = &adapter {
            let arch = arch.as_ref().ok_or_else(|| {
                cx.err(
                    &["lora", "init_from"],
                    "`init_from` needs a model loaded from an HF directory (`[model] hf = ...`)",
                )
            })?;
            a.load_into(&tree, arch)
                .map_err(|e| cx.err(&["lora", "init_from"], e.to_string()))?;
        }
        let mut keep: BTreeSet<String> = toolshed::adapter_labels(&tree);
        if let Some(t) = &s.trainable {
            let sel = cx.selection(&tree, t, &["trainable"])?;
            keep.extend(toolshed::freeze::labels_under(&sel));
        }
        tree = freeze_where(&tree, &|l| !keep.contains(l))
            .map_err(|e| cx.err(&["kind"], e.to_string()))?;
    } else if let Some(t) = &s.trainable {
        let sel = cx.selection(&tree, t, &["trainable"])?;
        tree = toolshed::train_only(&sel).map_err(|e| cx.err(&["trainable"], e.to_string()))?;
    }
    if let Some(f) = &s.freeze {
        let sel = cx.selection(&tree, f, &["freeze"])?;
        tree = toolshed::freeze(&sel).map_err(|e| cx.err(&["freeze"], e.to_string()))?;
    }
    if let Some(c) = &s.checkpoint_activations {
        let sel = cx.selection(&tree, c, &["checkpoint_activations"])?;
        tree = toolshed::checkpoint_activations(&sel)
            .map_err(|e| cx.err(&["checkpoint_activations"], e.to_string()))?;
    }
    Ok(tree)
}
