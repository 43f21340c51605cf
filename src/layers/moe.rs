//! Sparse mixture of experts (Qwen3-MoE, Mixtral, gpt-oss), as three small layers:
//!
//! ```text
//! SparseMoE                                   x {..., embedding} -> {..., embedding}
//!   router: Sequential
//!     linear: Linear {embedding} -> {experts}  (+ bias: gpt-oss)
//!     route: TopKRouting                      logits -> gates {..., experts}
//!   experts: Experts                          (x, gates) -> sum over chosen experts
//! ```
//!
//! The router's output is a named tensor over the `experts` axis: the weight of each expert for
//! each token, zero for the experts not chosen (so `pzt capture` on `router` shows the routing,
//! and on `router.linear` the logits). `Experts` holds every expert's weights in one tensor per
//! projection, whose first axis is `experts` (`gate`, `up`: `{experts, embedding, neurons}`;
//! `down`: `{experts, neurons, embedding}`), and computes only the chosen experts: the tokens
//! are gathered by expert, each expert runs on its own tokens, and the weighted outputs are
//! scattered back (one index-add).
//!
//! Training adds the load-balancing loss of the routers ([`load_balancing_loss`]): while
//! [`collect_router_logits`] runs, every `TopKRouting` records its logits.

use super::misc::Activation;
use crate::base::{Error, Result, TorchContext};
use crate::named::NamedTensor;
use crate::params::init::Initializer;
use crate::tree::{ChildLayout, Layer, Node, ParamSpec, SideInputs, Value};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use tch::{Kind, Tensor};

/// The name of the experts axis.
pub const EXPERTS: &str = "experts";

/// How a router turns its logits into the weights of the chosen experts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RouteOrder {
    /// A softmax over every expert (in float32), then the `top_k` largest probabilities
    /// (Qwen3-MoE, Mixtral).
    SoftmaxThenTopK,
    /// The `top_k` largest logits, then a softmax over them (gpt-oss).
    TopKThenSoftmax,
}

/// Routing: the weights of the `top_k` experts each token goes to, as a tensor over the
/// `experts` axis (zero for the others).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopKRouting {
    pub num_experts: i64,
    pub top_k: i64,
    pub order: RouteOrder,
    /// With [`RouteOrder::SoftmaxThenTopK`]: divide the chosen probabilities by their sum.
    #[serde(default)]
    pub renormalize: bool,
    /// The weight of this router's load-balancing loss in training
    /// (`router_aux_loss_coef`).
    #[serde(default)]
    pub aux_loss_coef: f64,
}

/// One router's logits, recorded for the load-balancing loss.
pub struct RouterLogits {
    /// `[tokens, experts]`.
    pub logits: Tensor,
    /// The named axes the tokens were flattened from, in order.
    pub token_axes: Vec<String>,
    pub top_k: i64,
    pub aux_loss_coef: f64,
}

thread_local! {
    static ROUTERS: RefCell<Option<Vec<RouterLogits>>> = const { RefCell::new(None) };
}

/// Runs `f` (a forward pass) while recording the logits of every router on this thread.
pub fn collect_router_logits<R>(f: impl FnOnce() -> R) -> (R, Vec<RouterLogits>) {
    let outer = ROUTERS.with(|r| r.borrow_mut().replace(vec![]));
    let out = f();
    let got = ROUTERS.with(|r| std::mem::replace(&mut *r.borrow_mut(), outer));
    (out, got.unwrap_or_default())
}

fn record(r: RouterLogits) {
    ROUTERS.with(|cell| {
        if let Some(v) = cell.borrow_mut().as_mut() {
            v.push(r);
        }
    });
}

/// `x` as a `[tokens, axis]` matrix, with the order of its other axes (which must all be
/// named).
fn as_rows(x: &NamedTensor, axis: &str, layer: &str) -> Result<(Tensor, Vec<String>)> {
    if x.positional_ndim() != 0 || !x.has(axis) {
        return Err(Error::Axis(format!(
            "{layer}: the input needs the named axis `{axis}` and no positional axes, got {}",
            x.describe()
        )));
    }
    let mut order: Vec<String> = x.names().iter().filter(|n| *n != axis).cloned().collect();
    order.push(axis.to_string());
    let size = x.size_of(axis)?;
    let t = x
        .with_name_order(&order)?
        .tensor()
        .f_reshape([-1, size])
        .ctx(layer)?;
    order.pop();
    Ok((t, order))
}

