//! `Linear` and `AddBias` (and the `Affine` builder).
//!
//! `Linear` contracts the named input axes of `x` with a weight tensor of axes
//! `[input..., output..., parallel...]`:
//!
//! `y[b, o, p] = sum_i x[b, i, p] * w[i, o, p]`
//!
//! where `b` are the other (batch) axes of `x`, which pass through. Output axes may reuse the
//! names of input axes (they are contracted first), e.g. `{embedding} -> {embedding}`.
//! Parallel axes are shared by input, weights and output (an elementwise scale when there are
//! no input/output axes).

use super::grouping::Sequential;
use super::{axes_str, check_axes, Axes};
use crate::base::{Error, Result, TorchContext};
use crate::named::NamedTensor;
use crate::params::init::Initializer;
use crate::tree::{Layer, Node, Scope, SideInputs, Value};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// A linear map between named axes. Parameter: `weights`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    pub input_axes: Axes,
    pub output_axes: Axes,
    #[serde(default, skip_serializing_if = "Axes::is_empty")]
    pub parallel_axes: Axes,
    /// How `weights` is initialized (default: normal with variance 1/fan_in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Initializer>,
}

impl Linear {
    /// A linear layer with no parallel axes.
    pub fn new(input_axes: Axes, output_axes: Axes) -> Self {
        Linear {
            input_axes,
            output_axes,
            parallel_axes: Axes::new(),
            init: None,
        }
    }

    /// The weight shape: `[input..., output..., parallel...]`.
    pub fn weight_shape(&self) -> Vec<i64> {
        self.input_axes
            .values()
            .chain(self.output_axes.values())
            .chain(self.parallel_axes.values())
            .copied()
            .collect()
    }

    /// Builds the node with its `weights` parameter (label `<scope>.weights`), initialized
    /// with `init` (default: normal with variance 1/fan_in).
    pub fn build(mut self, scope: &Scope<'_>, init: Option<Initializer>) -> Result<Node> {
        if init.is_some() {
            self.init = init;
        }
        Node::build(self, scope)
    }
}

fn letter(i: usize) -> Result<char> {
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        .get(i)
        .map(|&b| b as char)
        .ok_or_else(|| Error::Axis("too many axes for a Linear contraction (max 52)".into()))
}

impl Layer for Linear {
    crate::layer_common!("Linear");
    fn check(&self) -> Result<()> {
        super::args::check_disjoint(
            "Linear",
            &[
                ("input_axes", &self.input_axes),
                ("output_axes", &self.output_axes),
                ("parallel_axes", &self.parallel_axes),
            ],
        )
    }

    fn param_specs(&self) -> Vec<crate::tree::ParamSpec> {
        vec![crate::tree::ParamSpec {
            name: "weights".into(),
            shape: self.weight_shape(),
            init: self.init.unwrap_or(Initializer::FanIn { scale: 1.0 }),
            fan_in: self.input_axes.values().product(),
        }]
    }

    fn param_axes(&self, name: &str) -> Vec<String> {
        if name != "weights" {
            return vec![];
        }
        self.input_axes
            .keys()
            .chain(self.output_axes.keys())
            .chain(self.parallel_axes.keys())
            .cloned()
            .collect()
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "{} -> {}",
            axes_str(&self.input_axes),
            axes_str(&self.output_axes)
        );
        if !self.parallel_axes.is_empty() {
            s.push_str(&format!(", parallel {}", axes_str(&self.parallel_axes)));
        }
        s
    }

    fn forward(&self, node: &Node, x: Value, _side: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        check_axes(&x, &self.input_axes, "Linear", "input")?;
        check_axes(&x, &self.parallel_axes, "Linear", "parallel")?;
        if x.positional_ndim() != 0 {
            return Err(Error::Axis(format!(
                "Linear: the input has positional axes; name them first ({})",
                x.describe()
            )));
        }
        let w = node.param("weights")?;
        if w.size() != self.weight_shape() {
            return Err(Error::Param(format!(
                "Linear: `weights` has shape {:?} but the axes need {:?}",
                w.size(),
                self.weight_shape()
            )));
        }
        let w = if w.kind() != x.kind() {
            w.f_to_kind(x.kind()).ctx("Linear: cast weights")?
        } else {
            w
        };
        if let Some(y) = self.fast_path(&x, &w)? {
            return Ok(y.into());
        }
        // Letters: x's axes first, then the output axes.
        let xnames = x.names().to_vec();
        let mut eq_x = String::new();
        for i in 0..xnames.len() {
            eq_x.push(letter(i)?);
        }
        let pos_in_x = |n: &str| xnames.iter().position(|m| m == n);
        let mut eq_w = String::new();
        for n in self.input_axes.keys().chain(std::iter::empty()) {
            if let Some(i) = pos_in_x(n) {
                eq_w.push(letter(i)?);
            }
        }
        let mut out_names: Vec<String> = vec![];
        let mut eq_out = String::new();
        for (i, n) in xnames.iter().enumerate() {
            if !self.input_axes.contains_key(n) || self.parallel_axes.contains_key(n) {
                if self.output_axes.contains_key(n) {
                    return Err(Error::Axis(format!(
                        "Linear: output axis `{n}` already exists in the input and is not \
                         contracted ({})",
                        x.describe()
                    )));
                }
                eq_out.push(letter(i)?);
                out_names.push(n.clone());
            }
        }
        for (k, n) in self.output_axes.keys().enumerate() {
            let l = letter(xnames.len() + k)?;
            eq_w.push(l);
            eq_out.push(l);
            out_names.push(n.clone());
        }
        for n in self.parallel_axes.keys() {
            if let Some(i) = pos_in_x(n) {
                eq_w.push(letter(i)?);
            }
        }
        let eq = format!("{eq_x},{eq_w}->{eq_out}");
        let y = Tensor::f_einsum(&eq, &[x.tensor(), &w], None::<&[i64]>)
            .ctx(format!("Linear einsum `{eq}`"))?;
        Ok(NamedTensor::from_parts(y, out_names)?.into())
    }
}

