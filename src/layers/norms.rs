//! Normalization: `Standardize` (`(x - mean) / sqrt(var + eps)` over named axes),
//! `RMSStandardize` (`x / sqrt(mean(x^2) + eps)`), and the `LayerNorm` / `RMSLayerNorm`
//! builders, which follow them with a learned elementwise scale (a `Linear` with only parallel
//! axes) and, for `LayerNorm`, an `AddBias`.

use super::grouping::Sequential;
use super::linear::{AddBias, Linear};
use super::Axes;
use crate::base::{Error, Result, TorchContext};
use crate::params::init::Initializer;
use crate::tree::{Layer, Node, Scope, SideInputs, Value};
use serde::{Deserialize, Serialize};

fn default_eps() -> f64 {
    1e-6
}

/// Standardizes over `axes` (mean 0, variance 1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Standardize {
    pub axes: Vec<String>,
    #[serde(default = "default_eps")]
    pub epsilon: f64,
}

/// Divides by the root mean square over `axes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RMSStandardize {
    pub axes: Vec<String>,
    #[serde(default = "default_eps")]
    pub epsilon: f64,
}

fn axes_of<'a>(
    axes: &'a [String],
    x: &crate::named::NamedTensor,
    layer: &str,
) -> Result<Vec<&'a str>> {
    for a in axes {
        if !x.has(a) {
            return Err(Error::Axis(format!(
                "{layer}: the input lacks axis `{a}` ({})",
                x.describe()
            )));
        }
    }
    Ok(axes.iter().map(|s| s.as_str()).collect())
}

impl Layer for Standardize {
    crate::layer_common!("Standardize");
    fn check(&self) -> Result<()> {
        let e = self.epsilon;
        super::args::check_number(
            "Standardize",
            "epsilon",
            e,
            e >= 0.0 && e.is_finite(),
            "a finite number >= 0",
        )
    }
    fn summary(&self) -> String {
        format!("over {:?}, eps {}", self.axes, self.epsilon)
    }
    fn forward(&self, _node: &Node, x: Value, _side: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        let axes = axes_of(&self.axes, &x, "Standardize")?;
        let mean = x.mean(&axes)?;
        let centered = x.sub(&mean)?;
        let var = centered.mul(&centered)?.mean(&axes)?;
        let denom = var
            .add_scalar(self.epsilon)?
            .map_elementwise(|t| t.f_rsqrt().ctx("rsqrt"))?;
        Ok(centered.mul(&denom)?.into())
    }
}

impl Layer for RMSStandardize {
    crate::layer_common!("RMSStandardize");
    fn check(&self) -> Result<()> {
        let e = self.epsilon;
        super::args::check_number(
            "RMSStandardize",
            "epsilon",
            e,
            e >= 0.0 && e.is_finite(),
            "a finite number >= 0",
        )
    }
    fn summary(&self) -> String {
        format!("over {:?}, eps {}", self.axes, self.epsilon)
    }
    fn forward(&self, _node: &Node, x: Value, _side: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        let axes = axes_of(&self.axes, &x, "RMSStandardize")?;
        let ms = x.mul(&x)?.mean(&axes)?;
        let denom = ms
            .add_scalar(self.epsilon)?
            .map_elementwise(|t| t.f_rsqrt().ctx("rsqrt"))?;
        Ok(x.mul(&denom)?.into())
    }
}

/// Builds a `LayerNorm` over `axes`: Standardize, a learned scale (`scale`, init 1) and a
/// learned bias (`bias`, init 0).
pub fn layer_norm(scope: &Scope<'_>, axes: Axes, epsilon: f64) -> Result<Node> {
    let names: Vec<String> = axes.keys().cloned().collect();
    layer_norm_over(scope, axes, names, epsilon, true)
}

/// Builds a `LayerNorm` that standardizes over the axes `over` and learns a scale (`scale`,
/// init 1) and, with `bias`, a bias (`bias`, init 0) over all of `axes`, which holds `over`
/// (a scale per head when `axes` holds the heads and `over` only the head's dims: Cohere's
/// QK-norm). Without `bias` it is Cohere's LayerNorm.
pub fn layer_norm_over(
    scope: &Scope<'_>,
    axes: Axes,
    over: Vec<String>,
    epsilon: f64,
    bias: bool,
) -> Result<Node> {
    if let Some(a) = over.iter().find(|a| !axes.contains_key(*a)) {
        return Err(Error::Config(format!(
            "LayerNorm: it standardizes over `{a}`, which its axes {:?} lack",
            axes.keys().collect::<Vec<_>>()
        )));
    }
    let std = Node::new(Standardize {
        axes: over,
        epsilon,
    });
    let scale = Linear {
        input_axes: Axes::new(),
        output_axes: Axes::new(),
        parallel_axes: axes.clone(),
        init: None,
    }
    .build(&scope.pp("scale"), Some(Initializer::Ones))?;
    let mut parts = vec![("standardize".into(), std), ("scale".into(), scale)];
    if bias {
        parts.push(("bias".into(), AddBias { axes }.build(&scope.pp("bias"))?));
    }
    Ok(Sequential::of_kind("LayerNorm", parts))
}

/// Builds an `RMSLayerNorm` over `axes`: RMSStandardize and a learned scale (`scale`, init 1).
pub fn rms_layer_norm(scope: &Scope<'_>, axes: Axes, epsilon: f64) -> Result<Node> {
    let names: Vec<String> = axes.keys().cloned().collect();
    let std = Node::new(RMSStandardize {
        axes: names,
        epsilon,
    });
    let scale = Linear {
        input_axes: Axes::new(),
        output_axes: Axes::new(),
        parallel_axes: axes,
        init: None,
    }
    .build(&scope.pp("scale"), Some(Initializer::Ones))?;
    Ok(Sequential::of_kind(
        "RMSLayerNorm",
        vec![("standardize".into(), std), ("scale".into(), scale)],
    ))
}