/// `rows` (`[tokens, n]`) back as a named tensor of `like`'s other axes and `axis`.
fn from_rows(rows: &Tensor, others: &[String], like: &NamedTensor, axis: &str) -> Result<Value> {
    let mut shape: Vec<i64> = others
        .iter()
        .map(|n| like.size_of(n))
        .collect::<Result<_>>()?;
    shape.push(rows.size().last().copied().unwrap_or(0));
    let mut names = others.to_vec();
    names.push(axis.to_string());
    let t = rows.f_reshape(shape.as_slice()).ctx("experts")?;
    Ok(NamedTensor::from_parts(t, names)?.into())
}

impl TopKRouting {
    /// The chosen experts' weights `[tokens, top_k]` and their indices, from `[tokens,
    /// experts]` logits.
    fn choose(&self, logits: &Tensor) -> Result<(Tensor, Tensor)> {
        match self.order {
            RouteOrder::SoftmaxThenTopK => {
                let probs = logits.f_softmax(-1, Kind::Float).ctx("router")?;
                let (mut v, i) = probs.f_topk(self.top_k, -1, true, true).ctx("router")?;
                if self.renormalize {
                    let s = v.f_sum_dim_intlist(-1, true, Kind::Float).ctx("router")?;
                    v = v.f_div(&s).ctx("router")?;
                }
                Ok((v.f_to_kind(logits.kind()).ctx("router")?, i))
            }
            RouteOrder::TopKThenSoftmax => {
                let (v, i) = logits.f_topk(self.top_k, -1, true, true).ctx("router")?;
                Ok((v.f_softmax(-1, logits.kind()).ctx("router")?, i))
            }
        }
    }
}

impl Layer for TopKRouting {
    crate::layer_common!("TopKRouting");
    fn check(&self) -> Result<()> {
        if self.num_experts < 1 || !(1..=self.num_experts).contains(&self.top_k) {
            return Err(Error::Config(format!(
                "TopKRouting: top_k must be 1 to num_experts ({}), got {}",
                self.num_experts, self.top_k
            )));
        }
        if !(self.aux_loss_coef.is_finite() && self.aux_loss_coef >= 0.0) {
            return Err(Error::Config(format!(
                "TopKRouting: aux_loss_coef must be a finite number >= 0, got {}",
                self.aux_loss_coef
            )));
        }
        Ok(())
    }
    fn summary(&self) -> String {
        let order = match self.order {
            RouteOrder::SoftmaxThenTopK if self.renormalize => "softmax, top-k, renormalized",
            RouteOrder::SoftmaxThenTopK => "softmax, top-k",
            RouteOrder::TopKThenSoftmax => "top-k, softmax",
        };
        format!(
            "top {} of {} experts ({order})",
            self.top_k, self.num_experts
        )
    }
    fn forward(&self, _n: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        let (logits, others) = as_rows(&x, EXPERTS, "TopKRouting")?;
        if logits.size()[1] != self.num_experts {
            return Err(Error::Axis(format!(
                "TopKRouting: {} experts expected, the logits have {}",
                self.num_experts,
                logits.size()[1]
            )));
        }
        record(RouterLogits {
            logits: logits.shallow_clone(),
            token_axes: others.clone(),
            top_k: self.top_k,
            aux_loss_coef: self.aux_loss_coef,
        });
        let (w, i) = self.choose(&logits)?;
        let gates = logits
            .f_zeros_like()
            .and_then(|z| z.f_scatter(-1, &i, &w))
            .ctx("router")?;
        from_rows(&gates, &others, &x, EXPERTS)
    }
}

/// The function between an expert's projections.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ExpertActivation {
    /// `act(gate) * up` (SwiGLU with `silu`).
    Gated(Activation),
    /// gpt-oss's clamped SwiGLU: `(clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g)`
    /// with `g = min(gate, limit)`.
    ClampedSwiglu { alpha: f64, limit: f64 },
}

