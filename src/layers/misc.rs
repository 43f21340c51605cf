//! Small layers: `Elementwise` functions, `Softmax` over named axes, `TanhSoftCap`,
//! `RenameAxes`, `CastToDType`, `Identity`, `Rescale` (multiply by a constant), `Dropout`,
//! and `ContractTogether` (a named einsum of a tuple of inputs).

use crate::backend::{seeded_random, Distribution};
use crate::base::{Error, Result, TorchContext};
use crate::named::{ops::einsum, NamedTensor};
use crate::params::RandomStream;
use crate::tree::{Layer, Node, SideInputs, Value};
use serde::{Deserialize, Serialize};
use tch::Kind;

/// An elementwise activation function.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Gelu,
    GeluTanh,
    Silu,
    Tanh,
    Sigmoid,
    Softplus,
    Exp,
    Square,
    Abs,
    Neg,
}

impl Activation {
    /// All functions, for messages and tests.
    pub const ALL: [Activation; 11] = [
        Activation::Relu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Softplus,
        Activation::Exp,
        Activation::Square,
        Activation::Abs,
        Activation::Neg,
    ];

    /// Applies the function to a plain tensor.
    pub fn apply(self, t: &tch::Tensor) -> Result<tch::Tensor> {
        match self {
            Activation::Relu => t.f_relu(),
            Activation::Gelu => t.f_gelu("none"),
            Activation::GeluTanh => t.f_gelu("tanh"),
            Activation::Silu => t.f_silu(),
            Activation::Tanh => t.f_tanh(),
            Activation::Sigmoid => t.f_sigmoid(),
            Activation::Softplus => t.f_softplus(),
            Activation::Exp => t.f_exp(),
            Activation::Square => t.f_square(),
            Activation::Abs => t.f_abs(),
            Activation::Neg => t.f_neg(),
        }
        .ctx(format!("{self:?}"))
    }
}

/// Applies an elementwise function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Elementwise {
    #[serde(rename = "fn")]
    pub function: Activation,
}

impl Layer for Elementwise {
    crate::layer_common!("Elementwise");
    fn summary(&self) -> String {
        format!("{:?}", self.function).to_lowercase()
    }
    fn forward(&self, _n: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        Ok(x.map_elementwise(|t| self.function.apply(t))?.into())
    }
}

/// Softmax jointly over named axes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Softmax {
    pub axes: Vec<String>,
}

impl Layer for Softmax {
    crate::layer_common!("Softmax");
    fn summary(&self) -> String {
        format!("over {:?}", self.axes)
    }
    fn forward(&self, _n: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        let axes: Vec<&str> = self.axes.iter().map(|s| s.as_str()).collect();
        Ok(x.softmax(&axes)?.into())
    }
}

/// Softmax over `axis` with a learned logit per head joining it (gpt-oss's attention sinks):
/// `exp(x) / (sum_axis exp(x) + exp(sink))`. The sink takes part of the weight and is then
/// dropped, so a head may attend to nothing. Parameter: `sinks` over `head_axes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SoftmaxWithSink {
    pub axis: String,
    pub head_axes: super::Axes,
}

impl Layer for SoftmaxWithSink {
    crate::layer_common!("SoftmaxWithSink");
    fn summary(&self) -> String {
        format!(
            "over {:?}, sinks {}",
            self.axis,
            super::axes_str(&self.head_axes)
        )
    }
    fn param_specs(&self) -> Vec<crate::tree::ParamSpec> {
        vec![crate::tree::ParamSpec {
            name: "sinks".into(),
            shape: self.head_axes.values().copied().collect(),
            init: crate::params::init::Initializer::Zeros,
            fan_in: 1,
        }]
    }
    fn param_axes(&self, name: &str) -> Vec<String> {
        match name {
            "sinks" => self.head_axes.keys().cloned().collect(),
            _ => vec![],
        }
    }
    fn forward(&self, node: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        let mut order: Vec<String> = x
            .names()
            .iter()
            .filter(|n| **n != self.axis)
            .cloned()
            .collect();
        if order.len() == x.names().len() || x.positional_ndim() != 0 {
            return Err(Error::Axis(format!(
                "SoftmaxWithSink: the input needs the named axis `{}` and no positional axes, got {}",
                self.axis,
                x.describe()
            )));
        }
        let heads: Vec<&str> = self.head_axes.keys().map(|s| s.as_str()).collect();
        let sinks = node
            .param("sinks")?
            .f_to_kind(x.kind())
            .ctx("SoftmaxWithSink")?;
        let sizes = order
            .iter()
            .map(|n| Ok((n.clone(), x.size_of(n)?)))
            .collect::<Result<Vec<_>>>()?;
        let sinks = NamedTensor::wrap(sinks, &heads)?
            .broadcast_to(&sizes)?
            .with_name_order(&order)?;
        order.push(self.axis.clone());
        let xt = x.with_name_order(&order)?;
        let t = xt.tensor();
        if crate::backend::is_meta(t) {
            // Shape inference: the output is shaped as the input.
            return Ok(xt.into());
        }
        let total = t
            .f_logsumexp([-1i64].as_slice(), false)
            .and_then(|l| l.f_logaddexp(sinks.tensor()))
            .and_then(|l| l.f_unsqueeze(-1))
            .and_then(|l| t.f_sub(&l))
            .and_then(|l| l.f_exp())
            .ctx("SoftmaxWithSink")?;
        Ok(NamedTensor::from_parts(total, order)?.into())
    }
}

