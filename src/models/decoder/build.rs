//! Building the decoder tree (see the module docs for its shape and naming).

use super::{Decoder, DecoderConfig, MoeConfig, NormSite, Projection, Role};
use crate::base::{Error, Result};
use crate::layers::attention::{AttentionMask, SelfAttentionConfig};
use crate::layers::embedding::EmbeddingTable;
use crate::layers::grouping::{
    BranchAndAddTogether, BranchAndMultiplyTogether, Residual, Sequential,
};
use crate::layers::linear::{affine, AddBias, Linear};
use crate::layers::misc::{Dropout, Elementwise, Identity, Rescale, TanhSoftCap};
use crate::layers::moe::{Experts, SparseMoE, TopKRouting, EXPERTS};
use crate::layers::norms::{layer_norm, layer_norm_over, rms_layer_norm};
use crate::layers::Axes;
use crate::tree::{Node, Scope};

fn ax(pairs: &[(&str, i64)]) -> Axes {
    pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

/// The roles of the parameters built so far.
#[derive(Default)]
struct Parts(Vec<(String, Role)>);

impl Parts {
    /// Records every parameter of `node` (`bias` ones as biases) under `role`.
    fn record(&mut self, node: &Node, role: impl Fn(bool) -> Role) {
        for (_, name, e) in node.all_param_entries() {
            let label = e.label().to_string();
            if !self.0.iter().any(|(l, _)| *l == label) {
                self.0.push((label, role(name == "bias")));
            }
        }
    }

    /// Records the parameter `name` of `node` under `role`.
    fn record_param(&mut self, node: &Node, name: &str, role: Role) {
        if let Ok(e) = node.param_entry(name) {
            let label = e.label().to_string();
            if !self.0.iter().any(|(l, _)| *l == label) {
                self.0.push((label, role));
            }
        }
    }

    /// Records the parameters at `path` under `node`, if there is such a node.
    fn record_at(&mut self, node: &Node, path: &[&str], role: impl Fn(bool) -> Role) {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        if let Ok(n) = node.get(&path) {
            self.record(n, role);
        }
    }
}

impl DecoderConfig {
    fn emb(&self) -> Axes {
        ax(&[(&self.embedding_axis, self.d_model)])
    }

    fn norm(&self, s: &Scope<'_>, site: NormSite, parts: &mut Parts) -> Result<Node> {
        let n = if self.layer_norm && self.layer_norm_bias {
            layer_norm(s, self.emb(), self.norm_eps)?
        } else if self.layer_norm {
            let over = vec![self.embedding_axis.clone()];
            layer_norm_over(s, self.emb(), over, self.norm_eps, false)?
        } else {
            rms_layer_norm(s, self.emb(), self.norm_eps)?
        };
        parts.record(&n, |bias| Role::Norm { site, bias });
        Ok(n)
    }

    fn linear(&self, s: &Scope<'_>, i: &Axes, o: &Axes, bias: bool) -> Result<Node> {
        if bias {
            affine(s, i.clone(), o.clone())
        } else {
            Linear::new(i.clone(), o.clone()).build(s, None)
        }
    }

    /// The MLP of layer `layer` under `s`. The gated form keeps the init names `gate` and `up`
    /// for its two projections.
    fn mlp(&self, s: &Scope<'_>, layer: usize, parts: &mut Parts) -> Result<Node> {
        if let Some(m) = self
            .moe
            .as_ref()
            .filter(|m| m.layers.get(layer) == Some(&true))
        {
            return self.experts(s, layer, m, parts);
        }
        let (emb, hid) = (self.emb(), ax(&[(&self.neurons_axis, self.mlp_hidden)]));
        let act = || {
            Node::new(Elementwise {
                function: self.activation,
            })
        };
        let mut proj = |which: Projection, s: &Scope<'_>, i: &Axes, o: &Axes| -> Result<Node> {
            let n = self.linear(s, i, o, self.mlp_bias)?;
            parts.record(&n, |bias| Role::Projection { layer, which, bias });
            Ok(n)
        };
        if self.gated_mlp {
            let gate = proj(
                Projection::Gate,
                &s.pp_as("gate_up.0.linear", "gate"),
                &emb,
                &hid,
            )?;
            let up = proj(Projection::Up, &s.pp_as("gate_up.1", "up"), &emb, &hid)?;
            let down = proj(Projection::Down, &s.pp("down"), &hid, &emb)?;
            let gate = Sequential::named(vec![("linear".into(), gate), ("act".into(), act())]);
            Ok(Sequential::named(vec![
                (
                    "gate_up".into(),
                    BranchAndMultiplyTogether::build(vec![gate, up]),
                ),
                ("down".into(), down),
            ]))
        } else {
            let up = proj(Projection::Up, &s.pp("up"), &emb, &hid)?;
            let down = proj(Projection::Down, &s.pp("down"), &hid, &emb)?;
            Ok(Sequential::named(vec![
                ("up".into(), up),
                ("act".into(), act()),
                ("down".into(), down),
            ]))
        }
    }

    /// The mixture of experts of layer `layer` under `s`: `SparseMoE[router: Sequential[linear,
    /// route], experts]`.
    fn experts(
        &self,
        s: &Scope<'_>,
        layer: usize,
        m: &MoeConfig,
        parts: &mut Parts,
    ) -> Result<Node> {
        let experts_axis = ax(&[(EXPERTS, m.num_experts)]);
        let linear = self.linear(
            &s.pp("router.linear"),
            &self.emb(),
            &experts_axis,
            m.router_bias,
        )?;
        parts.record(&linear, |bias| Role::Router { layer, bias });
        let route = Node::new(TopKRouting {
            num_experts: m.num_experts,
            top_k: m.top_k,
            order: m.order,
            renormalize: m.renormalize,
            aux_loss_coef: m.aux_loss_coef,
        });
        let router = Sequential::named(vec![("linear".into(), linear), ("route".into(), route)]);
        let layer_ = Experts {
            num_experts: m.num_experts,
            embedding_axis: self.embedding_axis.clone(),
            d_model: self.d_model,
            neurons_axis: self.neurons_axis.clone(),
            hidden: m.hidden,
            activation: m.activation,
            bias: m.expert_bias,
        };
        let experts = layer_.build(&s.pp("experts"))?;
        for (name, _) in experts.param_entries().to_vec() {
            let (base, bias) = match name.strip_suffix("_bias") {
                Some(b) => (b.to_string(), true),
                None => (name.clone(), false),
            };
            let which = match base.as_str() {
                "gate" => Projection::Gate,
                "up" => Projection::Up,
                _ => Projection::Down,
            };
            parts.record_param(&experts, &name, Role::Experts { layer, which, bias });
        }
        Ok(SparseMoE::build(router, experts))
    }

    /// The attention block of layer `layer` under `s`.
    fn attention(&self, s: &Scope<'_>, layer: usize, parts: &mut Parts) -> Result<Node> {
        let la = self
            .layers
            .get(layer)
            .ok_or_else(|| Error::Config(format!("decoder: no settings for layer {layer}")))?;
        let mut c = SelfAttentionConfig::new(self.d_model, self.num_heads, self.head_dim);
        c.embedding_axis = self.embedding_axis.clone();
        c.num_kv_heads = self.num_kv_heads;
        c.rope_wavelength = la.rope.then_some(la.rope_theta);
        c.rope_scaling = la.rope_scaling.clone();
        c.rotary_dims = self.rotary_dims;
        c.rope_interleaved = self.rope_interleaved;
        c.query_scale = self.query_scale;
        c.qkv_bias = self.qkv_bias;
        c.output_bias = self.output_bias;
        c.qk_norm_eps = self.qk_norm.then_some(self.norm_eps);
        c.qk_norm_whole = self.qk_norm_whole;
        c.qk_norm_mean = self.layer_norm;
        c.qk_norm_bias = self.layer_norm_bias;
        c.qk_norm_per_head = self.qk_norm_per_head;
        c.logit_softcap = self.attn_softcap;
        c.sinks = self.attention_sinks;
        if let Some(w) = la.window {
            c.mask = AttentionMask::SlidingWindow(w);
        }
        let n = c.build(s)?;
        let proj = |which| move |bias| Role::Projection { layer, which, bias };
        for (slot, which) in [
            ("input_to_query", Projection::Query),
            ("input_to_key", Projection::Key),
            ("input_to_value", Projection::Value),
        ] {
            parts.record_at(&n, &["attention", slot, "linear"], proj(which));
            parts.record_at(&n, &["attention", slot, "bias"], proj(which));
        }
        parts.record_at(&n, &["output"], proj(Projection::Output));
        parts.record_at(&n, &["attention", "query_key_to_attn", "softmax"], |_| {
            Role::Sinks(layer)
        });
        for (slot, site) in [
            ("input_to_query", NormSite::Query(layer)),
            ("input_to_key", NormSite::Key(layer)),
        ] {
            parts.record_at(&n, &["attention", slot, "norm"], |bias| Role::Norm {
                site,
                bias,
            });
        }
        Ok(n)
    }

    /// One residual branch: `[norm, inner, post_norm?, dropout?]`.
    fn branch(
        &self,
        s: &Scope<'_>,
        name: &str,
        (pre, post): (NormSite, NormSite),
        inner: Node,
        parts: &mut Parts,
    ) -> Result<Node> {
        let mut v = vec![];
        if self.pre_norms {
            v.push(("norm".to_string(), self.norm(&s.pp("norm"), pre, parts)?));
        }
        v.push((name.to_string(), inner));
        if self.sandwich_norms && !self.parallel_residual {
            v.push((
                "post_norm".into(),
                self.norm(&s.pp("post_norm"), post, parts)?,
            ));
        }
        if let Some(by) = self.residual_scale {
            v.push(("residual_scale".into(), Node::new(Rescale { by })));
        }
        if self.dropout > 0.0 {
            v.push(("dropout".into(), Node::new(Dropout::new(self.dropout)?)));
        }
        Ok(Sequential::named(v))
    }

    /// The parallel block with one norm: `x + attn(norm(x)) + mlp(norm(x))`, the norm at the
    /// attention's site.
    fn shared_norm_block(&self, bs: &Scope<'_>, i: usize, parts: &mut Parts) -> Result<Node> {
        let d = bs.pp("delta");
        let norm = self.norm(&d.pp("norm"), NormSite::Attention(i), parts)?;
        let br = d.pp("branches");
        let mut attn = self.attention(&br.pp("attention"), i, parts)?;
        let mut mlp = self.mlp(&br.pp("mlp"), i, parts)?;
        if self.dropout > 0.0 {
            // Dropout at the end of each branch (Phi-2's `resid_pdrop`).
            let drop = |n: Node, name: &str| -> Result<Node> {
                Ok(Sequential::named(vec![
                    (name.to_string(), n),
                    ("dropout".into(), Node::new(Dropout::new(self.dropout)?)),
                ]))
            };
            attn = drop(attn, "attention")?;
            mlp = drop(mlp, "mlp")?;
        }
        let branches = Node::new(BranchAndAddTogether {})
            .with_children(vec![("attention".into(), attn), ("mlp".into(), mlp)]);
        Ok(Node::new(BranchAndAddTogether {}).with_children(vec![
            ("residual".into(), Node::new(Identity {})),
            (
                "delta".into(),
                Sequential::named(vec![("norm".into(), norm), ("branches".into(), branches)]),
            ),
        ]))
    }

    fn block(&self, bs: &Scope<'_>, i: usize, parts: &mut Parts) -> Result<Node> {
        let sites_a = (NormSite::Attention(i), NormSite::AfterAttention(i));
        let sites_m = (NormSite::Mlp(i), NormSite::AfterMlp(i));
        if self.parallel_residual && self.shared_norm {
            return self.shared_norm_block(bs, i, parts);
        }
        if self.parallel_residual {
            let (a, m) = (bs.pp("attention"), bs.pp("mlp"));
            // Norms first, as the serial form builds them.
            let an = self.norm(&a.pp("norm"), sites_a.0, parts)?;
            let attn = self.attention(&a.pp("attention"), i, parts)?;
            let mn = self.norm(&m.pp("norm"), sites_m.0, parts)?;
            let mlp = self.mlp(&m.pp("mlp"), i, parts)?;
            return Ok(Node::new(BranchAndAddTogether {}).with_children(vec![
                ("residual".into(), Node::new(Identity {})),
                (
                    "attention".into(),
                    Sequential::named(vec![("norm".into(), an), ("attention".into(), attn)]),
                ),
                (
                    "mlp".into(),
                    Sequential::named(vec![("norm".into(), mn), ("mlp".into(), mlp)]),
                ),
            ]));
        }
        let (a, m) = (bs.pp("attention").pp("delta"), bs.pp("mlp").pp("delta"));
        let attn = self.attention(&a.pp("attention"), i, parts)?;
        let attn = self.branch(&a, "attention", sites_a, attn, parts)?;
        let mlp = self.mlp(&m.pp("mlp"), i, parts)?;
        let mlp = self.branch(&m, "mlp", sites_m, mlp, parts)?;
        Ok(Sequential::named(vec![
            ("attention".into(), Residual::build(attn)),
            ("mlp".into(), Residual::build(mlp)),
        ]))
    }

    /// Builds the decoder under `scope`.
    pub fn build(&self, scope: &Scope<'_>) -> Result<Decoder> {
        self.check()
            .map_err(|m| Error::Config(format!("decoder: {m}")))?;
        let mut parts = Parts::default();
        let table = EmbeddingTable::build(
            &scope.pp("embed"),
            &self.vocab_axis,
            self.vocab_size,
            self.emb(),
            self.embedding_init,
        )?;
        let embed = table.lookup();
        parts.record(&embed, |_| Role::Embedding);
        let mut top = vec![("embed".to_string(), embed)];
        if let Some(by) = self.embed_scale {
            top.push(("embed_scale".into(), Node::new(Rescale { by })));
        }
        let mut blocks = vec![];
        for i in 0..self.layers.len() {
            blocks.push(self.block(&scope.pp("blocks").pp(i.to_string()), i, &mut parts)?);
        }
        top.push(("blocks".into(), Sequential::new(blocks)));
        let final_norm = self.norm(&scope.pp("final_norm"), NormSite::Final, &mut parts)?;
        top.push(("final_norm".into(), final_norm));
        let head = if self.tie_embeddings {
            table.decode()
        } else {
            let h = Linear::new(self.emb(), ax(&[(&self.vocab_axis, self.vocab_size)]))
                .build(&scope.pp("lm_head"), None)?;
            parts.record(&h, |_| Role::LmHead);
            h
        };
        top.push(("lm_head".into(), head));
        if self.lm_head_bias {
            let vocab = ax(&[(&self.vocab_axis, self.vocab_size)]);
            let b = AddBias { axes: vocab }.build(&scope.pp("lm_head_bias"))?;
            parts.record(&b, |_| Role::LmHeadBias);
            top.push(("lm_head_bias".into(), b));
        }
        if let Some(by) = self.logit_scale {
            top.push(("logit_scale".into(), Node::new(Rescale { by })));
        }
        if let Some(cap) = self.final_softcap {
            top.push(("final_softcap".into(), Node::new(TanhSoftCap { cap })));
        }
        Ok(Decoder {
            tree: Sequential::named(top),
            parts: parts.0,
        })
    }
}
