//! `Attention`: a combinator of five swappable sublayers (Penzai's `pz.nn.Attention`):
//!
//! ```text
//! q = input_to_query(x); k = input_to_key(x); v = input_to_value(x)
//! attn = query_key_to_attn((q, k))        # e.g. Sequential[ContractTogether(projection),
//!                                         #   ApplyCausalAttentionMask, Softmax(kv_seq)]
//! out  = attn_value_to_output((attn, v))  # e.g. ContractTogether(kv_seq)
//! ```
//!
//! When `fused` is on (the default) and the two attention sublayers have exactly that standard
//! shape (with a causal mask, a causal sliding-window mask, or no mask), the attention runs
//! through libtorch's fused `scaled_dot_product_attention` kernel (grouped-query attention
//! included, as query-only head axes such as `q_rep`); any other composition (soft-capping, an
//! explicit mask, a custom layer) runs the sublayers one by one. Both give the same numbers
//! (tested). Query scaling belongs to `input_to_query` (a `Rescale`), so the kernel runs with
//! scale 1.

use crate::combinators::Sequential;
use crate::error::{Error, Result, TorchContext};
use crate::layers::linear::{AddBias, Linear};
use crate::layers::masks::{
    causal_mask, ApplyCausalAttentionMask, ApplyCausalSlidingWindowAttentionMask,
};
use crate::layers::misc::{ContractTogether, RenameAxes, Rescale, Softmax};
use crate::layers::rope::{ApplyRoPE, RopeScaling};
use crate::layers::Axes;
use crate::named::NamedTensor;
use crate::tree::{Layer, Node, Scope, SideInputs, Value};
use serde::{Deserialize, Serialize};
use tch::Tensor;

static FUSED_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many attention calls in this process ran through the fused kernel (for tests and
/// diagnostics).
pub fn fused_call_count() -> u64 {
    FUSED_CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

fn yes() -> bool {
    true
}

/// The attention combinator. Children: `input_to_query`, `input_to_key`, `input_to_value`,
/// `query_key_to_attn`, `attn_value_to_output`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Attention {
    /// Use the fused kernel when the sublayers have the standard shape.
    #[serde(default = "yes")]
    pub fused: bool,
}

impl Default for Attention {
    fn default() -> Self {
        Attention { fused: true }
    }
}

impl Attention {
    /// Whether `node` (an Attention node) has the standard sublayer shape that the fused
    /// kernel implements (inputs permitting).
    pub fn is_fusable(node: &Node) -> Result<bool> {
        Ok(node
            .layer_as::<Attention>()
            .map(|a| a.fused)
            .unwrap_or(false)
            && FusedPlan::recognize(node)?.is_some())
    }

    /// Assembles an attention node from its five sublayers.
    pub fn build(q: Node, k: Node, v: Node, qk: Node, av: Node) -> Node {
        Node::new(Attention::default())
            .with_child("input_to_query", q)
            .with_child("input_to_key", k)
            .with_child("input_to_value", v)
            .with_child("query_key_to_attn", qk)
            .with_child("attn_value_to_output", av)
    }
}

impl Layer for Attention {
    crate::layer_common!("Attention");
    fn summary(&self) -> String {
        if self.fused {
            String::new()
        } else {
            "unfused".into()
        }
    }
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let q = node.call_child("input_to_query", x.clone(), side)?;
        let k = node.call_child("input_to_key", x.clone(), side)?;
        let v = node.call_child("input_to_value", x, side)?;
        if self.fused {
            if let Some(plan) = FusedPlan::recognize(node)? {
                if let Some(out) = plan.run(&q, &k, &v, side)? {
                    FUSED_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    crate::tree::trace_record("Attention", out.tensor().numel() as i64, out.kind());
                    return Ok(out.into());
                }
            }
        }
        let attn = node.call_child("query_key_to_attn", Value::Tuple(vec![q, k]), side)?;
        node.call_child("attn_value_to_output", Value::Tuple(vec![attn, v]), side)
    }
}

enum MaskKind {
    None,
    Causal { q_axis: String },
    Sliding { q_axis: String, window: i64 },
}

/// What the fused kernel needs to know, read off the standard sublayer shapes.
struct FusedPlan {
    proj: String,
    kv: String,
    mask: MaskKind,
}