impl ExpertActivation {
    fn apply(self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        match self {
            ExpertActivation::Gated(a) => a.apply(gate)?.f_mul(up).ctx("expert"),
            ExpertActivation::ClampedSwiglu { alpha, limit } => {
                let g = gate.f_clamp_max(limit).ctx("expert")?;
                let glu = g
                    .f_mul_scalar(alpha)
                    .and_then(|x| x.f_sigmoid())
                    .and_then(|s| s.f_mul(&g))
                    .ctx("expert")?;
                up.f_clamp(-limit, limit)
                    .and_then(|u| u.f_add_scalar(1.0))
                    .and_then(|u| u.f_mul(&glu))
                    .ctx("expert")
            }
        }
    }
}

/// The experts of a mixture: gated MLPs whose weights share a leading `experts` axis.
/// Input: `(x, gates)`, `x` over `embedding_axis`, `gates` over `experts` (a router's output);
/// output: `sum_e gates[e] * expert_e(x)` over the experts with a non-zero gate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Experts {
    pub num_experts: i64,
    pub embedding_axis: String,
    pub d_model: i64,
    pub neurons_axis: String,
    pub hidden: i64,
    pub activation: ExpertActivation,
    /// Biases on the three projections (gpt-oss).
    #[serde(default)]
    pub bias: bool,
}

/// The chosen experts of a batch of tokens, grouped by expert.
struct Dispatch {
    /// `[m]`: the token of each (expert, token) pair, expert by expert.
    tokens: Tensor,
    /// `[m]`: the gate of each pair (differentiable).
    weights: Tensor,
    /// How many pairs each expert has.
    counts: Vec<i64>,
}

impl Experts {
    /// The projection parameters: name, shape, fan-in, axes.
    fn projections(&self) -> Vec<(&'static str, Vec<i64>, i64, [&str; 3])> {
        let (e, d, h) = (self.num_experts, self.d_model, self.hidden);
        let (emb, neu) = (self.embedding_axis.as_str(), self.neurons_axis.as_str());
        vec![
            ("gate", vec![e, d, h], d, [EXPERTS, emb, neu]),
            ("up", vec![e, d, h], d, [EXPERTS, emb, neu]),
            ("down", vec![e, h, d], h, [EXPERTS, neu, emb]),
        ]
    }

    fn dispatch(gates: &Tensor) -> Result<Dispatch> {
        let e = gates.size()[1];
        let chosen = gates.f_ne(0.0).ctx("experts")?;
        let counts: Vec<i64> = chosen
            .f_sum_dim_intlist(0, false, Kind::Int64)
            .and_then(|c| c.f_to_device(tch::Device::Cpu))
            .and_then(|c| Vec::<i64>::try_from(&c).map_err(|e| tch::TchError::Kind(e.to_string())))
            .ctx("experts")?;
        // (expert, token) pairs in expert order.
        let pairs = chosen
            .f_transpose(0, 1)
            .and_then(|m| m.f_nonzero())
            .ctx("experts")?;
        let experts = pairs.f_select(1, 0).ctx("experts")?;
        let tokens = pairs.f_select(1, 1).ctx("experts")?;
        let flat = tokens
            .f_mul_scalar(e)
            .and_then(|t| t.f_add(&experts))
            .ctx("experts")?;
        let weights = gates
            .f_reshape([-1])
            .and_then(|g| g.f_index_select(0, &flat))
            .ctx("experts")?;
        Ok(Dispatch {
            tokens,
            weights,
            counts,
        })
    }

    /// Expert `e`'s output on its tokens `x` (`[n, d_model]`).
    fn expert(&self, node: &Node, e: i64, x: &Tensor) -> Result<Tensor> {
        let p = |name: &str| -> Result<Tensor> {
            let w = node.param(name)?.f_select(0, e).ctx("experts")?;
            if w.kind() != x.kind() {
                return w.f_to_kind(x.kind()).ctx("experts");
            }
            Ok(w)
        };
        let proj = |name: &str, input: &Tensor| -> Result<Tensor> {
            let y = input.f_matmul(&p(name)?).ctx("experts")?;
            if self.bias {
                return y.f_add(&p(&format!("{name}_bias"))?).ctx("experts");
            }
            Ok(y)
        };
        let h = self.activation.apply(&proj("gate", x)?, &proj("up", x)?)?;
        proj("down", &h)
    }
}

