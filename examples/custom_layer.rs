//! A custom layer kind written in Rust, used like a built-in one. A new kind is one type (this
//! file) plus one registration in a registry: nothing else in pzt changes.
//!
//! `ScaleShift` computes `y = x * scale + shift`, where `scale` and `shift` are learned
//! parameters over the named `axes` (broadcast over every other axis of `x`). The example:
//!
//! 1. implements [`pzt::tree::Layer`] for it (serde config + `layer_common!`); it declares its
//!    parameters (`param_specs`), so recipes and `Node::build` create them under the node's
//!    path, and it is a leaf (the default `child_layout`);
//! 2. registers the kind in a registry of the built-in kinds (`pzt::builtin_registry()`);
//! 3. mixes it with built-in layers and combinators (Linear, Elementwise, Residual,
//!    Sequential) and runs a forward pass;
//! 4. selects it with `select(&model).at_instances_of("ScaleShift")` and edits the selection;
//! 5. round-trips the tree through TOML and rebinds the parameters;
//! 6. plans a recipe that declares it by `type = "ScaleShift"`;
//! 7. prints the tree.
//!
//! In a crate of your own, add `serde` (with the `derive` feature) next to `pzt`; TOML types
//! come from `pzt::toml`.
//!
//! Run: `source scripts/env.sh && cargo run --release --example custom_layer`

use pzt::layers::linear::Linear;
use pzt::params::init::Initializer;
use pzt::prelude::*;
use pzt::tree::registry::serde_factory;
use pzt::tree::ParamSpec;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

fn default_init_scale() -> f64 {
    1.0
}

/// `y = x * scale + shift` over the named `axes`. Parameters: `scale` (initialized to
/// `init_scale`, default 1) and `shift` (initialized to 0).
///
/// The struct is the layer's static config: serde turns it into the TOML table that
/// `Node::to_toml` writes and `serde_factory` reads back. Parameters are not part of it; they
/// live in the node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ScaleShift {
    /// Axis name -> size, e.g. `{ hidden = 8 }`.
    axes: Axes,
    #[serde(default = "default_init_scale")]
    init_scale: f64,
}

impl ScaleShift {
    /// Builds the node with its parameters, labelled `<scope>.scale` and `<scope>.shift`.
    /// With `Builder::slots()` these are shape-only slots; with a seed, real tensors.
    fn build(self, scope: &Scope<'_>) -> Result<Node> {
        Node::build(self, scope)
    }

    fn axis_names(&self) -> Vec<&str> {
        self.axes.keys().map(|s| s.as_str()).collect()
    }
}

impl Layer for ScaleShift {
    // kind() = "ScaleShift", config() = the serde fields above, as_any() for downcasting.
    pzt::layer_common!("ScaleShift");

    fn summary(&self) -> String {
        let axes: Vec<String> = self.axes.iter().map(|(n, s)| format!("{n}: {s}")).collect();
        format!("{{{}}}", axes.join(", "))
    }

    // The parameters, from the config: `Node::build` and recipes make them under the node's
    // path (labels `<path>.scale`, `<path>.shift`), from the seed or as slots.
    fn param_specs(&self) -> Vec<ParamSpec> {
        let shape: Vec<i64> = self.axes.values().copied().collect();
        vec![
            ParamSpec {
                name: "scale".into(),
                shape: shape.clone(),
                init: Initializer::Constant {
                    value: self.init_scale,
                },
                fan_in: 1,
            },
            ParamSpec {
                name: "shift".into(),
                shape,
                init: Initializer::Zeros,
                fan_in: 1,
            },
        ]
    }

    fn forward(&self, node: &Node, x: Value, _side: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        // Check the named axes at the layer boundary, before libtorch sees the tensors.
        for (name, &size) in &self.axes {
            match x.size_of(name) {
                Ok(s) if s == size => {}
                _ => {
                    return Err(Error::Axis(format!(
                        "ScaleShift: expected axis `{name}` of size {size}, input is {}",
                        x.describe()
                    )))
                }
            }
        }
        let names = self.axis_names();
        let scale = NamedTensor::wrap(node.param("scale")?, &names)?;
        let shift = NamedTensor::wrap(node.param("shift")?, &names)?;
        // Arithmetic broadcasts by name: `batch` and any other axes of x pass through.
        Ok(x.mul(&scale)?.add(&shift)?.into())
    }
}

