//! Low-rank adaptation (LoRA) and weight-decomposed LoRA (DoRA), Penzai's `toolshed.lora`.
//!
//! [`loraify`] replaces each selected `Linear` (any named axes: input axes `I`, output axes
//! `O`, parallel axes `P`) by a `LowRankAdapter` built as Penzai's `LowRankAdapter.from_linear`:
//!
//! ```text
//! LowRankAdapter (rank r, alpha a)            = a BranchAndAddTogether of its two groups
//!   pretrained: NamedGroup Pretrained [ the Linear, unchanged: W[I, O, P] ]
//!   update:     NamedGroup Update     [ Dropout (training only, when dropout > 0),
//!                                       lora_a: Linear I -> {lowrank: r}   A[I, r, P]
//!                                       scale:  Rescale by a / r
//!                                       lora_b: Linear {lowrank} -> O      B[r, O, P], zeros ]
//! ```
//!
//! so `y = W x + (a/r) B A dropout(x)`. With `dora`, the adapter also holds `magnitude[O, P]`
//! (initialized to the column norms of `W`) and computes peft's `use_dora` forward:
//! `n = ||W + (a/r) B A||` over `I` (no gradient through `n`), `m' = magnitude / n`,
//! `y = W x + (m' - 1) W dropout(x) + m' (a/r) B A dropout(x)`; merged, `W' = m' (W + (a/r) B A)`.
//!
//! The pretrained `Linear` keeps its parameter (and label); the adapter's parameters are
//! labelled after it: `<name>.lora_a.weights`, `<name>.lora_b.weights`, `<name>.magnitude`,
//! where `<name>` is the Linear's weight label without `.weights`.

use super::super::grouping::NamedGroup;
use super::super::linear::Linear;
use super::super::misc::{Dropout, Rescale};
use super::super::{axes_str, Axes};
use crate::base::{Error, Result, TorchContext};
use crate::named::NamedTensor;
use crate::params::init::Initializer;
use crate::params::{ParamEntry, Parameter};
use crate::tree::{
    Builder, ChildLayout, Layer, Node, ParamSpec, Scope, Selection, SideInputs, Value,
};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The name of the low-rank axis.
pub const LOWRANK: &str = "lowrank";

/// How [`loraify`] adapts each Linear (peft's defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: i64,
    pub alpha: f64,
    pub dropout: f64,
    pub dora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 8.0,
            dropout: 0.0,
            dora: false,
        }
    }
}

/// The largest LoRA rank pzt accepts (peft's adapters included).
pub const MAX_RANK: i64 = 65_536;

impl LoraConfig {
    /// What is wrong with `rank`, if anything (the one bound every route checks).
    pub fn rank_problem(rank: i64) -> Option<String> {
        (!(1..=MAX_RANK).contains(&rank))
            .then(|| format!("rank must be in 1..={MAX_RANK}, got {rank}"))
    }

    /// What is wrong with `alpha`, if anything.
    pub fn alpha_problem(alpha: f64) -> Option<String> {
        (!alpha.is_finite() || alpha <= 0.0)
            .then(|| format!("alpha must be a positive number, got {alpha}"))
    }

    /// What is wrong with `dropout`, if anything.
    pub fn dropout_problem(dropout: f64) -> Option<String> {
        (!(0.0..1.0).contains(&dropout))
            .then(|| format!("dropout must be in [0, 1), got {dropout}"))
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let problem = Self::rank_problem(self.rank)
            .or_else(|| Self::alpha_problem(self.alpha))
            .or_else(|| Self::dropout_problem(self.dropout));
        match problem {
            Some(p) => Err(Error::Config(format!("lora: {p}"))),
            None => Ok(()),
        }
    }
}

