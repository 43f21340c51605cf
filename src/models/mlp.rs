//! The MLP builder: `Sequential[Affine, Elementwise, Affine, Elementwise, ..., Affine]` between
//! named feature axes.

use crate::base::{Error, Result};
use crate::layers::grouping::Sequential;
use crate::layers::linear::affine;
use crate::layers::misc::{Activation, Elementwise};
use crate::layers::Axes;
use crate::tree::{Node, Scope};

/// An MLP over the named axis `axis`: widths `[in, hidden..., out]`, with `activation` between
/// layers. Hidden layers use the axis name `hidden_axis`; the last layer maps back to `axis`
/// (contracted first, so the name can be reused). Children `0`, `1`, ...; parameter labels
/// `<scope>.<i>.linear.weights` and `<scope>.<i>.bias.bias`.
pub fn mlp(
    scope: &Scope<'_>,
    axis: &str,
    hidden_axis: &str,
    widths: &[i64],
    activation: Activation,
) -> Result<Node> {
    if widths.len() < 2 {
        return Err(Error::Config(format!(
            "mlp needs at least two widths, got {widths:?}"
        )));
    }
    let mut children = vec![];
    let n = widths.len() - 1;
    for i in 0..n {
        let in_name = if i == 0 { axis } else { hidden_axis };
        let out_name = if i == n - 1 { axis } else { hidden_axis };
        let ia: Axes = [(in_name.to_string(), widths[i])].into_iter().collect();
        let oa: Axes = [(out_name.to_string(), widths[i + 1])]
            .into_iter()
            .collect();
        children.push(affine(&scope.pp(children.len().to_string()), ia, oa)?);
        if i < n - 1 {
            children.push(Node::new(Elementwise {
                function: activation,
            }));
        }
    }
    Ok(Sequential::new(children))
}

fn d_features() -> String {
    "features".into()
}
fn d_hidden() -> String {
    "hidden".into()
}
fn d_relu() -> Activation {
    Activation::Relu
}

/// Arguments of the `mlp` builder.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// `[in, hidden..., out]`.
    pub widths: Vec<i64>,
    #[serde(default = "d_features")]
    pub axis: String,
    #[serde(default = "d_hidden")]
    pub hidden_axis: String,
    #[serde(default = "d_relu")]
    pub activation: Activation,
}

impl MlpConfig {
    /// Builds the MLP under `scope`.
    pub fn build(&self, scope: &Scope<'_>) -> Result<Node> {
        if let Some(w) = self.widths.iter().find(|w| **w < 1) {
            return Err(Error::ConfigField {
                field: "widths".into(),
                message: format!("mlp: widths must be positive, got {w}"),
            });
        }
        mlp(
            scope,
            &self.axis,
            &self.hidden_axis,
            &self.widths,
            self.activation,
        )
    }
}