impl FusedPlan {
    fn recognize(node: &Node) -> Result<Option<FusedPlan>> {
        let qk = node.child("query_key_to_attn")?;
        let av = node.child("attn_value_to_output")?;
        if qk.kind() != "Sequential" || qk.layer_as::<Sequential>().is_none() {
            return Ok(None);
        }
        let cs = qk.children();
        if cs.len() < 2 || cs.len() > 3 {
            return Ok(None);
        }
        let proj = match cs[0].1.layer_as::<ContractTogether>() {
            Some(c) if c.over.len() == 1 => c.over[0].clone(),
            _ => return Ok(None),
        };
        let kv = match cs[cs.len() - 1].1.layer_as::<Softmax>() {
            Some(s) if s.axes.len() == 1 => s.axes[0].clone(),
            _ => return Ok(None),
        };
        let mask = if cs.len() == 3 {
            let m = &cs[1].1;
            if let Some(c) = m.layer_as::<ApplyCausalAttentionMask>() {
                if c.kv_axis != kv {
                    return Ok(None);
                }
                MaskKind::Causal {
                    q_axis: c.query_axis.clone(),
                }
            } else if let Some(c) = m.layer_as::<ApplyCausalSlidingWindowAttentionMask>() {
                if c.kv_axis != kv || c.window < 1 {
                    return Ok(None);
                }
                MaskKind::Sliding {
                    q_axis: c.query_axis.clone(),
                    window: c.window,
                }
            } else {
                return Ok(None);
            }
        } else {
            MaskKind::None
        };
        match av.layer_as::<ContractTogether>() {
            Some(c) if c.over == [kv.clone()] => {}
            _ => return Ok(None),
        }
        Ok(Some(FusedPlan { proj, kv, mask }))
    }

    /// Runs the fused kernel, or returns None when the inputs do not fit it (the caller then
    /// runs the explicit composition).
    fn run(
        &self,
        q: &Value,
        k: &Value,
        v: &Value,
        side: &SideInputs,
    ) -> Result<Option<NamedTensor>> {
        let (q, k, v) = match (q, k, v) {
            (Value::Tensor(q), Value::Tensor(k), Value::Tensor(v)) => (q, k, v),
            _ => return Ok(None),
        };
        if q.positional_ndim() + k.positional_ndim() + v.positional_ndim() != 0
            || q.kind() != k.kind()
            || q.kind() != v.kind()
            || !q.has(&self.proj)
            || !k.has(&self.proj)
            || !k.has(&self.kv)
            || !v.has(&self.kv)
            || q.has(&self.kv)
        {
            return Ok(None);
        }
        let shared: Vec<String> = k
            .names()
            .iter()
            .filter(|n| **n != self.kv && **n != self.proj)
            .cloned()
            .collect();
        if shared.iter().any(|n| {
            !q.has(n)
                || !v.has(n)
                || q.size_of(n).ok() != k.size_of(n).ok()
                || v.size_of(n).ok() != k.size_of(n).ok()
        }) {
            return Ok(None);
        }
        let q_only: Vec<String> = q
            .names()
            .iter()
            .filter(|n| !shared.contains(n) && **n != self.proj)
            .cloned()
            .collect();
        let v_only: Vec<String> = v
            .names()
            .iter()
            .filter(|n| !shared.contains(n) && **n != self.kv)
            .cloned()
            .collect();
        if v_only.iter().any(|n| q_only.contains(n)) {
            return Ok(None);
        }
        let (seq_axes, rep): (Vec<String>, Vec<String>) = match &self.mask {
            MaskKind::None => (q_only.clone(), vec![]),
            MaskKind::Causal { q_axis } | MaskKind::Sliding { q_axis, .. } => {
                if !q_only.contains(q_axis) {
                    return Ok(None);
                }
                (
                    vec![q_axis.clone()],
                    q_only.iter().filter(|n| *n != q_axis).cloned().collect(),
                )
            }
        };
        let size = |t: &NamedTensor, names: &[String]| -> Result<Vec<i64>> {
            names.iter().map(|n| t.size_of(n)).collect()
        };
        let hs: i64 = size(k, &shared)?.iter().product();
        let r: i64 = size(q, &rep)?.iter().product();
        let s: i64 = size(q, &seq_axes)?.iter().product();
        let skv = k.size_of(&self.kv)?;
        let d = q.size_of(&self.proj)?;
        let dv_sizes = size(v, &v_only)?;
        let dv: i64 = dv_sizes.iter().product();

        let meta = crate::backend::is_meta(q.tensor());
        let mut is_causal = false;
        let mut mask: Option<Tensor> = None;
        match &self.mask {
            MaskKind::None => {}
            MaskKind::Causal { .. } | MaskKind::Sliding { .. } if meta => {}
            MaskKind::Causal { q_axis } | MaskKind::Sliding { q_axis, .. } => {
                let window = match &self.mask {
                    MaskKind::Sliding { window, .. } => Some(*window),
                    _ => None,
                };
                let positioned = side.tensor("token_positions")?.is_some()
                    || side.tensor("kv_token_positions")?.is_some();
                if window.is_none() && !positioned && s == skv {
                    is_causal = true;
                } else {
                    let m = causal_mask(side, q_axis, &self.kv, s, skv, window, q.tensor())?;
                    if m.names().len() != 2 {
                        return Ok(None); // batch-dependent positions: explicit path
                    }
                    let m = m.with_name_order(&[q_axis.clone(), self.kv.clone()])?;
                    mask = Some(m.tensor().shallow_clone());
                }
            }
        }
        let mut qo = shared.clone();
        qo.extend(rep.iter().cloned());
        qo.extend(seq_axes.iter().cloned());
        qo.push(self.proj.clone());
        let qt = q
            .with_name_order(&qo)?
            .tensor()
            .f_reshape([1, hs * r, s, d])
            .ctx("attention: query")?;
        let mut ko = shared.clone();
        ko.push(self.kv.clone());
        ko.push(self.proj.clone());
        let kt = k
            .with_name_order(&ko)?
            .tensor()
            .f_reshape([1, hs, skv, d])
            .ctx("attention: key")?;
        let mut vo = shared.clone();
        vo.push(self.kv.clone());
        vo.extend(v_only.iter().cloned());
        let vt = v
            .with_name_order(&vo)?
            .tensor()
            .f_reshape([1, hs, skv, dv])
            .ctx("attention: value")?;
        let out = if meta {
            // Shape inference: libtorch has no meta kernel for the fused attention, and the
            // output shape is known.
            crate::backend::meta_empty(&[1, hs * r, s, dv], q.kind())?
        } else {
            Tensor::f_scaled_dot_product_attention(
                &qt,
                &kt,
                &vt,
                mask.as_ref(),
                0.0,
                is_causal,
                Some(1.0),
                r > 1,
            )
            .ctx("attention: scaled_dot_product_attention")?
        };
        let mut shape = size(k, &shared)?;
        shape.extend(size(q, &rep)?);
        shape.extend(size(q, &seq_axes)?);
        shape.extend(dv_sizes);
        let out = out.f_reshape(shape.as_slice()).ctx("attention: output")?;
        let mut names = shared;
        names.extend(rep);
        names.extend(seq_axes);
        names.extend(v_only);
        Ok(Some(NamedTensor::from_parts(out, names)?))
    }
}