impl Experts {
    /// The node: its parameters under `scope`, and a child `Expert` per expert (`0`, `1`,
    /// ...), through which each expert's output passes.
    pub fn build(self, scope: &crate::tree::Scope<'_>) -> Result<Node> {
        let n = self.num_experts;
        let node = Node::build(self, scope)?;
        Ok(node.with_children(
            (0..n)
                .map(|index| (index.to_string(), Node::new(Expert { index })))
                .collect(),
        ))
    }

    /// Expert `e`'s output on its tokens (`[n, d_model]`) through its child, when it has one
    /// (an `Expert`, the identity, unless a patch put something else there).
    fn through_hook(&self, node: &Node, e: usize, out: Tensor) -> Result<Tensor> {
        let Ok(child) = node.child(&e.to_string()) else {
            return Ok(out);
        };
        let size = out.size();
        let names = [EXPERT_TOKENS, self.embedding_axis.as_str()];
        let x = NamedTensor::wrap(out, &names)?;
        let y = child
            .forward(x, &SideInputs::new())
            .and_then(|v| v.into_tensor())
            .map_err(|err| err.in_child(&e.to_string()))?;
        let order: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let y = y.with_name_order(&order).map_err(|_| {
            Error::Axis(format!(
                "Experts: what expert {e}'s child returned, {}, is not over {{{EXPERT_TOKENS}, {}}}",
                y.describe(),
                self.embedding_axis
            ))
        })?;
        if y.tensor().size() != size {
            return Err(Error::Axis(format!(
                "Experts: expert {e}'s child changed its output's shape from {size:?} to {:?}",
                y.tensor().size()
            )));
        }
        Ok(y.tensor().shallow_clone())
    }
}

/// The axis of the tokens one expert runs on, as its `Expert` child sees them.
pub const EXPERT_TOKENS: &str = "expert_tokens";

/// One expert of an `Experts` layer: the identity on that expert's output (`{expert_tokens,
/// embedding}`: the tokens routed to it). It is where selectors reach one expert: `pzt
/// capture` saves what the expert computed, and a patch may replace it (with `Rescale` by 0,
/// knocking the expert out) or insert a layer after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expert {
    pub index: i64,
}

impl Layer for Expert {
    crate::layer_common!("Expert");
    fn summary(&self) -> String {
        format!("expert {}", self.index)
    }
    fn forward(&self, _n: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        Ok(x)
    }
}