/// A LoRA (or DoRA) adapter around a pretrained `Linear` (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LowRankAdapter {
    pub rank: i64,
    pub alpha: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropout: f64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dora: bool,
    /// The Linear's output and parallel axes (the shape of `magnitude` with DoRA).
    #[serde(default, skip_serializing_if = "Axes::is_empty")]
    pub magnitude_axes: Axes,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl LowRankAdapter {
    /// The scale `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// The pretrained Linear of an adapter node, and its node.
fn pretrained(node: &Node) -> Result<(&Linear, &Node)> {
    let n = node.child("pretrained")?.child("0")?;
    let lin = n
        .layer_as::<Linear>()
        .ok_or_else(|| Error::Config("LowRankAdapter: `pretrained.0` is not a Linear".into()))?;
    Ok((lin, n))
}

/// `W + scale * (B A)` flattened to `[I, O, P]`, and the sizes `(I, O, P)`.
fn adapted_weight(node: &Node, ad: &LowRankAdapter) -> Result<(Tensor, (i64, i64, i64))> {
    let (lin, ln) = pretrained(node)?;
    let upd = node.child("update")?;
    let a = upd.child("lora_a")?.param("weights")?;
    let b = upd.child("lora_b")?.param("weights")?;
    let i: i64 = lin.input_axes.values().product();
    let o: i64 = lin.output_axes.values().product();
    let p: i64 = lin.parallel_axes.values().product();
    let w = ln.param("weights")?;
    let f = |t: &Tensor| t.f_to_kind(Kind::Float);
    let delta = Tensor::f_einsum(
        "irp,rop->iop",
        &[
            f(&a)?.f_reshape([i, ad.rank, p])?,
            f(&b)?.f_reshape([ad.rank, o, p])?,
        ],
        None::<&[i64]>,
    )
    .ctx("LowRankAdapter: B A")?;
    let w = f(&w)?
        .f_reshape([i, o, p])?
        .f_add(&delta.f_mul_scalar(ad.scale())?)
        .ctx("LowRankAdapter: W + scale B A")?;
    Ok((w, (i, o, p)))
}

/// Column norms `||w||` over the input axes, shaped like the magnitude (`[O..., P...]`).
fn column_norms(w: &Tensor, shape: &[i64]) -> Result<Tensor> {
    w.f_square()
        .and_then(|x| x.f_sum_dim_intlist([0i64].as_slice(), false, Kind::Float))
        .and_then(|x| x.f_sqrt())
        .and_then(|x| x.f_reshape(shape))
        .ctx("DoRA: weight norm")
}

/// The side input that switches every adapter off when false.
pub const ADAPTERS: &str = "adapters";

impl Layer for LowRankAdapter {
    crate::layer_common!("LowRankAdapter");
    fn summary(&self) -> String {
        let mut s = format!("rank {}, alpha {}", self.rank, self.alpha);
        if self.dropout > 0.0 {
            s.push_str(&format!(", dropout {}", self.dropout));
        }
        if self.dora {
            s.push_str(&format!(
                ", DoRA magnitude {}",
                axes_str(&self.magnitude_axes)
            ));
        }
        s
    }
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Slots {
            names: &["pretrained", "update"],
            wrap: None,
        }
    }
    fn param_axes(&self, name: &str) -> Vec<String> {
        if name == "magnitude" {
            self.magnitude_axes.keys().cloned().collect()
        } else {
            vec![]
        }
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        if !self.dora {
            return vec![];
        }
        vec![ParamSpec {
            name: "magnitude".into(),
            shape: self.magnitude_axes.values().copied().collect(),
            init: Initializer::Ones,
            fan_in: 1,
        }]
    }
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        // The side input `adapters` = false switches the adapter off: the pretrained layer
        // alone (a preference objective's reference).
        if side.flag(ADAPTERS) == Some(false) {
            return node.call_child("pretrained", x, side);
        }
        if !self.dora {
            let base = node
                .call_child("pretrained", x.clone(), side)?
                .into_tensor()?;
            let upd = node.call_child("update", x, side)?.into_tensor()?;
            return Ok(base.add(&upd)?.into());
        }
        // DoRA: the update's children one by one, keeping the dropped-out input.
        let upd = node.child("update")?;
        let mut xd = x.clone();
        let mut lora = x.clone();
        for (name, c) in upd.children() {
            let out = c
                .forward(lora, side)
                .map_err(|e| e.in_child(name).in_child("update"))?;
            if c.kind() == "Dropout" {
                xd = out.clone();
            }
            lora = out;
        }
        let lora = lora.into_tensor()?;
        let base = node.call_child("pretrained", x, side)?.into_tensor()?;
        let (w, _) = adapted_weight(node, self)?;
        let shape: Vec<i64> = self.magnitude_axes.values().copied().collect();
        let norm = column_norms(&w, &shape)?.f_detach().ctx("DoRA")?;
        let names: Vec<&str> = self.magnitude_axes.keys().map(|s| s.as_str()).collect();
        let mag = node
            .param("magnitude")?
            .f_to_kind(Kind::Float)
            .ctx("DoRA")?;
        let ms = NamedTensor::wrap(mag.f_div(&norm).ctx("DoRA: magnitude / norm")?, &names)?
            .to_kind(base.kind())?;
        let same_input = upd.children().iter().all(|(_, c)| c.kind() != "Dropout")
            || side.flag("train") == Some(false);
        let base_d = if same_input {
            base.clone()
        } else {
            node.call_child("pretrained", xd, side)?.into_tensor()?
        };
        // y = base + (m' - 1) base_d + m' lora
        let y = base
            .add(&ms.add_scalar(-1.0)?.mul(&base_d)?)?
            .add(&ms.mul(&lora)?)?;
        Ok(y.into())
    }
}