/// Which mask a built attention layer applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionMask {
    None,
    Causal,
    SlidingWindow(i64),
}

/// A builder for multi-head, grouped-query or multi-query self-attention over `seq`, from
/// combinators: `Sequential[attention: Attention, output: Linear (+ AddBias)]`.
///
/// Axes: the input has `embedding_axis` (and `seq`, and any batch axes). With
/// `num_kv_heads == num_heads` the heads axis is `heads`; otherwise keys and values have
/// `kv_heads` and queries `kv_heads` and `q_rep` (grouped-query attention).
#[derive(Debug, Clone)]
pub struct SelfAttentionConfig {
    pub embedding_axis: String,
    pub d_model: i64,
    pub num_heads: i64,
    pub num_kv_heads: i64,
    pub head_dim: i64,
    pub mask: AttentionMask,
    /// RoPE wavelength; `None` disables RoPE.
    pub rope_wavelength: Option<f64>,
    pub rope_scaling: Option<RopeScaling>,
    pub rotary_dims: Option<i64>,
    /// Query scale; default `1/sqrt(head_dim)`.
    pub query_scale: Option<f64>,
    pub qkv_bias: bool,
    pub output_bias: bool,
    /// RMS-normalize queries and keys over `projection` after the projection (Gemma 3's
    /// QK-norm) with this epsilon.
    pub qk_norm_eps: Option<f64>,
    /// Soft-cap the attention logits at this value (Gemma 2).
    pub logit_softcap: Option<f64>,
}

impl SelfAttentionConfig {
    /// Causal multi-head attention with RoPE and the usual defaults.
    pub fn new(d_model: i64, num_heads: i64, head_dim: i64) -> Self {
        SelfAttentionConfig {
            embedding_axis: "embedding".into(),
            d_model,
            num_heads,
            num_kv_heads: num_heads,
            head_dim,
            mask: AttentionMask::Causal,
            rope_wavelength: Some(10_000.0),
            rope_scaling: None,
            rotary_dims: None,
            query_scale: None,
            qkv_bias: false,
            output_bias: false,
            qk_norm_eps: None,
            logit_softcap: None,
        }
    }

