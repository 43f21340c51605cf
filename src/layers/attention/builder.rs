//! A builder for self-attention from combinators: projections, RoPE, the attention
//! sublayers and the output projection.

use super::Attention;
use crate::base::{Error, Result};
use crate::layers::grouping::Sequential;
use crate::layers::linear::{AddBias, Linear};
use crate::layers::masks::{ApplyCausalAttentionMask, ApplyCausalSlidingWindowAttentionMask};
use crate::layers::misc::{ContractTogether, RenameAxes, Rescale, Softmax, SoftmaxWithSink};
use crate::layers::rope::{ApplyRoPE, RopeScaling};
use crate::layers::Axes;
use crate::tree::{Node, Scope};
use serde::{Deserialize, Serialize};

/// Which mask a built attention layer applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionMask {
    None,
    Causal,
    SlidingWindow(i64),
}

/// A builder for multi-head, grouped-query or multi-query self-attention over `seq`, from
/// combinators: `Sequential[attention: Attention, output: Linear (+ AddBias)]`. Parameter
/// labels are tree paths under the scope (`attention.input_to_query.linear.weights`,
/// `output.linear.weights`).
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
    /// Rotate adjacent pairs of dims (GLM-4) instead of the two halves.
    pub rope_interleaved: bool,
    /// Query scale; default `1/sqrt(head_dim)`.
    pub query_scale: Option<f64>,
    pub qkv_bias: bool,
    pub output_bias: bool,
    /// RMS-normalize queries and keys over `projection` after the projection (Gemma 3's
    /// QK-norm) with this epsilon.
    pub qk_norm_eps: Option<f64>,
    /// The QK-norm normalizes over all of the projection's output axes (the heads too: OLMo 2)
    /// instead of over `projection` alone.
    pub qk_norm_whole: bool,
    /// The QK-norm is a LayerNorm (the mean subtracted; Phi-2, Cohere) instead of an RMS norm.
    pub qk_norm_mean: bool,
    /// With `qk_norm_mean`, the LayerNorm has a bias (Phi-2; Cohere's has none).
    pub qk_norm_bias: bool,
    /// With `qk_norm_mean`, each head has its own scale (Cohere): the norm standardizes over
    /// `projection` and scales over all the projection's output axes.
    pub qk_norm_per_head: bool,
    /// Soft-cap the attention logits at this value (Gemma 2).
    pub logit_softcap: Option<f64>,
    /// A learned logit per query head joins the softmax (gpt-oss's attention sinks).
    pub sinks: bool,
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
            rope_interleaved: false,
            query_scale: None,
            qkv_bias: false,
            output_bias: false,
            qk_norm_eps: None,
            qk_norm_whole: false,
            qk_norm_mean: false,
            qk_norm_bias: false,
            qk_norm_per_head: false,
            logit_softcap: None,
            sinks: false,
        }
    }

    fn axes(pairs: &[(&str, i64)]) -> Axes {
        pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    /// Builds the attention block.
    pub fn build(&self, scope: &Scope<'_>) -> Result<Node> {
        super::check_heads(self.num_heads, self.num_kv_heads)
            .map_err(|m| Error::Config(format!("attention: {m}")))?;
        let emb = Self::axes(&[(&self.embedding_axis, self.d_model)]);
        let (q_axes, kv_axes) = self.head_axes();
        let mut q = self.projection(scope, "query", &emb, &q_axes)?;
        self.push_qk_norm(scope, &mut q, "query", &q_axes)?;
        self.push_rope(&mut q);
        let scale = self
            .query_scale
            .unwrap_or(1.0 / (self.head_dim as f64).sqrt());
        q.push(("scale".into(), Node::new(Rescale { by: scale })));
        let mut k = self.projection(scope, "key", &emb, &kv_axes)?;
        self.push_qk_norm(scope, &mut k, "key", &kv_axes)?;
        self.push_rope(&mut k);
        k.push(("rename".into(), rename_seq()));
        let mut v = self.projection(scope, "value", &emb, &kv_axes)?;
        v.push(("rename".into(), rename_seq()));
        let qk = self.query_key_to_attn(scope, &q_axes)?;
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
        let out = self.output(scope, q_axes, emb)?;
        Ok(Sequential::named(vec![
            ("attention".into(), attn),
            ("output".into(), out),
        ]))
    }

    /// The axes of the queries and of the keys and values: `heads` and `projection`, or with
    /// grouped-query attention `kv_heads` (and, for queries, `q_rep`) and `projection`.
    fn head_axes(&self) -> (Axes, Axes) {
        let gqa = self.num_kv_heads != self.num_heads;
        if gqa {
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
        }
    }

    /// The scope of the `query`, `key` or `value` projection. Labels follow the tree
    /// (`attention.input_to_query.linear.weights`); init names keep the projection's name
    /// (`query.linear.weights`).
    fn sub_scope<'a>(scope: &Scope<'a>, name: &str) -> Scope<'a> {
        let slot = match name {
            "query" => "input_to_query",
            "key" => "input_to_key",
            _ => "input_to_value",
        };
        scope.pp_as(&format!("attention.{slot}"), name)
    }

    /// The layers of one input projection: a Linear from `emb` to `out`, and its bias when
    /// `qkv_bias` is set.
    fn projection(
        &self,
        scope: &Scope<'_>,
        name: &str,
        emb: &Axes,
        out: &Axes,
    ) -> Result<Vec<(String, Node)>> {
        let s = Self::sub_scope(scope, name);
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
    }

    /// Appends RoPE over `projection` to a projection's layers, when RoPE is enabled.
    fn push_rope(&self, v: &mut Vec<(String, Node)>) {
        if let Some(w) = self.rope_wavelength {
            let mut r = ApplyRoPE::new("projection");
            r.max_wavelength = w;
            r.scaling = self.rope_scaling.clone();
            r.rotary_dims = self.rotary_dims;
            r.interleaved = self.rope_interleaved;
            v.push(("rope".to_string(), Node::new(r)));
        }
    }

    /// Appends the QK-norm (an RMS norm over `projection`, or over all the projection's
    /// output axes `whole` with `qk_norm_whole`; a LayerNorm with `qk_norm_mean`, its scale
    /// per head with `qk_norm_per_head`) to the `query` or `key` projection's layers, when
    /// `qk_norm_eps` is set.
    fn push_qk_norm(
        &self,
        scope: &Scope<'_>,
        v: &mut Vec<(String, Node)>,
        name: &str,
        whole: &Axes,
    ) -> Result<()> {
        let Some(eps) = self.qk_norm_eps else {
            return Ok(());
        };
        let axes: Axes = match self.qk_norm_whole {
            true => whole.clone(),
            false => [("projection".to_string(), self.head_dim)]
                .into_iter()
                .collect(),
        };
        let s = Self::sub_scope(scope, name).pp("norm");
        let norm = if self.qk_norm_mean {
            let over: Vec<String> = axes.keys().cloned().collect();
            let scaled = match self.qk_norm_per_head {
                true => whole.clone(),
                false => axes,
            };
            crate::layers::norms::layer_norm_over(&s, scaled, over, eps, self.qk_norm_bias)?
        } else {
            crate::layers::norms::rms_layer_norm(&s, axes, eps)?
        };
        v.push(("norm".to_string(), norm));
        Ok(())
    }

    /// The layers from queries and keys to attention weights: logits, the optional soft-cap,
    /// the mask, and the softmax over `kv_seq`.
    fn query_key_to_attn(&self, scope: &Scope<'_>, q_axes: &Axes) -> Result<Vec<(String, Node)>> {
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
        let softmax = if self.sinks {
            let mut head_axes = q_axes.clone();
            head_axes.shift_remove("projection");
            let layer = SoftmaxWithSink {
                axis: "kv_seq".into(),
                head_axes,
            };
            Node::build(layer, &scope.pp("attention.query_key_to_attn.softmax"))?
        } else {
            Node::new(Softmax {
                axes: vec!["kv_seq".into()],
            })
        };
        qk.push(("softmax".into(), softmax));
        Ok(qk)
    }

    /// The output projection from the query axes back to `emb`: a Linear, and its bias when
    /// `output_bias` is set.
    fn output(&self, scope: &Scope<'_>, q_axes: Axes, emb: Axes) -> Result<Node> {
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
        Ok(Sequential::named(out))
    }
}

/// A layer that renames `seq` to `kv_seq` (on keys and values).
fn rename_seq() -> Node {
    Node::new(RenameAxes {
        rename: [("seq".to_string(), "kv_seq".to_string())]
            .into_iter()
            .collect(),
    })
}