/// The label prefix of a Linear node's weights (`a.b.weights` -> `a.b`).
fn name_of(linear: &Node) -> Result<String> {
    let label = linear.param_entry("weights")?.label().to_string();
    Ok(label
        .strip_suffix(".weights")
        .map(str::to_string)
        .unwrap_or(label))
}

/// Wraps one Linear node in an adapter, making the adapter's parameters with `builder`.
pub fn adapt(linear: &Node, cfg: &LoraConfig, builder: &Builder) -> Result<Node> {
    cfg.validate()?;
    let lin = linear.layer_as::<Linear>().ok_or_else(|| {
        Error::Config(format!(
            "lora: only a Linear can be adapted, this is a {}",
            linear.kind()
        ))
    })?;
    if lin.input_axes.is_empty() || lin.output_axes.is_empty() {
        return Err(Error::Config(format!(
            "lora: the Linear ({} -> {}) does not contract input axes into output axes; LoRA \
             adapts contracting Linears only (not an elementwise scale such as a norm's)",
            axes_str(&lin.input_axes),
            axes_str(&lin.output_axes)
        )));
    }
    let name = name_of(linear)?;
    let scope = builder.scope(&name);
    let update = update_branch(lin, cfg, &scope)?;
    let magnitude_axes: Axes = if cfg.dora {
        lin.output_axes
            .iter()
            .chain(lin.parallel_axes.iter())
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    } else {
        Axes::new()
    };
    let layer = LowRankAdapter {
        rank: cfg.rank,
        alpha: cfg.alpha,
        dropout: cfg.dropout,
        dora: cfg.dora,
        magnitude_axes,
    };
    let mut node = Node::new(layer.clone())
        .with_child(
            "pretrained",
            NamedGroup::build("Pretrained", vec![linear.clone()]),
        )
        .with_child(
            "update",
            Node::new(NamedGroup {
                name: "Update".into(),
            })
            .with_children(update),
        );
    if cfg.dora {
        let shape: Vec<i64> = layer.magnitude_axes.values().copied().collect();
        node = node.with_param("magnitude", dora_magnitude(linear, lin, &shape, &scope)?);
    }
    Ok(node)
}

/// The adapter's update branch for `lin`: dropout (when set), A, the scale alpha / rank, B
/// (zeros, so that the adapter starts as the Linear).
fn update_branch(lin: &Linear, cfg: &LoraConfig, scope: &Scope<'_>) -> Result<Vec<(String, Node)>> {
    let lowrank: Axes = [(LOWRANK.to_string(), cfg.rank)].into_iter().collect();
    let a = Linear {
        input_axes: lin.input_axes.clone(),
        output_axes: lowrank.clone(),
        parallel_axes: lin.parallel_axes.clone(),
        init: None,
    }
    .build(&scope.pp("lora_a"), None)?;
    let b = Linear {
        input_axes: lowrank,
        output_axes: lin.output_axes.clone(),
        parallel_axes: lin.parallel_axes.clone(),
        init: None,
    }
    .build(&scope.pp("lora_b"), Some(Initializer::Zeros))?;
    let mut update = vec![];
    if cfg.dropout > 0.0 {
        update.push(("dropout".to_string(), Node::new(Dropout::new(cfg.dropout)?)));
    }
    // The scale applies to the rank-r activations (as cheap as it gets; the same product).
    update.push(("lora_a".into(), a));
    update.push((
        "scale".into(),
        Node::new(Rescale {
            by: cfg.alpha / cfg.rank as f64,
        }),
    ));
    update.push(("lora_b".into(), b));
    Ok(update)
}

