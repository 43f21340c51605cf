//! The planner: recipe -> model tree (+ patches) -> shape inference on the meta device ->
//! parameter counts and a training-memory estimate.
//!
//! Planning with [`Builder::slots`] allocates no parameter storage at all: parameters are
//! slots (shapes only), and shape inference binds them to meta tensors (libtorch's shape-only
//! device) and runs the real forward pass on a meta input of the declared `[model.input]`, so
//! an axis-name or size mismatch anywhere is reported with the layer path before anything
//! trains.
//!
//! Memory estimate for training with AdamW (fp32 optimizer state): parameters (their dtype),
//! gradients (one per trainable parameter element, parameter dtype), optimizer state (two fp32
//! moments per trainable element), and activations: the sum of the outputs of every leaf layer
//! for the declared input (what autograd keeps for the backward pass, roughly).

use super::model::ModelBuilder;
use super::patch::apply_patches;
use super::source::Diagnostic;
use super::{recipe_error, Recipe};
use crate::backend::meta_empty;
use crate::base::dtype::{elem_size, name as kind_name};
use crate::base::{Error, Result};
use crate::named::NamedTensor;
use crate::params::{FrozenParameter, ParamEntry};
use crate::tree::{trace_leaf_outputs, Builder, Node, Registry, SideInputs};
use serde_json::{json, Value as Json};
use std::collections::BTreeSet;

/// Parameter counts over distinct labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub total: i64,
    pub trainable: i64,
    pub frozen: i64,
}

/// A training-memory estimate in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub parameters: i64,
    pub gradients: i64,
    pub optimizer: i64,
    pub activations: i64,
}

impl Memory {
    /// The sum.
    pub fn total(&self) -> i64 {
        self.parameters + self.gradients + self.optimizer + self.activations
    }
}

/// A planned recipe.
#[derive(Debug, Clone)]
pub struct Plan {
    pub recipe: Recipe,
    pub tree: Node,
    /// Output named shape and dtype from shape inference (None without `[model.input]`).
    pub output: Option<(Vec<(String, i64)>, tch::Kind)>,
    pub counts: Counts,
    pub memory: Memory,
}

/// `1.50 GiB` style.
pub fn human_bytes(b: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}