/// `cap * tanh(x / cap)` (Gemma 2's logit soft-capping).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TanhSoftCap {
    pub cap: f64,
}

impl Layer for TanhSoftCap {
    crate::layer_common!("TanhSoftCap");
    fn check(&self) -> Result<()> {
        let c = self.cap;
        super::args::check_number(
            "TanhSoftCap",
            "cap",
            c,
            c > 0.0 && c.is_finite(),
            "a finite number > 0",
        )
    }
    fn summary(&self) -> String {
        format!("cap {}", self.cap)
    }
    fn forward(&self, _n: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        let c = self.cap;
        Ok(x.map_elementwise(|t| {
            t.f_div_scalar(c)
                .and_then(|u| u.f_tanh())
                .and_then(|u| u.f_mul_scalar(c))
                .ctx("soft cap")
        })?
        .into())
    }
}

/// Renames named axes (`{ old = "new" }`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RenameAxes {
    pub rename: indexmap::IndexMap<String, String>,
}

impl Layer for RenameAxes {
    crate::layer_common!("RenameAxes");
    fn summary(&self) -> String {
        let v: Vec<String> = self
            .rename
            .iter()
            .map(|(a, b)| format!("{a} -> {b}"))
            .collect();
        v.join(", ")
    }
    fn forward(&self, _n: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        let pairs: Vec<(&str, &str)> = self
            .rename
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        Ok(x.rename(&pairs)?.into())
    }
}

/// Parses a dtype name (`float32`, `bfloat16`, `float16`, `float64`).
pub fn parse_dtype(s: &str) -> Result<Kind> {
    crate::base::dtype::from_name_or_alias(s)
        .filter(|k| crate::base::dtype::is_float(*k))
        .ok_or_else(|| {
            Error::Config(format!(
                "unknown dtype `{s}` (expected float32, bfloat16, float16 or float64)"
            ))
        })
}

/// Casts to a dtype.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CastToDType {
    pub dtype: String,
}

impl Layer for CastToDType {
    crate::layer_common!("CastToDType");
    fn summary(&self) -> String {
        self.dtype.clone()
    }
    fn forward(&self, _n: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        let kind = parse_dtype(&self.dtype)?;
        Ok(x.into_tensor()?.to_kind(kind)?.into())
    }
}

/// Returns its input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Identity {}

impl Layer for Identity {
    crate::layer_common!("Identity");
    fn forward(&self, _n: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        Ok(x)
    }
}

/// Multiplies by a constant (Penzai's `ConstantRescale`; the query scaling of attention).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rescale {
    pub by: f64,
}

impl Layer for Rescale {
    crate::layer_common!("Rescale");
    fn check(&self) -> Result<()> {
        super::args::check_number(
            "Rescale",
            "by",
            self.by,
            self.by.is_finite(),
            "a finite number",
        )
    }
    fn summary(&self) -> String {
        format!("x {}", self.by)
    }
    fn forward(&self, _n: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        Ok(x.into_tensor()?.mul_scalar(self.by)?.into())
    }
}

fn default_stream_input() -> String {
    "random_stream".into()
}