/// DoRA's magnitude of shape `shape`, starting at the column norms of the Linear's weights
/// (B is zero, so the adapted Linear starts as the Linear).
fn dora_magnitude(
    linear: &Node,
    lin: &Linear,
    shape: &[i64],
    scope: &Scope<'_>,
) -> Result<ParamEntry> {
    let entry = scope.param("magnitude", shape, Initializer::Ones, 1)?;
    Ok(match entry {
        ParamEntry::Bound(p) => {
            let w = linear.param("weights")?;
            let i: i64 = lin.input_axes.values().product();
            let flat = w.f_to_kind(Kind::Float)?.f_reshape([i, -1, 1])?;
            let n = column_norms(&flat, shape)?.f_to_kind(p.kind())?;
            p.copy_from(&n)?;
            ParamEntry::Bound(p)
        }
        other => other,
    })
}

/// The Linears LoRA adapts for a selection: each selected `Linear` itself (an error later if it
/// does not contract, like a norm's scale), and the contracting Linears inside each other
/// selected subtree.
pub fn linears_within(selection: &Selection) -> Selection {
    let root = selection.root();
    let mut paths: Vec<Vec<String>> = vec![];
    for p in selection.path_segments() {
        let Ok(n) = root.get(p) else { continue };
        if n.layer_as::<Linear>().is_some() {
            paths.push(p.clone());
            continue;
        }
        n.walk(&mut |rel, m| {
            let contracting = m
                .layer_as::<Linear>()
                .is_some_and(|l| !l.input_axes.is_empty() && !l.output_axes.is_empty());
            if contracting {
                let mut full = p.clone();
                full.extend(rel.iter().cloned());
                if !paths.contains(&full) {
                    paths.push(full);
                }
            }
        });
    }
    Selection::from_paths(root, paths)
}

/// Replaces every selected `Linear` by a [`LowRankAdapter`] around it (Penzai's
/// `loraify_linears_in_selection`); the adapter's parameters come from `builder`.
pub fn loraify(selection: &Selection, cfg: &LoraConfig, builder: &Builder) -> Result<Node> {
    // Errors get the path of the node (the selection adds it).
    selection.apply(|_, n| adapt(n, cfg, builder))
}

/// The adapter's weight folded into the Linear: `W + (a/r) B A`, or DoRA's
/// `magnitude / ||W + (a/r) B A|| * (W + (a/r) B A)`, in the Linear's layout and dtype.
pub fn merged_weight(node: &Node) -> Result<Tensor> {
    let ad = node
        .layer_as::<LowRankAdapter>()
        .ok_or_else(|| Error::Config("merged_weight: not a LowRankAdapter".into()))?;
    let (w, (_, o, p)) = adapted_weight(node, ad)?;
    let w = if ad.dora {
        let shape: Vec<i64> = ad.magnitude_axes.values().copied().collect();
        let n = column_norms(&w, &shape)?.f_reshape([1, o, p])?;
        let m = node
            .param("magnitude")?
            .f_to_kind(Kind::Float)?
            .f_reshape([1, o, p])?;
        w.f_mul(&m.f_div(&n)?).ctx("DoRA merge")?
    } else {
        w
    };
    let (_, ln) = pretrained(node)?;
    let orig = ln.param("weights")?;
    w.f_reshape(orig.size())
        .and_then(|x| x.f_to_kind(orig.kind()))
        .ctx("merge")
}

/// The tree with every adapter replaced by its Linear holding the merged weight (a new
/// parameter with the Linear's label; the tree the adapters were in is not changed).
pub fn merge_adapters(root: &Node) -> Result<Node> {
    crate::tree::select(root)
        .at_instances_of("LowRankAdapter")
        .apply(|_, n| {
            let merged = merged_weight(n)?;
            let (_, ln) = pretrained(n)?;
            let label = ln.param_entry("weights")?.label().to_string();
            let p = Parameter::with_trainable(label, merged, false);
            Ok(ln.clone().with_param("weights", ParamEntry::Bound(p)))
        })
}

/// The labels of the adapters' own parameters (LoRA A and B, DoRA's magnitude) in `root`: what a
/// LoRA run trains.
pub fn adapter_labels(root: &Node) -> std::collections::BTreeSet<String> {
    crate::tree::select(root)
        .at_instances_of("LowRankAdapter")
        .get()
        .iter()
        .flat_map(|(_, n)| {
            let mut v: Vec<String> = n
                .param_entries()
                .iter()
                .map(|(_, e)| e.label().to_string())
                .collect();
            if let Ok(u) = n.child("update") {
                v.extend(
                    u.all_param_entries()
                        .into_iter()
                        .map(|(_, _, e)| e.label().to_string()),
                );
            }
            v
        })
        .collect()
}