impl Linear {
    /// The common cases without `einsum` (which re-parses its equation and may permute and
    /// copy): a scale over parallel axes alone is a broadcast multiply, and a contraction
    /// without parallel axes is one matrix product of `x` (its other axes first, then the
    /// input axes in the weights' order; a permutation only when they are not already so) with
    /// the weights viewed as `[inputs, outputs]`. `None`: the einsum path applies.
    fn fast_path(&self, x: &NamedTensor, w: &Tensor) -> Result<Option<NamedTensor>> {
        if self.input_axes.is_empty() && self.output_axes.is_empty() {
            let names: Vec<&str> = self.parallel_axes.keys().map(|s| s.as_str()).collect();
            let scale = NamedTensor::wrap(w.shallow_clone(), &names)?;
            return Ok(Some(x.mul(&scale)?));
        }
        if !self.parallel_axes.is_empty() || self.input_axes.is_empty() {
            return Ok(None);
        }
        let names = x.names();
        let batch: Vec<&String> = names
            .iter()
            .filter(|n| !self.input_axes.contains_key(*n))
            .collect();
        if batch.iter().any(|n| self.output_axes.contains_key(*n)) {
            return Ok(None); // the einsum path names the clash
        }
        let order: Vec<String> = batch
            .iter()
            .map(|n| n.to_string())
            .chain(self.input_axes.keys().cloned())
            .collect();
        let x = if order.as_slice() == names {
            x.clone()
        } else {
            x.with_name_order(&order)?
        };
        let k: i64 = self.input_axes.values().product();
        let m: i64 = self.output_axes.values().product();
        let t = x.tensor();
        let lead: Vec<i64> = t.size()[..batch.len()].to_vec();
        let y = t
            .f_reshape([-1, k])
            .and_then(|x2| x2.f_matmul(&w.f_reshape([k, m])?))
            .and_then(|y2| {
                let shape: Vec<i64> = lead
                    .iter()
                    .copied()
                    .chain(self.output_axes.values().copied())
                    .collect();
                y2.f_reshape(shape.as_slice())
            })
            .ctx("Linear matmul")?;
        let out_names = batch
            .into_iter()
            .cloned()
            .chain(self.output_axes.keys().cloned())
            .collect();
        Ok(Some(NamedTensor::from_parts(y, out_names)?))
    }
}

/// Adds a learned bias over the named `axes` (broadcast over all other axes). Parameter: `bias`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AddBias {
    pub axes: Axes,
}

impl AddBias {
    /// Builds the node with a zero-initialized `bias` parameter.
    pub fn build(self, scope: &Scope<'_>) -> Result<Node> {
        Node::build(self, scope)
    }
}

impl Layer for AddBias {
    crate::layer_common!("AddBias");
    fn check(&self) -> Result<()> {
        super::args::check_disjoint("AddBias", &[("axes", &self.axes)])
    }

    fn param_specs(&self) -> Vec<crate::tree::ParamSpec> {
        vec![crate::tree::ParamSpec {
            name: "bias".into(),
            shape: self.axes.values().copied().collect(),
            init: Initializer::Zeros,
            fan_in: 1,
        }]
    }

    fn param_axes(&self, name: &str) -> Vec<String> {
        if name == "bias" {
            self.axes.keys().cloned().collect()
        } else {
            vec![]
        }
    }

    fn summary(&self) -> String {
        axes_str(&self.axes)
    }

    fn forward(&self, node: &Node, x: Value, _side: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        check_axes(&x, &self.axes, "AddBias", "bias")?;
        let names: Vec<&str> = self.axes.keys().map(|s| s.as_str()).collect();
        let b = NamedTensor::wrap(node.param("bias")?, &names)?;
        let b = if b.kind() != x.kind() {
            b.to_kind(x.kind())?
        } else {
            b
        };
        Ok(x.add(&b)?.into())
    }
}

/// Builds an `Affine` layer: a sequence of `Linear` (child `linear`, label `<scope>.linear`)
/// and `AddBias` over the output axes (child `bias`).
pub fn affine(scope: &Scope<'_>, input_axes: Axes, output_axes: Axes) -> Result<Node> {
    let lin = Linear::new(input_axes, output_axes.clone()).build(&scope.pp("linear"), None)?;
    let bias = AddBias { axes: output_axes }.build(&scope.pp("bias"))?;
    Ok(Sequential::of_kind(
        "Affine",
        vec![("linear".into(), lin), ("bias".into(), bias)],
    ))
}
