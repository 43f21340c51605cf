//! The `transformer` builder: a decoder-only transformer language model declared by a few
//! numbers in a recipe, built by the shared decoder builder ([`super::decoder`], whose module
//! docs show the tree).
//!
//! The MLP is gated (`swiglu`: `down(silu(gate(x)) * up(x))`, `geglu` with gelu-tanh) or plain
//! (`gelu`, `relu`: `down(act(up(x)))`). Attention is causal, or sliding-window; RoPE.

use super::decoder::{DecoderConfig, LayerAttention};
use crate::base::{Error, Result};
use crate::layers::misc::Activation;
use crate::params::init::Initializer;
use crate::tree::{Node, Scope};
use serde::{Deserialize, Serialize};

/// The feed-forward block.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    #[default]
    Swiglu,
    Geglu,
    Gelu,
    Relu,
}

/// The normalization.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    #[default]
    Rms,
    Layer,
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
    #[serde(default)]
    pub mlp: MlpKind,
    #[serde(default)]
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
        if let Err(m) = crate::layers::attention::check_heads(self.num_heads, kv) {
            return bad("num_kv_heads", format!("transformer: {m}"));
        }
        let max = crate::models::decoder::MAX_LAYERS;
        if self.num_layers > max {
            return bad(
                "num_layers",
                format!(
                    "transformer: `num_layers` must be 1 to {max}, got {}",
                    self.num_layers
                ),
            );
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return bad(
                "rope_theta",
                format!(
                    "transformer: `rope_theta` must be a finite number > 0, got {}",
                    self.rope_theta
                ),
            );
        }
        if !(self.norm_eps >= 0.0 && self.norm_eps.is_finite()) {
            return bad(
                "norm_eps",
                format!(
                    "transformer: `norm_eps` must be a finite number >= 0, got {}",
                    self.norm_eps
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

    /// The decoder this configuration describes.
    pub fn to_decoder(&self) -> DecoderConfig {
        let (gated_mlp, activation) = match self.mlp {
            MlpKind::Swiglu => (true, Activation::Silu),
            MlpKind::Geglu => (true, Activation::GeluTanh),
            MlpKind::Gelu => (false, Activation::Gelu),
            MlpKind::Relu => (false, Activation::Relu),
        };
        let layer = LayerAttention {
            window: self.sliding_window,
            rope_theta: self.rope_theta,
            rope_scaling: None,
            rope: true,
        };
        let mut d = DecoderConfig::llama(
            self.vocab_size,
            self.d_model,
            self.num_layers.max(0) as usize,
            (
                self.num_heads,
                self.num_kv_heads.unwrap_or(self.num_heads),
                self.head_dim.unwrap_or(self.d_model / self.num_heads),
            ),
            self.mlp_hidden,
        );
        d.layers = vec![layer; d.layers.len()];
        d.gated_mlp = gated_mlp;
        d.activation = activation;
        d.layer_norm = self.norm == NormKind::Layer;
        d.norm_eps = self.norm_eps;
        d.qkv_bias = self.attention_bias;
        d.output_bias = self.attention_bias;
        d.tie_embeddings = self.tie_embeddings;
        d.dropout = self.dropout;
        d.embedding_init = Some(Initializer::Normal {
            std: self
                .embedding_init_std
                .unwrap_or(1.0 / (self.d_model as f64).sqrt()),
        });
        d.embedding_axis = self.embedding_axis.clone();
        d.vocab_axis = self.vocab_axis.clone();
        d.neurons_axis = self.neurons_axis.clone();
        d
    }

    /// Builds the model under `scope`.
    pub fn build(&self, scope: &Scope<'_>) -> Result<Node> {
        self.check()?;
        Ok(self.to_decoder().build(scope)?.tree)
    }
}