fn axes(pairs: &[(&str, i64)]) -> Axes {
    pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

fn max_abs_diff(a: &NamedTensor, b: &NamedTensor) -> Result<f64> {
    let b = b.order_like(a)?;
    let (va, vb) = (a.to_vec_f64()?, b.to_vec_f64()?);
    Ok(va
        .iter()
        .zip(&vb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max))
}

fn main() -> pzt::Result<()> {
    // 1. Register the kind so that `Node::from_toml` and recipes can make it by name.
    let mut registry = pzt::builtin_registry();
    registry.register_layer("ScaleShift", serde_factory::<ScaleShift>("ScaleShift"));

    // 2. Build a model mixing the custom layer with built-in layers and combinators.
    let b = Builder::new(0); // seed 0, float32, CPU
    let root = b.scope("model");
    let hidden = axes(&[("hidden", 8)]);
    let model = Sequential::named(vec![
        (
            "embed".into(),
            Linear::new(axes(&[("features", 4)]), hidden.clone()).build(&root.pp("embed"), None)?,
        ),
        (
            "norm".into(),
            ScaleShift {
                axes: hidden.clone(),
                init_scale: 0.5,
            }
            .build(&root.pp("norm"))?,
        ),
        (
            "act".into(),
            Node::new(Elementwise {
                function: Activation::Relu,
            }),
        ),
        (
            "block".into(),
            Residual::build(Sequential::named(vec![
                (
                    "linear".into(),
                    Linear::new(hidden.clone(), hidden.clone())
                        .build(&root.pp("block.linear"), None)?,
                ),
                (
                    "gate".into(),
                    ScaleShift {
                        axes: hidden.clone(),
                        init_scale: 1.0,
                    }
                    .build(&root.pp("block.gate"))?,
                ),
            ])),
        ),
        (
            "head".into(),
            Linear::new(hidden, axes(&[("classes", 3)])).build(&root.pp("head"), None)?,
        ),
    ]);

    // 3. Forward: x has named axes {batch: 5, features: 4}.
    let x = NamedTensor::wrap(
        Tensor::f_linspace(-1.0, 1.0, 20, (Kind::Float, Device::Cpu))?.f_reshape([5, 4])?,
        &["batch", "features"],
    )?;
    let side = SideInputs::new();
    let y = model.forward(x.clone(), &side)?.into_tensor()?;
    println!("forward: {} -> {}", x.describe(), y.describe());
    println!(
        "{} parameter tensors, {} values",
        model.parameters().len(),
        model.num_params()
    );

    // 4. Select the custom layers like any built-in kind.
    let all = select(&model).at_instances_of("ScaleShift");
    println!("ScaleShift layers: {:?}", all.paths());
    let in_block = all.within("Residual").assert_count(1)?;
    for (path, node) in in_block.get() {
        if let Some(cfg) = node.layer_as::<ScaleShift>() {
            println!(
                "  inside the residual: `{path}` over {:?}",
                cfg.axis_names()
            );
        }
    }
    // Surgery: freeze the parameters of the ScaleShift layers only; the rest stays trainable
    // and shared with `model`.
    let frozen = all.apply(|_, n| n.freeze_params())?;
    println!(
        "after freezing ScaleShift: {} of {} parameter tensors trainable",
        frozen.trainable_parameters().len(),
        model.parameters().len()
    );

    // 5. Round-trip the structure through TOML (kinds, configs, parameter labels and shapes;
    //    no values), then bind the live parameters back by label.
    let text = pzt::toml::to_string(&model.to_toml()?)
        .map_err(|e| Error::Config(format!("cannot write TOML: {e}")))?;
    let table: pzt::toml::Table =
        pzt::toml::from_str(&text).map_err(|e| Error::Config(format!("cannot read TOML: {e}")))?;
    let slots = Node::from_toml(&table, &registry)?; // parameters come back as slots
    let rebuilt = slots.bind(&model.parameters())?;
    if !rebuilt.same_structure(&model) {
        return Err(Error::Config("TOML round trip changed the tree".into()));
    }
    let y2 = rebuilt.forward(x, &side)?.into_tensor()?;
    let diff = max_abs_diff(&y, &y2)?;
    if diff > 0.0 {
        return Err(Error::Config(format!(
            "rebuilt model differs from the original by {diff}"
        )));
    }
    println!(
        "TOML round trip: {} lines, same structure, identical output",
        text.lines().count()
    );
    let norm_toml = table
        .get("children")
        .and_then(|c| c.as_array())
        .and_then(|c| c.get(1))
        .map(|n| n.to_string())
        .unwrap_or_default();
    println!("the `norm` child as TOML: {norm_toml}");

    // 6. A recipe declares it like any kind; it plans with this registry.
    let dir = std::env::temp_dir().join(format!("pzt-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Config(e.to_string()))?;
    let recipe_path = dir.join("scale-shift.toml");
    std::fs::write(
        &recipe_path,
        "[model]\ntype = \"Sequential\"\ninput = { axes = { batch = 2, hidden = 8 } }\nlayers = [\n  { type = \"ScaleShift\", axes = { hidden = 8 } },\n  { type = \"Linear\", input_axes = { hidden = 8 }, output_axes = { out = 2 } },\n]\n",
    )
    .map_err(|e| Error::Config(e.to_string()))?;
    let recipe = pzt::recipe::Recipe::load(&recipe_path, &[])?;
    let plan = pzt::recipe::plan::Plan::shapes_only(recipe, &registry)?;
    println!(
        "a recipe with a ScaleShift: {} parameters, output {:?}, labels {:?}",
        plan.counts.total,
        plan.output.as_ref().map(|(axes, _)| axes.clone()),
        plan.tree.children()[0]
            .1
            .param_entries()
            .iter()
            .map(|(_, e)| e.label().to_string())
            .collect::<Vec<_>>()
    );

    // 7. The tree as text.
    println!("\n{}", model.render(usize::MAX));
    Ok(())
}