/// `6,738,415,616`.
pub fn grouped(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Counts distinct labels: slots count as trainable (no strategy freezes anything yet).
pub fn count_params(tree: &Node) -> Counts {
    let mut seen = BTreeSet::new();
    let mut c = Counts {
        total: 0,
        trainable: 0,
        frozen: 0,
    };
    for (_, _, e) in tree.all_param_entries() {
        if !seen.insert(e.label().to_string()) {
            continue;
        }
        let n: i64 = e.shape().iter().product();
        c.total += n;
        let trainable = match &e {
            ParamEntry::Slot(_) => true,
            ParamEntry::Bound(p) => p.trainable(),
            ParamEntry::Frozen(_) => false,
        };
        if trainable {
            c.trainable += n;
        } else {
            c.frozen += n;
        }
    }
    c
}

fn param_bytes(tree: &Node) -> i64 {
    let mut seen = BTreeSet::new();
    tree.all_param_entries()
        .into_iter()
        .filter(|(_, _, e)| seen.insert(e.label().to_string()))
        .map(|(_, _, e)| e.shape().iter().product::<i64>() * elem_size(e.kind()))
        .sum()
}

impl Plan {
    /// Plans a recipe with shapes only (no parameter storage).
    pub fn shapes_only(recipe: Recipe, registry: &Registry) -> Result<Plan> {
        let b = Builder::slots().dtype(recipe.param_dtype);
        Self::build(recipe, registry, &b)
    }

    /// Builds the tree and applies the patches, without shape inference (for `pzt show` and
    /// `pzt select`).
    pub fn tree_only(recipe: &Recipe, registry: &Registry) -> Result<Node> {
        let b = Builder::slots().dtype(recipe.param_dtype);
        let (tree, _) = build_tree(recipe, registry, &b)?;
        Ok(tree)
    }

    /// Plans a recipe building parameters with `builder` (slots or real values).
    pub fn build(recipe: Recipe, registry: &Registry, builder: &Builder) -> Result<Plan> {
        let sources = recipe.resolved.sources.clone();
        let fail = |d: Diagnostic| recipe_error(&sources, d);
        let (tree, mb_locs) = build_tree(&recipe, registry, builder)?;
        let counts = count_params(&tree);
        let mut activations = 0;
        let mut output = None;
        if let Some(input) = &recipe.input {
            let (out, trace) = trace_leaf_outputs(|| infer_shapes(&tree, input));
            match out {
                Ok(o) => output = Some(o),
                Err(e) => {
                    let path = e.layer_path().unwrap_or_default();
                    let locs = &mb_locs;
                    let mut segs: Vec<&str> = if path == "<root>" {
                        vec![]
                    } else {
                        path.split('.').collect()
                    };
                    let loc = loop {
                        if let Some(l) = locs.get(&segs.join(".")) {
                            break Some(l.clone());
                        }
                        if segs.pop().is_none() {
                            break None;
                        }
                    };
                    let kind = if path == "<root>" {
                        Some(tree.kind().to_string())
                    } else {
                        tree.get(&path.split('.').map(String::from).collect::<Vec<_>>())
                            .ok()
                            .map(|n| n.kind().to_string())
                    };
                    let d = Diagnostic::new(format!(
                        "shape check failed at layer `{path}`{}: {}",
                        kind.map(|k| format!(" ({k})")).unwrap_or_default(),
                        e.root_cause()
                    ))
                    .at(loc)
                    .note(format!("the model input is {}", describe_input(input)));
                    return Err(fail(d));
                }
            }
            activations = trace.iter().map(|(_, n, k)| n * elem_size(*k)).sum();
        }
        let trainable_bytes = counts.trainable * elem_size(builder.kind);
        let memory = Memory {
            parameters: param_bytes(&tree),
            gradients: trainable_bytes,
            optimizer: counts.trainable * 8,
            activations,
        };
        Ok(Plan {
            recipe,
            tree,
            output,
            counts,
            memory,
        })
    }

    /// The plan as JSON (for scripts and CI).
    pub fn to_json(&self) -> Json {
        let r = &self.recipe;
        json!({
            "recipe": r.resolved.path.display().to_string(),
            "run": { "name": r.run.name, "seed": r.run.seed, "out_dir": r.run.out_dir.display().to_string() },
            "input": r.input.as_ref().map(|i| json!({ "axes": i.axes, "dtype": kind_name(i.dtype) })),
            "output": self.output.as_ref().map(|(axes, k)| json!({ "axes": axes.iter().cloned().collect::<indexmap::IndexMap<String, i64>>(), "dtype": kind_name(*k) })),
            "parameters": { "total": self.counts.total, "trainable": self.counts.trainable, "frozen": self.counts.frozen },
            "memory_bytes": {
                "parameters": self.memory.parameters,
                "gradients": self.memory.gradients,
                "optimizer": self.memory.optimizer,
                "activations": self.memory.activations,
                "total": self.memory.total(),
            },
            "tree": tree_json(&self.tree, "", None),
        })
    }

    /// The human-readable report, with the tree to `depth` levels.
    pub fn render(&self, depth: usize, color: bool) -> String {
        let r = &self.recipe;
        let mut s = format!(
            "recipe      {}  (run `{}`, seed {}, out_dir {})\n",
            r.resolved.path.display(),
            r.run.name,
            r.run.seed,
            r.run.out_dir.display()
        );
        s.push_str("\nmodel\n");
        for line in self.tree.render_styled(depth, color).lines() {
            s.push_str(&format!("  {line}\n"));
        }
        s.push('\n');
        match (&r.input, &self.output) {
            (Some(i), Some((o, k))) => {
                s.push_str(&format!("input       {}\n", describe_input(i)));
                let axes: Vec<String> = o.iter().map(|(n, v)| format!("{n}: {v}")).collect();
                s.push_str(&format!(
                    "output      {{{}}} {}\n",
                    axes.join(", "),
                    kind_name(*k)
                ));
            }
            _ => s.push_str("input       not declared ([model.input]); shapes not checked\n"),
        }
        let c = self.counts;
        s.push_str(&format!(
            "parameters  {} total, {} trainable, {} frozen\n",
            grouped(c.total),
            grouped(c.trainable),
            grouped(c.frozen)
        ));
        let m = self.memory;
        s.push_str("memory      training estimate (AdamW, fp32 optimizer state)\n");
        s.push_str(&format!(
            "  parameters   {:>12}\n",
            human_bytes(m.parameters)
        ));
        s.push_str(&format!(
            "  gradients    {:>12}\n",
            human_bytes(m.gradients)
        ));
        s.push_str(&format!(
            "  optimizer    {:>12}\n",
            human_bytes(m.optimizer)
        ));
        if r.input.is_some() {
            s.push_str(&format!(
                "  activations  {:>12}  (declared input)\n",
                human_bytes(m.activations)
            ));
        }
        s.push_str(&format!("  total        {:>12}\n", human_bytes(m.total())));
        s
    }
}

fn describe_input(i: &super::InputSpec) -> String {
    let axes: Vec<String> = i.axes.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    format!("{{{}}} {}", axes.join(", "), kind_name(i.dtype))
}

/// Builds the `[model]` tree and applies the patches; returns it with the declaration place of
/// each tree path.
fn build_tree(
    recipe: &Recipe,
    registry: &Registry,
    builder: &Builder,
) -> Result<(Node, std::collections::BTreeMap<String, super::source::Loc>)> {
    let sources = &recipe.resolved.sources;
    let mut mb = ModelBuilder::new(builder, registry);
    mb.base_dir = recipe
        .resolved
        .path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let tree = mb
        .build(&recipe.model, &[], &["model".to_string()])
        .map_err(|d| recipe_error(sources, d))?;
    let tree = apply_patches(tree, &recipe.patches, &mb).map_err(|d| recipe_error(sources, d))?;
    Ok((tree, mb.locs.into_inner()))
}

/// Runs the model on a meta input with every parameter bound to a meta tensor.
fn infer_shapes(tree: &Node, input: &super::InputSpec) -> Result<(Vec<(String, i64)>, tch::Kind)> {
    // Every parameter becomes a meta tensor of its shape and dtype (real values are not
    // needed, and must not meet meta activations).
    let meta = tree.map_entries(
        &mut |p| {
            Ok(ParamEntry::Frozen(FrozenParameter::new(
                p.label().to_string(),
                &meta_empty(&p.shape(), p.kind())?,
            )?))
        },
        &mut |s| Ok(s.clone()),
    )?;
    let sizes: Vec<i64> = input.axes.values().copied().collect();
    let names: Vec<&str> = input.axes.keys().map(|s| s.as_str()).collect();
    let x = NamedTensor::wrap(meta_empty(&sizes, input.dtype)?, &names)?;
    let _ng = tch::no_grad_guard();
    let y = meta.forward(x, &SideInputs::new())?;
    let y = y.into_tensor().map_err(|e| Error::Layer {
        path: vec![],
        source: Box::new(e),
    })?;
    Ok((y.named_shape(), y.kind()))
}

/// A node as JSON: kind, path, summary, config, parameters, children.
pub fn tree_json(n: &Node, path: &str, name: Option<&str>) -> Json {
    let params: Vec<Json> = n
        .param_entries()
        .iter()
        .map(|(pn, e)| json!({ "name": pn, "label": e.label(), "shape": e.shape(), "dtype": kind_name(e.kind()), "trainable": !matches!(e, ParamEntry::Frozen(_)) && (matches!(e, ParamEntry::Slot(_)) || e.trainable()) }))
        .collect();
    let children: Vec<Json> = n
        .children()
        .iter()
        .map(|(cn, c)| {
            let p = if path.is_empty() {
                cn.clone()
            } else {
                format!("{path}.{cn}")
            };
            tree_json(c, &p, Some(cn))
        })
        .collect();
    let config = n
        .layer()
        .config()
        .ok()
        .map(|t| serde_json::to_value(t).unwrap_or(Json::Null))
        .unwrap_or(Json::Null);
    json!({ "name": name, "path": path, "kind": n.kind(), "summary": n.layer().summary(), "config": config, "params": params, "children": children })
}