impl Layer for Experts {
    crate::layer_common!("Experts");
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Named
    }
    fn check(&self) -> Result<()> {
        for (k, v) in [
            ("num_experts", self.num_experts),
            ("d_model", self.d_model),
            ("hidden", self.hidden),
        ] {
            if v < 1 {
                return Err(Error::Config(format!(
                    "Experts: {k} must be at least 1, got {v}"
                )));
            }
        }
        if self.embedding_axis == self.neurons_axis || self.embedding_axis == EXPERTS {
            return Err(Error::Config(
                "Experts: the embedding, neurons and experts axes must differ".into(),
            ));
        }
        if let ExpertActivation::ClampedSwiglu { alpha, limit } = self.activation {
            if !(alpha.is_finite() && limit.is_finite() && limit > 0.0) {
                return Err(Error::Config(format!(
                    "Experts: the clamped SwiGLU needs a finite alpha and a finite limit > 0, got {alpha}, {limit}"
                )));
            }
        }
        Ok(())
    }
    fn summary(&self) -> String {
        format!(
            "{} experts, {{{}: {}}} -> {{{}: {}}}",
            self.num_experts, self.embedding_axis, self.d_model, self.neurons_axis, self.hidden
        )
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut v = vec![];
        for (name, shape, fan_in, _) in self.projections() {
            if self.bias {
                v.push(ParamSpec {
                    name: format!("{name}_bias"),
                    shape: vec![shape[0], shape[2]],
                    init: Initializer::Zeros,
                    fan_in: 1,
                });
            }
            v.push(ParamSpec {
                name: name.into(),
                shape,
                init: Initializer::FanIn { scale: 1.0 },
                fan_in,
            });
        }
        v
    }
    fn param_axes(&self, name: &str) -> Vec<String> {
        for (n, _, _, axes) in self.projections() {
            if name == n {
                return axes.iter().map(|a| a.to_string()).collect();
            }
            if name.strip_suffix("_bias") == Some(n) {
                return vec![axes[0].to_string(), axes[2].to_string()];
            }
        }
        vec![]
    }
    fn forward(&self, node: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        let mut v = x.into_tuple(2)?;
        let gates = v.pop().map(|g| g.into_tensor()).transpose()?;
        let x = v.pop().map(|x| x.into_tensor()).transpose()?;
        let (Some(x), Some(gates)) = (x, gates) else {
            return Err(Error::Axis("Experts: expected (x, gates)".into()));
        };
        let (rows, others) = as_rows(&x, &self.embedding_axis, "Experts")?;
        let g = gates.with_name_order(
            &others
                .iter()
                .cloned()
                .chain([EXPERTS.to_string()])
                .collect::<Vec<_>>(),
        )?;
        let g = g
            .tensor()
            .f_reshape([-1, self.num_experts])
            .ctx("Experts: the gates")?;
        if crate::backend::is_meta(&rows) {
            // Shape inference: the output's shape, no routing.
            return from_rows(
                &rows.f_zeros_like().ctx("experts")?,
                &others,
                &x,
                &self.embedding_axis,
            );
        }
        let d = Self::dispatch(&g)?;
        let xs = rows.f_index_select(0, &d.tokens).ctx("experts")?;
        let mut outs = vec![];
        let mut start = 0;
        for (e, &n) in d.counts.iter().enumerate() {
            // An expert no token chose computes nothing; its child still sees its (empty)
            // output, so that a capture of it holds zero tokens.
            let out = if n > 0 {
                let xe = xs.f_narrow(0, start, n).ctx("experts")?;
                self.expert(node, e as i64, &xe)?
            } else {
                rows.f_new_zeros([0, self.d_model], (rows.kind(), rows.device()))
                    .ctx("experts")?
            };
            outs.push(self.through_hook(node, e, out)?);
            start += n;
        }
        let y = rows.f_zeros_like().ctx("experts")?;
        let y = if outs.is_empty() {
            y
        } else {
            let out = Tensor::f_cat(&outs, 0)
                .and_then(|o| o.f_mul(&d.weights.f_unsqueeze(1)?))
                .ctx("experts")?;
            y.f_index_add(0, &d.tokens, &out).ctx("experts")?
        };
        from_rows(&y, &others, &x, &self.embedding_axis)
    }
}

/// A mixture of experts: `experts((x, router(x)))`. Children: `router` (logits over
/// `experts`, then the routing) and `experts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SparseMoE {}

impl SparseMoE {
    /// The node, from its router and experts.
    pub fn build(router: Node, experts: Node) -> Node {
        Node::new(SparseMoE {})
            .with_children(vec![("router".into(), router), ("experts".into(), experts)])
    }
}

impl Layer for SparseMoE {
    crate::layer_common!("SparseMoE");
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Slots {
            names: &["router", "experts"],
            wrap: None,
        }
    }
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let gates = node.call_child("router", x.clone(), side)?;
        let y = node.call_child("experts", Value::Tuple(vec![x, gates]), side)?;
        self.trace_inner(node, &y);
        Ok(y)
    }
}

impl SparseMoE {
    /// For the memory model: the activations the experts keep for backward, which no leaf
    /// layer outputs (per chosen (token, expert) pair: the gathered input, the gate and up
    /// projections, their product, and the output).
    fn trace_inner(&self, node: &Node, y: &Value) {
        let (Ok(experts), Value::Tensor(y)) = (node.child("experts"), y) else {
            return;
        };
        let Some(e) = experts.layer_as::<Experts>() else {
            return;
        };
        let mut top_k = 0;
        if let Ok(router) = node.child("router") {
            router.walk(&mut |_, n| {
                if let Some(r) = n.layer_as::<TopKRouting>() {
                    top_k = r.top_k;
                }
            });
        }
        let tokens = y.tensor().numel() as i64 / e.d_model.max(1);
        let per_pair = 2 * e.d_model + 3 * e.hidden;
        crate::tree::trace_record("Experts (chosen)", tokens * top_k * per_pair, y.kind());
    }
}

