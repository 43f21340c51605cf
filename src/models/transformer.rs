//! A decoder-only transformer language model from combinators (the `transformer` builder).
//!
//! ```text
//! Sequential
//!   embed: EmbeddingLookup                      tokens {batch, seq} -> {batch, seq, embedding}
//!   blocks: Sequential[0..num_layers]
//!     i: Sequential
//!       attention: Residual(delta: Sequential[norm, attention, dropout?])
//!       mlp:       Residual(delta: Sequential[norm, mlp, dropout?])
//!   final_norm: RMSLayerNorm | LayerNorm
//!   lm_head: Linear {embedding} -> {vocab}  (or EmbeddingDecode sharing embed's table)
//! ```
//!
//! The MLP is gated (`swiglu`: `down(silu(gate(x)) * up(x))`, `geglu` with gelu-tanh) or plain
//! (`gelu`, `relu`: `down(act(up(x)))`). Attention is [`SelfAttentionConfig`] (causal, or
//! sliding-window; RoPE).

use crate::base::{Error, Result};
use crate::layers::attention::{AttentionMask, SelfAttentionConfig};
use crate::layers::embedding::EmbeddingTable;
use crate::layers::grouping::{BranchAndMultiplyTogether, Residual, Sequential};
use crate::layers::linear::Linear;
use crate::layers::misc::{Activation, Dropout, Elementwise};
use crate::layers::norms::{layer_norm, rms_layer_norm};
use crate::layers::Axes;
use crate::params::init::Initializer;
use crate::tree::{Node, Scope};
use serde::{Deserialize, Serialize};

/// The feed-forward block.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    Swiglu,
    Geglu,
    Gelu,
    Relu,
}

/// The normalization.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    Rms,
    Layer,
}

fn d_swiglu() -> MlpKind {
    MlpKind::Swiglu
}
fn d_rms() -> NormKind {
    NormKind::Rms
}
fn d_eps() -> f64 {
    1e-6
}
fn d_theta() -> f64 {
    10_000.0
}
fn d_embedding() -> String {
    "embedding".into()
}
fn d_vocab() -> String {
    "vocab".into()
}
fn d_neurons() -> String {
    "neurons".into()
}

/// Arguments of the `transformer` builder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    pub vocab_size: i64,
    pub d_model: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    /// Key/value heads (grouped-query attention); default `num_heads`.
    #[serde(default)]
    pub num_kv_heads: Option<i64>,
    /// Default `d_model / num_heads`.
    #[serde(default)]
    pub head_dim: Option<i64>,
    pub mlp_hidden: i64,
    #[serde(default = "d_swiglu")]
    pub mlp: MlpKind,
    #[serde(default = "d_rms")]
    pub norm: NormKind,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    /// RoPE base wavelength.
    #[serde(default = "d_theta")]
    pub rope_theta: f64,
    /// Causal sliding-window attention with this window (default: full causal).
    #[serde(default)]
    pub sliding_window: Option<i64>,
    /// Output logits from the embedding table (shared parameter) instead of a separate head.
    #[serde(default)]
    pub tie_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    /// Dropout after attention and MLP (active only with a `random_stream` side input).
    #[serde(default)]
    pub dropout: f64,
    /// Standard deviation of the embedding initializer (default 1/sqrt(d_model)).
    #[serde(default)]
    pub embedding_init_std: Option<f64>,
    #[serde(default = "d_embedding")]
    pub embedding_axis: String,
    #[serde(default = "d_vocab")]
    pub vocab_axis: String,
    #[serde(default = "d_neurons")]
    pub neurons_axis: String,
}