    fn axes(pairs: &[(&str, i64)]) -> Axes {
        pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    /// Builds the attention block.
    pub fn build(&self, scope: &Scope<'_>) -> Result<Node> {
        if self.num_kv_heads < 1 || self.num_heads % self.num_kv_heads != 0 {
            return Err(Error::Config(format!(
                "attention: num_heads ({}) must be a multiple of num_kv_heads ({})",
                self.num_heads, self.num_kv_heads
            )));
        }
        let gqa = self.num_kv_heads != self.num_heads;
        let emb = Self::axes(&[(&self.embedding_axis, self.d_model)]);
        let (q_axes, kv_axes) = if gqa {
            (
                Self::axes(&[
                    ("kv_heads", self.num_kv_heads),
                    ("q_rep", self.num_heads / self.num_kv_heads),
                    ("projection", self.head_dim),
                ]),
                Self::axes(&[
                    ("kv_heads", self.num_kv_heads),
                    ("projection", self.head_dim),
                ]),
            )
        } else {
            (
                Self::axes(&[("heads", self.num_heads), ("projection", self.head_dim)]),
                Self::axes(&[("heads", self.num_heads), ("projection", self.head_dim)]),
            )
        };
        let proj = |name: &str, out: &Axes| -> Result<Vec<(String, Node)>> {
            let s = scope.pp(name);
            let mut v = vec![(
                "linear".to_string(),
                Linear::new(emb.clone(), out.clone()).build(&s.pp("linear"), None)?,
            )];
            if self.qkv_bias {
                v.push((
                    "bias".to_string(),
                    AddBias { axes: out.clone() }.build(&s.pp("bias"))?,
                ));
            }
            Ok(v)
        };
        let rope = |v: &mut Vec<(String, Node)>| {
            if let Some(w) = self.rope_wavelength {
                let mut r = ApplyRoPE::new("projection");
                r.max_wavelength = w;
                r.scaling = self.rope_scaling.clone();
                r.rotary_dims = self.rotary_dims;
                v.push(("rope".to_string(), Node::new(r)));
            }
        };
        let qk_norm = |v: &mut Vec<(String, Node)>, name: &str| -> Result<()> {
            if let Some(eps) = self.qk_norm_eps {
                let axes: Axes = [("projection".to_string(), self.head_dim)]
                    .into_iter()
                    .collect();
                v.push((
                    "norm".to_string(),
                    crate::layers::norms::rms_layer_norm(&scope.pp(name).pp("norm"), axes, eps)?,
                ));
            }
            Ok(())
        };
        let mut q = proj("query", &q_axes)?;
        qk_norm(&mut q, "query")?;
        rope(&mut q);
        let scale = self
            .query_scale
            .unwrap_or(1.0 / (self.head_dim as f64).sqrt());
        q.push(("scale".into(), Node::new(Rescale { by: scale })));
        let rename = || {
            Node::new(RenameAxes {
                rename: [("seq".to_string(), "kv_seq".to_string())]
                    .into_iter()
                    .collect(),
            })
        };
        let mut k = proj("key", &kv_axes)?;
        qk_norm(&mut k, "key")?;
        rope(&mut k);
        k.push(("rename".into(), rename()));
        let mut v = proj("value", &kv_axes)?;
        v.push(("rename".into(), rename()));
        let mut qk = vec![(
            "logits".to_string(),
            Node::new(ContractTogether {
                over: vec!["projection".into()],
            }),
        )];
        if let Some(cap) = self.logit_softcap {
            qk.push((
                "softcap".into(),
                Node::new(crate::layers::misc::TanhSoftCap { cap }),
            ));
        }
        match self.mask {
            AttentionMask::None => {}
            AttentionMask::Causal => qk.push((
                "mask".into(),
                Node::new(ApplyCausalAttentionMask::default()),
            )),
            AttentionMask::SlidingWindow(w) => qk.push((
                "mask".into(),
                Node::new(ApplyCausalSlidingWindowAttentionMask::new(w)),
            )),
        }
        qk.push((
            "softmax".into(),
            Node::new(Softmax {
                axes: vec!["kv_seq".into()],
            }),
        ));
        let av = Node::new(ContractTogether {
            over: vec!["kv_seq".into()],
        });
        let attn = Attention::build(
            Sequential::named(q),
            Sequential::named(k),
            Sequential::named(v),
            Sequential::named(qk),
            av,
        );
        let out_s = scope.pp("output");
        let mut out = vec![(
            "linear".to_string(),
            Linear::new(q_axes, emb.clone()).build(&out_s.pp("linear"), None)?,
        )];
        if self.output_bias {
            out.push((
                "bias".to_string(),
                AddBias { axes: emb }.build(&out_s.pp("bias"))?,
            ));
        }
        Ok(Sequential::named(vec![
            ("attention".into(), attn),
            ("output".into(), Sequential::named(out)),
        ]))
    }
}