/// The load-balancing loss of the routers, as transformers computes it
/// (`load_balancing_loss_func`, Switch Transformer's eqs. 4-6): with `f_e` the fraction of
/// the chosen (token, expert) pairs that went to expert `e` and `P_e` the mean router
/// probability of `e`, both over the tokens of every router together, the loss is
/// `num_experts * sum_e f_e * P_e`. `mask` (`[tokens]`, 1 for a real token) leaves out
/// padding. Returns None when there are no routers.
pub fn load_balancing_loss(
    routers: &[RouterLogits],
    mask: Option<&NamedTensor>,
) -> Result<Option<Tensor>> {
    let Some(first) = routers.first() else {
        return Ok(None);
    };
    let e = first.logits.size()[1];
    let dev = first.logits.device();
    let mut counts = Tensor::f_zeros([e], (Kind::Float, dev)).ctx("aux loss")?;
    let mut probs = Tensor::f_zeros([e], (Kind::Float, dev)).ctx("aux loss")?;
    let mut rows = Tensor::f_zeros([], (Kind::Float, dev)).ctx("aux loss")?;
    for r in routers {
        let n = r.logits.size()[0];
        let w = match mask {
            Some(m) => token_mask(m, r)?,
            None => Tensor::f_ones([n], (Kind::Float, dev)).ctx("aux loss")?,
        };
        let p = r.logits.f_softmax(-1, Kind::Float).ctx("aux loss")?;
        let (_, chosen) = p.f_topk(r.top_k, -1, true, true).ctx("aux loss")?;
        let per_pair = w
            .f_unsqueeze(1)
            .and_then(|w| w.f_expand([n, r.top_k], false))
            .ctx("aux loss")?;
        counts = counts
            .f_scatter_add(
                0,
                &chosen.f_reshape([-1]).ctx("aux loss")?,
                &per_pair.f_reshape([-1]).ctx("aux loss")?,
            )
            .ctx("aux loss")?;
        probs = probs
            .f_add(
                &p.f_mul(&w.f_unsqueeze(1)?)?
                    .f_sum_dim_intlist(0, false, Kind::Float)?,
            )
            .ctx("aux loss")?;
        rows = rows.f_add(&w.f_sum(Kind::Float)?).ctx("aux loss")?;
    }
    let loss = counts
        .f_div(&rows)
        .and_then(|f| f.f_mul(&probs.f_div(&rows)?))
        .and_then(|x| x.f_sum(Kind::Float))
        .and_then(|x| x.f_mul_scalar(e as f64))
        .ctx("aux loss")?;
    Ok(Some(loss))
}

/// `mask` flattened in the order of `r`'s tokens.
fn token_mask(mask: &NamedTensor, r: &RouterLogits) -> Result<Tensor> {
    let mut a: Vec<&String> = mask.names().iter().collect();
    let mut b: Vec<&String> = r.token_axes.iter().collect();
    a.sort();
    b.sort();
    if a != b || mask.positional_ndim() != 0 {
        return Err(Error::Axis(format!(
            "the load-balancing loss: a router's tokens are over {:?}, the batch's over {:?}",
            r.token_axes,
            mask.names()
        )));
    }
    mask.with_name_order(&r.token_axes)?
        .tensor()
        .f_reshape([-1])
        .and_then(|m| m.f_to_kind(Kind::Float))
        .ctx("aux loss")
}

/// Refuses training where a router's load-balancing loss could not reach its parameters: a
/// router inside an activation-checkpointed segment (its logits are recomputed in backward,
/// where the loss cannot see them), unless the loss is off (`coef_override` 0, or every
/// router's coefficient 0).
pub fn check_trainable(tree: &Node, coef_override: Option<f64>) -> Result<()> {
    let mut bad: Option<String> = None;
    tree.walk(&mut |path, n| {
        if bad.is_some() || n.layer_as::<super::toolshed::Checkpointed>().is_none() {
            return;
        }
        n.walk(&mut |inner, m| {
            if let Some(r) = m.layer_as::<TopKRouting>() {
                if bad.is_none() && coef_override.unwrap_or(r.aux_loss_coef) > 0.0 {
                    let mut p = path.to_vec();
                    p.extend(inner.iter().cloned());
                    bad = Some(p.join("."));
                }
            }
        });
    });
    match bad {
        None => Ok(()),
        Some(p) => Err(Error::Config(format!(
            "the router `{p}` is inside an activation-checkpointed segment, where its load-balancing loss cannot reach it; checkpoint other layers, or set `[train] router_aux_loss_coef = 0`"
        ))),
    }
}