/// Inverted dropout: zeroes each element with probability `rate` and scales the rest by
/// `1 / (1 - rate)`. It draws its mask from a [`RandomStream`]: the side input named
/// `stream_input` (default `random_stream`), or, when `seed` is set, a stream the layer holds.
/// With no stream (evaluation) or with the side input `train = false`, it is the identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropout {
    pub rate: f64,
    #[serde(default = "default_stream_input")]
    pub stream_input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip)]
    held: std::sync::OnceLock<RandomStream>,
}

impl Dropout {
    /// Dropout driven by the `random_stream` side input.
    pub fn new(rate: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&rate) {
            return Err(Error::Config(format!(
                "Dropout: rate must be in [0, 1), got {rate}"
            )));
        }
        Ok(Dropout {
            rate,
            stream_input: default_stream_input(),
            seed: None,
            held: Default::default(),
        })
    }
    /// Dropout holding its own stream from `seed`.
    pub fn with_seed(rate: f64, seed: u64) -> Result<Self> {
        let mut d = Self::new(rate)?;
        d.seed = Some(seed);
        Ok(d)
    }
}

impl Layer for Dropout {
    crate::layer_common!("Dropout");
    fn check(&self) -> Result<()> {
        let r = self.rate;
        super::args::check_number("Dropout", "rate", r, (0.0..1.0).contains(&r), "in [0, 1)")
    }
    fn summary(&self) -> String {
        format!("rate {}", self.rate)
    }
    fn forward(&self, _n: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        if self.rate == 0.0
            || side.flag("train") == Some(false)
            || crate::backend::is_meta(x.tensor())
        {
            return Ok(x.into());
        }
        let held = self
            .seed
            .map(|seed| self.held.get_or_init(|| RandomStream::new(seed)).clone());
        let stream = match side.stream(&self.stream_input).cloned().or(held) {
            Some(s) => s,
            None => return Ok(x.into()),
        };
        let key = stream.next_key();
        let u = seeded_random(
            key,
            Distribution::Uniform,
            &x.tensor().size(),
            Kind::Float,
            x.device(),
        )?;
        let keep = u
            .f_ge(self.rate)
            .and_then(|m| m.f_to_kind(x.kind()))
            .ctx("dropout mask")?;
        let scale = 1.0 / (1.0 - self.rate);
        Ok(x.map_elementwise(|t| {
            t.f_mul(&keep)
                .and_then(|y| y.f_mul_scalar(scale))
                .ctx("dropout")
        })?
        .into())
    }
}

/// Contracts a tuple of named tensors together over the `over` axes (a named einsum): used for
/// attention logits (`over = ["projection"]`) and for weighting values (`over = ["kv_seq"]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContractTogether {
    pub over: Vec<String>,
}

impl Layer for ContractTogether {
    crate::layer_common!("ContractTogether");
    fn summary(&self) -> String {
        format!("over {:?}", self.over)
    }
    fn forward(&self, _n: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        let items = match x {
            Value::Tuple(v) => v,
            Value::Tensor(t) => {
                return Err(Error::Axis(format!(
                    "ContractTogether expects a tuple of tensors, got {}",
                    t.describe()
                )))
            }
        };
        let ts: Vec<NamedTensor> = items
            .into_iter()
            .map(|v| v.into_tensor())
            .collect::<Result<_>>()?;
        let refs: Vec<&NamedTensor> = ts.iter().collect();
        let over: Vec<&str> = self.over.iter().map(|s| s.as_str()).collect();
        Ok(einsum(&refs, &over)?.into())
    }
}

/// Returns its input unchanged and saves it in its state variable `value` (Penzai's
/// `SaveIntermediate`; inspect with `state_variables()` or `stateless_call`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SaveIntermediate {}

impl SaveIntermediate {
    /// A node with a fresh, empty state variable labelled `<scope>.value`.
    pub fn build(scope: &crate::tree::Scope<'_>) -> Node {
        let var = crate::params::StateVariable::new(scope.label("value"), None);
        Node::new(SaveIntermediate {}).with_state("value", crate::params::StateEntry::Var(var))
    }
}

impl Layer for SaveIntermediate {
    crate::layer_common!("SaveIntermediate");
    fn state_specs(&self) -> Vec<String> {
        vec!["value".into()]
    }
    fn forward(&self, node: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        node.state("value")?.set(Some(x.clone()))?;
        Ok(x)
    }
}