fn ax(pairs: &[(&str, i64)]) -> Axes {
    pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

impl TransformerConfig {
    fn check(&self) -> Result<()> {
        let bad = |field: &str, msg: String| {
            Err(Error::ConfigField {
                field: field.into(),
                message: msg,
            })
        };
        for (f, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("mlp_hidden", self.mlp_hidden),
        ] {
            if v < 1 {
                return bad(f, format!("transformer: `{f}` must be at least 1, got {v}"));
            }
        }
        if self.head_dim.is_none() && self.d_model % self.num_heads != 0 {
            return bad(
                "num_heads",
                format!(
                    "transformer: d_model {} is not divisible by num_heads {}; set head_dim",
                    self.d_model, self.num_heads
                ),
            );
        }
        let kv = self.num_kv_heads.unwrap_or(self.num_heads);
        if kv < 1 || self.num_heads % kv != 0 {
            return bad(
                "num_kv_heads",
                format!(
                    "transformer: num_heads {} must be a multiple of num_kv_heads {kv}",
                    self.num_heads
                ),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(
                "dropout",
                format!(
                    "transformer: dropout must be in [0, 1), got {}",
                    self.dropout
                ),
            );
        }
        Ok(())
    }

    fn norm(&self, scope: &Scope<'_>) -> Result<Node> {
        let axes = ax(&[(&self.embedding_axis, self.d_model)]);
        match self.norm {
            NormKind::Rms => rms_layer_norm(scope, axes, self.norm_eps),
            NormKind::Layer => layer_norm(scope, axes, self.norm_eps),
        }
    }

    fn mlp_block(&self, scope: &Scope<'_>) -> Result<Node> {
        let emb = ax(&[(&self.embedding_axis, self.d_model)]);
        let hid = ax(&[(&self.neurons_axis, self.mlp_hidden)]);
        let lin = |name: &str, i: &Axes, o: &Axes| {
            Linear::new(i.clone(), o.clone()).build(&scope.pp(name), None)
        };
        Ok(match self.mlp {
            MlpKind::Swiglu | MlpKind::Geglu => {
                let act = if self.mlp == MlpKind::Swiglu {
                    Activation::Silu
                } else {
                    Activation::GeluTanh
                };
                let gate = Sequential::named(vec![
                    ("linear".into(), lin("gate", &emb, &hid)?),
                    ("act".into(), Node::new(Elementwise { function: act })),
                ]);
                let gu = BranchAndMultiplyTogether::build(vec![gate, lin("up", &emb, &hid)?]);
                Sequential::named(vec![
                    ("gate_up".into(), gu),
                    ("down".into(), lin("down", &hid, &emb)?),
                ])
            }
            MlpKind::Gelu | MlpKind::Relu => {
                let act = if self.mlp == MlpKind::Gelu {
                    Activation::Gelu
                } else {
                    Activation::Relu
                };
                Sequential::named(vec![
                    ("up".into(), lin("up", &emb, &hid)?),
                    ("act".into(), Node::new(Elementwise { function: act })),
                    ("down".into(), lin("down", &hid, &emb)?),
                ])
            }
        })
    }

    /// Builds the model under `scope`.
    pub fn build(&self, scope: &Scope<'_>) -> Result<Node> {
        self.check()?;
        let head_dim = self.head_dim.unwrap_or(self.d_model / self.num_heads);
        let emb = ax(&[(&self.embedding_axis, self.d_model)]);
        let std = self
            .embedding_init_std
            .unwrap_or(1.0 / (self.d_model as f64).sqrt());
        let table = EmbeddingTable::build(
            &scope.pp("embed"),
            &self.vocab_axis,
            self.vocab_size,
            emb.clone(),
            Some(Initializer::Normal { std }),
        )?;
        let mut attn_cfg = SelfAttentionConfig::new(self.d_model, self.num_heads, head_dim);
        attn_cfg.embedding_axis = self.embedding_axis.clone();
        attn_cfg.num_kv_heads = self.num_kv_heads.unwrap_or(self.num_heads);
        attn_cfg.rope_wavelength = Some(self.rope_theta);
        attn_cfg.qkv_bias = self.attention_bias;
        attn_cfg.output_bias = self.attention_bias;
        if let Some(w) = self.sliding_window {
            attn_cfg.mask = AttentionMask::SlidingWindow(w);
        }
        let mut blocks = vec![];
        for i in 0..self.num_layers {
            let bs = scope.pp("blocks").pp(i.to_string());
            let wrap = |name: &str, inner: Node| -> Result<Node> {
                let s = bs.pp(name).pp("delta");
                let mut parts = vec![
                    ("norm".to_string(), self.norm(&s.pp("norm"))?),
                    (name.to_string(), inner),
                ];
                if self.dropout > 0.0 {
                    parts.push(("dropout".into(), Node::new(Dropout::new(self.dropout)?)));
                }
                Ok(Residual::build(Sequential::named(parts)))
            };
            let attn = attn_cfg.build(&bs.pp("attention").pp("delta").pp("attention"))?;
            let mlp = self.mlp_block(&bs.pp("mlp").pp("delta").pp("mlp"))?;
            blocks.push(Sequential::named(vec![
                ("attention".into(), wrap("attention", attn)?),
                ("mlp".into(), wrap("mlp", mlp)?),
            ]));
        }
        let head = if self.tie_embeddings {
            table.decode()
        } else {
            Linear::new(emb, ax(&[(&self.vocab_axis, self.vocab_size)]))
                .build(&scope.pp("lm_head"), None)?
        };
        Ok(Sequential::named(vec![
            ("embed".into(), table.lookup()),
            ("blocks".into(), Sequential::new(blocks)),
            ("final_norm".into(), self.norm(&scope.pp("final_norm"))?),
            ("lm_head".into(), head),
        ]))
    }
}