/// How a model's parameters divide between its experts and the rest (`pzt plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertSplit {
    /// Layers with experts.
    pub layers: usize,
    /// Experts per layer (the largest, when layers differ).
    pub experts: i64,
    /// Experts per token (the largest).
    pub top_k: i64,
    /// Parameters in the experts.
    pub expert_params: i64,
    /// Of those, what one token uses: `top_k / experts` of each layer's.
    pub active_expert_params: i64,
}

/// The experts of `tree`, if it has a mixture of experts.
pub fn expert_split(tree: &Node) -> Option<ExpertSplit> {
    let mut split = ExpertSplit {
        layers: 0,
        experts: 0,
        top_k: 0,
        expert_params: 0,
        active_expert_params: 0,
    };
    tree.walk(&mut |_, n| {
        if n.layer_as::<SparseMoE>().is_none() {
            return;
        }
        let (Ok(ex), Ok(router)) = (n.child("experts"), n.child("router")) else {
            return;
        };
        let Some(e) = ex.layer_as::<Experts>() else {
            return;
        };
        let mut k = 0;
        router.walk(&mut |_, r| {
            if let Some(t) = r.layer_as::<TopKRouting>() {
                k = t.top_k;
            }
        });
        let params: i64 = ex
            .all_param_entries()
            .iter()
            .map(|(_, _, p)| p.shape().iter().product::<i64>())
            .sum();
        split.layers += 1;
        split.experts = split.experts.max(e.num_experts);
        split.top_k = split.top_k.max(k);
        split.expert_params += params;
        split.active_expert_params += params * k / e.num_experts.max(1);
    });
    (split.layers > 0).then_some(split)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Builder;

    fn ax(pairs: &[(&str, i64)]) -> crate::layers::Axes {
        pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    fn moe(order: RouteOrder, activation: ExpertActivation) -> Result<Node> {
        let b = Builder::new(7);
        let s = b.root();
        let linear =
            crate::layers::linear::Linear::new(ax(&[("embedding", 6)]), ax(&[(EXPERTS, 4)]))
                .build(&s.pp("router.linear"), None)?;
        let route = Node::new(TopKRouting {
            num_experts: 4,
            top_k: 2,
            order,
            renormalize: true,
            aux_loss_coef: 0.01,
        });
        let router = crate::layers::grouping::Sequential::named(vec![
            ("linear".into(), linear),
            ("route".into(), route),
        ]);
        let experts = Experts {
            num_experts: 4,
            embedding_axis: "embedding".into(),
            d_model: 6,
            neurons_axis: "neurons".into(),
            hidden: 5,
            activation,
            bias: true,
        }
        .build(&s.pp("experts"))?;
        Ok(SparseMoE::build(router, experts))
    }

    /// Every expert on every token, weighted by the gates: what the sparse computation must
    /// equal.
    fn dense(node: &Node, x: &Tensor, gates: &Tensor) -> Result<Tensor> {
        let ex = node.child("experts")?;
        let e = ex
            .layer_as::<Experts>()
            .ok_or(Error::Config("no experts".into()))?;
        let mut y = x.f_zeros_like().ctx("t")?;
        for i in 0..4 {
            let out = e.expert(ex, i, x)?;
            y += out * gates.select(1, i).unsqueeze(1);
        }
        Ok(y)
    }

    #[test]
    fn the_chosen_experts_equal_all_experts_weighted_by_the_gates() -> Result<()> {
        for (order, act) in [
            (
                RouteOrder::SoftmaxThenTopK,
                ExpertActivation::Gated(Activation::Silu),
            ),
            (
                RouteOrder::TopKThenSoftmax,
                ExpertActivation::ClampedSwiglu {
                    alpha: 1.702,
                    limit: 0.3,
                },
            ),
        ] {
            let node = moe(order, act)?;
            let x = Tensor::randn([3, 5, 6], (Kind::Float, tch::Device::Cpu));
            let xn = NamedTensor::wrap(x.shallow_clone(), &["batch", "seq", "embedding"])?;
            let (y, routers) =
                collect_router_logits(|| node.forward(xn.clone(), &SideInputs::new()));
            let y = y?.into_tensor()?;
            assert_eq!(routers.len(), 1);
            let gates = node
                .child("router")?
                .forward(xn, &SideInputs::new())?
                .into_tensor()?
                .with_name_order(&["batch".into(), "seq".into(), EXPERTS.into()])?;
            let g = gates.tensor().reshape([15, 4]);
            // Two experts per token, their weights summing to 1.
            let chosen = g.ne(0.0).sum_dim_intlist(1, false, Kind::Int64);
            assert_eq!(
                Vec::<i64>::try_from(&chosen).map_err(|e| Error::Config(e.to_string()))?,
                vec![2; 15]
            );
            let sums = g.sum_dim_intlist(1, false, Kind::Float);
            assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-6);
            let want = dense(&node, &x.reshape([15, 6]), &g)?;
            let got = y.with_name_order(&["batch".into(), "seq".into(), "embedding".into()])?;
            let diff = (got.tensor().reshape([15, 6]) - want)
                .abs()
                .max()
                .double_value(&[]);
            assert!(diff < 1e-6, "{order:?}: {diff}");
        }
        Ok(())
    }

    #[test]
    fn one_expert_is_reached_through_its_child() -> Result<()> {
        let node = moe(
            RouteOrder::SoftmaxThenTopK,
            ExpertActivation::Gated(Activation::Silu),
        )?;
        let x = Tensor::randn([2, 5, 6], (Kind::Float, tch::Device::Cpu));
        let xn = NamedTensor::wrap(x.shallow_clone(), &["batch", "seq", "embedding"])?;
        let gates = node
            .child("router")?
            .forward(xn.clone(), &SideInputs::new())?
            .into_tensor()?
            .with_name_order(&["batch".into(), "seq".into(), EXPERTS.into()])?;
        let g = gates.tensor().reshape([10, 4]);
        // Expert 1 knocked out: its child scales its output by 0.
        let experts = node
            .child("experts")?
            .clone()
            .with_child("1", Node::new(crate::layers::misc::Rescale { by: 0.0 }));
        let knocked = node.clone().with_child("experts", experts);
        let y = knocked
            .forward(xn, &SideInputs::new())?
            .into_tensor()?
            .with_name_order(&["batch".into(), "seq".into(), "embedding".into()])?;
        let mask = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 1.0]);
        let want = dense(&node, &x.reshape([10, 6]), &(&g * mask))?;
        let diff = (y.tensor().reshape([10, 6]) - want)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
        // A child that changes the shape is refused, naming the expert.
        let experts = node.child("experts")?.clone().with_child(
            "2",
            Node::new(crate::layers::misc::RenameAxes {
                rename: [(EXPERT_TOKENS.to_string(), "t".to_string())]
                    .into_iter()
                    .collect(),
            }),
        );
        let bad = node.clone().with_child("experts", experts);
        let xn = NamedTensor::wrap(x, &["batch", "seq", "embedding"])?;
        let e = bad
            .forward(xn, &SideInputs::new())
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("expert 2's child returned")));
        Ok(())
    }

    #[test]
    fn the_memory_model_counts_the_chosen_experts_activations() -> Result<()> {
        let node = moe(
            RouteOrder::SoftmaxThenTopK,
            ExpertActivation::Gated(Activation::Silu),
        )?;
        let x = Tensor::zeros([2, 8, 6], (Kind::Float, tch::Device::Cpu));
        let xn = NamedTensor::wrap(x, &["batch", "seq", "embedding"])?;
        let (y, trace) = crate::tree::trace_leaf_outputs(|| node.forward(xn, &SideInputs::new()));
        y?;
        let inner: Vec<_> = trace.iter().filter(|r| r.0 == "Experts (chosen)").collect();
        // 16 tokens x 2 experts x (2 x 6 + 3 x 5).
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].1, 16 * 2 * (2 * 6 + 3 * 5));
        Ok(())
    }
}
