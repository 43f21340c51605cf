//! Selections of rewrites: unions of selectors, and LoRA targets as peft names them.

use super::Problem;
use crate::layers::linear::Linear;
use crate::layers::toolshed;
use crate::models::hf::peft::module_matches;
use crate::tree::selector::Selector;
use crate::tree::{Node, Selection};
use std::collections::BTreeSet;

fn parse(s: &str) -> Result<Selector, Problem> {
    Selector::parse(s).map_err(|e| Problem::BadSelector {
        selector: s.to_string(),
        message: e.message,
        column: e.column,
    })
}

fn add(p: &[String], paths: &mut Vec<Vec<String>>) {
    if !paths.iter().any(|q| q == p) {
        paths.push(p.to_vec());
    }
}

/// What the selectors select together (each must match), of `expect_count` subtrees if given.
pub fn union(
    tree: &Node,
    selectors: &[String],
    expect_count: Option<usize>,
) -> Result<Selection, Problem> {
    let mut paths: Vec<Vec<String>> = vec![];
    for s in selectors {
        let found = parse(s)?.select(tree);
        if found.count() == 0 && expect_count.is_none() {
            return Err(Problem::MatchesNothing {
                selector: s.clone(),
            });
        }
        for p in found.path_segments() {
            add(p, &mut paths);
        }
    }
    let selection = Selection::from_paths(tree, paths);
    if let Some(n) = expect_count.filter(|n| *n != selection.count()) {
        return Err(Problem::Count {
            selector: selectors.join(", "),
            found: selection.count(),
            expected: n,
            paths: selection.paths(),
        });
    }
    Ok(selection)
}

/// The short names of a model's Linear modules (`q_proj`, ...).
fn short_names(modules: Option<&[(String, String)]>) -> Vec<String> {
    let short: BTreeSet<&str> = modules
        .into_iter()
        .flatten()
        .filter_map(|(m, _)| m.rsplit('.').next())
        .collect();
    short.into_iter().map(String::from).collect()
}

/// Every Linear of the tree that has weights: `(path, weight label)`.
fn linears(tree: &Node) -> Vec<(Vec<String>, String)> {
    let mut out = vec![];
    tree.walk(&mut |path, n| {
        if n.layer_as::<Linear>().is_some() {
            if let Ok(e) = n.param_entry("weights") {
                out.push((path.to_vec(), e.label().to_string()));
            }
        }
    });
    out
}

/// peft's `all-linear`: every contracting Linear but the output head.
fn all_linear(
    tree: &Node,
    linears: &[(Vec<String>, String)],
    modules: Option<&[(String, String)]>,
    paths: &mut Vec<Vec<String>>,
) {
    let head: BTreeSet<&str> = modules
        .into_iter()
        .flatten()
        .filter(|(m, _)| m == "lm_head" || m == "embed_out")
        .map(|(_, l)| l.as_str())
        .collect();
    for (p, label) in linears {
        let contracting = tree
            .get(p)
            .ok()
            .and_then(|n| n.layer_as::<Linear>())
            .is_some_and(|l| !l.input_axes.is_empty() && !l.output_axes.is_empty());
        let is_head =
            head.contains(label.as_str()) || p.first().map(String::as_str) == Some("lm_head");
        // A pretrained model's Linears that are no module of peft's (a mixture of experts'
        // routers) stay plain.
        let a_module = modules.is_none_or(|m| m.iter().any(|(_, l)| l == label));
        if contracting && !is_head && a_module {
            add(p, paths);
        }
    }
}

/// The Linears that LoRA `targets` name, less those whose HF module `exclude` names.
pub fn lora_targets(
    tree: &Node,
    targets: &[String],
    exclude: &[String],
    modules: Option<&[(String, String)]>,
) -> Result<Selection, Problem> {
    let linears = linears(tree);
    let mut paths: Vec<Vec<String>> = vec![];
    for t in targets {
        if t == "all-linear" {
            all_linear(tree, &linears, modules, &mut paths);
            continue;
        }
        if let Some(mods) = modules {
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
        let sel = Selector::parse(t).map_err(|e| Problem::NotATarget {
            target: t.clone(),
            message: e.message,
            modules: short_names(modules),
        })?;
        let found = sel.select(tree);
        if found.count() == 0 {
            return Err(Problem::TargetMatchesNothing {
                target: t.clone(),
                modules: short_names(modules),
            });
        }
        // Penzai's loraify adapts the Linears within the selection.
        let within = toolshed::linears_within(&found);
        if within.count() == 0 {
            return Err(Problem::NoLinear {
                target: Some(t.clone()),
            });
        }
        for p in within.path_segments() {
            add(p, &mut paths);
        }
    }
    // peft's `exclude_modules`: Linears whose HF module an exclusion names stay plain.
    if let (false, Some(mods)) = (exclude.is_empty(), modules) {
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
